/* Transactional outbox and its relay (oms/outbox.h, docs/outbox-inbox.md).
 *
 * The relay never holds a database transaction while it talks to the broker: it reads
 * a batch of unsent rows in one short transaction, publishes them with confirms, and
 * marks exactly the confirmed rows sent in a second transaction. A crash between the
 * broker's ack and the mark republishes those rows later; consumers dedupe by
 * message id, so at-least-once is enough.
 *
 * Rows the broker refuses (returned as unroutable because no queue is bound yet, or
 * nacked) stay unsent. So that a few of them cannot starve newer rows, the relay moves
 * a cursor past a refused batch and only comes back to the start of the table once it
 * has run out of newer rows, after a backoff. */
#include "oms/outbox.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "oms/log.h"
#include "oms/metrics.h"
#include "oms/trace.h"
#include "oms/tracer.h"
#include "oms/util.h"

#define RELAY_BATCH 200
#define RELAY_IDLE_WAIT_MS 500 /* also picks up rows written by other processes */
#define RELAY_BACKOFF_MIN_MS 100
#define RELAY_BACKOFF_MAX_MS 2000
#define RELAY_CONFIRM_TIMEOUT_MS 10000
#define RELAY_GAUGE_EVERY_MS 1000 /* backlog gauges refreshed at most this often */
#define RELAY_PRUNE_MAX_EVERY_MS 60000
#define RELAY_PRUNE_MIN_EVERY_MS 1000

const oms_db_migration oms_outbox_migration = {
    "outbox_1",
    "CREATE TABLE IF NOT EXISTS outbox ("
    " id INTEGER PRIMARY KEY,"
    " message_id TEXT UNIQUE NOT NULL,"
    " exchange TEXT NOT NULL,"
    " body TEXT NOT NULL,"
    " traceparent TEXT,"
    " created_at BIGINT NOT NULL,"
    " sent_at BIGINT);"
    "CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (sent_at, id);",
    "CREATE TABLE IF NOT EXISTS outbox ("
    " id BIGSERIAL PRIMARY KEY,"
    " message_id TEXT UNIQUE NOT NULL,"
    " exchange TEXT NOT NULL,"
    " body TEXT NOT NULL,"
    " traceparent TEXT,"
    " created_at BIGINT NOT NULL,"
    " sent_at BIGINT);"
    "CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (sent_at, id);",
};

int oms_outbox_add(oms_db_tx *tx, const char *exchange, const char *body, char *message_id_out,
                   oms_error *err)
{
    char mid[33];
    char tp[OMS_TRACEPARENT_LEN + 1];
    if (!tx || !exchange || !*exchange || !body)
        return oms_error_set(err, OMS_INVALID, "outbox: exchange and body are required");
    if (oms_random_hex(mid, 16) != OMS_OK)
        return oms_error_set(err, OMS_ERR, "outbox: no randomness for a message id");
    oms_trace_current_header(tp);
    oms_db_param params[] = {
        OMS_DB_S(mid),          OMS_DB_S(exchange),
        OMS_DB_S(body),         *tp ? OMS_DB_S(tp) : OMS_DB_NULLP,
        OMS_DB_I(oms_now_ms()),
    };
    int rc = oms_db_exec(tx,
                         "INSERT INTO outbox (message_id, exchange, body, traceparent, created_at)"
                         " VALUES ($1, $2, $3, $4, $5)",
                         params, 5, NULL, err);
    if (rc != OMS_OK)
        return rc;
    if (message_id_out)
        memcpy(message_id_out, mid, sizeof(mid));
    return OMS_OK;
}

typedef struct backlog_acc {
    long long rows;
    long long oldest; /* created_at, 0 when none */
} backlog_acc;

static int backlog_row(const oms_db_row *row, void *ud)
{
    backlog_acc *a = ud;
    a->rows = oms_db_row_int(row, 0);
    a->oldest = oms_db_row_isnull(row, 1) ? 0 : oms_db_row_int(row, 1);
    return OMS_OK;
}

