/* placeholder: main is being written */
typedef int mxd_placeholder_main;
