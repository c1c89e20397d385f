#include "service.h"

#include <errno.h>
#include <inttypes.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>

#include "oms/calendar.h"
#include "oms/events.h"
#include "oms/inbox.h"
#include "oms/json_out.h"
#include "oms/log.h"
#include "oms/metrics.h"
#include "oms/outbox.h"
#include "oms/tracer.h"
#include "oms/util.h"
#include "store.h"

static void notify(orders_service *s)
{
    if (s->outbox_notify)
        s->outbox_notify(s->outbox_ud);
}

static int add_event(oms_db_tx *tx, oms_event ev, oms_order *o, const char *reason, oms_error *err)
{
    snprintf(o->reason, sizeof(o->reason), "%.127s", reason ? reason : "");
    char *body = oms_order_to_json_str(o);
    o->reason[0] = '\0';
    int rc = oms_outbox_add(tx, oms_event_exchanges[ev], body, NULL, err);
    free(body);
    return rc;
}

static int get_by_key(orders_service *s, const char *customer_id, const char *key, oms_order *out,
                      oms_error *err)
{
    oms_db_tx *tx;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = orders_store_find_by_key(tx, customer_id, key, out, err);
    oms_db_rollback(tx);
    return rc;
}

/* A repeated Idempotency-Key must come with the same request (the same items and
 * quantities; req is normalised, first is the stored order): answering a different
 * request with the first order would hide that the new one was never placed. */
static int same_request(const oms_order *req, oms_order *first, const char *key, oms_error *err)
{
    int same = req->nitems == first->nitems;
    for (size_t i = 0; same && i < req->nitems; i++) {
        int found = 0;
        for (size_t j = 0; j < first->nitems && !found; j++)
            found = strcmp(req->items[i].product_id, first->items[j].product_id) == 0 &&
                    req->items[i].quantity == first->items[j].quantity;
        same = found;
    }
    if (same)
        return OMS_OK;
    oms_order_free(first);
    oms_order_init(first);
    return oms_error_set(err, OMS_KEY_REUSED,
                         "Idempotency-Key %s was used for a different request; use a new key", key);
}

/* Unpaid orders hold stock until their checkout deadline, so one customer may keep
 * only max_open_orders of them at once. */
static int check_open_orders(orders_service *s, const char *customer_id, oms_error *err)
{
    oms_db_tx *tx;
    long long n = 0;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = orders_store_count_open(tx, customer_id, &n, err);
    oms_db_rollback(tx);
    if (rc != OMS_OK)
        return rc;
    if (n >= s->max_open_orders)
        return oms_error_set(err, OMS_LIMITED,
                             "customer %s has %lld unpaid orders (at most %d): pay or cancel one"
                             " first",
                             customer_id, n, s->max_open_orders);
    return OMS_OK;
}

int orders_pending_tick(void *svc, oms_error *err)
{
    orders_service *s = svc;
    oms_db_tx *tx;
    long long n = 0;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = orders_store_count_pending(tx, oms_now_ms() - ORDERS_PENDING_WINDOW_MS, &n, err);
    oms_db_rollback(tx);
    if (rc != OMS_OK)
        return rc;
    atomic_store(&s->pending, n);
    oms_metrics_gauge_set("orders_pending",
                          "Orders created in the last 2 minutes and still waiting for their "
                          "payment link (ORDERS_MAX_PENDING bounds them).",
                          "", (double)n);
    return OMS_OK;
}

/* Each pending order is work queued on the asynchronous side (outbox, broker, payments,
 * UpdateOrder). Past the bound a new one would only wait longer for its payment link,
 * so it is refused as an overload (the gateway answers 503 with Retry-After) and the
 * backlog, and the time to a payment link, stay bounded. */
static int check_pending(orders_service *s, oms_error *err)
{
    long long n = atomic_load(&s->pending);
    if (s->max_pending <= 0 || n < s->max_pending)
        return OMS_OK;
    oms_metrics_counter_add("orders_refused_total",
                            "New orders refused because ORDERS_MAX_PENDING orders were waiting "
                            "for their payment link.",
                            "", 1);
    return oms_error_set(err, OMS_LIMITED,
                         OMS_OVERLOADED ": %lld orders are waiting for their payment link "
                                        "(ORDERS_MAX_PENDING %lld), retry in a moment",
                         n, s->max_pending);
}

