#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/inbox.h"
#include "oms/retention.h"
#include "oms/outbox.h"
#include "oms/util.h"

static const char *const state_names[KITCHEN_STATE__COUNT] = {
#define KITCHEN_STATE_NAME(name, str) str,
    KITCHEN_STATE_MAP(KITCHEN_STATE_NAME)
#undef KITCHEN_STATE_NAME
};

const char *kitchen_state_str(kitchen_state s)
{
    return (unsigned)s < KITCHEN_STATE__COUNT ? state_names[s] : "unknown";
}

int kitchen_state_parse(const char *s)
{
    for (int i = 0; s && i < KITCHEN_STATE__COUNT; i++)
        if (strcmp(s, state_names[i]) == 0)
            return i;
    return -1;
}

void kitchen_ticket_init(kitchen_ticket *t)
{
    memset(t, 0, sizeof(*t));
}

void kitchen_ticket_free(kitchen_ticket *t)
{
    free(t->order_json);
    free(t->traceparent);
    kitchen_ticket_init(t);
}

/* seq is the arrival order: queued_at has millisecond resolution, so two orders paid
 * in the same millisecond would otherwise be cooked in an arbitrary order. The order
 * id stays the primary key because "one ticket per order" is the rule that keeps a
 * redelivered or repeated order.paid from being cooked twice. */
static const oms_db_migration tickets_v1 = {
    "kitchen_tickets_v1",
    "CREATE TABLE tickets("
    " order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, order_json TEXT NOT NULL,"
    " state TEXT NOT NULL, cooking_published INTEGER NOT NULL DEFAULT 0,"
    " seq BIGINT NOT NULL, traceparent TEXT,"
    " queued_at BIGINT NOT NULL, started_at BIGINT, ready_at BIGINT);"
    "CREATE INDEX tickets_by_state ON tickets(state, seq);"
    "CREATE INDEX tickets_by_seq ON tickets(seq);",
    NULL,
};

/* Which stages a ticket turned late in (KITCHEN_LATE_* bits), so each is counted once. */
static const oms_db_migration tickets_v2 = {
    "kitchen_tickets_v2",
    "ALTER TABLE tickets ADD COLUMN late_mask INTEGER NOT NULL DEFAULT 0;",
    NULL,
};

int kitchen_store_open(oms_db **db, const char *url, oms_error *err)
{
    const oms_db_migration migs[] = {tickets_v1, oms_outbox_migration, oms_inbox_migration,
                                     oms_retention_migration, tickets_v2};
    return oms_db_open(db, url, migs, OMS_NELEM(migs), err);
}

int kitchen_store_insert(oms_db_tx *tx, const kitchen_ticket *t, oms_error *err)
{
    oms_db_param p[] = {
        OMS_DB_S(t->order_id),
        OMS_DB_S(t->customer_id),
        OMS_DB_S(t->order_json),
        OMS_DB_S(kitchen_state_str(t->state)),
        OMS_DB_I(t->cooking_published),
        t->traceparent && t->traceparent[0] ? OMS_DB_S(t->traceparent) : OMS_DB_NULLP,
        OMS_DB_I(t->queued_at),
        t->started_at ? OMS_DB_I(t->started_at) : OMS_DB_NULLP,
        t->ready_at ? OMS_DB_I(t->ready_at) : OMS_DB_NULLP,
    };
    long long changes = 0;
    /* "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT. */
    int rc = oms_db_exec(tx,
                         "INSERT INTO tickets(order_id, customer_id, order_json, state,"
                         " cooking_published, traceparent, queued_at, started_at, ready_at, seq)"
                         " SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, COALESCE(MAX(seq), 0) + 1"
                         " FROM tickets WHERE true ON CONFLICT(order_id) DO NOTHING",
                         p, 9, &changes, err);
    if (rc != OMS_OK)
        return rc;
    if (changes == 0)
        return oms_error_set(err, OMS_DUPLICATE, "order %s already has a ticket", t->order_id);
    return OMS_OK;
}

#define TICKET_COLUMNS                                                                             \
    "order_id, customer_id, order_json, state, cooking_published, traceparent, queued_at,"         \
    " started_at, ready_at, late_mask"

/* Fills an initialised ticket from a row of TICKET_COLUMNS (strings copied: the row's
 * pointers die with the callback). */
