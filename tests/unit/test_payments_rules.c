/* The payments service's rules (payments/service.c) as tables of cases, through its
 * ports: a real in-memory SQLite holds the checkout sessions, refunds, outbox and inbox;
 * fakes of the orders port, the stock port and the processor vtable record every call
 * and answer from a script. Each row is (starting session status, steps, expected
 * session status, expected port calls, expected events), so changing a webhook
 * outcome, a refund rule or the deadline fails the row that describes it. Each row runs
 * as a test of its own, named after it.
 *
 * Tables (one row type, one step language, see run_steps):
 *   webhooks   one signed Stripe event against a session in each state
 *   sequences  events in order: duplicates, redeliveries, events racing each other
 *   deadline   payments_expire_due and the local checkout's Pay/Cancel
 *   consumers  order.created, order.cancelled and order.refunded deliveries */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "oms/db.h"
#include "oms/log.h"
#include "oms/order.h"
#include "oms/util.h"
#include "../../payments/service.h" /* every core's folder is on the include path: be explicit */
#include "../../payments/signature.h"

#define ORDER_ID "ord-1"
#define CUSTOMER "cust-1"
#define TOTAL 1400
#define SECRET "whsec_test"
#define TTL_MS 60000
#define MAX_SCRIPT 16

/* The order as orders publishes it in order.created: 2 x 450 + 2 x 250 = 1400 usd. */
#define ORDER_JSON(status, reason)                                                                 \
    "{\"orderID\":\"" ORDER_ID "\",\"customerID\":\"" CUSTOMER "\",\"status\":\"" status "\","     \
    "\"PaymentLink\":\"none\",\"total\":1400,\"currency\":\"usd\","                                \
    "\"createdAt\":\"2026-01-02T03:04:05.000Z\",\"updatedAt\":\"2026-01-02T03:04:05.000Z\","       \
    "\"items\":[{\"productID\":\"1\",\"productName\":\"Cheese\",\"quantity\":2,"                   \
    "\"priceID\":\"p1\",\"unitPrice\":450},{\"productID\":\"2\",\"productName\":\"Chocolate\","    \
    "\"quantity\":2,\"priceID\":\"p2\",\"unitPrice\":250}]" reason "}"

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

/* ---- fixture: a database, the service and fakes of its ports -------------------------- */

typedef struct script {
    int rc[MAX_SCRIPT];
    int n, pos;
} script;

typedef struct fixture {
    const void *row; /* the table row this test runs */
    oms_db *db;
    payments_service svc;
    payments_processor_config pcfg;
    char calls[512];            /* port calls since the row's start, space-separated */
    script stock, proc, orders; /* answers of the next calls; OMS_OK once used up */
    int notifies;               /* outbox_notify calls */
    long long outbox_base;      /* outbox rows before the row's steps */
    long long inbox_base;       /* inbox rows before the row's steps */
    int sessions_made, refunds_made;
    long long expires_at_s; /* the deadline the processor was given */
    char link[256];         /* the last link given to orders */
} fixture;

/* The processor vtable has no user data: its fakes reach the running test here. */
static fixture *g_fx;

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

static int fake_create_session(const payments_processor_config *cfg, const oms_order *o,
                               long long expires_at_s, payments_session *out, oms_error *err)
{
    fixture *f = g_fx;
    log_call(f, "create");
    memset(out, 0, sizeof(*out));
    int rc = script_next(&f->proc);
    if (rc != OMS_OK)
        return oms_error_set(err, rc, "fake processor: cannot open a session for %s", o->order_id);
    f->expires_at_s = expires_at_s;
    snprintf(out->id, sizeof(out->id), "cs_test_%d", ++f->sessions_made);
    char url[sizeof(out->id) + 32];
    snprintf(url, sizeof(url), "https://pay.example/%s", out->id);
    out->url = strdup(url);
    return OMS_OK;
}

static int fake_expire_session(const payments_processor_config *cfg, const char *session_id,
                               const char *order_id, oms_error *err)
{
    fixture *f = g_fx;
    log_call(f, "expire");
    int rc = script_next(&f->proc);
    if (rc != OMS_OK)
        return oms_error_set(err, rc, "fake processor: cannot expire %s", session_id);
    return OMS_OK;
}

/* Logged as refund:<payment intent>/<amount><currency>/<reason label>. */
static int fake_refund(const payments_processor_config *cfg, const payments_refund_req *r,
                       char *refund_id, oms_error *err)
{
    fixture *f = g_fx;
    char what[640];
    snprintf(what, sizeof(what), "refund:%s/%lld%s/%s", r->payment_intent, r->amount, r->currency,
             r->reason);
    log_call(f, what);
    int rc = script_next(&f->proc);
    if (rc != OMS_OK)
        return oms_error_set(err, rc, "fake processor: refund of %s refused", r->order_id);
    snprintf(refund_id, PAYMENTS_REFUND_ID_MAX + 1, "re_test_%d", ++f->refunds_made);
    return OMS_OK;
}

static const payment_processor fake_processor = {
    .name = "fake",
    .create_session = fake_create_session,
    .expire_session = fake_expire_session,
    .refund = fake_refund,
};

