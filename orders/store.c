#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/inbox.h"
#include "oms/retention.h"
#include "oms/outbox.h"
#include "oms/util.h"

static const oms_db_migration orders_v1 = {
    "orders_v1",
    "CREATE TABLE orders("
    " id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, status TEXT NOT NULL,"
    " payment_link TEXT, total BIGINT NOT NULL, currency TEXT NOT NULL,"
    " idempotency_key TEXT, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);"
    "CREATE UNIQUE INDEX orders_idem ON orders(customer_id, idempotency_key)"
    " WHERE idempotency_key IS NOT NULL;"
    "CREATE INDEX orders_by_customer ON orders(customer_id, created_at, id);"
    "CREATE TABLE order_items("
    " order_id TEXT NOT NULL REFERENCES orders(id), position INTEGER NOT NULL,"
    " product_id TEXT NOT NULL, product_name TEXT NOT NULL, price_id TEXT NOT NULL,"
    " quantity INTEGER NOT NULL, unit_price BIGINT NOT NULL,"
    " PRIMARY KEY(order_id, position));",
    NULL,
};

/* Each status an order reached, when and why (the answer to "why was it cancelled"). */
static const oms_db_migration orders_v2 = {
    "orders_v2_history",
    "CREATE TABLE order_history("
    " order_id TEXT NOT NULL, at BIGINT NOT NULL, status TEXT NOT NULL, cause TEXT NOT NULL);"
    "CREATE INDEX order_history_by_order ON order_history(order_id, at);"
    "CREATE INDEX orders_open_by_customer ON orders(customer_id, status);",
    NULL,
};

int orders_store_open(oms_db **db, const char *url, oms_error *err)
{
    const oms_db_migration migs[] = {orders_v1, oms_outbox_migration, oms_inbox_migration,
                                     oms_retention_migration, orders_v2};
    return oms_db_open(db, url, migs, OMS_NELEM(migs), err);
}

int orders_store_insert(oms_db_tx *tx, const oms_order *o, const char *idem_key, oms_error *err)
{
    oms_db_param p[] = {
        OMS_DB_S(o->order_id),
        OMS_DB_S(o->customer_id),
        OMS_DB_S(oms_order_status_str(o->status)),
        o->payment_link ? OMS_DB_S(o->payment_link) : OMS_DB_NULLP,
        OMS_DB_I(o->total),
        OMS_DB_S(o->currency),
        idem_key ? OMS_DB_S(idem_key) : OMS_DB_NULLP,
        OMS_DB_I(o->created_ms),
        OMS_DB_I(o->updated_ms),
    };
    int rc = oms_db_exec(tx,
                         "INSERT INTO orders(id, customer_id, status, payment_link, total, "
                         "currency, idempotency_key, created_at, updated_at) "
                         "VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9)",
                         p, 9, NULL, err);
    if (rc != OMS_OK)
        return rc;
    for (size_t i = 0; i < o->nitems; i++) {
        const oms_order_item *it = &o->items[i];
        oms_db_param ip[] = {
            OMS_DB_S(o->order_id),
            OMS_DB_I(i),
            OMS_DB_S(it->product_id),
            OMS_DB_S(it->product_name ? it->product_name : ""),
            OMS_DB_S(it->price_id ? it->price_id : ""),
            OMS_DB_I(it->quantity),
            OMS_DB_I(it->unit_price),
        };
        rc = oms_db_exec(tx,
                         "INSERT INTO order_items(order_id, position, product_id, product_name, "
                         "price_id, quantity, unit_price) VALUES($1,$2,$3,$4,$5,$6,$7)",
                         ip, 7, NULL, err);
        if (rc != OMS_OK)
            return rc;
    }
    return OMS_OK;
}

#define ORDER_COLUMNS                                                                              \
    "id, customer_id, status, payment_link, total, currency, created_at, updated_at"

