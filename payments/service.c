#include "service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "event.h"
#include "oms/events.h"
#include "oms/inbox.h"
#include "oms/log.h"
#include "oms/metrics.h"
#include "oms/outbox.h"
#include "oms/trace.h"
#include "oms/tracer.h"
#include "oms/util.h"
#include "signature.h"
#include "urls.h"

static void notify(payments_service *s)
{
    if (s->outbox_notify)
        s->outbox_notify(s->outbox_ud);
}

static void count_webhook(const char *type, const char *result)
{
    char labels[256] = "";
    oms_metrics_label(labels, sizeof(labels), "type", type);
    oms_metrics_label(labels, sizeof(labels), "result", result);
    oms_metrics_counter_add("payments_webhooks_total", "Webhook events by type and outcome", labels,
                            1);
}

static void count_session(const char *processor)
{
    char labels[128] = "";
    oms_metrics_label(labels, sizeof(labels), "processor", processor);
    oms_metrics_counter_add("payments_sessions_created_total",
                            "Checkout sessions opened, by processor", labels, 1);
}

/* ---- order.created ------------------------------------------------------------- */

/* One read transaction for a delivery: whether the inbox holds the message (*seen)
 * and, if not, the order's stored session (*found, into *out). */
static int delivery_lookup(payments_service *s, const char *queue, const char *message_id,
                           const char *order_id, int *seen, int *found, payments_row *out,
                           oms_error *err)
{
    oms_db_tx *tx;
    *seen = *found = 0;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = oms_inbox_seen(tx, queue, message_id, seen, err);
    if (rc == OMS_OK && !*seen) {
        rc = payments_store_get_by_order(tx, order_id, out, err);
        if (rc == OMS_OK)
            *found = 1;
        else if (rc == OMS_NOTFOUND) {
            oms_error_clear(err);
            rc = OMS_OK;
        }
    }
    oms_db_rollback(tx);
    return rc;
}

static int inbox_record(payments_service *s, const char *queue, const char *message_id,
                        oms_error *err)
{
    oms_db_tx *tx;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = oms_inbox_claim(tx, queue, message_id, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        return rc == OMS_DUPLICATE ? OMS_OK : rc;
    }
    return oms_db_commit(tx, err);
}

static int find_by_order(payments_service *s, const char *order_id, payments_row *out,
                         oms_error *err)
{
    oms_db_tx *tx;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = payments_store_get_by_order(tx, order_id, out, err);
    oms_db_rollback(tx);
    return rc;
}

/* The order's session: the stored one, or a new one from the processor. The processor
 * is called outside any transaction (it may take seconds), so two racing deliveries
 * can both call it; the UNIQUE order_id keeps one row and the loser reads it back
 * (Stripe's Idempotency-Key makes both calls return the same session there). */
static int new_session(payments_service *s, const oms_order *o, const char *order_json,
                       payments_row *out, oms_error *err)
{
    payments_session ps;
    long long now = oms_now_ms();
    long long expires_ms = now + s->checkout_ttl_ms;
    int rc = s->processor->create_session(s->pcfg, o, expires_ms / 1000, &ps, err);
    if (rc != OMS_OK)
        return rc;
    char tp[OMS_TRACEPARENT_LEN + 1];
    oms_trace_current_header(tp); /* the order.created delivery: the order's trace */
    payments_row r = {
        .session_id = oms_strdup(ps.id),
        .order_id = oms_strdup(o->order_id),
        .customer_id = oms_strdup(o->customer_id),
        .status = PAYMENTS_SESSION_OPEN,
        .url = oms_strdup(ps.url),
        .amount = o->total,
        .currency = oms_strdup(o->currency[0] ? o->currency : "usd"),
        .order_json = oms_strdup(order_json),
        .created_ms = now,
        .updated_ms = now,
        .traceparent = tp[0] ? oms_strdup(tp) : NULL,
        .expires_ms = expires_ms,
    };
    payments_session_free(&ps);
    oms_db_tx *tx;
    rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        goto done;
    rc = payments_store_insert(tx, &r, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        goto done;
    }
    rc = oms_db_commit(tx, err);
done:
    if (rc == OMS_OK) {
        count_session(s->processor->name);
        oms_log_info("checkout session created", "order_id", o->order_id, "session_id",
                     r.session_id, "processor", s->processor->name);
        *out = r;
        return OMS_OK;
    }
    payments_row_free(&r);
    if (rc == OMS_CONFLICT) { /* lost the race: use the winner's row */
        oms_error_clear(err);
        return find_by_order(s, o->order_id, out, err);
    }
    return rc;
}

