/* What every gateway route handler needs: OMS_* codes as HTTP answers, the checks of
 * path ids and JSON bodies, and who may call (staff, a staff change from the shop's
 * own origin). Shared by http_routes.c and the back-office routes. */
#ifndef GATEWAY_HTTP_UTIL_H
#define GATEWAY_HTTP_UTIL_H

#include "oms.pb-c.h"
#include "oms/http.h"
#include "oms/json_out.h"
#include "staff_store.h"

/* Writes an error reply for an OMS_* code (msg, or the code's text when msg is empty):
 * 503 and 429 get Retry-After. OMS_DUPLICATE is 409. */
void gw_reply_status(oms_http_resp *resp, int rc, const char *msg);
/* A dependency that answered it is overloaded (OMS_UNAVAILABLE, "server overloaded: ...")
 * is not asked again for GW_SHED_MS: the route is refused at once meanwhile
 * (oms_http_shed), so a surplus costs the gateway a refusal, not a call. */
#define GW_SHED_MS 50
void gw_shed_if_overloaded(const oms_http_req *req, int rc, const char *msg);

/* 1 when v is a valid id (oms_valid_id); otherwise 400 naming field is written. */
int gw_check_id(oms_http_resp *resp, const char *field, const char *v);

/* 1 when the body may be JSON (no Content-Type, or application/json[;...]); else 415. */
int gw_check_json_type(const oms_http_req *req, oms_http_resp *resp);

/* 1 when a signed-in member of staff calls, their name in name (GW_STAFF_NAME_MAX + 1
 * bytes; may be NULL); otherwise the answer (401 or a redirect to the sign-in page for
 * a browser, or 503) is written and 0 returned. */
int gw_require_staff(const oms_http_req *req, oms_http_resp *resp, char *name);

/* As gw_require_staff, for a request that changes something: first refuses (403) an
 * Origin other than the shop's own, then requires staff. */
int gw_require_staff_change(const oms_http_req *req, oms_http_resp *resp, char *name);

/* Appends the order's JSON shape (the original's fields and ours); 0, with nothing
 * appended, when m is not an order. */
int gw_write_order(oms_jbuf *b, const Api__Order *m);
/* Replies with one order (status), or 502 when orders sent something else. */
void gw_reply_order(oms_http_resp *resp, int status, const Api__Order *m);
/* Replies 200 {"orders":[...],"nextPageToken":"..."} (what is not an order left out). */
void gw_reply_order_list(oms_http_resp *resp, const Api__ListOrdersResponse *r);

#endif
