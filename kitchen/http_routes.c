#include "http_routes.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "oms/admin.h"
#include "oms/order.h"
#include "oms/util.h"
#include "service.h"

/* The display page is served by the gateway from another origin and reads these
 * routes with fetch(); they hold no secrets, so any origin may read them. */
static void allow_any_origin(oms_http_resp *resp)
{
    oms_http_resp_header(resp, "Access-Control-Allow-Origin", "*");
}

/* RFC 3339 for a set time, JSON null for "not yet". New reference. */
static json_t *time_json(long long ms)
{
    char buf[32];
    if (ms <= 0)
        return json_null();
    oms_format_rfc3339(ms, buf);
    return json_string(buf);
}

/* The items of a ticket's stored order as [{productName, quantity}], and its pickup
 * code into code ("" when it has none). A stored order that no longer parses shows no
 * items rather than failing the whole listing. */
static json_t *items_json(const kitchen_ticket *t, char code[OMS_PICKUP_CODE_MAX + 1])
{
    code[0] = '\0';
    json_t *items = json_array();
    oms_order o;
    oms_error err;
    if (!items)
        return NULL;
    if (oms_order_from_json_str(t->order_json, strlen(t->order_json), &o, &err) != OMS_OK)
        return items;
    memcpy(code, o.pickup_code, sizeof(o.pickup_code));
    for (size_t i = 0; i < o.nitems; i++) {
        const oms_order_item *it = &o.items[i];
        json_t *j = json_pack("{s:s,s:i}", "productName", it->product_name ? it->product_name : "",
                              "quantity", it->quantity);
        if (!j || json_array_append_new(items, j) != 0) {
            json_decref(items);
            items = NULL;
            break;
        }
    }
    oms_order_free(&o);
    return items;
}

/* One ticket as JSON; NULL only when out of memory. json_pack's "o" takes the
 * references it is given, also when it fails. */
static json_t *ticket_json(const kitchen_ticket *t)
{
    char code[OMS_PICKUP_CODE_MAX + 1];
    json_t *items = items_json(t, code);
    if (!items)
        return NULL;
    int bit = t->state == KITCHEN_QUEUED    ? KITCHEN_LATE_QUEUED
              : t->state == KITCHEN_COOKING ? KITCHEN_LATE_COOKING
              : t->state == KITCHEN_READY   ? KITCHEN_LATE_READY
                                            : 0;
    return json_pack("{s:s,s:s,s:s,s:o,s:s,s:o,s:o,s:o,s:b,s:b}", "orderID", t->order_id,
                     "pickupCode", code, "customerID", t->customer_id, "items", items, "state",
                     kitchen_state_str(t->state), "queuedAt", time_json(t->queued_at), "startedAt",
                     time_json(t->started_at), "readyAt", time_json(t->ready_at), "late",
                     (t->late_mask & bit) != 0, "wasLate", t->late_mask != 0);
}

/* GET /tickets -> {"tickets":[...]}, newest first. */
static void tickets_list(const oms_http_req *req, oms_http_resp *resp)
{
    kitchen_ticket *v = NULL;
    size_t n = 0;
    oms_error err;
    oms_error_clear(&err);
    int rc = kitchen_list_tickets(req->ud, KITCHEN_TICKETS_LIMIT, &v, &n, &err);
    if (rc != OMS_OK) {
        oms_http_resp_error(resp, oms_status_to_http(rc), "%s", err.msg);
        allow_any_origin(resp);
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        json_t *j = ticket_json(&v[i]);
        if (!j || json_array_append_new(list, j) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    for (size_t i = 0; i < n; i++)
        kitchen_ticket_free(&v[i]);
    free(v);
    const kitchen_service *svc = req->ud;
    /* The limits go with the tickets so the display colours ages by the same rule. */
    json_t *body =
        list ? json_pack("{s:o,s:I,s:I}", "tickets", list, "slaMs", (json_int_t)svc->sla_ms,
                         "pickupWindowMs", (json_int_t)svc->pickup_window_ms)
             : NULL;
    if (!body)
        oms_http_resp_error(resp, 500, "out of memory building the ticket listing");
    else
        oms_http_resp_json(resp, 200, body);
    allow_any_origin(resp);
}

/* GET /tickets/{orderID} -> one ticket; 404 when the kitchen never saw the order. */
static void ticket_get(const oms_http_req *req, oms_http_resp *resp)
{
    kitchen_ticket t;
    oms_error err;
    oms_error_clear(&err);
    int rc = kitchen_get_ticket(req->ud, req->params[0], &t, &err);
    if (rc != OMS_OK) {
        oms_http_resp_error(resp, oms_status_to_http(rc), "%s", err.msg);
        allow_any_origin(resp);
        return;
    }
    json_t *body = ticket_json(&t);
    kitchen_ticket_free(&t);
    if (!body)
        oms_http_resp_error(resp, 500, "out of memory building the ticket");
    else
        oms_http_resp_json(resp, 200, body);
    allow_any_origin(resp);
}

/* A query parameter as milliseconds since the epoch; -1 when absent or malformed. */
static long long query_ms(const oms_http_req *req, const char *name)
{
    const char *v = oms_http_query(req, name);
    if (!v || !v[0] || strlen(v) > 15)
        return -1;
    char *end;
    long long ms = strtoll(v, &end, 10);
    return *end || ms < 0 ? -1 : ms;
}

/* GET /late?from=<ms>&to=<ms> -> {"late":n}: tickets queued then that turned late in
 * some stage (the back office's day summary). */
static void late_count(const oms_http_req *req, oms_http_resp *resp)
{
    long long from = query_ms(req, "from"), to = query_ms(req, "to"), n = 0;
    oms_error err;
    oms_error_clear(&err);
    if (from < 0 || to < 0) {
        oms_http_resp_error(resp, 400, "from, to: milliseconds since the epoch are required");
        return;
    }
    int rc = kitchen_count_late(req->ud, from, to, &n, &err);
    if (rc != OMS_OK) {
        oms_http_resp_error(resp, oms_status_to_http(rc), "%s", err.msg);
        return;
    }
    oms_http_resp_json(resp, 200, json_pack("{s:I}", "late", (json_int_t)n));
}

const oms_http_route kitchen_http_routes[] = {
    OMS_ADMIN_ROUTES,
    {"GET", "/tickets", tickets_list},
    {"GET", "/tickets/{}", ticket_get},
    {"GET", "/late", late_count},
};

const size_t kitchen_http_nroutes = OMS_NELEM(kitchen_http_routes);
