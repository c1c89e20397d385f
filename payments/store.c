#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "oms/inbox.h"
#include "oms/retention.h"
#include "oms/outbox.h"
#include "oms/util.h"

static const char *const status_names[] = {
#define PAYMENTS_SESSION_NAME(name, str) str,
    PAYMENTS_SESSION_STATUS_MAP(PAYMENTS_SESSION_NAME)
#undef PAYMENTS_SESSION_NAME
};
#define NSTATUS OMS_NELEM(status_names)

const char *payments_session_status_str(payments_session_status s)
{
    return (size_t)s < NSTATUS ? status_names[s] : "unknown";
}

static payments_session_status status_parse(const char *s)
{
    for (size_t i = 0; s && i < NSTATUS; i++)
        if (strcmp(status_names[i], s) == 0)
            return (payments_session_status)i;
    /* Only this module writes the column; an unknown value is treated as closed so it
     * can never be paid. */
    return PAYMENTS_SESSION_CANCELLED;
}

static const oms_db_migration sessions_v1 = {
    "checkout_sessions_v1",
    "CREATE TABLE checkout_sessions("
    " session_id TEXT PRIMARY KEY, order_id TEXT NOT NULL UNIQUE, customer_id TEXT NOT NULL,"
    " status TEXT NOT NULL, url TEXT NOT NULL, amount BIGINT NOT NULL, currency TEXT NOT NULL,"
    " order_json TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);",
    NULL,
};

/* The trace a session was opened in (see payments_row.traceparent). */
static const oms_db_migration sessions_v2 = {
    "checkout_sessions_v2",
    "ALTER TABLE checkout_sessions ADD COLUMN traceparent TEXT;",
    NULL,
};

/* The checkout deadline, the completed payment's intent (what a refund names), and
 * the refunds made. */
static const oms_db_migration sessions_v3 = {
    "checkout_sessions_v3_deadline_refunds",
    "ALTER TABLE checkout_sessions ADD COLUMN expires_at BIGINT;"
    "ALTER TABLE checkout_sessions ADD COLUMN payment_intent TEXT;"
    "CREATE INDEX checkout_sessions_due ON checkout_sessions(status, expires_at);"
    "CREATE TABLE refunds("
    " order_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, refund_id TEXT NOT NULL,"
    " reason TEXT NOT NULL, amount BIGINT NOT NULL, currency TEXT NOT NULL,"
    " created_at BIGINT NOT NULL);",
    NULL,
};

/* The pickup code of a paid order, unique within its day (the unique index is the
 * last word when two instances pick the same code at once). */
static const oms_db_migration sessions_v4 = {
    "checkout_sessions_v4_pickup_code",
    "ALTER TABLE checkout_sessions ADD COLUMN pickup_code TEXT;"
    "ALTER TABLE checkout_sessions ADD COLUMN pickup_day TEXT;"
    "CREATE UNIQUE INDEX checkout_sessions_pickup ON checkout_sessions(pickup_day, pickup_code);",
    NULL,
};

int payments_store_open(oms_db **db, const char *url, oms_error *err)
{
    const oms_db_migration migs[] = {sessions_v1, oms_outbox_migration,    oms_inbox_migration,
                                     sessions_v2, oms_retention_migration, sessions_v3,
                                     sessions_v4};
    return oms_db_open(db, url, migs, OMS_NELEM(migs), err);
}

void payments_row_free(payments_row *r)
{
    if (!r)
        return;
    free(r->session_id);
    free(r->order_id);
    free(r->customer_id);
    free(r->url);
    free(r->currency);
    free(r->order_json);
    free(r->traceparent);
    free(r->payment_intent);
    memset(r, 0, sizeof(*r));
}

int payments_store_insert(oms_db_tx *tx, const payments_row *r, oms_error *err)
{
    oms_db_param p[] = {
        OMS_DB_S(r->session_id),
        OMS_DB_S(r->order_id),
        OMS_DB_S(r->customer_id),
        OMS_DB_S(payments_session_status_str(r->status)),
        OMS_DB_S(r->url),
        OMS_DB_I(r->amount),
        OMS_DB_S(r->currency),
        OMS_DB_S(r->order_json),
        OMS_DB_I(r->created_ms),
        OMS_DB_I(r->updated_ms),
        r->traceparent && *r->traceparent ? OMS_DB_S(r->traceparent) : OMS_DB_NULLP,
        OMS_DB_I(r->expires_ms),
    };
    return oms_db_exec(tx,
                       "INSERT INTO checkout_sessions(session_id, order_id, customer_id, status,"
                       " url, amount, currency, order_json, created_at, updated_at, traceparent,"
                       " expires_at) VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
                       p, 12, NULL, err);
}

