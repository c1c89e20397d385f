/* The back office's order routes (README "HTTP API", "Back office: orders, refunds,
 * today, audit"): every customer's orders with filters, one order with its history, a
 * staff refund, the day's figures and the audit of staff changes merged from orders
 * and stock. Every route needs a staff session; the refund also the shop's own Origin.
 * The server's user data is the gateway_ctx (http_routes.h). */
#ifndef GATEWAY_STAFF_ORDERS_H
#define GATEWAY_STAFF_ORDERS_H

#include "oms/http.h"

/* GET /api/staff/orders?status=&customerID=&orderID=&since=&until=&tz=&pageSize=&pageToken= */
void gw_staff_list_orders(const oms_http_req *req, oms_http_resp *resp);
/* GET /api/staff/orders/{id}: {"order":{...},"history":[{"status","at","cause"}]} */
void gw_staff_order(const oms_http_req *req, oms_http_resp *resp);
/* POST /api/staff/orders/{id}/refund {"reason":"..."}: the order. */
void gw_staff_refund(const oms_http_req *req, oms_http_resp *resp);
/* The hand-over: POST /api/staff/orders/{id}/collect and POST /api/staff/pickup/{code}
 * move a ready order to collected (again: the same answer); the order. Another status
 * 409; an unknown code, or another day's, 404. */
void gw_staff_collect(const oms_http_req *req, oms_http_resp *resp);
void gw_staff_pickup(const oms_http_req *req, oms_http_resp *resp);
/* GET /api/staff/summary?day=YYYY-MM-DD&tz=<minutes east of UTC> */
void gw_staff_summary(const oms_http_req *req, oms_http_resp *resp);
/* GET /api/staff/audit?before=<ms>&limit=: {"entries","nextBefore"[,"partial"]} */
void gw_staff_audit(const oms_http_req *req, oms_http_resp *resp);

#endif
