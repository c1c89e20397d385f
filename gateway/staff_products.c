/* Menu and stock for staff: JSON bodies checked here for shape (types, unknown or
 * missing members), values checked by stock (the rules live there, and its messages
 * name the field), answers relayed as JSON. */
#include "staff_products.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_routes.h"
#include "http_util.h"
#include "oms.pb-c.h"
#include "oms/json_out.h"
#include "oms/util.h"
#include "staff_store.h"

/* Stock's bound on a restock, a loss or a count; checked here as well because the
 * proto's fields are int32 and a larger JSON number must not wrap into a valid one. */
#define STOCK_ADJUST_MAX 1000000LL

/* Appends the Product as the JSON the pages read. */
static void write_product(oms_jbuf *b, const Api__Product *p)
{
    oms_jbuf_lit(b, "{\"productID\":");
    oms_jbuf_str(b, p->productid);
    oms_jbuf_lit(b, ",\"name\":");
    oms_jbuf_str(b, p->name);
    oms_jbuf_lit(b, ",\"priceID\":");
    oms_jbuf_str(b, p->priceid);
    oms_jbuf_lit(b, ",\"unitPrice\":");
    oms_jbuf_int(b, p->unitprice);
    oms_jbuf_lit(b, ",\"currency\":");
    oms_jbuf_str(b, p->currency);
    if (p->onsale)
        oms_jbuf_lit(b, ",\"onSale\":true");
    else
        oms_jbuf_lit(b, ",\"onSale\":false");
    oms_jbuf_lit(b, ",\"available\":");
    oms_jbuf_int(b, p->available);
    oms_jbuf_lit(b, ",\"reserved\":");
    oms_jbuf_int(b, p->reserved);
    oms_jbuf_lit(b, ",\"sold\":");
    oms_jbuf_int(b, p->sold);
    oms_jbuf_lit(b, "}");
}

static void reply_product(oms_http_resp *resp, int status, const Api__Product *p)
{
    oms_jbuf b;
    oms_jbuf_init(&b, 512);
    write_product(&b, p);
    size_t len;
    char *body = oms_jbuf_take(&b, &len);
    oms_http_resp_json_text(resp, status, body, len);
}

static int call_stock(const oms_http_req *req, const char *method, const ProtobufCMessage *in,
                      const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out,
                      oms_error *err)
{
    gateway_ctx *g = req->ud;
    return oms_grpc_call(g->stock, method, in, desc, out, g->timeout_ms, err);
}

void gw_staff_products_list(const oms_http_req *req, oms_http_resp *resp)
{
    if (!gw_require_staff(req, resp, NULL))
        return;
    Api__ListProductsRequest m = API__LIST_PRODUCTS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    oms_error err;
    oms_error_clear(&err);
    int rc = call_stock(req, "/api.StockService/ListProducts", &m.base,
                        &api__list_products_response__descriptor, &out, &err);
    if (rc != OMS_OK) {
        gw_reply_status(resp, rc, err.msg);
        return;
    }
    const Api__ListProductsResponse *r = (const Api__ListProductsResponse *)out;
    oms_jbuf b;
    oms_jbuf_init(&b, 256 * (r->n_products + 1));
    oms_jbuf_lit(&b, "{\"products\":[");
    for (size_t i = 0; i < r->n_products; i++) {
        if (i)
            oms_jbuf_lit(&b, ",");
        write_product(&b, r->products[i]);
    }
    oms_jbuf_lit(&b, "]}");
    protobuf_c_message_free_unpacked(out, NULL);
    size_t len;
    char *body = oms_jbuf_take(&b, &len);
    oms_http_resp_json_text(resp, 200, body, len);
    oms_http_resp_header(resp, "Cache-Control", "no-store");
}

/* A member of a body and the JSON type it must have. */
typedef struct body_member {
    const char *name;
    json_type type; /* JSON_TRUE stands for either boolean */
    const char *want;
} body_member;

/* Parses the body as a JSON object whose members are all among known[] with the right
 * types; otherwise writes the 400 (naming the members) and returns NULL. New reference. */
static json_t *parse_body(const oms_http_req *req, oms_http_resp *resp, const body_member *known,
                          size_t nknown)
{
    json_error_t je;
    json_t *j = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        oms_http_resp_error(resp, 400, "body: not valid JSON (line %d column %d: %s)", je.line,
                            je.column, je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        oms_http_resp_error(resp, 400, "body: must be a JSON object");
        return NULL;
    }
    oms_jbuf unknown;
    oms_jbuf_init(&unknown, 64);
    const char *key;
    json_t *v;
    size_t nunknown = 0;
    json_object_foreach(j, key, v)
    {
        size_t k = 0;
        while (k < nknown && strcmp(key, known[k].name) != 0)
            k++;
        if (k == nknown) {
            /* Listed so the caller sees every typo at once; bounded so a body of many
             * keys cannot make a long answer. */
            if (nunknown < 5) {
                if (nunknown)
                    oms_jbuf_lit(&unknown, ", ");
                oms_jbuf_raw(&unknown, key, strnlen(key, 40));
            }
            nunknown++;
            continue;
        }
        int ok = known[k].type == JSON_TRUE ? json_is_boolean(v) : json_typeof(v) == known[k].type;
        if (!ok) {
            oms_http_resp_error(resp, 400, "%s: must be %s", key, known[k].want);
            oms_jbuf_free(&unknown);
            json_decref(j);
            return NULL;
        }
    }
    if (nunknown) {
        char list[256];
        snprintf(list, sizeof(list), "%s%s", unknown.p, nunknown > 5 ? ", ..." : "");
        oms_jbuf_free(&unknown);
        json_decref(j);
        oms_jbuf fields;
        oms_jbuf_init(&fields, 64);
        for (size_t k = 0; k < nknown; k++) {
            if (k)
                oms_jbuf_lit(&fields, ", ");
            oms_jbuf_raw(&fields, known[k].name, strlen(known[k].name));
        }
        oms_http_resp_error(resp, 400, "unknown field%s: %s (known: %s)", nunknown > 1 ? "s" : "",
                            list, fields.p);
        oms_jbuf_free(&fields);
        return NULL;
    }
    oms_jbuf_free(&unknown);
    return j;
}

