#include "staff_orders.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "http_routes.h"
#include "http_util.h"
#include "kitchen_client.h"
#include "oms.pb-c.h"
#include "oms/calendar.h"
#include "oms/json_out.h"
#include "oms/log.h"
#include "oms/order.h"
#include "oms/order_pb.h"
#include "oms/tracer.h"
#include "oms/util.h"
#include "staff_store.h"

#define AUDIT_DEFAULT_LIMIT 50
#define AUDIT_MAX_LIMIT 200

/* ---- query parameters ---------------------------------------------------------------
 * Each reader returns 1 with the value (or the default when the parameter is absent or
 * empty) or writes a 400 naming the parameter and returns 0. */

/* A decimal integer in [lo, hi] with nothing around it (strtoll alone takes spaces and
 * a '+' and saturates on overflow). */
static int parse_int(const char *s, long long lo, long long hi, long long *v)
{
    size_t n = strlen(s), start = s[0] == '-' ? 1 : 0;
    if (n == start || n > 19 || strspn(s + start, "0123456789") != n - start)
        return 0;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno != 0 || *end || x < lo || x > hi)
        return 0;
    *v = x;
    return 1;
}

static const char *query(const oms_http_req *req, const char *name)
{
    const char *v = oms_http_query(req, name);
    return v && v[0] ? v : NULL;
}

static int query_int(const oms_http_req *req, oms_http_resp *resp, const char *name, long long lo,
                     long long hi, long long dflt, long long *v)
{
    const char *s = query(req, name);
    *v = dflt;
    if (!s || parse_int(s, lo, hi, v))
        return 1;
    oms_http_resp_error(resp, 400, "%s: must be an integer from %lld to %lld", name, lo, hi);
    return 0;
}

static int query_tz(const oms_http_req *req, oms_http_resp *resp, int *tz)
{
    long long v;
    if (!query_int(req, resp, "tz", OMS_TZ_MIN_MINUTES, OMS_TZ_MAX_MINUTES, 0, &v))
        return 0;
    *tz = (int)v;
    return 1;
}

/* since/until: a day YYYY-MM-DD (its first millisecond at tz) or an RFC 3339 time. */
static int query_time(const oms_http_req *req, oms_http_resp *resp, const char *name, int tz,
                      long long *ms)
{
    const char *s = query(req, name);
    int64_t days, t;
    *ms = 0;
    if (!s)
        return 1;
    if (oms_day_parse(s, &days) == OMS_OK) {
        *ms = oms_day_start_ms(days, tz);
        return 1;
    }
    if (oms_rfc3339_parse(s, &t) == OMS_OK && t >= 0) {
        *ms = t;
        return 1;
    }
    oms_http_resp_error(resp, 400,
                        "%s: must be a day YYYY-MM-DD or an RFC 3339 time"
                        " (2026-12-01T09:30:00Z)",
                        name);
    return 0;
}

static int query_id(const oms_http_req *req, oms_http_resp *resp, const char *name, const char **v)
{
    *v = query(req, name);
    return !*v || gw_check_id(resp, name, *v);
}

/* ---- replies ------------------------------------------------------------------------ */

static void reply_jbuf(oms_http_resp *resp, oms_jbuf *b)
{
    size_t len;
    char *body = oms_jbuf_take(b, &len);
    oms_http_resp_json_text(resp, 200, body, len);
    oms_http_resp_header(resp, "Cache-Control", "no-store");
}

static int call(oms_grpc_client *c, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out, int timeout_ms,
                oms_error *err)
{
    oms_error_clear(err);
    return oms_grpc_call(c, method, req, desc, out, timeout_ms, err);
}

/* ---- routes ------------------------------------------------------------------------- */