static void ticket_from_row(const oms_db_row *row, kitchen_ticket *t)
{
    kitchen_ticket_init(t);
    snprintf(t->order_id, sizeof(t->order_id), "%s", oms_db_row_text(row, 0));
    snprintf(t->customer_id, sizeof(t->customer_id), "%s", oms_db_row_text(row, 1));
    const char *json = oms_db_row_text(row, 2);
    t->order_json = oms_strdup(json ? json : "");
    int st = kitchen_state_parse(oms_db_row_text(row, 3));
    t->state = st < 0 ? KITCHEN_QUEUED : (kitchen_state)st;
    t->cooking_published = oms_db_row_int(row, 4) != 0;
    t->traceparent = oms_strdup(oms_db_row_text(row, 5));
    t->queued_at = oms_db_row_int(row, 6);
    t->started_at = oms_db_row_int(row, 7);
    t->ready_at = oms_db_row_int(row, 8);
    t->late_mask = (int)oms_db_row_int(row, 9);
}

static int one_ticket_row(const oms_db_row *row, void *ud)
{
    ticket_from_row(row, ud);
    return OMS_OK;
}

/* Runs a query expected to return at most one ticket row. */
static int get_one(oms_db_tx *tx, const char *sql, const oms_db_param *p, int np,
                   kitchen_ticket *out, const char *what, oms_error *err)
{
    long long n = 0;
    kitchen_ticket_init(out);
    int rc = oms_db_query(tx, sql, p, np, one_ticket_row, out, &n, err);
    if (rc == OMS_OK && n == 0)
        rc = oms_error_set(err, OMS_NOTFOUND, "%s", what);
    if (rc != OMS_OK)
        kitchen_ticket_free(out);
    return rc;
}

int kitchen_store_oldest_queued(oms_db_tx *tx, kitchen_ticket *out, oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(kitchen_state_str(KITCHEN_QUEUED))};
    return get_one(tx,
                   "SELECT " TICKET_COLUMNS " FROM tickets WHERE state = $1 ORDER BY seq LIMIT 1",
                   p, 1, out, "no queued ticket", err);
}

/* UPDATE helper: moves order_id from state `from` to `to`, setting column `at`. */
static int move_state(oms_db_tx *tx, const char *sql, const char *order_id, kitchen_state from,
                      kitchen_state to, long long at, oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(order_id), OMS_DB_S(kitchen_state_str(from)),
                        OMS_DB_S(kitchen_state_str(to)), OMS_DB_I(at)};
    long long changes = 0;
    int rc = oms_db_exec(tx, sql, p, 4, &changes, err);
    if (rc == OMS_OK && changes == 0)
        rc = oms_error_set(err, OMS_CONFLICT, "ticket %s is not %s", order_id,
                           kitchen_state_str(from));
    return rc;
}

int kitchen_store_start_cooking(oms_db_tx *tx, const char *order_id, long long started_at,
                                oms_error *err)
{
    return move_state(tx,
                      "UPDATE tickets SET state = $3, started_at = $4, cooking_published = 1"
                      " WHERE order_id = $1 AND state = $2",
                      order_id, KITCHEN_QUEUED, KITCHEN_COOKING, started_at, err);
}

int kitchen_store_mark_ready(oms_db_tx *tx, const char *order_id, long long ready_at,
                             oms_error *err)
{
    return move_state(tx,
                      "UPDATE tickets SET state = $3, ready_at = $4"
                      " WHERE order_id = $1 AND state = $2",
                      order_id, KITCHEN_COOKING, KITCHEN_READY, ready_at, err);
}

int kitchen_store_requeue_cooking(oms_db_tx *tx, long long started_before, long long *n,
                                  oms_error *err)
{
    /* started_at is cleared: the ticket will start again when a station takes it.
     * cooking_published stays, so that restart publishes no second order.cooking. */
    oms_db_param p[] = {OMS_DB_S(kitchen_state_str(KITCHEN_COOKING)),
                        OMS_DB_S(kitchen_state_str(KITCHEN_QUEUED)), OMS_DB_I(started_before)};
    *n = 0;
    return oms_db_exec(tx,
                       "UPDATE tickets SET state = $2, started_at = NULL"
                       " WHERE state = $1 AND started_at < $3",
                       p, 3, n, err);
}

static int count_row(const oms_db_row *row, void *ud)
{
    *(long long *)ud = oms_db_row_int(row, 0);
    return OMS_OK;
}

int kitchen_store_count_queued(oms_db_tx *tx, long long *n, oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(kitchen_state_str(KITCHEN_QUEUED))};
    *n = 0;
    return oms_db_query(tx, "SELECT COUNT(*) FROM tickets WHERE state = $1", p, 1, count_row, n,
                        NULL, err);
}

