/* common/amqp.c against a real RabbitMQ node started by the test (rmq_helper.h):
 * confirms, delivery of ids/trace/body, retry and dead-lettering, unroutable messages,
 * recovery from a broker restart, and durable queues holding messages for a consumer
 * that is down. Every wait polls with a deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <pthread.h>

#include "oms/amqp.h"
#include "oms/log.h"
#include "oms/trace.h"
#include "oms/util.h"
#include "rmq_helper.h"

static oms_amqp_config cfg;

#define MAX_SEEN 256

/* What a test handler saw, shared between the consumer thread and the test. */
typedef struct collector {
    pthread_mutex_t mu;
    int verdict; /* what the handler returns */
    int calls;
    int n;
    char ids[MAX_SEEN][64];
    char tps[MAX_SEEN][64];
    char bodies[MAX_SEEN][128];
    char exchanges[MAX_SEEN][64];
    int retry[MAX_SEEN];
    int trace_ok[MAX_SEEN]; /* current trace context == the delivery's traceparent */
} collector;

static void collector_init(collector *c, int verdict)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    c->verdict = verdict;
}

static int handler(const oms_amqp_delivery *d, void *ud)
{
    collector *c = ud;
    char cur[OMS_TRACEPARENT_LEN + 1];
    oms_trace_current_header(cur);
    pthread_mutex_lock(&c->mu);
    c->calls++;
    if (c->n < MAX_SEEN) {
        int i = c->n++;
        snprintf(c->ids[i], sizeof(c->ids[i]), "%s", d->message_id);
        snprintf(c->tps[i], sizeof(c->tps[i]), "%s", d->traceparent);
        snprintf(c->bodies[i], sizeof(c->bodies[i]), "%s", d->body);
        snprintf(c->exchanges[i], sizeof(c->exchanges[i]), "%s", d->exchange);
        c->retry[i] = d->retry_count;
        /* The handler runs in the delivery's CONSUMER span: same trace, its own span. */
        c->trace_ok[i] = strncmp(cur, d->traceparent, 35) == 0 &&
                         strcmp(cur, d->traceparent) != 0 && strlen(d->body) == d->len;
    }
    int v = c->verdict;
    pthread_mutex_unlock(&c->mu);
    return v;
}

