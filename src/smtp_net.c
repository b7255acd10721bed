/* placeholder: smtp_net is being written */
typedef int mxd_placeholder_smtp_net;