static void order_from_row(const oms_db_row *row, oms_order *o)
{
    oms_order_init(o);
    snprintf(o->order_id, sizeof(o->order_id), "%s", oms_db_row_text(row, 0));
    snprintf(o->customer_id, sizeof(o->customer_id), "%s", oms_db_row_text(row, 1));
    int st = oms_order_status_parse(oms_db_row_text(row, 2));
    o->status = st < 0 ? OMS_ORDER_PENDING : (oms_order_status)st;
    o->payment_link = oms_strdup(oms_db_row_text(row, 3));
    o->total = oms_db_row_int(row, 4);
    snprintf(o->currency, sizeof(o->currency), "%s", oms_db_row_text(row, 5));
    o->created_ms = oms_db_row_int(row, 6);
    o->updated_ms = oms_db_row_int(row, 7);
}

static int one_order_row(const oms_db_row *row, void *ud)
{
    order_from_row(row, ud);
    return OMS_OK;
}

static int item_row(const oms_db_row *row, void *ud)
{
    oms_order *o = ud;
    oms_order_item it;
    memset(&it, 0, sizeof(it));
    snprintf(it.product_id, sizeof(it.product_id), "%s", oms_db_row_text(row, 0));
    it.product_name = (char *)oms_db_row_text(row, 1);
    it.price_id = (char *)oms_db_row_text(row, 2);
    it.quantity = (int)oms_db_row_int(row, 3);
    it.unit_price = oms_db_row_int(row, 4);
    oms_order_add_item(o, &it); /* copies the row's strings */
    return OMS_OK;
}

static int load_items(oms_db_tx *tx, oms_order *o, oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(o->order_id)};
    return oms_db_query(tx,
                        "SELECT product_id, product_name, price_id, quantity, unit_price "
                        "FROM order_items WHERE order_id = $1 ORDER BY position",
                        p, 1, item_row, o, NULL, err);
}

static int get_where(oms_db_tx *tx, const char *sql, const oms_db_param *p, int np,
                     const char *what, oms_order *out, oms_error *err)
{
    long long n = 0;
    oms_order_init(out);
    int rc = oms_db_query(tx, sql, p, np, one_order_row, out, &n, err);
    if (rc != OMS_OK)
        goto fail;
    if (n == 0) {
        rc = oms_error_set(err, OMS_NOTFOUND, "order %s not found", what);
        goto fail;
    }
    rc = load_items(tx, out, err);
    if (rc != OMS_OK)
        goto fail;
    return OMS_OK;
fail:
    oms_order_free(out);
    return rc;
}

int orders_store_get(oms_db_tx *tx, const char *order_id, oms_order *out, oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(order_id)};
    return get_where(tx, "SELECT " ORDER_COLUMNS " FROM orders WHERE id = $1", p, 1, order_id, out,
                     err);
}

int orders_store_find_by_key(oms_db_tx *tx, const char *customer_id, const char *idem_key,
                             oms_order *out, oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(customer_id), OMS_DB_S(idem_key)};
    return get_where(
        tx, "SELECT " ORDER_COLUMNS " FROM orders WHERE customer_id = $1 AND idempotency_key = $2",
        p, 2, idem_key, out, err);
}

static int status_row(const oms_db_row *row, void *ud)
{
    int st = oms_order_status_parse(oms_db_row_text(row, 0));
    *(oms_order_status *)ud = st < 0 ? OMS_ORDER_PENDING : (oms_order_status)st;
    return OMS_OK;
}

int orders_store_lock(oms_db_tx *tx, const char *order_id, oms_order_status *status, oms_error *err)
{
    /* PostgreSQL: SELECT ... FOR UPDATE holds the row until the transaction ends.
     * SQLite has no row locks and needs none: its transactions run one at a time
     * (BEGIN IMMEDIATE), so a plain read is already the committed status. */
    oms_db_param p[] = {OMS_DB_S(order_id)};
    oms_order_status st = OMS_ORDER_PENDING;
    long long n = 0;
    int rc =
        oms_db_query(tx,
                     oms_db_tx_locks_rows(tx) ? "SELECT status FROM orders WHERE id = $1 FOR UPDATE"
                                              : "SELECT status FROM orders WHERE id = $1",
                     p, 1, status_row, &st, &n, err);
    if (rc == OMS_OK && n == 0)
        rc = oms_error_set(err, OMS_NOTFOUND, "order %s not found", order_id);
    if (rc == OMS_OK && status)
        *status = st;
    return rc;
}

