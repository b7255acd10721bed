/* placeholder: spool is being written */
typedef int mxd_placeholder_spool;