int orders_create(orders_service *s, const char *customer_id, oms_order *req, const char *idem_key,
                  oms_order *out, oms_error *err)
{
    oms_order_init(out);
    if (!oms_valid_id(customer_id))
        return oms_error_set(err, OMS_INVALID,
                             "customerID: must be 1 to 64 characters of A-Z a-z 0-9 _ . : -");
    if (idem_key && !idem_key[0])
        idem_key = NULL;
    if (idem_key && !oms_valid_id(idem_key))
        return oms_error_set(err, OMS_INVALID,
                             "Idempotency-Key: must be 1 to 64 characters of A-Z a-z 0-9 _ . : -");
    int rc = oms_order_normalize_items(req, err);
    if (rc != OMS_OK)
        return rc;
    if (idem_key) {
        rc = get_by_key(s, customer_id, idem_key, out, err);
        if (rc == OMS_OK)
            return same_request(req, out, idem_key, err);
        if (rc != OMS_NOTFOUND)
            return rc; /* a database error */
        oms_error_clear(err);
    }
    rc = check_pending(s, err);
    if (rc != OMS_OK)
        return rc;
    if (s->max_open_orders > 0) {
        rc = check_open_orders(s, customer_id, err);
        if (rc != OMS_OK)
            return rc;
    }

    oms_order o;
    oms_order_init(&o);
    if (oms_new_id(o.order_id) != OMS_OK)
        return oms_error_set(err, OMS_ERR, "cannot generate an order id");
    snprintf(o.customer_id, sizeof(o.customer_id), "%s", customer_id);
    for (size_t i = 0; i < req->nitems; i++)
        oms_order_add_item(&o, &req->items[i]);

    rc = s->stock.reserve(s->stock.ud, o.order_id, &o, err);
    if (rc != OMS_OK)
        goto fail;
    rc = oms_order_compute_total(&o, &o.total, err);
    if (rc != OMS_OK)
        goto release;
    o.status = OMS_ORDER_PENDING;
    o.created_ms = o.updated_ms = oms_now_ms();

    oms_db_tx *tx;
    rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        goto release;
    rc = orders_store_insert(tx, &o, idem_key, err);
    if (rc == OMS_OK)
        rc = orders_store_add_history(tx, o.order_id, OMS_ORDER_PENDING, "created", o.created_ms,
                                      err);
    if (rc == OMS_OK)
        rc = add_event(tx, OMS_EVENT_ORDER_CREATED, &o, NULL, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        goto release;
    }
    rc = oms_db_commit(tx, err);
    if (rc != OMS_OK)
        goto release;
    notify(s);
    oms_log_info("order created", "order_id", o.order_id, "customer_id", o.customer_id);
    *out = o;
    return OMS_OK;

release:
    /* Nothing was committed: give the stock back. A failure here is only logged; the
     * reservation then expires after RESERVATION_TTL. */
    {
        oms_error rerr;
        if (s->stock.release(s->stock.ud, o.order_id, &rerr) != OMS_OK)
            oms_log_warn("release after failed create", "order_id", o.order_id, "error", rerr.msg);
    }
    if (rc == OMS_CONFLICT && idem_key) {
        /* Lost a race with the same idempotency key: answer with the winner. */
        oms_error_clear(err);
        rc = get_by_key(s, customer_id, idem_key, out, err);
        if (rc == OMS_OK)
            rc = same_request(req, out, idem_key, err);
        oms_order_free(&o);
        return rc;
    }
fail:
    oms_order_free(&o);
    return rc;
}

int orders_get(orders_service *s, const char *order_id, oms_order *out, oms_error *err)
{
    oms_order_init(out);
    if (!oms_valid_id(order_id))
        return oms_error_set(err, OMS_INVALID,
                             "orderID: must be 1 to 64 characters of A-Z a-z 0-9 _ . : -");
    oms_db_tx *tx;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = orders_store_get(tx, order_id, out, err);
    oms_db_rollback(tx);
    return rc;
}

/* How a status change came about; decides the side effects. */
typedef struct change {
    oms_order_status target;
    const char *link;         /* NULL: keep */
    oms_event publish;        /* event to publish when the order moves; OMS_EVENT__COUNT: none */
    char cause[1024];         /* recorded in the order's history (a staff reason fits) */
    const char *event_reason; /* the event's reason when it differs from cause; NULL: cause */
    const char *queue;        /* event: inbox consumer, else NULL */
    const char *message_id;
    int strict;              /* gRPC caller: a forbidden move is an error, not a no-op */
    int skip;                /* set by stock_effect: acknowledge, change nothing */
    int paid_only;           /* staff refund: the committed status must be paid, cooking or ready */
    int ready_only;          /* hand-over: the committed status must be ready (or collected) */
    const char *pickup_code; /* from an event: recorded if the order has none yet */
    orders_audit *audit;     /* written with the move (before/at_ms filled in); NULL: none */
} change;

static int rank_paid(oms_order_status st)
{
    return st == OMS_ORDER_PAID || st == OMS_ORDER_COOKING || st == OMS_ORDER_READY;
}

static int before_payment(oms_order_status st)
{
    return st == OMS_ORDER_PENDING || st == OMS_ORDER_WAITING_PAYMENT;
}

/* Turns an event's change into a refund decided here: the money has been taken but
 * the order cannot be fulfilled. Publishing order.refunded makes payments return it. */
static void become_refund(change *c, const char *order_id, const char *why)
{
    oms_log_error("payment cannot be fulfilled: refunding", "order_id", order_id, "reason", why);
    c->target = OMS_ORDER_REFUNDED;
    c->publish = OMS_EVENT_ORDER_REFUNDED;
    snprintf(c->cause, sizeof(c->cause), "%s", why);
}

/* Stock side effect of moving an order from cur to c->target, done before the status
 * transaction; stock calls are idempotent, so a retry repeats them harmlessly. Stock
 * decides races: a released reservation cannot be committed and a committed one
 * cannot be released, so of a cancel and a payment exactly one wins there, and the
 * loser adapts here (a refused cancel; a payment turned into a refund). */