int orders_store_get_status(oms_db_tx *tx, const char *order_id, oms_order_status *status,
                            oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(order_id)};
    long long n = 0;
    int rc = oms_db_query(tx, "SELECT status FROM orders WHERE id = $1", p, 1, status_row, status,
                          &n, err);
    if (rc == OMS_OK && n == 0)
        rc = oms_error_set(err, OMS_NOTFOUND, "order %s not found", order_id);
    return rc;
}

int orders_store_set_status(oms_db_tx *tx, const char *order_id, oms_order_status st,
                            const char *link, long long now_ms, oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(order_id), OMS_DB_S(oms_order_status_str(st)),
                        link ? OMS_DB_S(link) : OMS_DB_NULLP, OMS_DB_I(now_ms)};
    long long changes = 0;
    int rc = oms_db_exec(tx,
                         "UPDATE orders SET status = $2, payment_link = COALESCE($3, payment_link),"
                         " updated_at = $4 WHERE id = $1",
                         p, 4, &changes, err);
    if (rc == OMS_OK && changes == 0)
        rc = oms_error_set(err, OMS_NOTFOUND, "order %s not found", order_id);
    return rc;
}

typedef struct {
    oms_order *v;
    size_t n;
} order_list;

static int list_row(const oms_db_row *row, void *ud)
{
    order_list *l = ud;
    l->v = oms_xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
    order_from_row(row, &l->v[l->n++]);
    return OMS_OK;
}

int orders_store_list(oms_db_tx *tx, const char *customer_id, int limit, long long before_ms,
                      const char *before_id, oms_order **out, size_t *n, oms_error *err)
{
    order_list l = {NULL, 0};
    int rc;
    if (before_id) {
        oms_db_param p[] = {OMS_DB_S(customer_id), OMS_DB_I(before_ms), OMS_DB_S(before_id),
                            OMS_DB_I(limit)};
        rc = oms_db_query(tx,
                          "SELECT " ORDER_COLUMNS " FROM orders WHERE customer_id = $1 AND"
                          " (created_at < $2 OR (created_at = $2 AND id < $3))"
                          " ORDER BY created_at DESC, id DESC LIMIT $4",
                          p, 4, list_row, &l, NULL, err);
    } else {
        oms_db_param p[] = {OMS_DB_S(customer_id), OMS_DB_I(limit)};
        rc = oms_db_query(tx,
                          "SELECT " ORDER_COLUMNS " FROM orders WHERE customer_id = $1"
                          " ORDER BY created_at DESC, id DESC LIMIT $2",
                          p, 2, list_row, &l, NULL, err);
    }
    for (size_t i = 0; rc == OMS_OK && i < l.n; i++)
        rc = load_items(tx, &l.v[i], err);
    if (rc != OMS_OK) {
        for (size_t i = 0; i < l.n; i++)
            oms_order_free(&l.v[i]);
        free(l.v);
        return rc;
    }
    *out = l.v;
    *n = l.n;
    return OMS_OK;
}

int orders_store_add_history(oms_db_tx *tx, const char *order_id, oms_order_status status,
                             const char *cause, long long at_ms, oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(order_id), OMS_DB_I(at_ms), OMS_DB_S(oms_order_status_str(status)),
                        OMS_DB_S(cause && cause[0] ? cause : "-")};
    return oms_db_exec(tx,
                       "INSERT INTO order_history(order_id, at, status, cause)"
                       " VALUES($1,$2,$3,$4)",
                       p, 4, NULL, err);
}

static int count_row(const oms_db_row *row, void *ud)
{
    *(long long *)ud = oms_db_row_int(row, 0);
    return OMS_OK;
}

int orders_store_count_open(oms_db_tx *tx, const char *customer_id, long long *n, oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(customer_id)};
    *n = 0;
    return oms_db_query(tx,
                        "SELECT COUNT(*) FROM orders WHERE customer_id = $1"
                        " AND status IN ('pending', 'waiting_payment')",
                        p, 1, count_row, n, NULL, err);
}
