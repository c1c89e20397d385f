/* The orders service's back-office rules (orders/service.c) on a real in-memory SQLite
 * through a fake stock port, as tables of rows:
 *   refunds     a staff refund from each status: the answer, the end status, the audit
 *               rows, the order.refunded events and the stock calls
 *   reasons     the refund reason's rules (nothing is written for a refused one)
 *   summaries   one fixed day of orders read at several days and offsets: counts,
 *               revenue, units, nearest-rank percentiles, hours, day edges
 * plus single cases: a second refund, the audit row sharing the refund's transaction,
 * the staff list's filters and the audit list's bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/calendar.h"
#include "oms/db.h"
#include "oms/log.h"
#include "oms/order.h"
#include "oms/util.h"
#include "../../orders/service.h"
#include "../../orders/store.h"

typedef struct fixture {
    oms_db *db;
    orders_service svc;
    char calls[256]; /* stock port calls, space-separated */
    int notifies;
} fixture;

static void log_call(fixture *f, const char *what)
{
    size_t n = strlen(f->calls);
    snprintf(f->calls + n, sizeof(f->calls) - n, "%s%s", n ? " " : "", what);
}

static int fake_reserve(void *ud, const char *order_id, oms_order *o, oms_error *err)
{
    (void)order_id;
    (void)err;
    log_call(ud, "reserve");
    for (size_t i = 0; i < o->nitems; i++)
        o->items[i].unit_price = 250;
    snprintf(o->currency, sizeof(o->currency), "usd");
    return OMS_OK;
}

static int fake_release(void *ud, const char *order_id, oms_error *err)
{
    (void)order_id;
    (void)err;
    log_call(ud, "release");
    return OMS_OK;
}

static int fake_commit(void *ud, const char *order_id, oms_error *err)
{
    (void)order_id;
    (void)err;
    log_call(ud, "commit");
    return OMS_OK;
}

