/* common/amqp.c against a real RabbitMQ node started by the test (rmq_helper.h):
 * confirms, delivery of ids/trace/body, retry and dead-lettering, unroutable messages,
 * recovery from a broker restart, durable queues holding messages for a consumer that
 * is down, the node list and queue type settings. Every wait polls with a deadline.
 *
 * RABBITMQ_QUEUE_TYPE is read from the environment as the services read it, so
 * `RABBITMQ_QUEUE_TYPE=quorum test_amqp` runs the whole suite on quorum queues.
 *
 * With OMS_TEST_RMQ_CLUSTER_DIR set, the test runs its cluster group instead, against
 * a cluster someone else started with `scripts/rabbitmq.sh cluster-start` in that
 * directory (tests/integration/test_cluster.py does, and always stops it): addresses
 * from RABBITMQ_ADDRS in node order (the i-th is DIR/node<i>), and it kills a node's
 * beam by the pid in DIR/node<i>/rabbit.pid to force a failover. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>

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

/* A consumer on queue (bound to exchange) with settings c0, connected (or failing). */
static oms_amqp_consumer *start_consumer_with(const oms_amqp_config *c0, const char *queue,
                                              const char *exchange, collector *c, int max_retries,
                                              int workers, int wait_up)
{
    const char *exs[] = {exchange};
    oms_amqp_consumer_config cc = {
        .queue = queue,
        .exchanges = exs,
        .nexchanges = 1,
        .prefetch = 8,
        .max_retries = max_retries,
        .retry_delay_ms = 50,
        .workers = workers,
        .fn = handler,
        .ud = c,
    };
    oms_amqp_consumer *cons = NULL;
    oms_error err;
    oms_error_clear(&err);
    assert_int_equal(oms_amqp_consumer_start(&cons, c0, &cc, &err), OMS_OK);
    if (wait_up)
        assert_true(rmq_wait_for(consumer_up, cons, 30000));
    return cons;
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

/* RABBITMQ_ADDRS and RABBITMQ_QUEUE_TYPE into c, as the services' config rows will
 * (a test-only stand-in for them). */
static void cfg_from_env(oms_amqp_config *c)
{
    c->addrs = getenv("RABBITMQ_ADDRS");
    c->queue_type = getenv("RABBITMQ_QUEUE_TYPE");
}

static int group_setup(void **state)
{
    oms_log_init("test_amqp", OMS_LOG_WARN, 1);
    if (rmq_start(&cfg) != 0)
        return -1;
    cfg.queue_type = getenv("RABBITMQ_QUEUE_TYPE"); /* one node: RABBITMQ_ADDRS ignored */
    return 0;
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

/* ---- node lists and queue types -------------------------------------------------- */

/* RABBITMQ_ADDRS and RABBITMQ_QUEUE_TYPE are checked once, with a message naming the
 * variable, and a bad value fails every entry point instead of guessing. */
static void test_config_check(void **state)
{
    oms_error err;
    oms_amqp_config c = {0};
    assert_int_equal(oms_amqp_config_check(&c, &err), OMS_OK);
    const char *good[] = {"h1:1, h2:2 ,[::1]:3,h4", " 127.0.0.1:5672 ", "a"};
    for (size_t i = 0; i < OMS_NELEM(good); i++) {
        c.addrs = good[i];
        if (oms_amqp_config_check(&c, &err) != OMS_OK)
            fail_msg("'%s' refused: %s", good[i], err.msg);
    }
    const char *bad[] = {"a:1,,b:2", "a:0", "a:65536", "a:b",  "::1:5672", "[::1",
                         "a:1x",     ",",   "a:",      "[]:1", "[::1]5672"};
    for (size_t i = 0; i < OMS_NELEM(bad); i++) {
        c.addrs = bad[i];
        if (oms_amqp_config_check(&c, &err) != OMS_INVALID)
            fail_msg("'%s' accepted", bad[i]);
        assert_non_null(strstr(err.msg, "RABBITMQ_ADDRS"));
    }
    char many[17 * 8 + 1] = "";
    for (int i = 0; i < 17; i++)
        strcat(many, i ? ",h:1" : "h:1");
    c.addrs = many;
    assert_int_equal(oms_amqp_config_check(&c, &err), OMS_INVALID);

    c.addrs = NULL;
    const char *types[] = {"", "classic", "quorum"};
    for (size_t i = 0; i < OMS_NELEM(types); i++) {
        c.queue_type = types[i];
        assert_int_equal(oms_amqp_config_check(&c, &err), OMS_OK);
    }
    c.queue_type = "Quorum";
    assert_int_equal(oms_amqp_config_check(&c, &err), OMS_INVALID);
    assert_non_null(strstr(err.msg, "RABBITMQ_QUEUE_TYPE"));

    /* Every entry point refuses the same settings with the same reason. */
    oms_amqp_config bad_cfg = cfg;
    bad_cfg.queue_type = "stream";
    oms_amqp_publisher *p = NULL;
    int confirmed = 1;
    assert_int_equal(oms_amqp_publisher_new(&p, &bad_cfg), OMS_OK);
    assert_int_equal(publish_one(p, "tc.ex", "mid", "{}", &confirmed, &err), OMS_INVALID);
    assert_int_equal(confirmed, 0);
    assert_non_null(strstr(err.msg, "RABBITMQ_QUEUE_TYPE"));
    assert_null(oms_amqp_publisher_node(p));
    oms_amqp_publisher_free(p);
    assert_int_equal(oms_amqp_ping(&bad_cfg, 1000, &err), OMS_INVALID);
    collector col;
    collector_init(&col, OMS_OK);
    const char *exs[] = {"tc.ex"};
    oms_amqp_consumer_config cc = {
        .queue = "tc.q", .exchanges = exs, .nexchanges = 1, .fn = handler, .ud = &col};
    oms_amqp_consumer *cons = NULL;
    assert_int_equal(oms_amqp_consumer_start(&cons, &bad_cfg, &cc, &err), OMS_INVALID);
    assert_non_null(strstr(err.msg, "RABBITMQ_QUEUE_TYPE"));
}

/* "host:port" of the test broker, and of a port where nothing listens. */
static void live_and_dead(char *live, char *dead, size_t size)
{
    int port = rmq_pick_port(); /* free, i.e. nothing listens there */
    assert_true(port > 0);
    snprintf(live, size, "127.0.0.1:%d", rmq_g.port);
    snprintf(dead, size, "127.0.0.1:%d", port);
}

/* With the first node of the list unreachable, publisher, consumer and ping use the
 * second; with none reachable the error says so and names them. */
static void test_failover_order(void **state)
{
    char live[32], dead[32], addrs[80];
    live_and_dead(live, dead, sizeof(live));
    snprintf(addrs, sizeof(addrs), "%s,%s", dead, live);
    oms_amqp_config c = cfg;
    c.addrs = addrs;
    oms_error err;
    assert_int_equal(oms_amqp_ping(&c, 2000, &err), OMS_OK);

    collector col;
    collector_init(&col, OMS_OK);
    oms_amqp_consumer *cons = start_consumer_with(&c, "tf.q", "tf.ex", &col, 3, 2, 1);
    assert_string_equal(oms_amqp_consumer_node(cons), live);
    oms_amqp_publisher *p = NULL;
    int confirmed = 0;
    assert_int_equal(oms_amqp_publisher_new(&p, &c), OMS_OK);
    assert_null(oms_amqp_publisher_node(p));
    assert_int_equal(publish_one(p, "tf.ex", "mid-order", "{}", &confirmed, &err), OMS_OK);
    assert_string_equal(oms_amqp_publisher_node(p), live);
    want w = {&col, 1};
    assert_true(rmq_wait_for(has_n, &w, 10000));
    oms_amqp_consumer_stop(cons);
    oms_amqp_publisher_free(p);
    assert_string_equal(col.ids[0], "mid-order");

    snprintf(addrs, sizeof(addrs), "%s,%s", dead, dead);
    assert_int_equal(oms_amqp_ping(&c, 2000, &err), OMS_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "none of 2 nodes"));
    assert_non_null(strstr(err.msg, dead));
}

/* stderr (fd 2, where oms_log writes) into a file while a test looks at the log. */
typedef struct log_capture {
    int saved;
    char path[PATH_MAX];
} log_capture;

static void capture_start(log_capture *lc)
{
    snprintf(lc->path, sizeof(lc->path), "%s/stderr.log", rmq_g.tmp);
    int fd = open(lc->path, O_CREAT | O_TRUNC | O_WRONLY | O_APPEND, 0600);
    assert_true(fd >= 0);
    fflush(stderr);
    lc->saved = dup(2);
    assert_true(lc->saved >= 0);
    assert_true(dup2(fd, 2) == 2);
    close(fd);
}

static void capture_stop(log_capture *lc)
{
    fflush(stderr);
    dup2(lc->saved, 2);
    close(lc->saved);
}

typedef struct log_lines {
    log_capture *lc;
    const char *needle;
    int count; /* lines containing needle, by the last check */
} log_lines;

static int log_has(void *ud)
{
    log_lines *l = ud;
    char line[8192];
    l->count = 0;
    FILE *f = fopen(l->lc->path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        l->count += strstr(line, l->needle) != NULL;
    fclose(f);
    return l->count > 0;
}

static int raw_delete_queue(const char *name)
{
    amqp_connection_state_t c = rmq_raw_connect();
    if (!c)
        return -1;
    amqp_queue_delete(c, 1, amqp_cstring_bytes(name), 0, 0);
    int rc = amqp_get_rpc_reply(c).reply_type == AMQP_RESPONSE_NORMAL ? 0 : -1;
    rmq_raw_close(c);
    return rc;
}

/* Quorum queues keep our retry semantics (x-retry-count, Q.retry's TTL dead-lettering
 * back to Q, Q.dlq after max_retries). A consumer configured with the other queue type
 * refuses to consume and logs one error naming RABBITMQ_QUEUE_TYPE and the queue (not
 * one per worker and retry), and recovers once the queue is deleted. */
static void test_quorum_retry_and_type_mismatch(void **state)
{
    oms_amqp_config quorum = cfg, classic = cfg;
    quorum.queue_type = "quorum";
    classic.queue_type = "classic";
    collector c;
    collector_init(&c, OMS_AGAIN);
    oms_amqp_consumer *cons = start_consumer_with(&quorum, "tq.q", "tq.ex", &c, 2, 1, 1);
    oms_amqp_publisher *p = NULL;
    oms_error err;
    int confirmed = 0;
    assert_int_equal(oms_amqp_publisher_new(&p, &quorum), OMS_OK);
    assert_int_equal(publish_one(p, "tq.ex", "mid-q", "{\"q\":1}", &confirmed, &err), OMS_OK);
    getter g;
    memset(&g, 0, sizeof(g));
    g.queue = "tq.q.dlq";
    assert_true(rmq_wait_for(got_one, &g, 15000));
    assert_int_equal(g.rc, 1);
    assert_string_equal(g.got.message_id, "mid-q");
    assert_int_equal(g.got.retry_count, 2);
    oms_amqp_consumer_stop(cons);
    assert_int_equal(c.calls, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c.retry[i], i);
        assert_string_equal(c.exchanges[i], "tq.ex");
    }
    oms_amqp_publisher_free(p);

    /* The same queue, now wanted as classic by two workers. */
    log_capture lc;
    capture_start(&lc);
    collector_init(&c, OMS_OK);
    cons = start_consumer_with(&classic, "tq.q", "tq.ex", &c, 2, 2, 0);
    log_lines l = {&lc, "RABBITMQ_QUEUE_TYPE=classic", 0};
    int seen = rmq_wait_for(log_has, &l, 10000);
    int up_before_delete = oms_amqp_consumer_connected(cons);
    /* Deleting the queues (as the message advises) is enough: the workers retry. */
    int deleted = raw_delete_queue("tq.q") == 0 && raw_delete_queue("tq.q.retry") == 0 &&
                  raw_delete_queue("tq.q.dlq") == 0;
    int up = rmq_wait_for(consumer_up, cons, 15000);
    oms_amqp_consumer_stop(cons);
    (void)log_has(&l);
    capture_stop(&lc);
    assert_true(seen);
    assert_false(up_before_delete);
    assert_int_equal(l.count, 1);
    l.needle = "'tq.q'";
    assert_true(log_has(&l));
    assert_true(deleted);
    assert_true(up);

    /* And the other way round: a classic queue wanted as quorum. */
    capture_start(&lc);
    cons = start_consumer_with(&quorum, "tq.q", "tq.ex", &c, 2, 1, 0);
    l.needle = "RABBITMQ_QUEUE_TYPE=quorum";
    seen = rmq_wait_for(log_has, &l, 10000);
    oms_amqp_consumer_stop(cons);
    capture_stop(&lc);
    assert_true(seen);
}

/* ---- cluster (OMS_TEST_RMQ_CLUSTER_DIR; see the top of this file) ------------------ */

#define CL_MAX 9
static const char *cl_dir;
static char cl_addrs[CL_MAX][64]; /* RABBITMQ_ADDRS, node i+1 at index i */
static int cl_n;

static int cluster_setup(void **state)
{
    oms_log_init("test_amqp", OMS_LOG_WARN, 1);
    cfg.user = "guest";
    cfg.password = "guest";
    cfg.vhost = "/";
    cfg_from_env(&cfg);
    if (!cfg.addrs || !cfg.queue_type || strcmp(cfg.queue_type, "quorum") != 0) {
        fprintf(stderr, "test_amqp: the cluster group needs RABBITMQ_ADDRS and "
                        "RABBITMQ_QUEUE_TYPE=quorum\n");
        return -1;
    }
    char list[CL_MAX * 64];
    snprintf(list, sizeof(list), "%s", cfg.addrs);
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t && cl_n < CL_MAX;
         t = strtok_r(NULL, ",", &save))
        snprintf(cl_addrs[cl_n++], sizeof(cl_addrs[0]), "%s", t);
    return cl_n >= 3 ? 0 : -1;
}

