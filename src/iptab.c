/* placeholder: iptab is being written */
typedef int mxd_placeholder_iptab;
