#include "oms/order.h"

#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "oms/util.h"

/* ---- statuses ------------------------------------------------------------------ */

static const char *const status_names[OMS_ORDER__COUNT] = {
#define OMS_ORDER_STATUS_NAME(name, str, rank) str,
    OMS_ORDER_STATUS_MAP(OMS_ORDER_STATUS_NAME)
#undef OMS_ORDER_STATUS_NAME
};

static const int status_ranks[OMS_ORDER__COUNT] = {
#define OMS_ORDER_STATUS_RANK(name, str, rank) rank,
    OMS_ORDER_STATUS_MAP(OMS_ORDER_STATUS_RANK)
#undef OMS_ORDER_STATUS_RANK
};

const char *oms_order_status_str(oms_order_status s)
{
    if ((int)s < 0 || s >= OMS_ORDER__COUNT)
        return "unknown";
    return status_names[s];
}

int oms_order_status_parse(const char *s)
{
    if (!s)
        return -1;
    for (int i = 0; i < OMS_ORDER__COUNT; i++)
        if (strcmp(s, status_names[i]) == 0)
            return i;
    return -1;
}

int oms_order_status_terminal(oms_order_status s)
{
    return s == OMS_ORDER_COLLECTED || s == OMS_ORDER_CANCELLED || s == OMS_ORDER_PAYMENT_FAILED ||
           s == OMS_ORDER_REFUNDED;
}

int oms_order_can_move(oms_order_status from, oms_order_status to)
{
    if ((int)from < 0 || from >= OMS_ORDER__COUNT || (int)to < 0 || to >= OMS_ORDER__COUNT)
        return 0;
    if (to == OMS_ORDER_REFUNDED)
        return from != OMS_ORDER_REFUNDED;
    if (from == to || oms_order_status_terminal(from))
        return 0;
    if (to == OMS_ORDER_COLLECTED) /* handed over: only what the kitchen made ready */
        return from == OMS_ORDER_READY;
    if (status_ranks[to] < 0) /* side exit: only before payment */
        return from == OMS_ORDER_PENDING || from == OMS_ORDER_WAITING_PAYMENT;
    return status_ranks[to] > status_ranks[from];
}

int oms_pickup_code_valid(const char *s)
{
    size_t n = 0;
    for (; s && s[n]; n++)
        if (!((s[n] >= 'A' && s[n] <= 'Z') || (s[n] >= '0' && s[n] <= '9')))
            return 0;
    return n >= 1 && n <= OMS_PICKUP_CODE_MAX;
}

/* ---- model ---------------------------------------------------------------------- */

void oms_order_init(oms_order *o)
{
    memset(o, 0, sizeof(*o));
    o->status = OMS_ORDER_PENDING;
    strcpy(o->currency, "usd");
}

void oms_order_item_free(oms_order_item *it)
{
    free(it->product_name);
    free(it->price_id);
    it->product_name = NULL;
    it->price_id = NULL;
}

void oms_order_free(oms_order *o)
{
    for (size_t i = 0; i < o->nitems; i++)
        oms_order_item_free(&o->items[i]);
    free(o->items);
    free(o->payment_link);
    oms_order_init(o);
}

/* The array grows to the next power of two (at least 4) when full, so adding n items
 * costs O(n) copies: a request may bring thousands of entries that merge into a few
 * (a growth of one element per add was quadratic). Invariant: the allocation holds at
 * least max(4, next power of two >= nitems); normalising only shrinks nitems. */
void oms_order_add_item(oms_order *o, const oms_order_item *it)
{
    size_t n = o->nitems;
    if (n == 0 || (n >= 4 && (n & (n - 1)) == 0))
        o->items = oms_xrealloc(o->items, (n < 4 ? 4 : 2 * n) * sizeof(*o->items));
    oms_order_item *d = &o->items[o->nitems++];
    memset(d, 0, sizeof(*d));
    snprintf(d->product_id, sizeof(d->product_id), "%s", it->product_id);
    d->product_name = oms_strdup(it->product_name);
    d->price_id = oms_strdup(it->price_id);
    d->quantity = it->quantity;
    d->unit_price = it->unit_price;
}

int oms_order_compute_total(const oms_order *o, long long *total, oms_error *err)
{
    long long sum = 0;
    for (size_t i = 0; i < o->nitems; i++) {
        long long line;
        if (__builtin_mul_overflow((long long)o->items[i].quantity, o->items[i].unit_price,
                                   &line) ||
            __builtin_add_overflow(sum, line, &sum))
            return oms_error_set(err, OMS_INVALID, "order total overflows");
    }
    *total = sum;
    return OMS_OK;
}

/* ---- request rules ---------------------------------------------------------------- */