static int cl_index(const char *addr)
{
    for (int i = 0; addr && i < cl_n; i++)
        if (strcmp(cl_addrs[i], addr) == 0)
            return i;
    return -1;
}

static int port_refuses(void *ud)
{
    int port = *(int *)ud;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int refused = connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0;
    close(fd);
    return refused;
}

/* kill -9 of node i's beam, by the pid the script recorded (checked to be that node's
 * beam), then waits until its AMQP port refuses connections. */
static void cluster_kill(int i)
{
    char path[PATH_MAX], cmd[4096], home[64];
    snprintf(path, sizeof(path), "%s/node%d/rabbit.pid", cl_dir, i + 1);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    long pid = 0;
    int got = fscanf(f, "%ld", &pid);
    fclose(f);
    assert_int_equal(got, 1);
    snprintf(path, sizeof(path), "/proc/%ld/cmdline", pid);
    f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(cmd, 1, sizeof(cmd) - 1, f);
    fclose(f);
    for (size_t k = 0; k < n; k++)
        cmd[k] = cmd[k] ? cmd[k] : ' ';
    cmd[n] = '\0';
    snprintf(home, sizeof(home), "node%d/home", i + 1);
    if (!strstr(cmd, "beam") || !strstr(cmd, home))
        fail_msg("pid %ld is not node %d's beam: %.200s", pid, i + 1, cmd);
    assert_int_equal(kill((pid_t)pid, SIGKILL), 0);
    int port = atoi(strrchr(cl_addrs[i], ':') + 1);
    assert_true(rmq_wait_for(port_refuses, &port, 10000));
}

