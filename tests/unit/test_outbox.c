/* common/outbox.c with a real SQLite database (temp dir) and a real RabbitMQ node
 * (rmq_helper.h): committed rows are published exactly once and marked sent, rolled
 * back rows never, and rows written while the broker is down wait and then go out in
 * order. Every wait polls with a deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <pthread.h>

#include "oms/amqp.h"
#include "oms/db.h"
#include "oms/log.h"
#include "oms/metrics.h"
#include "oms/outbox.h"
#include "oms/trace.h"
#include "oms/util.h"
#include "rmq_helper.h"

static oms_amqp_config cfg;
static char dbdir[PATH_MAX];

#define MAX_SEEN 512

typedef struct collector {
    pthread_mutex_t mu;
    int n;
    char ids[MAX_SEEN][40];
    char tps[MAX_SEEN][64];
} collector;

static int on_delivery(const oms_amqp_delivery *d, void *ud)
{
    collector *c = ud;
    oms_mutex_lock(&c->mu);
    if (c->n < MAX_SEEN) {
        snprintf(c->ids[c->n], sizeof(c->ids[0]), "%s", d->message_id);
        snprintf(c->tps[c->n], sizeof(c->tps[0]), "%s", d->traceparent);
        c->n++;
    }
    oms_mutex_unlock(&c->mu);
    return OMS_OK;
}

static collector *collector_new(void)
{
    collector *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

/* Index of id in what the consumer saw, -1 when absent; *count gets how many times. */
static int seen_at(collector *c, const char *id, int *count)
{
    int at = -1;
    *count = 0;
    oms_mutex_lock(&c->mu);
    for (int i = 0; i < c->n; i++) {
        if (strcmp(c->ids[i], id) == 0) {
            if (at < 0)
                at = i;
            (*count)++;
        }
    }
    oms_mutex_unlock(&c->mu);
    return at;
}

typedef struct seen_q {
    collector *c;
    const char *id;
} seen_q;

static int has_seen(void *ud)
{
    seen_q *q = ud;
    int count;
    return seen_at(q->c, q->id, &count) >= 0;
}

static int consumer_up(void *ud)
{
    return oms_amqp_consumer_connected(ud);
}

static oms_amqp_consumer *start_consumer(const char *queue, const char *exchange, collector *c)
{
    const char *exs[] = {exchange};
    oms_amqp_consumer_config cc = {.queue = queue,
                                   .exchanges = exs,
                                   .nexchanges = 1,
                                   .prefetch = 16,
                                   .max_retries = 3,
                                   .retry_delay_ms = 50,
                                   .fn = on_delivery,
                                   .ud = c};
    oms_amqp_consumer *cons = NULL;
    oms_error err;
    assert_int_equal(oms_amqp_consumer_start(&cons, &cfg, &cc, &err), OMS_OK);
    assert_true(rmq_wait_for(consumer_up, cons, 15000));
    return cons;
}

static oms_db *open_db(const char *name)
{
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s.sqlite", dbdir, name) >= sizeof(path))
        fail_msg("database path too long");
    oms_db *db = NULL;
    oms_error err;
    oms_error_clear(&err);
    int rc = oms_db_open(&db, path, &oms_outbox_migration, 1, &err);
    if (rc != OMS_OK)
        fail_msg("oms_db_open %s: %s", path, err.msg);
    return db;
}

/* Adds n rows to exchange in one transaction, committed or rolled back. */
static void add_rows(oms_db *db, const char *exchange, int n, char ids[][33], int commit)
{
    oms_db_tx *tx = NULL;
    oms_error err;
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    for (int i = 0; i < n; i++) {
        char body[64];
        snprintf(body, sizeof(body), "{\"i\":%d}", i);
        int rc = oms_outbox_add(tx, exchange, body, ids[i], &err);
        if (rc != OMS_OK)
            fail_msg("oms_outbox_add: %s", err.msg);
        assert_int_equal(strlen(ids[i]), 32);
    }
    if (commit)
        assert_int_equal(oms_db_commit(tx, &err), OMS_OK);
    else
        oms_db_rollback(tx);
}