static int fake_set_waiting(void *ud, const char *order_id, const char *link, oms_error *err)
{
    fixture *f = ud;
    log_call(f, "waiting");
    snprintf(f->link, sizeof(f->link), "%s", link ? link : "");
    int rc = script_next(&f->orders);
    if (rc != OMS_OK)
        return oms_error_set(err, rc, "fake orders: order %s is cancelled", order_id);
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

static long long query_int(fixture *f, const char *sql)
{
    oms_db_tx *tx;
    oms_error err;
    long long v = -1;
    assert_int_equal(oms_db_begin(f->db, &tx, &err), OMS_OK);
    int rc = oms_db_query(tx, sql, NULL, 0, int_cb, &v, NULL, &err);
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

/* The order's session status, or "none". */
static void session_status(fixture *f, char *out, size_t n)
{
    text_rows t;
    query_text(f, "SELECT status FROM checkout_sessions WHERE order_id = '" ORDER_ID "'", NULL, 0,
               &t);
    snprintf(out, n, "%s", t.n ? t.text[0][0] : "none");
}

static long long outbox_max(fixture *f)
{
    return query_int(f, "SELECT COALESCE(MAX(id), 0) FROM outbox");
}

static long long inbox_rows(fixture *f)
{
    return query_int(f, "SELECT COUNT(*) FROM inbox");
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
        const char *link = json_string_value(json_object_get(j, "PaymentLink"));
        snprintf(out->ev[i], sizeof(out->ev[i]), "%s/%s%s%s", t.text[i][0], st ? st : "?",
                 why ? ":" : "", why ? why : "");
        size_t len = strlen(out->joined);
        snprintf(out->joined + len, sizeof(out->joined) - len, "%s%s", i ? " | " : "", out->ev[i]);
        /* The stored order goes out with the session's link and its items, whole. */
        if (!oid || strcmp(oid, ORDER_ID) != 0)
            fail_msg("outbox event for an unexpected order %s", oid ? oid : "(none)");
        if (!link || strncmp(link, "https://pay.example/cs_test_", 28) != 0)
            fail_msg("outbox event without the session's link: %s", link ? link : "(none)");
        /* A paid order carries its pickup code; nothing else does. */
        const char *code = json_string_value(json_object_get(j, "pickupCode"));
        int paid = strcmp(t.text[i][0], "order.paid") == 0;
        if (paid != (code != NULL) ||
            (code && (strlen(code) != 4 || strspn(code, "ACDEFGHJKMNPQRTUVWXY34679") != 4)))
            fail_msg("%s with pickupCode %s", t.text[i][0], code ? code : "(none)");
        if (json_integer_value(json_object_get(j, "total")) != TOTAL ||
            json_array_size(json_object_get(j, "items")) != 2)
            fail_msg("outbox event with another order's total or items: %s", t.text[i][1]);
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

/* ---- webhook events ----------------------------------------------------------------- */

typedef enum { SIG_OK, SIG_WRONG_SECRET, SIG_NONE, SIG_OLD, SIG_TAMPERED } sig_kind;

/* The Stripe events the tables send, by name. The session is the one order.created
 * opened (cs_test_1) unless session says otherwise ("": no data.object.id). */
static const struct {
    const char *name;
    const char *type;
    const char *session;
    long long amount; /* -1: no amount_total */
    const char *currency;
    const char *payment_status;
    const char *payment_intent; /* NULL: null */
    sig_kind sig;
} webhooks_sent[] = {
#define COMPLETED "checkout.session.completed"
    {"paid", COMPLETED, "cs_test_1", TOTAL, "usd", "paid", "pi_test", SIG_OK},
    {"paid-more", COMPLETED, "cs_test_1", TOTAL + 1, "usd", "paid", "pi_test", SIG_OK},
    {"paid-less", COMPLETED, "cs_test_1", TOTAL - 1, "usd", "paid", "pi_test", SIG_OK},
    {"paid-eur", COMPLETED, "cs_test_1", TOTAL, "eur", "paid", "pi_test", SIG_OK},
    {"paid-USD", COMPLETED, "cs_test_1", TOTAL, "USD", "paid", "pi_test", SIG_OK},
    {"paid-noamount", COMPLETED, "cs_test_1", -1, "usd", "paid", "pi_test", SIG_OK},
    {"paid-unpaid", COMPLETED, "cs_test_1", TOTAL, "usd", "unpaid", NULL, SIG_OK},
    {"paid-nopi", COMPLETED, "cs_test_1", TOTAL, "usd", "paid", NULL, SIG_OK},
    {"paid-unknown", COMPLETED, "cs_unknown", TOTAL, "usd", "paid", "pi_test", SIG_OK},
    {"paid-byorder", COMPLETED, "", TOTAL, "usd", "paid", "pi_test", SIG_OK},
    {"async-ok", "checkout.session.async_payment_succeeded", "cs_test_1", TOTAL, "usd", "paid",
     "pi_test", SIG_OK},
    {"async-fail", "checkout.session.async_payment_failed", "cs_test_1", TOTAL, "usd", "unpaid",
     NULL, SIG_OK},
    {"expired", "checkout.session.expired", "cs_test_1", TOTAL, "usd", "unpaid", NULL, SIG_OK},
    {"other", "payment_intent.succeeded", "pi_test", TOTAL, "usd", "paid", "pi_test", SIG_OK},
    {"malformed", NULL, NULL, 0, NULL, NULL, NULL, SIG_OK},
    {"badsig", COMPLETED, "cs_test_1", TOTAL, "usd", "paid", "pi_test", SIG_WRONG_SECRET},
    {"nosig", COMPLETED, "cs_test_1", TOTAL, "usd", "paid", "pi_test", SIG_NONE},
    {"oldsig", COMPLETED, "cs_test_1", TOTAL, "usd", "paid", "pi_test", SIG_OLD},
    {"tampered", COMPLETED, "cs_test_1", TOTAL, "usd", "paid", "pi_test", SIG_TAMPERED},
#undef COMPLETED
};

static int find_webhook(const char *name)
{
    for (size_t i = 0; i < OMS_NELEM(webhooks_sent); i++)
        if (strcmp(webhooks_sent[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* A Stripe-shaped event; amount overrides the row's. Heap string (caller frees). */
static char *webhook_body(int w, const char *event_id, long long amount)
{
    if (!webhooks_sent[w].type)
        return strdup("{\"id\":\"evt_1\",\"type\":");
    json_t *obj =
        json_pack("{s:s, s:s, s:s, s:{s:s, s:s}}", "object", "checkout.session", "payment_status",
                  webhooks_sent[w].payment_status, "currency", webhooks_sent[w].currency,
                  "metadata", "orderID", ORDER_ID, "customerID", CUSTOMER);
    assert_non_null(obj);
    if (webhooks_sent[w].session[0])
        json_object_set_new(obj, "id", json_string(webhooks_sent[w].session));
    if (amount >= 0)
        json_object_set_new(obj, "amount_total", json_integer(amount));
    json_object_set_new(obj, "payment_intent",
                        webhooks_sent[w].payment_intent
                            ? json_string(webhooks_sent[w].payment_intent)
                            : json_null());
    json_t *evt = json_pack("{s:s, s:s, s:s, s:{s:o}}", "id", event_id, "object", "event", "type",
                            webhooks_sent[w].type, "data", "object", obj);
    assert_non_null(evt);
    char *s = json_dumps(evt, JSON_COMPACT);
    json_decref(evt);
    assert_non_null(s);
    return s;
}

static int send_webhook(fixture *f, int w, const char *event_id, oms_error *err)
{
    char *body = webhook_body(w, event_id, webhooks_sent[w].amount);
    char header[256];
    int64_t t = (int64_t)time(NULL);
    sig_kind k = webhooks_sent[w].sig;
    if (k == SIG_OLD)
        t -= PAYMENTS_SIGNATURE_TOLERANCE_S + 60;
    assert_int_equal(payments_signature_header(k == SIG_WRONG_SECRET ? "whsec_other" : SECRET, body,
                                               strlen(body), t, header, sizeof(header)),
                     OMS_OK);
    if (k == SIG_TAMPERED) { /* signed for the right amount, sent for one cent */
        free(body);
        body = webhook_body(w, event_id, 1);
    }
    oms_error_clear(err);
    int rc = payments_webhook(&f->svc, k == SIG_NONE ? NULL : header, body, strlen(body), err);
    free(body);
    return rc;
}

/* ---- order events payments consumes ------------------------------------------------- */

static const struct {
    const char *name;
    const char *body;
} consumed[] = {
    {"created", ORDER_JSON("pending", "")},
    {"cancelled", ORDER_JSON("cancelled", ",\"reason\":\"cancelled by the customer\"")},
    {"cancelled-failed", ORDER_JSON("payment_failed", ",\"reason\":\"payment failed\"")},
    {"refunded", ORDER_JSON("refunded", ",\"reason\":\"stock_unavailable: released\"")},
    {"refunded-mismatch", ORDER_JSON("refunded", ",\"reason\":\"amount_mismatch: paid 1 eur\"")},
    {"refunded-staff", ORDER_JSON("refunded", ",\"reason\":\"staff\"")},
    {"refunded-other", ORDER_JSON("refunded", ",\"reason\":\"lost in the post\"")},
    {"refunded-noreason", ORDER_JSON("refunded", "")},
    {"created-garbage", "{\"orderID\":"},
};

static int deliver(fixture *f, const char *what, const char *message_id, oms_error *err)
{
    size_t i = 0;
    while (i < OMS_NELEM(consumed) && strcmp(consumed[i].name, what) != 0)
        i++;
    if (i == OMS_NELEM(consumed))
        return -100; /* not a consumed event */
    const char *body = consumed[i].body;
    size_t len = strlen(body);
    oms_error_clear(err);
    if (strncmp(what, "created", 7) == 0)
        return payments_handle_order_created(&f->svc, "payments.order.created", message_id, body,
                                             len, err);
    if (strncmp(what, "cancelled", 9) == 0)
        return payments_handle_order_cancelled(&f->svc, "payments.order.cancelled", message_id,
                                               body, len, err);
    return payments_handle_order_refunded(&f->svc, "payments.order.refunded", message_id, body, len,
                                          err);
}

/* ---- setup ----------------------------------------------------------------------------- */

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    oms_error err;
    if (!f)
        return -1;
    f->row = *state;
    if (payments_store_open(&f->db, ":memory:", &err) != OMS_OK) {
        fprintf(stderr, "open :memory:: %s\n", err.msg);
        free(f);
        return -1;
    }
    f->pcfg = (payments_processor_config){.gateway_url = "http://localhost:8080",
                                          .public_url = "http://localhost:8081"};
    f->svc.db = f->db;
    f->svc.processor = &fake_processor;
    f->svc.pcfg = &f->pcfg;
    f->svc.orders = (payments_orders_port){fake_set_waiting, f};
    f->svc.stock = (payments_stock_port){fake_commit, fake_release, f};
    f->svc.checkout_ttl_ms = TTL_MS;
    f->svc.webhook_secret = SECRET;
    f->svc.gateway_url = "http://localhost:8080";
    f->svc.outbox_notify = count_notify;
    f->svc.outbox_ud = f;
    g_fx = f;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    oms_db_close(f->db);
    g_fx = NULL;
    free(f);
    return 0;
}

/* Opens the order's session through order.created, then puts it in status start (a
 * direct write: the starting state, not a transition under test). "paid" and
 * "refunded" sessions carry the payment intent pi_test; "paid-nopi" none. */
static void make_session(fixture *f, const char *start)
{
    oms_error err;
    if (strcmp(start, "none") == 0)
        return;
    int rc = deliver(f, "created", "created-0", &err);
    if (rc != OMS_OK)
        fail_msg("order.created: %s", err.msg);
    int nopi = strcmp(start, "paid-nopi") == 0;
    const char *st = nopi ? "paid" : start;
    int pi = !nopi && (strcmp(st, "paid") == 0 || strcmp(st, "refunded") == 0);
    oms_db_param p[] = {OMS_DB_S(st), pi ? OMS_DB_S("pi_test") : OMS_DB_NULLP};
    exec_sql(f, "UPDATE checkout_sessions SET status = $1, payment_intent = $2", p, 2);
}

static void mark_start(fixture *f)
{
    f->calls[0] = '\0';
    memset(&f->stock, 0, sizeof(f->stock));
    memset(&f->proc, 0, sizeof(f->proc));
    memset(&f->orders, 0, sizeof(f->orders));
    f->notifies = 0;
    f->outbox_base = outbox_max(f);
    f->inbox_base = inbox_rows(f);
}

/* ---- step language -------------------------------------------------------------------
 * Tokens separated by spaces, run in order; each action names the status it must return:
 *   <webhook>#<event id>=<rc>   payments_webhook with a signed event (webhooks_sent[])
 *   <event>#<message id>=<rc>   an order event delivery (consumed[])
 *   sweep=<n>|sweep=<rc>        payments_expire_due: OMS_OK closing n sessions, or rc
 *   pay=<rc> cancel=<rc>        payments_checkout_finish (the local checkout page)
 *   pay-unknown=<rc>            the same for a session that does not exist
 *   overdue                     the session's deadline is now in the past
 *   stock:<rc> proc:<rc> orders:<rc>
 *                               the next call of that port answers rc
 * and checks:
 *   inbox=<n> outbox=<n>        inbox ids / events added since the row started
 *   refunds=<n> sessions=<n>    rows in refunds / checkout_sessions
 *   pi=<intent>|pi=-            the session's payment intent (-: none)
 *   link=<url>                  the last link given to orders
 *   deadline                    expires_at is created_at + CHECKOUT_TTL, and the
 *                               processor was given the same deadline */

static void check_count(fixture *f, const char *row, const char *what, const char *want)
{
    char got[512];
    if (strcmp(what, "inbox") == 0)
        snprintf(got, sizeof(got), "%lld", inbox_rows(f) - f->inbox_base);
    else if (strcmp(what, "outbox") == 0)
        snprintf(got, sizeof(got), "%lld", outbox_max(f) - f->outbox_base);
    else if (strcmp(what, "refunds") == 0)
        snprintf(got, sizeof(got), "%lld", query_int(f, "SELECT COUNT(*) FROM refunds"));
    else if (strcmp(what, "sessions") == 0)
        snprintf(got, sizeof(got), "%lld", query_int(f, "SELECT COUNT(*) FROM checkout_sessions"));
    else if (strcmp(what, "link") == 0)
        snprintf(got, sizeof(got), "%s", f->link);
    else if (strcmp(what, "pi") == 0) {
        text_rows t;
        query_text(f, "SELECT COALESCE(payment_intent, '-') FROM checkout_sessions", NULL, 0, &t);
        snprintf(got, sizeof(got), "%s", t.n ? t.text[0][0] : "(no session)");
    } else
        fail_msg("%s: unknown check '%s'", row, what);
    if (strcmp(got, want) != 0)
        fail_msg("%s: %s=%s, want %s", row, what, got, want);
}

static void check_deadline(fixture *f, const char *row)
{
    long long ttl = query_int(f, "SELECT expires_at - created_at FROM checkout_sessions");
    long long at = query_int(f, "SELECT expires_at FROM checkout_sessions");
    if (ttl != TTL_MS)
        fail_msg("%s: deadline %lld ms after opening, want %d", row, ttl, TTL_MS);
    if (f->expires_at_s != at / 1000)
        fail_msg("%s: processor got deadline %lld, session has %lld", row, f->expires_at_s,
                 at / 1000);
}

static int run_action(fixture *f, const char *row, const char *tok, char *verb, oms_error *err)
{
    char *hash = strchr(verb, '#');
    const char *id = "";
    if (hash) {
        *hash = '\0';
        id = hash + 1;
    }
    int w = find_webhook(verb);
    if (hash && w >= 0)
        return send_webhook(f, w, id, err);
    if (hash) {
        int rc = deliver(f, verb, id, err);
        if (rc == -100)
            fail_msg("%s: unknown event '%s'", row, verb);
        return rc;
    }
    oms_error_clear(err);
    if (strcmp(verb, "pay") == 0 || strcmp(verb, "cancel") == 0 ||
        strcmp(verb, "pay-unknown") == 0) {
        payments_row out;
        const char *sid = strcmp(verb, "pay-unknown") == 0 ? "cs_unknown" : "cs_test_1";
        int rc = payments_checkout_finish(&f->svc, sid, strcmp(verb, "cancel") != 0, &out, err);
        payments_row_free(&out);
        return rc;
    }
    fail_msg("%s: unknown step '%s'", row, tok);
    return OMS_ERR;
}

static void run_steps(fixture *f, const char *row, const char *steps)
{
    char buf[512];
    char *save = NULL;
    snprintf(buf, sizeof(buf), "%s", steps);
    for (char *tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char t[128];
        snprintf(t, sizeof(t), "%s", tok);
        char *colon = strchr(t, ':'), *eq = strchr(t, '=');
        if (colon && (!eq || colon < eq)) { /* port:rc */
            *colon = '\0';
            script *s = strcmp(t, "stock") == 0    ? &f->stock
                        : strcmp(t, "proc") == 0   ? &f->proc
                        : strcmp(t, "orders") == 0 ? &f->orders
                                                   : NULL;
            if (!s)
                fail_msg("%s: unknown port '%s'", row, t);
            script_push(s, rc_parse(colon + 1));
            continue;
        }
        if (strcmp(t, "overdue") == 0) {
            oms_db_param p[] = {OMS_DB_I(oms_now_ms() - 1000)};
            exec_sql(f, "UPDATE checkout_sessions SET expires_at = $1", p, 1);
            continue;
        }
        if (strcmp(t, "deadline") == 0) {
            check_deadline(f, row);
            continue;
        }
        if (!eq)
            fail_msg("%s: step '%s' has no '='", row, tok);
        *eq = '\0';
        const char *want = eq + 1;
        if (strcmp(t, "inbox") == 0 || strcmp(t, "outbox") == 0 || strcmp(t, "refunds") == 0 ||
            strcmp(t, "sessions") == 0 || strcmp(t, "pi") == 0 || strcmp(t, "link") == 0) {
            check_count(f, row, t, want);
            continue;
        }
        oms_error err;
        oms_error_clear(&err);
        int rc;
        if (strcmp(t, "sweep") == 0) {
            size_t closed = 0;
            rc = payments_expire_due(&f->svc, &closed, &err);
            if (want[0] >= '0' && want[0] <= '9') {
                if (rc != OMS_OK || closed != (size_t)atoi(want))
                    fail_msg("%s: %s: %s (%s) closing %zu, want ok closing %s", row, tok,
                             rc_name(rc), err.msg, closed, want);
                continue;
            }
        } else {
            rc = run_action(f, row, tok, t, &err);
        }
        if (rc != rc_parse(want))
            fail_msg("%s: step '%s': %s (%s), want %s", row, tok, rc_name(rc), err.msg, want);
    }
}

/* ---- the tables ----------------------------------------------------------------------
 * start: the session's status before the steps ("none": no session). end: its status
 * after them. calls: every port call of the steps, in order. out: the events written.
 * Checked for every row besides: the relay is woken when, and only when, events are
 * written. */

typedef struct row {
    const char *name;
    const char *start;
    const char *steps;
    const char *end;
    const char *calls;
    const char *out;
} row;

#define P(name, start, steps, end, calls, out)                                                     \
    {                                                                                              \
        name, start, steps, end, calls, out                                                        \
    }
#define PAID "order.paid/paid"
#define EXPIRED "order.cancelled/cancelled:checkout_expired"
#define BACK_AMOUNT "order.refunded/refunded:amount_mismatch"
#define BACK_STOCK "order.refunded/refunded:stock_unavailable"
#define BACK_EXPIRED "order.refunded/refunded:checkout_expired"
#define BACK_CANCELLED "order.refunded/refunded:order_cancelled"
#define REFUND "refund:pi_test/1400usd/stock_unavailable"

static const row webhooks[] = {
    P("completed, amount and currency match", "open", "paid#e1=ok pi=pi_test inbox=1", "paid",
      "commit", PAID),
    P("completed, currency in capitals", "open", "paid-USD#e1=ok", "paid", "commit", PAID),
    P("completed, one cent more", "open", "paid-more#e1=ok pi=pi_test", "refunded", "",
      BACK_AMOUNT),
    P("completed, one cent less", "open", "paid-less#e1=ok", "refunded", "", BACK_AMOUNT),
    P("completed, other currency", "open", "paid-eur#e1=ok", "refunded", "", BACK_AMOUNT),
    P("completed, no amount_total", "open", "paid-noamount#e1=ok", "refunded", "", BACK_AMOUNT),
    P("completed, expired session", "expired", "paid#e1=ok pi=pi_test", "refunded", "",
      BACK_EXPIRED),
    P("completed, cancelled session", "cancelled", "paid#e1=ok", "refunded", "", BACK_CANCELLED),
    P("completed, failed session", "failed", "paid#e1=ok", "refunded", "", BACK_CANCELLED),
    P("completed, expired session, other currency", "expired", "paid-eur#e1=ok", "refunded", "",
      BACK_AMOUNT),
    P("completed, stock released (conflict)", "open", "stock:conflict paid#e1=ok", "refunded",
      "commit", BACK_STOCK),
    P("completed, nothing reserved (notfound)", "open", "stock:notfound paid#e1=ok", "refunded",
      "commit", BACK_STOCK),
    P("completed, stock down", "open", "stock:unavail paid#e1=again inbox=0 pi=-", "open", "commit",
      ""),
    P("completed, stock refuses the call", "open", "stock:invalid paid#e1=err inbox=0", "open",
      "commit", ""),
    P("completed, session already paid", "paid", "paid#e1=ok inbox=1", "paid", "", ""),
    P("completed, session already refunded", "refunded", "paid#e1=ok", "refunded", "", ""),
    P("completed, payment still pending", "open", "paid-unpaid#e1=ok inbox=1", "open", "", ""),
    P("completed without a payment intent", "open", "paid-nopi#e1=ok pi=-", "paid", "commit", PAID),
    P("completed, unknown session", "open", "paid-unknown#e1=ok inbox=1", "open", "", ""),
    P("completed, no session id, order in metadata", "open", "paid-byorder#e1=ok", "paid", "commit",
      PAID),
    P("completed, no session for the order", "none", "paid#e1=ok inbox=1", "none", "", ""),
    P("async payment succeeded", "open", "async-ok#e1=ok", "paid", "commit", PAID),
    P("async payment failed", "open", "async-fail#e1=ok", "failed", "release expire",
      "order.cancelled/payment_failed:payment"),
    P("expired", "open", "expired#e1=ok inbox=1", "expired", "release expire", EXPIRED),
    P("expired, stock committed to a payment", "open", "stock:conflict expired#e1=ok inbox=1",
      "open", "release", ""),
    P("expired, nothing reserved", "open", "stock:notfound expired#e1=ok", "expired",
      "release expire", EXPIRED),
    P("expired, stock down", "open", "stock:unavail expired#e1=again inbox=0", "open", "release",
      ""),
    P("expired, processor down", "open", "proc:again expired#e1=again inbox=0", "open",
      "release expire", ""),
    P("expired, session already expired", "expired", "expired#e1=ok", "expired", "release", ""),
    P("expired, session paid", "paid", "stock:conflict expired#e1=ok", "paid", "release", ""),
    P("other event type", "open", "other#e1=ok inbox=1", "open", "", ""),
    P("bad signature", "open", "badsig#e1=invalid inbox=0", "open", "", ""),
    P("no signature", "open", "nosig#e1=invalid inbox=0", "open", "", ""),
    P("signature too old", "open", "oldsig#e1=invalid inbox=0", "open", "", ""),
    P("body changed after signing", "open", "tampered#e1=invalid inbox=0", "open", "", ""),
    P("malformed event", "open", "malformed#e1=invalid inbox=0", "open", "", ""),
};

static const row sequences[] = {
    P("same event twice", "open", "paid#e1=ok paid#e1=dup inbox=1", "paid", "commit", PAID),
    P("same mismatched event twice", "open", "paid-eur#e1=ok paid-eur#e1=dup", "refunded", "",
      BACK_AMOUNT),
    P("redelivery after a stock outage", "open", "stock:unavail paid#e1=again paid#e1=ok", "paid",
      "commit commit", PAID),
    P("two completed events", "open", "paid#e1=ok paid#e2=ok inbox=2", "paid", "commit", PAID),
    P("paid, then expired", "open", "paid#e1=ok stock:conflict expired#e2=ok", "paid",
      "commit release", PAID),
    P("expired, then paid", "open", "expired#e1=ok paid#e2=ok", "refunded", "release expire",
      EXPIRED " " BACK_EXPIRED),
    P("expired twice", "open", "expired#e1=ok expired#e2=ok outbox=1", "expired",
      "release expire release", EXPIRED),
    P("other currency, then the right payment", "open", "paid-eur#e1=ok paid#e2=ok", "refunded", "",
      BACK_AMOUNT),
    P("payment pending, then succeeded", "open", "paid-unpaid#e1=ok async-ok#e2=ok", "paid",
      "commit", PAID),
};

static const row deadline[] = {
    P("deadline passed: closed once", "open", "overdue sweep=1 sweep=0", "expired",
      "release expire", EXPIRED),
    P("deadline not reached", "open", "sweep=0", "open", "", ""),
    P("deadline passed, stock committed to a payment", "open",
      "overdue stock:conflict stock:conflict sweep=0 sweep=0", "open", "release release", ""),
    P("deadline passed, stock down until the next sweep", "open",
      "overdue stock:unavail sweep=again outbox=0 sweep=1", "expired", "release release expire",
      EXPIRED),
    P("deadline passed, processor down until the next sweep", "open",
      "overdue proc:again sweep=again sweep=1", "expired", "release expire release expire",
      EXPIRED),
    P("deadline passed, session paid", "paid", "overdue sweep=0", "paid", "", ""),
    P("deadline passed, late payment", "open", "overdue sweep=1 paid#e1=ok", "refunded",
      "release expire", EXPIRED " " BACK_EXPIRED),
    P("deadline passed, then stripe's expiry", "open", "overdue sweep=1 expired#e1=ok", "expired",
      "release expire release", EXPIRED),
    P("local pay", "open", "pay=ok pi=pi_local_cs_test_1", "paid", "commit", PAID),
    P("local cancel", "open", "cancel=ok", "expired", "release expire", EXPIRED),
    P("local pay twice", "open", "pay=ok pay=conflict", "paid", "commit", PAID),
    P("local pay past the deadline", "open", "overdue pay=conflict", "expired", "release expire",
      EXPIRED),
    P("local pay after the sweep", "open", "overdue sweep=1 pay=conflict", "expired",
      "release expire", EXPIRED),
    P("local pay, stock released", "open", "stock:conflict pay=ok", "refunded", "commit",
      BACK_STOCK),
    P("local pay, stock down", "open", "stock:unavail pay=again", "open", "commit", ""),
    P("local pay, unknown session", "open", "pay-unknown=notfound", "open", "", ""),
};

static const row consumers[] = {
    P("order.created opens one session", "none",
      "created#m1=ok sessions=1 deadline link=https://pay.example/cs_test_1 created#m1=dup", "open",
      "create waiting", ""),
    P("order.created under another id", "none", "created#m1=ok created#m2=ok sessions=1", "open",
      "create waiting waiting", ""),
    P("order.created, orders down", "none", "orders:unavail created#m1=again inbox=0 created#m1=ok",
      "open", "create waiting waiting", ""),
    P("order.created, order moved on", "none", "orders:conflict created#m1=ok inbox=1", "cancelled",
      "create waiting", ""),
    P("order.created, processor down", "none",
      "proc:again created#m1=again sessions=0 created#m1=ok", "open", "create create waiting", ""),
    P("order.created, not an order", "none", "created-garbage#m1=invalid inbox=0", "none", "", ""),
    P("order.cancelled closes the session", "open", "cancelled#m1=ok", "cancelled", "expire", ""),
    P("order.cancelled (payment_failed)", "open", "cancelled-failed#m1=ok", "failed", "expire", ""),
    P("order.cancelled twice", "open", "cancelled#m1=ok cancelled#m1=dup", "cancelled", "expire",
      ""),
    P("order.cancelled, processor down", "open",
      "proc:again cancelled#m1=again inbox=0 cancelled#m1=ok", "cancelled", "expire expire", ""),
    P("order.cancelled, session paid", "paid", "cancelled#m1=ok inbox=1", "paid", "", ""),
    P("order.cancelled, no session", "none", "cancelled#m1=ok", "none", "", ""),
    P("order.refunded returns the payment", "paid", "refunded#m1=ok refunds=1", "refunded", REFUND,
      ""),
    P("order.refunded twice", "paid", "refunded#m1=ok refunded#m1=dup refunds=1", "refunded",
      REFUND, ""),
    P("order.refunded under another id", "paid", "refunded#m1=ok refunded#m2=ok inbox=2",
      "refunded", REFUND, ""),
    P("order.refunded, processor down", "paid",
      "proc:again refunded#m1=again refunds=0 inbox=0 refunded#m1=ok refunds=1", "refunded",
      REFUND " " REFUND, ""),
    P("order.refunded, processor refuses", "paid", "proc:err refunded#m1=err refunds=0 inbox=0",
      "paid", REFUND, ""),
    P("order.refunded, no payment intent", "paid-nopi", "refunded#m1=ok refunds=0 inbox=1", "paid",
      "", ""),
    P("order.refunded, session never paid", "open", "refunded#m1=ok refunds=0", "open", "", ""),
    P("order.refunded, no session", "none", "refunded#m1=ok inbox=1", "none", "", ""),
    P("order.refunded by staff", "paid", "refunded-staff#m1=ok", "refunded",
      "refund:pi_test/1400usd/staff", ""),
    P("order.refunded, unknown reason", "paid", "refunded-other#m1=ok", "refunded",
      "refund:pi_test/1400usd/other", ""),
    P("order.refunded, no reason", "paid", "refunded-noreason#m1=ok", "refunded",
      "refund:pi_test/1400usd/other", ""),
    P("other currency, then order.refunded", "open", "paid-eur#e1=ok refunded-mismatch#m1=ok",
      "refunded", "refund:pi_test/1400usd/amount_mismatch", BACK_AMOUNT),
};

static void test_row(void **state)
{
    fixture *f = *state;
    const row *r = f->row;
    make_session(f, r->start);
    mark_start(f);
    run_steps(f, r->name, r->steps);

    char st[512];
    session_status(f, st, sizeof(st));
    if (strcmp(st, r->end) != 0)
        fail_msg("%s: session %s, want %s", r->name, st, r->end);
    if (strcmp(f->calls, r->calls) != 0)
        fail_msg("%s: port calls [%s], want [%s]", r->name, f->calls, r->calls);
    summary got;
    outbox_summary(f, &got);
    if (!outbox_matches(r->out, &got))
        fail_msg("%s: events [%s], want [%s]", r->name, got.joined, r->out);
    /* Woken when events were written (a webhook that closes a session wakes it twice). */
    if ((f->notifies > 0) != (got.n > 0))
        fail_msg("%s: relay woken %d times for %d events", r->name, f->notifies, got.n);
}

/* A day's load of pickup codes: 3,000 paid sessions on one day all get different
 * codes of 4 unambiguous symbols; the next day may use them again; the unique index
 * refuses a second session with a code taken that day. */
static void test_pickup_codes_unique_within_a_day(void **state)
{
    enum { N = 3000 };
    oms_db *db;
    oms_db_tx *tx;
    oms_error err;
    static char codes[N][OMS_PICKUP_CODE_MAX + 1];
    assert_int_equal(payments_store_open(&db, ":memory:", &err), OMS_OK);
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    long long day = 1796083200000LL; /* 2026-12-01T00:00:00Z */
    for (int i = 0; i < N + 1; i++) {
        char sid[32], oid[32];
        snprintf(sid, sizeof(sid), "cs_%d", i);
        snprintf(oid, sizeof(oid), "o-%d", i);
        payments_row r = {.session_id = sid,
                          .order_id = oid,
                          .customer_id = "c",
                          .url = "u",
                          .status = PAYMENTS_SESSION_PAID,
                          .amount = 1,
                          .currency = "usd",
                          .order_json = "{}",
                          .created_ms = day,
                          .updated_ms = day};
        assert_int_equal(payments_store_insert(tx, &r, &err), OMS_OK);
        if (i == N)
            break;
        /* spread over the day, the last one a millisecond before midnight */
        long long at = day + (long long)i * (86400000LL - 1) / (N - 1);
        if (payments_store_assign_pickup(tx, sid, at, codes[i], &err) != OMS_OK)
            fail_msg("code %d: %s", i, err.msg);
        assert_int_equal(strlen(codes[i]), 4);
        assert_int_equal(strspn(codes[i], "ACDEFGHJKMNPQRTUVWXY34679"), 4);
        for (int k = 0; k < i; k++)
            if (strcmp(codes[k], codes[i]) == 0)
                fail_msg("code %s given twice in one day (%d and %d)", codes[i], k, i);
    }
    oms_db_param same[] = {OMS_DB_S(codes[0]), OMS_DB_S("2026-12-01"), OMS_DB_S("cs_3000")};
    assert_int_not_equal(oms_db_exec(tx,
                                     "UPDATE checkout_sessions SET pickup_code = $1,"
                                     " pickup_day = $2 WHERE session_id = $3",
                                     same, 3, NULL, &err),
                         OMS_OK);
    oms_db_rollback(tx);
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    oms_db_param next[] = {OMS_DB_S(codes[0]), OMS_DB_S("2026-12-02"), OMS_DB_S("cs_1")};
    assert_int_equal(oms_db_exec(tx,
                                 "UPDATE checkout_sessions SET pickup_code = $1, pickup_day = $2"
                                 " WHERE session_id = $3",
                                 next, 3, NULL, &err),
                     OMS_OK);
    oms_db_rollback(tx);
    oms_db_close(db);
}

/* ---- the list of tests --------------------------------------------------------------- */

/* Runs one table as a cmocka group: a test per row, named after the row. */
static int run_table(const char *group, const row *rows, size_t n)
{
    struct CMUnitTest *tests = calloc(n, sizeof(*tests));
    assert_non_null(tests);
    for (size_t i = 0; i < n; i++)
        tests[i] = (struct CMUnitTest){rows[i].name, test_row, setup, teardown, (void *)&rows[i]};
    int failed = _cmocka_run_group_tests(group, tests, n, NULL, NULL);
    free(tests);
    return failed;
}

#define RUN_TABLE(group, table) run_table(group, table, OMS_NELEM(table))

int main(void)
{
    /* Refunds log at error level by design; TEST_LOG_LEVEL=info shows the service's logs. */
    const char *lvl = getenv("TEST_LOG_LEVEL");
    int level = lvl ? oms_log_level_parse(lvl) : -1;
    oms_log_init("test_payments_rules", (oms_log_level)(level >= 0 ? level : OMS_LOG_ERROR + 1), 1);
    int failed = 0;
    failed += RUN_TABLE("payments.webhooks", webhooks);
    failed += RUN_TABLE("payments.sequences", sequences);
    failed += RUN_TABLE("payments.deadline", deadline);
    failed += RUN_TABLE("payments.consumers", consumers);
    const struct CMUnitTest pickup[] = {cmocka_unit_test(test_pickup_codes_unique_within_a_day)};
    failed += cmocka_run_group_tests_name("payments.pickup", pickup, NULL, NULL);
    return failed ? 1 : 0;
}
