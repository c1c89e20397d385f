/* gRPC <-> service.c. Responses are built from malloc'd parts because the server
 * frees them with protobuf_c_message_free_unpacked; allocation failures abort
 * (oms_x*), so a handler never returns a half-built message. */
#include "grpc_handlers.h"

#include <stdint.h>
#include <stdlib.h>

#include "oms.pb-c.h"
#include "oms/tracer.h"
#include "oms/util.h"
#include "service.h"

/* A new OrderItem (owned by the message it is attached to) from a service item. */
static Api__OrderItem *item_to_pb(const stock_item *it, int with_available)
{
    Api__OrderItem *m = oms_xmalloc(sizeof(*m));
    api__order_item__init(m);
    m->productid = oms_strdup(it->product_id);
    m->productname = oms_strdup(it->name ? it->name : "");
    m->priceid = oms_strdup(it->price_id ? it->price_id : "");
    m->currency = oms_strdup(it->currency);
    m->quantity = (int32_t)it->quantity;
    m->unitprice = it->unit_price;
    if (with_available)
        m->available = (int32_t)it->available;
    return m;
}

/* A heap array of items for a repeated field (NULL when empty), owned by the message. */
static Api__OrderItem **items_to_pb(const stock_items *l, int with_available, size_t *n)
{
    *n = l->n;
    if (l->n == 0)
        return NULL;
    Api__OrderItem **v = oms_xcalloc(l->n, sizeof(*v));
    for (size_t i = 0; i < l->n; i++)
        v[i] = item_to_pb(&l->v[i], with_available);
    return v;
}

/* Request items as service input; the array is heap (caller frees), the ids borrowed
 * from the request message. */
static stock_req_item *items_from_pb(Api__OrderItem *const *items, size_t n)
{
    stock_req_item *v = oms_xcalloc(n, sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        v[i].product_id = items[i]->productid;
        v[i].quantity = items[i]->quantity;
    }
    return v;
}

static int handle_check(oms_grpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Api__CheckIfItemsAreInStockRequest *in = (const Api__CheckIfItemsAreInStockRequest *)req;
    stock_items items;
    stock_items_init(&items);
    int in_stock = 0;
    stock_req_item *want = items_from_pb(in->items, in->n_items);
    int rc = stock_check(ctx->ud, want, in->n_items, &in_stock, &items, &ctx->err);
    free(want);
    if (rc != OMS_OK)
        return rc;
    Api__CheckIfItemsAreInStockResponse *out = oms_xmalloc(sizeof(*out));
    api__check_if_items_are_in_stock_response__init(out);
    out->instock = in_stock ? 1 : 0;
    out->items = items_to_pb(&items, 0, &out->n_items);
    stock_items_free(&items);
    *resp = &out->base;
    return OMS_OK;
}

static int handle_get_items(oms_grpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Api__GetItemsRequest *in = (const Api__GetItemsRequest *)req;
    stock_items items;
    stock_items_init(&items);
    int rc = stock_get_items(ctx->ud, (const char *const *)in->itemids, in->n_itemids, &items,
                             &ctx->err);
    if (rc != OMS_OK)
        return rc;
    Api__GetItemsResponse *out = oms_xmalloc(sizeof(*out));
    api__get_items_response__init(out);
    out->items = items_to_pb(&items, 1, &out->n_items);
    stock_items_free(&items);
    *resp = &out->base;
    return OMS_OK;
}

static int handle_list_items(oms_grpc_ctx *ctx, const ProtobufCMessage *req,
                             ProtobufCMessage **resp)
{
    stock_items items;
    stock_items_init(&items);
    int rc = stock_list_items(ctx->ud, &items, &ctx->err);
    if (rc != OMS_OK)
        return rc;
    Api__ListItemsResponse *out = oms_xmalloc(sizeof(*out));
    api__list_items_response__init(out);
    out->items = items_to_pb(&items, 1, &out->n_items);
    stock_items_free(&items);
    *resp = &out->base;
    return OMS_OK;
}