static void count_notify(void *ud)
{
    ((fixture *)ud)->notifies++;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    oms_error err;
    if (!f || orders_store_open(&f->db, ":memory:", &err) != OMS_OK) {
        free(f);
        return -1;
    }
    f->svc.db = f->db;
    f->svc.stock = (orders_stock_port){fake_reserve, fake_release, fake_commit, f};
    f->svc.outbox_notify = count_notify;
    f->svc.outbox_ud = f;
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

static int int_cb(const oms_db_row *row, void *ud)
{
    *(long long *)ud = oms_db_row_int(row, 0);
    return OMS_OK;
}

static long long query_int(fixture *f, const char *sql, const char *arg)
{
    oms_db_tx *tx;
    oms_error err;
    long long v = -1;
    assert_int_equal(oms_db_begin(f->db, &tx, &err), OMS_OK);
    oms_db_param p[] = {OMS_DB_S(arg)};
    int rc = oms_db_query(tx, sql, p, arg ? 1 : 0, int_cb, &v, NULL, &err);
    oms_db_rollback(tx);
    if (rc != OMS_OK)
        fail_msg("%s: %s", sql, err.msg);
    return v;
}

static void exec_sql(fixture *f, const char *sql, const oms_db_param *p, int np)
{
    oms_error err;
    if (oms_db_exec_tx(f->db, sql, p, np, NULL, &err) != OMS_OK)
        fail_msg("%s: %s", sql, err.msg);
}

static long long audit_rows(fixture *f)
{
    return query_int(f, "SELECT COUNT(*) FROM orders_audit", NULL);
}

static long long refund_events(fixture *f)
{
    return query_int(f, "SELECT COUNT(*) FROM outbox WHERE exchange = 'order.refunded'", NULL);
}

static int status_of(fixture *f, const char *id)
{
    oms_order o;
    oms_error err;
    if (orders_get(&f->svc, id, &o, &err) != OMS_OK)
        fail_msg("get %s: %s", id, err.msg);
    int st = (int)o.status;
    oms_order_free(&o);
    return st;
}

/* An order of customer cust in status st (a direct write: the starting state). */
static void make_order(fixture *f, const char *cust, oms_order_status st, char id[OMS_ID_MAX + 1])
{
    oms_order req, out;
    oms_order_item it = {.product_id = "1", .quantity = 2};
    oms_error err;
    oms_order_init(&req);
    oms_order_add_item(&req, &it);
    if (orders_create(&f->svc, cust, &req, NULL, &out, &err) != OMS_OK)
        fail_msg("create: %s", err.msg);
    oms_order_free(&req);
    snprintf(id, OMS_ID_MAX + 1, "%s", out.order_id);
    oms_order_free(&out);
    oms_db_param p[] = {OMS_DB_S(oms_order_status_str(st)), OMS_DB_S(id)};
    exec_sql(f, "UPDATE orders SET status = $1 WHERE id = $2", p, 2);
    f->calls[0] = '\0';
    f->notifies = 0;
}

/* ---- refunds from each status ----------------------------------------------------- */

typedef struct refund_row {
    oms_order_status from;
    int rc;
    oms_order_status to;
    const char *calls; /* stock port calls the refund makes */
} refund_row;

static const refund_row refunds[] = {
    {OMS_ORDER_PENDING, OMS_CONFLICT, OMS_ORDER_PENDING, ""},
    {OMS_ORDER_WAITING_PAYMENT, OMS_CONFLICT, OMS_ORDER_WAITING_PAYMENT, ""},
    /* the units were cooked or are being cooked: they stay sold, the money goes back */
    {OMS_ORDER_PAID, OMS_OK, OMS_ORDER_REFUNDED, ""},
    {OMS_ORDER_COOKING, OMS_OK, OMS_ORDER_REFUNDED, ""},
    {OMS_ORDER_READY, OMS_OK, OMS_ORDER_REFUNDED, ""},
    {OMS_ORDER_CANCELLED, OMS_CONFLICT, OMS_ORDER_CANCELLED, ""},
    {OMS_ORDER_PAYMENT_FAILED, OMS_CONFLICT, OMS_ORDER_PAYMENT_FAILED, ""},
    /* done before: the same answer, nothing new */
    {OMS_ORDER_REFUNDED, OMS_OK, OMS_ORDER_REFUNDED, ""},
};

static void test_refund(void **state)
{
    fixture *f = *state;
    for (size_t i = 0; i < OMS_NELEM(refunds); i++) {
        const refund_row *r = &refunds[i];
        char id[OMS_ID_MAX + 1];
        make_order(f, "cust-r", r->from, id);
        long long audits = audit_rows(f), events = refund_events(f);
        oms_order out;
        oms_error err;
        oms_error_clear(&err);
        int rc = orders_refund(&f->svc, id, "alice", "cold food", &out, &err);
        const char *from = oms_order_status_str(r->from);
        if (rc != r->rc)
            fail_msg("refund from %s: rc %d, want %d (%s)", from, rc, r->rc, err.msg);
        assert_int_equal(status_of(f, id), r->to);
        assert_string_equal(f->calls, r->calls);
        int moved = r->from != r->to;
        assert_int_equal(audit_rows(f) - audits, moved);
        assert_int_equal(refund_events(f) - events, moved);
        assert_int_equal(f->notifies, moved);
        if (rc == OMS_OK) {
            assert_string_equal(out.order_id, id);
            assert_int_equal(out.status, OMS_ORDER_REFUNDED);
        } else {
            char want[256];
            snprintf(want, sizeof(want),
                     "order %s is %s: only a paid, cooking or ready order can be refunded", id,
                     from);
            assert_string_equal(err.msg, want);
        }
        if (moved) {
            assert_int_equal(query_int(f,
                                       "SELECT COUNT(*) FROM orders_audit WHERE subject = $1"
                                       " AND staff = 'alice' AND action = 'order.refund'"
                                       " AND reason = 'cold food' AND after = '{\"status\":"
                                       "\"refunded\"}'",
                                       id),
                             1);
            char before[64];
            snprintf(before, sizeof(before), "{\"status\":\"%s\"}", from);
            assert_int_equal(
                query_int(f, "SELECT COUNT(*) FROM orders_audit WHERE before = $1", before), 1);
            assert_int_equal(query_int(f,
                                       "SELECT COUNT(*) FROM order_history WHERE order_id = $1"
                                       " AND status = 'refunded'"
                                       " AND cause = 'staff alice: cold food'",
                                       id),
                             1);
            /* payments counts the refund under "staff" */
            assert_int_equal(query_int(f,
                                       "SELECT COUNT(*) FROM outbox WHERE exchange ="
                                       " 'order.refunded' AND body LIKE '%\"reason\":\"staff\"%'"
                                       " AND body LIKE '%' || $1 || '%'",
                                       id),
                             1);
        }
        oms_order_free(&out);
    }
}

static void test_refund_twice(void **state)
{
    fixture *f = *state;
    char id[OMS_ID_MAX + 1];
    make_order(f, "cust-2", OMS_ORDER_READY, id);
    oms_order out;
    oms_error err;
    assert_int_equal(orders_refund(&f->svc, id, "alice", "first", &out, &err), OMS_OK);
    oms_order_free(&out);
    assert_int_equal(orders_refund(&f->svc, id, "bob", "second", &out, &err), OMS_OK);
    assert_int_equal(out.status, OMS_ORDER_REFUNDED);
    oms_order_free(&out);
    assert_int_equal(audit_rows(f), 1);
    assert_int_equal(refund_events(f), 1);
    assert_int_equal(f->notifies, 1);
    assert_int_equal(
        query_int(f, "SELECT COUNT(*) FROM order_history WHERE status = 'refunded'", NULL), 1);
}

/* The audit row is part of the refund's transaction: when a later write of that
 * transaction fails (here the outbox is gone), neither the status, nor the history,
 * nor the audit row remains. */
static void test_refund_audit_in_the_same_transaction(void **state)
{
    fixture *f = *state;
    char id[OMS_ID_MAX + 1];
    make_order(f, "cust-tx", OMS_ORDER_PAID, id);
    long long hist = query_int(f, "SELECT COUNT(*) FROM order_history", NULL);
    exec_sql(f, "DROP TABLE outbox", NULL, 0);
    oms_order out;
    oms_error err;
    assert_int_not_equal(orders_refund(&f->svc, id, "alice", "x", &out, &err), OMS_OK);
    oms_order_free(&out);
    assert_int_equal(status_of(f, id), OMS_ORDER_PAID);
    assert_int_equal(audit_rows(f), 0);
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM order_history", NULL), hist);
    assert_int_equal(f->notifies, 0);
}

/* ---- reason rules ----------------------------------------------------------------- */

typedef struct reason_row {
    const char *label;
    const char *reason; /* NULL: 201 x 'a'; "\1": 200 x "é" */
    const char *staff;
    int rc;
    const char *msg_prefix;
} reason_row;

static const reason_row reasons[] = {
    {"empty", "", "alice", OMS_INVALID, "reason: required"},
    {"201 characters", NULL, "alice", OMS_INVALID, "reason: at most 200 characters"},
    {"200 two-byte characters", "\1", "alice", OMS_OK, NULL},
    {"a control character", "a\001b", "alice", OMS_INVALID, "reason: control characters"},
    {"a line break", "two\nlines", "alice", OMS_INVALID, "reason: control characters"},
    {"DEL", "a\177", "alice", OMS_INVALID, "reason: control characters"},
    {"a C1 control (NEL)", "a\302\205b", "alice", OMS_INVALID, "reason: control characters"},
    {"invalid UTF-8", "a\377b", "alice", OMS_INVALID, "reason: not valid UTF-8"},
    {"a cut UTF-8 sequence", "a\303", "alice", OMS_INVALID, "reason: not valid UTF-8"},
    {"no staff name", "ok", "", OMS_INVALID, "staff: "},
    {"a staff name with a space", "ok", "a b", OMS_INVALID, "staff: "},
    {"plain", "customer complained", "alice", OMS_OK, NULL},
};

static void test_reasons(void **state)
{
    fixture *f = *state;
    char long_ascii[202], long_utf8[402];
    memset(long_ascii, 'a', 201);
    long_ascii[201] = '\0';
    for (int i = 0; i < 200; i++)
        memcpy(long_utf8 + 2 * i, "\303\251", 2);
    long_utf8[400] = '\0';
    for (size_t i = 0; i < OMS_NELEM(reasons); i++) {
        const reason_row *r = &reasons[i];
        const char *reason = !r->reason                     ? long_ascii
                             : strcmp(r->reason, "\1") == 0 ? long_utf8
                                                            : r->reason;
        char id[OMS_ID_MAX + 1];
        make_order(f, "cust-reason", OMS_ORDER_PAID, id);
        long long audits = audit_rows(f);
        oms_order out;
        oms_error err;
        oms_error_clear(&err);
        int rc = orders_refund(&f->svc, id, r->staff, reason, &out, &err);
        oms_order_free(&out);
        if (rc != r->rc)
            fail_msg("%s: rc %d, want %d (%s)", r->label, rc, r->rc, err.msg);
        if (r->msg_prefix && strncmp(err.msg, r->msg_prefix, strlen(r->msg_prefix)) != 0)
            fail_msg("%s: message '%s', want '%s...'", r->label, err.msg, r->msg_prefix);
        assert_int_equal(status_of(f, id), rc == OMS_OK ? OMS_ORDER_REFUNDED : OMS_ORDER_PAID);
        assert_int_equal(audit_rows(f) - audits, rc == OMS_OK);
    }
}

/* ---- the day's figures ------------------------------------------------------------- */

#define H 3600000LL
/* 2026-03-10 at UTC+01:00 starts at 2026-03-09T23:00:00Z. */
#define DAY "2026-03-10"
#define TZ 60

static long long day_start(void)
{
    int64_t days;
    assert_int_equal(oms_day_parse(DAY, &days), OMS_OK);
    return oms_day_start_ms(days, TZ);
}

static void seed_order(fixture *f, const char *id, long long created, long long total,
                       const char *currency, const char *items)
{
    oms_db_param p[] = {OMS_DB_S(id), OMS_DB_I(total), OMS_DB_S(currency), OMS_DB_I(created)};
    exec_sql(f,
             "INSERT INTO orders(id, customer_id, status, total, currency, created_at, updated_at)"
             " VALUES($1, 'cust-day', 'pending', $2, $3, $4, $4)",
             p, 4);
    /* items: "1x2,2x3" */
    char buf[64];
    snprintf(buf, sizeof(buf), "%s", items);
    int pos = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *x = strchr(tok, 'x');
        *x = '\0';
        char name[32];
        snprintf(name, sizeof(name), "Product %s", tok);
        oms_db_param ip[] = {OMS_DB_S(id), OMS_DB_I(pos++), OMS_DB_S(tok), OMS_DB_S(name),
                             OMS_DB_I(atoi(x + 1))};
        exec_sql(f,
                 "INSERT INTO order_items(order_id, position, product_id, product_name, price_id,"
                 " quantity, unit_price) VALUES($1, $2, $3, $4, '', $5, 1)",
                 ip, 5);
    }
}

