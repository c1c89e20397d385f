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
#include <strings.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "oms/db.h"
#include "oms/json_out.h"
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
    atomic_int metrics_on; /* stock_service_register_metrics ran */
};

#define ID_RULE "must be 1..64 characters of [A-Za-z0-9_.:-]"

/* ---- helpers ---------------------------------------------------------------------- */

static void state_moved(stock_service *svc, int from, stock_res_state to)
{
    if (from >= 0)
        atomic_fetch_sub(&svc->states[from], 1);
    atomic_fetch_add(&svc->states[to], 1);
}

#define AVAILABLE_HELP "Units free to reserve per product."

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
        int found = 0;
        for (size_t j = 0; j < svc->nlevels; j++) {
            if (strcmp(svc->levels[j].product_id, p->product_id) == 0) {
                atomic_store(&svc->levels[j].available, p->available);
                found = 1;
            }
        }
        /* A product created after the start has no slot (the slots are fixed so the
         * render-time gauges can point at them): its series is set as a value, here
         * and by every sweep. */
        if (!found && atomic_load(&svc->metrics_on)) {
            char labels[160];
            labels[0] = '\0';
            oms_metrics_label(labels, sizeof(labels), "product", p->product_id);
            oms_metrics_gauge_set("stock_available", AVAILABLE_HELP, labels, (double)p->available);
        }
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
        oms_metrics_gauge_fn("stock_available", AVAILABLE_HELP, labels, gauge_read,
                             &svc->levels[i].available);
    }
    atomic_store(&svc->metrics_on, 1);
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
        if (!it->on_sale)
            return oms_error_set(err, OMS_CONFLICT, "product %s (%s) is not on sale",
                                 it->product_id, it->name ? it->name : "");
        /* The order's total and its payment are in one currency: the first item's. */
        const stock_item *first = &r->items.v[0];
        if (strcasecmp(it->currency, first->currency) != 0)
            return oms_error_set(err, OMS_INVALID,
                                 "items: product %s (%s) is priced in %s and product %s (%s) in "
                                 "%s; one order is paid in one currency",
                                 it->product_id, it->name ? it->name : "", it->currency,
                                 first->product_id, first->name ? first->name : "",
                                 first->currency);
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
        if (!it->on_sale || it->available < it->quantity)
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
        if (!it->on_sale)
            it->available = 0; /* off sale: not in stock, whatever is on the shelf */
        it->quantity = it->available;
    }
    *out = found;
    stock_items_init(&found);

done:
    oms_db_rollback(tx); /* read only */
    stock_items_free(&found);
    return rc;
}

int stock_list_products(stock_service *svc, stock_items *out, oms_error *err)
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

int stock_list_items(stock_service *svc, stock_items *out, oms_error *err)
{
    int rc = stock_list_products(svc, out, err);
    if (rc != OMS_OK)
        return rc;
    /* Off the menu: dropped in place, keeping the catalog order. */
    size_t kept = 0;
    for (size_t i = 0; i < out->n; i++) {
        if (out->v[i].on_sale) {
            out->v[kept++] = out->v[i];
        } else {
            free(out->v[i].name);
            free(out->v[i].price_id);
        }
    }
    out->n = kept;
    return OMS_OK;
}

/* ---- back office (staff) ---------------------------------------------------------- */

/* ISO 4217 codes a shop here may price in: a short list of real ones, so that a typo
 * ("USS") is refused instead of reaching the payment processor. */
static const char *const known_currencies[] = {
    "AED", "ARS", "AUD", "BGN", "BRL", "CAD", "CHF", "CLP", "CNY", "COP", "CZK", "DKK",
    "EGP", "EUR", "GBP", "HKD", "HUF", "IDR", "ILS", "INR", "ISK", "JPY", "KES", "KRW",
    "MAD", "MXN", "MYR", "NGN", "NOK", "NZD", "PEN", "PHP", "PLN", "QAR", "RON", "SAR",
    "SEK", "SGD", "THB", "TRY", "TWD", "UAH", "USD", "VND", "ZAR",
};

/* The upper-case code for s (any case), or NULL when it is not a known currency. */
static const char *currency_code(const char *s)
{
    for (size_t i = 0; s && i < OMS_NELEM(known_currencies); i++)
        if (strcasecmp(s, known_currencies[i]) == 0)
            return known_currencies[i];
    return NULL;
}