/* A failing message through the cluster's quorum queues: Q, then Q.retry (TTL, then
 * at-least-once dead-lettering back to Q), Q again, then Q.dlq, with our x-retry-count.
 * test_cluster.py then checks cl1.q, cl1.q.retry and cl1.q.dlq on the management API. */
static void test_cluster_quorum(void **state)
{
    collector c;
    collector_init(&c, OMS_AGAIN);
    oms_amqp_consumer *cons = start_consumer_with(&cfg, "cl1.q", "cl1.ex", &c, 1, 1, 1);
    assert_string_equal(oms_amqp_consumer_node(cons), cl_addrs[0]);
    oms_amqp_publisher *p = NULL;
    oms_error err;
    int confirmed = 0;
    assert_int_equal(oms_amqp_publisher_new(&p, &cfg), OMS_OK);
    int rc = publish_one(p, "cl1.ex", "mid-cl1", "{}", &confirmed, &err);
    if (rc != OMS_OK)
        fail_msg("publish: %s", err.msg);
    getter g;
    memset(&g, 0, sizeof(g));
    g.queue = "cl1.q.dlq";
    rmq_g.port = atoi(strrchr(cl_addrs[0], ':') + 1); /* where rmq_raw_get connects */
    assert_true(rmq_wait_for(got_one, &g, 20000));
    assert_int_equal(g.rc, 1);
    assert_int_equal(g.got.retry_count, 1);
    oms_amqp_consumer_stop(cons);
    oms_amqp_publisher_free(p);
    assert_int_equal(c.calls, 2);
    assert_int_equal(c.retry[1], 1);
}