static int stock_effect(orders_service *s, const char *order_id, oms_order_status cur, change *c,
                        oms_error *err)
{
    int rc = OMS_OK;
    if (rank_paid(c->target) && !c->strict &&
        (cur == OMS_ORDER_CANCELLED || cur == OMS_ORDER_PAYMENT_FAILED)) {
        become_refund(c, order_id, "order_cancelled: payment arrived for a cancelled order");
        return OMS_OK; /* nothing was reserved any more */
    }
    if (rank_paid(c->target) && before_payment(cur)) {
        rc = s->stock.commit(s->stock.ud, order_id, err);
        if (rc == OMS_CONFLICT || rc == OMS_NOTFOUND) {
            char why[160];
            snprintf(why, sizeof(why), "stock_unavailable: %.120s", err->msg);
            if (c->strict) /* never err->msg as an argument of its own error */
                return oms_error_set(err, OMS_CONFLICT, "order %s cannot be paid: %s", order_id,
                                     why);
            oms_error_clear(err);
            become_refund(c, order_id, why);
            return OMS_OK;
        }
        return rc;
    }
    int release = ((c->target == OMS_ORDER_CANCELLED || c->target == OMS_ORDER_PAYMENT_FAILED) &&
                   oms_order_can_move(cur, c->target)) ||
                  (c->target == OMS_ORDER_REFUNDED && !rank_paid(cur));
    if (!release)
        return OMS_OK;
    rc = s->stock.release(s->stock.ud, order_id, err);
    if (rc == OMS_NOTFOUND) { /* nothing reserved: nothing to give back */
        oms_error_clear(err);
        return OMS_OK;
    }
    if (rc == OMS_CONFLICT && c->target == OMS_ORDER_REFUNDED) {
        oms_error_clear(err); /* committed: the units stay sold, the money goes back */
        return OMS_OK;
    }
    if (rc == OMS_CONFLICT) {
        /* Committed: a payment won the race; order.paid is on its way. */
        if (c->strict)
            return oms_error_set(err, OMS_CONFLICT, "order %s is being paid; it cannot be %s",
                                 order_id,
                                 c->target == OMS_ORDER_CANCELLED ? "cancelled" : "closed");
        oms_log_info("event ignored: the order's stock is committed to a payment", "order_id",
                     order_id, "event_status", oms_order_status_str(c->target));
        oms_error_clear(err);
        c->skip = 1;
        return OMS_OK;
    }
    return rc;
}

/* Whether stock_effect can do anything for a move to target, whatever the status now. */
static int stock_may_change(oms_order_status target)
{
    return rank_paid(target) || target == OMS_ORDER_CANCELLED ||
           target == OMS_ORDER_PAYMENT_FAILED || target == OMS_ORDER_REFUNDED;
}

static int read_status(orders_service *s, const char *order_id, oms_order_status *st,
                       oms_error *err)
{
    oms_db_tx *tx;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = orders_store_get_status(tx, order_id, st, err);
    oms_db_rollback(tx);
    return rc;
}

static int refund_refused(const char *order_id, oms_order_status st, oms_error *err)
{
    return oms_error_set(err, OMS_CONFLICT,
                         "order %s is %s: only a paid, cooking or ready order can be refunded",
                         order_id, oms_order_status_str(st));
}

static int collect_refused(const char *order_id, oms_order_status st, oms_error *err)
{
    return oms_error_set(err, OMS_CONFLICT,
                         "order %s is %s: only an order ready for pick-up can be collected",
                         order_id, oms_order_status_str(st));
}

/* YYYY-MM-DD of ms (UTC): the day a pickup code belongs to, as payments counts it. */
static void utc_day(long long ms, char out[16])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 16, "%Y-%m-%d", &tm);
}

/* The audit row of a staff move from status `from`, in the move's transaction. */
static int add_audit(oms_db_tx *tx, orders_audit *a, oms_order_status from, long long now_ms,
                     oms_error *err)
{
    oms_jbuf b;
    oms_jbuf_init(&b, 64);
    oms_jbuf_lit(&b, "{\"status\":");
    oms_jbuf_str(&b, oms_order_status_str(from));
    oms_jbuf_lit(&b, "}");
    free(a->before);
    a->before = oms_jbuf_take(&b, NULL);
    a->at_ms = now_ms;
    return orders_store_add_audit(tx, a, err);
}

/* Applies a status change: the stock side effect first (idempotent, outside any
 * transaction), then one transaction that records the inbox id, locks the row, re-checks
 * the guard on the committed status, writes the status and its history row, and (when
 * asked or needed) reads the order back once. The benchmark found the earlier version's
 * extra reads costly. */