void gw_staff_list_orders(const oms_http_req *req, oms_http_resp *resp)
{
    gateway_ctx *g = req->ud;
    if (!gw_require_staff(req, resp, NULL))
        return;
    Api__StaffListOrdersRequest m = API__STAFF_LIST_ORDERS_REQUEST__INIT;
    const char *status = query(req, "status"), *cid, *oid, *tok = query(req, "pageToken");
    long long since, until, page_size;
    int tz;
    if (!query_id(req, resp, "customerID", &cid) || !query_id(req, resp, "orderID", &oid) ||
        !query_tz(req, resp, &tz) || !query_time(req, resp, "since", tz, &since) ||
        !query_time(req, resp, "until", tz, &until) ||
        !query_int(req, resp, "pageSize", 1, 100, 0, &page_size))
        return;
    if (status && oms_order_status_parse(status) < 0) {
        oms_http_resp_error(resp, 400,
                            "status: unknown value \"%.40s\" (pending, waiting_payment, paid,"
                            " cooking, ready for pick-up, cancelled, payment_failed, refunded)",
                            status);
        return;
    }
    if (tok && strlen(tok) > 128) {
        oms_http_resp_error(resp, 400, "pageToken: not a token from this API");
        return;
    }
    m.status = (char *)(status ? status : "");
    m.customerid = (char *)(cid ? cid : "");
    m.orderid = (char *)(oid ? oid : "");
    m.sincems = since;
    m.untilms = until;
    m.pagesize = (int32_t)page_size;
    m.pagetoken = (char *)(tok ? tok : "");
    ProtobufCMessage *out = NULL;
    oms_error err;
    int rc = call(g->orders, "/api.OrderService/StaffListOrders", &m.base,
                  &api__list_orders_response__descriptor, &out, g->timeout_ms, &err);
    if (rc != OMS_OK) {
        gw_reply_status(resp, rc, err.msg);
        return;
    }
    gw_reply_order_list(resp, (const Api__ListOrdersResponse *)out);
    oms_http_resp_header(resp, "Cache-Control", "no-store");
    protobuf_c_message_free_unpacked(out, NULL);
}

void gw_staff_order(const oms_http_req *req, oms_http_resp *resp)
{
    gateway_ctx *g = req->ud;
    const char *oid = req->params[0];
    if (!gw_require_staff(req, resp, NULL) || !gw_check_id(resp, "orderID", oid))
        return;
    oms_span_set_str(oms_span_current(), OMS_ATTR_ORDER_ID, oid);
    Api__GetOrderRequest m = API__GET_ORDER_REQUEST__INIT;
    m.orderid = (char *)oid;
    ProtobufCMessage *out = NULL;
    oms_error err;
    int rc = call(g->orders, "/api.OrderService/GetOrderHistory", &m.base,
                  &api__order_history__descriptor, &out, g->timeout_ms, &err);
    if (rc != OMS_OK) {
        gw_reply_status(resp, rc, err.msg);
        return;
    }
    const Api__OrderHistory *h = (const Api__OrderHistory *)out;
    oms_jbuf b;
    oms_jbuf_init(&b, 2048);
    oms_jbuf_lit(&b, "{\"order\":");
    if (!gw_write_order(&b, h->order)) {
        oms_jbuf_free(&b);
        protobuf_c_message_free_unpacked(out, NULL);
        oms_http_resp_error(resp, 502, "orders service returned an invalid order");
        return;
    }
    oms_jbuf_lit(&b, ",\"history\":[");
    for (size_t i = 0; i < h->n_history; i++) {
        if (i)
            oms_jbuf_lit(&b, ",");
        oms_jbuf_lit(&b, "{\"status\":");
        oms_jbuf_str(&b, h->history[i]->status);
        oms_jbuf_lit(&b, ",\"at\":");
        oms_jbuf_str(&b, h->history[i]->at);
        oms_jbuf_lit(&b, ",\"cause\":");
        oms_jbuf_str(&b, h->history[i]->cause);
        oms_jbuf_lit(&b, "}");
    }
    oms_jbuf_lit(&b, "]}");
    protobuf_c_message_free_unpacked(out, NULL);
    reply_jbuf(resp, &b);
}