static int close_order_session(payments_service *s, const char *order_id,
                               payments_session_status st, int *changed, oms_error *err)
{
    oms_db_tx *tx;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = payments_store_close_by_order(tx, order_id, st, oms_now_ms(), changed, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        return rc;
    }
    return oms_db_commit(tx, err);
}

int payments_handle_order_created(payments_service *s, const char *queue, const char *message_id,
                                  const char *body, size_t len, oms_error *err)
{
    oms_order o;
    payments_row row;
    memset(&row, 0, sizeof(row));
    int rc = oms_order_from_json_str(body, len, &o, err);
    if (rc != OMS_OK)
        return OMS_INVALID;
    oms_span_set_str(oms_span_current(), OMS_ATTR_ORDER_ID, o.order_id);
    int seen = 0, found = 0;
    rc = delivery_lookup(s, queue, message_id, o.order_id, &seen, &found, &row, err);
    if (rc != OMS_OK || seen)
        goto done;
    if (!found) {
        /* The event body is the order as orders wrote it: kept as is for the webhook,
         * rather than encoded again. */
        rc = new_session(s, &o, body, &row, err);
        if (rc != OMS_OK)
            goto done;
    }
    rc = s->orders.set_waiting_payment(s->orders.ud, o.order_id, row.url, err);
    if (rc == OMS_CONFLICT) {
        /* The order moved on before it got its link (cancelled meanwhile, or paid on a
         * redelivery): nothing to tell it, and an open session must not stay payable. */
        oms_log_info("order no longer awaits a payment link", "order_id", o.order_id, "reason",
                     err->msg);
        oms_error_clear(err);
        int changed = 0;
        rc = close_order_session(s, o.order_id, PAYMENTS_SESSION_CANCELLED, &changed, err);
        if (rc != OMS_OK)
            goto done;
    } else if (rc != OMS_OK) {
        rc = OMS_AGAIN; /* orders down or slow: the consumer retries */
        goto done;
    } else {
        oms_log_info("order awaits payment", "order_id", o.order_id, "session_id", row.session_id);
    }
    rc = inbox_record(s, queue, message_id, err);
done:
    if (rc == OMS_OK && seen)
        rc = OMS_DUPLICATE;
    payments_row_free(&row);
    oms_order_free(&o);
    return rc;
}

int payments_handle_order_cancelled(payments_service *s, const char *queue, const char *message_id,
                                    const char *body, size_t len, oms_error *err)
{
    oms_order o;
    int rc = oms_order_from_json_str(body, len, &o, err);
    if (rc != OMS_OK)
        return OMS_INVALID;
    oms_span_set_str(oms_span_current(), OMS_ATTR_ORDER_ID, o.order_id);
    payments_session_status st =
        o.status == OMS_ORDER_PAYMENT_FAILED ? PAYMENTS_SESSION_FAILED : PAYMENTS_SESSION_CANCELLED;
    /* A session the processor keeps (Stripe) is expired there first, outside any
     * transaction; expiring is idempotent, so a retry after a failure below repeats
     * it harmlessly. */
    if (s->processor->expire_session) {
        int seen = 0, found = 0;
        payments_row row;
        memset(&row, 0, sizeof(row));
        rc = delivery_lookup(s, queue, message_id, o.order_id, &seen, &found, &row, err);
        if (rc == OMS_OK && !seen && found && row.status == PAYMENTS_SESSION_OPEN)
            rc = s->processor->expire_session(s->pcfg, row.session_id, o.order_id, err);
        payments_row_free(&row);
        if (rc != OMS_OK)
            goto done;
    }
    oms_db_tx *tx;
    int changed = 0;
    rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        goto done;
    rc = oms_inbox_claim(tx, queue, message_id, err);
    if (rc == OMS_OK)
        rc = payments_store_close_by_order(tx, o.order_id, st, oms_now_ms(), &changed, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        goto done;
    }
    rc = oms_db_commit(tx, err);
    if (rc == OMS_OK && changed)
        oms_log_info("checkout session closed: order cancelled", "order_id", o.order_id, "status",
                     payments_session_status_str(st));
done:
    oms_order_free(&o);
    return rc;
}