static int collector_count(collector *c)
{
    pthread_mutex_lock(&c->mu);
    int n = c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

typedef struct want {
    collector *c;
    int n;
} want;

static int has_n(void *ud)
{
    want *w = ud;
    return collector_count(w->c) >= w->n;
}

static int consumer_up(void *ud)
{
    return oms_amqp_consumer_connected(ud);
}

static int consumer_down(void *ud)
{
    return !oms_amqp_consumer_connected(ud);
}

static oms_amqp_consumer *start_consumer(const char *queue, const char *exchange, collector *c,
                                         int max_retries)
{
    const char *exs[] = {exchange};
    oms_amqp_consumer_config cc = {
        .queue = queue,
        .exchanges = exs,
        .nexchanges = 1,
        .prefetch = 8,
        .max_retries = max_retries,
        .retry_delay_ms = 50,
        .fn = handler,
        .ud = c,
    };
    oms_amqp_consumer *cons = NULL;
    oms_error err;
    oms_error_clear(&err);
    assert_int_equal(oms_amqp_consumer_start(&cons, &cfg, &cc, &err), OMS_OK);
    assert_true(rmq_wait_for(consumer_up, cons, 15000));
    return cons;
}

static int publish_one(oms_amqp_publisher *p, const char *exchange, const char *mid,
                       const char *body, int *confirmed, oms_error *err)
{
    oms_amqp_msg m = {exchange, "", mid, "", 0, body, strlen(body)};
    return oms_amqp_publish(p, &m, 1, confirmed, 5000, err);
}

static int group_setup(void **state)
{
    oms_log_init("test_amqp", OMS_LOG_WARN, 1);
    return rmq_start(&cfg);
}

static int group_teardown(void **state)
{
    rmq_finish();
    return 0;
}

static void test_ping(void **state)
{
    oms_error err;
    assert_int_equal(oms_amqp_ping(&cfg, 2000, &err), OMS_OK);
    oms_amqp_config bad = cfg;
    bad.password = "wrong";
    assert_int_not_equal(oms_amqp_ping(&bad, 2000, &err), OMS_OK);
    assert_non_null(strstr(err.msg, "login"));
}

/* 100 messages in one confirmed batch arrive with id, traceparent and body intact, and
 * the handler runs under the message's trace context. */
static void test_publish_100_delivered(void **state)
{
    collector *c = malloc(sizeof(*c));
    assert_non_null(c);
    collector_init(c, OMS_OK);
    oms_amqp_consumer *cons = start_consumer("t1.q", "t1.ex", c, 3);

    enum { N = 100 };
    static char ids[N][33], tps[N][OMS_TRACEPARENT_LEN + 1], bodies[N][64];
    oms_amqp_msg msgs[N];
    int confirmed[N];
    for (int i = 0; i < N; i++) {
        oms_trace_ctx t;
        assert_int_equal(oms_random_hex(ids[i], 16), OMS_OK);
        oms_trace_new_root(&t);
        oms_traceparent_format(&t, tps[i]);
        snprintf(bodies[i], sizeof(bodies[i]), "{\"n\":%d}", i);
        msgs[i] = (oms_amqp_msg){"t1.ex", "", ids[i], tps[i], 0, bodies[i], strlen(bodies[i])};
    }
    oms_amqp_publisher *p = NULL;
    oms_error err;
    assert_int_equal(oms_amqp_publisher_new(&p, &cfg), OMS_OK);
    int rc = oms_amqp_publish(p, msgs, N, confirmed, 10000, &err);
    if (rc != OMS_OK)
        fail_msg("publish: %s", err.msg);
    for (int i = 0; i < N; i++)
        assert_int_equal(confirmed[i], 1);
    assert_true(oms_amqp_publisher_connected(p));

    want w = {c, N};
    assert_true(rmq_wait_for(has_n, &w, 15000));
    oms_amqp_consumer_stop(cons);
    assert_int_equal(c->n, N);
    /* Each message exactly once, matched by id (delivery order is not asserted here). */
    for (int i = 0; i < N; i++) {
        int found = 0;
        for (int j = 0; j < c->n; j++) {
            if (strcmp(c->ids[j], ids[i]) != 0)
                continue;
            found++;
            assert_string_equal(c->tps[j], tps[i]);
            assert_string_equal(c->bodies[j], bodies[i]);
            assert_int_equal(c->retry[j], 0);
            assert_string_equal(c->exchanges[j], "t1.ex");
            assert_true(c->trace_ok[j]);
        }
        assert_int_equal(found, 1);
    }
    oms_amqp_publisher_free(p);
    free(c);
}

typedef struct getter {
    const char *queue;
    rmq_got got;
    int rc;
} getter;

static int got_one(void *ud)
{
    getter *g = ud;
    g->rc = rmq_raw_get(g->queue, &g->got);
    return g->rc != 0; /* a message, or an error (asserted by the caller) */
}

/* A handler that always says "again" sends the message through Q.retry max_retries
 * times, then to Q.dlq with x-retry-count = max_retries. */
static void test_retry_then_dlq(void **state)
{
    collector c;
    collector_init(&c, OMS_AGAIN);
    oms_amqp_consumer *cons = start_consumer("t2.q", "t2.ex", &c, 3);
    oms_amqp_publisher *p = NULL;
    oms_error err;
    int confirmed = 0;
    assert_int_equal(oms_amqp_publisher_new(&p, &cfg), OMS_OK);
    assert_int_equal(publish_one(p, "t2.ex", "mid-retry", "{\"x\":1}", &confirmed, &err), OMS_OK);

    getter g;
    memset(&g, 0, sizeof(g));
    g.queue = "t2.q.dlq";
    assert_true(rmq_wait_for(got_one, &g, 15000));
    assert_int_equal(g.rc, 1);
    assert_string_equal(g.got.message_id, "mid-retry");
    assert_string_equal(g.got.body, "{\"x\":1}");
    assert_int_equal(g.got.retry_count, 3);
    oms_amqp_consumer_stop(cons);
    assert_int_equal(c.calls, 4); /* first delivery + 3 retries */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(c.retry[i], i);
        /* Retries come back through the default exchange; the original is reported. */
        assert_string_equal(c.exchanges[i], "t2.ex");
    }
    assert_int_equal(rmq_raw_get("t2.q.retry", &g.got), 0);
    assert_int_equal(rmq_raw_get("t2.q", &g.got), 0);
    oms_amqp_publisher_free(p);
}

