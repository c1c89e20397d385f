/* Stock persistence over oms/db.h. Quantities are INTEGER (catalog caps them far below
 * 2^31); times are BIGINT milliseconds since the epoch so "is it due" is one indexed
 * comparison on both SQLite and PostgreSQL. */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/db.h"
#include "oms/util.h"

static const oms_db_migration stock_migrations[] = {
    {"stock_0001_init",
     "CREATE TABLE products("
     " id TEXT PRIMARY KEY,"
     " name TEXT NOT NULL,"
     " price_id TEXT NOT NULL,"
     " unit_price INTEGER NOT NULL CHECK (unit_price >= 0),"
     " currency TEXT NOT NULL,"
     " available INTEGER NOT NULL CHECK (available >= 0),"
     " reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),"
     " sold INTEGER NOT NULL DEFAULT 0 CHECK (sold >= 0),"
     " position INTEGER NOT NULL);"
     "CREATE TABLE reservations("
     " order_id TEXT PRIMARY KEY,"
     " state TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'released')),"
     " created_at BIGINT NOT NULL,"
     " expires_at BIGINT NOT NULL,"
     " updated_at BIGINT NOT NULL);"
     /* The expiry sweep asks "reserved and due" every second. */
     "CREATE INDEX reservations_state_expires ON reservations(state, expires_at);"
     "CREATE TABLE reservation_items("
     " order_id TEXT NOT NULL REFERENCES reservations(order_id),"
     " product_id TEXT NOT NULL REFERENCES products(id),"
     " quantity INTEGER NOT NULL CHECK (quantity > 0),"
     " PRIMARY KEY (order_id, product_id));",
     NULL},
    /* The back office: products can go off sale, and every staff change is recorded
     * with the change itself (README "Back office: menu and stock"). */
    {"stock_0002_backoffice",
     "ALTER TABLE products ADD COLUMN on_sale INTEGER NOT NULL DEFAULT 1;"
     "CREATE TABLE stock_audit("
     " id INTEGER PRIMARY KEY,"
     " at_ms BIGINT NOT NULL,"
     " staff TEXT NOT NULL,"
     " action TEXT NOT NULL,"
     " subject TEXT NOT NULL,"
     " before_json TEXT NOT NULL,"
     " after_json TEXT NOT NULL,"
     " reason TEXT NOT NULL);"
     "CREATE INDEX stock_audit_at ON stock_audit(at_ms, id);",
     "ALTER TABLE products ADD COLUMN on_sale INTEGER NOT NULL DEFAULT 1;"
     "CREATE TABLE stock_audit("
     " id BIGSERIAL PRIMARY KEY,"
     " at_ms BIGINT NOT NULL,"
     " staff TEXT NOT NULL,"
     " action TEXT NOT NULL,"
     " subject TEXT NOT NULL,"
     " before_json TEXT NOT NULL,"
     " after_json TEXT NOT NULL,"
     " reason TEXT NOT NULL);"
     "CREATE INDEX stock_audit_at ON stock_audit(at_ms, id);"},
};

int stock_store_open(struct oms_db **out, const char *url, oms_error *err)
{
    return oms_db_open(out, url, stock_migrations, OMS_NELEM(stock_migrations), err);
}

void stock_store_close(struct oms_db *db)
{
    oms_db_close(db);
}

/* ---- products ------------------------------------------------------------------ */

static int count_row(const oms_db_row *row, void *ud)
{
    *(long long *)ud = oms_db_row_int(row, 0);
    return OMS_OK;
}

int stock_store_count_products(struct oms_db_tx *tx, long long *n, oms_error *err)
{
    *n = 0;
    return oms_db_query(tx, "SELECT COUNT(*) FROM products", NULL, 0, count_row, n, NULL, err);
}