#define SESSION_COLUMNS                                                                            \
    "session_id, order_id, customer_id, status, url, amount, currency, order_json, created_at,"    \
    " updated_at, traceparent, expires_at, payment_intent"

static int row_cb(const oms_db_row *row, void *ud)
{
    payments_row *r = ud;
    payments_row_free(r); /* at most one row by key; stay leak-free regardless */
    r->session_id = oms_strdup(oms_db_row_text(row, 0));
    r->order_id = oms_strdup(oms_db_row_text(row, 1));
    r->customer_id = oms_strdup(oms_db_row_text(row, 2));
    r->status = status_parse(oms_db_row_text(row, 3));
    r->url = oms_strdup(oms_db_row_text(row, 4));
    r->amount = oms_db_row_int(row, 5);
    r->currency = oms_strdup(oms_db_row_text(row, 6));
    r->order_json = oms_strdup(oms_db_row_text(row, 7));
    r->created_ms = oms_db_row_int(row, 8);
    r->updated_ms = oms_db_row_int(row, 9);
    r->traceparent = oms_db_row_text(row, 10) ? oms_strdup(oms_db_row_text(row, 10)) : NULL;
    r->expires_ms = oms_db_row_int(row, 11); /* NULL reads as 0 */
    r->payment_intent = oms_db_row_text(row, 12) ? oms_strdup(oms_db_row_text(row, 12)) : NULL;
    return OMS_OK;
}

static int get_one(oms_db_tx *tx, const char *sql, const char *key, payments_row *out,
                   oms_error *err)
{
    memset(out, 0, sizeof(*out));
    oms_db_param p[] = {OMS_DB_S(key)};
    long long n = 0;
    int rc = oms_db_query(tx, sql, p, 1, row_cb, out, &n, err);
    if (rc == OMS_OK && n == 0)
        rc = oms_error_set(err, OMS_NOTFOUND, "checkout session for %s not found", key);
    if (rc != OMS_OK)
        payments_row_free(out);
    return rc;
}

int payments_store_get(oms_db_tx *tx, const char *session_id, payments_row *out, oms_error *err)
{
    return get_one(tx, "SELECT " SESSION_COLUMNS " FROM checkout_sessions WHERE session_id = $1",
                   session_id, out, err);
}

int payments_store_get_by_order(oms_db_tx *tx, const char *order_id, payments_row *out,
                                oms_error *err)
{
    return get_one(tx, "SELECT " SESSION_COLUMNS " FROM checkout_sessions WHERE order_id = $1",
                   order_id, out, err);
}

static int close_where(oms_db_tx *tx, const char *sql, const char *key, payments_session_status st,
                       long long now_ms, int *changed, oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(key), OMS_DB_S(payments_session_status_str(st)), OMS_DB_I(now_ms)};
    long long n = 0;
    int rc = oms_db_exec(tx, sql, p, 3, &n, err);
    *changed = rc == OMS_OK && n > 0;
    return rc;
}

int payments_store_close(oms_db_tx *tx, const char *session_id, payments_session_status st,
                         long long now_ms, int *changed, oms_error *err)
{
    return close_where(tx,
                       "UPDATE checkout_sessions SET status = $2, updated_at = $3"
                       " WHERE session_id = $1 AND status = 'open'",
                       session_id, st, now_ms, changed, err);
}

int payments_store_close_by_order(oms_db_tx *tx, const char *order_id, payments_session_status st,
                                  long long now_ms, int *changed, oms_error *err)
{
    return close_where(tx,
                       "UPDATE checkout_sessions SET status = $2, updated_at = $3"
                       " WHERE order_id = $1 AND status = 'open'",
                       order_id, st, now_ms, changed, err);
}

static int set_where(oms_db_tx *tx, const char *sql, const char *session_id,
                     const char *payment_intent, long long now_ms, int *changed, oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(session_id),
                        payment_intent && payment_intent[0] ? OMS_DB_S(payment_intent)
                                                            : OMS_DB_NULLP,
                        OMS_DB_I(now_ms)};
    long long n = 0;
    int rc = oms_db_exec(tx, sql, p, 3, &n, err);
    *changed = rc == OMS_OK && n > 0;
    return rc;
}

int payments_store_mark_paid(oms_db_tx *tx, const char *session_id, const char *payment_intent,
                             long long now_ms, int *changed, oms_error *err)
{
    return set_where(tx,
                     "UPDATE checkout_sessions SET status = 'paid', payment_intent = $2,"
                     " updated_at = $3 WHERE session_id = $1 AND status = 'open'",
                     session_id, payment_intent, now_ms, changed, err);
}

static int count_one(const oms_db_row *row, void *ud)
{
    *(long long *)ud = oms_db_row_int(row, 0);
    return OMS_OK;
}