int oms_order_normalize_items(oms_order *o, oms_error *err)
{
    if (o->nitems == 0)
        return oms_error_set(err, OMS_INVALID, "items: at least one item is required");
    size_t out = 0;
    for (size_t i = 0; i < o->nitems; i++) {
        oms_order_item *it = &o->items[i];
        if (!oms_valid_id(it->product_id))
            return oms_error_set(err, OMS_INVALID,
                                 "items[%zu].productID: must be 1 to 64 characters of "
                                 "A-Z a-z 0-9 _ . : -",
                                 i);
        if (it->quantity < OMS_MIN_QUANTITY || it->quantity > OMS_MAX_QUANTITY)
            return oms_error_set(err, OMS_INVALID,
                                 "items[%zu].quantity: must be an integer from %d to %d", i,
                                 OMS_MIN_QUANTITY, OMS_MAX_QUANTITY);
        size_t j = 0;
        while (j < out && strcmp(o->items[j].product_id, it->product_id) != 0)
            j++;
        if (j < out) {
            o->items[j].quantity += it->quantity;
            if (o->items[j].quantity > OMS_MAX_QUANTITY)
                return oms_error_set(err, OMS_INVALID,
                                     "items: product %s: total quantity %d exceeds %d",
                                     it->product_id, o->items[j].quantity, OMS_MAX_QUANTITY);
            oms_order_item_free(it);
            continue;
        }
        if (out >= OMS_MAX_ITEMS)
            return oms_error_set(err, OMS_INVALID, "items: at most %d distinct products",
                                 OMS_MAX_ITEMS);
        if (j != i) {
            o->items[out] = *it;
            memset(it, 0, sizeof(*it));
        }
        out++;
    }
    o->nitems = out;
    return OMS_OK;
}

static int parse_item(const json_t *j, size_t idx, oms_order_item *it, oms_error *err)
{
    memset(it, 0, sizeof(*it));
    if (!json_is_object(j))
        return oms_error_set(err, OMS_INVALID, "items[%zu]: must be an object", idx);
    const json_t *pid = json_object_get(j, "productID");
    if (!pid)
        pid = json_object_get(j, "id"); /* the original's proto called it ID */
    if (!pid)
        return oms_error_set(err, OMS_INVALID, "items[%zu].productID: required", idx);
    if (!json_is_string(pid))
        return oms_error_set(err, OMS_INVALID, "items[%zu].productID: must be a string", idx);
    const char *ps = json_string_value(pid);
    if (json_string_length(pid) > OMS_ID_MAX || !oms_valid_id(ps))
        return oms_error_set(err, OMS_INVALID,
                             "items[%zu].productID: must be 1 to 64 characters of "
                             "A-Z a-z 0-9 _ . : -",
                             idx);
    snprintf(it->product_id, sizeof(it->product_id), "%s", ps);
    const json_t *q = json_object_get(j, "quantity");
    if (!q)
        return oms_error_set(err, OMS_INVALID, "items[%zu].quantity: required", idx);
    json_int_t qv;
    if (json_is_integer(q)) {
        qv = json_integer_value(q);
    } else if (json_is_real(q) && json_real_value(q) >= -1e9 && json_real_value(q) <= 1e9 &&
               json_real_value(q) == (double)(long long)json_real_value(q)) {
        /* Range first: converting a double beyond long long is undefined (found by
         * fuzz_order_request with 1.2e21). */
        qv = (json_int_t)json_real_value(q); /* 2.0 is an integer to a JS client */
    } else {
        return oms_error_set(err, OMS_INVALID,
                             "items[%zu].quantity: must be an integer from %d to %d", idx,
                             OMS_MIN_QUANTITY, OMS_MAX_QUANTITY);
    }
    if (qv < OMS_MIN_QUANTITY || qv > OMS_MAX_QUANTITY)
        return oms_error_set(err, OMS_INVALID,
                             "items[%zu].quantity: must be an integer from %d to %d", idx,
                             OMS_MIN_QUANTITY, OMS_MAX_QUANTITY);
    it->quantity = (int)qv;
    return OMS_OK;
}