static int apply_change(orders_service *s, const char *order_id, change *c, oms_order *out,
                        oms_error *err)
{
    oms_order_status st = c->target; /* set from the row below */
    int rc;
    /* Only a move to paid, cooking, ready or a side exit can touch the stock; the
     * common move (payments setting waiting_payment with its link) skips the status
     * read and its transaction. */
    if (stock_may_change(c->target)) {
        rc = read_status(s, order_id, &st, err);
        if (rc != OMS_OK)
            return rc;
        if (st != c->target) {
            rc = stock_effect(s, order_id, st, c, err);
            if (rc != OMS_OK)
                return rc;
        }
    }

    oms_db_tx *tx;
    rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    if (c->queue) {
        rc = oms_inbox_claim(tx, c->queue, c->message_id, err);
        if (rc != OMS_OK)
            goto rollback; /* OMS_DUPLICATE: applied before */
    }
    /* Lock and re-read inside the transaction: the guard decides on what is committed
     * now, and a concurrent change of the same order waits for this one. */
    rc = orders_store_lock(tx, order_id, &st, err);
    if (rc != OMS_OK)
        goto rollback;
    int moved = 0;
    long long now_ms = oms_now_ms();
    /* Whatever the move: events may arrive out of order, and the first that carries
     * the code (paid, or cooking/ready relayed by the kitchen) records it. */
    if (c->pickup_code && c->pickup_code[0]) {
        char day[16];
        utc_day(now_ms, day);
        rc = orders_store_set_pickup(tx, order_id, c->pickup_code, day, err);
        if (rc != OMS_OK)
            goto rollback;
    }
    if (c->skip) {
        /* stock_effect decided: acknowledge without a change */
    } else if (st == c->target) {
        if (c->link)
            rc = orders_store_set_status(tx, order_id, c->target, c->link, now_ms, err);
    } else if (c->paid_only && !rank_paid(st)) {
        rc = refund_refused(order_id, st, err);
    } else if (c->ready_only && st != OMS_ORDER_READY) {
        rc = collect_refused(order_id, st, err);
    } else if (oms_order_can_move(st, c->target)) {
        rc = orders_store_set_status(tx, order_id, c->target, c->link, now_ms, err);
        if (rc == OMS_OK)
            rc = orders_store_add_history(tx, order_id, c->target, c->cause, now_ms, err);
        if (rc == OMS_OK && c->audit)
            rc = add_audit(tx, c->audit, st, now_ms, err);
        moved = 1;
    } else if (c->strict) {
        rc = oms_error_set(err, OMS_CONFLICT, "order %s is %s; it cannot become %s", order_id,
                           oms_order_status_str(st), oms_order_status_str(c->target));
    } else if (c->target == OMS_ORDER_PAID && st == OMS_ORDER_REFUNDED) {
        oms_log_info("event ignored: the order's payment was refunded", "order_id", order_id);
    } else {
        oms_log_info("event ignored: status never moves backwards", "order_id", order_id, "status",
                     oms_order_status_str(st), "event_status", oms_order_status_str(c->target));
    }
    if (rc != OMS_OK)
        goto rollback;
    oms_order now;
    oms_order_init(&now);
    int publish = moved && c->publish != OMS_EVENT__COUNT;
    if (out || publish) {
        rc = orders_store_get(tx, order_id, &now, err);
        if (rc == OMS_OK && publish)
            rc = add_event(tx, c->publish, &now, c->event_reason ? c->event_reason : c->cause, err);
        if (rc != OMS_OK) {
            oms_order_free(&now);
            goto rollback;
        }
    }
    rc = oms_db_commit(tx, err);
    if (rc != OMS_OK) {
        oms_order_free(&now);
        return rc;
    }
    if (moved) {
        oms_log_info("order status changed", "order_id", order_id, "status",
                     oms_order_status_str(c->target), "cause", c->cause);
        if (publish)
            notify(s);
    }
    if (out)
        *out = now;
    else
        oms_order_free(&now);
    return OMS_OK;
rollback:
    oms_db_rollback(tx);
    return rc;
}

/* A PaymentLink is shown to the customer as a link: only https, or this shop's own
 * local checkout, so nobody can plant a javascript: or look-alike URL through the API. */
static int link_allowed(const orders_service *s, const char *link)
{
    if (strncasecmp(link, "https://", 8) == 0 && link[8])
        return 1;
    const char *base = s->local_checkout_url;
    size_t n = base ? strlen(base) : 0;
    return n > 0 && strncmp(link, base, n) == 0 && strncmp(link + n, "/checkout/", 10) == 0 &&
           link[n + 10] && !strstr(link + n, "..");
}

int orders_update(orders_service *s, const char *order_id, int status, const char *link,
                  oms_order *out, oms_error *err)
{
    oms_order_init(out);
    if (!oms_valid_id(order_id))
        return oms_error_set(err, OMS_INVALID,
                             "orderID: must be 1 to 64 characters of A-Z a-z 0-9 _ . : -");
    if (link && (!link[0] || strcmp(link, "none") == 0))
        link = NULL;
    if (link && strlen(link) > 2048)
        return oms_error_set(err, OMS_INVALID, "PaymentLink: at most 2048 characters");
    for (const char *p = link; p && *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f || strchr("\"'<>\\`", *p))
            return oms_error_set(err, OMS_INVALID,
                                 "PaymentLink: spaces, quotes and control characters not allowed");
    if (link && !link_allowed(s, link))
        return oms_error_set(
            err, OMS_INVALID,
            "PaymentLink: must be an https: URL or this shop's checkout (%s/checkout/...)",
            s->local_checkout_url ? s->local_checkout_url : "-");
    if (status < 0) { /* link only: "move" to the current status */
        oms_order_status cur;
        int rc = read_status(s, order_id, &cur, err);
        if (rc != OMS_OK)
            return rc;
        status = (int)cur;
    }
    change c = {.target = (oms_order_status)status,
                .link = link,
                /* payments closes the checkout on order.cancelled (its status
                 * says payment_failed or cancelled), so it cannot be paid any more */
                .publish = status == OMS_ORDER_CANCELLED || status == OMS_ORDER_PAYMENT_FAILED
                               ? OMS_EVENT_ORDER_CANCELLED
                           : status == OMS_ORDER_REFUNDED ? OMS_EVENT_ORDER_REFUNDED
                                                          : OMS_EVENT__COUNT,
                .cause = "UpdateOrder",
                .strict = 1};
    return apply_change(s, order_id, &c, out, err);
}