/* ---- failover under load ---- */

enum { FO_N = 600, FO_BATCH = 25, FO_WORKERS = 2, FO_PREFETCH = 16, FO_GATE = 100 };

typedef struct fo_consumed {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int seen[FO_N]; /* deliveries handled, by message number */
    int total, unknown;
    int gate_open; /* handlers past FO_GATE deliveries wait for this */
} fo_consumed;

/* Counts the delivery; from the FO_GATE-th on, holds it until the test opens the gate,
 * so that deliveries are in the handlers' hands when their node dies. */
static int fo_handler(const oms_amqp_delivery *d, void *ud)
{
    fo_consumed *st = ud;
    char mid[32];
    char *end = NULL;
    long i = strtol(d->body, &end, 10);
    snprintf(mid, sizeof(mid), "fo-%ld", i);
    oms_mutex_lock(&st->mu);
    if (end && *end == '\0' && i >= 0 && i < FO_N && strcmp(d->message_id, mid) == 0)
        st->seen[i]++;
    else
        st->unknown++;
    st->total++;
    if (st->total >= FO_GATE) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 30; /* a test that fails elsewhere must not hang here */
        while (!st->gate_open)
            if (pthread_cond_timedwait(&st->cv, &st->mu, &until) != 0)
                break;
    }
    oms_mutex_unlock(&st->mu);
    return OMS_OK;
}

