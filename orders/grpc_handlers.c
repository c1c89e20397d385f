#include "grpc_handlers.h"

#include <stdlib.h>
#include <string.h>

#include "oms.pb-c.h"
#include "oms/order_pb.h"
#include "oms/tracer.h"
#include "oms/util.h"
#include "service.h"

/* Tags the call's span with the order it is about. */
static void span_order(const char *order_id)
{
    if (order_id && *order_id)
        oms_span_set_str(oms_span_current(), OMS_ATTR_ORDER_ID, order_id);
}

static int reply_order(oms_grpc_ctx *ctx, int rc, oms_order *o, ProtobufCMessage **resp)
{
    if (rc == OMS_OK)
        span_order(o->order_id);
    if (rc == OMS_OK)
        *resp = &oms_order_to_pb(o)->base;
    else
        ctx->err.code = rc;
    oms_order_free(o);
    return rc;
}

static int create_order(oms_grpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Api__CreateOrderRequest *req = (const Api__CreateOrderRequest *)m;
    oms_order items, out;
    oms_order_init(&items);
    oms_order_init(&out);
    int rc = oms_order_items_from_pb(req->items, req->n_items, &items, &ctx->err);
    if (rc == OMS_OK)
        rc = orders_create(ctx->ud, req->customerid, &items, req->idempotencykey, &out, &ctx->err);
    oms_order_free(&items);
    return reply_order(ctx, rc, &out, resp);
}

static int get_order(oms_grpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Api__GetOrderRequest *req = (const Api__GetOrderRequest *)m;
    oms_order out;
    span_order(req->orderid);
    int rc = orders_get(ctx->ud, req->orderid, &out, &ctx->err);
    return reply_order(ctx, rc, &out, resp);
}

static int update_order(oms_grpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Api__Order *req = (const Api__Order *)m;
    oms_order out;
    oms_order_init(&out);
    span_order(req->orderid);
    int status = -1;
    if (req->status && req->status[0]) {
        status = oms_order_status_parse(req->status);
        if (status < 0)
            return oms_error_set(&ctx->err, OMS_INVALID, "status: unknown value \"%.40s\"",
                                 req->status);
    }
    int rc = orders_update(ctx->ud, req->orderid, status, req->paymentlink, &out, &ctx->err);
    return reply_order(ctx, rc, &out, resp);
}

/* A list of orders as the response (the orders are freed here). */
static Api__ListOrdersResponse *orders_response(oms_order *orders, size_t n, const char *next)
{
    Api__ListOrdersResponse *r = oms_xmalloc(sizeof(*r));
    api__list_orders_response__init(r);
    r->n_orders = n;
    r->orders = n ? oms_xcalloc(n, sizeof(*r->orders)) : NULL;
    for (size_t i = 0; i < n; i++) {
        r->orders[i] = oms_order_to_pb(&orders[i]);
        oms_order_free(&orders[i]);
    }
    free(orders);
    r->nextpagetoken = next[0] ? oms_strdup(next) : (char *)protobuf_c_empty_string;
    return r;
}

static int list_orders(oms_grpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Api__ListOrdersRequest *req = (const Api__ListOrdersRequest *)m;
    oms_order *orders = NULL;
    size_t n = 0;
    char next[96];
    int rc = orders_list(ctx->ud, req->customerid, req->pagesize, req->pagetoken, &orders, &n, next,
                         &ctx->err);
    if (rc != OMS_OK)
        return rc;
    *resp = &orders_response(orders, n, next)->base;
    return OMS_OK;
}

static int cancel_order(oms_grpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Api__CancelOrderRequest *req = (const Api__CancelOrderRequest *)m;
    oms_order out;
    oms_order_init(&out);
    span_order(req->orderid);
    int rc = orders_cancel(ctx->ud, req->orderid, req->customerid, &out, &ctx->err);
    return reply_order(ctx, rc, &out, resp);
}

/* ---- back office (staff) ---------------------------------------------------------- */

static int staff_list_orders(oms_grpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Api__StaffListOrdersRequest *req = (const Api__StaffListOrdersRequest *)m;
    orders_staff_filter f = {.status = req->status,
                             .customer_id = req->customerid,
                             .order_id = req->orderid,
                             .since_ms = req->sincems,
                             .until_ms = req->untilms};
    oms_order *orders = NULL;
    size_t n = 0;
    char next[96];
    int rc =
        orders_staff_list(ctx->ud, &f, req->pagesize, req->pagetoken, &orders, &n, next, &ctx->err);
    if (rc != OMS_OK)
        return rc;
    *resp = &orders_response(orders, n, next)->base;
    return OMS_OK;
}

static int get_order_history(oms_grpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Api__GetOrderRequest *req = (const Api__GetOrderRequest *)m;
    oms_order o;
    orders_history_entry *h = NULL;
    size_t n = 0;
    span_order(req->orderid);
    int rc = orders_history(ctx->ud, req->orderid, &o, &h, &n, &ctx->err);
    if (rc != OMS_OK)
        return rc;
    Api__OrderHistory *r = oms_xmalloc(sizeof(*r));
    api__order_history__init(r);
    r->order = oms_order_to_pb(&o);
    oms_order_free(&o);
    r->n_history = n;
    r->history = n ? oms_xcalloc(n, sizeof(*r->history)) : NULL;
    for (size_t i = 0; i < n; i++) {
        Api__HistoryEntry *e = oms_xmalloc(sizeof(*e));
        api__history_entry__init(e);
        char at[32];
        oms_format_rfc3339(h[i].at_ms, at);
        e->status = oms_strdup(oms_order_status_str(h[i].status));
        e->at = oms_strdup(at);
        e->cause = h[i].cause; /* handed over */
        h[i].cause = NULL;
        r->history[i] = e;
    }
    orders_history_free(h, n);
    *resp = &r->base;
    return OMS_OK;
}