static int handle_reserve(oms_grpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Api__ReserveItemsRequest *in = (const Api__ReserveItemsRequest *)req;
    oms_span_set_str(oms_span_current(), OMS_ATTR_ORDER_ID, in->orderid);
    stock_items items;
    stock_items_init(&items);
    stock_req_item *want = items_from_pb(in->items, in->n_items);
    int rc =
        stock_reserve(ctx->ud, in->orderid, want, in->n_items, oms_now_ms(), &items, &ctx->err);
    free(want);
    if (rc != OMS_OK)
        return rc;
    Api__ReserveItemsResponse *out = oms_xmalloc(sizeof(*out));
    api__reserve_items_response__init(out);
    out->items = items_to_pb(&items, 0, &out->n_items);
    stock_items_free(&items);
    *resp = &out->base;
    return OMS_OK;
}

typedef int (*reservation_fn)(stock_service *, const char *, int64_t, stock_res_state *,
                              oms_error *);

/* Release and commit share their shape: order id in, order id and state out. */
static int handle_reservation(oms_grpc_ctx *ctx, const ProtobufCMessage *req,
                              ProtobufCMessage **resp, reservation_fn fn)
{
    const Api__ReservationRequest *in = (const Api__ReservationRequest *)req;
    oms_span_set_str(oms_span_current(), OMS_ATTR_ORDER_ID, in->orderid);
    stock_res_state state = STOCK_RES_RESERVED;
    int rc = fn(ctx->ud, in->orderid, oms_now_ms(), &state, &ctx->err);
    if (rc != OMS_OK)
        return rc;
    Api__ReservationResponse *out = oms_xmalloc(sizeof(*out));
    api__reservation_response__init(out);
    out->orderid = oms_strdup(in->orderid);
    out->state = oms_strdup(stock_res_state_str(state));
    *resp = &out->base;
    return OMS_OK;
}

static int handle_release(oms_grpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    return handle_reservation(ctx, req, resp, stock_release);
}

static int handle_commit(oms_grpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    return handle_reservation(ctx, req, resp, stock_commit);
}

/* ---- back office (staff) ---------------------------------------------------------- */

/* A new Product message (caller owns it) from a service item. */
static Api__Product *product_to_pb(const stock_item *it)
{
    Api__Product *m = oms_xmalloc(sizeof(*m));
    api__product__init(m);
    m->productid = oms_strdup(it->product_id);
    m->name = oms_strdup(it->name ? it->name : "");
    m->priceid = oms_strdup(it->price_id ? it->price_id : "");
    m->unitprice = it->unit_price;
    /* The catalog file keeps Stripe's lower case; the contract says upper case. */
    m->currency = oms_strdup(it->currency);
    for (char *c = m->currency; *c; c++)
        if (*c >= 'a' && *c <= 'z')
            *c = (char)(*c - 'a' + 'A');
    m->onsale = it->on_sale ? 1 : 0;
    m->available = (int32_t)it->available;
    m->reserved = (int32_t)it->reserved;
    m->sold = (int32_t)it->sold;
    return m;
}

static int handle_list_products(oms_grpc_ctx *ctx, const ProtobufCMessage *req,
                                ProtobufCMessage **resp)
{
    stock_items items;
    stock_items_init(&items);
    int rc = stock_list_products(ctx->ud, &items, &ctx->err);
    if (rc != OMS_OK)
        return rc;
    Api__ListProductsResponse *out = oms_xmalloc(sizeof(*out));
    api__list_products_response__init(out);
    out->n_products = items.n;
    out->products = items.n ? oms_xcalloc(items.n, sizeof(*out->products)) : NULL;
    for (size_t i = 0; i < items.n; i++)
        out->products[i] = product_to_pb(&items.v[i]);
    stock_items_free(&items);
    *resp = &out->base;
    return OMS_OK;
}