/* OMS_INVALID skips the retries. */
static void test_invalid_straight_to_dlq(void **state)
{
    collector c;
    collector_init(&c, OMS_INVALID);
    oms_amqp_consumer *cons = start_consumer("t3.q", "t3.ex", &c, 5);
    oms_amqp_publisher *p = NULL;
    oms_error err;
    int confirmed = 0;
    assert_int_equal(oms_amqp_publisher_new(&p, &cfg), OMS_OK);
    assert_int_equal(publish_one(p, "t3.ex", "mid-bad", "not json", &confirmed, &err), OMS_OK);

    getter g;
    memset(&g, 0, sizeof(g));
    g.queue = "t3.q.dlq";
    assert_true(rmq_wait_for(got_one, &g, 10000));
    assert_int_equal(g.rc, 1);
    assert_string_equal(g.got.message_id, "mid-bad");
    assert_string_equal(g.got.body, "not json");
    assert_int_equal(g.got.retry_count, 0);
    oms_amqp_consumer_stop(cons);
    assert_int_equal(c.calls, 1);
    oms_amqp_publisher_free(p);
}

/* mandatory=1: a message no queue receives is an error, not a silent success; in a
 * mixed batch only the routed message counts as confirmed. */
static void test_unroutable_reported(void **state)
{
    assert_int_equal(rmq_raw_bind("t4.bound", "t4.q"), 0);
    oms_amqp_publisher *p = NULL;
    oms_error err;
    assert_int_equal(oms_amqp_publisher_new(&p, &cfg), OMS_OK);
    int confirmed = 1;
    /* order.ready is an event exchange with nothing bound in this broker. */
    assert_int_equal(publish_one(p, "order.ready", "mid-nobody", "{}", &confirmed, &err), OMS_ERR);
    assert_int_equal(confirmed, 0);
    assert_non_null(strstr(err.msg, "NO_ROUTE"));

    oms_amqp_msg m[3] = {
        {"t4.bound", "", "a", "", 0, "1", 1},
        {"t4.nobind", "", "b", "", 0, "2", 1}, /* declared by the publisher, unbound */
        {"t4.bound", "", "c", "", 0, "3", 1},
    };
    int conf[3];
    assert_int_equal(oms_amqp_publish(p, m, 3, conf, 5000, &err), OMS_ERR);
    assert_int_equal(conf[0], 1);
    assert_int_equal(conf[1], 0);
    assert_int_equal(conf[2], 1);
    /* The connection survives a return: the next publish works on it. */
    assert_true(oms_amqp_publisher_connected(p));
    assert_int_equal(publish_one(p, "t4.bound", "d", "4", &confirmed, &err), OMS_OK);
    assert_int_equal(confirmed, 1);

    rmq_got got;
    const char *want_ids[] = {"a", "c", "d"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(rmq_raw_get("t4.q", &got), 1);
        assert_string_equal(got.message_id, want_ids[i]);
    }
    assert_int_equal(rmq_raw_get("t4.q", &got), 0);
    oms_amqp_publisher_free(p);
}