static int fo_count(fo_consumed *st, int *distinct)
{
    oms_mutex_lock(&st->mu);
    int total = st->total, d = 0;
    for (int i = 0; i < FO_N; i++)
        d += st->seen[i] > 0;
    oms_mutex_unlock(&st->mu);
    if (distinct)
        *distinct = d;
    return total;
}

static int fo_gate_reached(void *ud)
{
    return fo_count(ud, NULL) >= FO_GATE;
}

static int fo_all_seen(void *ud)
{
    int distinct = 0;
    (void)fo_count(ud, &distinct);
    return distinct == FO_N;
}

/* The outbox relay's part: publish [from, to) in batches with confirms, sending again
 * whatever was not confirmed. */
typedef struct fo_pub {
    oms_amqp_publisher *p;
    int from, to;
    int confirmed[FO_N];
    int failures;         /* publish calls that did not confirm everything */
    int64_t recovered_ms; /* first fully confirmed batch after a failure */
    oms_error err;
} fo_pub;

/* One batch of unconfirmed messages; 1 once the whole range is confirmed. */
static int fo_publish_step(void *ud)
{
    fo_pub *fp = ud;
    static char ids[FO_BATCH][16], bodies[FO_BATCH][16];
    oms_amqp_msg m[FO_BATCH];
    int idx[FO_BATCH], conf[FO_BATCH], k = 0;
    for (int i = fp->from; i < fp->to && k < FO_BATCH; i++) {
        if (fp->confirmed[i])
            continue;
        snprintf(ids[k], sizeof(ids[k]), "fo-%d", i);
        snprintf(bodies[k], sizeof(bodies[k]), "%d", i);
        m[k] = (oms_amqp_msg){"cl2.ex", "", ids[k], "", 0, bodies[k], strlen(bodies[k])};
        idx[k++] = i;
    }
    if (k == 0)
        return 1;
    int rc = oms_amqp_publish(fp->p, m, (size_t)k, conf, 5000, &fp->err);
    for (int j = 0; j < k; j++)
        fp->confirmed[idx[j]] |= conf[j];
    if (rc != OMS_OK)
        fp->failures++;
    else if (fp->failures && !fp->recovered_ms)
        fp->recovered_ms = oms_mono_ms();
    for (int i = fp->from; i < fp->to; i++)
        if (!fp->confirmed[i])
            return 0;
    return 1;
}

