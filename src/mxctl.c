/* placeholder: mxctl is being written */
typedef int mxd_placeholder_mxctl;