int stock_store_insert_product(struct oms_db_tx *tx, const stock_item *it, long long position,
                               oms_error *err)
{
    oms_db_param p[8] = {OMS_DB_S(it->product_id), OMS_DB_S(it->name),
                         OMS_DB_S(it->price_id),   OMS_DB_I(it->unit_price),
                         OMS_DB_S(it->currency),   OMS_DB_I(it->available),
                         OMS_DB_I(position),       OMS_DB_I(it->on_sale ? 1 : 0)};
    return oms_db_exec(tx,
                       "INSERT INTO products(id, name, price_id, unit_price, currency, available,"
                       " reserved, sold, position, on_sale)"
                       " VALUES($1, $2, $3, $4, $5, $6, 0, 0, $7, $8)",
                       p, 8, NULL, err);
}

int stock_store_next_position(struct oms_db_tx *tx, long long *position, oms_error *err)
{
    *position = 0;
    return oms_db_query(tx, "SELECT COALESCE(MAX(position) + 1, 0) FROM products", NULL, 0,
                        count_row, position, NULL, err);
}

int stock_store_update_product(struct oms_db_tx *tx, const stock_item *it, oms_error *err)
{
    long long changes = 0;
    oms_db_param p[6] = {OMS_DB_S(it->product_id), OMS_DB_S(it->name),
                         OMS_DB_S(it->price_id),   OMS_DB_I(it->unit_price),
                         OMS_DB_S(it->currency),   OMS_DB_I(it->on_sale ? 1 : 0)};
    int rc = oms_db_exec(tx,
                         "UPDATE products SET name = $2, price_id = $3, unit_price = $4,"
                         " currency = $5, on_sale = $6 WHERE id = $1",
                         p, 6, &changes, err);
    if (rc != OMS_OK)
        return rc;
    return changes == 1 ? OMS_OK : OMS_NOTFOUND;
}

#define PRODUCT_COLS "id, name, price_id, unit_price, currency, available, reserved, sold, on_sale"

/* Fills it from a row laid out as PRODUCT_COLS starting at column `first`; quantity
 * is not touched. */
static void product_from_row(const oms_db_row *row, int first, stock_item *it)
{
    stock_item_set_id(it, oms_db_row_text(row, first));
    stock_item_set_info(it, oms_db_row_text(row, first + 1), oms_db_row_text(row, first + 2),
                        oms_db_row_text(row, first + 4));
    it->unit_price = oms_db_row_int(row, first + 3);
    it->available = oms_db_row_int(row, first + 5);
    it->reserved = oms_db_row_int(row, first + 6);
    it->sold = oms_db_row_int(row, first + 7);
    it->on_sale = oms_db_row_int(row, first + 8) != 0;
}

static int product_one_row(const oms_db_row *row, void *ud)
{
    product_from_row(row, 0, ud);
    return OMS_OK;
}

int stock_store_get_product(struct oms_db_tx *tx, const char *id, stock_item *out, oms_error *err)
{
    long long n = 0;
    oms_db_param p = OMS_DB_S(id);
    int rc = oms_db_query(tx, "SELECT " PRODUCT_COLS " FROM products WHERE id = $1", &p, 1,
                          product_one_row, out, &n, err);
    if (rc != OMS_OK)
        return rc;
    return n == 1 ? OMS_OK : OMS_NOTFOUND;
}

int stock_store_lock_product(struct oms_db_tx *tx, const char *id, stock_item *out, oms_error *err)
{
    long long n = 0;
    oms_db_param p = OMS_DB_S(id);
    /* PostgreSQL: a staff change and a reservation of the same product run one after the
     * other, so the levels read here are the ones the change and its audit row see.
     * SQLite runs one writer at a time already. */
    int rc = oms_db_query(tx,
                          oms_db_tx_locks_rows(tx)
                              ? "SELECT " PRODUCT_COLS " FROM products WHERE id = $1 FOR UPDATE"
                              : "SELECT " PRODUCT_COLS " FROM products WHERE id = $1",
                          &p, 1, product_one_row, out, &n, err);
    if (rc != OMS_OK)
        return rc;
    return n == 1 ? OMS_OK : OMS_NOTFOUND;
}