static const body_member product_members[] = {
    {"name", JSON_STRING, "a string"},
    {"unitPrice", JSON_INTEGER, "an integer number of minor units (cents), e.g. 450"},
    {"currency", JSON_STRING, "a string (an ISO 4217 code such as \"USD\")"},
    {"priceID", JSON_STRING, "a string"},
    {"onSale", JSON_TRUE, "true or false"},
};

void gw_staff_product_put(const oms_http_req *req, oms_http_resp *resp)
{
    char staff[GW_STAFF_NAME_MAX + 1];
    const char *id = req->params[0];
    if (!gw_require_staff_change(req, resp, staff) || !gw_check_id(resp, "productID", id) ||
        !gw_check_json_type(req, resp))
        return;
    json_t *j = parse_body(req, resp, product_members, OMS_NELEM(product_members));
    if (!j)
        return;

    Api__Product p = API__PRODUCT__INIT;
    Api__PutProductRequest m = API__PUT_PRODUCT_REQUEST__INIT;
    char *fields[OMS_NELEM(product_members)];
    size_t nfields = 0;
    p.productid = (char *)id;
    for (size_t k = 0; k < OMS_NELEM(product_members); k++) {
        const json_t *v = json_object_get(j, product_members[k].name);
        if (!v)
            continue;
        const char *name = product_members[k].name;
        fields[nfields++] = (char *)name;
        /* Types were checked by parse_body. */
        if (strcmp(name, "name") == 0)
            p.name = (char *)json_string_value(v);
        else if (strcmp(name, "currency") == 0)
            p.currency = (char *)json_string_value(v);
        else if (strcmp(name, "priceID") == 0)
            p.priceid = (char *)json_string_value(v);
        else if (strcmp(name, "unitPrice") == 0)
            p.unitprice = (int64_t)json_integer_value(v);
        else
            p.onsale = json_is_true(v);
    }
    m.staff = staff;
    m.product = &p;
    m.fields = fields;
    m.n_fields = nfields;
    ProtobufCMessage *out = NULL;
    oms_error err;
    oms_error_clear(&err);
    int rc = call_stock(req, "/api.StockService/PutProduct", &m.base, &api__product__descriptor,
                        &out, &err);
    json_decref(j); /* the strings in p were borrowed from it */
    if (rc != OMS_OK) {
        gw_reply_status(resp, rc, err.msg);
        return;
    }
    const Api__Product *r = (const Api__Product *)out;
    reply_product(resp, r->created ? 201 : 200, r);
    protobuf_c_message_free_unpacked(out, NULL);
}

static const body_member stock_members[] = {
    {"delta", JSON_INTEGER, "an integer (units to add, negative to take away)"},
    {"set", JSON_INTEGER, "an integer (the count on hand)"},
    {"reason", JSON_STRING, "a string"},
};

void gw_staff_product_stock(const oms_http_req *req, oms_http_resp *resp)
{
    char staff[GW_STAFF_NAME_MAX + 1];
    const char *id = req->params[0];
    if (!gw_require_staff_change(req, resp, staff) || !gw_check_id(resp, "productID", id) ||
        !gw_check_json_type(req, resp))
        return;
    json_t *j = parse_body(req, resp, stock_members, OMS_NELEM(stock_members));
    if (!j)
        return;
    const json_t *delta = json_object_get(j, "delta"), *set = json_object_get(j, "set");
    const json_t *reason = json_object_get(j, "reason");
    if (delta && set) {
        json_decref(j);
        oms_http_resp_error(resp, 400, "delta, set: give one of them, not both");
        return;
    }
    if (!delta && !set) {
        json_decref(j);
        oms_http_resp_error(resp, 400,
                            "delta or set: one is required (units to add, or the count on hand)");
        return;
    }
    long long n = (long long)json_integer_value(delta ? delta : set);
    if (delta && (n < -STOCK_ADJUST_MAX || n > STOCK_ADJUST_MAX || n == 0)) {
        json_decref(j);
        oms_http_resp_error(resp, 400, "delta: must be a non-zero integer from %lld to %lld",
                            -STOCK_ADJUST_MAX, STOCK_ADJUST_MAX);
        return;
    }
    if (set && (n < 0 || n > STOCK_ADJUST_MAX)) {
        json_decref(j);
        oms_http_resp_error(resp, 400, "set: must be an integer from 0 to %lld", STOCK_ADJUST_MAX);
        return;
    }
    Api__AdjustStockRequest m = API__ADJUST_STOCK_REQUEST__INIT;
    m.staff = staff;
    m.productid = (char *)id;
    m.isset = set != NULL;
    if (set)
        m.set = (int32_t)n;
    else
        m.delta = (int32_t)n;
    m.reason = (char *)(reason ? json_string_value(reason) : "");
    ProtobufCMessage *out = NULL;
    oms_error err;
    oms_error_clear(&err);
    int rc = call_stock(req, "/api.StockService/AdjustStock", &m.base, &api__product__descriptor,
                        &out, &err);
    json_decref(j); /* reason was borrowed from it */
    if (rc != OMS_OK) {
        gw_reply_status(resp, rc, err.msg);
        return;
    }
    reply_product(resp, 200, (const Api__Product *)out);
    protobuf_c_message_free_unpacked(out, NULL);
}