/* ---- refunds --------------------------------------------------------------------- */

/* The reasons a payment goes back, as metric labels; an event's reason starts with one
 * ("stock_unavailable: reservation ... released"), anything else counts as other. */
static const char *const refund_reasons[] = {"order_cancelled", "checkout_expired",
                                             "amount_mismatch", "stock_unavailable", "staff"};

static const char *refund_label(const char *reason)
{
    for (size_t i = 0; i < OMS_NELEM(refund_reasons); i++) {
        size_t n = strlen(refund_reasons[i]);
        if (strncmp(reason, refund_reasons[i], n) == 0 && (reason[n] == '\0' || reason[n] == ':'))
            return refund_reasons[i];
    }
    return "other";
}

static void count_refund(const char *reason)
{
    char labels[128] = "";
    oms_metrics_label(labels, sizeof(labels), "reason", refund_label(reason));
    oms_metrics_counter_add("payments_refunds_total", "Payments returned to customers, by reason",
                            labels, 1);
}

/* Adds the order event for the session's order, inside tx: the stored order with the
 * new status, the payment link and the reason. */
static int add_order_event(oms_db_tx *tx, const payments_row *row, oms_event ev,
                           oms_order_status st, const char *reason, const char *pickup_code,
                           oms_error *err)
{
    oms_order o;
    int rc = oms_order_from_json_str(row->order_json, strlen(row->order_json), &o, err);
    if (rc != OMS_OK)
        return oms_error_set(err, OMS_ERR, "stored order of session %s is unreadable",
                             row->session_id);
    o.status = st;
    free(o.payment_link);
    o.payment_link = oms_strdup(row->url);
    o.updated_ms = oms_now_ms();
    snprintf(o.reason, sizeof(o.reason), "%s", reason ? reason : "");
    snprintf(o.pickup_code, sizeof(o.pickup_code), "%s", pickup_code ? pickup_code : "");
    char *body = oms_order_to_json_str(&o);
    rc = oms_outbox_add(tx, oms_event_exchanges[ev], body, NULL, err);
    free(body);
    oms_order_free(&o);
    return rc;
}

int payments_handle_order_refunded(payments_service *s, const char *queue, const char *message_id,
                                   const char *body, size_t len, oms_error *err)
{
    oms_order o;
    payments_row row;
    memset(&row, 0, sizeof(row));
    int rc = oms_order_from_json_str(body, len, &o, err);
    if (rc != OMS_OK)
        return OMS_INVALID;
    oms_span_set_str(oms_span_current(), OMS_ATTR_ORDER_ID, o.order_id);
    const char *reason = o.reason[0] ? o.reason : "other";
    int seen = 0, found = 0, refunded = 0;
    rc = delivery_lookup(s, queue, message_id, o.order_id, &seen, &found, &row, err);
    if (rc != OMS_OK || seen)
        goto done;
    oms_db_tx *tx;
    if (found) {
        rc = oms_db_begin(s->db, &tx, err);
        if (rc != OMS_OK)
            goto done;
        rc = payments_store_refund_exists(tx, o.order_id, &refunded, err);
        oms_db_rollback(tx);
        if (rc != OMS_OK)
            goto done;
    }
    char refund_id[PAYMENTS_REFUND_ID_MAX + 1] = "";
    if (!found || !row.payment_intent) {
        oms_log_warn("order refunded without a recorded payment: nothing to return", "order_id",
                     o.order_id, "reason", reason);
    } else if (!refunded) {
        payments_refund_req r = {.order_id = o.order_id,
                                 .session_id = row.session_id,
                                 .payment_intent = row.payment_intent,
                                 .amount = row.amount,
                                 .currency = row.currency,
                                 .reason = refund_label(reason)};
        rc = s->processor->refund(s->pcfg, &r, refund_id, err);
        if (rc != OMS_OK) {
            if (rc != OMS_AGAIN)
                oms_log_error("refund refused by the processor", "order_id", o.order_id,
                              "processor", s->processor->name, "error", err->msg);
            goto done;
        }
    }
    rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        goto done;
    rc = oms_inbox_claim(tx, queue, message_id, err);
    int changed = 0;
    if (rc == OMS_OK && refund_id[0]) {
        payments_refund_row rr = {.order_id = o.order_id,
                                  .session_id = row.session_id,
                                  .refund_id = refund_id,
                                  .reason = reason,
                                  .currency = row.currency,
                                  .amount = row.amount,
                                  .created_ms = oms_now_ms()};
        rc = payments_store_refund_insert(tx, &rr, err);
        if (rc == OMS_OK)
            rc =
                payments_store_mark_refunded(tx, row.session_id, NULL, oms_now_ms(), &changed, err);
    }
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        goto done;
    }
    rc = oms_db_commit(tx, err);
    if (rc == OMS_OK && refund_id[0]) {
        count_refund(reason);
        oms_log_info("payment refunded", "order_id", o.order_id, "refund_id", refund_id, "reason",
                     reason, "processor", s->processor->name);
    }
