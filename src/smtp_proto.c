/* placeholder: smtp_proto is being written */
typedef int mxd_placeholder_smtp_proto;
