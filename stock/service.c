/* Stock rules. Every public call is one transaction: read what it needs, check, then
 * move quantities with guarded updates (store.c) so that stock is never oversold:
 * with SQLite the transactions are serialised anyway; with PostgreSQL the guards
 * turn a lost race into a refused update instead of a negative counter.
 *
 * Gauges: /metrics must not touch the database (the gauge callbacks run under the
 * metrics lock, and a database call from there could wait on a connection whose
 * holder waits on that lock), so the service keeps atomics: reservation counts move
 * by deltas after each commit, product levels are set after each commit from the
 * levels read in that transaction, and all re-read by every expiry sweep. */
#include "service.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "oms/db.h"
#include "oms/log.h"
#include "oms/metrics.h"
#include "oms/order.h"
#include "oms/util.h"
#include "store.h"

/* Bounds one sweep's transaction, so a backlog after downtime cannot hold the
 * database for long; the rest is released by the next sweeps. */
#define STOCK_SWEEP_BATCH 500

typedef struct stock_level {
    char product_id[OMS_ID_MAX + 1];
    _Atomic long long available;
} stock_level;

struct stock_service {
    struct oms_db *db; /* borrowed */
    int64_t ttl_ms;
    stock_level *levels; /* one per product, catalog order; fixed after start */
    size_t nlevels;
    _Atomic long long states[STOCK_RES__COUNT];
};

#define ID_RULE "must be 1..64 characters of [A-Za-z0-9_.:-]"

/* ---- helpers ---------------------------------------------------------------------- */

static void state_moved(stock_service *svc, int from, stock_res_state to)
{
    if (from >= 0)
        atomic_fetch_sub(&svc->states[from], 1);
    atomic_fetch_add(&svc->states[to], 1);
}

/* Sets the gauge levels from products whose levels were read (and adjusted for our
 * own moves) inside a transaction that has committed. Two commits applying out of
 * order can leave a level stale until the next sweep re-reads them all. */
static void levels_apply(stock_service *svc, const stock_items *products)
{
    for (size_t i = 0; i < products->n; i++) {
        const stock_item *p = &products->v[i];
        /* Same order as at start in the normal case: check the slot first. */
        if (i < svc->nlevels && strcmp(svc->levels[i].product_id, p->product_id) == 0) {
            atomic_store(&svc->levels[i].available, p->available);
            continue;
        }
        for (size_t j = 0; j < svc->nlevels; j++)
            if (strcmp(svc->levels[j].product_id, p->product_id) == 0)
                atomic_store(&svc->levels[j].available, p->available);
    }
}

/* Validates and merges client items into o (initialised by the caller). */
static int normalize_items(const stock_req_item *items, size_t n, oms_order *o, oms_error *err)
{
    if (n == 0)
        return oms_error_set(err, OMS_INVALID, "items: at least one item is required");
    for (size_t i = 0; i < n; i++) {
        const char *id = items[i].product_id;
        /* Checked here, before the copy into a fixed-size field could truncate a long
         * id into a valid-looking one. */
        if (!oms_valid_id(id))
            return oms_error_set(err, OMS_INVALID, "items[%zu].productID: " ID_RULE, i);
        /* The model's quantity is an int; anything outside it is invalid anyway. */
        if (items[i].quantity < OMS_MIN_QUANTITY || items[i].quantity > OMS_MAX_QUANTITY)
            return oms_error_set(err, OMS_INVALID,
                                 "items[%zu].quantity: must be an integer from %d to %d", i,
                                 OMS_MIN_QUANTITY, OMS_MAX_QUANTITY);
        oms_order_item it;
        memset(&it, 0, sizeof(it));
        snprintf(it.product_id, sizeof(it.product_id), "%s", id);
        it.quantity = (int)items[i].quantity;
        oms_order_add_item(o, &it);
    }
    return oms_order_normalize_items(o, err);
}

static int short_error(oms_error *err, const char *prefix, const stock_item *it,
                       long long requested, long long left)
{
    return oms_error_set(err, OMS_CONFLICT,
                         "%snot enough stock for product %s (%s): requested %lld, %lld left",
                         prefix, it->product_id, it->name ? it->name : "", requested, left);
}

/* A guarded move was refused although the earlier read said there was enough: a
 * concurrent writer took the stock (PostgreSQL). Re-reads the product so the message
 * tells the truth. */