done:
    if (rc == OMS_OK && seen)
        rc = OMS_DUPLICATE;
    payments_row_free(&row);
    oms_order_free(&o);
    return rc;
}

/* ---- deadline ------------------------------------------------------------------- */

/* Ends the order's unpaid checkout: stock first (if a payment has committed it, the
 * payment won: nothing to do), the processor's session next (Stripe: expired; both
 * idempotent, so a retry repeats them harmlessly), then one transaction that closes the
 * session if still open and publishes order.cancelled with the reason. With queue and
 * message_id (a webhook event) the inbox claim joins that transaction. *result names
 * the outcome for the metric. */
static int session_end(payments_service *s, const char *order_id, payments_session_status st,
                       const char *reason, const char *queue, const char *message_id,
                       const char **result, oms_error *err)
{
    int rc = s->stock.release(s->stock.ud, order_id, err);
    if (rc == OMS_CONFLICT) { /* committed: a payment is being applied */
        oms_log_info("checkout not closed: its payment has the stock", "order_id", order_id);
        oms_error_clear(err);
        *result = "noop";
        if (!queue)
            return OMS_OK;
        return inbox_record(s, queue, message_id, err);
    }
    if (rc != OMS_OK && rc != OMS_NOTFOUND)
        return rc == OMS_INVALID ? rc : OMS_AGAIN;
    oms_error_clear(err);
    payments_row row;
    memset(&row, 0, sizeof(row));
    rc = find_by_order(s, order_id, &row, err);
    if (rc != OMS_OK)
        return rc;
    if (row.status == PAYMENTS_SESSION_OPEN && s->processor->expire_session) {
        rc = s->processor->expire_session(s->pcfg, row.session_id, order_id, err);
        if (rc != OMS_OK)
            goto done;
    }
    oms_db_tx *tx;
    int changed = 0;
    rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        goto done;
    if (queue)
        rc = oms_inbox_claim(tx, queue, message_id, err);
    if (rc == OMS_OK)
        rc = payments_store_close(tx, row.session_id, st, oms_now_ms(), &changed, err);
    if (rc == OMS_OK && changed)
        rc = add_order_event(tx, &row, OMS_EVENT_ORDER_CANCELLED,
                             st == PAYMENTS_SESSION_FAILED ? OMS_ORDER_PAYMENT_FAILED
                                                           : OMS_ORDER_CANCELLED,
                             reason, NULL, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        goto done;
    }
    rc = oms_db_commit(tx, err);
    if (rc == OMS_OK && changed) {
        notify(s);
        oms_log_info("checkout session closed", "order_id", order_id, "session_id", row.session_id,
                     "status", payments_session_status_str(st), "reason", reason);
    }
    *result = changed ? "applied" : "noop";
done:
    payments_row_free(&row);
    return rc;
}

