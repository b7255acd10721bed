/* placeholder: deliver_calc is being written */
typedef int mxd_placeholder_deliver_calc;