/* XX(bit, wire name): the product fields PutProduct may name, in audit order. */
#define STOCK_FIELD_MAP(XX)                                                                        \
    XX(NAME, "name")                                                                               \
    XX(PRICE_ID, "priceID")                                                                        \
    XX(UNIT_PRICE, "unitPrice")                                                                    \
    XX(CURRENCY, "currency")                                                                       \
    XX(ON_SALE, "onSale")

enum {
#define STOCK_FIELD_BIT(name, str) FIELD_BIT_##name,
    STOCK_FIELD_MAP(STOCK_FIELD_BIT)
#undef STOCK_FIELD_BIT
        FIELD__COUNT
};
#define FIELD(name) (1u << FIELD_BIT_##name)

static const char *const field_names[] = {
#define STOCK_FIELD_NAME(name, str) str,
    STOCK_FIELD_MAP(STOCK_FIELD_NAME)
#undef STOCK_FIELD_NAME
};

#define FIELD_LIST "name, unitPrice, currency, priceID, onSale"

/* Checks that s is 1..max_chars characters of UTF-8 text without control characters
 * (C0, DEL, C1) and not only spaces: names and reasons end up in pages, logs, audit
 * rows and payment line items. */
static int check_text(oms_error *err, const char *field, const char *s, size_t max_chars)
{
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t chars = 0;
    int blank = 1;
    while (*p) {
        uint32_t cp;
        int n;
        if (p[0] < 0x80)
            cp = p[0], n = 1;
        else if ((p[0] & 0xE0) == 0xC0)
            cp = p[0] & 0x1F, n = 2;
        else if ((p[0] & 0xF0) == 0xE0)
            cp = p[0] & 0x0F, n = 3;
        else if ((p[0] & 0xF8) == 0xF0)
            cp = p[0] & 0x07, n = 4;
        else
            return oms_error_set(err, OMS_INVALID, "%s: must be valid UTF-8 text", field);
        /* A NUL ends the loop here too, before anything past it is read. */
        for (int i = 1; i < n; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return oms_error_set(err, OMS_INVALID, "%s: must be valid UTF-8 text", field);
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return oms_error_set(err, OMS_INVALID, "%s: must be valid UTF-8 text", field);
        if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F))
            return oms_error_set(err, OMS_INVALID, "%s: must not contain control characters",
                                 field);
        if (cp != ' ')
            blank = 0;
        if (++chars > max_chars)
            return oms_error_set(err, OMS_INVALID, "%s: must be at most %zu characters", field,
                                 max_chars);
        p += n;
    }
    if (chars == 0 || blank)
        return oms_error_set(err, OMS_INVALID, "%s: must not be empty", field);
    return OMS_OK;
}

/* Who made the change: the gateway passes the signed-in name. */
static int check_staff(oms_error *err, const char *staff)
{
    return check_text(err, "staff", staff, 100);
}

/* The product's fields named in mask as a compact JSON object; caller frees. */
static char *fields_json(const stock_item *it, unsigned mask)
{
    oms_jbuf b;
    oms_jbuf_init(&b, 256);
    oms_jbuf_lit(&b, "{");
    int first = 1;
    for (int f = 0; f < FIELD__COUNT; f++) {
        if (!(mask & (1u << f)))
            continue;
        if (!first)
            oms_jbuf_lit(&b, ",");
        first = 0;
        oms_jbuf_str(&b, field_names[f]);
        oms_jbuf_lit(&b, ":");
        switch (f) {
        case FIELD_BIT_NAME: oms_jbuf_str(&b, it->name); break;
        case FIELD_BIT_PRICE_ID: oms_jbuf_str(&b, it->price_id); break;
        case FIELD_BIT_UNIT_PRICE: oms_jbuf_int(&b, it->unit_price); break;
        case FIELD_BIT_CURRENCY: oms_jbuf_str(&b, it->currency); break;
        default:
            if (it->on_sale)
                oms_jbuf_lit(&b, "true");
            else
                oms_jbuf_lit(&b, "false");
            break;
        }
    }
    oms_jbuf_lit(&b, "}");
    return oms_jbuf_take(&b, NULL);
}

/* The product's levels as a compact JSON object; caller frees. */
static char *levels_json(const stock_item *it)
{
    oms_jbuf b;
    oms_jbuf_init(&b, 96);
    oms_jbuf_lit(&b, "{\"available\":");
    oms_jbuf_int(&b, it->available);
    oms_jbuf_lit(&b, ",\"reserved\":");
    oms_jbuf_int(&b, it->reserved);
    oms_jbuf_lit(&b, ",\"sold\":");
    oms_jbuf_int(&b, it->sold);
    oms_jbuf_lit(&b, "}");
    return oms_jbuf_take(&b, NULL);
}