static void seed_history(fixture *f, const char *id, const char *status, long long at)
{
    oms_db_param p[] = {OMS_DB_S(id), OMS_DB_I(at), OMS_DB_S(status)};
    exec_sql(f, "INSERT INTO order_history(order_id, at, status, cause) VALUES($1, $2, $3, 'seed')",
             p, 3);
}

/* One day of a small shop at UTC+01:00 (s = the day's first millisecond there). */
static void seed_day(fixture *f)
{
    long long s = day_start();
    const long long e = s + 24 * H;
    seed_order(f, "o1", s, 1000, "usd", "1x2"); /* the first millisecond: hour 0 */
    seed_history(f, "o1", "paid", s + 1 * H);
    seed_history(f, "o1", "ready for pick-up", s + 1 * H + 60000);
    seed_order(f, "o2", s + 5 * H + 30 * 60000, 500, "usd", "1x1,2x3");
    seed_history(f, "o2", "paid", s + 6 * H);
    seed_history(f, "o2", "cooking", s + 6 * H + 1000);
    seed_history(f, "o2", "ready for pick-up", s + 6 * H + 120000);
    seed_history(f, "o2", "refunded", s + 7 * H);  /* refunded after payment: counted */
    seed_order(f, "o3", s - 1, 700, "usd", "2x1"); /* created the day before, paid today */
    seed_history(f, "o3", "paid", s + 10);
    seed_history(f, "o3", "ready for pick-up", s + 10 + 30000);
    seed_order(f, "o4", e - 1, 900, "usd", "1x9"); /* the last millisecond: hour 23, unpaid */
    seed_order(f, "o5", e, 900, "usd", "1x9");     /* the next day */
    seed_history(f, "o5", "paid", e);
    seed_order(f, "o6", s + 2 * H, 300, "eur", "3x5"); /* another currency */
    seed_history(f, "o6", "paid", s + 2 * H + 1);
    seed_order(f, "o7", s + 3 * H, 200, "usd", "1x1"); /* cooking arrived before paid */
    seed_history(f, "o7", "cooking", s + 3 * H + 5);
    seed_history(f, "o7", "ready for pick-up", s + 3 * H + 10005);
    /* a late payment refunded without ever being paid here: not a refund of the day */
    seed_order(f, "o8", s + 4 * H, 400, "usd", "2x1");
    seed_history(f, "o8", "refunded", s + 4 * H + 1);
    seed_order(f, "o9", s - 2 * H, 100, "usd", "2x1"); /* paid the day before */
    seed_history(f, "o9", "paid", s - 2 * H + 5);
    seed_history(f, "o9", "ready for pick-up", s + 5);
}

