/* placeholder: lmtp_proto is being written */
typedef int mxd_placeholder_lmtp_proto;
