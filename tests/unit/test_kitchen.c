/* The kitchen's rules (kitchen/service.c, kitchen/store.c) against a real SQLite file
 * in a private temp directory, without a broker: one ticket per order however often
 * order.paid arrives, oldest-first cooking, exactly one order.cooking and one
 * order.ready outbox row per ticket, and the restart reset. */
#define _GNU_SOURCE /* nftw's FTW_DEPTH/FTW_PHYS */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "oms/db.h"
#include "oms/log.h"
#include "oms/trace.h"
#include "oms/util.h"
#include "../../kitchen/service.h" /* every core's folder is on the include path: be explicit */
#include "../../kitchen/store.h"

#define QUEUE "kitchen.order.paid"

static char g_dir[] = "/tmp/oms-test-kitchen-XXXXXX";

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int group_setup(void **state)
{
    oms_log_init("test_kitchen", OMS_LOG_WARN, 1);
    return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    return nftw(g_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Per test: a fresh database file and a service over it (freed in teardown). */
typedef struct fixture {
    oms_db *db;
    kitchen_service svc;
    int wakes; /* ticket_notify calls */
} fixture;

static void count_wake(void *ud)
{
    ((fixture *)ud)->wakes++;
}

static int setup(void **state)
{
    static int seq;
    char url[512];
    oms_error err;
    fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    snprintf(url, sizeof(url), "sqlite:%s/kitchen-%d.db", g_dir, ++seq);
    if (kitchen_store_open(&f->db, url, &err) != OMS_OK) {
        fprintf(stderr, "open %s: %s\n", url, err.msg);
        free(f);
        return -1;
    }
    kitchen_service_init(&f->svc, f->db);
    f->svc.ticket_notify = count_wake;
    f->svc.ticket_ud = f;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    oms_db_close(f->db);
    free(f);
    return 0;
}

/* A paid order's event body, as the payments service publishes it. Heap string. */
static char *paid_body(const char *order_id, const char *customer_id)
{
    char buf[1024];
    int n = snprintf(buf, sizeof(buf),
                     "{\"orderID\":\"%s\",\"customerID\":\"%s\",\"status\":\"paid\","
                     "\"PaymentLink\":\"http://pay/x\",\"total\":1400,\"currency\":\"usd\","
                     "\"createdAt\":\"2026-01-02T03:04:05.000Z\","
                     "\"updatedAt\":\"2026-01-02T03:04:06.000Z\",\"items\":["
                     "{\"productID\":\"1\",\"productName\":\"Cheese\",\"quantity\":2,"
                     "\"priceID\":\"p1\",\"unitPrice\":450},"
                     "{\"productID\":\"2\",\"productName\":\"Chocolate\",\"quantity\":2,"
                     "\"priceID\":\"p2\",\"unitPrice\":250}]}",
                     order_id, customer_id);
    assert_true(n > 0 && (size_t)n < sizeof(buf));
    return strdup(buf);
}

static int accept(fixture *f, const char *message_id, const char *order_id)
{
    char *body = paid_body(order_id, "cust-1");
    oms_error err;
    oms_error_clear(&err);
    int rc = kitchen_accept_paid(&f->svc, QUEUE, message_id, body, strlen(body), &err);
    free(body);
    return rc;
}

static int count_row(const oms_db_row *row, void *ud)
{
    *(long long *)ud = oms_db_row_int(row, 0);
    return OMS_OK;
}

static long long count(fixture *f, const char *sql, const char *arg)
{
    oms_db_tx *tx;
    oms_error err;
    long long n = -1;
    assert_int_equal(oms_db_begin(f->db, &tx, &err), OMS_OK);
    oms_db_param p[] = {OMS_DB_S(arg)};
    int rc = oms_db_query(tx, sql, p, arg ? 1 : 0, count_row, &n, NULL, &err);
    oms_db_rollback(tx);
    assert_int_equal(rc, OMS_OK);
    return n;
}

static long long tickets_for(fixture *f, const char *order_id)
{
    return count(f, "SELECT COUNT(*) FROM tickets WHERE order_id = $1", order_id);
}

static long long events(fixture *f, const char *exchange)
{
    return count(f, "SELECT COUNT(*) FROM outbox WHERE exchange = $1", exchange);
}

typedef struct event_row {
    char *body;
    int n;
} event_row;

static int body_row(const oms_db_row *row, void *ud)
{
    event_row *e = ud;
    free(e->body);
    e->body = strdup(oms_db_row_text(row, 0));
    e->n++;
    return OMS_OK;
}

/* The one outbox body for exchange, parsed (caller decrefs); fails unless exactly one. */
static json_t *only_event(fixture *f, const char *exchange)
{
    oms_db_tx *tx;
    oms_error err;
    event_row e = {NULL, 0};
    assert_int_equal(oms_db_begin(f->db, &tx, &err), OMS_OK);
    oms_db_param p[] = {OMS_DB_S(exchange)};
    int rc = oms_db_query(tx, "SELECT body FROM outbox WHERE exchange = $1", p, 1, body_row, &e,
                          NULL, &err);
    oms_db_rollback(tx);
    assert_int_equal(rc, OMS_OK);
    assert_int_equal(e.n, 1);
    json_error_t jerr;
    json_t *j = json_loads(e.body, 0, &jerr);
    free(e.body);
    assert_non_null(j);
    return j;
}

static const char *jstr(const json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    assert_non_null(s);
    return s;
}

/* Takes the next ticket and checks it is order_id; leaves it in *t (caller frees). */
static void start_expect(fixture *f, const char *order_id, kitchen_ticket *t)
{
    oms_error err;
    oms_error_clear(&err);
    int rc = kitchen_start_next(&f->svc, t, &err);
    if (rc != OMS_OK)
        fail_msg("start_next: %d %s", rc, err.msg);
    oms_trace_clear_current();
    assert_string_equal(t->order_id, order_id);
    assert_int_equal(t->state, KITCHEN_COOKING);
    assert_true(t->started_at > 0);
}

static void test_same_message_twice_one_ticket(void **state)
{
    fixture *f = *state;
    assert_int_equal(accept(f, "msg-1", "order-1"), OMS_OK);
    assert_int_equal(accept(f, "msg-1", "order-1"), OMS_DUPLICATE);
    assert_int_equal(tickets_for(f, "order-1"), 1);
    assert_int_equal(f->wakes, 1); /* only a new ticket wakes the stations */
}

static void test_other_message_same_order_one_ticket(void **state)
{
    fixture *f = *state;
    assert_int_equal(accept(f, "msg-1", "order-1"), OMS_OK);
    assert_int_equal(accept(f, "msg-2", "order-1"), OMS_DUPLICATE);
    assert_int_equal(accept(f, "msg-2", "order-1"), OMS_DUPLICATE);
    assert_int_equal(tickets_for(f, "order-1"), 1);
    /* Also once the ticket is ready: a late repeat must not cook the order again. */
    kitchen_ticket t;
    start_expect(f, "order-1", &t);
    oms_error err;
    assert_int_equal(kitchen_finish(&f->svc, &t, &err), OMS_OK);
    kitchen_ticket_free(&t);
    assert_int_equal(accept(f, "msg-3", "order-1"), OMS_DUPLICATE);
    assert_int_equal(kitchen_start_next(&f->svc, &t, &err), OMS_NOTFOUND);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM tickets", NULL), 1);
    assert_int_equal(events(f, "order.cooking"), 1);
    assert_int_equal(events(f, "order.ready"), 1);
}

static void test_invalid_bodies_rejected(void **state)
{
    fixture *f = *state;
    static const char *const bodies[] = {
        "not json",
        "",
        "[]",
        "{\"orderID\":\"o1\"}",
        "{\"orderID\":\"o1\",\"customerID\":\"c1\",\"status\":\"paid\"}",
        "{\"orderID\":\"../x\",\"customerID\":\"c1\",\"status\":\"paid\",\"items\":[]}",
    };
    for (size_t i = 0; i < OMS_NELEM(bodies); i++) {
        oms_error err;
        oms_error_clear(&err);
        int rc = kitchen_accept_paid(&f->svc, QUEUE, "bad", bodies[i], strlen(bodies[i]), &err);
        if (rc != OMS_INVALID)
            fail_msg("body %zu: got %d, want OMS_INVALID", i, rc);
    }
    assert_int_equal(count(f, "SELECT COUNT(*) FROM tickets", NULL), 0);
    /* A rejected message records nothing: the id stays free. */
    assert_int_equal(count(f, "SELECT COUNT(*) FROM inbox", NULL), 0);
}

static void test_claim_is_oldest_first(void **state)
{
    fixture *f = *state;
    /* Ids out of alphabetical order, so only arrival order can explain the result. */
    assert_int_equal(accept(f, "m-c", "order-c"), OMS_OK);
    assert_int_equal(accept(f, "m-a", "order-a"), OMS_OK);
    assert_int_equal(accept(f, "m-b", "order-b"), OMS_OK);
    assert_int_equal(atomic_load(&f->svc.queue_depth), 3);
    kitchen_ticket t;
    start_expect(f, "order-c", &t);
    kitchen_ticket_free(&t);
    assert_int_equal(atomic_load(&f->svc.queue_depth), 2);
    start_expect(f, "order-a", &t);
    kitchen_ticket_free(&t);
    start_expect(f, "order-b", &t);
    kitchen_ticket_free(&t);
    oms_error err;
    assert_int_equal(kitchen_start_next(&f->svc, &t, &err), OMS_NOTFOUND);
    assert_int_equal(atomic_load(&f->svc.queue_depth), 0);
}

static void test_cooking_and_ready_events(void **state)
{
    fixture *f = *state;
    oms_error err;
    assert_int_equal(accept(f, "msg-1", "order-1"), OMS_OK);
    assert_int_equal(events(f, "order.cooking"), 0);

    kitchen_ticket t;
    start_expect(f, "order-1", &t);
    assert_int_equal(events(f, "order.cooking"), 1);
    assert_int_equal(events(f, "order.ready"), 0);
    json_t *j = only_event(f, "order.cooking");
    assert_string_equal(jstr(j, "orderID"), "order-1");
    assert_string_equal(jstr(j, "customerID"), "cust-1");
    assert_string_equal(jstr(j, "status"), "cooking");
    assert_int_equal(json_array_size(json_object_get(j, "items")), 2);
    json_decref(j);

    assert_int_equal(kitchen_finish(&f->svc, &t, &err), OMS_OK);
    assert_int_equal(t.state, KITCHEN_READY);
    assert_true(t.ready_at >= t.started_at);
    kitchen_ticket_free(&t);
    assert_int_equal(events(f, "order.cooking"), 1);
    j = only_event(f, "order.ready");
    assert_string_equal(jstr(j, "orderID"), "order-1");
    assert_string_equal(jstr(j, "status"), "ready for pick-up");
    assert_string_equal(jstr(j, "PaymentLink"), "http://pay/x");
    json_decref(j);

    assert_int_equal(kitchen_get_ticket(&f->svc, "order-1", &t, &err), OMS_OK);
    assert_int_equal(t.state, KITCHEN_READY);
    assert_true(t.queued_at > 0 && t.started_at > 0 && t.ready_at > 0);
    /* Finishing again changes nothing and writes no second order.ready. */
    assert_int_equal(kitchen_finish(&f->svc, &t, &err), OMS_CONFLICT);
    kitchen_ticket_free(&t);
    assert_int_equal(events(f, "order.ready"), 1);
}

static void test_restart_requeues_without_second_cooking(void **state)
{
    fixture *f = *state;
    oms_error err;
    long long n = -1;
    assert_int_equal(accept(f, "msg-1", "order-1"), OMS_OK);
    assert_int_equal(accept(f, "msg-2", "order-2"), OMS_OK);
    kitchen_ticket t;
    start_expect(f, "order-1", &t); /* a station stopped mid-cooking: never finished */
    kitchen_ticket_free(&t);
    assert_int_equal(events(f, "order.cooking"), 1);

    assert_int_equal(kitchen_requeue_cooking(&f->svc, LLONG_MAX, &n, &err), OMS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(kitchen_get_ticket(&f->svc, "order-1", &t, &err), OMS_OK);
    assert_int_equal(t.state, KITCHEN_QUEUED);
    assert_int_equal(t.cooking_published, 1);
    kitchen_ticket_free(&t);
    assert_int_equal(atomic_load(&f->svc.queue_depth), 2);

    /* Resumed first (it arrived first), without announcing cooking again. */
    start_expect(f, "order-1", &t);
    assert_int_equal(events(f, "order.cooking"), 1);
    assert_int_equal(kitchen_finish(&f->svc, &t, &err), OMS_OK);
    kitchen_ticket_free(&t);
    assert_int_equal(events(f, "order.ready"), 1);
    /* The other order is announced normally. */
    start_expect(f, "order-2", &t);
    kitchen_ticket_free(&t);
    assert_int_equal(events(f, "order.cooking"), 2);

    /* Nothing cooking is left after a clean reset of an idle kitchen. */
    assert_int_equal(kitchen_requeue_cooking(&f->svc, LLONG_MAX, &n, &err), OMS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(kitchen_requeue_cooking(&f->svc, LLONG_MAX, &n, &err), OMS_OK);
    assert_int_equal(n, 0);
}

static void test_list_and_get(void **state)
{
    fixture *f = *state;
    oms_error err;
    assert_int_equal(accept(f, "m1", "order-1"), OMS_OK);
    assert_int_equal(accept(f, "m2", "order-2"), OMS_OK);
    kitchen_ticket *v = NULL;
    size_t n = 0;
    assert_int_equal(kitchen_list_tickets(&f->svc, 100, &v, &n, &err), OMS_OK);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].order_id, "order-2"); /* newest first */
    assert_string_equal(v[1].order_id, "order-1");
    assert_int_equal(v[1].state, KITCHEN_QUEUED);
    assert_int_equal(v[1].started_at, 0);
    for (size_t i = 0; i < n; i++)
        kitchen_ticket_free(&v[i]);
    free(v);

    assert_int_equal(kitchen_list_tickets(&f->svc, 1, &v, &n, &err), OMS_OK);
    assert_int_equal(n, 1);
    kitchen_ticket_free(&v[0]);
    free(v);

    kitchen_ticket t;
    assert_int_equal(kitchen_get_ticket(&f->svc, "unknown", &t, &err), OMS_NOTFOUND);
    assert_int_equal(kitchen_get_ticket(&f->svc, "../etc", &t, &err), OMS_INVALID);
}

static int withdraw(fixture *f, const char *message_id, const char *order_id)
{
    char *body = paid_body(order_id, "cust-1"); /* order.refunded carries the same shape */
    oms_error err;
    oms_error_clear(&err);
    int rc = kitchen_close_ticket(&f->svc, KITCHEN_WITHDRAWN, "kitchen.order.refunded", message_id,
                                  body, strlen(body), &err);
    free(body);
    return rc;
}

static long long in_state(fixture *f, const char *order_id, const char *state)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM tickets WHERE order_id = $1 AND state = '%s'",
             state);
    return count(f, sql, order_id);
}