/* Which fields c names (*mask), each checked; OMS_INVALID naming the first bad one. */
static int product_change_check(const stock_product_change *c, unsigned *mask, oms_error *err)
{
    *mask = 0;
    if (!oms_valid_id(c->product_id))
        return oms_error_set(err, OMS_INVALID, "productID: " ID_RULE);
    for (size_t i = 0; i < c->nfields; i++) {
        int f = 0;
        while (f < FIELD__COUNT && (!c->fields[i] || strcmp(c->fields[i], field_names[f]) != 0))
            f++;
        if (f == FIELD__COUNT)
            return oms_error_set(err, OMS_INVALID, "fields: unknown field \"%.40s\" (known: %s)",
                                 c->fields[i] ? c->fields[i] : "", FIELD_LIST);
        *mask |= 1u << f;
    }
    if (*mask == 0)
        return oms_error_set(err, OMS_INVALID, "fields: name at least one of %s", FIELD_LIST);
    int rc = OMS_OK;
    if (*mask & FIELD(NAME))
        rc = check_text(err, "name", c->name, STOCK_NAME_MAX_CHARS);
    if (rc == OMS_OK && (*mask & FIELD(UNIT_PRICE)) &&
        (c->unit_price < STOCK_PRICE_MIN || c->unit_price > STOCK_PRICE_MAX))
        rc = oms_error_set(err, OMS_INVALID,
                           "unitPrice: must be an integer number of minor units (cents) from "
                           "%lld to %lld",
                           STOCK_PRICE_MIN, STOCK_PRICE_MAX);
    if (rc == OMS_OK && (*mask & FIELD(CURRENCY)) && !currency_code(c->currency))
        rc = oms_error_set(err, OMS_INVALID,
                           "currency: \"%.8s\" is not a known ISO 4217 code (e.g. USD, EUR, GBP)",
                           c->currency ? c->currency : "");
    if (rc == OMS_OK && (*mask & FIELD(PRICE_ID)) && !oms_valid_id(c->price_id))
        rc = oms_error_set(err, OMS_INVALID, "priceID: " ID_RULE);
    return rc;
}

/* Writes c's named fields (mask) into it. */
static void product_change_apply(stock_item *it, const stock_product_change *c, unsigned mask)
{
    const char *name = (mask & FIELD(NAME)) ? c->name : it->name;
    const char *price_id = (mask & FIELD(PRICE_ID)) ? c->price_id : it->price_id;
    const char *currency = (mask & FIELD(CURRENCY)) ? currency_code(c->currency) : it->currency;
    /* stock_item_set_info frees the old strings: copy them first. */
    char *n = oms_strdup(name), *p = oms_strdup(price_id), cur[STOCK_CURRENCY_MAX + 1];
    snprintf(cur, sizeof(cur), "%s", currency ? currency : "");
    stock_item_set_info(it, n, p, cur);
    free(n);
    free(p);
    if (mask & FIELD(UNIT_PRICE))
        it->unit_price = c->unit_price;
    if (mask & FIELD(ON_SALE))
        it->on_sale = c->on_sale ? 1 : 0;
}

/* The fields whose values differ between a and b. */
static unsigned product_diff(const stock_item *a, const stock_item *b)
{
    unsigned m = 0;
    if (strcmp(a->name ? a->name : "", b->name ? b->name : "") != 0)
        m |= FIELD(NAME);
    if (strcmp(a->price_id ? a->price_id : "", b->price_id ? b->price_id : "") != 0)
        m |= FIELD(PRICE_ID);
    if (a->unit_price != b->unit_price)
        m |= FIELD(UNIT_PRICE);
    if (strcmp(a->currency, b->currency) != 0)
        m |= FIELD(CURRENCY);
    if (a->on_sale != b->on_sale)
        m |= FIELD(ON_SALE);
    return m;
}

/* Inserts one audit row; before/after are taken over (freed here). */
static int audit(struct oms_db_tx *tx, const char *staff, const char *action, const char *subject,
                 char *before, char *after, const char *reason, int64_t now_ms, oms_error *err)
{
    stock_audit_entry e = {.at_ms = now_ms,
                           .staff = (char *)staff,
                           .action = (char *)action,
                           .subject = (char *)subject,
                           .before = before,
                           .after = after,
                           .reason = (char *)reason};
    int rc = stock_store_insert_audit(tx, &e, err);
    free(before);
    free(after);
    return rc;
}

