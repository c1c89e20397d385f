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

/* Who changed what (staff refunds), and the indexes of the back office's filters and
 * the day's figures (orders by status or creation time, history by status and time). */
static const oms_db_migration orders_v3 = {
    "orders_v3_audit",
    "CREATE TABLE orders_audit("
    " id INTEGER PRIMARY KEY, at_ms BIGINT NOT NULL, staff TEXT NOT NULL, action TEXT NOT NULL,"
    " subject TEXT NOT NULL, before TEXT NOT NULL, after TEXT NOT NULL, reason TEXT NOT NULL);"
    "CREATE INDEX orders_audit_by_time ON orders_audit(at_ms, id);"
    "CREATE INDEX orders_by_status ON orders(status, created_at, id);"
    "CREATE INDEX orders_by_created ON orders(created_at, id);"
    "CREATE INDEX order_history_by_status ON order_history(status, at);",
    "CREATE TABLE orders_audit("
    " id BIGSERIAL PRIMARY KEY, at_ms BIGINT NOT NULL, staff TEXT NOT NULL, action TEXT NOT NULL,"
    " subject TEXT NOT NULL, before TEXT NOT NULL, after TEXT NOT NULL, reason TEXT NOT NULL);"
    "CREATE INDEX orders_audit_by_time ON orders_audit(at_ms, id);"
    "CREATE INDEX orders_by_status ON orders(status, created_at, id);"
    "CREATE INDEX orders_by_created ON orders(created_at, id);"
    "CREATE INDEX order_history_by_status ON order_history(status, at);",
};

/* The pickup code payments gave the order, and the (UTC) day it was given on: a code
 * is unique within its day, so the counter looks codes up by day. */
static const oms_db_migration orders_v4 = {
    "orders_v4_pickup",
    "ALTER TABLE orders ADD COLUMN pickup_code TEXT;"
    "ALTER TABLE orders ADD COLUMN pickup_day TEXT;"
    "CREATE INDEX orders_by_pickup ON orders(pickup_day, pickup_code);",
    NULL,
};

