/* placeholder: addr is being written */
typedef int mxd_placeholder_addr;