static int refund_order(oms_grpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Api__RefundOrderRequest *req = (const Api__RefundOrderRequest *)m;
    oms_order out;
    span_order(req->orderid);
    int rc = orders_refund(ctx->ud, req->orderid, req->staff, req->reason, &out, &ctx->err);
    return reply_order(ctx, rc, &out, resp);
}

static int get_summary(oms_grpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Api__SummaryRequest *req = (const Api__SummaryRequest *)m;
    orders_summary sum;
    int rc = orders_summary_get(ctx->ud, req->day, req->tzoffsetminutes, &sum, &ctx->err);
    if (rc != OMS_OK)
        return rc;
    Api__Summary *r = oms_xmalloc(sizeof(*r));
    api__summary__init(r);
    r->day = oms_strdup(sum.day);
    r->orders = sum.orders;
    r->paidorders = sum.paid_orders;
    r->revenue = sum.revenue;
    r->currency = oms_strdup(sum.currency);
    r->refunds = sum.refunds;
    r->refundedamount = sum.refunded_amount;
    r->n_units = sum.nunits;
    r->units = sum.nunits ? oms_xcalloc(sum.nunits, sizeof(*r->units)) : NULL;
    for (size_t i = 0; i < sum.nunits; i++) {
        Api__OrderItem *it = oms_xmalloc(sizeof(*it));
        api__order_item__init(it);
        it->productid = oms_strdup(sum.units[i].product_id);
        it->productname = sum.units[i].product_name; /* handed over */
        sum.units[i].product_name = NULL;
        it->quantity =
            sum.units[i].quantity > INT32_MAX ? INT32_MAX : (int32_t)sum.units[i].quantity;
        r->units[i] = it;
    }
    r->paidtoreadyp50ms = sum.paid_to_ready_p50_ms;
    r->paidtoreadyp90ms = sum.paid_to_ready_p90_ms;
    r->n_ordersperhour = 24;
    r->ordersperhour = oms_xcalloc(24, sizeof(*r->ordersperhour));
    for (int h = 0; h < 24; h++)
        r->ordersperhour[h] = sum.orders_per_hour[h];
    r->latetickets = sum.late_tickets;
    orders_summary_free(&sum);
    *resp = &r->base;
    return OMS_OK;
}

static int list_audit(oms_grpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Api__ListAuditRequest *req = (const Api__ListAuditRequest *)m;
    orders_audit *a = NULL;
    size_t n = 0;
    int rc = orders_audit_list(ctx->ud, req->beforems, req->limit, &a, &n, &ctx->err);
    if (rc != OMS_OK)
        return rc;
    Api__ListAuditResponse *r = oms_xmalloc(sizeof(*r));
    api__list_audit_response__init(r);
    r->n_entries = n;
    r->entries = n ? oms_xcalloc(n, sizeof(*r->entries)) : NULL;
    for (size_t i = 0; i < n; i++) {
        Api__AuditEntry *e = oms_xmalloc(sizeof(*e));
        api__audit_entry__init(e);
        char at[32];
        oms_format_rfc3339(a[i].at_ms, at);
        e->id = a[i].id;
        e->at = oms_strdup(at);
        e->atms = a[i].at_ms;
        e->service = oms_strdup("orders");
        /* The strings are handed over to the message. */
        e->staff = a[i].staff;
        e->action = a[i].action;
        e->subject = a[i].subject;
        e->before = a[i].before;
        e->after = a[i].after;
        e->reason = a[i].reason;
        memset(&a[i], 0, sizeof(a[i]));
        r->entries[i] = e;
    }
    free(a);
    *resp = &r->base;
    return OMS_OK;
}

static int collect_order(oms_grpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Api__CollectOrderRequest *req = (const Api__CollectOrderRequest *)m;
    oms_order out;
    oms_order_init(&out);
    span_order(req->orderid);
    int rc = orders_collect(ctx->ud, req->orderid, req->pickupcode, req->staff, &out, &ctx->err);
    return reply_order(ctx, rc, &out, resp);
}

const oms_grpc_method orders_grpc_methods[] = {
    {"/api.OrderService/CreateOrder", &api__create_order_request__descriptor, create_order},
    {"/api.OrderService/GetOrder", &api__get_order_request__descriptor, get_order},
    {"/api.OrderService/UpdateOrder", &api__order__descriptor, update_order},
    {"/api.OrderService/ListOrders", &api__list_orders_request__descriptor, list_orders},
    {"/api.OrderService/CancelOrder", &api__cancel_order_request__descriptor, cancel_order},
    {"/api.OrderService/StaffListOrders", &api__staff_list_orders_request__descriptor,
     staff_list_orders},
    {"/api.OrderService/GetOrderHistory", &api__get_order_request__descriptor, get_order_history},
    {"/api.OrderService/RefundOrder", &api__refund_order_request__descriptor, refund_order},
    {"/api.OrderService/GetSummary", &api__summary_request__descriptor, get_summary},
    {"/api.OrderService/ListAudit", &api__list_audit_request__descriptor, list_audit},
    {"/api.OrderService/CollectOrder", &api__collect_order_request__descriptor, collect_order},
};
const size_t orders_grpc_methods_count = OMS_NELEM(orders_grpc_methods);