/* A message published while its consumer is stopped waits in the durable queue. */
static void test_durable_queue_waits(void **state)
{
    collector c;
    collector_init(&c, OMS_OK);
    oms_amqp_consumer *cons = start_consumer("t6.q", "t6.ex", &c, 3);
    oms_amqp_consumer_stop(cons); /* the queue and binding now exist */

    oms_amqp_publisher *p = NULL;
    oms_error err;
    int confirmed = 0;
    assert_int_equal(oms_amqp_publisher_new(&p, &cfg), OMS_OK);
    assert_int_equal(publish_one(p, "t6.ex", "mid-waiting", "{\"w\":1}", &confirmed, &err), OMS_OK);
    assert_int_equal(c.n, 0);

    cons = start_consumer("t6.q", "t6.ex", &c, 3);
    want w = {&c, 1};
    assert_true(rmq_wait_for(has_n, &w, 10000));
    oms_amqp_consumer_stop(cons);
    assert_string_equal(c.ids[0], "mid-waiting");
    assert_string_equal(c.bodies[0], "{\"w\":1}");
    oms_amqp_publisher_free(p);
}

typedef struct pub_try {
    oms_amqp_publisher *p;
    int want; /* the status to wait for */
    int rc;
    oms_error err;
} pub_try;

static int publish_gives(void *ud)
{
    pub_try *t = ud;
    int confirmed = 0;
    t->rc = publish_one(t->p, "t5.ex", "mid-after-restart", "{\"r\":1}", &confirmed, &t->err);
    return t->rc == t->want;
}

/* The broker goes away and comes back on the same dir and port: the publisher reports
 * OMS_UNAVAILABLE while it is down and works after; the consumer reconnects by itself
 * and receives what is published after the restart. */
static void test_broker_restart(void **state)
{
    collector c;
    collector_init(&c, OMS_OK);
    oms_amqp_consumer *cons = start_consumer("t5.q", "t5.ex", &c, 3);
    oms_amqp_publisher *p = NULL;
    oms_error err;
    int confirmed = 0;
    assert_int_equal(oms_amqp_publisher_new(&p, &cfg), OMS_OK);
    assert_int_equal(publish_one(p, "t5.ex", "mid-before", "{}", &confirmed, &err), OMS_OK);
    want w = {&c, 1};
    assert_true(rmq_wait_for(has_n, &w, 10000));

    assert_int_equal(rmq_stop(), 0);
    assert_true(rmq_wait_for(consumer_down, cons, 10000));
    pub_try t = {p, OMS_UNAVAILABLE, 0, {0, ""}};
    assert_true(publish_gives(&t));
    assert_false(oms_amqp_publisher_connected(p));

    assert_int_equal(rmq_start_again(), 0);
    fprintf(stderr, "test_amqp: broker restarted in %lld ms\n", (long long)rmq_g.start_ms);
    assert_true(rmq_wait_for(consumer_up, cons, 15000));
    t.want = OMS_OK;
    /* The first call right after the restart must already succeed. */
    assert_true(publish_gives(&t));
    w.n = 2;
    assert_true(rmq_wait_for(has_n, &w, 10000));
    oms_amqp_consumer_stop(cons);
    assert_string_equal(c.ids[1], "mid-after-restart");
    oms_amqp_publisher_free(p);
}

/* A consumer started while the broker is unreachable keeps retrying and stops
 * promptly when asked. */
static void test_consumer_stop_while_down(void **state)
{
    collector c;
    collector_init(&c, OMS_OK);
    oms_amqp_config dead = cfg;
    dead.port = 1; /* nothing listens there */
    const char *exs[] = {"t7.ex"};
    oms_amqp_consumer_config cc = {
        .queue = "t7.q", .exchanges = exs, .nexchanges = 1, .fn = handler, .ud = &c};
    oms_amqp_consumer *cons = NULL;
    oms_error err;
    assert_int_equal(oms_amqp_consumer_start(&cons, &dead, &cc, &err), OMS_OK);
    assert_false(oms_amqp_consumer_connected(cons));
    int64_t t0 = oms_mono_ms();
    oms_amqp_consumer_stop(cons);
    assert_true(oms_mono_ms() - t0 < 1000);
}