/* Creates the product c names (the caller found no such product): *it filled. */
static int product_create(struct oms_db_tx *tx, const char *staff, const stock_product_change *c,
                          unsigned mask, int64_t now_ms, stock_item *it, oms_error *err)
{
    static const struct {
        unsigned bit;
        const char *name;
    } required[] = {
        {FIELD(NAME), "name"}, {FIELD(UNIT_PRICE), "unitPrice"}, {FIELD(CURRENCY), "currency"}};
    for (size_t i = 0; i < OMS_NELEM(required); i++)
        if (!(mask & required[i].bit))
            return oms_error_set(err, OMS_INVALID,
                                 "%s: required to create product %s (name, unitPrice and "
                                 "currency are)",
                                 required[i].name, c->product_id);
    char price_id[OMS_ID_MAX + 8];
    snprintf(price_id, sizeof(price_id), "price_%s", c->product_id);
    stock_item_set_id(it, c->product_id);
    stock_item_set_info(it, NULL, price_id, "");
    it->on_sale = 1;
    product_change_apply(it, c, mask);

    long long position = 0;
    int rc = stock_store_next_position(tx, &position, err);
    if (rc == OMS_OK)
        rc = stock_store_insert_product(tx, it, position, err);
    if (rc == OMS_CONFLICT) /* created by a concurrent call (PostgreSQL) */
        return oms_error_set(err, OMS_AGAIN, "product %s was created at the same time; try again",
                             c->product_id);
    if (rc != OMS_OK)
        return rc;
    return audit(tx, staff, "product.create", it->product_id, NULL,
                 fields_json(it, (1u << FIELD__COUNT) - 1), "", now_ms, err);
}

/* Commits a staff change (*tx ends either way) and, on success, moves the product as
 * it is now -- found = {before (empty when created), after} -- into out, with quantity
 * = available as the listings show it. */
static int commit_handing_over(struct oms_db_tx **tx, stock_items *found, stock_items *out,
                               oms_error *err)
{
    int rc = oms_db_commit(*tx, err);
    *tx = NULL;
    if (rc != OMS_OK)
        return rc;
    stock_item *after = stock_items_push(out);
    *after = found->v[1];
    memset(&found->v[1], 0, sizeof(found->v[1]));
    after->quantity = after->available;
    return OMS_OK;
}

