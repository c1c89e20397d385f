/* The orders service's rules (orders/service.c) as tables of cases, through its stock
 * port: a real in-memory SQLite holds the orders, their history, the outbox and the
 * inbox; a fake stock port records every call and answers from a script. Each row is
 * (starting status, event or call, expected status, expected port calls, expected
 * events), so changing a transition, a stock side effect or a published event fails
 * the row that describes it. Each row runs as a test of its own, named after it.
 *
 * Tables:
 *   transitions  every (status, consumed event) pair, plus the stock port's answers
 *   sequences    steps in order (a small step language, see run_steps): duplicates,
 *                out-of-order and backwards events, races with stock, orders_create's
 *                idempotency key and open-order limit, orders_cancel
 *   updates      orders_update: status moves (strict) with their stock effects
 *   links        orders_update's PaymentLink rules
 *   lists        orders_list's page sizes and page tokens */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/db.h"
#include "oms/events.h"
#include "oms/log.h"
#include "oms/order.h"
#include "oms/util.h"
#include "../../orders/service.h" /* every core's folder is on the include path: be explicit */
#include "../../orders/store.h"

#define CUSTOMER "cust-1"
#define LOCAL_CHECKOUT "http://localhost:8081"
#define QUEUE "orders.events"
#define MAX_LABELS 8
#define MAX_SCRIPT 16

/* ---- names used by the tables ------------------------------------------------------ */

enum {
    NONE = -1, /* no order (sequences that start by creating one) */
    PE = OMS_ORDER_PENDING,
    WP = OMS_ORDER_WAITING_PAYMENT,
    PD = OMS_ORDER_PAID,
    CK = OMS_ORDER_COOKING,
    RD = OMS_ORDER_READY,
    CX = OMS_ORDER_CANCELLED,
    PF = OMS_ORDER_PAYMENT_FAILED,
    RF = OMS_ORDER_REFUNDED,
};

/* The status codes by the short names the step language uses. */
static const struct {
    const char *name;
    int code;
} rc_names[] = {
    {"ok", OMS_OK},
    {"err", OMS_ERR},
    {"again", OMS_AGAIN},
    {"notfound", OMS_NOTFOUND},
    {"conflict", OMS_CONFLICT},
    {"dup", OMS_DUPLICATE},
    {"invalid", OMS_INVALID},
    {"unavail", OMS_UNAVAILABLE},
    {"keyreused", OMS_KEY_REUSED},
    {"limited", OMS_LIMITED},
};

static const char *rc_name(int rc)
{
    for (size_t i = 0; i < OMS_NELEM(rc_names); i++)
        if (rc_names[i].code == rc)
            return rc_names[i].name;
    return "?";
}

static int rc_parse(const char *s)
{
    for (size_t i = 0; i < OMS_NELEM(rc_names); i++)
        if (strcmp(rc_names[i].name, s) == 0)
            return rc_names[i].code;
    fail_msg("unknown status name '%s' in a table", s);
    return OMS_ERR;
}

static const char *status_name(int st)
{
    return st == NONE ? "none" : oms_order_status_str((oms_order_status)st);
}

/* The events orders consumes, as the other services publish them. */
typedef enum {
    E_PAID,
    E_COOK,
    E_READY,
    E_CANCEL,
    E_FAIL,
    E_REFUND,
    E_GHOST,
    E_GARBAGE,
    E_OTHER
} ev;

static const struct {
    const char *name;     /* in the step language */
    const char *label;    /* in the test's name */
    const char *exchange; /* where it arrives from */
    int status;           /* the body's status */
    const char *reason;   /* the body's reason, NULL: none */
    const char *cause;    /* the history's cause it leads to */
} events[] = {
    [E_PAID] = {"paid", "order.paid", "order.paid", PD, NULL, "payment received"},
    [E_COOK] = {"cooking", "order.cooking", "order.cooking", CK, NULL, "kitchen started cooking"},
    [E_READY] = {"ready", "order.ready", "order.ready", RD, NULL, "kitchen finished"},
    [E_CANCEL] = {"cancelled", "order.cancelled", "order.cancelled", CX,
                  "checkout_expired: checkout expired", "checkout_expired: checkout expired"},
    [E_FAIL] = {"failed", "order.cancelled (payment_failed)", "order.cancelled", PF,
                "payment failed", "payment failed"},
    [E_REFUND] = {"refunded", "order.refunded", "order.refunded", RF, "amount_mismatch: paid 1 usd",
                  "amount_mismatch: paid 1 usd"},
    [E_GHOST] = {"ghost", "order.paid for an unknown order", "order.paid", PD, NULL, NULL},
    [E_GARBAGE] = {"garbage", "order.paid, body not an order", "order.paid", PD, NULL, NULL},
    [E_OTHER] = {"created", "order.created (not consumed)", "order.created", PE, NULL, NULL},
};

/* ---- fixture: a database, the service and a fake stock port -------------------------- */

typedef struct script {
    int rc[MAX_SCRIPT];
    int n, pos;
} script;

typedef struct fixture {
    const void *row; /* the table row this test runs */
    oms_db *db;
    orders_service svc;
    char calls[512]; /* the port calls since the row's start, space-separated */
    script stock;    /* answers of the next stock calls; OMS_OK once used up */
    int notifies;    /* outbox_notify calls */
    long long outbox_base, history_base;
    char order_id[OMS_ID_MAX + 1]; /* the order the row is about; "" before one exists */
    struct {
        char name;
        char id[OMS_ID_MAX + 1];
    } labels[MAX_LABELS];
    int nlabels;
} fixture;

static void log_call(fixture *f, const char *what)
{
    size_t n = strlen(f->calls);
    snprintf(f->calls + n, sizeof(f->calls) - n, "%s%s", n ? " " : "", what);
}

static int script_next(script *s)
{
    return s->pos < s->n ? s->rc[s->pos++] : OMS_OK;
}

static void script_push(script *s, int rc)
{
    assert_true(s->n < MAX_SCRIPT);
    s->rc[s->n++] = rc;
}

static int fake_reserve(void *ud, const char *order_id, oms_order *o, oms_error *err)
{
    fixture *f = ud;
    log_call(f, "reserve");
    int rc = script_next(&f->stock);
    if (rc != OMS_OK)
        return oms_error_set(err, rc, "fake stock: product 1: %d requested, 0 left",
                             o->nitems ? o->items[0].quantity : 0);
    /* As stock does: the catalog's names, prices and currency replace the request's. */
    for (size_t i = 0; i < o->nitems; i++) {
        oms_order_item *it = &o->items[i];
        char buf[96];
        free(it->product_name);
        free(it->price_id);
        snprintf(buf, sizeof(buf), "Item %s", it->product_id);
        it->product_name = strdup(buf);
        snprintf(buf, sizeof(buf), "price_%s", it->product_id);
        it->price_id = strdup(buf);
        it->unit_price = 250;
    }
    snprintf(o->currency, sizeof(o->currency), "usd");
    return OMS_OK;
}

static int fake_commit(void *ud, const char *order_id, oms_error *err)
{
    fixture *f = ud;
    log_call(f, "commit");
    int rc = script_next(&f->stock);
    if (rc != OMS_OK)
        return oms_error_set(err, rc, "fake stock: reservation of %s was released", order_id);
    return OMS_OK;
}

static int fake_release(void *ud, const char *order_id, oms_error *err)
{
    fixture *f = ud;
    log_call(f, "release");
    int rc = script_next(&f->stock);
    if (rc != OMS_OK)
        return oms_error_set(err, rc, "fake stock: reservation of %s is committed", order_id);
    return OMS_OK;
}