int orders_cancel(orders_service *s, const char *order_id, const char *customer_id, oms_order *out,
                  oms_error *err)
{
    oms_order cur;
    int rc = orders_get(s, order_id, &cur, err);
    if (rc != OMS_OK)
        return rc;
    int owner = customer_id && customer_id[0] && strcmp(cur.customer_id, customer_id) == 0;
    oms_order_status st = cur.status;
    oms_order_free(&cur);
    if (!owner) /* never tell a stranger the order exists */
        return oms_error_set(err, OMS_NOTFOUND, "order %s not found", order_id);
    if (st == OMS_ORDER_CANCELLED)
        return orders_get(s, order_id, out, err);
    if (!oms_order_can_move(st, OMS_ORDER_CANCELLED))
        return oms_error_set(err, OMS_CONFLICT,
                             "order %s is %s; only an order awaiting payment can be cancelled",
                             order_id, oms_order_status_str(st));
    change c = {.target = OMS_ORDER_CANCELLED,
                .publish = OMS_EVENT_ORDER_CANCELLED,
                .cause = "cancelled by the customer",
                .strict = 1};
    return apply_change(s, order_id, &c, out, err);
}

/* Checks a page size (0: 20) and a page token ("" or "<created_ms>.<order id>" from a
 * previous page) and splits the token into its cursor; before_id "" on the first page. */
static int page_args(int *page_size, const char *page_token, long long *before_ms,
                     char before_id[OMS_ID_MAX + 1], oms_error *err)
{
    if (*page_size == 0) /* unset in proto3 */
        *page_size = 20;
    if (*page_size < 0 || *page_size > 100)
        return oms_error_set(err, OMS_INVALID, "pageSize: must be from 1 to 100 (0 or unset: 20)");
    *before_ms = 0;
    before_id[0] = '\0';
    if (page_token && page_token[0]) {
        /* Digits only (strtoll alone takes spaces, signs and overflows to LLONG_MAX,
         * which would quietly list from the start). */
        size_t nd = strspn(page_token, "0123456789");
        char *end = NULL;
        errno = 0;
        *before_ms = nd > 0 && nd <= 18 ? strtoll(page_token, &end, 10) : -1;
        if (*before_ms < 0 || errno != 0 || end != page_token + nd || *end != '.' ||
            !oms_valid_id(end + 1))
            return oms_error_set(err, OMS_INVALID, "pageToken: not a token from this API");
        snprintf(before_id, OMS_ID_MAX + 1, "%s", end + 1);
    }
    return OMS_OK;
}

/* The store was asked for page_size + 1 rows: an extra row means another page, whose
 * token (>= 96 bytes) names the last row shown. */
static void page_cut(int page_size, oms_order **out, size_t *n, char *next_token)
{
    if (*n <= (size_t)page_size)
        return;
    for (size_t i = (size_t)page_size; i < *n; i++)
        oms_order_free(&(*out)[i]);
    *n = (size_t)page_size;
    const oms_order *last = &(*out)[page_size - 1];
    snprintf(next_token, 96, "%lld.%s", last->created_ms, last->order_id);
}

int orders_list(orders_service *s, const char *customer_id, int page_size, const char *page_token,
                oms_order **out, size_t *n, char *next_token, oms_error *err)
{
    *out = NULL;
    *n = 0;
    next_token[0] = '\0';
    if (!oms_valid_id(customer_id))
        return oms_error_set(err, OMS_INVALID,
                             "customerID: must be 1 to 64 characters of A-Z a-z 0-9 _ . : -");
    long long before_ms = 0;
    char before_id[OMS_ID_MAX + 1] = "";
    int rc = page_args(&page_size, page_token, &before_ms, before_id, err);
    if (rc != OMS_OK)
        return rc;
    oms_db_tx *tx;
    rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    /* One extra row tells whether another page exists. */
    rc = orders_store_list(tx, customer_id, page_size + 1, before_ms,
                           before_id[0] ? before_id : NULL, out, n, err);
    oms_db_rollback(tx);
    if (rc != OMS_OK)
        return rc;
    page_cut(page_size, out, n, next_token);
    return OMS_OK;
}

/* What each consumed event asks for, and the history's cause when the event gives none. */
static const struct {
    oms_event event;
    oms_order_status target;
    const char *cause;
} event_moves[] = {
    {OMS_EVENT_ORDER_PAID, OMS_ORDER_PAID, "payment received"},
    {OMS_EVENT_ORDER_COOKING, OMS_ORDER_COOKING, "kitchen started cooking"},
    {OMS_EVENT_ORDER_READY, OMS_ORDER_READY, "kitchen finished"},
    {OMS_EVENT_ORDER_CANCELLED, OMS_ORDER_CANCELLED, "checkout closed"},
    {OMS_EVENT_ORDER_REFUNDED, OMS_ORDER_REFUNDED, "refunded"},
};