/* A refunded order is never cooked: queued -> withdrawn and skipped by the stations;
 * a refund that overtakes its order.paid leaves a withdrawn ticket the paid event
 * cannot revive; a cooking ticket withdrawn is not announced ready. */
static void test_refund_withdraws_the_ticket(void **state)
{
    fixture *f = *state;
    kitchen_ticket t;
    oms_error err;
    assert_int_equal(accept(f, "m1", "o-1"), OMS_OK);
    assert_int_equal(accept(f, "m2", "o-2"), OMS_OK);
    assert_int_equal(withdraw(f, "r1", "o-1"), OMS_OK);
    assert_int_equal(in_state(f, "o-1", "withdrawn"), 1);
    assert_int_equal(withdraw(f, "r1", "o-1"), OMS_DUPLICATE); /* same message again */
    assert_int_equal(withdraw(f, "r1b", "o-1"), OMS_OK);       /* another: no change */
    start_expect(f, "o-2", &t);                                /* o-1 is skipped */
    assert_int_equal(withdraw(f, "r2", "o-2"), OMS_OK);
    oms_error_clear(&err);
    assert_int_equal(kitchen_finish(&f->svc, &t, &err), OMS_CONFLICT);
    kitchen_ticket_free(&t);
    assert_int_equal(events(f, "order.ready"), 0);
    assert_int_equal(kitchen_start_next(&f->svc, &t, &err), OMS_NOTFOUND);

    assert_int_equal(withdraw(f, "r3", "o-3"), OMS_OK); /* refund first */
    assert_int_equal(accept(f, "m3", "o-3"), OMS_DUPLICATE);
    assert_int_equal(tickets_for(f, "o-3"), 1);
    assert_int_equal(in_state(f, "o-3", "withdrawn"), 1);
    assert_int_equal(kitchen_start_next(&f->svc, &t, &err), OMS_NOTFOUND);
}

