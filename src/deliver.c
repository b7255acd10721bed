/* placeholder: deliver is being written */
typedef int mxd_placeholder_deliver;
