/* placeholder: store_deliver is being written */
typedef int mxd_placeholder_store_deliver;
