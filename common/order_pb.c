#include "oms/order_pb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "oms/util.h"

/* protobuf-c frees a string field unless it is the descriptor's default
 * (protobuf_c_empty_string), so empty strings stay the default and others are heap. */
static char *pb_str(const char *s)
{
    return (s && s[0]) ? oms_strdup(s) : (char *)protobuf_c_empty_string;
}

Api__OrderItem *oms_order_item_to_pb(const oms_order_item *it, const char *currency)
{
    Api__OrderItem *m = oms_xmalloc(sizeof(*m));
    api__order_item__init(m);
    m->productid = pb_str(it->product_id);
    m->productname = pb_str(it->product_name);
    m->priceid = pb_str(it->price_id);
    m->quantity = it->quantity;
    m->unitprice = it->unit_price;
    m->currency = pb_str(currency);
    return m;
}

Api__Order *oms_order_to_pb(const oms_order *o)
{
    Api__Order *m = oms_xmalloc(sizeof(*m));
    api__order__init(m);
    m->orderid = pb_str(o->order_id);
    m->customerid = pb_str(o->customer_id);
    m->status = pb_str(oms_order_status_str(o->status));
    m->paymentlink = pb_str(o->payment_link && o->payment_link[0] ? o->payment_link : "none");
    m->total = o->total;
    m->currency = pb_str(o->currency);
    char ts[32];
    oms_format_rfc3339(o->created_ms, ts);
    m->createdat = pb_str(ts);
    oms_format_rfc3339(o->updated_ms ? o->updated_ms : o->created_ms, ts);
    m->updatedat = pb_str(ts);
    m->pickupcode = pb_str(o->pickup_code);
    if (o->nitems) {
        m->items = oms_xcalloc(o->nitems, sizeof(*m->items));
        m->n_items = o->nitems;
        for (size_t i = 0; i < o->nitems; i++)
            m->items[i] = oms_order_item_to_pb(&o->items[i], o->currency);
    }
    return m;
}

int oms_order_items_from_pb(Api__OrderItem *const *items, size_t n, oms_order *o, oms_error *err)
{
    for (size_t i = 0; i < n; i++) {
        const Api__OrderItem *m = items[i];
        if (!m->productid || strlen(m->productid) > OMS_ID_MAX)
            return oms_error_set(err, OMS_INVALID,
                                 "items[%zu].productID: must be 1 to 64 characters", i);
        oms_order_item it;
        memset(&it, 0, sizeof(it));
        snprintf(it.product_id, sizeof(it.product_id), "%s", m->productid);
        it.product_name = (m->productname && m->productname[0]) ? m->productname : NULL;
        it.price_id = (m->priceid && m->priceid[0]) ? m->priceid : NULL;
        it.quantity = m->quantity;
        it.unit_price = m->unitprice;
        oms_order_add_item(o, &it); /* copies the borrowed strings */
    }
    return OMS_OK;
}

static long long parse_rfc3339(const char *s)
{
    int Y, M, D, h, mi, sec;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &Y, &M, &D, &h, &mi, &sec) != 6)
        return 0;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    const char *dot = strchr(s, '.');
    return (long long)timegm(&tm) * 1000 + (dot ? atoi(dot + 1) % 1000 : 0);
}

int oms_order_from_pb(const Api__Order *m, oms_order *out, oms_error *err)
{
    oms_order_init(out);
    if (m->orderid && m->orderid[0]) {
        if (!oms_valid_id(m->orderid))
            return oms_error_set(err, OMS_INVALID,
                                 "orderID: must be 1 to 64 characters of "
                                 "A-Z a-z 0-9 _ . : -");
        snprintf(out->order_id, sizeof(out->order_id), "%s", m->orderid);
    }
    if (m->customerid && m->customerid[0]) {
        if (!oms_valid_id(m->customerid))
            return oms_error_set(err, OMS_INVALID,
                                 "customerID: must be 1 to 64 characters of "
                                 "A-Z a-z 0-9 _ . : -");
        snprintf(out->customer_id, sizeof(out->customer_id), "%s", m->customerid);
    }
    out->status = (oms_order_status)-1;
    if (m->status && m->status[0]) {
        int s = oms_order_status_parse(m->status);
        if (s < 0)
            return oms_error_set(err, OMS_INVALID, "status: unknown value \"%.40s\"", m->status);
        out->status = (oms_order_status)s;
    }
    if (m->paymentlink && m->paymentlink[0] && strcmp(m->paymentlink, "none") != 0)
        out->payment_link = oms_strdup(m->paymentlink);
    if (m->currency && m->currency[0] && strlen(m->currency) < sizeof(out->currency))
        snprintf(out->currency, sizeof(out->currency), "%s", m->currency);
    out->total = m->total;
    out->created_ms = parse_rfc3339(m->createdat);
    out->updated_ms = parse_rfc3339(m->updatedat);
    if (m->pickupcode && oms_pickup_code_valid(m->pickupcode))
        snprintf(out->pickup_code, sizeof(out->pickup_code), "%s", m->pickupcode);
    int rc = oms_order_items_from_pb(m->items, m->n_items, out, err);
    if (rc != OMS_OK)
        oms_order_free(out);
    return rc;
}