int oms_outbox_backlog(oms_db *db, long long *rows, long long *oldest_age_ms, oms_error *err)
{
    oms_db_tx *tx = NULL;
    backlog_acc a = {0, 0};
    int rc = oms_db_begin(db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = oms_db_query(tx, "SELECT count(*), min(created_at) FROM outbox WHERE sent_at IS NULL",
                      NULL, 0, backlog_row, &a, NULL, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        return rc;
    }
    rc = oms_db_commit(tx, err);
    if (rc != OMS_OK)
        return rc;
    if (rows)
        *rows = a.rows;
    if (oldest_age_ms) {
        long long age = a.oldest ? (long long)oms_now_ms() - a.oldest : 0;
        *oldest_age_ms = age > 0 ? age : 0;
    }
    return OMS_OK;
}

/* ---- relay ------------------------------------------------------------------------- */

struct oms_outbox_relay {
    oms_db *db;
    oms_amqp_publisher *pub; /* used by the relay thread only */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int notified;       /* under mu: a commit happened since the relay last looked */
    oms_retention keep; /* under mu */
    atomic_int stop;
};

/* One unsent row, copied out of the read transaction (owned by the batch). */
typedef struct outbox_row {
    long long id;
    char *message_id;
    char *exchange;
    char *body;
    char *traceparent; /* NULL when none */
    oms_span *span;    /* the publish span while the row is in flight (relay_pass) */
    char span_tp[OMS_TRACEPARENT_LEN + 1]; /* its context: what the message carries */
} outbox_row;

typedef struct outbox_batch {
    outbox_row rows[RELAY_BATCH];
    size_t n;
} outbox_batch;

static void batch_clear(outbox_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->rows[i].message_id);
        free(b->rows[i].exchange);
        free(b->rows[i].body);
        free(b->rows[i].traceparent);
    }
    b->n = 0;
}

static int batch_row(const oms_db_row *row, void *ud)
{
    outbox_batch *b = ud;
    if (b->n >= RELAY_BATCH)
        return OMS_OK; /* LIMIT guarantees this never happens; stay bounded anyway */
    outbox_row *r = &b->rows[b->n++];
    const char *tp = oms_db_row_text(row, 4);
    r->id = oms_db_row_int(row, 0);
    r->message_id = oms_strdup(oms_db_row_text(row, 1) ? oms_db_row_text(row, 1) : "");
    r->exchange = oms_strdup(oms_db_row_text(row, 2) ? oms_db_row_text(row, 2) : "");
    r->body = oms_strdup(oms_db_row_text(row, 3) ? oms_db_row_text(row, 3) : "");
    r->traceparent = tp && *tp ? oms_strdup(tp) : NULL;
    return OMS_OK;
}

#define RELAY_FETCH_SQL                                                                            \
    "SELECT id, message_id, exchange, body, traceparent FROM outbox"                               \
    " WHERE sent_at IS NULL AND id > $1 ORDER BY id LIMIT $2"

/* Reads up to RELAY_BATCH unsent rows with id > after, in id order. Where several
 * relays (instances) share the database, the rows are claimed FOR UPDATE SKIP LOCKED
 * and *held keeps that transaction open until relay_mark or a rollback, so two relays
 * never publish the same row at the same time; with SQLite (one writer) *held is NULL
 * and the read transaction ends here, as the design note above says. */