#define EXPIRE_BATCH 100

int payments_expire_due(payments_service *s, size_t *closed, oms_error *err)
{
    char ids[EXPIRE_BATCH][PAYMENTS_ORDER_ID_SIZE];
    size_t n = 0, done = 0;
    if (closed)
        *closed = 0;
    oms_db_tx *tx;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = payments_store_list_due(tx, oms_now_ms(), ids, EXPIRE_BATCH, &n, err);
    oms_db_rollback(tx);
    if (rc != OMS_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const char *result = "noop";
        rc = session_end(s, ids[i], PAYMENTS_SESSION_EXPIRED, "checkout_expired: checkout expired",
                         NULL, NULL, &result, err);
        if (rc != OMS_OK) /* the next sweep tries again */
            return rc;
        if (strcmp(result, "applied") == 0)
            done++;
    }
    if (closed)
        *closed = done;
    return OMS_OK;
}

int payments_session_overdue(const payments_row *row, long long now_ms)
{
    return row->status == PAYMENTS_SESSION_OPEN && row->expires_ms > 0 && now_ms >= row->expires_ms;
}

/* ---- webhook ------------------------------------------------------------------- */

/* What a handled checkout event means: money arrived (paid), or the checkout ended
 * without it (the session's final state, and the order's status for order.cancelled). */
typedef struct webhook_action {
    const char *type;
    int needs_paid; /* completed: only when payment_status says paid */
    payments_session_status target;
    oms_order_status order_status;
    const char *reason;
} webhook_action;

static const webhook_action actions[] = {
    {"checkout.session.completed", 1, PAYMENTS_SESSION_PAID, OMS_ORDER_PAID, "payment received"},
    {"checkout.session.async_payment_succeeded", 0, PAYMENTS_SESSION_PAID, OMS_ORDER_PAID,
     "payment received"},
    {"checkout.session.expired", 0, PAYMENTS_SESSION_EXPIRED, OMS_ORDER_CANCELLED,
     "checkout_expired: checkout expired"},
    {"checkout.session.async_payment_failed", 0, PAYMENTS_SESSION_FAILED, OMS_ORDER_PAYMENT_FAILED,
     "payment failed"},
};

static const webhook_action *action_for(const char *type)
{
    for (size_t i = 0; i < OMS_NELEM(actions); i++)
        if (strcmp(actions[i].type, type) == 0)
            return &actions[i];
    return NULL;
}

/* The session an event is about: by the checkout session id, else by the order id
 * in its metadata. OMS_NOTFOUND when neither is known. */
static int find_session(oms_db_tx *tx, const payments_event *ev, payments_row *out, oms_error *err)
{
    int rc = OMS_NOTFOUND;
    memset(out, 0, sizeof(*out));
    if (ev->object_id[0])
        rc = payments_store_get(tx, ev->object_id, out, err);
    /* The order id from metadata is only a fallback for an event that names no
     * session: one naming a session we do not know must never settle whichever order
     * its metadata points at (another session's payment would pay this order). */
    if (rc == OMS_NOTFOUND && !ev->object_id[0] && ev->order_id[0])
        rc = payments_store_get_by_order(tx, ev->order_id, out, err);
    if (rc == OMS_NOTFOUND)
        oms_error_set(err, OMS_NOTFOUND, "no checkout session %s (order %s)",
                      ev->object_id[0] ? ev->object_id : "-", ev->order_id[0] ? ev->order_id : "-");
    return rc;
}

/* One read: whether the event was handled before (*seen) and its session (*found). */
static int webhook_lookup(payments_service *s, const payments_event *ev, int *seen, int *found,
                          payments_row *row, oms_error *err)
{
    oms_db_tx *tx;
    *seen = *found = 0;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = oms_inbox_seen(tx, PAYMENTS_WEBHOOK_CONSUMER, ev->id, seen, err);
    if (rc == OMS_OK && !*seen) {
        rc = find_session(tx, ev, row, err);
        if (rc == OMS_OK)
            *found = 1;
        else if (rc == OMS_NOTFOUND)
            rc = OMS_OK; /* err keeps the message for the log */
    }
    oms_db_rollback(tx);
    return rc;
}