void gw_staff_refund(const oms_http_req *req, oms_http_resp *resp)
{
    gateway_ctx *g = req->ud;
    const char *oid = req->params[0];
    char staff[GW_STAFF_NAME_MAX + 1];
    if (!gw_require_staff_change(req, resp, staff) || !gw_check_id(resp, "orderID", oid) ||
        !gw_check_json_type(req, resp))
        return;
    oms_span_set_str(oms_span_current(), OMS_ATTR_ORDER_ID, oid);
    json_error_t je;
    json_t *body = json_loadb(req->body, req->body_len, 0, &je);
    const char *reason = json_string_value(json_object_get(body, "reason"));
    if (!json_is_object(body) || !reason) {
        json_decref(body);
        oms_http_resp_error(resp, 400,
                            "reason: required, a string of 1 to 200 characters"
                            " (body {\"reason\":\"...\"})");
        return;
    }
    if (strlen(reason) != json_string_length(json_object_get(body, "reason"))) {
        json_decref(body);
        oms_http_resp_error(resp, 400, "reason: control characters are not allowed");
        return;
    }
    Api__RefundOrderRequest m = API__REFUND_ORDER_REQUEST__INIT;
    m.orderid = (char *)oid;
    m.staff = staff; /* from the session, never from the body */
    m.reason = (char *)reason;
    ProtobufCMessage *out = NULL;
    oms_error err;
    int rc = call(g->orders, "/api.OrderService/RefundOrder", &m.base, &api__order__descriptor,
                  &out, g->timeout_ms, &err);
    json_decref(body);
    if (rc != OMS_OK) {
        gw_reply_status(resp, rc, err.msg);
        return;
    }
    gw_reply_order(resp, 200, (const Api__Order *)out);
    oms_http_resp_header(resp, "Cache-Control", "no-store");
    protobuf_c_message_free_unpacked(out, NULL);
}

/* The hand-over: CollectOrder by id or by pickup code, answered with the order. */
static void collect(const oms_http_req *req, oms_http_resp *resp, const char *oid, const char *code,
                    const char *staff)
{
    gateway_ctx *g = req->ud;
    Api__CollectOrderRequest m = API__COLLECT_ORDER_REQUEST__INIT;
    m.orderid = (char *)(oid ? oid : "");
    m.pickupcode = (char *)(code ? code : "");
    m.staff = (char *)staff; /* from the session */
    ProtobufCMessage *out = NULL;
    oms_error err;
    int rc = call(g->orders, "/api.OrderService/CollectOrder", &m.base, &api__order__descriptor,
                  &out, g->timeout_ms, &err);
    if (rc != OMS_OK) {
        gw_reply_status(resp, rc, err.msg);
        return;
    }
    gw_reply_order(resp, 200, (const Api__Order *)out);
    oms_http_resp_header(resp, "Cache-Control", "no-store");
    protobuf_c_message_free_unpacked(out, NULL);
}

void gw_staff_collect(const oms_http_req *req, oms_http_resp *resp)
{
    char staff[GW_STAFF_NAME_MAX + 1];
    const char *oid = req->params[0];
    if (!gw_require_staff_change(req, resp, staff) || !gw_check_id(resp, "orderID", oid))
        return;
    oms_span_set_str(oms_span_current(), OMS_ATTR_ORDER_ID, oid);
    collect(req, resp, oid, NULL, staff);
}

void gw_staff_pickup(const oms_http_req *req, oms_http_resp *resp)
{
    char staff[GW_STAFF_NAME_MAX + 1];
    const char *code = req->params[0];
    if (!gw_require_staff_change(req, resp, staff))
        return;
    /* Anything that cannot be a code is simply not one of today's. */
    if (!code[0] || strlen(code) > 16) {
        oms_http_resp_error(resp, 404, "pickup code not found today");
        return;
    }
    collect(req, resp, NULL, code, staff);
}

