#include "http_routes.h"

#include <curl/curl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms.pb-c.h"
#include "oms/admin.h"
#include "oms/dynbuf.h"
#include "oms/order.h"
#include "oms/log.h"
#include "oms/order_pb.h"
#include "oms/trace.h"
#include "oms/tracer.h"
#include "oms/util.h"
#include "http_util.h"
#include "jwt.h"
#include "kitchen_client.h"
#include "order_events.h"
#include "staff_auth.h"
#include "staff_products.h"
#include "staff_orders.h"

/* 1 when the caller is customer cid (a verified bearer token whose sub is cid) or a
 * member of staff; otherwise the answer is written: 401 for no or a bad token (one
 * message: never which check failed; the reason goes to the log), 404 for another
 * customer's token (never confirm that someone else exists). */
static int customer_or_staff(const oms_http_req *req, oms_http_resp *resp, const char *cid)
{
    gateway_ctx *g = req->ud;
    const char *token = gw_jwt_bearer(oms_http_header(req, "Authorization"));
    if (!token || !g->customers)
        return gw_require_staff(req, resp, NULL);
    char sub[GW_JWT_SUB_MAX + 1], why[160];
    if (gw_jwt_verify(g->customers, token, oms_now_ms() / 1000, sub, why, sizeof(why)) != OMS_OK) {
        oms_log_info("customer token refused", "reason", why);
        oms_http_resp_error(resp, 401, "sign in again: the token is not accepted");
        oms_http_resp_header(resp, "WWW-Authenticate", "Bearer");
        return 0;
    }
    if (strcmp(sub, cid) != 0) {
        oms_http_resp_error(resp, 404, "customer %s not found", cid);
        return 0;
    }
    return 1;
}

/* Calls orders and, on success, hands back the Order message (caller frees). */
static int call_orders(gateway_ctx *g, const char *method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out,
                       oms_error *err)
{
    return oms_grpc_call(g->orders, method, req, desc, out, g->timeout_ms, err);
}

static void create_order(const oms_http_req *req, oms_http_resp *resp)
{
    gateway_ctx *g = req->ud;
    const char *cid = req->params[0];
    if (!gw_check_id(resp, "customerID", cid) || !gw_check_json_type(req, resp))
        return;
    const char *key = oms_http_header(req, "Idempotency-Key");
    if (key && !gw_check_id(resp, "Idempotency-Key", key))
        return;
    int retry_s = 1;
    if (g->create_limit &&
        !gw_rate_limit_take(g->create_limit, oms_http_client_addr(req), oms_mono_ms(), &retry_s)) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", retry_s);
        oms_http_resp_error(resp, 429, "too many orders from this address; retry in %d s", retry_s);
        oms_http_resp_header(resp, "Retry-After", ra);
        return;
    }
    oms_order items;
    oms_error err;
    oms_error_clear(&err);
    int rc = oms_order_parse_request(req->body, req->body_len, &items, &err);
    if (rc != OMS_OK) {
        gw_reply_status(resp, rc, err.msg);
        return;
    }
    Api__CreateOrderRequest m = API__CREATE_ORDER_REQUEST__INIT;
    m.customerid = (char *)cid;
    m.idempotencykey = (char *)(key ? key : "");
    m.n_items = items.nitems;
    m.items = oms_xcalloc(items.nitems, sizeof(*m.items));
    for (size_t i = 0; i < items.nitems; i++)
        m.items[i] = oms_order_item_to_pb(&items.items[i], NULL);
    ProtobufCMessage *out = NULL;
    rc = call_orders(g, "/api.OrderService/CreateOrder", &m.base, &api__order__descriptor, &out,
                     &err);
    for (size_t i = 0; i < items.nitems; i++)
        protobuf_c_message_free_unpacked(&m.items[i]->base, NULL);
    free(m.items);
    oms_order_free(&items);
    if (rc != OMS_OK) {
        gw_shed_if_overloaded(req, rc, err.msg);
        gw_reply_status(resp, rc, err.msg);
        return;
    }
    const Api__Order *o = (const Api__Order *)out;
    oms_span_set_str(oms_span_current(), OMS_ATTR_ORDER_ID, o->orderid);
    oms_jbuf b;
    oms_jbuf_init(&b, 1024);
    oms_jbuf_lit(&b, "{\"order\":");
    if (!gw_write_order(&b, o)) {
        oms_jbuf_free(&b);
        protobuf_c_message_free_unpacked(out, NULL);
        oms_http_resp_error(resp, 502, "orders service returned an invalid order");
        return;
    }
    char url[512];
    snprintf(url, sizeof(url), "%s/success.html?customerID=%s&orderID=%s", g->public_url, cid,
             o->orderid);
    protobuf_c_message_free_unpacked(out, NULL);
    oms_jbuf_lit(&b, ",\"redirectToURL\":");
    oms_jbuf_str(&b, url);
    oms_jbuf_lit(&b, "}");
    size_t len;
    char *body = oms_jbuf_take(&b, &len);
    oms_http_resp_json_text(resp, 201, body, len);
}

