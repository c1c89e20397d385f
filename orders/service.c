#include "service.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/events.h"
#include "oms/inbox.h"
#include "oms/log.h"
#include "oms/outbox.h"
#include "oms/tracer.h"
#include "oms/util.h"
#include "store.h"

static void notify(orders_service *s)
{
    if (s->outbox_notify)
        s->outbox_notify(s->outbox_ud);
}

static int add_event(oms_db_tx *tx, oms_event ev, const oms_order *o, oms_error *err)
{
    char *body = oms_order_to_json_str(o);
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
        if (rc != OMS_NOTFOUND)
            return rc; /* OMS_OK: the first order; or a database error */
        oms_error_clear(err);
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
        rc = add_event(tx, OMS_EVENT_ORDER_CREATED, &o, err);
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
        oms_order_free(&o);
        return get_by_key(s, customer_id, idem_key, out, err);
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
    const char *link;   /* NULL: keep */
    int publish_cancel; /* customer cancel: tell payments */
    const char *queue;  /* event: inbox consumer, else NULL */
    const char *message_id;
    int strict; /* gRPC caller: a forbidden move is an error, not a no-op */
} change;

static int rank_paid(oms_order_status st)
{
    return st == OMS_ORDER_PAID || st == OMS_ORDER_COOKING || st == OMS_ORDER_READY;
}

/* Stock side effect of moving an order from cur to target, done before the status
 * transaction; stock calls are idempotent, so a retry repeats them harmlessly. */
static int stock_effect(orders_service *s, const char *order_id, oms_order_status cur,
                        oms_order_status target, oms_error *err)
{
    if (rank_paid(target) && !rank_paid(cur) && !oms_order_status_terminal(cur)) {
        int rc = s->stock.commit(s->stock.ud, order_id, err);
        if (rc == OMS_CONFLICT || rc == OMS_NOTFOUND) {
            /* Paid, but the reservation expired and the stock is gone: the customer has
             * paid, so the order goes on; staff must resolve it. */
            oms_log_error("paid order has no stock reservation", "order_id", order_id, "error",
                          err->msg);
            oms_error_clear(err);
            return OMS_OK;
        }
        return rc;
    }
    if ((target == OMS_ORDER_CANCELLED || target == OMS_ORDER_PAYMENT_FAILED) &&
        oms_order_can_move(cur, target)) {
        int rc = s->stock.release(s->stock.ud, order_id, err);
        if (rc == OMS_NOTFOUND) { /* nothing reserved: nothing to give back */
            oms_error_clear(err);
            return OMS_OK;
        }
        return rc;
    }
    return OMS_OK;
}