typedef struct summary_row {
    const char *label;
    const char *day;
    int tz;
    int rc;
    long long orders, paid, revenue, refunds, refunded_amount, p50, p90;
    const char *currency;
    const char *units; /* "3:5 1:4 2:4" productID:quantity, most sold first */
    const char *hours; /* "h:count ..." of the non-zero hours */
} summary_row;

static const summary_row summaries[] = {
    /* paid: o1 o2 o3 o6 o7 (usd 1000+500+700+200; eur 300 left out of the revenue);
     * paid -> ready sorted 10000 30000 60000 120000: p50 is the 2nd, p90 the 4th */
    {"the day at UTC+01:00", DAY, TZ, OMS_OK, 6, 5, 2400, 1, 500, 30000, 120000, "usd",
     "3:5 1:4 2:4", "0:1 2:1 3:1 4:1 5:1 23:1"},
    /* the same date at UTC starts an hour later: o1 is paid in it, o3 is not, o5 (the
     * next local day) is created and paid in it; ready times 10000 60000 120000 */
    {"the same date at UTC", DAY, 0, OMS_OK, 6, 5, 2600, 1, 500, 60000, 120000, "usd",
     "1:13 3:5 2:3", "1:1 2:1 3:1 4:1 22:1 23:1"},
    {"a day without orders", "2026-03-12", TZ, OMS_OK, 0, 0, 0, 0, 0, 0, 0, "", "", ""},
    {"not a date", "2026-02-29", TZ, OMS_INVALID, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL},
    {"a short year", "26-03-10", TZ, OMS_INVALID, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL},
    {"offset too far east", DAY, 841, OMS_INVALID, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL},
    {"offset too far west", DAY, -841, OMS_INVALID, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL},
};

