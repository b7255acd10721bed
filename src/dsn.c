/* placeholder: dsn is being written */
typedef int mxd_placeholder_dsn;