void gw_staff_summary(const oms_http_req *req, oms_http_resp *resp)
{
    gateway_ctx *g = req->ud;
    if (!gw_require_staff(req, resp, NULL))
        return;
    int tz;
    if (!query_tz(req, resp, &tz))
        return;
    char today[11];
    const char *day = query(req, "day");
    int64_t days;
    if (!day) {
        oms_day_format(oms_now_ms(), tz, today);
        day = today;
    }
    if (oms_day_parse(day, &days) != OMS_OK) {
        oms_http_resp_error(resp, 400, "day: must be a date YYYY-MM-DD");
        return;
    }
    Api__SummaryRequest m = API__SUMMARY_REQUEST__INIT;
    m.day = (char *)day;
    m.tzoffsetminutes = tz;
    ProtobufCMessage *out = NULL;
    oms_error err;
    int rc = call(g->orders, "/api.OrderService/GetSummary", &m.base, &api__summary__descriptor,
                  &out, g->timeout_ms, &err);
    if (rc != OMS_OK) {
        gw_reply_status(resp, rc, err.msg);
        return;
    }
    const Api__Summary *s = (const Api__Summary *)out;
    /* Late tickets are the kitchen's to count; without it the figure is left out and
     * the answer says so. */
    json_t *late = NULL;
    char path[96], why[160];
    int64_t start = oms_day_start_ms(days, tz);
    snprintf(path, sizeof(path), "/late?from=%lld&to=%lld", (long long)start,
             (long long)(start + 86400000LL));
    int krc = gw_kitchen_get(g->kitchen_admin_url, path, &late, why, sizeof(why));
    json_int_t late_n = json_integer_value(json_object_get(late, "late"));
    if (krc == OMS_OK && !json_is_integer(json_object_get(late, "late")))
        krc = OMS_ERR;
    json_decref(late);
    if (krc != OMS_OK)
        oms_log_warn("day summary without late tickets: kitchen", "reason", why);
    json_t *units = json_array(), *hours = json_array();
    for (size_t i = 0; i < s->n_units; i++)
        json_array_append_new(units, json_pack("{s:o,s:o,s:i}", "productID",
                                               oms_json_string_lossy(s->units[i]->productid),
                                               "productName",
                                               oms_json_string_lossy(s->units[i]->productname),
                                               "quantity", s->units[i]->quantity));
    for (size_t h = 0; h < s->n_ordersperhour; h++)
        json_array_append_new(hours, json_integer(s->ordersperhour[h]));
    json_t *j = json_pack(
        "{s:o,s:i,s:I,s:I,s:I,s:o,s:I,s:I,s:o,s:I,s:I,s:o,s:I}", "day",
        oms_json_string_lossy(s->day), "tzOffsetMinutes", tz, "orders", (json_int_t)s->orders,
        "paidOrders", (json_int_t)s->paidorders, "revenue", (json_int_t)s->revenue, "currency",
        oms_json_string_lossy(s->currency), "refunds", (json_int_t)s->refunds, "refundedAmount",
        (json_int_t)s->refundedamount, "units", units, "paidToReadyP50Ms",
        (json_int_t)s->paidtoreadyp50ms, "paidToReadyP90Ms", (json_int_t)s->paidtoreadyp90ms,
        "ordersPerHour", hours, "lateTickets", krc == OMS_OK ? late_n : (json_int_t)s->latetickets);
    protobuf_c_message_free_unpacked(out, NULL);
    if (j && krc != OMS_OK) {
        json_object_set_new(j, "lateTickets", json_null());
        json_object_set_new(j, "partial", json_pack("[s]", "kitchen"));
    }
    oms_http_resp_json(resp, 200, j);
    oms_http_resp_header(resp, "Cache-Control", "no-store");
}

/* An audit entry's before/after is a JSON object as text; shown as the object itself
 * (null when empty, the text when it is not JSON). */
static json_t *audit_object(const char *text)
{
    if (!text || !text[0])
        return json_null();
    json_t *j = json_loads(text, 0, NULL);
    return j ? j : oms_json_string_lossy(text);
}