/* Which worker thread handled each of N deliveries. */
enum { SPREAD_N = 60 };
typedef struct spread {
    pthread_mutex_t mu;
    int n, dup;
    int seen[SPREAD_N];
    pthread_t who[8];
    int nwho;
} spread;

static int spread_handler(const oms_amqp_delivery *d, void *ud)
{
    spread *sp = ud;
    int i = atoi(d->body);
    pthread_mutex_lock(&sp->mu);
    if (i >= 0 && i < SPREAD_N && sp->seen[i]++)
        sp->dup++;
    int known = 0;
    for (int k = 0; k < sp->nwho; k++)
        known |= pthread_equal(sp->who[k], pthread_self());
    if (!known && sp->nwho < 8)
        sp->who[sp->nwho++] = pthread_self();
    sp->n++;
    pthread_mutex_unlock(&sp->mu);
    /* Stands for a handler waiting on another service: the workers overlap. */
    struct timespec work = {0, 2 * 1000 * 1000};
    nanosleep(&work, NULL);
    return OMS_OK;
}

static int spread_done(void *ud)
{
    spread *sp = ud;
    pthread_mutex_lock(&sp->mu);
    int n = sp->n;
    pthread_mutex_unlock(&sp->mu);
    return n >= SPREAD_N;
}

/* Three workers on one queue: every delivery handled once, by more than one thread;
 * out-of-range worker counts are refused. */
static void test_workers_share_queue(void **state)
{
    spread sp;
    memset(&sp, 0, sizeof(sp));
    pthread_mutex_init(&sp.mu, NULL);
    const char *exs[] = {"t8.ex"};
    oms_amqp_consumer_config cc = {.queue = "t8.q",
                                   .exchanges = exs,
                                   .nexchanges = 1,
                                   .prefetch = 1,
                                   .workers = 3,
                                   .fn = spread_handler,
                                   .ud = &sp};
    oms_amqp_consumer *cons = NULL;
    oms_error err;
    cc.workers = 65;
    assert_int_equal(oms_amqp_consumer_start(&cons, &cfg, &cc, &err), OMS_INVALID);
    cc.workers = 3;
    assert_int_equal(oms_amqp_consumer_start(&cons, &cfg, &cc, &err), OMS_OK);
    assert_true(rmq_wait_for(consumer_up, cons, 15000));

    static char ids[SPREAD_N][33], bodies[SPREAD_N][16];
    oms_amqp_msg msgs[SPREAD_N];
    int confirmed[SPREAD_N];
    for (int i = 0; i < SPREAD_N; i++) {
        assert_int_equal(oms_random_hex(ids[i], 16), OMS_OK);
        snprintf(bodies[i], sizeof(bodies[i]), "%d", i);
        msgs[i] = (oms_amqp_msg){"t8.ex", "", ids[i], "", 0, bodies[i], strlen(bodies[i])};
    }
    oms_amqp_publisher *p = NULL;
    assert_int_equal(oms_amqp_publisher_new(&p, &cfg), OMS_OK);
    assert_int_equal(oms_amqp_publish(p, msgs, SPREAD_N, confirmed, 10000, &err), OMS_OK);
    assert_true(rmq_wait_for(spread_done, &sp, 15000));
    oms_amqp_consumer_stop(cons);
    oms_amqp_publisher_free(p);
    assert_int_equal(sp.n, SPREAD_N);
    assert_int_equal(sp.dup, 0);
    for (int i = 0; i < SPREAD_N; i++)
        assert_int_equal(sp.seen[i], 1);
    if (sp.nwho < 2)
        fail_msg("all %d deliveries went to one worker", SPREAD_N);
    pthread_mutex_destroy(&sp.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ping),
        cmocka_unit_test(test_publish_100_delivered),
        cmocka_unit_test(test_retry_then_dlq),
        cmocka_unit_test(test_invalid_straight_to_dlq),
        cmocka_unit_test(test_unroutable_reported),
        cmocka_unit_test(test_durable_queue_waits),
        cmocka_unit_test(test_consumer_stop_while_down),
        cmocka_unit_test(test_broker_restart),
        cmocka_unit_test(test_workers_share_queue),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