/* Whether money that arrived can be kept: the amount and currency must be the order's,
 * the session still open, and the order's stock committed to it (stock refuses when a
 * cancel or the deadline released it first). Otherwise it goes back: *refund names
 * why. The commit is outside any transaction and idempotent. */
static int payment_check(payments_service *s, const payments_event *ev, const payments_row *row,
                         char *refund, size_t n, oms_error *err)
{
    refund[0] = '\0';
    if (!ev->has_amount || ev->amount_total != row->amount ||
        strcasecmp(ev->currency, row->currency) != 0) {
        snprintf(refund, n, "amount_mismatch: paid %lld %s, order total %lld %s",
                 ev->has_amount ? ev->amount_total : -1LL, ev->currency[0] ? ev->currency : "-",
                 row->amount, row->currency);
        oms_log_error("payment does not match the order's total: refunding", "order_id",
                      row->order_id, "session_id", row->session_id, "detail", refund);
        return OMS_OK;
    }
    if (row->status != PAYMENTS_SESSION_OPEN) {
        snprintf(refund, n, "%s: payment arrived after the checkout was %s",
                 row->status == PAYMENTS_SESSION_EXPIRED ? "checkout_expired" : "order_cancelled",
                 payments_session_status_str(row->status));
        oms_log_error("payment for a closed checkout session: refunding", "order_id", row->order_id,
                      "session_id", row->session_id, "status",
                      payments_session_status_str(row->status));
        return OMS_OK;
    }
    int rc = s->stock.commit(s->stock.ud, row->order_id, err);
    if (rc == OMS_CONFLICT || rc == OMS_NOTFOUND) {
        snprintf(refund, n, "stock_unavailable: %.100s", err->msg);
        oms_log_error("paid order cannot get its stock: refunding", "order_id", row->order_id,
                      "error", err->msg);
        oms_error_clear(err);
        return OMS_OK;
    }
    if (rc != OMS_OK)
        return rc == OMS_INVALID ? OMS_ERR : OMS_AGAIN;
    return OMS_OK;
}

/* Inside tx: the paid session and order.paid, or -- when the money cannot stay -- the
 * refunded session and order.refunded (payments' own consumer then returns the money).
 * *result names the outcome. */
static int settle_payment(oms_db_tx *tx, const payments_event *ev, payments_row *row,
                          const char *refund, const char **result, oms_error *err)
{
    int changed = 0, rc;
    const char *pi = ev->payment_intent[0] ? ev->payment_intent : NULL;
    if (!refund[0]) {
        rc = payments_store_mark_paid(tx, row->session_id, pi, oms_now_ms(), &changed, err);
        if (rc != OMS_OK)
            return rc;
        if (changed) {
            char code[OMS_PICKUP_CODE_MAX + 1];
            *result = "applied";
            rc = payments_store_assign_pickup(tx, row->session_id, oms_now_ms(), code, err);
            if (rc != OMS_OK)
                return rc;
            return add_order_event(tx, row, OMS_EVENT_ORDER_PAID, OMS_ORDER_PAID, NULL, code, err);
        }
        /* Closed since our read (another event for it): stay out of its way. */
        *result = "noop";
        return OMS_OK;
    }
    rc = payments_store_mark_refunded(tx, row->session_id, pi, oms_now_ms(), &changed, err);
    if (rc != OMS_OK || !changed) {
        *result = "noop";
        return rc;
    }
    *result = "refunded";
    return add_order_event(tx, row, OMS_EVENT_ORDER_REFUNDED, OMS_ORDER_REFUNDED, refund, NULL,
                           err);
}

/* The span of applying a checkout event, in the order's trace: a child of the context
 * stored with the session (the order.created delivery that opened it), linked to the
 * request that brought the event (a browser's Pay or Stripe's webhook starts a trace
 * of its own). It is current while the event's outbox row is written, so order.paid
 * and everything after it stay in the order's trace. Without a stored context (a
 * session older than the column) it is simply a child of the request. */
