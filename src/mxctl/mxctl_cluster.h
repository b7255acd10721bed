/* mxctl_cluster: `mxctl cluster`, the nodes of a cluster sharing one
 * PostgreSQL queue (store = postgresql): each node's last heartbeat,
 * whether it counts as alive, and the recipients it holds leases on. Part
 * of mxctl. */
#ifndef MXD_MXCTL_CLUSTER_H
#define MXD_MXCTL_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include "store/sdb.h"

/* Prints db's cluster_nodes at time now (unix seconds), a node being dead
 * once its heartbeat is more than 2 x lease_s old: one line per node with
 * a header ("no cluster nodes" when there are none), or one JSON array.
 * Reads in one transaction; returns an exit status (mxctl_json.h), having
 * said why on stderr. */
int mxctl_cluster(struct sdb *db, int64_t now, int64_t lease_s, bool json);

#endif
