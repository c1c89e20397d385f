/* Catalog file parsing and validation. Strict on purpose: a typo in a price or a
 * quantity would otherwise be sold to customers, so the service refuses to start and
 * names the entry instead. */
#include "catalog.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/util.h"

/* Currency codes are ISO 4217 in Stripe's lowercase form ("usd"). */
static int valid_currency(const char *s)
{
    if (strlen(s) != 3)
        return 0;
    for (int i = 0; i < 3; i++)
        if (s[i] < 'a' || s[i] > 'z')
            return 0;
    return 1;
}

/* Fetches a bounded integer member; returns 0 when missing, not an integer or out of
 * range. */
static int get_bounded_int(const json_t *obj, const char *key, long long lo, long long hi,
                           long long *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        return 0;
    long long x = (long long)json_integer_value(v);
    if (x < lo || x > hi)
        return 0;
    *out = x;
    return 1;
}

/* A text member of 1..max bytes without control characters (names end up in JSON,
 * logs and Stripe line items). */
static const char *get_text(const json_t *obj, const char *key, size_t max)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        return NULL;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0 || n > max || strlen(s) != n)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return NULL;
    return s;
}

static int parse_product(const char *name, const json_t *p, size_t idx, const char *currency,
                         stock_items *out, oms_error *err)
{
    if (!json_is_object(p))
        return oms_error_set(err, OMS_INVALID, "catalog %s: products[%zu]: must be an object", name,
                             idx);
    const json_t *jid = json_object_get(p, "productID");
    const char *id = json_is_string(jid) ? json_string_value(jid) : NULL;
    if (!id || !oms_valid_id(id) || strlen(id) != json_string_length(jid))
        return oms_error_set(err, OMS_INVALID,
                             "catalog %s: products[%zu]: productID must be 1..64 characters of "
                             "[A-Za-z0-9_.:-]",
                             name, idx);
    for (size_t i = 0; i < out->n; i++)
        if (strcmp(out->v[i].product_id, id) == 0)
            return oms_error_set(err, OMS_INVALID,
                                 "catalog %s: products[%zu]: productID \"%s\" repeats "
                                 "products[%zu]",
                                 name, idx, id, i);

    const char *pname = get_text(p, "name", 200);
    if (!pname)
        return oms_error_set(err, OMS_INVALID,
                             "catalog %s: products[%zu] (productID \"%s\"): name must be a "
                             "non-empty string of at most 200 bytes",
                             name, idx, id);
    const char *price_id = get_text(p, "priceID", 255);
    if (!price_id)
        return oms_error_set(err, OMS_INVALID,
                             "catalog %s: products[%zu] (productID \"%s\"): priceID must be a "
                             "non-empty string of at most 255 bytes",
                             name, idx, id);
    long long unit_price = 0, quantity = 0;
    if (!get_bounded_int(p, "unitPrice", 0, STOCK_CATALOG_MAX_PRICE, &unit_price))
        return oms_error_set(err, OMS_INVALID,
                             "catalog %s: products[%zu] (productID \"%s\"): unitPrice must be an "
                             "integer number of cents from 0 to %lld",
                             name, idx, id, STOCK_CATALOG_MAX_PRICE);
    if (!get_bounded_int(p, "quantity", 0, STOCK_CATALOG_MAX_QUANTITY, &quantity))
        return oms_error_set(err, OMS_INVALID,
                             "catalog %s: products[%zu] (productID \"%s\"): quantity must be an "
                             "integer from 0 to %lld",
                             name, idx, id, STOCK_CATALOG_MAX_QUANTITY);

    stock_item *it = stock_items_push(out);
    stock_item_set_id(it, id);
    stock_item_set_info(it, pname, price_id, currency);
    it->unit_price = unit_price;
    it->quantity = quantity;
    it->available = quantity;
    it->on_sale = 1;
    return OMS_OK;
}

int stock_catalog_parse(const char *name, const char *text, size_t len, stock_items *out,
                        oms_error *err)
{
    json_error_t jerr;
    int rc = OMS_OK;
    /* REJECT_DUPLICATES: {"quantity":1,"quantity":100} must not silently pick one. */
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return oms_error_set(err, OMS_INVALID, "catalog %s: line %d column %d: %s", name, jerr.line,
                             jerr.column, jerr.text);
    if (!json_is_object(root)) {
        rc = oms_error_set(err, OMS_INVALID, "catalog %s: top level must be an object", name);
        goto fail;
    }
    const char *currency = json_string_value(json_object_get(root, "currency"));
    if (!currency || !valid_currency(currency)) {
        rc = oms_error_set(err, OMS_INVALID,
                           "catalog %s: currency must be a three-letter lowercase code like "
                           "\"usd\"",
                           name);
        goto fail;
    }
    const json_t *products = json_object_get(root, "products");
    if (!json_is_array(products) || json_array_size(products) == 0) {
        rc =
            oms_error_set(err, OMS_INVALID, "catalog %s: products must be a non-empty array", name);
        goto fail;
    }
    for (size_t i = 0; i < json_array_size(products); i++) {
        rc = parse_product(name, json_array_get(products, i), i, currency, out, err);
        if (rc != OMS_OK)
            goto fail;
    }
    json_decref(root);
    return OMS_OK;

fail:
    stock_items_free(out);
    json_decref(root);
    return rc;
}

int stock_catalog_load(const char *path, stock_items *out, oms_error *err)
{
    int rc = OMS_OK;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return oms_error_set(err, OMS_ERR, "catalog %s: cannot open: %s", path, strerror(errno));
    /* Read up to one byte past the cap so an oversized file is detected, not truncated. */
    size_t cap = STOCK_CATALOG_MAX_BYTES + 1;
    buf = oms_xmalloc(cap);
    size_t len = fread(buf, 1, cap, f);
    if (ferror(f)) {
        rc = oms_error_set(err, OMS_ERR, "catalog %s: read error", path);
        goto done;
    }
    if (len > STOCK_CATALOG_MAX_BYTES) {
        rc = oms_error_set(err, OMS_INVALID, "catalog %s: larger than %u bytes", path,
                           STOCK_CATALOG_MAX_BYTES);
        goto done;
    }
    rc = stock_catalog_parse(path, buf, len, out, err);
done:
    free(buf);
    if (fclose(f) != 0 && rc == OMS_OK) {
        rc = oms_error_set(err, OMS_ERR, "catalog %s: close: %s", path, strerror(errno));
        stock_items_free(out);
    }
    return rc;
}