static int count_row(const oms_db_row *row, void *ud)
{
    *(long long *)ud = oms_db_row_int(row, 0);
    return OMS_OK;
}

static long long count_where(oms_db *db, const char *sql)
{
    oms_db_tx *tx = NULL;
    oms_error err;
    long long v = -1;
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    assert_int_equal(oms_db_query(tx, sql, NULL, 0, count_row, &v, NULL, &err), OMS_OK);
    assert_int_equal(oms_db_commit(tx, &err), OMS_OK);
    return v;
}

typedef struct backlog_q {
    oms_db *db;
    long long rows;
    long long age;
    long long want_rows;
    long long min_age;
} backlog_q;

static int backlog_is(void *ud)
{
    backlog_q *q = ud;
    oms_error err;
    if (oms_outbox_backlog(q->db, &q->rows, &q->age, &err) != OMS_OK)
        return 0;
    return q->rows == q->want_rows && q->age >= q->min_age;
}

static int group_setup(void **state)
{
    oms_log_init("test_outbox", OMS_LOG_WARN, 1);
    if (rmq_start(&cfg) != 0)
        return -1;
    /* The database lives beside the broker's state, removed with it. */
    if ((size_t)snprintf(dbdir, sizeof(dbdir), "%s/db", rmq_g.tmp) >= sizeof(dbdir))
        return -1;
    return mkdir(dbdir, 0700) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    rmq_finish();
    return 0;
}

/* Committed rows go out once each, in order, carrying the writer's traceparent, and
 * are marked sent; the metric counts them. */