/* Whether stock_effect can do anything for a move to target, whatever the status now. */
static int stock_may_change(oms_order_status target)
{
    return rank_paid(target) || target == OMS_ORDER_CANCELLED || target == OMS_ORDER_PAYMENT_FAILED;
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

/* Applies a status change: the stock side effect first (idempotent, outside any
 * transaction), then one transaction that records the inbox id, locks the row, re-checks
 * the guard on the committed status, writes, and (when asked or needed) reads the order
 * back once. The benchmark found the earlier version's extra reads costly. */
static int apply_change(orders_service *s, const char *order_id, const change *c, oms_order *out,
                        oms_error *err)
{
    oms_order_status st = c->target; /* set from the row below */
    int rc;
    /* Only a move to paid, cooking, ready, cancelled or payment failed can touch the
     * stock; the common move (payments setting waiting_payment with its link) skips the
     * status read and its transaction. */
    if (stock_may_change(c->target)) {
        rc = read_status(s, order_id, &st, err);
        if (rc != OMS_OK)
            return rc;
        if (st != c->target) {
            rc = stock_effect(s, order_id, st, c->target, err);
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
    if (st == c->target) {
        if (c->link)
            rc = orders_store_set_status(tx, order_id, c->target, c->link, oms_now_ms(), err);
    } else if (oms_order_can_move(st, c->target)) {
        rc = orders_store_set_status(tx, order_id, c->target, c->link, oms_now_ms(), err);
        moved = 1;
    } else if (c->strict) {
        rc = oms_error_set(err, OMS_CONFLICT, "order %s is %s; it cannot become %s", order_id,
                           oms_order_status_str(st), oms_order_status_str(c->target));
    } else {
        oms_log_info("event ignored: status never moves backwards", "order_id", order_id, "status",
                     oms_order_status_str(st), "event_status", oms_order_status_str(c->target));
    }
    if (rc != OMS_OK)
        goto rollback;
    oms_order now;
    oms_order_init(&now);
    int publish = moved && c->publish_cancel;
    if (out || publish) {
        rc = orders_store_get(tx, order_id, &now, err);
        if (rc == OMS_OK && publish)
            rc = add_event(tx, OMS_EVENT_ORDER_CANCELLED, &now, err);
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
                     oms_order_status_str(c->target));
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
    if (status < 0) { /* link only: "move" to the current status */
        oms_order_status cur;
        int rc = read_status(s, order_id, &cur, err);
        if (rc != OMS_OK)
            return rc;
        status = (int)cur;
    }
    change c = {.target = (oms_order_status)status,
                .link = link,
                .publish_cancel = status == OMS_ORDER_CANCELLED,
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
    change c = {.target = OMS_ORDER_CANCELLED, .publish_cancel = 1, .strict = 1};
    return apply_change(s, order_id, &c, out, err);
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
    if (page_size == 0) /* unset in proto3 */
        page_size = 20;
    if (page_size < 0 || page_size > 100)
        return oms_error_set(err, OMS_INVALID, "pageSize: must be from 1 to 100 (0 or unset: 20)");
    long long before_ms = 0;
    char before_id[OMS_ID_MAX + 1] = "";
    if (page_token && page_token[0]) {
        /* token: "<created_ms>.<order id>" */
        char *end;
        before_ms = strtoll(page_token, &end, 10);
        if (end == page_token || *end != '.' || !oms_valid_id(end + 1) || before_ms < 0)
            return oms_error_set(err, OMS_INVALID, "pageToken: not a token from this API");
        snprintf(before_id, sizeof(before_id), "%s", end + 1);
    }
    oms_db_tx *tx;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    /* One extra row tells whether another page exists. */
    rc = orders_store_list(tx, customer_id, page_size + 1, before_ms,
                           before_id[0] ? before_id : NULL, out, n, err);
    oms_db_rollback(tx);
    if (rc != OMS_OK)
        return rc;
    if (*n > (size_t)page_size) {
        oms_order_free(&(*out)[page_size]);
        *n = (size_t)page_size;
        const oms_order *last = &(*out)[page_size - 1];
        snprintf(next_token, 96, "%lld.%s", last->created_ms, last->order_id);
    }
    return OMS_OK;
}

int orders_handle_event(orders_service *s, const char *queue, const char *message_id,
                        const char *exchange, const char *body, size_t len, oms_error *err)
{
    oms_order evt;
    int rc = oms_order_from_json_str(body, len, &evt, err);
    if (rc != OMS_OK)
        return OMS_INVALID;
    oms_span_set_str(oms_span_current(), OMS_ATTR_ORDER_ID, evt.order_id);
    change c = {.queue = queue, .message_id = message_id};
    if (strcmp(exchange, "order.paid") == 0)
        c.target = OMS_ORDER_PAID;
    else if (strcmp(exchange, "order.cooking") == 0)
        c.target = OMS_ORDER_COOKING;
    else if (strcmp(exchange, "order.ready") == 0)
        c.target = OMS_ORDER_READY;
    else if (strcmp(exchange, "order.cancelled") == 0)
        c.target =
            evt.status == OMS_ORDER_PAYMENT_FAILED ? OMS_ORDER_PAYMENT_FAILED : OMS_ORDER_CANCELLED;
    else {
        oms_order_free(&evt);
        return oms_error_set(err, OMS_INVALID, "unexpected event %s", exchange);
    }
    rc = apply_change(s, evt.order_id, &c, NULL, err);
    if (rc == OMS_NOTFOUND)
        rc = OMS_INVALID; /* an event about an order we never had: dead-letter it */
    oms_order_free(&evt);
    return rc;
}