static int short_after_race(struct oms_db_tx *tx, const char *prefix, const stock_item *it,
                            long long requested, oms_error *err)
{
    stock_item now;
    oms_error rerr;
    memset(&now, 0, sizeof(now));
    long long left = 0;
    if (stock_store_get_product(tx, it->product_id, &now, &rerr) == OMS_OK)
        left = now.available;
    free(now.name);
    free(now.price_id);
    return short_error(err, prefix, it, requested, left);
}

static int reservation_missing(oms_error *err, const char *order_id)
{
    return oms_error_set(err, OMS_NOTFOUND, "reservation for order %s not found", order_id);
}

/* ---- lifecycle -------------------------------------------------------------------- */

int stock_load_catalog(struct oms_db *db, const char *path, size_t *loaded, oms_error *err)
{
    struct oms_db_tx *tx = NULL;
    stock_items products;
    long long count = 0;
    stock_items_init(&products);
    *loaded = 0;

    int rc = oms_db_begin(db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = stock_store_count_products(tx, &count, err);
    if (rc != OMS_OK || count > 0)
        goto done; /* seeded before: the database, not the file, is the truth now */
    rc = stock_catalog_load(path, &products, err);
    for (size_t i = 0; rc == OMS_OK && i < products.n; i++)
        rc = stock_store_insert_product(tx, &products.v[i], (long long)i, err);
    if (rc == OMS_CONFLICT) {
        /* Another instance seeded the same empty database (PostgreSQL) at the same
         * moment and committed first: its rows are the catalog now. */
        oms_error_clear(err);
        rc = OMS_OK;
        goto done;
    }
    if (rc != OMS_OK)
        goto done;
    rc = oms_db_commit(tx, err);
    tx = NULL;
    if (rc == OMS_OK)
        *loaded = products.n;
done:
    oms_db_rollback(tx); /* NULL after commit: no-op */
    stock_items_free(&products);
    return rc;
}

int stock_service_new(stock_service **out, struct oms_db *db, int64_t ttl_ms, oms_error *err)
{
    struct oms_db_tx *tx = NULL;
    stock_items products;
    long long counts[STOCK_RES__COUNT];
    stock_items_init(&products);
    *out = NULL;

    int rc = oms_db_begin(db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = stock_store_list_products(tx, &products, err);
    if (rc == OMS_OK)
        rc = stock_store_count_states(tx, counts, err);
    oms_db_rollback(tx); /* read only */
    if (rc != OMS_OK) {
        stock_items_free(&products);
        return rc;
    }

    stock_service *svc = oms_xcalloc(1, sizeof(*svc));
    svc->db = db;
    svc->ttl_ms = ttl_ms;
    svc->nlevels = products.n;
    svc->levels = oms_xcalloc(products.n, sizeof(*svc->levels));
    for (size_t i = 0; i < products.n; i++) {
        memcpy(svc->levels[i].product_id, products.v[i].product_id,
               sizeof(svc->levels[i].product_id));
        atomic_init(&svc->levels[i].available, products.v[i].available);
    }
    for (int i = 0; i < STOCK_RES__COUNT; i++)
        atomic_init(&svc->states[i], counts[i]);
    stock_items_free(&products);
    *out = svc;
    return OMS_OK;
}

void stock_service_free(stock_service *svc)
{
    if (!svc)
        return;
    free(svc->levels);
    free(svc);
}

static double gauge_read(void *ud)
{
    return (double)atomic_load((_Atomic long long *)ud);
}

void stock_service_register_metrics(stock_service *svc)
{
    char labels[160];
    for (int i = 0; i < STOCK_RES__COUNT; i++) {
        labels[0] = '\0';
        oms_metrics_label(labels, sizeof(labels), "state", stock_res_state_str(i));
        oms_metrics_gauge_fn("stock_reservations", "Stock reservations by state.", labels,
                             gauge_read, &svc->states[i]);
    }
    for (size_t i = 0; i < svc->nlevels; i++) {
        labels[0] = '\0';
        oms_metrics_label(labels, sizeof(labels), "product", svc->levels[i].product_id);
        oms_metrics_gauge_fn("stock_available", "Units free to reserve per product.", labels,
                             gauge_read, &svc->levels[i].available);
    }
}

/* ---- reserve ---------------------------------------------------------------------- */

/* Checks and takes every item of o for a new reservation r (items filled here; the
 * caller inserts the reservation row). Nothing is committed: on error the caller rolls back, which
 * undoes earlier items. */
static int reserve_take(struct oms_db_tx *tx, const oms_order *o, stock_reservation *r,
                        oms_error *err)
{
    /* Check all first so the reported item is the first short one in request order,
     * and nothing is written for a request that cannot be satisfied. */
    for (size_t i = 0; i < o->nitems; i++) {
        const oms_order_item *want = &o->items[i];
        stock_item *it = stock_items_push(&r->items);
        int rc = stock_store_get_product(tx, want->product_id, it, err);
        if (rc == OMS_NOTFOUND)
            return oms_error_set(err, OMS_NOTFOUND, "product %s not found", want->product_id);
        if (rc != OMS_OK)
            return rc;
        it->quantity = want->quantity;
        if (it->available < want->quantity)
            return short_error(err, "", it, want->quantity, it->available);
    }
    for (size_t i = 0; i < r->items.n; i++) {
        stock_item *it = &r->items.v[i];
        int rc = stock_store_move(tx, STOCK_MOVE_RESERVE, it->product_id, it->quantity, err);
        if (rc == OMS_CONFLICT)
            return short_after_race(tx, "", it, it->quantity, err);
        if (rc != OMS_OK)
            return rc;
        it->available -= it->quantity;
        it->reserved += it->quantity;
    }
    return OMS_OK;
}

int stock_reserve(stock_service *svc, const char *order_id, const stock_req_item *items,
                  size_t nitems, int64_t now_ms, stock_items *out, oms_error *err)
{
    struct oms_db_tx *tx = NULL;
    stock_reservation r;
    oms_order o;
    int created = 0;
    stock_reservation_init(&r);
    oms_order_init(&o);

    int rc = OMS_OK;
    if (!oms_valid_id(order_id)) {
        rc = oms_error_set(err, OMS_INVALID, "orderID: " ID_RULE);
        goto done;
    }
    rc = normalize_items(items, nitems, &o, err);
    if (rc != OMS_OK)
        goto done;

    /* Two attempts: with PostgreSQL a concurrent reserve for the same order can win the
     * insert; the second attempt then finds its reservation and replays it. */
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = oms_db_begin(svc->db, &tx, err);
        if (rc != OMS_OK)
            goto done;
        rc = stock_store_get_reservation(tx, order_id, &r, err);
        if (rc == OMS_OK)
            break; /* replay: same items, nothing taken again */
        if (rc != OMS_NOTFOUND)
            goto done;

        snprintf(r.order_id, sizeof(r.order_id), "%s", order_id);
        r.state = STOCK_RES_RESERVED;
        r.created_ms = r.updated_ms = now_ms;
        r.expires_ms = now_ms + svc->ttl_ms;
        rc = reserve_take(tx, &o, &r, err);
        if (rc != OMS_OK)
            goto done;
        rc = stock_store_insert_reservation(tx, &r, err);
        if (rc == OMS_CONFLICT && attempt == 0) {
            oms_db_rollback(tx);
            tx = NULL;
            stock_reservation_free(&r);
            continue;
        }
        if (rc != OMS_OK)
            goto done;
        rc = oms_db_commit(tx, err);
        tx = NULL;
        if (rc != OMS_OK)
            goto done;
        created = 1;
        break;
    }

    if (created) {
        levels_apply(svc, &r.items);
        state_moved(svc, -1, STOCK_RES_RESERVED);
        oms_log_info("stock reserved", "order_id", order_id);
    } else {
        oms_log_debug("reservation replayed", "order_id", order_id, "state",
                      stock_res_state_str(r.state));
    }
    *out = r.items; /* ownership moves to the caller */
    stock_items_init(&r.items);
    rc = OMS_OK;

done:
    oms_db_rollback(tx);
    stock_reservation_free(&r);
    oms_order_free(&o);
    return rc;
}

/* ---- release / commit / expiry ---------------------------------------------------- */

/* Moves r's items back to available and marks it released (r must be reserved); the
 * items' levels are updated to match. */
static int release_locked(struct oms_db_tx *tx, stock_reservation *r, int64_t now_ms,
                          oms_error *err)
{
    for (size_t i = 0; i < r->items.n; i++) {
        stock_item *it = &r->items.v[i];
        int rc = stock_store_move(tx, STOCK_MOVE_RELEASE, it->product_id, it->quantity, err);
        if (rc == OMS_CONFLICT)
            return oms_error_set(err, OMS_ERR,
                                 "product %s: reserved count is below the %lld held for order "
                                 "%s",
                                 it->product_id, it->quantity, r->order_id);
        if (rc != OMS_OK)
            return rc;
        it->available += it->quantity;
        it->reserved -= it->quantity;
    }
    return stock_store_set_state(tx, r->order_id, STOCK_RES_RESERVED, STOCK_RES_RELEASED, now_ms,
                                 err);
}

int stock_release(stock_service *svc, const char *order_id, int64_t now_ms, stock_res_state *state,
                  oms_error *err)
{
    struct oms_db_tx *tx = NULL;
    stock_reservation r;
    stock_reservation_init(&r);

    int rc = OMS_OK;
    if (!oms_valid_id(order_id)) {
        rc = oms_error_set(err, OMS_INVALID, "orderID: " ID_RULE);
        goto done;
    }
    rc = oms_db_begin(svc->db, &tx, err);
    if (rc != OMS_OK)
        goto done;
    rc = stock_store_get_reservation(tx, order_id, &r, err);
    if (rc == OMS_NOTFOUND)
        rc = reservation_missing(err, order_id);
    if (rc != OMS_OK)
        goto done;
    *state = r.state;
    if (r.state == STOCK_RES_COMMITTED) {
        rc = oms_error_set(err, OMS_CONFLICT, "reservation for order %s is already committed",
                           order_id);
        goto done;
    }
    if (r.state == STOCK_RES_RELEASED)
        goto done; /* idempotent */

    rc = release_locked(tx, &r, now_ms, err);
    if (rc != OMS_OK)
        goto done;
    rc = oms_db_commit(tx, err);
    tx = NULL;
    if (rc != OMS_OK)
        goto done;
    *state = STOCK_RES_RELEASED;
    levels_apply(svc, &r.items);
    state_moved(svc, STOCK_RES_RESERVED, STOCK_RES_RELEASED);
    oms_log_info("stock reservation released", "order_id", order_id);

done:
    oms_db_rollback(tx);
    stock_reservation_free(&r);
    return rc;
}

int stock_commit(stock_service *svc, const char *order_id, int64_t now_ms, stock_res_state *state,
                 oms_error *err)
{
    struct oms_db_tx *tx = NULL;
    stock_reservation r;
    stock_reservation_init(&r);

    int rc = OMS_OK;
    if (!oms_valid_id(order_id)) {
        rc = oms_error_set(err, OMS_INVALID, "orderID: " ID_RULE);
        goto done;
    }
    rc = oms_db_begin(svc->db, &tx, err);
    if (rc != OMS_OK)
        goto done;
    rc = stock_store_get_reservation(tx, order_id, &r, err);
    if (rc == OMS_NOTFOUND)
        rc = reservation_missing(err, order_id);
    if (rc != OMS_OK)
        goto done;
    *state = r.state;
    if (r.state == STOCK_RES_COMMITTED)
        goto done; /* idempotent */

    /* Released (cancelled, or expired before the payment arrived) is final: the units
     * may already be someone else's, and the side that released them has ended the
     * order. A payment that comes now is refunded by its caller; re-taking the stock
     * here would race that decision. */
    if (r.state == STOCK_RES_RELEASED) {
        rc =
            oms_error_set(err, OMS_CONFLICT,
                          "reservation for order %s was released (cancelled or expired)", order_id);
        goto done;
    }
    for (size_t i = 0; i < r.items.n; i++) {
        stock_item *it = &r.items.v[i];
        rc = stock_store_move(tx, STOCK_MOVE_COMMIT, it->product_id, it->quantity, err);
        if (rc == OMS_CONFLICT)
            rc = oms_error_set(err, OMS_ERR,
                               "product %s: reserved count is below the %lld held for order %s",
                               it->product_id, it->quantity, order_id);
        if (rc != OMS_OK)
            goto done;
        it->reserved -= it->quantity;
        it->sold += it->quantity;
    }
    rc = stock_store_set_state(tx, order_id, r.state, STOCK_RES_COMMITTED, now_ms, err);
    if (rc != OMS_OK)
        goto done;
    rc = oms_db_commit(tx, err);
    tx = NULL;
    if (rc != OMS_OK)
        goto done;
    levels_apply(svc, &r.items);
    state_moved(svc, (int)r.state, STOCK_RES_COMMITTED);
    *state = STOCK_RES_COMMITTED;
    oms_log_info("stock reservation committed", "order_id", order_id, "from",
                 stock_res_state_str(r.state));

done:
    oms_db_rollback(tx);
    stock_reservation_free(&r);
    return rc;
}

int stock_expire_due(stock_service *svc, int64_t now_ms, size_t *released, oms_error *err)
{
    struct oms_db_tx *tx = NULL;
    stock_ids due;
    stock_items products;
    memset(&due, 0, sizeof(due));
    stock_items_init(&products);
    if (released)
        *released = 0;

    int rc = oms_db_begin(svc->db, &tx, err);
    if (rc != OMS_OK)
        goto done;
    rc = stock_store_due_reservations(tx, now_ms, STOCK_SWEEP_BATCH, &due, err);
    for (size_t i = 0; rc == OMS_OK && i < due.n; i++) {
        stock_reservation r;
        stock_reservation_init(&r);
        rc = stock_store_get_reservation(tx, due.v[i], &r, err);
        if (rc == OMS_OK)
            rc = release_locked(tx, &r, now_ms, err);
        stock_reservation_free(&r);
    }
    if (rc == OMS_OK)
        rc = stock_store_list_products(tx, &products, err);
    if (rc != OMS_OK)
        goto done;
    rc = oms_db_commit(tx, err);
    tx = NULL;
    if (rc != OMS_OK)
        goto done;

    /* Only after the commit: a rolled-back sweep released nothing. */
    levels_apply(svc, &products);
    for (size_t i = 0; i < due.n; i++) {
        state_moved(svc, STOCK_RES_RESERVED, STOCK_RES_RELEASED);
        oms_log_info("stock reservation expired, released", "order_id", due.v[i]);
    }
    if (released)
        *released = due.n;

done:
    oms_db_rollback(tx);
    stock_ids_free(&due);
    stock_items_free(&products);
    return rc;
}

/* ---- reads ------------------------------------------------------------------------ */

int stock_check(stock_service *svc, const stock_req_item *items, size_t nitems, int *in_stock,
                stock_items *out, oms_error *err)
{
    struct oms_db_tx *tx = NULL;
    stock_items found;
    oms_order o;
    stock_items_init(&found);
    oms_order_init(&o);
    *in_stock = 0;

    int rc = normalize_items(items, nitems, &o, err);
    if (rc != OMS_OK)
        goto done;
    rc = oms_db_begin(svc->db, &tx, err);
    if (rc != OMS_OK)
        goto done;
    int ok = 1;
    for (size_t i = 0; ok && i < o.nitems; i++) {
        stock_item *it = stock_items_push(&found);
        rc = stock_store_get_product(tx, o.items[i].product_id, it, err);
        if (rc == OMS_NOTFOUND) {
            ok = 0; /* unknown product: simply not in stock, as the original answered */
            rc = OMS_OK;
            break;
        }
        if (rc != OMS_OK)
            goto done;
        it->quantity = o.items[i].quantity;
        if (it->available < it->quantity)
            ok = 0;
    }
    if (ok) {
        *out = found;
        stock_items_init(&found);
    }
    *in_stock = ok;

done:
    oms_db_rollback(tx); /* read only */
    stock_items_free(&found);
    oms_order_free(&o);
    return rc;
}

int stock_get_items(stock_service *svc, const char *const *ids, size_t nids, stock_items *out,
                    oms_error *err)
{
    struct oms_db_tx *tx = NULL;
    stock_items found;
    stock_items_init(&found);

    if (nids > STOCK_MAX_GET_IDS)
        return oms_error_set(err, OMS_INVALID, "ItemIDs: at most %d ids per call",
                             STOCK_MAX_GET_IDS);
    int rc = oms_db_begin(svc->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    for (size_t i = 0; i < nids; i++) {
        /* An id that could never have been stored is just unknown. */
        if (!oms_valid_id(ids[i]))
            continue;
        int seen = 0;
        for (size_t j = 0; !seen && j < found.n; j++)
            seen = strcmp(found.v[j].product_id, ids[i]) == 0;
        if (seen)
            continue;
        stock_item *it = stock_items_push(&found);
        rc = stock_store_get_product(tx, ids[i], it, err);
        if (rc == OMS_NOTFOUND) {
            found.n--; /* drop the slot; its strings were never set */
            rc = OMS_OK;
            continue;
        }
        if (rc != OMS_OK)
            goto done;
        it->quantity = it->available;
    }
    *out = found;
    stock_items_init(&found);

done:
    oms_db_rollback(tx); /* read only */
    stock_items_free(&found);
    return rc;
}

int stock_list_items(stock_service *svc, stock_items *out, oms_error *err)
{
    struct oms_db_tx *tx = NULL;
    stock_items found;
    stock_items_init(&found);

    int rc = oms_db_begin(svc->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = stock_store_list_products(tx, &found, err);
    oms_db_rollback(tx); /* read only */
    if (rc != OMS_OK) {
        stock_items_free(&found);
        return rc;
    }
    for (size_t i = 0; i < found.n; i++)
        found.v[i].quantity = found.v[i].available;
    *out = found;
    return OMS_OK;
}