/* Publisher and consumer (two workers) given every node; the node both are connected
 * to is killed (-9) with 300 messages published, FO_GATE handled, the rest queued or in
 * the handlers' hands; 300 more are published while it is down. Every confirmed message
 * is consumed, by id; duplicates only within what the at-least-once contract allows
 * (oms/amqp.h): the deliveries handled but not acked when the node died, and batches
 * whose confirms died with it. Both move to the next node in the list. */
static void test_cluster_failover(void **state)
{
    fo_consumed *st = calloc(1, sizeof(*st));
    fo_pub *fp = calloc(1, sizeof(*fp));
    assert_non_null(st);
    assert_non_null(fp);
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    const char *exs[] = {"cl2.ex"};
    oms_amqp_consumer_config cc = {.queue = "cl2.q",
                                   .exchanges = exs,
                                   .nexchanges = 1,
                                   .prefetch = FO_PREFETCH,
                                   .workers = FO_WORKERS,
                                   .fn = fo_handler,
                                   .ud = st};
    oms_amqp_consumer *cons = NULL;
    oms_error err;
    assert_int_equal(oms_amqp_consumer_start(&cons, &cfg, &cc, &err), OMS_OK);
    assert_true(rmq_wait_for(consumer_up, cons, 30000));
    int victim = cl_index(oms_amqp_consumer_node(cons));
    assert_int_equal(victim, 0); /* the first node of the list */

    assert_int_equal(oms_amqp_publisher_new(&fp->p, &cfg), OMS_OK);
    fp->from = 0;
    fp->to = FO_N / 2;
    if (!rmq_wait_for(fo_publish_step, fp, 30000))
        fail_msg("first half not confirmed: %s", fp->err.msg);
    assert_int_equal(fp->failures, 0);
    assert_int_equal(cl_index(oms_amqp_publisher_node(fp->p)), victim);
    assert_true(rmq_wait_for(fo_gate_reached, st, 20000));

    int64_t t_kill = oms_mono_ms();
    cluster_kill(victim);
    fp->from = FO_N / 2;
    fp->to = FO_N;
    if (!rmq_wait_for(fo_publish_step, fp, 60000))
        fail_msg("second half not confirmed after the failover: %s", fp->err.msg);
    int64_t t_published = oms_mono_ms();
    oms_mutex_lock(&st->mu);
    st->gate_open = 1;
    pthread_cond_broadcast(&st->cv);
    oms_mutex_unlock(&st->mu);
    int all = rmq_wait_for(fo_all_seen, st, 60000);
    int64_t t_consumed = oms_mono_ms();
    int up = rmq_wait_for(consumer_up, cons, 30000);
    int next = (victim + 1) % cl_n;
    int cons_node = cl_index(oms_amqp_consumer_node(cons));
    int pub_node = cl_index(oms_amqp_publisher_node(fp->p));
    oms_amqp_consumer_stop(cons);
    oms_amqp_publisher_free(fp->p);

    int distinct = 0, dups = 0;
    int total = fo_count(st, &distinct);
    for (int i = 0; i < FO_N; i++)
        dups += st->seen[i] > 1 ? st->seen[i] - 1 : 0;
    fprintf(stderr,
            "test_amqp: failover: killed %s; publisher confirmed again after %lld ms "
            "(%d failed calls), all %d published in %lld ms, all consumed %lld ms after "
            "the kill; %d deliveries, %d duplicates\n",
            cl_addrs[victim], (long long)(fp->recovered_ms ? fp->recovered_ms - t_kill : 0),
            fp->failures, FO_N, (long long)(t_published - t_kill), (long long)(t_consumed - t_kill),
            total, dups);
    if (!all)
        fail_msg("only %d of %d messages consumed after the failover", distinct, FO_N);
    assert_int_equal(st->unknown, 0);
    assert_true(up);
    assert_int_equal(cons_node, next);
    assert_int_equal(pub_node, next);
    /* In the handlers' hands at the kill: one per worker. Publisher: at most a batch per
     * failed call whose messages may have been stored before their confirms were lost. */
    if (dups > FO_WORKERS + FO_BATCH * fp->failures)
        fail_msg("%d duplicates: more than the contract explains", dups);
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
    free(st);
    free(fp);
}