static oms_span *webhook_span_start(const payments_row *row, const char *type, const char *event_id)
{
    oms_trace_ctx parent, request;
    const oms_trace_ctx *cur = oms_trace_current();
    int has_request = cur != NULL;
    if (has_request)
        request = *cur;
    int has_parent = row->traceparent && oms_traceparent_parse(row->traceparent, &parent) == OMS_OK;
    char name[160];
    snprintf(name, sizeof(name), "%s apply", type);
    oms_span *span = oms_span_start(name, OMS_SPAN_INTERNAL, has_parent ? &parent : NULL);
    if (has_parent && has_request)
        oms_span_add_link(span, &request);
    oms_span_set_str(span, OMS_ATTR_ORDER_ID, row->order_id);
    oms_span_set_str(span, "payments.session.id", row->session_id);
    oms_span_set_str(span, "payments.event.type", type);
    oms_span_set_str(span, "payments.event.id", event_id);
    return span;
}

static void webhook_span_end(oms_span *span, int rc, const oms_error *err)
{
    if (span && rc != OMS_OK && rc != OMS_DUPLICATE)
        oms_span_set_status(span, OMS_SPAN_ERROR,
                            err && err->msg[0] ? err->msg : oms_status_text(rc));
    oms_span_end(span); /* back to the request's span */
}

int payments_webhook(payments_service *s, const char *sig_header, const char *body, size_t len,
                     oms_error *err)
{
    oms_span *span = NULL;
    payments_sig_result sr =
        payments_signature_verify(sig_header, body, len, s->webhook_secret, oms_now_ms() / 1000,
                                  PAYMENTS_SIGNATURE_TOLERANCE_S, err);
    if (sr != PAYMENTS_SIG_OK) {
        count_webhook("unverified", payments_sig_result_str(sr));
        oms_log_warn("webhook rejected", "reason", err->msg);
        return OMS_INVALID;
    }
    payments_event ev;
    int rc = payments_event_parse(body, len, &ev, err);
    if (rc != OMS_OK) {
        count_webhook("unparsed", "malformed");
        oms_log_warn("webhook event malformed", "error", err->msg);
        return OMS_INVALID;
    }
    const webhook_action *a = action_for(ev.type);
    /* Unhandled types share one label: the set Stripe may send is large. */
    const char *type_label = a ? a->type : "other";
    const char *result = "ignored";
    char refund[160] = "";
    payments_row row;
    memset(&row, 0, sizeof(row));
    if (a && a->needs_paid && strcmp(ev.payment_status, "paid") != 0 &&
        strcmp(ev.payment_status, "no_payment_required") != 0) {
        /* Delayed payment methods: the money comes later with async_payment_*. */
        oms_log_info("checkout completed, payment pending", "event_id", ev.id, "payment_status",
                     ev.payment_status);
        a = NULL;
    }
    int seen = 0, found = 0;
    rc = webhook_lookup(s, &ev, &seen, &found, &row, err);
    if (rc == OMS_INVALID) { /* an id the inbox cannot hold: refuse it, change nothing */
        count_webhook(type_label, "malformed");
        return rc;
    }
    if (rc != OMS_OK)
        goto fail;
    if (seen) {
        rc = OMS_DUPLICATE;
        goto fail;
    }
    if (a && !found) {
        oms_log_warn("webhook for an unknown checkout session", "event_id", ev.id, "type", ev.type,
                     "error", err->msg);
        oms_error_clear(err);
        result = "unknown_session";
        a = NULL;
    }
    if (a) {
        span = webhook_span_start(&row, a->type, ev.id);
        if (a->target != PAYMENTS_SESSION_PAID) {
            rc = session_end(s, row.order_id, a->target, a->reason, PAYMENTS_WEBHOOK_CONSUMER,
                             ev.id, &result, err);
            goto finish;
        }
        if (row.status == PAYMENTS_SESSION_PAID || row.status == PAYMENTS_SESSION_REFUNDED) {
            result = "noop"; /* settled by an earlier event */
            a = NULL;
        } else {
            rc = payment_check(s, &ev, &row, refund, sizeof(refund), err);
            if (rc != OMS_OK)
                goto fail;
        }
    }
    oms_db_tx *tx;
    rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        goto fail;
    rc = oms_inbox_claim(tx, PAYMENTS_WEBHOOK_CONSUMER, ev.id, err);
    if (rc == OMS_OK && a)
        rc = settle_payment(tx, &ev, &row, refund, &result, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        goto fail;
    }
    rc = oms_db_commit(tx, err);
finish:
    if (rc != OMS_OK)
        goto fail;
    if (strcmp(result, "applied") == 0 || strcmp(result, "refunded") == 0) {
        notify(s);
        oms_log_info("checkout event applied", "event_id", ev.id, "type", ev.type, "order_id",
                     row.order_id, "session_id", row.session_id, "result", result);
    }
    count_webhook(type_label, result);
    webhook_span_end(span, OMS_OK, err);
    payments_row_free(&row);
    return OMS_OK;
fail:
    count_webhook(type_label, rc == OMS_DUPLICATE ? "duplicate" : "error");
    if (rc != OMS_DUPLICATE)
        oms_log_error("webhook not applied", "event_id", ev.id, "error", err->msg);
    webhook_span_end(span, rc, err);
    payments_row_free(&row);
    return rc;
}