static int relay_fetch(oms_outbox_relay *r, long long after, outbox_batch *b, oms_db_tx **held,
                       oms_error *err)
{
    oms_db_tx *tx = NULL;
    oms_db_param params[] = {OMS_DB_I(after), OMS_DB_I(RELAY_BATCH)};
    int claim = oms_db_locks_rows(r->db);
    *held = NULL;
    int rc = oms_db_begin(r->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = oms_db_query(tx, claim ? RELAY_FETCH_SQL " FOR UPDATE SKIP LOCKED" : RELAY_FETCH_SQL,
                      params, 2, batch_row, b, NULL, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        batch_clear(b);
        return rc;
    }
    if (claim) {
        *held = tx;
        return OMS_OK;
    }
    rc = oms_db_commit(tx, err);
    if (rc != OMS_OK)
        batch_clear(b);
    return rc;
}

/* Marks the confirmed rows sent, all in one transaction: held (the claiming one,
 * always ended here) or a new one. */
static int relay_mark(oms_outbox_relay *r, const outbox_batch *b, const int *confirmed,
                      oms_db_tx *held, oms_error *err)
{
    oms_db_tx *tx = held;
    long long now = oms_now_ms();
    int rc = tx ? OMS_OK : oms_db_begin(r->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    for (size_t i = 0; i < b->n; i++) {
        if (!confirmed[i])
            continue;
        oms_db_param params[] = {OMS_DB_I(now), OMS_DB_I(b->rows[i].id)};
        rc = oms_db_exec(tx, "UPDATE outbox SET sent_at = $1 WHERE id = $2", params, 2, NULL, err);
        if (rc != OMS_OK) {
            oms_db_rollback(tx);
            return rc;
        }
    }
    return oms_db_commit(tx, err);
}

/* events_published_total{exchange=...} += confirmed rows, one series per exchange. */
static void relay_count(const outbox_batch *b, const int *confirmed)
{
    unsigned char done[RELAY_BATCH] = {0};
    for (size_t i = 0; i < b->n; i++) {
        if (!confirmed[i] || done[i])
            continue;
        double count = 0;
        for (size_t j = i; j < b->n; j++) {
            if (confirmed[j] && !done[j] && strcmp(b->rows[j].exchange, b->rows[i].exchange) == 0) {
                done[j] = 1;
                count++;
            }
        }
        char labels[320];
        labels[0] = '\0';
        oms_metrics_label(labels, sizeof(labels), "exchange", b->rows[i].exchange);
        oms_metrics_counter_add("events_published_total",
                                "Events published to RabbitMQ and confirmed by the broker", labels,
                                count);
    }
}

/* Waits up to ms. wake_on_notify: return early when a commit was announced (the idle
 * wait); a backoff only ends early for stop. */
static void relay_wait(oms_outbox_relay *r, int ms, int wake_on_notify)
{
    struct timespec until;
    oms_mono_deadline_ms(ms, &until);
    oms_mutex_lock(&r->mu);
    while (!atomic_load(&r->stop) && !(wake_on_notify && r->notified)) {
        if (oms_cond_timedwait(&r->cv, &r->mu, &until) == ETIMEDOUT)
            break;
    }
    if (wake_on_notify)
        r->notified = 0;
    oms_mutex_unlock(&r->mu);
}

/* The PRODUCER span of one row, "<exchange> publish": a child of the context stored
 * with the row (the request or event that wrote it), so the event stays in the
 * order's trace, and the context the message carries, so its consumers become its
 * children. Detached: the relay publishes a whole batch at once, one span per row. */
static void relay_span_start(outbox_row *row)
{
    char name[320];
    oms_trace_ctx parent;
    snprintf(name, sizeof(name), "%s publish", row->exchange);
    int has_parent = row->traceparent && oms_traceparent_parse(row->traceparent, &parent) == OMS_OK;
    row->span = oms_span_start_detached(name, OMS_SPAN_PRODUCER, has_parent ? &parent : NULL);
    oms_span_set_str(row->span, "messaging.system", "rabbitmq");
    oms_span_set_str(row->span, "messaging.operation.type", "publish");
    oms_span_set_str(row->span, "messaging.destination.name", row->exchange);
    oms_span_set_str(row->span, "messaging.message.id", row->message_id);
    oms_span_set_int(row->span, "messaging.message.body.size", (long long)strlen(row->body));
    oms_traceparent_format(oms_span_context(row->span), row->span_tp);
}

/* Ends a row's publish span: OK once the broker confirmed it, else the reason. */
static void relay_span_end(outbox_row *row, int confirmed, const oms_error *err)
{
    if (confirmed)
        oms_span_set_status(row->span, OMS_SPAN_OK, NULL);
    else
        oms_span_set_status(row->span, OMS_SPAN_ERROR,
                            err && err->msg[0] ? err->msg : "not confirmed by the broker");
    oms_span_end(row->span);
    row->span = NULL;
}

/* outbox_backlog (unsent rows) and outbox_oldest_age_seconds, set from the relay
 * thread rather than computed at scrape time: a gauge callback runs under the metrics
 * lock and must not wait for the database. */
static void relay_gauges(oms_outbox_relay *r)
{
    long long rows = 0, age_ms = 0;
    oms_error err;
    oms_error_clear(&err);
    if (oms_outbox_backlog(r->db, &rows, &age_ms, &err) != OMS_OK)
        return; /* the relay logs database trouble itself; the gauges just stay stale */
    oms_metrics_gauge_set("outbox_backlog", "Outbox rows not yet confirmed by the broker", NULL,
                          (double)rows);
    oms_metrics_gauge_set("outbox_oldest_age_seconds",
                          "Age of the oldest unsent outbox row (0 when none)", NULL,
                          (double)age_ms / 1000.0);
}

/* One pruning pass (oms/retention.h). Returns when the next is due, in ms from now:
 * soon when rows were left over, else every half retention within the bounds. */
static int64_t relay_prune(oms_outbox_relay *r)
{
    oms_mutex_lock(&r->mu);
    oms_retention keep = r->keep;
    oms_mutex_unlock(&r->mu);
    int64_t every = RELAY_PRUNE_MAX_EVERY_MS;
    if (keep.outbox_keep_ms > 0 && keep.outbox_keep_ms / 2 < every)
        every = keep.outbox_keep_ms / 2;
    if (keep.inbox_keep_ms > 0 && keep.inbox_keep_ms / 2 < every)
        every = keep.inbox_keep_ms / 2;
    if (every < RELAY_PRUNE_MIN_EVERY_MS)
        every = RELAY_PRUNE_MIN_EVERY_MS;
    if (keep.outbox_keep_ms <= 0 && keep.inbox_keep_ms <= 0)
        return RELAY_PRUNE_MIN_EVERY_MS; /* nothing to do; look again for a setting soon */
    oms_retention_counts c;
    oms_error err;
    oms_error_clear(&err);
    if (oms_retention_prune(r->db, &keep, oms_now_ms(), &c, &err) != OMS_OK) {
        oms_log_warn("outbox relay: pruning old rows failed; trying again later", "error", err.msg);
        return every;
    }
    if (c.outbox || c.inbox) {
        oms_metrics_counter_add("retention_pruned_total", "Outbox and inbox rows deleted by age",
                                "table=\"outbox\"", (double)c.outbox);
        oms_metrics_counter_add("retention_pruned_total", "Outbox and inbox rows deleted by age",
                                "table=\"inbox\"", (double)c.inbox);
        char o[24], i[24];
        snprintf(o, sizeof(o), "%lld", c.outbox);
        snprintf(i, sizeof(i), "%lld", c.inbox);
        oms_log_info("pruned old outbox and inbox rows", "outbox", o, "inbox", i);
    }
    return c.more ? 0 : every;
}

void oms_outbox_relay_set_retention(oms_outbox_relay *r, const oms_retention *keep)
{
    if (!r || !keep)
        return;
    oms_mutex_lock(&r->mu);
    r->keep = *keep;
    oms_mutex_unlock(&r->mu);
}

/* Fetches and publishes one batch of unsent rows after the cursor. Returns the
 * number of rows read (>= 0), or a negative status when nothing could be published
 * (database error, broker unavailable). *refused gets 1 when the broker refused some
 * rows of the batch (unroutable or nacked); *last_id the batch's highest id. */
static int relay_pass(oms_outbox_relay *r, long long cursor, int *refused, long long *last_id,
                      oms_error *err)
{
    outbox_batch *b = oms_xcalloc(1, sizeof(*b));
    oms_amqp_msg msgs[RELAY_BATCH];
    int confirmed[RELAY_BATCH];
    oms_db_tx *held = NULL; /* the claim on the batch's rows, where rows are locked */
    *refused = 0;
    int rc = relay_fetch(r, cursor, b, &held, err);
    if (rc != OMS_OK)
        goto out;
    if (b->n == 0) {
        rc = 0;
        goto out;
    }
    for (size_t i = 0; i < b->n; i++) {
        outbox_row *row = &b->rows[i];
        relay_span_start(row);
        msgs[i] = (oms_amqp_msg){row->exchange,    "", row->message_id, row->span_tp, 0, row->body,
                                 strlen(row->body)};
    }
    int prc = oms_amqp_publish(r->pub, msgs, b->n, confirmed, RELAY_CONFIRM_TIMEOUT_MS, err);
    for (size_t i = 0; i < b->n; i++)
        relay_span_end(&b->rows[i], confirmed[i], err);
    /* Whatever was confirmed is marked, whatever the overall outcome. */
    int any = 0;
    for (size_t i = 0; i < b->n; i++)
        any |= confirmed[i];
    if (any) {
        oms_error merr;
        oms_error_clear(&merr);
        int mrc = relay_mark(r, b, confirmed, held, &merr);
        held = NULL; /* relay_mark ended it */
        if (mrc != OMS_OK)
            oms_log_warn("outbox: cannot mark published rows sent; they will be published again",
                         "error", merr.msg);
        relay_count(b, confirmed);
    }
    if (prc == OMS_UNAVAILABLE) {
        rc = OMS_UNAVAILABLE; /* the same rows are retried once the broker is back */
        goto out;
    }
    *refused = prc != OMS_OK;
    *last_id = b->rows[b->n - 1].id;
    rc = (int)b->n;
out:
    oms_db_rollback(held); /* unconfirmed rows go back to the pool; NULL: no-op */
    batch_clear(b);
    free(b);
    return rc;
}

static int grow(int ms, int max)
{
    return ms * 2 > max ? max : ms * 2;
}

/* The relay loop. Normally the cursor is 0 and every pass takes the oldest unsent
 * rows. After a refusal the cursor moves past the refused batch so newer rows keep
 * flowing; once nothing newer is left, and a growing delay has passed, the cursor goes
 * back to 0 and the refused rows are tried again. */
static void *relay_thread(void *arg)
{
    oms_outbox_relay *r = arg;
    long long cursor = 0;
    oms_thread_background();
    int backoff = RELAY_BACKOFF_MIN_MS;        /* broker or database unavailable */
    int refuse_backoff = RELAY_BACKOFF_MIN_MS; /* before retrying refused rows */
    int64_t retry_refused_at = 0;
    int failing = 0, refusing = 0; /* log once per episode */
    int64_t gauges_at = 0;
    int64_t prune_at = 0;

    for (;;) {
        int stopping = atomic_load(&r->stop);
        if (!stopping && oms_mono_ms() >= gauges_at) {
            relay_gauges(r);
            gauges_at = oms_mono_ms() + RELAY_GAUGE_EVERY_MS;
        }
        if (!stopping && oms_mono_ms() >= prune_at)
            prune_at = oms_mono_ms() + relay_prune(r);
        /* On stop, publish what is waiting only if the broker is reachable right now. */
        if (stopping && !oms_amqp_publisher_connected(r->pub))
            break;
        oms_error err;
        oms_error_clear(&err);
        int refused = 0;
        long long last_id = 0;
        int n = relay_pass(r, cursor, &refused, &last_id, &err);
        if (stopping)
            break;
        if (n < 0) {
            if (!failing)
                oms_log_warn("outbox relay: publishing paused", "error", err.msg);
            failing = 1;
            relay_wait(r, backoff, 0);
            backoff = grow(backoff, RELAY_BACKOFF_MAX_MS);
            continue;
        }
        if (failing)
            oms_log_warn("outbox relay: publishing resumed");
        failing = 0;
        backoff = RELAY_BACKOFF_MIN_MS;

        if (refused) {
            if (!refusing)
                oms_log_warn("outbox relay: broker refused events; they stay in the outbox",
                             "error", err.msg);
            refusing = 1;
            if (cursor == 0) {
                retry_refused_at = oms_mono_ms() + refuse_backoff;
                refuse_backoff = grow(refuse_backoff, RELAY_BACKOFF_MAX_MS);
            }
            cursor = last_id;
            continue;
        }
        if (cursor == 0 && n > 0) {
            /* The oldest rows went through: nothing is being held back any more. */
            refusing = 0;
            refuse_backoff = RELAY_BACKOFF_MIN_MS;
        }
        if (n >= RELAY_BATCH)
            continue; /* a full batch: more is surely waiting */
        /* A short batch took everything committed before its read; a commit since then
         * has set `notified`, so the wait below returns at once. Not looking again
         * straight away saves an empty read transaction per pass. */
        if (cursor > 0) {
            int64_t left = retry_refused_at - oms_mono_ms();
            if (left <= 0) {
                cursor = 0;
                continue;
            }
            relay_wait(r, left < RELAY_IDLE_WAIT_MS ? (int)left : RELAY_IDLE_WAIT_MS, 1);
            continue;
        }
        relay_wait(r, RELAY_IDLE_WAIT_MS, 1);
    }
    return NULL;
}

int oms_outbox_relay_start(oms_outbox_relay **out, oms_db *db, const oms_amqp_config *cfg,
                           oms_error *err)
{
    if (!out || !db)
        return oms_error_set(err, OMS_INVALID, "outbox relay: database required");
    oms_outbox_relay *r = oms_xcalloc(1, sizeof(*r));
    int e = oms_cond_init_monotonic(&r->cv); /* immune to clock steps */
    if (e != 0) {
        free(r);
        return oms_error_set(err, OMS_ERR, "outbox relay: cond init: %s", strerror(e));
    }
    e = pthread_mutex_init(&r->mu, NULL);
    if (e != 0) {
        pthread_cond_destroy(&r->cv);
        free(r);
        return oms_error_set(err, OMS_ERR, "outbox relay: mutex init: %s", strerror(e));
    }
    r->db = db;
    atomic_init(&r->stop, 0);
    (void)oms_amqp_publisher_new(&r->pub, cfg); /* cannot fail: aborts on OOM */
    e = pthread_create(&r->thread, NULL, relay_thread, r);
    if (e != 0) {
        oms_amqp_publisher_free(r->pub);
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
        free(r);
        return oms_error_set(err, OMS_ERR, "outbox relay: pthread_create: %s", strerror(e));
    }
    *out = r;
    return OMS_OK;
}

void oms_outbox_relay_wake(void *relay)
{
    oms_outbox_relay_notify(relay);
}

void oms_outbox_relay_notify(oms_outbox_relay *r)
{
    if (!r)
        return;
    oms_mutex_lock(&r->mu);
    r->notified = 1;
    oms_cond_signal(&r->cv);
    oms_mutex_unlock(&r->mu);
}

void oms_outbox_relay_stop(oms_outbox_relay *r)
{
    if (!r)
        return;
    oms_mutex_lock(&r->mu);
    atomic_store(&r->stop, 1);
    oms_cond_signal(&r->cv);
    oms_mutex_unlock(&r->mu);
    int e = pthread_join(r->thread, NULL);
    if (e != 0)
        oms_log_errorf("outbox relay: pthread_join: %s", strerror(e));
    oms_amqp_publisher_free(r->pub);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}
