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
    *resp = &r->base;
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

const oms_grpc_method orders_grpc_methods[] = {
    {"/api.OrderService/CreateOrder", &api__create_order_request__descriptor, create_order},
    {"/api.OrderService/GetOrder", &api__get_order_request__descriptor, get_order},
    {"/api.OrderService/UpdateOrder", &api__order__descriptor, update_order},
    {"/api.OrderService/ListOrders", &api__list_orders_request__descriptor, list_orders},
    {"/api.OrderService/CancelOrder", &api__cancel_order_request__descriptor, cancel_order},
};
const size_t orders_grpc_methods_count = OMS_NELEM(orders_grpc_methods);