/* Fetches the order and checks it belongs to cid; on failure the reply is written. */
static Api__Order *get_owned(const oms_http_req *req, oms_http_resp *resp, const char *cid,
                             const char *oid)
{
    gateway_ctx *g = req->ud;
    if (!gw_check_id(resp, "customerID", cid) || !gw_check_id(resp, "orderID", oid))
        return NULL;
    oms_span_set_str(oms_span_current(), OMS_ATTR_ORDER_ID, oid);
    Api__GetOrderRequest m = API__GET_ORDER_REQUEST__INIT;
    m.orderid = (char *)oid;
    ProtobufCMessage *out = NULL;
    oms_error err;
    int rc =
        call_orders(g, "/api.OrderService/GetOrder", &m.base, &api__order__descriptor, &out, &err);
    if (rc != OMS_OK) {
        gw_reply_status(resp, rc, err.msg);
        return NULL;
    }
    Api__Order *o = (Api__Order *)out;
    if (strcmp(o->customerid, cid) != 0) {
        /* Same answer as a missing order: never reveal another customer's order. */
        protobuf_c_message_free_unpacked(out, NULL);
        oms_http_resp_error(resp, 404, "order %s not found", oid);
        return NULL;
    }
    return o;
}

static void get_order(const oms_http_req *req, oms_http_resp *resp)
{
    Api__Order *o = get_owned(req, resp, req->params[0], req->params[1]);
    if (!o)
        return;
    gw_reply_order(resp, 200, o);
    protobuf_c_message_free_unpacked(&o->base, NULL);
}

static void cancel_order(const oms_http_req *req, oms_http_resp *resp)
{
    gateway_ctx *g = req->ud;
    const char *cid = req->params[0], *oid = req->params[1];
    if (!gw_check_id(resp, "customerID", cid) || !gw_check_id(resp, "orderID", oid))
        return;
    oms_span_set_str(oms_span_current(), OMS_ATTR_ORDER_ID, oid);
    Api__CancelOrderRequest m = API__CANCEL_ORDER_REQUEST__INIT;
    m.orderid = (char *)oid;
    m.customerid = (char *)cid;
    ProtobufCMessage *out = NULL;
    oms_error err;
    int rc = call_orders(g, "/api.OrderService/CancelOrder", &m.base, &api__order__descriptor, &out,
                         &err);
    if (rc != OMS_OK) {
        gw_reply_status(resp, rc, err.msg);
        return;
    }
    gw_reply_order(resp, 200, (const Api__Order *)out);
    protobuf_c_message_free_unpacked(out, NULL);
}

static void list_orders(const oms_http_req *req, oms_http_resp *resp)
{
    gateway_ctx *g = req->ud;
    const char *cid = req->params[0];
    if (!gw_check_id(resp, "customerID", cid))
        return;
    /* Who ordered what is not public: a customer's list needs that customer's own
     * token (with an identity provider configured) or staff. */
    if (!customer_or_staff(req, resp, cid))
        return;
    Api__ListOrdersRequest m = API__LIST_ORDERS_REQUEST__INIT;
    m.customerid = (char *)cid;
    const char *ps = oms_http_query(req, "pageSize");
    if (ps) {
        char *end;
        long v = strtol(ps, &end, 10);
        if (!ps[0] || *end || v < 1 || v > 100) {
            oms_http_resp_error(resp, 400, "pageSize: must be an integer from 1 to 100");
            return;
        }
        m.pagesize = (int32_t)v;
    }
    const char *tok = oms_http_query(req, "pageToken");
    if (tok && strlen(tok) > 128) {
        oms_http_resp_error(resp, 400, "pageToken: not a token from this API");
        return;
    }
    m.pagetoken = (char *)(tok ? tok : "");
    ProtobufCMessage *out = NULL;
    oms_error err;
    int rc = call_orders(g, "/api.OrderService/ListOrders", &m.base,
                         &api__list_orders_response__descriptor, &out, &err);
    if (rc != OMS_OK) {
        gw_reply_status(resp, rc, err.msg);
        return;
    }
    gw_reply_order_list(resp, (const Api__ListOrdersResponse *)out);
    protobuf_c_message_free_unpacked(out, NULL);
}

static void list_products(const oms_http_req *req, oms_http_resp *resp)
{
    gateway_ctx *g = req->ud;
    Api__ListItemsRequest m = API__LIST_ITEMS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    oms_error err;
    int rc = oms_grpc_call(g->stock, "/api.StockService/ListItems", &m.base,
                           &api__list_items_response__descriptor, &out, g->timeout_ms, &err);
    if (rc != OMS_OK) {
        gw_reply_status(resp, rc, err.msg);
        return;
    }
    const Api__ListItemsResponse *r = (const Api__ListItemsResponse *)out;
    json_t *arr = json_array();
    for (size_t i = 0; i < r->n_items; i++) {
        const Api__OrderItem *it = r->items[i];
        json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:I,s:s,s:i}", "productID",
                                             it->productid, "name", it->productname, "priceID",
                                             it->priceid, "unitPrice", (json_int_t)it->unitprice,
                                             "currency", it->currency, "available", it->available));
    }
    protobuf_c_message_free_unpacked(out, NULL);
    oms_http_resp_json(resp, 200, json_pack("{s:o}", "products", arr));
}