static void test_summaries(void **state)
{
    fixture *f = *state;
    seed_day(f);
    for (size_t i = 0; i < OMS_NELEM(summaries); i++) {
        const summary_row *r = &summaries[i];
        orders_summary s;
        oms_error err;
        oms_error_clear(&err);
        int rc = orders_summary_get(&f->svc, r->day, r->tz, &s, &err);
        if (rc != r->rc)
            fail_msg("%s: rc %d, want %d (%s)", r->label, rc, r->rc, err.msg);
        if (rc != OMS_OK) {
            assert_true(strncmp(err.msg, "day:", 4) == 0 ||
                        strncmp(err.msg, "tzOffsetMinutes:", 16) == 0);
            continue;
        }
        char units[128] = "", hours[128] = "";
        for (size_t u = 0; u < s.nunits; u++)
            snprintf(units + strlen(units), sizeof(units) - strlen(units), "%s%s:%lld",
                     u ? " " : "", s.units[u].product_id, s.units[u].quantity);
        for (int h = 0; h < 24; h++)
            if (s.orders_per_hour[h])
                snprintf(hours + strlen(hours), sizeof(hours) - strlen(hours), "%s%d:%lld",
                         hours[0] ? " " : "", h, s.orders_per_hour[h]);
        char got[512], want[512];
        snprintf(got, sizeof(got), "%lld %lld %lld %lld %lld %lld %lld %s [%s] [%s]", s.orders,
                 s.paid_orders, s.revenue, s.refunds, s.refunded_amount, s.paid_to_ready_p50_ms,
                 s.paid_to_ready_p90_ms, s.currency, units, hours);
        snprintf(want, sizeof(want), "%lld %lld %lld %lld %lld %lld %lld %s [%s] [%s]", r->orders,
                 r->paid, r->revenue, r->refunds, r->refunded_amount, r->p50, r->p90, r->currency,
                 r->units, r->hours);
        if (strcmp(got, want) != 0)
            fail_msg("%s:\n got  %s\n want %s", r->label, got, want);
        assert_string_equal(s.day, r->day);
        assert_int_equal(s.late_tickets, 0);
        orders_summary_free(&s);
    }
}

/* ---- lists -------------------------------------------------------------------------- */

