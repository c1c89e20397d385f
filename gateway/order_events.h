/* Order status pushed to browsers as Server-Sent Events (README "HTTP API", docs/http.md).
 *
 * The gateway consumes every order event from a queue of its own instance (exclusive,
 * auto-delete: gateway.<instance>.events) and fans each one out to the streams watching
 * that order (a hash of order id -> watchers) and to the kitchen streams. An idle order
 * costs nothing: nothing is re-read for it. Re-reads from orders happen only when a
 * stream opens (its current state), for watched orders still pending (their move to
 * waiting_payment is a gRPC call from payments to orders, not an event), and after the
 * broker connection comes back (events may have been missed meanwhile).
 *
 * An event's id is the order's version: updatedAt in ms x 16 + the status's position
 * in the status list. A status never moves backwards and each move sets updatedAt, so
 * a later state always has a larger version, even two moves in the same millisecond. */
#ifndef GATEWAY_ORDER_EVENTS_H
#define GATEWAY_ORDER_EVENTS_H

#include "oms/amqp.h"
#include "oms/grpc_client.h"
#include "oms/http.h"
#include "oms/status.h"

typedef struct gw_events gw_events;

/* Starts the consumer of the instance's queue. orders: re-reads (borrowed; outlives
 * *out). *out owned by the caller (gw_events_free). */
int gw_events_new(gw_events **out, const oms_amqp_config *amqp, oms_grpc_client *orders,
                  int timeout_ms, oms_error *err);
/* Stops the consumer and frees; call once the HTTP server has stopped (no stream left).
 * NULL: no-op. */
void gw_events_free(gw_events *ev);

/* GET /api/customers/{cid}/orders/{oid}/events and GET /api/staff/kitchen/events
 * (handlers; req->ud is the gateway_ctx). */
void gw_order_events(const oms_http_req *req, oms_http_resp *resp);
void gw_kitchen_events(const oms_http_req *req, oms_http_resp *resp);

/* Ticker: re-reads the watched orders that are still pending. */
int gw_events_pending_tick(void *gateway, oms_error *err);

#endif