static void count_notify(void *ud)
{
    ((fixture *)ud)->notifies++;
}

/* ---- reading the database back ------------------------------------------------------- */

static int int_cb(const oms_db_row *row, void *ud)
{
    *(long long *)ud = oms_db_row_int(row, 0);
    return OMS_OK;
}

/* One integer from sql with up to one text parameter (NULL: none). */
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

typedef struct text_rows {
    char text[8][2][512]; /* up to 8 rows of 2 columns */
    int n;
} text_rows;

static int text_cb(const oms_db_row *row, void *ud)
{
    text_rows *t = ud;
    if (t->n < 8) {
        for (int c = 0; c < 2 && c < oms_db_row_columns(row); c++) {
            const char *s = oms_db_row_text(row, c);
            snprintf(t->text[t->n][c], sizeof(t->text[0][0]), "%s", s ? s : "");
        }
    }
    t->n++;
    return OMS_OK;
}

static void query_text(fixture *f, const char *sql, const oms_db_param *p, int np, text_rows *out)
{
    oms_db_tx *tx;
    oms_error err;
    memset(out, 0, sizeof(*out));
    assert_int_equal(oms_db_begin(f->db, &tx, &err), OMS_OK);
    int rc = oms_db_query(tx, sql, p, np, text_cb, out, NULL, &err);
    oms_db_rollback(tx);
    if (rc != OMS_OK)
        fail_msg("%s: %s", sql, err.msg);
    assert_true(out->n <= 8);
}

static void exec_sql(fixture *f, const char *sql, const oms_db_param *p, int np)
{
    oms_error err;
    if (oms_db_exec_tx(f->db, sql, p, np, NULL, &err) != OMS_OK)
        fail_msg("%s: %s", sql, err.msg);
}

/* The order's status, or NONE when there is no such order. */
static int order_status(fixture *f, const char *order_id)
{
    text_rows t;
    oms_db_param p[] = {OMS_DB_S(order_id)};
    query_text(f, "SELECT status FROM orders WHERE id = $1", p, 1, &t);
    return t.n == 0 ? NONE : oms_order_status_parse(t.text[0][0]);
}

static long long history_rows(fixture *f)
{
    return query_int(f, "SELECT COUNT(*) FROM order_history", NULL);
}

static long long outbox_max(fixture *f)
{
    return query_int(f, "SELECT COALESCE(MAX(id), 0) FROM outbox", NULL);
}

/* The events written since the row started, one "exchange/status[:reason]" each. */
typedef struct summary {
    char ev[8][600];
    int n;
    char joined[2048]; /* for messages */
} summary;

static void outbox_summary(fixture *f, summary *out)
{
    text_rows t;
    oms_db_param p[] = {OMS_DB_I(f->outbox_base)};
    query_text(f, "SELECT exchange, body FROM outbox WHERE id > $1 ORDER BY id", p, 1, &t);
    memset(out, 0, sizeof(*out));
    out->n = t.n;
    for (int i = 0; i < t.n; i++) {
        json_error_t je;
        json_t *j = json_loads(t.text[i][1], 0, &je);
        if (!j)
            fail_msg("outbox body is not JSON: %s", t.text[i][1]);
        const char *st = json_string_value(json_object_get(j, "status"));
        const char *why = json_string_value(json_object_get(j, "reason"));
        const char *oid = json_string_value(json_object_get(j, "orderID"));
        snprintf(out->ev[i], sizeof(out->ev[i]), "%s/%s%s%s", t.text[i][0], st ? st : "?",
                 why ? ":" : "", why ? why : "");
        size_t len = strlen(out->joined);
        snprintf(out->joined + len, sizeof(out->joined) - len, "%s%s", i ? " | " : "", out->ev[i]);
        /* Every event is about an order this test made. */
        int known = oid && strcmp(oid, f->order_id) == 0;
        for (int l = 0; oid && l < f->nlabels; l++)
            known |= strcmp(oid, f->labels[l].id) == 0;
        if (!known)
            fail_msg("outbox event for an unexpected order %s", oid ? oid : "(none)");
        json_decref(j);
    }
}

/* want: space-separated "exchange/status[:reason prefix]" (the prefix has no spaces);
 * without ":", the event must carry no reason. */
static int outbox_matches(const char *want, const summary *got)
{
    char w[512];
    char *save = NULL;
    int i = 0;
    snprintf(w, sizeof(w), "%s", want);
    for (char *tok = strtok_r(w, " ", &save); tok; tok = strtok_r(NULL, " ", &save), i++) {
        if (i >= got->n)
            return 0;
        if (strchr(tok, ':') ? strncmp(got->ev[i], tok, strlen(tok)) != 0
                             : strcmp(got->ev[i], tok) != 0)
            return 0;
    }
    return i == got->n;
}

/* ---- building orders and events --------------------------------------------------- */

/* "1x2+2x1": product 1 twice, product 2 once. */
static void parse_items(const char *spec, oms_order *req)
{
    char buf[256];
    char *save = NULL;
    oms_order_init(req);
    snprintf(buf, sizeof(buf), "%s", spec);
    for (char *tok = strtok_r(buf, "+", &save); tok; tok = strtok_r(NULL, "+", &save)) {
        oms_order_item it;
        memset(&it, 0, sizeof(it));
        char *x = strchr(tok, 'x');
        assert_non_null(x);
        *x = '\0';
        snprintf(it.product_id, sizeof(it.product_id), "%s", tok);
        it.quantity = atoi(x + 1);
        oms_order_add_item(req, &it);
    }
}

/* Creates the row's order for CUSTOMER and puts it in status st (a direct write: the
 * starting state, not a transition under test). */
static void make_order(fixture *f, int st)
{
    oms_order req, out;
    oms_error err;
    parse_items("1x2+2x1", &req);
    int rc = orders_create(&f->svc, CUSTOMER, &req, NULL, &out, &err);
    oms_order_free(&req);
    if (rc != OMS_OK)
        fail_msg("create: %s", err.msg);
    snprintf(f->order_id, sizeof(f->order_id), "%s", out.order_id);
    oms_order_free(&out);
    if (st != PE) {
        oms_db_param p[] = {OMS_DB_S(oms_order_status_str((oms_order_status)st)),
                            OMS_DB_S(f->order_id)};
        exec_sql(f, "UPDATE orders SET status = $1 WHERE id = $2", p, 2);
    }
}

/* What a row's action is measured against: no calls, no script, the current counts. */
static void mark_start(fixture *f)
{
    f->calls[0] = '\0';
    memset(&f->stock, 0, sizeof(f->stock));
    f->notifies = 0;
    f->outbox_base = outbox_max(f);
    f->history_base = history_rows(f);
}

/* The event e about the row's order, as its publisher writes it. Heap string. */
static char *event_body(fixture *f, ev e)
{
    if (e == E_GARBAGE)
        return strdup("{\"orderID\":");
    oms_order o;
    oms_error err;
    int rc = orders_get(&f->svc, f->order_id, &o, &err);
    if (rc != OMS_OK)
        fail_msg("get %s: %s", f->order_id, err.msg);
    if (e == E_GHOST)
        snprintf(o.order_id, sizeof(o.order_id), "no-such-order");
    o.status = (oms_order_status)events[e].status;
    snprintf(o.reason, sizeof(o.reason), "%s", events[e].reason ? events[e].reason : "");
    char *body = oms_order_to_json_str(&o);
    oms_order_free(&o);
    assert_non_null(body);
    return body;
}