int oms_order_parse_request(const char *body, size_t len, oms_order *out, oms_error *err)
{
    oms_order_init(out);
    if (len > OMS_MAX_BODY)
        return oms_error_set(err, OMS_TOOBIG, "request body too large (limit %d bytes)",
                             OMS_MAX_BODY);
    json_error_t jerr;
    /* REJECT_DUPLICATES: {"items":..,"items":..} is ambiguous; refuse it. */
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root)
        return oms_error_set(err, OMS_INVALID, "malformed JSON at line %d column %d: %s", jerr.line,
                             jerr.column, jerr.text);
    int rc = OMS_OK;
    const json_t *items = root;
    if (json_is_object(root)) {
        items = json_object_get(root, "items");
        if (!items) {
            rc = oms_error_set(err, OMS_INVALID, "items: required");
            goto done;
        }
    }
    if (!json_is_array(items)) {
        rc = oms_error_set(err, OMS_INVALID, "items: must be an array");
        goto done;
    }
    size_t n = json_array_size(items);
    if (n == 0) {
        rc = oms_error_set(err, OMS_INVALID, "items: at least one item is required");
        goto done;
    }
    /* Bound the work before allocating: more than 10x the distinct-item limit cannot
     * merge down to a valid order in any sensible request. */
    if (n > OMS_MAX_ITEMS * 10) {
        rc = oms_error_set(err, OMS_INVALID, "items: at most %d distinct products", OMS_MAX_ITEMS);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        oms_order_item it;
        rc = parse_item(json_array_get(items, i), i, &it, err);
        if (rc != OMS_OK)
            goto done;
        oms_order_add_item(out, &it);
    }
    rc = oms_order_normalize_items(out, err);
done:
    json_decref(root);
    if (rc != OMS_OK)
        oms_order_free(out);
    return rc;
}

/* ---- JSON shape -------------------------------------------------------------------- */

void oms_order_write_json(oms_jbuf *b, const oms_order *o)
{
    char created[32], updated[32];
    oms_format_rfc3339(o->created_ms, created);
    oms_format_rfc3339(o->updated_ms ? o->updated_ms : o->created_ms, updated);
    oms_jbuf_lit(b, "{\"orderID\":");
    oms_jbuf_str(b, o->order_id);
    oms_jbuf_lit(b, ",\"customerID\":");
    oms_jbuf_str(b, o->customer_id);
    oms_jbuf_lit(b, ",\"items\":[");
    for (size_t i = 0; i < o->nitems; i++) {
        const oms_order_item *it = &o->items[i];
        if (i)
            oms_jbuf_lit(b, ",");
        oms_jbuf_lit(b, "{\"productID\":");
        oms_jbuf_str(b, it->product_id);
        oms_jbuf_lit(b, ",\"productName\":");
        oms_jbuf_str(b, it->product_name);
        oms_jbuf_lit(b, ",\"quantity\":");
        oms_jbuf_int(b, it->quantity);
        oms_jbuf_lit(b, ",\"priceID\":");
        oms_jbuf_str(b, it->price_id);
        oms_jbuf_lit(b, ",\"unitPrice\":");
        oms_jbuf_int(b, (long long)it->unit_price);
        oms_jbuf_lit(b, "}");
    }
    oms_jbuf_lit(b, "],\"status\":");
    oms_jbuf_str(b, oms_order_status_str(o->status));
    oms_jbuf_lit(b, ",\"PaymentLink\":");
    oms_jbuf_str(b, o->payment_link && o->payment_link[0] ? o->payment_link : "none");
    oms_jbuf_lit(b, ",\"total\":");
    oms_jbuf_int(b, (long long)o->total);
    oms_jbuf_lit(b, ",\"currency\":");
    oms_jbuf_str(b, o->currency);
    oms_jbuf_lit(b, ",\"createdAt\":");
    oms_jbuf_str(b, created);
    oms_jbuf_lit(b, ",\"updatedAt\":");
    oms_jbuf_str(b, updated);
    if (o->reason[0]) {
        oms_jbuf_lit(b, ",\"reason\":");
        oms_jbuf_str(b, o->reason);
    }
    if (o->pickup_code[0]) {
        oms_jbuf_lit(b, ",\"pickupCode\":");
        oms_jbuf_str(b, o->pickup_code);
    }
    oms_jbuf_lit(b, "}");
}

char *oms_order_to_json_strn(const oms_order *o, size_t *len)
{
    oms_jbuf b;
    oms_jbuf_init(&b, 512 + o->nitems * 160);
    oms_order_write_json(&b, o);
    return oms_jbuf_take(&b, len);
}

char *oms_order_to_json_str(const oms_order *o)
{
    return oms_order_to_json_strn(o, NULL);
}

static int get_str(const json_t *j, const char *key, const char **out, oms_error *err)
{
    const json_t *v = json_object_get(j, key);
    if (!json_is_string(v))
        return oms_error_set(err, OMS_INVALID, "%s: required string", key);
    *out = json_string_value(v);
    return OMS_OK;
}