/* Lateness by stage, counted once per ticket and stage, with the clock passed in. */
static void test_late_tickets_marked_once_per_stage(void **state)
{
    fixture *f = *state;
    kitchen_ticket t;
    oms_error err;
    long long marked = -1, n = -1;
    f->svc.sla_ms = 60000;
    f->svc.pickup_window_ms = 3600000;
    long long t0 = oms_now_ms();
    assert_int_equal(accept(f, "m1", "o-1"), OMS_OK);
    assert_int_equal(accept(f, "m2", "o-2"), OMS_OK);
    assert_int_equal(kitchen_mark_late(&f->svc, t0 + 59000, &marked, &err), OMS_OK);
    assert_int_equal(marked, 0);
    assert_int_equal(kitchen_mark_late(&f->svc, t0 + 61000, &marked, &err), OMS_OK);
    assert_int_equal(marked, 2); /* both queued past the SLA */
    assert_int_equal(kitchen_mark_late(&f->svc, t0 + 62000, &marked, &err), OMS_OK);
    assert_int_equal(marked, 0); /* once */
    start_expect(f, "o-1", &t);
    assert_int_equal(kitchen_finish(&f->svc, &t, &err), OMS_OK);
    long long ready = t.ready_at;
    kitchen_ticket_free(&t);
    assert_int_equal(kitchen_mark_late(&f->svc, ready + 3599000, &marked, &err), OMS_OK);
    assert_int_equal(marked, 0); /* o-2 was counted late while queued already */
    assert_int_equal(kitchen_mark_late(&f->svc, ready + 3601000, &marked, &err), OMS_OK);
    assert_int_equal(marked, 1); /* o-1 waited past the pick-up window */
    assert_int_equal(kitchen_count_late(&f->svc, t0 - 1000, t0 + 10000, &n, &err), OMS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(kitchen_count_late(&f->svc, t0 + 10000, t0 + 20000, &n, &err), OMS_OK);
    assert_int_equal(n, 0);
    assert_int_equal(kitchen_count_late(&f->svc, 10, 5, &n, &err), OMS_INVALID);
    /* Collected: off the display, never flagged again, not revived by a late paid. */
    char *body = paid_body("o-1", "cust-1");
    oms_error_clear(&err);
    assert_int_equal(kitchen_close_ticket(&f->svc, KITCHEN_COLLECTED, "kitchen.order.collected",
                                          "c1", body, strlen(body), &err),
                     OMS_OK);
    free(body);
    assert_int_equal(in_state(f, "o-1", "collected"), 1);
    assert_int_equal(withdraw(f, "r9", "o-1"), OMS_OK); /* final: stays collected */
    assert_int_equal(in_state(f, "o-1", "collected"), 1);
    f->svc.sla_ms = 0; /* 0: never late */
    assert_int_equal(accept(f, "m4", "o-4"), OMS_OK);
    assert_int_equal(kitchen_mark_late(&f->svc, t0 + 86400000, &marked, &err), OMS_OK);
    assert_int_equal(marked, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_same_message_twice_one_ticket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_message_same_order_one_ticket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_bodies_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_is_oldest_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cooking_and_ready_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_requeues_without_second_cooking, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_list_and_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refund_withdraws_the_ticket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late_tickets_marked_once_per_stage, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
