/* The two StockService calls that settle a reservation, for the services that make
 * them (orders on a status change, payments on a payment or a checkout deadline).
 * Both are idempotent at stock and serialised per order there: a released
 * reservation cannot be committed and a committed one cannot be released, so of a
 * racing cancel and payment exactly one wins. */
#ifndef OMS_STOCK_CALLS_H
#define OMS_STOCK_CALLS_H

#include "oms/grpc_client.h"
#include "oms/status.h"

/* CommitReservation. OMS_CONFLICT: released (cancelled or expired); OMS_NOTFOUND: no
 * reservation; OMS_UNAVAILABLE and others: retry. client is an oms_grpc_client
 * (borrowed), passed as void * so a service's stock port can point at these functions
 * directly with the client as its user data. */
int oms_stock_commit(void *client, const char *order_id, oms_error *err);
/* ReleaseReservation. OMS_CONFLICT: committed to a payment; OMS_NOTFOUND: none. */
int oms_stock_release(void *client, const char *order_id, oms_error *err);

#endif
