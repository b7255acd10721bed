/* placeholder: conf is being written */
typedef int mxd_placeholder_conf;
