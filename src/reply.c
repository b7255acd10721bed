/* placeholder: reply is being written */
typedef int mxd_placeholder_reply;