int orders_handle_event(orders_service *s, const char *queue, const char *message_id,
                        const char *exchange, const char *body, size_t len, oms_error *err)
{
    size_t i = 0;
    while (i < OMS_NELEM(event_moves) &&
           strcmp(exchange, oms_event_exchanges[event_moves[i].event]) != 0)
        i++;
    if (i == OMS_NELEM(event_moves))
        return oms_error_set(err, OMS_INVALID, "unexpected event %s", exchange);
    oms_order evt;
    int rc = oms_order_from_json_str(body, len, &evt, err);
    if (rc != OMS_OK)
        return OMS_INVALID;
    oms_span_set_str(oms_span_current(), OMS_ATTR_ORDER_ID, evt.order_id);
    change c = {.target = event_moves[i].target,
                .publish = OMS_EVENT__COUNT,
                .queue = queue,
                .message_id = message_id};
    if (c.target == OMS_ORDER_CANCELLED && evt.status == OMS_ORDER_PAYMENT_FAILED)
        c.target = OMS_ORDER_PAYMENT_FAILED;
    c.pickup_code = evt.pickup_code;
    snprintf(c.cause, sizeof(c.cause), "%s", evt.reason[0] ? evt.reason : event_moves[i].cause);
    rc = apply_change(s, evt.order_id, &c, NULL, err);
    if (rc == OMS_NOTFOUND)
        rc = OMS_INVALID; /* an event about an order we never had: dead-letter it */
    oms_order_free(&evt);
    return rc;
}

/* ---- back office (staff) ------------------------------------------------------------ */

void orders_audit_free(orders_audit *a)
{
    free(a->staff);
    free(a->action);
    free(a->subject);
    free(a->before);
    free(a->after);
    free(a->reason);
    memset(a, 0, sizeof(*a));
}

void orders_history_free(orders_history_entry *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(h[i].cause);
    free(h);
}

void orders_summary_free(orders_summary *s)
{
    for (size_t i = 0; i < s->nunits; i++)
        free(s->units[i].product_name);
    free(s->units);
    memset(s, 0, sizeof(*s));
}

static const char id_rule[] = "must be 1 to 64 characters of A-Z a-z 0-9 _ . : -";

int orders_staff_list(orders_service *s, const orders_staff_filter *f, int page_size,
                      const char *page_token, oms_order **out, size_t *n, char *next_token,
                      oms_error *err)
{
    *out = NULL;
    *n = 0;
    next_token[0] = '\0';
    if (f->status && f->status[0] && oms_order_status_parse(f->status) < 0)
        return oms_error_set(err, OMS_INVALID,
                             "status: unknown value \"%.40s\" (pending, waiting_payment, paid,"
                             " cooking, ready for pick-up, cancelled, payment_failed, refunded)",
                             f->status);
    if (f->customer_id && f->customer_id[0] && !oms_valid_id(f->customer_id))
        return oms_error_set(err, OMS_INVALID, "customerID: %s", id_rule);
    if (f->order_id && f->order_id[0] && !oms_valid_id(f->order_id))
        return oms_error_set(err, OMS_INVALID, "orderID: %s", id_rule);
    if (f->since_ms < 0)
        return oms_error_set(err, OMS_INVALID, "sinceMs: must not be negative");
    if (f->until_ms < 0)
        return oms_error_set(err, OMS_INVALID, "untilMs: must not be negative");
    long long before_ms = 0;
    char before_id[OMS_ID_MAX + 1] = "";
    int rc = page_args(&page_size, page_token, &before_ms, before_id, err);
    if (rc != OMS_OK)
        return rc;
    oms_db_tx *tx;
    rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = orders_store_staff_list(tx, f, page_size + 1, before_ms, before_id[0] ? before_id : NULL,
                                 out, n, err);
    oms_db_rollback(tx);
    if (rc != OMS_OK)
        return rc;
    page_cut(page_size, out, n, next_token);
    return OMS_OK;
}

/* Where a status sits when two history lines share a millisecond (a kitchen with no
 * cooking time): the main chain in its order, the side exits after it. */
static int history_rank(oms_order_status st)
{
    return rank_paid(st) || before_payment(st) ? (int)st : OMS_ORDER__COUNT;
}

static int history_cmp(const void *a, const void *b)
{
    const orders_history_entry *x = a, *y = b;
    if (x->at_ms != y->at_ms)
        return x->at_ms < y->at_ms ? -1 : 1;
    return history_rank(x->status) - history_rank(y->status);
}

int orders_history(orders_service *s, const char *order_id, oms_order *out,
                   orders_history_entry **hist, size_t *n, oms_error *err)
{
    *hist = NULL;
    *n = 0;
    oms_order_init(out);
    if (!oms_valid_id(order_id))
        return oms_error_set(err, OMS_INVALID, "orderID: %s", id_rule);
    oms_db_tx *tx;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = orders_store_get(tx, order_id, out, err);
    if (rc == OMS_OK) {
        rc = orders_store_history(tx, order_id, hist, n, err);
        if (rc != OMS_OK)
            oms_order_free(out);
    }
    oms_db_rollback(tx);
    if (rc == OMS_OK && *n > 1)
        qsort(*hist, *n, sizeof(**hist), history_cmp);
    return rc;
}

/* A reason is shown to people and written to logs: 1..200 characters of valid UTF-8
 * with no control characters (C0, DEL or C1), so it cannot forge a line or a field. */