/* ---- local checkout ------------------------------------------------------------ */

int payments_checkout_get(payments_service *s, const char *session_id, payments_row *out,
                          oms_error *err)
{
    memset(out, 0, sizeof(*out));
    oms_db_tx *tx;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = payments_store_get(tx, session_id, out, err);
    oms_db_rollback(tx);
    return rc;
}

int payments_checkout_finish(payments_service *s, const char *session_id, int pay,
                             payments_row *out, oms_error *err)
{
    int rc = payments_checkout_get(s, session_id, out, err);
    if (rc != OMS_OK)
        return rc;
    if (payments_session_overdue(out, oms_now_ms())) {
        /* Past the deadline before the sweep came by: end it now, then refuse. */
        const char *result = "noop";
        char order_id[OMS_ID_MAX + 1];
        snprintf(order_id, sizeof(order_id), "%s", out->order_id);
        rc = session_end(s, order_id, PAYMENTS_SESSION_EXPIRED,
                         "checkout_expired: checkout expired", NULL, NULL, &result, err);
        if (rc != OMS_OK)
            return rc;
        payments_row_free(out);
        rc = payments_checkout_get(s, session_id, out, err);
        if (rc != OMS_OK)
            return rc;
    }
    if (out->status != PAYMENTS_SESSION_OPEN)
        return oms_error_set(err, OMS_CONFLICT, "checkout session %s is %s", session_id,
                             payments_session_status_str(out->status));
    char *success =
        payments_status_url(s->gateway_url, "success.html", out->customer_id, out->order_id);
    /* One intent per session, like Stripe's: a refund names it. */
    char pi[PAYMENTS_SESSION_ID_MAX + 16];
    snprintf(pi, sizeof(pi), "pi_local_%s", out->session_id);
    payments_local_event le = {
        .type = pay ? "checkout.session.completed" : "checkout.session.expired",
        .session_status = pay ? "complete" : "expired",
        .payment_status = pay ? "paid" : "unpaid",
        .session_id = out->session_id,
        .session_url = out->url,
        .success_url = success,
        .order_id = out->order_id,
        .customer_id = out->customer_id,
        .amount = out->amount,
        .currency = out->currency,
        .payment_intent = pay ? pi : NULL,
        .created = (int64_t)time(NULL),
    };
    char *body = payments_event_build_local(&le);
    free(success);
    if (!body)
        return oms_error_set(err, OMS_ERR, "cannot build the checkout event");
    char header[128];
    rc = payments_signature_header(s->webhook_secret, body, strlen(body), le.created, header,
                                   sizeof(header));
    if (rc != OMS_OK)
        rc = oms_error_set(err, OMS_ERR, "cannot sign the checkout event");
    else
        rc = payments_webhook(s, header, body, strlen(body), err);
    free(body);
    return rc == OMS_DUPLICATE ? OMS_OK : rc;
}
