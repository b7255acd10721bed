/* placeholder: control is being written */
typedef int mxd_placeholder_control;