int kitchen_store_get(oms_db_tx *tx, const char *order_id, kitchen_ticket *out, oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(order_id)};
    char what[OMS_ID_MAX + 40];
    snprintf(what, sizeof(what), "no ticket for order %s", order_id);
    return get_one(tx, "SELECT " TICKET_COLUMNS " FROM tickets WHERE order_id = $1", p, 1, out,
                   what, err);
}

typedef struct ticket_list {
    kitchen_ticket *v;
    size_t n;
} ticket_list;

static int list_row(const oms_db_row *row, void *ud)
{
    ticket_list *l = ud;
    l->v = oms_xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
    ticket_from_row(row, &l->v[l->n++]);
    return OMS_OK;
}

int kitchen_store_list(oms_db_tx *tx, int limit, kitchen_ticket **out, size_t *n, oms_error *err)
{
    ticket_list l = {NULL, 0};
    oms_db_param p[] = {OMS_DB_I(limit), OMS_DB_S(kitchen_state_str(KITCHEN_WITHDRAWN)),
                        OMS_DB_S(kitchen_state_str(KITCHEN_COLLECTED))};
    /* Handed over or withdrawn tickets are done: they would only push the newest
     * live ones out of the listing. */
    int rc = oms_db_query(tx,
                          "SELECT " TICKET_COLUMNS " FROM tickets WHERE state <> $2 AND state <> $3"
                          " ORDER BY seq DESC LIMIT $1",
                          p, 3, list_row, &l, NULL, err);
    if (rc != OMS_OK) {
        for (size_t i = 0; i < l.n; i++)
            kitchen_ticket_free(&l.v[i]);
        free(l.v);
        return rc;
    }
    *out = l.v;
    *n = l.n;
    return OMS_OK;
}

int kitchen_store_claim_message(oms_db_tx *tx, const char *queue, const char *message_id,
                                oms_error *err)
{
    return oms_inbox_claim(tx, queue, message_id, err);
}

int kitchen_store_add_event(oms_db_tx *tx, const char *exchange, const char *body, oms_error *err)
{
    return oms_outbox_add(tx, exchange, body, NULL, err);
}

int kitchen_store_close(oms_db_tx *tx, const kitchen_ticket *t, int *changed, oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(t->order_id), OMS_DB_S(kitchen_state_str(t->state)),
                        OMS_DB_S(kitchen_state_str(KITCHEN_WITHDRAWN)),
                        OMS_DB_S(kitchen_state_str(KITCHEN_COLLECTED))};
    long long n = 0;
    *changed = 0;
    int rc = oms_db_exec(tx,
                         "UPDATE tickets SET state = $2 WHERE order_id = $1"
                         " AND state <> $3 AND state <> $4",
                         p, 4, &n, err);
    if (rc != OMS_OK)
        return rc;
    if (n > 0) {
        *changed = 1;
        return OMS_OK;
    }
    rc = kitchen_store_insert(tx, t, err);
    if (rc == OMS_DUPLICATE) { /* already in a final state */
        oms_error_clear(err);
        return OMS_OK;
    }
    if (rc == OMS_OK)
        *changed = 1;
    return rc;
}

int kitchen_store_mark_late(oms_db_tx *tx, kitchen_state state, int bit, long long since_ms,
                            long long *n, oms_error *err)
{
    /* The column is chosen here from a fixed set, never from input. */
    const char *sql = state == KITCHEN_QUEUED
                          ? "UPDATE tickets SET late_mask = late_mask + $3 WHERE state = $1"
                            " AND queued_at <= $2 AND (late_mask & $3) = 0"
                      : state == KITCHEN_COOKING
                          ? "UPDATE tickets SET late_mask = late_mask + $3 WHERE state = $1"
                            " AND started_at <= $2 AND (late_mask & $3) = 0"
                          : "UPDATE tickets SET late_mask = late_mask + $3 WHERE state = $1"
                            " AND ready_at <= $2 AND (late_mask & $3) = 0";
    oms_db_param p[] = {OMS_DB_S(kitchen_state_str(state)), OMS_DB_I(since_ms), OMS_DB_I(bit)};
    return oms_db_exec(tx, sql, p, 3, n, err);
}

int kitchen_store_count_late(oms_db_tx *tx, long long from_ms, long long to_ms, long long *n,
                             oms_error *err)
{
    oms_db_param p[] = {OMS_DB_I(from_ms), OMS_DB_I(to_ms)};
    *n = 0;
    return oms_db_query(tx,
                        "SELECT COUNT(*) FROM tickets WHERE queued_at >= $1 AND queued_at < $2"
                        " AND late_mask <> 0",
                        p, 2, count_row, n, NULL, err);
}