static void test_committed_published_once(void **state)
{
    collector *c = collector_new();
    oms_amqp_consumer *cons = start_consumer("ob1.q", "ob1.ex", c);
    oms_db *db = open_db("once");
    oms_outbox_relay *relay = NULL;
    oms_error err;
    assert_int_equal(oms_outbox_relay_start(&relay, db, &cfg, &err), OMS_OK);

    enum { N = 50 };
    static char ids[N][33], last[1][33];
    oms_trace_ctx t;
    char tp[OMS_TRACEPARENT_LEN + 1];
    oms_trace_new_root(&t);
    oms_trace_set_current(&t);
    oms_traceparent_format(&t, tp);
    add_rows(db, "ob1.ex", N, ids, 1);
    oms_trace_clear_current();
    oms_outbox_relay_notify(relay);

    seen_q q = {c, ids[N - 1]};
    assert_true(rmq_wait_for(has_seen, &q, 15000));
    /* Everything before the sentinel was sent and marked before the relay read it, so
     * a duplicate of any earlier row would have arrived before it. */
    add_rows(db, "ob1.ex", 1, last, 1);
    oms_outbox_relay_notify(relay);
    q.id = last[0];
    assert_true(rmq_wait_for(has_seen, &q, 15000));

    for (int i = 0; i < N; i++) {
        int count;
        int at = seen_at(c, ids[i], &count);
        assert_int_equal(count, 1);
        assert_int_equal(at, i); /* id order */
        /* The message carries its publish span: a child in the row's trace. */
        assert_int_equal(strncmp(c->tps[at], tp, 35), 0);
        assert_string_not_equal(c->tps[at], tp);
    }
    int count;
    assert_int_equal(seen_at(c, last[0], &count), N);
    assert_int_equal(count, 1);
    /* No trace context when it was written: its publish span starts a trace. */
    assert_int_equal(oms_traceparent_parse(c->tps[N], NULL), OMS_OK);
    assert_int_not_equal(strncmp(c->tps[N], tp, 35), 0);
    assert_int_equal(c->n, N + 1);

    backlog_q b = {db, -1, -1, 0, 0};
    assert_true(rmq_wait_for(backlog_is, &b, 5000));
    assert_int_equal(count_where(db, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL"),
                     N + 1);

    size_t len = 0;
    char *m = oms_metrics_render(&len);
    assert_non_null(m);
    assert_non_null(strstr(m, "events_published_total{exchange=\"ob1.ex\"} 51"));
    free(m);

    oms_outbox_relay_stop(relay);
    oms_amqp_consumer_stop(cons);
    oms_db_close(db);
    free(c);
}

/* Rows of a rolled-back transaction do not exist, so they are never published. */
static void test_rolled_back_never_published(void **state)
{
    collector *c = collector_new();
    oms_amqp_consumer *cons = start_consumer("ob2.q", "ob2.ex", c);
    oms_db *db = open_db("rollback");
    oms_outbox_relay *relay = NULL;
    oms_error err;
    assert_int_equal(oms_outbox_relay_start(&relay, db, &cfg, &err), OMS_OK);

    static char gone[10][33], kept[1][33];
    add_rows(db, "ob2.ex", 10, gone, 0);
    add_rows(db, "ob2.ex", 1, kept, 1);
    oms_outbox_relay_notify(relay);
    seen_q q = {c, kept[0]};
    assert_true(rmq_wait_for(has_seen, &q, 15000));
    oms_outbox_relay_stop(relay);
    oms_amqp_consumer_stop(cons);

    assert_int_equal(c->n, 1);
    for (int i = 0; i < 10; i++) {
        int count;
        assert_int_equal(seen_at(c, gone[i], &count), -1);
    }
    assert_int_equal(count_where(db, "SELECT count(*) FROM outbox"), 1);
    oms_db_close(db);
    free(c);
}

/* With the broker down rows wait (and are counted as backlog); once it is back they
 * are all delivered, in order. */
static void test_broker_down_then_up(void **state)
{
    collector *c = collector_new();
    oms_amqp_consumer *cons = start_consumer("ob3.q", "ob3.ex", c);
    oms_db *db = open_db("down");
    oms_outbox_relay *relay = NULL;
    oms_error err;
    assert_int_equal(oms_outbox_relay_start(&relay, db, &cfg, &err), OMS_OK);

    assert_int_equal(rmq_stop(), 0);
    enum { N = 30 };
    static char ids[N][33];
    add_rows(db, "ob3.ex", N, ids, 1);
    oms_outbox_relay_notify(relay);
    /* The relay keeps trying meanwhile; the rows must still be there, unsent, after
     * a while. */
    backlog_q b = {db, -1, -1, N, 700};
    assert_true(rmq_wait_for(backlog_is, &b, 10000));
    assert_int_equal(c->n, 0);

    assert_int_equal(rmq_start_again(), 0);
    fprintf(stderr, "test_outbox: broker restarted in %lld ms\n", (long long)rmq_g.start_ms);
    seen_q q = {c, ids[N - 1]};
    assert_true(rmq_wait_for(has_seen, &q, 20000));
    b.want_rows = 0;
    b.min_age = 0;
    assert_true(rmq_wait_for(backlog_is, &b, 5000));
    oms_outbox_relay_stop(relay);
    oms_amqp_consumer_stop(cons);

    assert_int_equal(c->n, N);
    for (int i = 0; i < N; i++) {
        int count;
        assert_int_equal(seen_at(c, ids[i], &count), i);
        assert_int_equal(count, 1);
    }
    oms_db_close(db);
    free(c);
}

/* Stopping the relay with the broker unreachable returns promptly. */
static void test_stop_while_broker_unreachable(void **state)
{
    oms_db *db = open_db("unreachable");
    oms_amqp_config dead = cfg;
    dead.port = 1;
    oms_outbox_relay *relay = NULL;
    oms_error err;
    assert_int_equal(oms_outbox_relay_start(&relay, db, &dead, &err), OMS_OK);
    static char ids[3][33];
    add_rows(db, "ob4.ex", 3, ids, 1);
    oms_outbox_relay_notify(relay);
    backlog_q b = {db, -1, -1, 3, 300};
    assert_true(rmq_wait_for(backlog_is, &b, 5000));
    int64_t t0 = oms_mono_ms();
    oms_outbox_relay_stop(relay);
    assert_true(oms_mono_ms() - t0 < 1000);
    oms_db_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_committed_published_once),
        cmocka_unit_test(test_rolled_back_never_published),
        cmocka_unit_test(test_stop_while_broker_unreachable),
        cmocka_unit_test(test_broker_down_then_up),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
