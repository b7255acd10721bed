/* placeholder: store is being written */
typedef int mxd_placeholder_store;