static int check_reason(const char *reason, oms_error *err)
{
    const unsigned char *p = (const unsigned char *)(reason ? reason : "");
    size_t chars = 0;
    while (*p) {
        unsigned cp;
        int len;
        if (*p < 0x80)
            cp = *p, len = 1;
        else if ((*p & 0xe0) == 0xc0)
            cp = *p & 0x1f, len = 2;
        else if ((*p & 0xf0) == 0xe0)
            cp = *p & 0x0f, len = 3;
        else if ((*p & 0xf8) == 0xf0)
            cp = *p & 0x07, len = 4;
        else
            return oms_error_set(err, OMS_INVALID, "reason: not valid UTF-8");
        for (int i = 1; i < len; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return oms_error_set(err, OMS_INVALID, "reason: not valid UTF-8");
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0))
            return oms_error_set(err, OMS_INVALID, "reason: control characters are not allowed");
        p += len;
        if (++chars > ORDERS_REASON_MAX)
            return oms_error_set(err, OMS_INVALID, "reason: at most %d characters",
                                 ORDERS_REASON_MAX);
    }
    if (chars == 0)
        return oms_error_set(err, OMS_INVALID, "reason: required (1 to %d characters)",
                             ORDERS_REASON_MAX);
    return OMS_OK;
}

int orders_refund(orders_service *s, const char *order_id, const char *staff, const char *reason,
                  oms_order *out, oms_error *err)
{
    oms_order_init(out);
    if (!oms_valid_id(order_id))
        return oms_error_set(err, OMS_INVALID, "orderID: %s", id_rule);
    if (!oms_valid_id(staff))
        return oms_error_set(err, OMS_INVALID, "staff: %s", id_rule);
    int rc = check_reason(reason, err);
    if (rc != OMS_OK)
        return rc;
    oms_order_status st;
    rc = read_status(s, order_id, &st, err);
    if (rc != OMS_OK)
        return rc;
    if (st == OMS_ORDER_REFUNDED) /* done before: the same answer, nothing new */
        return orders_get(s, order_id, out, err);
    if (!rank_paid(st))
        return refund_refused(order_id, st, err);
    orders_audit a = {.staff = oms_strdup(staff),
                      .action = oms_strdup("order.refund"),
                      .subject = oms_strdup(order_id),
                      .after = oms_strdup("{\"status\":\"refunded\"}"),
                      .reason = oms_strdup(reason)};
    /* strict: a move the guard forbids is an error; paid_only re-checks the committed
     * status inside the transaction, so a concurrent change cannot slip a pending or
     * cancelled order through. The event's reason "staff" is what payments counts. */
    change c = {.target = OMS_ORDER_REFUNDED,
                .publish = OMS_EVENT_ORDER_REFUNDED,
                .event_reason = "staff",
                .strict = 1,
                .paid_only = 1,
                .audit = &a};
    snprintf(c.cause, sizeof(c.cause), "staff %s: %s", staff, reason);
    rc = apply_change(s, order_id, &c, out, err);
    if (rc == OMS_OK)
        oms_log_info("order refunded by staff", "order_id", order_id, "staff", staff);
    orders_audit_free(&a);
    return rc;
}

int orders_collect(orders_service *s, const char *order_id, const char *pickup_code,
                   const char *staff, oms_order *out, oms_error *err)
{
    char id[OMS_ID_MAX + 1] = "";
    oms_order_init(out);
    if (!oms_valid_id(staff))
        return oms_error_set(err, OMS_INVALID, "staff: %s", id_rule);
    if ((order_id && order_id[0]) == (pickup_code && pickup_code[0]))
        return oms_error_set(err, OMS_INVALID, "orderID or pickupCode: give exactly one");
    if (order_id && order_id[0]) {
        if (!oms_valid_id(order_id))
            return oms_error_set(err, OMS_INVALID, "orderID: %s", id_rule);
        snprintf(id, sizeof(id), "%s", order_id);
    } else {
        char code[OMS_PICKUP_CODE_MAX + 1];
        size_t n = strlen(pickup_code);
        if (n > OMS_PICKUP_CODE_MAX)
            return oms_error_set(err, OMS_NOTFOUND, "pickup code not found today");
        for (size_t i = 0; i <= n; i++) /* staff may type it in lower case */
            code[i] = (char)toupper((unsigned char)pickup_code[i]);
        if (!oms_pickup_code_valid(code))
            return oms_error_set(err, OMS_NOTFOUND, "pickup code not found today");
        char day[16];
        utc_day(oms_now_ms(), day);
        oms_db_tx *tx;
        int rc = oms_db_begin(s->db, &tx, err);
        if (rc != OMS_OK)
            return rc;
        rc = orders_store_find_by_pickup(tx, code, day, id, err);
        oms_db_rollback(tx);
        if (rc != OMS_OK)
            return rc;
    }
    oms_order_status st;
    int rc = read_status(s, id, &st, err);
    if (rc != OMS_OK)
        return rc;
    if (st == OMS_ORDER_COLLECTED) /* handed over before: the same answer, nothing new */
        return orders_get(s, id, out, err);
    if (st != OMS_ORDER_READY)
        return collect_refused(id, st, err);
    orders_audit a = {.staff = oms_strdup(staff),
                      .action = oms_strdup("order.collect"),
                      .subject = oms_strdup(id),
                      .after = oms_strdup("{\"status\":\"collected\"}"),
                      .reason = oms_strdup(pickup_code && pickup_code[0] ? "pickup code" : "bump")};
    change c = {.target = OMS_ORDER_COLLECTED,
                .publish = OMS_EVENT_ORDER_COLLECTED,
                .event_reason = "collected",
                .strict = 1,
                .ready_only = 1,
                .audit = &a};
    snprintf(c.cause, sizeof(c.cause), "staff %s: handed over", staff);
    rc = apply_change(s, id, &c, out, err);
    if (rc == OMS_CONFLICT && out->order_id[0] == '\0') {
        /* collected by someone else between the read and the lock: same answer */
        oms_error e;
        oms_order_status now;
        if (read_status(s, id, &now, &e) == OMS_OK && now == OMS_ORDER_COLLECTED) {
            oms_error_clear(err);
            rc = orders_get(s, id, out, err);
        }
    }
    if (rc == OMS_OK)
        oms_log_info("order collected", "order_id", id, "staff", staff);
    orders_audit_free(&a);
    return rc;
}