static int handle_put_product(oms_grpc_ctx *ctx, const ProtobufCMessage *req,
                              ProtobufCMessage **resp)
{
    const Api__PutProductRequest *in = (const Api__PutProductRequest *)req;
    const Api__Product *p = in->product;
    if (!p)
        return oms_error_set(&ctx->err, OMS_INVALID, "product: required");
    stock_product_change c = {
        .product_id = p->productid,
        .name = p->name,
        .price_id = p->priceid,
        .currency = p->currency,
        .unit_price = p->unitprice,
        .on_sale = p->onsale,
        .fields = (const char *const *)in->fields,
        .nfields = in->n_fields,
    };
    stock_items items;
    stock_items_init(&items);
    int created = 0;
    int rc = stock_put_product(ctx->ud, in->staff, &c, oms_now_ms(), &items, &created, &ctx->err);
    if (rc != OMS_OK)
        return rc;
    Api__Product *out = product_to_pb(&items.v[0]);
    out->created = created ? 1 : 0;
    stock_items_free(&items);
    *resp = &out->base;
    return OMS_OK;
}

static int handle_adjust_stock(oms_grpc_ctx *ctx, const ProtobufCMessage *req,
                               ProtobufCMessage **resp)
{
    const Api__AdjustStockRequest *in = (const Api__AdjustStockRequest *)req;
    stock_adjustment a = {
        .product_id = in->productid,
        .delta = in->delta,
        .set = in->set,
        .is_set = in->isset,
        .reason = in->reason,
    };
    stock_items items;
    stock_items_init(&items);
    int rc = stock_adjust(ctx->ud, in->staff, &a, oms_now_ms(), &items, &ctx->err);
    if (rc != OMS_OK)
        return rc;
    Api__Product *out = product_to_pb(&items.v[0]);
    stock_items_free(&items);
    *resp = &out->base;
    return OMS_OK;
}

static int handle_list_audit(oms_grpc_ctx *ctx, const ProtobufCMessage *req,
                             ProtobufCMessage **resp)
{
    const Api__ListAuditRequest *in = (const Api__ListAuditRequest *)req;
    stock_audit_list l;
    stock_audit_list_init(&l);
    int rc = stock_list_audit(ctx->ud, in->beforems, in->limit, &l, &ctx->err);
    if (rc != OMS_OK)
        return rc;
    Api__ListAuditResponse *out = oms_xmalloc(sizeof(*out));
    api__list_audit_response__init(out);
    out->n_entries = l.n;
    out->entries = l.n ? oms_xcalloc(l.n, sizeof(*out->entries)) : NULL;
    for (size_t i = 0; i < l.n; i++) {
        const stock_audit_entry *e = &l.v[i];
        Api__AuditEntry *m = oms_xmalloc(sizeof(*m));
        api__audit_entry__init(m);
        char at[32];
        oms_format_rfc3339(e->at_ms, at);
        m->id = e->id;
        m->at = oms_strdup(at);
        m->atms = e->at_ms;
        m->staff = oms_strdup(e->staff ? e->staff : "");
        m->service = oms_strdup("stock");
        m->action = oms_strdup(e->action ? e->action : "");
        m->subject = oms_strdup(e->subject ? e->subject : "");
        m->before = oms_strdup(e->before ? e->before : "");
        m->after = oms_strdup(e->after ? e->after : "");
        m->reason = oms_strdup(e->reason ? e->reason : "");
        out->entries[i] = m;
    }
    stock_audit_list_free(&l);
    *resp = &out->base;
    return OMS_OK;
}

const oms_grpc_method stock_grpc_methods[] = {
    {"/api.StockService/CheckIfItemsAreInStock",
     &api__check_if_items_are_in_stock_request__descriptor, handle_check},
    {"/api.StockService/GetItems", &api__get_items_request__descriptor, handle_get_items},
    {"/api.StockService/ListItems", &api__list_items_request__descriptor, handle_list_items},
    {"/api.StockService/ReserveItems", &api__reserve_items_request__descriptor, handle_reserve},
    {"/api.StockService/ReleaseReservation", &api__reservation_request__descriptor, handle_release},
    {"/api.StockService/CommitReservation", &api__reservation_request__descriptor, handle_commit},
    {"/api.StockService/ListProducts", &api__list_products_request__descriptor,
     handle_list_products},
    {"/api.StockService/PutProduct", &api__put_product_request__descriptor, handle_put_product},
    {"/api.StockService/AdjustStock", &api__adjust_stock_request__descriptor, handle_adjust_stock},
    {"/api.StockService/ListAudit", &api__list_audit_request__descriptor, handle_list_audit},
};

const size_t stock_grpc_nmethods = OMS_NELEM(stock_grpc_methods);
