/* placeholder: dotstuff is being written */
typedef int mxd_placeholder_dotstuff;