/* Runs after test_cluster_failover, so the first node of the list is dead: new clients
 * connect to the second, and quorum queues are declared and used with a majority. */
static void test_cluster_first_node_dead(void **state)
{
    int port = atoi(strrchr(cl_addrs[0], ':') + 1);
    assert_true(port_refuses(&port));
    collector c;
    collector_init(&c, OMS_OK);
    oms_amqp_consumer *cons = start_consumer_with(&cfg, "cl3.q", "cl3.ex", &c, 1, 1, 1);
    assert_string_equal(oms_amqp_consumer_node(cons), cl_addrs[1]);
    oms_amqp_publisher *p = NULL;
    oms_error err;
    int confirmed = 0;
    assert_int_equal(oms_amqp_publisher_new(&p, &cfg), OMS_OK);
    int rc = publish_one(p, "cl3.ex", "mid-cl3", "{}", &confirmed, &err);
    if (rc != OMS_OK)
        fail_msg("publish: %s", err.msg);
    assert_string_equal(oms_amqp_publisher_node(p), cl_addrs[1]);
    want w = {&c, 1};
    assert_true(rmq_wait_for(has_n, &w, 15000));
    oms_amqp_consumer_stop(cons);
    oms_amqp_publisher_free(p);
    assert_string_equal(c.ids[0], "mid-cl3");
}

static int cluster_teardown(void **state)
{
    return 0; /* the cluster belongs to whoever started it */
}

int main(void)
{
    cl_dir = getenv("OMS_TEST_RMQ_CLUSTER_DIR");
    if (cl_dir && *cl_dir) {
        const struct CMUnitTest cluster_tests[] = {
            cmocka_unit_test(test_cluster_quorum),
            cmocka_unit_test(test_cluster_failover),
            cmocka_unit_test(test_cluster_first_node_dead),
        };
        return cmocka_run_group_tests(cluster_tests, cluster_setup, cluster_teardown);
    }
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
        cmocka_unit_test(test_config_check),
        cmocka_unit_test(test_failover_order),
        cmocka_unit_test(test_quorum_retry_and_type_mismatch),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