/* The value at percentile pct of sorted v (nearest rank: the smallest value with at
 * least pct% of the values at or below it); 0 for no values. */
static long long nearest_rank(const long long *v, size_t n, int pct)
{
    if (n == 0)
        return 0;
    size_t rank = ((size_t)pct * n + 99) / 100;
    if (rank < 1)
        rank = 1;
    return v[rank - 1];
}

int orders_summary_get(orders_service *s, const char *day, int tz_minutes, orders_summary *out,
                       oms_error *err)
{
    memset(out, 0, sizeof(*out));
    int64_t days;
    if (oms_day_parse(day, &days) != OMS_OK)
        return oms_error_set(err, OMS_INVALID, "day: must be a date YYYY-MM-DD");
    if (tz_minutes < OMS_TZ_MIN_MINUTES || tz_minutes > OMS_TZ_MAX_MINUTES)
        return oms_error_set(err, OMS_INVALID, "tzOffsetMinutes: must be from %d to %d",
                             OMS_TZ_MIN_MINUTES, OMS_TZ_MAX_MINUTES);
    snprintf(out->day, sizeof(out->day), "%s", day);
    long long start = oms_day_start_ms(days, tz_minutes), end = start + OMS_MS_PER_DAY;
    orders_money *paid = NULL, *refunded = NULL;
    size_t npaid = 0, nrefunded = 0, nready = 0;
    long long *ready = NULL;
    oms_db_tx *tx;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = orders_store_created_per_hour(tx, start, out->orders_per_hour, err);
    if (rc == OMS_OK)
        rc = orders_store_money(tx, OMS_ORDER_PAID, start, end, &paid, &npaid, err);
    if (rc == OMS_OK)
        rc = orders_store_money(tx, OMS_ORDER_REFUNDED, start, end, &refunded, &nrefunded, err);
    if (rc == OMS_OK)
        rc = orders_store_units_paid(tx, start, end, &out->units, &out->nunits, err);
    if (rc == OMS_OK)
        rc = orders_store_paid_to_ready(tx, start, end, &ready, &nready, err);
    oms_db_rollback(tx);
    if (rc != OMS_OK)
        goto done;
    for (int h = 0; h < 24; h++)
        out->orders += out->orders_per_hour[h];
    /* A shop takes one currency; should several ever appear, the figures are in the
     * most common one (the store lists it first) and the others are left out of the
     * amounts rather than added up as if they were the same money. */
    const char *cur = npaid ? paid[0].currency : nrefunded ? refunded[0].currency : "";
    snprintf(out->currency, sizeof(out->currency), "%s", cur);
    for (size_t i = 0; i < npaid; i++) {
        out->paid_orders += paid[i].orders;
        if (strcmp(paid[i].currency, out->currency) == 0)
            out->revenue += paid[i].amount;
    }
    for (size_t i = 0; i < nrefunded; i++) {
        out->refunds += refunded[i].orders;
        if (strcmp(refunded[i].currency, out->currency) == 0)
            out->refunded_amount += refunded[i].amount;
    }
    out->paid_to_ready_p50_ms = nearest_rank(ready, nready, 50);
    out->paid_to_ready_p90_ms = nearest_rank(ready, nready, 90);
done:
    free(paid);
    free(refunded);
    free(ready);
    if (rc != OMS_OK)
        orders_summary_free(out);
    return rc;
}

int orders_audit_list(orders_service *s, long long before_ms, int limit, orders_audit **out,
                      size_t *n, oms_error *err)
{
    *out = NULL;
    *n = 0;
    if (limit == 0)
        limit = 50;
    if (limit < 0 || limit > ORDERS_AUDIT_MAX_LIMIT)
        return oms_error_set(err, OMS_INVALID, "limit: must be from 1 to %d (0 or unset: 50)",
                             ORDERS_AUDIT_MAX_LIMIT);
    if (before_ms < 0)
        return oms_error_set(err, OMS_INVALID, "beforeMs: must not be negative");
    if (before_ms == 0)
        before_ms = INT64_MAX;
    oms_db_tx *tx;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = orders_store_list_audit(tx, before_ms, limit, out, n, err);
    oms_db_rollback(tx);
    return rc;
}