static void test_staff_list(void **state)
{
    fixture *f = *state;
    char a[OMS_ID_MAX + 1], b[OMS_ID_MAX + 1], c[OMS_ID_MAX + 1];
    make_order(f, "cust-a", OMS_ORDER_PAID, a);
    make_order(f, "cust-b", OMS_ORDER_PENDING, b);
    make_order(f, "cust-a", OMS_ORDER_PENDING, c);
    oms_db_param p[] = {OMS_DB_S(a), OMS_DB_S(b), OMS_DB_S(c)};
    exec_sql(f,
             "UPDATE orders SET created_at = CASE id WHEN $1 THEN 1000 WHEN $2 THEN 2000"
             " WHEN $3 THEN 3000 END",
             p, 3);
    struct {
        orders_staff_filter f;
        int page_size;
        const char *want; /* ids newest first, by letter; or the message's prefix */
        int rc;
    } rows[] = {
        {{.status = "", .customer_id = "", .order_id = ""}, 0, "cba", OMS_OK},
        {{.status = "pending"}, 0, "cb", OMS_OK},
        {{.customer_id = "cust-a"}, 0, "ca", OMS_OK},
        {{.order_id = b}, 0, "b", OMS_OK},
        {{.since_ms = 2000}, 0, "cb", OMS_OK},
        {{.until_ms = 2000}, 0, "a", OMS_OK},
        {{.since_ms = 1500, .until_ms = 2500}, 0, "b", OMS_OK},
        {{.status = "paid", .customer_id = "cust-b"}, 0, "", OMS_OK},
        {{0}, 2, "cb", OMS_OK},
        {{.status = "shipped"}, 0, "status:", OMS_INVALID},
        {{.customer_id = "a b"}, 0, "customerID:", OMS_INVALID},
        {{.order_id = "x/y"}, 0, "orderID:", OMS_INVALID},
        {{.since_ms = -1}, 0, "sinceMs:", OMS_INVALID},
        {{0}, 101, "pageSize:", OMS_INVALID},
    };
    for (size_t i = 0; i < OMS_NELEM(rows); i++) {
        oms_order *out = NULL;
        size_t n = 0;
        char next[96];
        oms_error err;
        oms_error_clear(&err);
        int rc =
            orders_staff_list(&f->svc, &rows[i].f, rows[i].page_size, "", &out, &n, next, &err);
        if (rc != rows[i].rc)
            fail_msg("row %zu: rc %d (%s)", i, rc, err.msg);
        char got[8] = "";
        for (size_t k = 0; k < n && k < 7; k++) {
            got[k] = strcmp(out[k].order_id, a) == 0   ? 'a'
                     : strcmp(out[k].order_id, b) == 0 ? 'b'
                                                       : 'c';
            oms_order_free(&out[k]);
        }
        free(out);
        if (rc == OMS_OK) {
            if (strcmp(got, rows[i].want) != 0)
                fail_msg("row %zu: got '%s', want '%s'", i, got, rows[i].want);
            assert_int_equal(next[0] != '\0', rows[i].page_size == 2);
        } else if (strncmp(err.msg, rows[i].want, strlen(rows[i].want)) != 0) {
            fail_msg("row %zu: message '%s'", i, err.msg);
        }
    }
}

static void test_audit_list(void **state)
{
    fixture *f = *state;
    char ids[3][OMS_ID_MAX + 1];
    for (int i = 0; i < 3; i++) {
        oms_order out;
        oms_error err;
        make_order(f, "cust-audit", OMS_ORDER_READY, ids[i]);
        assert_int_equal(orders_refund(&f->svc, ids[i], "alice", "r", &out, &err), OMS_OK);
        oms_order_free(&out);
        oms_db_param p[] = {OMS_DB_I(1000 * (i + 1)), OMS_DB_S(ids[i])};
        exec_sql(f, "UPDATE orders_audit SET at_ms = $1 WHERE subject = $2", p, 2);
    }
    orders_audit *a = NULL;
    size_t n = 0;
    oms_error err;
    assert_int_equal(orders_audit_list(&f->svc, 0, 0, &a, &n, &err), OMS_OK);
    assert_int_equal(n, 3);
    assert_string_equal(a[0].subject, ids[2]); /* newest first */
    assert_string_equal(a[2].subject, ids[0]);
    assert_true(a[0].id > a[2].id);
    for (size_t i = 0; i < n; i++)
        orders_audit_free(&a[i]);
    free(a);
    assert_int_equal(orders_audit_list(&f->svc, 3000, 1, &a, &n, &err), OMS_OK); /* exclusive */
    assert_int_equal(n, 1);
    assert_string_equal(a[0].subject, ids[1]);
    orders_audit_free(&a[0]);
    free(a);
    assert_int_equal(orders_audit_list(&f->svc, 0, 201, &a, &n, &err), OMS_INVALID);
    assert_true(strncmp(err.msg, "limit:", 6) == 0);
    assert_int_equal(orders_audit_list(&f->svc, -5, 10, &a, &n, &err), OMS_INVALID);
    assert_true(strncmp(err.msg, "beforeMs:", 9) == 0);
}