static int product_list_row(const oms_db_row *row, void *ud)
{
    product_from_row(row, 0, stock_items_push(ud));
    return OMS_OK;
}

int stock_store_list_products(struct oms_db_tx *tx, stock_items *out, oms_error *err)
{
    return oms_db_query(tx, "SELECT " PRODUCT_COLS " FROM products ORDER BY position, id", NULL, 0,
                        product_list_row, out, NULL, err);
}

/* Indexed by stock_move. The WHERE guard on the source counter is what makes the
 * move safe when transactions are not serialised: a concurrent taker makes the
 * guard fail and changes comes back 0 instead of the counter going negative. */
static const char *const move_sql[STOCK_MOVE__COUNT] = {
    [STOCK_MOVE_RESERVE] = "UPDATE products SET available = available - $2,"
                           " reserved = reserved + $2 WHERE id = $1 AND available >= $2",
    [STOCK_MOVE_RELEASE] = "UPDATE products SET available = available + $2,"
                           " reserved = reserved - $2 WHERE id = $1 AND reserved >= $2",
    [STOCK_MOVE_COMMIT] = "UPDATE products SET reserved = reserved - $2,"
                          " sold = sold + $2 WHERE id = $1 AND reserved >= $2",
};

int stock_store_move(struct oms_db_tx *tx, stock_move move, const char *id, long long quantity,
                     oms_error *err)
{
    if ((int)move < 0 || move >= STOCK_MOVE__COUNT || quantity <= 0)
        return oms_error_set(err, OMS_ERR, "stock move %d of %lld: invalid", (int)move, quantity);
    long long changes = 0;
    oms_db_param p[2] = {OMS_DB_S(id), OMS_DB_I(quantity)};
    int rc = oms_db_exec(tx, move_sql[move], p, 2, &changes, err);
    if (rc != OMS_OK)
        return rc;
    return changes == 1 ? OMS_OK : OMS_CONFLICT;
}

/* Indexed by stock_level_op. Guarded like move_sql: the count on hand never drops
 * below what is reserved (available >= 0) whatever ran since the caller's read. */
static const char *const level_sql[STOCK_LEVEL__COUNT] = {
    [STOCK_LEVEL_ADD] = "UPDATE products SET available = available + $2"
                        " WHERE id = $1 AND available + $2 >= 0",
    [STOCK_LEVEL_SET_ON_HAND] = "UPDATE products SET available = $2 - reserved"
                                " WHERE id = $1 AND reserved <= $2",
};

int stock_store_set_level(struct oms_db_tx *tx, stock_level_op op, const char *id, long long n,
                          oms_error *err)
{
    if ((int)op < 0 || op >= STOCK_LEVEL__COUNT)
        return oms_error_set(err, OMS_ERR, "stock level change %d: invalid", (int)op);
    long long changes = 0;
    oms_db_param p[2] = {OMS_DB_S(id), OMS_DB_I(n)};
    int rc = oms_db_exec(tx, level_sql[op], p, 2, &changes, err);
    if (rc != OMS_OK)
        return rc;
    return changes == 1 ? OMS_OK : OMS_CONFLICT;
}

/* ---- audit ------------------------------------------------------------------------- */

int stock_store_insert_audit(struct oms_db_tx *tx, const stock_audit_entry *e, oms_error *err)
{
    oms_db_param p[7] = {OMS_DB_I(e->at_ms),
                         OMS_DB_S(e->staff),
                         OMS_DB_S(e->action),
                         OMS_DB_S(e->subject),
                         OMS_DB_S(e->before ? e->before : ""),
                         OMS_DB_S(e->after ? e->after : ""),
                         OMS_DB_S(e->reason ? e->reason : "")};
    return oms_db_exec(tx,
                       "INSERT INTO stock_audit(at_ms, staff, action, subject, before_json,"
                       " after_json, reason) VALUES($1, $2, $3, $4, $5, $6, $7)",
                       p, 7, NULL, err);
}