/* ---- Kitchen display ----------------------------------------------------------------
 * The gateway relays the kitchen's ticket listing (GET /tickets, kitchen_client.c),
 * adding "now" (the gateway's clock) so the page computes ticket ages without
 * trusting the browser's. */
static void kitchen_unavailable(oms_http_resp *resp, const char *why)
{
    oms_http_resp_error(resp, 503, "kitchen is unavailable: %s", why);
    oms_http_resp_header(resp, "Retry-After", "2");
}

/* The display shows order numbers and items, never who the customer is. */
static void strip_customers(json_t *tickets)
{
    size_t i;
    json_t *t;
    json_array_foreach(tickets, i, t) json_object_del(t, "customerID");
}

static void kitchen_tickets(const oms_http_req *req, oms_http_resp *resp)
{
    gateway_ctx *g = req->ud;
    if (!gw_require_staff(req, resp, NULL))
        return;
    json_t *body = NULL;
    char why[160];
    int rc = gw_kitchen_get(g->kitchen_admin_url, "/tickets", &body, why, sizeof(why));
    if (rc == OMS_AGAIN) {
        kitchen_unavailable(resp, why);
    } else if (rc != OMS_OK || !json_is_array(json_object_get(body, "tickets"))) {
        json_decref(body);
        oms_http_resp_error(resp, 502, "kitchen returned an invalid ticket listing");
    } else {
        char now[32];
        oms_format_rfc3339(oms_now_ms(), now);
        json_object_set_new(body, "now", json_string(now));
        strip_customers(json_object_get(body, "tickets"));
        oms_http_resp_json(resp, 200, body);
        oms_http_resp_header(resp, "Cache-Control", "no-store");
    }
}

/* GET /kitchen: the display page (kitchen.html from the pages directory). */
static void kitchen_page(const oms_http_req *req, oms_http_resp *resp)
{
    gateway_ctx *g = req->ud;
    if (!gw_require_staff(req, resp, NULL))
        return;
    char path[PATH_MAX];
    int pn = snprintf(path, sizeof(path), "%s/kitchen.html", g->public_dir ? g->public_dir : ".");
    FILE *f = (pn < 0 || (size_t)pn >= sizeof(path)) ? NULL : fopen(path, "rb");
    if (!f) {
        oms_http_resp_error(resp, 404, "the kitchen display page is not installed");
        return;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0, got;
    do {
        if (len + 8192 > cap) {
            cap = cap ? cap * 2 : 16384;
            buf = oms_xrealloc(buf, cap);
        }
        got = fread(buf + len, 1, cap - len, f);
        len += got;
    } while (got > 0 && len < (1u << 20));
    int bad = ferror(f);
    fclose(f);
    if (bad)
        oms_http_resp_error(resp, 500, "cannot read the kitchen display page");
    else
        oms_http_resp_text(resp, 200, "text/html; charset=utf-8", buf, len);
    free(buf);
}

const oms_http_route gateway_http_routes[] = {
    {"GET", "/api/products", list_products},
    {"POST", "/api/customers/{}/orders", create_order},
    {"GET", "/api/customers/{}/orders", list_orders},
    {"GET", "/api/customers/{}/orders/{}", get_order},
    {"POST", "/api/customers/{}/orders/{}/cancel", cancel_order},
    {"GET", "/api/customers/{}/orders/{}/events", gw_order_events},
    {"GET", "/api/staff/kitchen/events", gw_kitchen_events},
    {"GET", "/api/kitchen/tickets", kitchen_tickets},
    {"GET", "/kitchen", kitchen_page},
    {"POST", "/staff/login", gw_staff_login},
    {"POST", "/staff/logout", gw_staff_logout},
    {"GET", "/api/staff/me", gw_staff_me},
    {"GET", "/api/staff/products", gw_staff_products_list},
    {"PUT", "/api/staff/products/{}", gw_staff_product_put},
    {"POST", "/api/staff/products/{}/stock", gw_staff_product_stock},
    {"GET", "/api/staff/orders", gw_staff_list_orders},
    {"GET", "/api/staff/orders/{}", gw_staff_order},
    {"POST", "/api/staff/orders/{}/refund", gw_staff_refund},
    {"POST", "/api/staff/orders/{}/collect", gw_staff_collect},
    {"POST", "/api/staff/pickup/{}", gw_staff_pickup},
    {"GET", "/api/staff/summary", gw_staff_summary},
    {"GET", "/api/staff/audit", gw_staff_audit},
    OMS_ADMIN_ROUTES,
};
const size_t gateway_http_nroutes = OMS_NELEM(gateway_http_routes);