/* Parses RFC 3339 "YYYY-MM-DDTHH:MM:SS(.mmm)Z" into ms; 0 when absent/unparseable. */
static long long parse_time(const json_t *v)
{
    if (!json_is_string(v))
        return 0;
    int Y, M, D, h, m, s, ms = 0;
    const char *str = json_string_value(v);
    if (sscanf(str, "%4d-%2d-%2dT%2d:%2d:%2d", &Y, &M, &D, &h, &m, &s) != 6)
        return 0;
    const char *dot = strchr(str, '.');
    if (dot)
        ms = atoi(dot + 1);
    struct tm tm = {
        .tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h, .tm_min = m, .tm_sec = s};
    return (long long)timegm(&tm) * 1000 + ms;
}

int oms_order_from_json(const json_t *j, oms_order *out, oms_error *err)
{
    oms_order_init(out);
    if (!json_is_object(j))
        return oms_error_set(err, OMS_INVALID, "order: must be an object");
    const char *oid = NULL, *cid = NULL, *st = NULL;
    int rc = get_str(j, "orderID", &oid, err);
    if (rc == OMS_OK)
        rc = get_str(j, "customerID", &cid, err);
    if (rc == OMS_OK)
        rc = get_str(j, "status", &st, err);
    if (rc != OMS_OK)
        return rc;
    if (!oms_valid_id(oid) || !oms_valid_id(cid))
        return oms_error_set(err, OMS_INVALID, "orderID/customerID: invalid id");
    snprintf(out->order_id, sizeof(out->order_id), "%s", oid);
    snprintf(out->customer_id, sizeof(out->customer_id), "%s", cid);
    int s = oms_order_status_parse(st);
    if (s < 0)
        return oms_error_set(err, OMS_INVALID, "status: unknown value");
    out->status = (oms_order_status)s;
    const json_t *link = json_object_get(j, "PaymentLink");
    if (json_is_string(link) && strcmp(json_string_value(link), "none") != 0)
        out->payment_link = oms_strdup(json_string_value(link));
    const json_t *cur = json_object_get(j, "currency");
    if (json_is_string(cur) && json_string_length(cur) < sizeof(out->currency))
        snprintf(out->currency, sizeof(out->currency), "%s", json_string_value(cur));
    const json_t *tot = json_object_get(j, "total");
    if (json_is_integer(tot))
        out->total = json_integer_value(tot);
    out->created_ms = parse_time(json_object_get(j, "createdAt"));
    out->updated_ms = parse_time(json_object_get(j, "updatedAt"));
    const json_t *why = json_object_get(j, "reason");
    if (json_is_string(why)) /* truncated to fit: it is a note for the history */
        snprintf(out->reason, sizeof(out->reason), "%s", json_string_value(why));
    const json_t *code = json_object_get(j, "pickupCode");
    if (json_is_string(code) && oms_pickup_code_valid(json_string_value(code)))
        snprintf(out->pickup_code, sizeof(out->pickup_code), "%s", json_string_value(code));
    const json_t *items = json_object_get(j, "items");
    if (!json_is_array(items)) {
        oms_order_free(out);
        return oms_error_set(err, OMS_INVALID, "items: required array");
    }
    size_t idx;
    const json_t *v;
    json_array_foreach(items, idx, v)
    {
        oms_order_item it;
        memset(&it, 0, sizeof(it));
        const json_t *pid = json_object_get(v, "productID");
        const json_t *q = json_object_get(v, "quantity");
        if (!json_is_string(pid) || !oms_valid_id(json_string_value(pid)) || !json_is_integer(q)) {
            oms_order_free(out);
            return oms_error_set(err, OMS_INVALID, "items[%zu]: invalid item", idx);
        }
        snprintf(it.product_id, sizeof(it.product_id), "%s", json_string_value(pid));
        it.quantity = (int)json_integer_value(q);
        const json_t *nm = json_object_get(v, "productName");
        const json_t *pr = json_object_get(v, "priceID");
        const json_t *up = json_object_get(v, "unitPrice");
        it.product_name = (char *)(json_is_string(nm) ? json_string_value(nm) : NULL);
        it.price_id = (char *)(json_is_string(pr) ? json_string_value(pr) : NULL);
        it.unit_price = json_is_integer(up) ? json_integer_value(up) : 0;
        oms_order_add_item(out, &it); /* copies the borrowed strings */
    }
    return OMS_OK;
}

int oms_order_from_json_str(const char *s, size_t len, oms_order *out, oms_error *err)
{
    json_error_t jerr;
    json_t *j = json_loadb(s, len, 0, &jerr);
    if (!j) {
        oms_order_init(out);
        return oms_error_set(err, OMS_INVALID, "malformed JSON: %s", jerr.text);
    }
    int rc = oms_order_from_json(j, out, err);
    json_decref(j);
    return rc;
}