int stock_put_product(stock_service *svc, const char *staff, const stock_product_change *c,
                      int64_t now_ms, stock_items *out, int *created, oms_error *err)
{
    struct oms_db_tx *tx = NULL;
    stock_items found;
    stock_items_init(&found);
    unsigned mask = 0;
    int made = 0;
    if (created)
        *created = 0;

    int rc = check_staff(err, staff);
    if (rc == OMS_OK)
        rc = product_change_check(c, &mask, err);
    if (rc != OMS_OK)
        return rc;
    rc = oms_db_begin(svc->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    stock_item *before = stock_items_push(&found);
    rc = stock_store_lock_product(tx, c->product_id, before, err);
    if (rc == OMS_NOTFOUND) {
        stock_item *it = stock_items_push(&found);
        rc = product_create(tx, staff, c, mask, now_ms, it, err);
        made = 1;
    } else if (rc == OMS_OK) {
        stock_item *it = stock_items_push(&found);
        before = &found.v[0]; /* the push may have moved it */
        stock_item_set_id(it, before->product_id);
        stock_item_set_info(it, before->name, before->price_id, before->currency);
        it->unit_price = before->unit_price;
        it->on_sale = before->on_sale;
        it->available = before->available;
        it->reserved = before->reserved;
        it->sold = before->sold;
        product_change_apply(it, c, mask);
        unsigned changed = product_diff(before, it);
        if (changed)
            rc = stock_store_update_product(tx, it, err);
        if (rc == OMS_OK && changed)
            rc = audit(tx, staff, "product.update", it->product_id, fields_json(before, changed),
                       fields_json(it, changed), "", now_ms, err);
    }
    if (rc != OMS_OK)
        goto done;
    rc = commit_handing_over(&tx, &found, out, err);
    if (rc != OMS_OK)
        goto done;
    if (made)
        levels_apply(svc, out);
    if (created)
        *created = made;
    oms_log_info(made ? "product created" : "product changed", "product_id", c->product_id, "staff",
                 staff);

done:
    oms_db_rollback(tx);
    stock_items_free(&found);
    return rc;
}

int stock_adjust(stock_service *svc, const char *staff, const stock_adjustment *a, int64_t now_ms,
                 stock_items *out, oms_error *err)
{
    struct oms_db_tx *tx = NULL;
    stock_items found;
    stock_items_init(&found);

    int rc = check_staff(err, staff);
    if (rc != OMS_OK)
        return rc;
    if (!oms_valid_id(a->product_id))
        return oms_error_set(err, OMS_INVALID, "productID: " ID_RULE);
    if (a->is_set && (a->set < 0 || a->set > STOCK_ADJUST_MAX))
        return oms_error_set(err, OMS_INVALID, "set: must be an integer from 0 to %lld",
                             STOCK_ADJUST_MAX);
    if (!a->is_set &&
        (a->delta == 0 || a->delta < -STOCK_ADJUST_MAX || a->delta > STOCK_ADJUST_MAX))
        return oms_error_set(err, OMS_INVALID,
                             "delta: must be a non-zero integer from %lld to %lld",
                             -STOCK_ADJUST_MAX, STOCK_ADJUST_MAX);
    rc = check_text(err, "reason", a->reason, STOCK_REASON_MAX_CHARS);
    if (rc != OMS_OK)
        return rc;

    rc = oms_db_begin(svc->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    stock_item *before = stock_items_push(&found);
    rc = stock_store_lock_product(tx, a->product_id, before, err);
    if (rc == OMS_NOTFOUND)
        rc = oms_error_set(err, OMS_NOTFOUND, "product %s not found", a->product_id);
    if (rc != OMS_OK)
        goto done;
    const char *name = before->name ? before->name : before->product_id;
    stock_level_op op = STOCK_LEVEL_ADD;
    long long n = a->delta;
    if (a->is_set) {
        if (a->set < before->reserved) {
            rc = oms_error_set(err, OMS_CONFLICT, "cannot set %s to %lld: %lld are reserved", name,
                               a->set, before->reserved);
            goto done;
        }
        op = STOCK_LEVEL_SET_ON_HAND;
        n = a->set;
    } else if (before->available + a->delta < 0) {
        rc = oms_error_set(err, OMS_CONFLICT,
                           "cannot take %lld of %s: %lld are free (%lld reserved)", -a->delta, name,
                           before->available, before->reserved);
        goto done;
    } else if (before->available + before->reserved + a->delta > STOCK_ON_HAND_MAX) {
        rc = oms_error_set(err, OMS_CONFLICT, "cannot add %lld to %s: at most %lld on hand",
                           a->delta, name, STOCK_ON_HAND_MAX);
        goto done;
    }
    rc = stock_store_set_level(tx, op, a->product_id, n, err);
    if (rc == OMS_CONFLICT) /* the row is locked: only a bug or a manual edit gets here */
        rc = oms_error_set(err, OMS_AGAIN, "the stock of %s changed meanwhile; try again", name);
    if (rc != OMS_OK)
        goto done;
    stock_item *after = stock_items_push(&found);
    before = &found.v[0]; /* the push may have moved it */
    rc = stock_store_get_product(tx, a->product_id, after, err);
    if (rc == OMS_OK)
        rc = audit(tx, staff, "stock.adjust", a->product_id, levels_json(before),
                   levels_json(after), a->reason, now_ms, err);
    if (rc != OMS_OK)
        goto done;
    rc = commit_handing_over(&tx, &found, out, err);
    if (rc != OMS_OK)
        goto done;
    levels_apply(svc, out);
    oms_log_info("stock adjusted", "product_id", a->product_id, "staff", staff);

done:
    oms_db_rollback(tx);
    stock_items_free(&found);
    return rc;
}

int stock_list_audit(stock_service *svc, int64_t before_ms, long long limit, stock_audit_list *out,
                     oms_error *err)
{
    if (before_ms < 0)
        return oms_error_set(err, OMS_INVALID, "beforeMs: must be 0 (now) or a time in ms");
    if (limit == 0)
        limit = STOCK_AUDIT_LIMIT_DEFAULT;
    if (limit < 1 || limit > STOCK_AUDIT_LIMIT_MAX)
        return oms_error_set(err, OMS_INVALID, "limit: must be an integer from 1 to %d",
                             STOCK_AUDIT_LIMIT_MAX);
    struct oms_db_tx *tx = NULL;
    int rc = oms_db_begin(svc->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = stock_store_list_audit(tx, before_ms ? before_ms : INT64_MAX, limit, out, err);
    oms_db_rollback(tx); /* read only */
    if (rc != OMS_OK)
        stock_audit_list_free(out);
    return rc;
}
