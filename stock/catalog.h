/* The catalog data file (data/catalog.json):
 *   {"currency":"usd","products":[{"productID","name","priceID","unitPrice","quantity"}]}
 * read once, at the first start, to seed the products table. */
#ifndef STOCK_CATALOG_H
#define STOCK_CATALOG_H

#include <stddef.h>

#include "model.h"
#include "oms/status.h"

/* Largest catalog file we read; a menu is kilobytes, anything near this is a mistake. */
#define STOCK_CATALOG_MAX_BYTES (4u * 1024 * 1024)
/* Bounds that keep every counter well inside the proto's int32 fields. */
#define STOCK_CATALOG_MAX_QUANTITY 1000000000LL
#define STOCK_CATALOG_MAX_PRICE 1000000000LL

/* Parses text (len bytes, need not be NUL-terminated) into out, which must be
 * initialised and empty. name is used in messages only. Each product becomes an item
 * with product_id, name, price_id, unit_price, currency and available = quantity, in
 * file order. On error out is left empty and err says which file and entry, e.g.
 * "catalog data/catalog.json: products[2] (productID \"3\"): unitPrice must be an
 * integer from 0 to 1000000000". Returns OMS_OK or OMS_INVALID. */
int stock_catalog_parse(const char *name, const char *text, size_t len, stock_items *out,
                        oms_error *err);
/* Reads path (at most STOCK_CATALOG_MAX_BYTES) and parses it as above; OMS_ERR when the
 * file cannot be read. */
int stock_catalog_load(const char *path, stock_items *out, oms_error *err);

#endif