static int audit_row(const oms_db_row *row, void *ud)
{
    stock_audit_entry *e = stock_audit_list_push(ud);
    e->id = oms_db_row_int(row, 0);
    e->at_ms = oms_db_row_int(row, 1);
    e->staff = oms_strdup(oms_db_row_text(row, 2));
    e->action = oms_strdup(oms_db_row_text(row, 3));
    e->subject = oms_strdup(oms_db_row_text(row, 4));
    e->before = oms_strdup(oms_db_row_text(row, 5));
    e->after = oms_strdup(oms_db_row_text(row, 6));
    e->reason = oms_strdup(oms_db_row_text(row, 7));
    return OMS_OK;
}

int stock_store_list_audit(struct oms_db_tx *tx, int64_t before_ms, long long limit,
                           stock_audit_list *out, oms_error *err)
{
    oms_db_param p[2] = {OMS_DB_I(before_ms), OMS_DB_I(limit)};
    return oms_db_query(tx,
                        "SELECT id, at_ms, staff, action, subject, before_json, after_json, reason"
                        " FROM stock_audit WHERE at_ms < $1 ORDER BY at_ms DESC, id DESC LIMIT $2",
                        p, 2, audit_row, out, NULL, err);
}

/* ---- reservations ---------------------------------------------------------------- */

typedef struct res_head {
    stock_reservation *r;
    int bad_state; /* a state string we do not know: schema CHECK makes it impossible */
} res_head;

static int reservation_row(const oms_db_row *row, void *ud)
{
    res_head *h = ud;
    int st = stock_res_state_parse(oms_db_row_text(row, 0));
    if (st < 0) {
        h->bad_state = 1;
        return OMS_OK;
    }
    h->r->state = (stock_res_state)st;
    h->r->created_ms = oms_db_row_int(row, 1);
    h->r->expires_ms = oms_db_row_int(row, 2);
    h->r->updated_ms = oms_db_row_int(row, 3);
    return OMS_OK;
}

static int reservation_item_row(const oms_db_row *row, void *ud)
{
    stock_item *it = stock_items_push(ud);
    it->quantity = oms_db_row_int(row, 0);
    product_from_row(row, 1, it);
    return OMS_OK;
}

int stock_store_get_reservation(struct oms_db_tx *tx, const char *order_id, stock_reservation *out,
                                oms_error *err)
{
    long long n = 0;
    oms_db_param p = OMS_DB_S(order_id);
    res_head h = {out, 0};
    /* PostgreSQL: the row stays locked until tx ends, so a commit and a release of one
     * order (a payment racing a cancel) run one after the other and the second sees the
     * first's state, instead of both reading "reserved" and one failing at the write.
     * SQLite runs one writer at a time already. */
    int rc = oms_db_query(tx,
                          oms_db_tx_locks_rows(tx)
                              ? "SELECT state, created_at, expires_at, updated_at FROM"
                                " reservations WHERE order_id = $1 FOR UPDATE"
                              : "SELECT state, created_at, expires_at, updated_at FROM"
                                " reservations WHERE order_id = $1",
                          &p, 1, reservation_row, &h, &n, err);
    if (rc != OMS_OK)
        return rc;
    if (n == 0)
        return OMS_NOTFOUND;
    if (h.bad_state)
        return oms_error_set(err, OMS_ERR, "reservation for order %s has an unknown state",
                             order_id);
    snprintf(out->order_id, sizeof(out->order_id), "%s", order_id);
    rc = oms_db_query(tx,
                      "SELECT ri.quantity, p.id, p.name, p.price_id, p.unit_price, p.currency,"
                      " p.available, p.reserved, p.sold, p.on_sale FROM reservation_items ri"
                      " JOIN products p ON p.id = ri.product_id WHERE ri.order_id = $1"
                      " ORDER BY p.position, p.id",
                      &p, 1, reservation_item_row, &out->items, NULL, err);
    if (rc != OMS_OK)
        stock_items_free(&out->items);
    return rc;
}