/* Letters and digits nobody confuses when read aloud or off a screen (no 0/O, 1/I/L,
 * 2/Z, 5/S, 8/B): 25 symbols, so 4 of them give 390,625 codes a day. */
static const char code_symbols[] = "ACDEFGHJKMNPQRTUVWXY34679";

int payments_store_assign_pickup(oms_db_tx *tx, const char *session_id, long long now_ms,
                                 char *code, oms_error *err)
{
    char day[11];
    time_t t = (time_t)(now_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(day, sizeof(day), "%Y-%m-%d", &tm);
    for (int attempt = 0; attempt < 64; attempt++) {
        /* A crowded day (half the 4-symbol codes taken) moves on to 5 and 6. */
        size_t len = attempt < 32 ? 4 : attempt < 48 ? 5 : 6;
        unsigned char r[8];
        if (oms_random_bytes(r, len) != OMS_OK)
            return oms_error_set(err, OMS_ERR, "no randomness for a pickup code");
        int biased = 0;
        for (size_t i = 0; i < len; i++) { /* bytes under 250 = 10 x 25 map evenly */
            biased |= r[i] >= 250;
            code[i] = code_symbols[r[i] % 25];
        }
        code[len] = '\0';
        if (biased)
            continue;
        long long taken = 0;
        oms_db_param q[] = {OMS_DB_S(day), OMS_DB_S(code)};
        int rc = oms_db_query(tx,
                              "SELECT COUNT(*) FROM checkout_sessions"
                              " WHERE pickup_day = $1 AND pickup_code = $2",
                              q, 2, count_one, &taken, NULL, err);
        if (rc != OMS_OK)
            return rc;
        if (taken)
            continue;
        oms_db_param p[] = {OMS_DB_S(session_id), OMS_DB_S(code), OMS_DB_S(day)};
        return oms_db_exec(tx,
                           "UPDATE checkout_sessions SET pickup_code = $2, pickup_day = $3"
                           " WHERE session_id = $1",
                           p, 3, NULL, err);
    }
    return oms_error_set(err, OMS_AGAIN, "no free pickup code found for %s", day);
}

int payments_store_mark_refunded(oms_db_tx *tx, const char *session_id, const char *payment_intent,
                                 long long now_ms, int *changed, oms_error *err)
{
    return set_where(tx,
                     "UPDATE checkout_sessions SET status = 'refunded',"
                     " payment_intent = COALESCE($2, payment_intent), updated_at = $3"
                     " WHERE session_id = $1 AND status <> 'refunded'",
                     session_id, payment_intent, now_ms, changed, err);
}

typedef struct due_list {
    char (*ids)[PAYMENTS_ORDER_ID_SIZE];
    size_t max, n;
} due_list;

static int due_row(const oms_db_row *row, void *ud)
{
    due_list *l = ud;
    if (l->n < l->max)
        snprintf(l->ids[l->n++], PAYMENTS_ORDER_ID_SIZE, "%s", oms_db_row_text(row, 0));
    return OMS_OK;
}

int payments_store_list_due(oms_db_tx *tx, long long now_ms, char (*ids)[PAYMENTS_ORDER_ID_SIZE],
                            size_t max, size_t *n, oms_error *err)
{
    due_list l = {ids, max, 0};
    oms_db_param p[] = {OMS_DB_I(now_ms), OMS_DB_I((long long)max)};
    int rc = oms_db_query(tx,
                          "SELECT order_id FROM checkout_sessions WHERE status = 'open'"
                          " AND expires_at IS NOT NULL AND expires_at <= $1"
                          " ORDER BY expires_at LIMIT $2",
                          p, 2, due_row, &l, NULL, err);
    *n = l.n;
    return rc;
}

int payments_store_refund_insert(oms_db_tx *tx, const payments_refund_row *r, oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(r->order_id),  OMS_DB_S(r->session_id), OMS_DB_S(r->refund_id),
                        OMS_DB_S(r->reason),    OMS_DB_I(r->amount),     OMS_DB_S(r->currency),
                        OMS_DB_I(r->created_ms)};
    return oms_db_exec(tx,
                       "INSERT INTO refunds(order_id, session_id, refund_id, reason, amount,"
                       " currency, created_at) VALUES($1,$2,$3,$4,$5,$6,$7)",
                       p, 7, NULL, err);
}

static int exists_row(const oms_db_row *row, void *ud)
{
    (void)row;
    *(int *)ud = 1;
    return OMS_OK;
}

int payments_store_refund_exists(oms_db_tx *tx, const char *order_id, int *found, oms_error *err)
{
    oms_db_param p[] = {OMS_DB_S(order_id)};
    *found = 0;
    return oms_db_query(tx, "SELECT 1 FROM refunds WHERE order_id = $1", p, 1, exists_row, found,
                        NULL, err);
}