/* ---- history ------------------------------------------------------------------------ */

static void test_history(void **state)
{
    fixture *f = *state;
    char id[OMS_ID_MAX + 1];
    make_order(f, "cust-h", OMS_ORDER_PAID, id);
    /* Two lines in one millisecond come back in the order the statuses follow. */
    seed_history(f, id, "ready for pick-up", 4102444800000LL);
    seed_history(f, id, "cooking", 4102444800000LL);
    oms_order o;
    orders_history_entry *h = NULL;
    size_t n = 0;
    oms_error err;
    assert_int_equal(orders_history(&f->svc, id, &o, &h, &n, &err), OMS_OK);
    assert_string_equal(o.order_id, id);
    assert_int_equal(n, 3);
    assert_int_equal(h[0].status, OMS_ORDER_PENDING);
    assert_string_equal(h[0].cause, "created");
    assert_int_equal(h[1].status, OMS_ORDER_COOKING);
    assert_int_equal(h[2].status, OMS_ORDER_READY);
    oms_order_free(&o);
    orders_history_free(h, n);
    assert_int_equal(orders_history(&f->svc, "nope", &o, &h, &n, &err), OMS_NOTFOUND);
    assert_int_equal(orders_history(&f->svc, "a b", &o, &h, &n, &err), OMS_INVALID);
}

/* ---- calendar ------------------------------------------------------------------------ */

static void test_calendar(void **state)
{
    (void)state;
    int64_t d, ms;
    assert_int_equal(oms_day_parse("1970-01-01", &d), OMS_OK);
    assert_int_equal(d, 0);
    assert_int_equal(oms_day_parse("2024-02-29", &d), OMS_OK);
    assert_int_equal(oms_day_start_ms(d, 0), 1709164800000LL);
    assert_int_equal(oms_day_start_ms(d, 60), 1709164800000LL - H);
    const char *bad[] = {"2023-02-29", "2026-13-01", "2026-00-10", "2026-1-01", "2026-01-01x",
                         "",           "1969-12-31", "2026/01/01", "+026-01-01"};
    for (size_t i = 0; i < OMS_NELEM(bad); i++)
        if (oms_day_parse(bad[i], &d) == OMS_OK)
            fail_msg("day '%s' accepted", bad[i]);
    assert_int_equal(oms_rfc3339_parse("2026-12-01T09:30:00Z", &ms), OMS_OK);
    assert_int_equal(ms, 1796117400000LL);
    assert_int_equal(oms_rfc3339_parse("2026-12-01T10:30:00.5+01:00", &ms), OMS_OK);
    assert_int_equal(ms, 1796117400500LL);
    assert_int_equal(oms_rfc3339_parse("2026-12-01T09:30:00", &ms), OMS_INVALID);
    assert_int_equal(oms_rfc3339_parse("2026-12-01T24:00:00Z", &ms), OMS_INVALID);
    assert_int_equal(oms_rfc3339_parse("2026-12-01T09:30:00.Z", &ms), OMS_INVALID);
    char day[11];
    oms_day_format(1709164800000LL - 1, 0, day);
    assert_string_equal(day, "2024-02-28");
    oms_day_format(1709164800000LL - 1, 60, day);
    assert_string_equal(day, "2024-02-29");
}

int main(void)
{
    const char *lvl = getenv("TEST_LOG_LEVEL");
    int level = lvl ? oms_log_level_parse(lvl) : -1;
    oms_log_init("test_orders_staff", (oms_log_level)(level >= 0 ? level : OMS_LOG_ERROR + 1), 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refund, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refund_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refund_audit_in_the_same_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reasons, setup, teardown),
        cmocka_unit_test_setup_teardown(test_summaries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_staff_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history, setup, teardown),
        cmocka_unit_test(test_calendar),
    };
    return cmocka_run_group_tests_name("orders.staff", tests, NULL, NULL);
}