int stock_store_insert_reservation(struct oms_db_tx *tx, const stock_reservation *r, oms_error *err)
{
    oms_db_param p[5] = {OMS_DB_S(r->order_id), OMS_DB_S(stock_res_state_str(r->state)),
                         OMS_DB_I(r->created_ms), OMS_DB_I(r->expires_ms), OMS_DB_I(r->updated_ms)};
    int rc = oms_db_exec(tx,
                         "INSERT INTO reservations(order_id, state, created_at, expires_at,"
                         " updated_at) VALUES($1, $2, $3, $4, $5)",
                         p, 5, NULL, err);
    for (size_t i = 0; rc == OMS_OK && i < r->items.n; i++) {
        oms_db_param ip[3] = {OMS_DB_S(r->order_id), OMS_DB_S(r->items.v[i].product_id),
                              OMS_DB_I(r->items.v[i].quantity)};
        rc = oms_db_exec(tx,
                         "INSERT INTO reservation_items(order_id, product_id, quantity)"
                         " VALUES($1, $2, $3)",
                         ip, 3, NULL, err);
    }
    return rc;
}

int stock_store_set_state(struct oms_db_tx *tx, const char *order_id, stock_res_state from,
                          stock_res_state to, int64_t now_ms, oms_error *err)
{
    long long changes = 0;
    oms_db_param p[4] = {OMS_DB_S(order_id), OMS_DB_S(stock_res_state_str(from)),
                         OMS_DB_S(stock_res_state_str(to)), OMS_DB_I(now_ms)};
    int rc = oms_db_exec(tx,
                         "UPDATE reservations SET state = $3, updated_at = $4"
                         " WHERE order_id = $1 AND state = $2",
                         p, 4, &changes, err);
    if (rc != OMS_OK)
        return rc;
    if (changes != 1)
        return oms_error_set(err, OMS_AGAIN,
                             "reservation for order %s changed concurrently; try again", order_id);
    return OMS_OK;
}

void stock_ids_free(stock_ids *ids)
{
    for (size_t i = 0; i < ids->n; i++)
        free(ids->v[i]);
    free(ids->v);
    ids->v = NULL;
    ids->n = ids->cap = 0;
}

static int id_row(const oms_db_row *row, void *ud)
{
    stock_ids *ids = ud;
    if (ids->n == ids->cap) {
        ids->cap = ids->cap ? ids->cap * 2 : 16;
        ids->v = oms_xrealloc(ids->v, ids->cap * sizeof(*ids->v));
    }
    ids->v[ids->n++] = oms_strdup(oms_db_row_text(row, 0));
    return OMS_OK;
}

int stock_store_due_reservations(struct oms_db_tx *tx, int64_t now_ms, long long limit,
                                 stock_ids *out, oms_error *err)
{
    oms_db_param p[3] = {OMS_DB_S(stock_res_state_str(STOCK_RES_RESERVED)), OMS_DB_I(now_ms),
                         OMS_DB_I(limit)};
    return oms_db_query(tx,
                        "SELECT order_id FROM reservations WHERE state = $1 AND expires_at <= $2"
                        " ORDER BY expires_at, order_id LIMIT $3",
                        p, 3, id_row, out, NULL, err);
}

static int state_count_row(const oms_db_row *row, void *ud)
{
    long long *counts = ud;
    int st = stock_res_state_parse(oms_db_row_text(row, 0));
    if (st >= 0)
        counts[st] = oms_db_row_int(row, 1);
    return OMS_OK;
}

int stock_store_count_states(struct oms_db_tx *tx, long long counts[STOCK_RES__COUNT],
                             oms_error *err)
{
    for (int i = 0; i < STOCK_RES__COUNT; i++)
        counts[i] = 0;
    return oms_db_query(tx, "SELECT state, COUNT(*) FROM reservations GROUP BY state", NULL, 0,
                        state_count_row, counts, NULL, err);
}