static int deliver(fixture *f, ev e, const char *message_id, oms_error *err)
{
    char *body = event_body(f, e);
    oms_error_clear(err);
    int rc = orders_handle_event(&f->svc, QUEUE, message_id, events[e].exchange, body, strlen(body),
                                 err);
    free(body);
    return rc;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    oms_error err;
    if (!f)
        return -1;
    f->row = *state;
    if (orders_store_open(&f->db, ":memory:", &err) != OMS_OK) {
        fprintf(stderr, "open :memory:: %s\n", err.msg);
        free(f);
        return -1;
    }
    f->svc.db = f->db;
    f->svc.stock = (orders_stock_port){fake_reserve, fake_release, fake_commit, f};
    f->svc.outbox_notify = count_notify;
    f->svc.outbox_ud = f;
    f->svc.local_checkout_url = LOCAL_CHECKOUT;
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

/* What every row checks at its end: the order's status, the port calls in order, the
 * events written, and that the relay was woken exactly when events were written. */
static void expect_end(fixture *f, const char *name, int end, const char *calls, const char *out)
{
    int st = f->order_id[0] ? order_status(f, f->order_id) : NONE;
    if (st != end)
        fail_msg("%s: status %s, want %s", name, status_name(st), status_name(end));
    if (strcmp(f->calls, calls) != 0)
        fail_msg("%s: port calls [%s], want [%s]", name, f->calls, calls);
    summary got;
    outbox_summary(f, &got);
    if (!outbox_matches(out, &got))
        fail_msg("%s: events [%s], want [%s]", name, got.joined, out);
    if (f->notifies != got.n)
        fail_msg("%s: relay woken %d times for %d events", name, f->notifies, got.n);
}

/* ---- table: transitions --------------------------------------------------------------
 * One consumed event for an order in status start, the stock port answering stock_rc.
 * rc and end: the result and the status after. calls: the port calls. refund: NULL, or
 * the reason prefix of the order.refunded event orders publishes itself (the payment
 * arrived but cannot be fulfilled). Derived checks: a moved order has one new history
 * row (its status, and the refund reason or the event's cause); an unmoved one none;
 * the inbox holds the message id exactly when rc is OMS_OK. */

typedef struct transition_row {
    int start;
    ev event;
    int stock_rc;
    int rc;
    int end;
    const char *calls;
    const char *refund;
} transition_row;

#define T(start, event, stock_rc, rc, end, calls, refund)                                          \
    {                                                                                              \
        start, event, stock_rc, rc, end, calls, refund                                             \
    }

static const transition_row transitions[] = {
    /* before payment: paid, cooking and ready commit the stock; side exits release it */
    T(PE, E_PAID, OMS_OK, OMS_OK, PD, "commit", NULL),
    T(PE, E_COOK, OMS_OK, OMS_OK, CK, "commit", NULL),
    T(PE, E_READY, OMS_OK, OMS_OK, RD, "commit", NULL),
    T(PE, E_CANCEL, OMS_OK, OMS_OK, CX, "release", NULL),
    T(PE, E_FAIL, OMS_OK, OMS_OK, PF, "release", NULL),
    T(PE, E_REFUND, OMS_OK, OMS_OK, RF, "release", NULL),
    T(WP, E_PAID, OMS_OK, OMS_OK, PD, "commit", NULL),
    T(WP, E_COOK, OMS_OK, OMS_OK, CK, "commit", NULL),
    T(WP, E_READY, OMS_OK, OMS_OK, RD, "commit", NULL),
    T(WP, E_CANCEL, OMS_OK, OMS_OK, CX, "release", NULL),
    T(WP, E_FAIL, OMS_OK, OMS_OK, PF, "release", NULL),
    T(WP, E_REFUND, OMS_OK, OMS_OK, RF, "release", NULL),
    /* paid: forward only; a side exit is ignored; a refund keeps the stock sold */
    T(PD, E_PAID, OMS_OK, OMS_OK, PD, "", NULL),
    T(PD, E_COOK, OMS_OK, OMS_OK, CK, "", NULL),
    T(PD, E_READY, OMS_OK, OMS_OK, RD, "", NULL),
    T(PD, E_CANCEL, OMS_OK, OMS_OK, PD, "", NULL),
    T(PD, E_FAIL, OMS_OK, OMS_OK, PD, "", NULL),
    T(PD, E_REFUND, OMS_OK, OMS_OK, RF, "", NULL),
    T(CK, E_PAID, OMS_OK, OMS_OK, CK, "", NULL),
    T(CK, E_COOK, OMS_OK, OMS_OK, CK, "", NULL),
    T(CK, E_READY, OMS_OK, OMS_OK, RD, "", NULL),
    T(CK, E_CANCEL, OMS_OK, OMS_OK, CK, "", NULL),
    T(CK, E_FAIL, OMS_OK, OMS_OK, CK, "", NULL),
    T(CK, E_REFUND, OMS_OK, OMS_OK, RF, "", NULL),
    T(RD, E_PAID, OMS_OK, OMS_OK, RD, "", NULL),
    T(RD, E_COOK, OMS_OK, OMS_OK, RD, "", NULL),
    T(RD, E_READY, OMS_OK, OMS_OK, RD, "", NULL),
    T(RD, E_CANCEL, OMS_OK, OMS_OK, RD, "", NULL),
    T(RD, E_FAIL, OMS_OK, OMS_OK, RD, "", NULL),
    T(RD, E_REFUND, OMS_OK, OMS_OK, RF, "", NULL),
    /* cancelled / payment_failed: money arriving goes back; a refund releases again */
    T(CX, E_PAID, OMS_OK, OMS_OK, RF, "", "order_cancelled"),
    T(CX, E_COOK, OMS_OK, OMS_OK, RF, "", "order_cancelled"),
    T(CX, E_READY, OMS_OK, OMS_OK, RF, "", "order_cancelled"),
    T(CX, E_CANCEL, OMS_OK, OMS_OK, CX, "", NULL),
    T(CX, E_FAIL, OMS_OK, OMS_OK, CX, "", NULL),
    T(CX, E_REFUND, OMS_OK, OMS_OK, RF, "release", NULL),
    T(PF, E_PAID, OMS_OK, OMS_OK, RF, "", "order_cancelled"),
    T(PF, E_COOK, OMS_OK, OMS_OK, RF, "", "order_cancelled"),
    T(PF, E_READY, OMS_OK, OMS_OK, RF, "", "order_cancelled"),
    T(PF, E_CANCEL, OMS_OK, OMS_OK, PF, "", NULL),
    T(PF, E_FAIL, OMS_OK, OMS_OK, PF, "", NULL),
    T(PF, E_REFUND, OMS_OK, OMS_OK, RF, "release", NULL),
    /* refunded is final */
    T(RF, E_PAID, OMS_OK, OMS_OK, RF, "", NULL),
    T(RF, E_COOK, OMS_OK, OMS_OK, RF, "", NULL),
    T(RF, E_READY, OMS_OK, OMS_OK, RF, "", NULL),
    T(RF, E_CANCEL, OMS_OK, OMS_OK, RF, "", NULL),
    T(RF, E_FAIL, OMS_OK, OMS_OK, RF, "", NULL),
    T(RF, E_REFUND, OMS_OK, OMS_OK, RF, "", NULL),
    /* stock refuses a commit (a cancel or the deadline released it): the money goes back */
    T(WP, E_PAID, OMS_CONFLICT, OMS_OK, RF, "commit", "stock_unavailable"),
    T(WP, E_PAID, OMS_NOTFOUND, OMS_OK, RF, "commit", "stock_unavailable"),
    T(WP, E_COOK, OMS_CONFLICT, OMS_OK, RF, "commit", "stock_unavailable"),
    T(PE, E_READY, OMS_CONFLICT, OMS_OK, RF, "commit", "stock_unavailable"),
    /* stock unreachable: retried later, nothing recorded */
    T(WP, E_PAID, OMS_UNAVAILABLE, OMS_UNAVAILABLE, WP, "commit", NULL),
    T(WP, E_PAID, OMS_ERR, OMS_ERR, WP, "commit", NULL),
    /* stock refuses a release (committed to a payment): acknowledged, the payment wins */
    T(WP, E_CANCEL, OMS_CONFLICT, OMS_OK, WP, "release", NULL),
    T(WP, E_FAIL, OMS_CONFLICT, OMS_OK, WP, "release", NULL),
    T(WP, E_CANCEL, OMS_NOTFOUND, OMS_OK, CX, "release", NULL),
    T(WP, E_CANCEL, OMS_UNAVAILABLE, OMS_UNAVAILABLE, WP, "release", NULL),
    /* a refund before payment: the release may be refused (units stay sold) */
    T(WP, E_REFUND, OMS_CONFLICT, OMS_OK, RF, "release", NULL),
    T(WP, E_REFUND, OMS_NOTFOUND, OMS_OK, RF, "release", NULL),
    T(WP, E_REFUND, OMS_UNAVAILABLE, OMS_UNAVAILABLE, WP, "release", NULL),
    T(CX, E_REFUND, OMS_NOTFOUND, OMS_OK, RF, "release", NULL),
    /* no stock call at all where none is needed, whatever stock would answer */
    T(CX, E_PAID, OMS_CONFLICT, OMS_OK, RF, "", "order_cancelled"),
    T(PD, E_REFUND, OMS_CONFLICT, OMS_OK, RF, "", NULL),
    T(PD, E_CANCEL, OMS_CONFLICT, OMS_OK, PD, "", NULL),
    /* events that cannot apply: dead-lettered, nothing recorded */
    T(WP, E_GHOST, OMS_OK, OMS_INVALID, WP, "", NULL),
    T(WP, E_GARBAGE, OMS_OK, OMS_INVALID, WP, "", NULL),
    T(WP, E_OTHER, OMS_OK, OMS_INVALID, WP, "", NULL),
};

static void transition_name(const transition_row *r, char *out, size_t n)
{
    snprintf(out, n, "%s + %s%s%s%s", status_name(r->start), events[r->event].label,
             r->stock_rc != OMS_OK ? " (stock " : "",
             r->stock_rc != OMS_OK ? rc_name(r->stock_rc) : "", r->stock_rc != OMS_OK ? ")" : "");
}

static void test_transition(void **state)
{
    fixture *f = *state;
    const transition_row *r = f->row;
    char name[160];
    transition_name(r, name, sizeof(name));
    make_order(f, r->start);
    mark_start(f);
    script_push(&f->stock, r->stock_rc);
    oms_error err;
    int rc = deliver(f, r->event, "msg-1", &err);
    if (rc != r->rc)
        fail_msg("%s: %s (%s), want %s", name, rc_name(rc), err.msg, rc_name(r->rc));

    char out[160] = "";
    if (r->refund)
        snprintf(out, sizeof(out), "order.refunded/refunded:%s", r->refund);
    expect_end(f, name, r->end, r->calls, out);

    /* The history: one row per move, naming where it went and why. */
    text_rows h;
    oms_db_param p[] = {OMS_DB_S(f->order_id), OMS_DB_I(f->history_base)};
    query_text(f,
               "SELECT status, cause FROM order_history WHERE order_id = $1"
               " AND rowid > $2 ORDER BY rowid",
               p, 2, &h);
    int moved = r->end != r->start;
    if (h.n != moved)
        fail_msg("%s: %d new history rows, want %d", name, h.n, moved);
    if (moved) {
        const char *cause = r->refund ? r->refund : events[r->event].cause;
        assert_string_equal(h.text[0][0], status_name(r->end));
        if (strncmp(h.text[0][1], cause, strlen(cause)) != 0)
            fail_msg("%s: history cause '%s', want '%s...'", name, h.text[0][1], cause);
    }
    long long claimed = query_int(f, "SELECT COUNT(*) FROM inbox WHERE message_id = 'msg-1'", NULL);
    if (claimed != (r->rc == OMS_OK))
        fail_msg("%s: inbox holds the message %lld times, want %d", name, claimed, r->rc == OMS_OK);
}

/* ---- step language (sequences) -------------------------------------------------------
 * Tokens separated by spaces, run in order; each action names the status it must return:
 *   <event>#<message id>=<rc>    orders_handle_event on the row's order (events[].name)
 *   new:<cust>/<key|->/<items>=<rc>[>L]
 *                                orders_create; items "1x2+2x1"; on success the new order
 *                                becomes the row's order, and ">L" names it: the first use
 *                                of a label must be a new order, a later use the same one
 *   cancel:<cust>=<rc>           orders_cancel of the row's order by that customer
 *   wait=<rc>                    orders_update to waiting_payment with an https link
 *   stock:<rc>                   the next stock call answers rc
 *   limit:<n>                    max_open_orders = n
 *   history=<n> outbox=<n> orders=<n> inbox=<n>
 *                                counts: history rows and events since the row started,
 *                                orders and inbox ids in all */

static const char *find_label(fixture *f, char name)
{
    for (int i = 0; i < f->nlabels; i++)
        if (f->labels[i].name == name)
            return f->labels[i].id;
    return NULL;
}

static void bind_label(fixture *f, const char *row, const char *tok, char name, const char *id)
{
    const char *known = find_label(f, name);
    if (known) {
        if (strcmp(known, id) != 0)
            fail_msg("%s: %s: order %s, want the same order as before (%s)", row, tok, id, known);
        return;
    }
    for (int i = 0; i < f->nlabels; i++)
        if (strcmp(f->labels[i].id, id) == 0)
            fail_msg("%s: %s: order %s is %c's, want a new order", row, tok, id, f->labels[i].name);
    assert_true(f->nlabels < MAX_LABELS);
    f->labels[f->nlabels].name = name;
    snprintf(f->labels[f->nlabels].id, sizeof(f->labels[0].id), "%s", id);
    f->nlabels++;
}

static void step_count(fixture *f, const char *row, const char *what, long long want)
{
    long long got;
    if (strcmp(what, "history") == 0)
        got = history_rows(f) - f->history_base;
    else if (strcmp(what, "outbox") == 0)
        got = outbox_max(f) - f->outbox_base;
    else if (strcmp(what, "orders") == 0)
        got = query_int(f, "SELECT COUNT(*) FROM orders", NULL);
    else if (strcmp(what, "inbox") == 0)
        got = query_int(f, "SELECT COUNT(*) FROM inbox", NULL);
    else
        fail_msg("%s: unknown count '%s'", row, what);
    if (got != want)
        fail_msg("%s: %s=%lld, want %lld", row, what, got, want);
}

static int step_create(fixture *f, const char *row, const char *tok, char *args, char label,
                       oms_error *err)
{
    char *cust = args, *key = strchr(args, '/'), *items;
    assert_non_null(key);
    *key++ = '\0';
    items = strchr(key, '/');
    assert_non_null(items);
    *items++ = '\0';
    oms_order req, out;
    parse_items(items, &req);
    int rc = orders_create(&f->svc, cust, &req, strcmp(key, "-") == 0 ? NULL : key, &out, err);
    oms_order_free(&req);
    if (rc == OMS_OK) {
        snprintf(f->order_id, sizeof(f->order_id), "%s", out.order_id);
        if (label)
            bind_label(f, row, tok, label, out.order_id);
    }
    oms_order_free(&out);
    return rc;
}

static void run_steps(fixture *f, const char *row, const char *steps)
{
    char buf[512];
    char *save = NULL;
    snprintf(buf, sizeof(buf), "%s", steps);
    for (char *tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char t[128];
        snprintf(t, sizeof(t), "%s", tok);
        char *eq = strchr(t, '='), *colon = strchr(t, ':'), *hash = strchr(t, '#');
        if (strncmp(t, "stock:", 6) == 0) {
            script_push(&f->stock, rc_parse(t + 6));
            continue;
        }
        if (strncmp(t, "limit:", 6) == 0) {
            f->svc.max_open_orders = atoi(t + 6);
            continue;
        }
        if (!eq)
            fail_msg("%s: step '%s' has no '='", row, tok);
        *eq = '\0';
        char *want = eq + 1, label = 0;
        char *gt = strchr(want, '>');
        if (gt) {
            *gt = '\0';
            label = gt[1];
        }
        if (!colon && !hash && (want[0] >= '0' && want[0] <= '9')) {
            step_count(f, row, t, atoll(want));
            continue;
        }
        oms_error err;
        oms_error_clear(&err);
        int rc;
        if (strncmp(t, "new:", 4) == 0) {
            rc = step_create(f, row, tok, t + 4, label, &err);
        } else if (strncmp(t, "cancel:", 7) == 0) {
            oms_order out;
            oms_order_init(&out);
            rc = orders_cancel(&f->svc, f->order_id, t + 7, &out, &err);
            oms_order_free(&out);
        } else if (strcmp(t, "wait") == 0) {
            oms_order out;
            rc = orders_update(&f->svc, f->order_id, OMS_ORDER_WAITING_PAYMENT,
                               "https://pay.example/cs_1", &out, &err);
            oms_order_free(&out);
        } else if (hash) {
            *hash = '\0';
            size_t e = 0;
            while (e < OMS_NELEM(events) && strcmp(events[e].name, t) != 0)
                e++;
            if (e == OMS_NELEM(events))
                fail_msg("%s: unknown event '%s'", row, t);
            rc = deliver(f, (ev)e, hash + 1, &err);
        } else {
            fail_msg("%s: unknown step '%s'", row, tok);
            return;
        }
        if (rc != rc_parse(want))
            fail_msg("%s: step '%s': %s (%s), want %s", row, tok, rc_name(rc), err.msg, want);
    }
}

/* ---- table: sequences ----------------------------------------------------------------
 * start: the order's status before the steps (NONE: no order yet). end: the row's order's
 * status after them. calls: every stock call of the steps. out: the events written. */

typedef struct sequence_row {
    const char *name;
    int start;
    const char *steps;
    int end;
    const char *calls;
    const char *out;
} sequence_row;

#define S(name, start, steps, end, calls, out)                                                     \
    {                                                                                              \
        name, start, steps, end, calls, out                                                        \
    }
#define CREATED "order.created/pending"
#define CANCELLED "order.cancelled/cancelled:cancelled"
#define REFUNDED_CX "order.refunded/refunded:order_cancelled"

static const sequence_row sequences[] = {
    /* the inbox: one effect per message id */
    S("same order.paid twice", WP, "paid#m1=ok paid#m1=dup history=1 inbox=1", PD, "commit", ""),
    S("same late payment twice", CX, "paid#m1=ok paid#m1=dup outbox=1", RF, "", REFUNDED_CX),
    S("same cancel twice", WP, "cancelled#m1=ok cancelled#m1=dup history=1", CX, "release", ""),
    S("order.paid under two ids", WP, "paid#m1=ok paid#m2=ok history=1 inbox=2", PD, "commit", ""),
    S("redelivery after a stock outage", WP, "stock:unavail paid#m1=unavail inbox=0 paid#m1=ok", PD,
      "commit commit", ""),
    S("redelivered cancel after a stock outage", WP,
      "stock:unavail cancelled#m1=unavail history=0 cancelled#m1=ok", CX, "release release", ""),
    /* out of order, never backwards */
    S("cooking before paid", WP, "cooking#m1=ok paid#m2=ok history=1", CK, "commit", ""),
    S("ready before cooking", PD, "ready#m1=ok cooking#m2=ok history=1", RD, "", ""),
    S("ready then paid", WP, "ready#m1=ok paid#m2=ok history=1", RD, "commit", ""),
    S("the whole chain, then repeats", PE,
      "paid#m1=ok cooking#m2=ok ready#m3=ok paid#m4=ok cooking#m5=ok history=3", RD, "commit", ""),
    /* races decided by stock */
    S("cancel loses to a payment", WP, "stock:conflict cancelled#m1=ok history=0 paid#m2=ok", PD,
      "release commit", ""),
    S("payment loses to a cancel", WP, "cancelled#m1=ok paid#m2=ok history=2", RF, "release",
      REFUNDED_CX),
    S("payment loses to the deadline", WP, "stock:conflict paid#m1=ok cancelled#m2=ok history=1",
      RF, "commit", "order.refunded/refunded:stock_unavailable"),
    S("refund after payment", WP, "paid#m1=ok refunded#m2=ok cooking#m3=ok", RF, "commit", ""),
    /* orders_cancel: the customer's cancel before payment */
    S("customer cancels a waiting order", WP, "cancel:cust-1=ok history=1", CX, "release",
      CANCELLED),
    S("customer cancels a pending order", PE, "cancel:cust-1=ok", CX, "release", CANCELLED),
    S("customer cancels twice", WP, "cancel:cust-1=ok cancel:cust-1=ok history=1", CX, "release",
      CANCELLED),
    S("someone else's order", WP, "cancel:cust-2=notfound", WP, "", ""),
    S("no customer", WP, "cancel:=notfound", WP, "", ""),
    S("cancel while being paid", WP, "stock:conflict cancel:cust-1=conflict history=0", WP,
      "release", ""),
    S("cancel, nothing reserved", WP, "stock:notfound cancel:cust-1=ok", CX, "release", CANCELLED),
    S("cancel, stock down", WP, "stock:unavail cancel:cust-1=unavail", WP, "release", ""),
    S("cancel a paid order", PD, "cancel:cust-1=conflict", PD, "", ""),
    S("cancel a ready order", RD, "cancel:cust-1=conflict", RD, "", ""),
    S("cancel a refunded order", RF, "cancel:cust-1=conflict", RF, "", ""),
    S("cancel a cancelled order", CX, "cancel:cust-1=ok", CX, "", ""),
    S("cancel, then the deadline's event", WP, "cancel:cust-1=ok cancelled#m1=ok history=1", CX,
      "release", CANCELLED),
    /* orders_create: the idempotency key */
    S("same key, same items", NONE, "new:cust-1/k1/1x2+2x1=ok>A new:cust-1/k1/1x2+2x1=ok>A", PE,
      "reserve", CREATED),
    S("same key, items reordered", NONE, "new:cust-1/k1/1x2+2x1=ok>A new:cust-1/k1/2x1+1x2=ok>A",
      PE, "reserve", CREATED),
    S("same key, lines merged", NONE, "new:cust-1/k1/1x3=ok>A new:cust-1/k1/1x1+1x2=ok>A", PE,
      "reserve", CREATED),
    S("same key, other quantity", NONE,
      "new:cust-1/k1/1x2+2x1=ok>A new:cust-1/k1/1x2+2x2=keyreused orders=1", PE, "reserve",
      CREATED),
    S("same key, extra item", NONE, "new:cust-1/k1/1x2=ok>A new:cust-1/k1/1x2+3x1=keyreused", PE,
      "reserve", CREATED),
    S("same key, fewer items", NONE, "new:cust-1/k1/1x2+2x1=ok>A new:cust-1/k1/1x2=keyreused", PE,
      "reserve", CREATED),
    S("same key, other customer", NONE, "new:cust-1/k1/1x2=ok>A new:cust-2/k1/1x2=ok>B orders=2",
      PE, "reserve reserve", CREATED " " CREATED),
    S("no key, twice", NONE, "new:cust-1/-/1x2=ok>A new:cust-1/-/1x2=ok>B", PE, "reserve reserve",
      CREATED " " CREATED),
    S("stock refuses, the key stays free", NONE,
      "stock:conflict new:cust-1/k1/1x2=conflict orders=0 new:cust-1/k1/1x2=ok>A", PE,
      "reserve reserve", CREATED),
    S("invalid key", NONE, "new:cust-1/k!1/1x2=invalid orders=0", NONE, "", ""),
    S("invalid customer", NONE, "new:c!1/-/1x2=invalid orders=0", NONE, "", ""),
    S("invalid quantity", NONE, "new:cust-1/-/1x0=invalid orders=0", NONE, "", ""),
    /* orders_create: unpaid orders per customer (MAX_OPEN_ORDERS) */
    S("limit: third unpaid order", NONE,
      "limit:2 new:cust-1/-/1x1=ok>A new:cust-1/-/1x1=ok>B new:cust-1/-/1x1=limited orders=2", PE,
      "reserve reserve", CREATED " " CREATED),
    S("limit: waiting_payment counts", NONE,
      "limit:1 new:cust-1/-/1x1=ok>A wait=ok new:cust-1/-/1x1=limited", WP, "reserve", CREATED),
    S("limit: paid does not count", NONE,
      "limit:1 new:cust-1/-/1x1=ok>A paid#m1=ok new:cust-1/-/1x1=ok>B", PE,
      "reserve commit reserve", CREATED " " CREATED),
    S("limit: cancelled does not count", NONE,
      "limit:1 new:cust-1/-/1x1=ok>A cancel:cust-1=ok new:cust-1/-/1x1=ok>B", PE,
      "reserve release reserve", CREATED " " CANCELLED " " CREATED),
    S("limit: per customer", NONE, "limit:1 new:cust-1/-/1x1=ok>A new:cust-2/-/1x1=ok>B", PE,
      "reserve reserve", CREATED " " CREATED),
    S("limit: a repeated key at the limit", NONE,
      "limit:1 new:cust-1/k1/1x1=ok>A new:cust-1/k1/1x1=ok>A new:cust-1/k2/1x1=limited", PE,
      "reserve", CREATED),
};

static void test_sequence(void **state)
{
    fixture *f = *state;
    const sequence_row *r = f->row;
    if (r->start != NONE)
        make_order(f, r->start);
    mark_start(f);
    run_steps(f, r->name, r->steps);
    expect_end(f, r->name, r->end, r->calls, r->out);
}

/* ---- table: updates (orders_update, the gRPC UpdateOrder) ----------------------------
 * Strict: a forbidden move is OMS_CONFLICT, and so is paid when stock refuses. A moved
 * order gets one history row with the cause "UpdateOrder"; link, when set and accepted,
 * is stored. */

typedef struct update_row {
    int start;
    int status; /* -1: link only */
    const char *link;
    int stock_rc;
    int rc;
    int end;
    const char *calls;
    const char *out;
} update_row;

#define U(start, status, link, stock_rc, rc, end, calls, out)                                      \
    {                                                                                              \
        start, status, link, stock_rc, rc, end, calls, out                                         \
    }
#define LINK "https://pay.example/cs_1"

static const update_row updates[] = {
    U(PE, WP, LINK, OMS_OK, OMS_OK, WP, "", ""),
    U(WP, WP, NULL, OMS_OK, OMS_OK, WP, "", ""),
    U(WP, WP, LINK, OMS_OK, OMS_OK, WP, "", ""),
    U(WP, -1, LINK, OMS_OK, OMS_OK, WP, "", ""),
    U(WP, PD, NULL, OMS_OK, OMS_OK, PD, "commit", ""),
    U(WP, PD, NULL, OMS_CONFLICT, OMS_CONFLICT, WP, "commit", ""),
    U(WP, PD, NULL, OMS_UNAVAILABLE, OMS_UNAVAILABLE, WP, "commit", ""),
    U(PD, CK, NULL, OMS_OK, OMS_OK, CK, "", ""),
    U(PD, WP, LINK, OMS_OK, OMS_CONFLICT, PD, "", ""),
    U(RD, CK, NULL, OMS_OK, OMS_CONFLICT, RD, "", ""),
    U(WP, CX, NULL, OMS_OK, OMS_OK, CX, "release", "order.cancelled/cancelled:UpdateOrder"),
    U(WP, CX, NULL, OMS_CONFLICT, OMS_CONFLICT, WP, "release", ""),
    U(WP, PF, NULL, OMS_OK, OMS_OK, PF, "release", "order.cancelled/payment_failed:UpdateOrder"),
    U(PD, CX, NULL, OMS_OK, OMS_CONFLICT, PD, "", ""),
    U(CX, PD, NULL, OMS_OK, OMS_CONFLICT, CX, "", ""),
    U(WP, RF, NULL, OMS_OK, OMS_OK, RF, "release", "order.refunded/refunded:UpdateOrder"),
    U(RD, RF, NULL, OMS_OK, OMS_OK, RF, "", "order.refunded/refunded:UpdateOrder"),
    U(RF, RF, NULL, OMS_OK, OMS_OK, RF, "", ""),
    U(RF, CX, NULL, OMS_OK, OMS_CONFLICT, RF, "", ""),
};

static void update_name(const update_row *r, char *out, size_t n)
{
    snprintf(out, n, "UpdateOrder %s -> %s%s%s", status_name(r->start),
             r->status < 0 ? "(link only)" : status_name(r->status),
             r->stock_rc != OMS_OK ? ", stock " : "",
             r->stock_rc != OMS_OK ? rc_name(r->stock_rc) : "");
}

static void test_update(void **state)
{
    fixture *f = *state;
    const update_row *r = f->row;
    char name[160];
    update_name(r, name, sizeof(name));
    make_order(f, r->start);
    mark_start(f);
    script_push(&f->stock, r->stock_rc);
    oms_order out;
    oms_error err;
    oms_error_clear(&err);
    int rc = orders_update(&f->svc, f->order_id, r->status, r->link, &out, &err);
    if (rc != r->rc)
        fail_msg("%s: %s (%s), want %s", name, rc_name(rc), err.msg, rc_name(r->rc));
    if (rc == OMS_OK) {
        assert_string_equal(out.order_id, f->order_id);
        assert_int_equal(out.status, r->end);
    }
    oms_order_free(&out);
    expect_end(f, name, r->end, r->calls, r->out);
    long long moved = history_rows(f) - f->history_base;
    if (moved != (r->end != r->start))
        fail_msg("%s: %lld history rows, want %d", name, moved, r->end != r->start);
    if (moved)
        assert_int_equal(
            query_int(f, "SELECT COUNT(*) FROM order_history WHERE cause = $1", "UpdateOrder"), 1);
    text_rows t;
    oms_db_param p[] = {OMS_DB_S(f->order_id)};
    query_text(f, "SELECT COALESCE(payment_link, '') FROM orders WHERE id = $1", p, 1, &t);
    const char *want = rc == OMS_OK && r->link ? r->link : "";
    if (strcmp(t.text[0][0], want) != 0)
        fail_msg("%s: link '%s', want '%s'", name, t.text[0][0], want);
}

/* ---- table: links (orders_update's PaymentLink) --------------------------------------
 * Only https:, or this shop's own local checkout (LOCAL_CHECKOUT/checkout/<id>); never a
 * space, quote, angle bracket or control character. pad > 0: an https link of exactly
 * pad characters. no_local: the service has no local checkout URL. */

typedef struct link_row {
    const char *link;
    size_t pad;
    int no_local;
    int rc;
} link_row;

#define L(link, rc)                                                                                \
    {                                                                                              \
        link, 0, 0, rc                                                                             \
    }

static const link_row links[] = {
    L("https://checkout.stripe.com/c/pay/cs_test_1", OMS_OK),
    L("https://x", OMS_OK),
    L("https://", OMS_INVALID),
    L(LOCAL_CHECKOUT "/checkout/cs_local_1", OMS_OK),
    L(LOCAL_CHECKOUT "/checkout/", OMS_INVALID),
    L(LOCAL_CHECKOUT "/checkout", OMS_INVALID),
    L(LOCAL_CHECKOUT "/other/cs_local_1", OMS_INVALID),
    L(LOCAL_CHECKOUT "1/checkout/x", OMS_INVALID),
    L(LOCAL_CHECKOUT ".evil.example/checkout/x", OMS_INVALID),
    L(LOCAL_CHECKOUT "@evil.example/checkout/x", OMS_INVALID),
    L("http://evil.example/checkout/x", OMS_INVALID),
    L("http://localhost:8082/checkout/x", OMS_INVALID),
    L("javascript:alert(1)", OMS_INVALID),
    L("JavaScript:alert(1)", OMS_INVALID),
    L("data:text/html,<b>x</b>", OMS_INVALID),
    L("//evil.example/x", OMS_INVALID),
    L("HTTPS://example.com/x", OMS_OK), /* schemes are case-insensitive */
    L(LOCAL_CHECKOUT "/checkout/../admin", OMS_INVALID),
    L("https://example.com/x'onclick=y", OMS_INVALID),
    L("https://example.com/x\\y", OMS_INVALID),
    L("https://example.com/`x`", OMS_INVALID),
    L("ftp://example.com/x", OMS_INVALID),
    L(" https://example.com/x", OMS_INVALID),
    L("https://example.com/x y", OMS_INVALID),
    L("https://example.com/x\ty", OMS_INVALID),
    L("https://example.com/x\ny", OMS_INVALID),
    L("https://example.com/x\r", OMS_INVALID),
    L("https://example.com/\x01", OMS_INVALID),
    L("https://example.com/\x7f", OMS_INVALID),
    L("https://example.com/\"onclick=x", OMS_INVALID),
    L("https://example.com/<script>", OMS_INVALID),
    L("https://example.com/>", OMS_INVALID),
    L("", OMS_OK),     /* no link: nothing stored */
    L("none", OMS_OK), /* the original's "no link" */
    {NULL, 2048, 0, OMS_OK},
    {NULL, 2049, 0, OMS_INVALID},
    {LOCAL_CHECKOUT "/checkout/cs_local_1", 0, 1, OMS_INVALID},
    {"https://checkout.stripe.com/c/pay/cs_test_1", 0, 1, OMS_OK},
};

static void test_link(void **state)
{
    fixture *f = *state;
    const link_row *r = f->row;
    char *link = r->link ? strdup(r->link) : malloc(r->pad + 1);
    assert_non_null(link);
    if (!r->link) {
        memset(link, 'a', r->pad);
        memcpy(link, "https://example.com/", 20);
        link[r->pad] = '\0';
    }
    if (r->no_local)
        f->svc.local_checkout_url = NULL;
    make_order(f, WP);
    mark_start(f);
    oms_order out;
    oms_error err;
    oms_error_clear(&err);
    int rc = orders_update(&f->svc, f->order_id, -1, link, &out, &err);
    oms_order_free(&out);
    int stored = rc == OMS_OK && link[0] && strcmp(link, "none") != 0;
    int same = query_int(f, "SELECT COUNT(*) FROM orders WHERE COALESCE(payment_link, '') = $1",
                         stored ? link : "") == 1;
    char shown[80];
    size_t len = strlen(link);
    snprintf(shown, sizeof(shown), "%.60s%s", link, len > 60 ? "..." : "");
    free(link);
    if (rc != r->rc)
        fail_msg("link '%s' (%zu chars): %s (%s), want %s", shown, len, rc_name(rc), err.msg,
                 rc_name(r->rc));
    if (!same)
        fail_msg("link '%s': %s", shown, stored ? "not stored" : "stored, want no link");
    if (rc != OMS_OK && !strstr(err.msg, "PaymentLink"))
        fail_msg("link '%s': the message names no field: %s", shown, err.msg);
    expect_end(f, shown, WP, "", "");
}

/* ---- table: lists (orders_list) ------------------------------------------------------
 * CUSTOMER has 5 orders and cust-2 one. A row lists one page: size, token ("" or a
 * literal; "next" walks every page of size page_size to the end). want: orders on the
 * page (for "next": on all pages, which must be all 5, newest first, each once). */

typedef struct list_row {
    const char *customer;
    int page_size;
    const char *token;
    int rc;
    int want;
    int more; /* a next token is given */
} list_row;

static const list_row lists[] = {
    {CUSTOMER, 0, "", OMS_OK, 5, 0},
    {CUSTOMER, 100, "", OMS_OK, 5, 0},
    {CUSTOMER, 5, "", OMS_OK, 5, 0},
    {CUSTOMER, 4, "", OMS_OK, 4, 1},
    {CUSTOMER, 1, "", OMS_OK, 1, 1},
    {CUSTOMER, 2, "next", OMS_OK, 5, 0},
    {CUSTOMER, 1, "next", OMS_OK, 5, 0},
    {"cust-2", 0, "", OMS_OK, 1, 0},
    {"nobody", 0, "", OMS_OK, 0, 0},
    {CUSTOMER, 0, "0.x", OMS_OK, 0, 0},
    {CUSTOMER, -1, "", OMS_INVALID, 0, 0},
    {CUSTOMER, 101, "", OMS_INVALID, 0, 0},
    {"", 0, "", OMS_INVALID, 0, 0},
    {"c!1", 0, "", OMS_INVALID, 0, 0},
    {CUSTOMER, 0, "abc", OMS_INVALID, 0, 0},
    {CUSTOMER, 0, "1.", OMS_INVALID, 0, 0},
    {CUSTOMER, 0, "-1.x", OMS_INVALID, 0, 0},
    {CUSTOMER, 0, "+1.x", OMS_INVALID, 0, 0},
    {CUSTOMER, 0, " 1.x", OMS_INVALID, 0, 0},
    {CUSTOMER, 0, "1x", OMS_INVALID, 0, 0},
    {CUSTOMER, 0, "1234567890123456789.x", OMS_INVALID, 0, 0},
    {CUSTOMER, 0, "1.a/b", OMS_INVALID, 0, 0},
};

static void test_list(void **state)
{
    fixture *f = *state;
    const list_row *r = f->row;
    char name[160];
    snprintf(name, sizeof(name), "list %s size %d token '%s'", r->customer, r->page_size, r->token);
    char ids[5][OMS_ID_MAX + 1];
    for (int i = 0; i < 5; i++) {
        make_order(f, PE);
        snprintf(ids[4 - i], sizeof(ids[0]), "%s", f->order_id); /* newest first */
        /* Distinct creation times: orders made in the same millisecond sort by id. */
        oms_db_param p[] = {OMS_DB_I(1000 + i), OMS_DB_S(f->order_id)};
        exec_sql(f, "UPDATE orders SET created_at = $1 WHERE id = $2", p, 2);
    }
    oms_order req, out;
    oms_error err;
    parse_items("1x1", &req);
    assert_int_equal(orders_create(&f->svc, "cust-2", &req, NULL, &out, &err), OMS_OK);
    oms_order_free(&req);
    oms_order_free(&out);

    int walk = strcmp(r->token, "next") == 0, seen = 0;
    char token[96] = "", next[96];
    snprintf(token, sizeof(token), "%s", walk ? "" : r->token);
    for (int page = 0; page < 10; page++) {
        oms_order *v = NULL;
        size_t n = 0;
        oms_error_clear(&err);
        int rc = orders_list(&f->svc, r->customer, r->page_size, token, &v, &n, next, &err);
        if (rc != r->rc)
            fail_msg("%s: %s (%s), want %s", name, rc_name(rc), err.msg, rc_name(r->rc));
        for (size_t i = 0; i < n; i++) {
            if (strcmp(r->customer, CUSTOMER) == 0) {
                if (seen + (int)i >= 5 || strcmp(v[i].order_id, ids[seen + i]) != 0)
                    fail_msg("%s: order %zu of page %d is %s, out of order", name, i, page,
                             v[i].order_id);
            }
            assert_string_equal(v[i].customer_id, r->customer);
            oms_order_free(&v[i]);
        }
        free(v);
        seen += (int)n;
        if (rc != OMS_OK)
            break;
        if (!walk) {
            if ((next[0] != '\0') != r->more)
                fail_msg("%s: next token '%s', want %s", name, next, r->more ? "one" : "none");
            break;
        }
        if (!next[0])
            break;
        snprintf(token, sizeof(token), "%s", next);
    }
    if (seen != r->want)
        fail_msg("%s: %d orders, want %d", name, seen, r->want);
}

/* ---- the asynchronous side's backlog ------------------------------------------------- */

static long long pending_now(fixture *f)
{
    oms_error err;
    if (orders_pending_tick(&f->svc, &err) != OMS_OK)
        fail_msg("pending tick: %s", err.msg);
    return atomic_load(&f->svc.pending);
}

static int try_create(fixture *f, oms_error *err)
{
    oms_order req, out;
    parse_items("1x1", &req);
    oms_error_clear(err);
    f->calls[0] = '\0';
    int rc = orders_create(&f->svc, "cust-backlog", &req, NULL, &out, err);
    oms_order_free(&req);
    oms_order_free(&out);
    return rc;
}

/* Past max_pending orders still waiting for their payment link (as last counted), a new
 * order is refused as an overload before stock is touched; one moving on lets the next
 * in; pending orders older than the window are stuck, not queued, and do not count. */
static void test_backlog(void **state)
{
    fixture *f = *state;
    f->svc.max_pending = 2;
    make_order(f, PE);
    char first[OMS_ID_MAX + 1];
    snprintf(first, sizeof(first), "%s", f->order_id);
    make_order(f, PE);
    assert_int_equal(pending_now(f), 2);

    oms_error err;
    long long orders_before = query_int(f, "SELECT COUNT(*) FROM orders", NULL);
    assert_int_equal(try_create(f, &err), OMS_LIMITED);
    if (strncmp(err.msg, OMS_OVERLOADED ": 2 orders are waiting for their payment link",
                strlen(OMS_OVERLOADED ": 2 orders are waiting for their payment link")) != 0)
        fail_msg("refusal says: %s", err.msg);
    assert_string_equal(f->calls, "");
    assert_int_equal(query_int(f, "SELECT COUNT(*) FROM orders", NULL), orders_before);

    oms_db_param p[] = {OMS_DB_S(first)};
    exec_sql(f, "UPDATE orders SET status = 'waiting_payment' WHERE id = $1", p, 1);
    assert_int_equal(pending_now(f), 1);
    assert_int_equal(try_create(f, &err), OMS_OK);
    assert_string_equal(f->calls, "reserve");
    assert_int_equal(pending_now(f), 2);
    assert_int_equal(try_create(f, &err), OMS_LIMITED);

    oms_db_param old[] = {OMS_DB_I(oms_now_ms() - ORDERS_PENDING_WINDOW_MS - 1000)};
    exec_sql(f, "UPDATE orders SET created_at = $1 WHERE status = 'pending'", old, 1);
    assert_int_equal(pending_now(f), 0);
    assert_int_equal(try_create(f, &err), OMS_OK);

    f->svc.max_pending = 0; /* no bound */
    assert_int_equal(pending_now(f), 1);
    f->svc.pending = 1000;
    assert_int_equal(try_create(f, &err), OMS_OK);
}

/* ---- the list of tests --------------------------------------------------------------- */

typedef void (*row_name_fn)(const void *row, char *out, size_t n);

static void name_transition(const void *row, char *out, size_t n)
{
    transition_name(row, out, n);
}

static void name_sequence(const void *row, char *out, size_t n)
{
    snprintf(out, n, "%s", ((const sequence_row *)row)->name);
}

static void name_update(const void *row, char *out, size_t n)
{
    update_name(row, out, n);
}

static void name_link(const void *row, char *out, size_t n)
{
    const link_row *r = row;
    if (!r->link)
        snprintf(out, n, "https link of %zu chars", r->pad);
    else
        snprintf(out, n, "'%s'%s", r->link, r->no_local ? " without a local checkout" : "");
    for (char *p = out; *p; p++) /* keep the test's name on one printable line */
        if ((unsigned char)*p < ' ' || *p == 0x7f)
            *p = '?';
}

static void name_list(const void *row, char *out, size_t n)
{
    const list_row *r = row;
    snprintf(out, n, "%s, size %d, token '%s'", r->customer, r->page_size, r->token);
}

/* Runs one table as a cmocka group: a test per row, named after the row. */
static int run_table(const char *group, const void *rows, size_t size, size_t n,
                     CMUnitTestFunction fn, row_name_fn name)
{
    struct CMUnitTest *tests = calloc(n, sizeof(*tests));
    char(*names)[160] = calloc(n, sizeof(*names));
    assert_non_null(tests);
    assert_non_null(names);
    for (size_t i = 0; i < n; i++) {
        const void *row = (const char *)rows + i * size;
        name(row, names[i], sizeof(names[i]));
        tests[i] = (struct CMUnitTest){names[i], fn, setup, teardown, (void *)row};
    }
    int failed = _cmocka_run_group_tests(group, tests, n, NULL, NULL);
    free(names);
    free(tests);
    return failed;
}

#define RUN_TABLE(group, table, fn, name)                                                          \
    run_table(group, table, sizeof(table[0]), OMS_NELEM(table), fn, name)

int main(void)
{
    /* Refunds log at error level by design; TEST_LOG_LEVEL=info shows the service's logs. */
    const char *lvl = getenv("TEST_LOG_LEVEL");
    int level = lvl ? oms_log_level_parse(lvl) : -1;
    oms_log_init("test_orders_rules", (oms_log_level)(level >= 0 ? level : OMS_LOG_ERROR + 1), 1);
    int failed = 0;
    failed += RUN_TABLE("orders.transitions", transitions, test_transition, name_transition);
    failed += RUN_TABLE("orders.sequences", sequences, test_sequence, name_sequence);
    failed += RUN_TABLE("orders.updates", updates, test_update, name_update);
    failed += RUN_TABLE("orders.links", links, test_link, name_link);
    failed += RUN_TABLE("orders.lists", lists, test_list, name_list);
    const struct CMUnitTest backlog[] = {
        cmocka_unit_test_setup_teardown(test_backlog, setup, teardown)};
    failed += cmocka_run_group_tests_name("orders.backlog", backlog, NULL, NULL);
    return failed ? 1 : 0;
}