int orders_store_open(oms_db **db, const char *url, oms_error *err)
{
    const oms_db_migration migs[] = {orders_v1,
                                     oms_outbox_migration,
                                     oms_inbox_migration,
                                     oms_retention_migration,
                                     orders_v2,
                                     orders_v3,
                                     orders_v4};
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
    "id, customer_id, status, payment_link, total, currency, created_at, updated_at, pickup_code"

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
    const char *code = oms_db_row_text(row, 8);
    if (code && oms_pickup_code_valid(code))
        snprintf(o->pickup_code, sizeof(o->pickup_code), "%s", code);
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

int orders_store_count_pending(oms_db_tx *tx, long long since_ms, long long *n, oms_error *err)
{
    oms_db_param p[] = {OMS_DB_I(since_ms)};
    *n = 0;
    /* orders_by_status (status, created_at, id): reads only the pending rows counted. */
    return oms_db_query(tx,
                        "SELECT COUNT(*) FROM orders WHERE status = 'pending' AND created_at >= $1",
                        p, 1, count_row, n, NULL, err);
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

/* ---- back office ------------------------------------------------------------------- */

static void free_list(order_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        oms_order_free(&l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

int orders_store_staff_list(oms_db_tx *tx, const orders_staff_filter *f, int limit,
                            long long before_ms, const char *before_id, oms_order **out, size_t *n,
                            oms_error *err)
{
    /* The WHERE clause is made of fixed fragments, one per filter given, so each
     * combination is its own prepared statement and can use its index (an
     * "$1 = '' OR status = $1" form would hide the filters from the planner). Values
     * always travel as parameters. */
    char sql[768];
    oms_db_param p[8];
    int np = 0;
    int len = snprintf(sql, sizeof(sql), "SELECT " ORDER_COLUMNS " FROM orders WHERE 1 = 1");
#define ADD_FILTER(cond, frag, param)                                                              \
    do {                                                                                           \
        if (cond) {                                                                                \
            p[np++] = (param);                                                                     \
            len += snprintf(sql + len, sizeof(sql) - (size_t)len, frag, np);                       \
        }                                                                                          \
    } while (0)
    ADD_FILTER(f->status && f->status[0], " AND status = $%d", OMS_DB_S(f->status));
    ADD_FILTER(f->customer_id && f->customer_id[0], " AND customer_id = $%d",
               OMS_DB_S(f->customer_id));
    ADD_FILTER(f->order_id && f->order_id[0], " AND id = $%d", OMS_DB_S(f->order_id));
    ADD_FILTER(f->since_ms > 0, " AND created_at >= $%d", OMS_DB_I(f->since_ms));
    ADD_FILTER(f->until_ms > 0, " AND created_at < $%d", OMS_DB_I(f->until_ms));
#undef ADD_FILTER
    if (before_id) {
        p[np++] = OMS_DB_I(before_ms);
        p[np++] = OMS_DB_S(before_id);
        len += snprintf(sql + len, sizeof(sql) - (size_t)len,
                        " AND (created_at < $%d OR (created_at = $%d AND id < $%d))", np - 1,
                        np - 1, np);
    }
    p[np++] = OMS_DB_I(limit);
    snprintf(sql + len, sizeof(sql) - (size_t)len, " ORDER BY created_at DESC, id DESC LIMIT $%d",
             np);
    order_list l = {NULL, 0};
    int rc = oms_db_query(tx, sql, p, np, list_row, &l, NULL, err);
    for (size_t i = 0; rc == OMS_OK && i < l.n; i++)
        rc = load_items(tx, &l.v[i], err);
    if (rc != OMS_OK) {
        free_list(&l);
        return rc;
    }
    *out = l.v;
    *n = l.n;
    return OMS_OK;
}

typedef struct history_list {
    orders_history_entry *v;
    size_t n;
} history_list;

static int history_row(const oms_db_row *row, void *ud)
{
    history_list *l = ud;
    l->v = oms_xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
    orders_history_entry *h = &l->v[l->n++];
    int st = oms_order_status_parse(oms_db_row_text(row, 0));
    h->status = st < 0 ? OMS_ORDER_PENDING : (oms_order_status)st;
    h->at_ms = oms_db_row_int(row, 1);
    h->cause = oms_strdup(oms_db_row_text(row, 2) ? oms_db_row_text(row, 2) : "");
    return OMS_OK;
}

int orders_store_history(oms_db_tx *tx, const char *order_id, orders_history_entry **out, size_t *n,
                         oms_error *err)
{
    history_list l = {NULL, 0};
    oms_db_param p[] = {OMS_DB_S(order_id)};
    int rc = oms_db_query(tx,
                          "SELECT status, at, cause FROM order_history WHERE order_id = $1"
                          " ORDER BY at",
                          p, 1, history_row, &l, NULL, err);
    if (rc != OMS_OK) {
        orders_history_free(l.v, l.n);
        return rc;
    }
    *out = l.v;
    *n = l.n;
    return OMS_OK;
}

int orders_store_add_audit(oms_db_tx *tx, const orders_audit *a, oms_error *err)
{
    oms_db_param p[] = {OMS_DB_I(a->at_ms),
                        OMS_DB_S(a->staff ? a->staff : ""),
                        OMS_DB_S(a->action ? a->action : ""),
                        OMS_DB_S(a->subject ? a->subject : ""),
                        OMS_DB_S(a->before ? a->before : ""),
                        OMS_DB_S(a->after ? a->after : ""),
                        OMS_DB_S(a->reason ? a->reason : "")};
    return oms_db_exec(tx,
                       "INSERT INTO orders_audit(at_ms, staff, action, subject, before, after,"
                       " reason) VALUES($1,$2,$3,$4,$5,$6,$7)",
                       p, 7, NULL, err);
}

typedef struct audit_list {
    orders_audit *v;
    size_t n;
} audit_list;

static char *col_dup(const oms_db_row *row, int c)
{
    const char *s = oms_db_row_text(row, c);
    return oms_strdup(s ? s : "");
}

static int audit_row(const oms_db_row *row, void *ud)
{
    audit_list *l = ud;
    l->v = oms_xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
    orders_audit *a = &l->v[l->n++];
    a->id = oms_db_row_int(row, 0);
    a->at_ms = oms_db_row_int(row, 1);
    a->staff = col_dup(row, 2);
    a->action = col_dup(row, 3);
    a->subject = col_dup(row, 4);
    a->before = col_dup(row, 5);
    a->after = col_dup(row, 6);
    a->reason = col_dup(row, 7);
    return OMS_OK;
}

int orders_store_list_audit(oms_db_tx *tx, long long before_ms, int limit, orders_audit **out,
                            size_t *n, oms_error *err)
{
    audit_list l = {NULL, 0};
    oms_db_param p[] = {OMS_DB_I(before_ms), OMS_DB_I(limit)};
    int rc = oms_db_query(tx,
                          "SELECT id, at_ms, staff, action, subject, before, after, reason"
                          " FROM orders_audit WHERE at_ms < $1 ORDER BY at_ms DESC, id DESC"
                          " LIMIT $2",
                          p, 2, audit_row, &l, NULL, err);
    if (rc != OMS_OK) {
        for (size_t i = 0; i < l.n; i++)
            orders_audit_free(&l.v[i]);
        free(l.v);
        return rc;
    }
    *out = l.v;
    *n = l.n;
    return OMS_OK;
}

typedef struct money_list {
    orders_money *v;
    size_t n;
} money_list;

static int money_row(const oms_db_row *row, void *ud)
{
    money_list *l = ud;
    l->v = oms_xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
    orders_money *m = &l->v[l->n++];
    snprintf(m->currency, sizeof(m->currency), "%s",
             oms_db_row_text(row, 0) ? oms_db_row_text(row, 0) : "");
    m->orders = oms_db_row_int(row, 1);
    m->amount = oms_db_row_int(row, 2);
    return OMS_OK;
}

/* Events travel on separate queues and an order may skip a status (cooking can arrive
 * before paid, and paid is then never recorded), so "paid at" is the first time the
 * order reached paid, cooking or ready. $1, $2: the window. */
#define PAID_LIKE "('paid', 'cooking', 'ready for pick-up')"
#define PAID_IN_WINDOW                                                                             \
    "SELECT h.order_id FROM order_history h WHERE h.status IN " PAID_LIKE                          \
    " AND h.at >= $1 AND h.at < $2 AND NOT EXISTS (SELECT 1 FROM order_history e"                  \
    " WHERE e.order_id = h.order_id AND e.status IN " PAID_LIKE " AND e.at < $1)"

int orders_store_money(oms_db_tx *tx, oms_order_status status, long long start_ms, long long end_ms,
                       orders_money **out, size_t *n, oms_error *err)
{
    money_list l = {NULL, 0};
    oms_db_param p[] = {OMS_DB_I(start_ms), OMS_DB_I(end_ms)};
    int rc = oms_db_query(
        tx,
        status == OMS_ORDER_REFUNDED
            ? "SELECT o.currency, COUNT(*), SUM(o.total) FROM orders o WHERE o.id IN"
              " (SELECT order_id FROM order_history WHERE status = 'refunded' AND at >= $1"
              " AND at < $2) AND EXISTS (SELECT 1 FROM order_history h"
              " WHERE h.order_id = o.id AND h.status IN " PAID_LIKE ")"
              " GROUP BY o.currency ORDER BY 2 DESC, 1"
            : "SELECT o.currency, COUNT(*), SUM(o.total) FROM orders o WHERE o.id IN"
              " (" PAID_IN_WINDOW ") GROUP BY o.currency ORDER BY 2 DESC, 1",
        p, 2, money_row, &l, NULL, err);
    if (rc != OMS_OK) {
        free(l.v);
        return rc;
    }
    *out = l.v;
    *n = l.n;
    return OMS_OK;
}

static int hour_row(const oms_db_row *row, void *ud)
{
    long long *per_hour = ud;
    long long h = oms_db_row_int(row, 0);
    if (h >= 0 && h < 24)
        per_hour[h] += oms_db_row_int(row, 1);
    return OMS_OK;
}

int orders_store_created_per_hour(oms_db_tx *tx, long long start_ms, long long per_hour[24],
                                  oms_error *err)
{
    oms_db_param p[] = {OMS_DB_I(start_ms), OMS_DB_I(start_ms + 24LL * 3600000)};
    /* created_at >= start, so the integer division never meets a negative number (whose
     * rounding differs between engines). */
    return oms_db_query(tx,
                        "SELECT (created_at - $1) / 3600000, COUNT(*) FROM orders"
                        " WHERE created_at >= $1 AND created_at < $2 GROUP BY 1",
                        p, 2, hour_row, per_hour, NULL, err);
}

typedef struct units_list {
    orders_units *v;
    size_t n;
} units_list;

static int units_row(const oms_db_row *row, void *ud)
{
    units_list *l = ud;
    l->v = oms_xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
    orders_units *u = &l->v[l->n++];
    snprintf(u->product_id, sizeof(u->product_id), "%s",
             oms_db_row_text(row, 0) ? oms_db_row_text(row, 0) : "");
    u->product_name = col_dup(row, 1);
    u->quantity = oms_db_row_int(row, 2);
    return OMS_OK;
}

int orders_store_units_paid(oms_db_tx *tx, long long start_ms, long long end_ms, orders_units **out,
                            size_t *n, oms_error *err)
{
    units_list l = {NULL, 0};
    oms_db_param p[] = {OMS_DB_I(start_ms), OMS_DB_I(end_ms)};
    int rc = oms_db_query(tx,
                          "SELECT product_id, MAX(product_name), SUM(quantity) FROM order_items"
                          " WHERE order_id IN (" PAID_IN_WINDOW ")"
                          " GROUP BY product_id ORDER BY 3 DESC, 1",
                          p, 2, units_row, &l, NULL, err);
    if (rc != OMS_OK) {
        for (size_t i = 0; i < l.n; i++)
            free(l.v[i].product_name);
        free(l.v);
        return rc;
    }
    *out = l.v;
    *n = l.n;
    return OMS_OK;
}

typedef struct ms_list {
    long long *v;
    size_t n;
} ms_list;

static int ms_row(const oms_db_row *row, void *ud)
{
    ms_list *l = ud;
    l->v = oms_xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
    l->v[l->n++] = oms_db_row_int(row, 0);
    return OMS_OK;
}

int orders_store_paid_to_ready(oms_db_tx *tx, long long start_ms, long long end_ms, long long **out,
                               size_t *n, oms_error *err)
{
    ms_list l = {NULL, 0};
    oms_db_param p[] = {OMS_DB_I(start_ms), OMS_DB_I(end_ms)};
    int rc = oms_db_query(tx,
                          "SELECT r.at - (SELECT MIN(p.at) FROM order_history p"
                          " WHERE p.order_id = r.order_id AND p.status IN " PAID_LIKE ")"
                          " FROM order_history r WHERE r.status = 'ready for pick-up'"
                          " AND r.order_id IN (" PAID_IN_WINDOW ") ORDER BY 1",
                          p, 2, ms_row, &l, NULL, err);
    if (rc != OMS_OK) {
        free(l.v);
        return rc;
    }
    *out = l.v;
    *n = l.n;
    return OMS_OK;
}

int orders_store_set_pickup(oms_db_tx *tx, const char *order_id, const char *code, const char *day,
                            oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(order_id), OMS_DB_S(code), OMS_DB_S(day)};
    return oms_db_exec(tx,
                       "UPDATE orders SET pickup_code = $2, pickup_day = $3"
                       " WHERE id = $1 AND pickup_code IS NULL",
                       p, 3, NULL, err);
}

static int id_row(const oms_db_row *row, void *ud)
{
    snprintf(ud, OMS_ID_MAX + 1, "%s", oms_db_row_text(row, 0));
    return OMS_OK;
}

int orders_store_find_by_pickup(oms_db_tx *tx, const char *code, const char *day, char *order_id,
                                oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(day), OMS_DB_S(code)};
    long long n = 0;
    order_id[0] = '\0';
    /* One per day in practice (payments keeps codes unique within a day); should two
     * meet, the one waiting at the counter wins. */
    int rc = oms_db_query(tx,
                          "SELECT id FROM orders WHERE pickup_day = $1 AND pickup_code = $2"
                          " ORDER BY CASE status WHEN 'ready for pick-up' THEN 0 ELSE 1 END,"
                          " updated_at DESC LIMIT 1",
                          p, 2, id_row, order_id, &n, err);
    if (rc == OMS_OK && n == 0)
        rc = oms_error_set(err, OMS_NOTFOUND, "pickup code %s not found today", code);
    return rc;
}
