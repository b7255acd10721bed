/* placeholder: db is being written */
typedef int mxd_placeholder_db;
