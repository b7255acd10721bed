/* placeholder: lmtp_net is being written */
typedef int mxd_placeholder_lmtp_net;