static json_t *audit_entry(const Api__AuditEntry *e, const char *service)
{
    return json_pack("{s:I,s:o,s:I,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "id", (json_int_t)e->id, "at",
                     oms_json_string_lossy(e->at), "atMs", (json_int_t)e->atms, "staff",
                     oms_json_string_lossy(e->staff), "service",
                     oms_json_string_lossy(e->service && e->service[0] ? e->service : service),
                     "action", oms_json_string_lossy(e->action), "subject",
                     oms_json_string_lossy(e->subject), "before", audit_object(e->before), "after",
                     audit_object(e->after), "reason", oms_json_string_lossy(e->reason));
}

void gw_staff_audit(const oms_http_req *req, oms_http_resp *resp)
{
    gateway_ctx *g = req->ud;
    if (!gw_require_staff(req, resp, NULL))
        return;
    long long before, limit;
    if (!query_int(req, resp, "before", 0, INT64_MAX, 0, &before) ||
        !query_int(req, resp, "limit", 1, AUDIT_MAX_LIMIT, AUDIT_DEFAULT_LIMIT, &limit))
        return;
    Api__ListAuditRequest m = API__LIST_AUDIT_REQUEST__INIT;
    m.beforems = before;
    m.limit = (int32_t)limit;
    ProtobufCMessage *oout = NULL, *sout = NULL;
    oms_error err;
    int rc = call(g->orders, "/api.OrderService/ListAudit", &m.base,
                  &api__list_audit_response__descriptor, &oout, g->timeout_ms, &err);
    if (rc != OMS_OK) {
        gw_reply_status(resp, rc, err.msg);
        return;
    }
    /* Stock's side is its own: when it cannot answer (down, or an older stock without
     * the call) the orders' entries are still worth showing, marked partial. */
    int stock_ok =
        call(g->stock, "/api.StockService/ListAudit", &m.base,
             &api__list_audit_response__descriptor, &sout, g->timeout_ms, &err) == OMS_OK;
    if (!stock_ok)
        oms_log_warn("audit: stock's entries unavailable", "error", err.msg);
    const Api__ListAuditResponse *o = (const Api__ListAuditResponse *)oout;
    const Api__ListAuditResponse *s = stock_ok ? (const Api__ListAuditResponse *)sout : NULL;
    size_t ns = s ? s->n_entries : 0, io = 0, is = 0;
    json_t *entries = json_array();
    long long last = 0;
    /* Past the limit, entries of the same millisecond as the last one shown still come:
     * the next page starts strictly before it and would skip them. */
    while (io < o->n_entries || is < ns) {
        /* Newest first; on equal times orders' entry first, so the merge is stable. */
        int take_stock =
            is < ns && (io >= o->n_entries || s->entries[is]->atms > o->entries[io]->atms);
        const Api__AuditEntry *e = take_stock ? s->entries[is] : o->entries[io];
        if ((long long)json_array_size(entries) >= limit && e->atms != last)
            break;
        if (take_stock)
            is++;
        else
            io++;
        json_array_append_new(entries, audit_entry(e, take_stock ? "stock" : "orders"));
        last = e->atms;
    }
    /* More may exist when either side filled its page or the merge left some out. */
    int more = o->n_entries >= (size_t)limit || ns >= (size_t)limit || io < o->n_entries || is < ns;
    json_t *j = json_pack("{s:o,s:o}", "entries", entries, "nextBefore",
                          more && json_array_size(entries) ? json_integer(last) : json_null());
    if (!stock_ok)
        json_object_set_new(j, "partial", json_pack("[s]", "stock"));
    protobuf_c_message_free_unpacked(oout, NULL);
    if (sout)
        protobuf_c_message_free_unpacked(sout, NULL);
    oms_http_resp_json(resp, 200, j);
    oms_http_resp_header(resp, "Cache-Control", "no-store");
}
