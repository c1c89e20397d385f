#include "service.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/events.h"
#include "oms/log.h"
#include "oms/metrics.h"
#include "oms/order.h"
#include "oms/trace.h"
#include "oms/tracer.h"
#include "oms/util.h"

#define TICKETS_TOTAL "kitchen_tickets_total"
#define TICKETS_HELP "Kitchen tickets that entered each state"
#define PAID_TOTAL "kitchen_paid_events_total"
#define PAID_HELP "order.paid deliveries by outcome (new ticket, duplicate, invalid)"
#define COOK_SECONDS "kitchen_cook_seconds"
#define COOK_HELP "Time from a station taking a ticket to the order being ready"
#define LATE_TOTAL "kitchen_late_tickets_total"
#define LATE_HELP                                                                                  \
    "Tickets that turned late, by stage (queued or cooking past KITCHEN_SLA_MS, ready and"         \
    " not collected past PICKUP_WINDOW)"

static const struct {
    kitchen_state state;
    int bit;
} late_stages[] = {{KITCHEN_QUEUED, KITCHEN_LATE_QUEUED},
                   {KITCHEN_COOKING, KITCHEN_LATE_COOKING},
                   {KITCHEN_READY, KITCHEN_LATE_READY}};

void kitchen_service_init(kitchen_service *s, oms_db *db)
{
    memset(s, 0, sizeof(*s));
    s->db = db;
    atomic_init(&s->queue_depth, 0);
}

static void count_state(kitchen_state st)
{
    char labels[64] = "";
    oms_metrics_label(labels, sizeof(labels), "state", kitchen_state_str(st));
    oms_metrics_counter_add(TICKETS_TOTAL, TICKETS_HELP, labels, 1);
}

static void count_paid(const char *result)
{
    char labels[64] = "";
    oms_metrics_label(labels, sizeof(labels), "result", result);
    oms_metrics_counter_add(PAID_TOTAL, PAID_HELP, labels, 1);
}

void kitchen_metrics_register(kitchen_service *s)
{
    static const char *const results[] = {"new", "duplicate", "invalid"};
    for (int i = 0; i < KITCHEN_STATE__COUNT; i++) {
        char labels[64] = "";
        oms_metrics_label(labels, sizeof(labels), "state", kitchen_state_str((kitchen_state)i));
        oms_metrics_counter_add(TICKETS_TOTAL, TICKETS_HELP, labels, 0);
    }
    for (size_t i = 0; i < OMS_NELEM(results); i++) {
        char labels[64] = "";
        oms_metrics_label(labels, sizeof(labels), "result", results[i]);
        oms_metrics_counter_add(PAID_TOTAL, PAID_HELP, labels, 0);
    }
    for (size_t i = 0; i < OMS_NELEM(late_stages); i++) {
        char labels[64] = "";
        oms_metrics_label(labels, sizeof(labels), "stage", kitchen_state_str(late_stages[i].state));
        oms_metrics_counter_add(LATE_TOTAL, LATE_HELP, labels, 0);
    }
    oms_metrics_gauge_fn("kitchen_queue_depth", "Tickets waiting for a free station", NULL,
                         kitchen_queue_depth, s);
}

double kitchen_queue_depth(void *ud)
{
    kitchen_service *s = ud;
    return (double)atomic_load(&s->queue_depth);
}

static void notify_outbox(kitchen_service *s)
{
    if (s->outbox_notify)
        s->outbox_notify(s->outbox_ud);
}

/* Counts queued tickets inside tx so the gauge sees a committed figure; a failure
 * only leaves the gauge stale, so it is logged and not returned. */
static void refresh_depth(oms_db_tx *tx, long long *depth)
{
    oms_error err;
    oms_error_clear(&err);
    *depth = -1;
    if (kitchen_store_count_queued(tx, depth, &err) != OMS_OK) {
        oms_log_warn("cannot count queued tickets", "error", err.msg);
        *depth = -1;
    }
}

static void publish_depth(kitchen_service *s, long long depth)
{
    if (depth >= 0)
        atomic_store(&s->queue_depth, depth);
}

int kitchen_accept_paid(kitchen_service *s, const char *queue, const char *message_id,
                        const char *body, size_t len, oms_error *err)
{
    oms_order o;
    kitchen_ticket t;
    oms_db_tx *tx = NULL;
    long long depth = -1;
    char tp[OMS_TRACEPARENT_LEN + 1];

    kitchen_ticket_init(&t);
    int rc = oms_order_from_json_str(body, len, &o, err);
    if (rc != OMS_OK) {
        count_paid("invalid");
        return OMS_INVALID; /* no retry can fix it: dead-letter */
    }
    snprintf(t.order_id, sizeof(t.order_id), "%s", o.order_id);
    snprintf(t.customer_id, sizeof(t.customer_id), "%s", o.customer_id);
    oms_span_set_str(oms_span_current(), OMS_ATTR_ORDER_ID, t.order_id);
    /* Stored re-encoded from the parsed order: the events we publish later carry the
     * known shape only, never whatever else a producer put in the body. */
    t.order_json = oms_order_to_json_str(&o);
    oms_order_free(&o);
    oms_trace_current_header(tp);
    t.traceparent = oms_strdup(tp);
    t.state = KITCHEN_QUEUED;
    t.queued_at = oms_now_ms();

    rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        goto out;
    if (message_id && message_id[0]) {
        rc = kitchen_store_claim_message(tx, queue, message_id, err);
        if (rc != OMS_OK)
            goto rollback; /* OMS_DUPLICATE: applied before */
    } else {
        oms_log_warn("order.paid without a message id; deduplicated by order only", "order_id",
                     t.order_id);
    }
    rc = kitchen_store_insert(tx, &t, err);
    if (rc == OMS_DUPLICATE) {
        /* Another order.paid for the same order (a second payment event, or a producer
         * that republished under a new id). Commit the inbox claim so this message
         * is recognised as handled if it comes again. */
        oms_log_info("order already has a ticket; event ignored", "order_id", t.order_id,
                     "message_id", message_id);
        rc = oms_db_commit(tx, err);
        if (rc != OMS_OK)
            goto out;
        rc = oms_error_set(err, OMS_DUPLICATE, "order %s already has a ticket", t.order_id);
        goto out;
    }
    if (rc != OMS_OK)
        goto rollback;
    refresh_depth(tx, &depth);
    rc = oms_db_commit(tx, err);
    if (rc != OMS_OK)
        goto out;
    publish_depth(s, depth);
    count_state(KITCHEN_QUEUED);
    oms_log_info("ticket queued", "order_id", t.order_id, "customer_id", t.customer_id);
    if (s->ticket_notify)
        s->ticket_notify(s->ticket_ud);
    goto out;

rollback:
    oms_db_rollback(tx);
out:
    if (rc == OMS_OK)
        count_paid("new");
    else if (rc == OMS_DUPLICATE)
        count_paid("duplicate");
    kitchen_ticket_free(&t);
    return rc;
}

/* The event body for t: its stored order in `status`, updated now. *out is a heap
 * string (caller frees). */
static int event_body(const kitchen_ticket *t, oms_order_status status, long long now, char **out,
                      oms_error *err)
{
    oms_order o;
    oms_error perr;
    *out = NULL;
    oms_error_clear(&perr);
    if (oms_order_from_json_str(t->order_json, strlen(t->order_json), &o, &perr) != OMS_OK)
        return oms_error_set(err, OMS_ERR, "ticket %s: stored order unreadable: %s", t->order_id,
                             perr.msg);
    o.status = status;
    o.updated_ms = now;
    *out = oms_order_to_json_str(&o);
    oms_order_free(&o);
    return OMS_OK;
}

/* Starts the ticket's "kitchen cook" span, a child of the order's trace (stored with
 * the ticket), as the calling thread's current context, so the events and logs of
 * cooking join the trace that started with the customer's request. It lasts until
 * kitchen_leave_ticket_trace, i.e. the whole cook. */
static void enter_ticket_trace(const kitchen_ticket *t)
{
    oms_trace_ctx parent;
    int has_parent = t->traceparent && oms_traceparent_parse(t->traceparent, &parent) == OMS_OK;
    oms_span *s = oms_span_start("kitchen cook", OMS_SPAN_INTERNAL, has_parent ? &parent : NULL);
    oms_span_set_str(s, OMS_ATTR_ORDER_ID, t->order_id);
}

void kitchen_leave_ticket_trace(int failed)
{
    oms_span *s = oms_span_current();
    if (s && failed)
        oms_span_set_status(s, OMS_SPAN_ERROR, "ticket not finished");
    oms_span_end(s);
    oms_trace_clear_current();
}

int kitchen_start_next(kitchen_service *s, kitchen_ticket *out, oms_error *err)
{
    oms_db_tx *tx = NULL;
    char *body = NULL;
    long long depth = -1;
    long long now = oms_now_ms();

    kitchen_ticket_init(out);
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = kitchen_store_oldest_queued(tx, out, err);
    if (rc != OMS_OK)
        goto rollback; /* OMS_NOTFOUND: idle */
    enter_ticket_trace(out);
    int announce = !out->cooking_published;
    if (announce) {
        rc = event_body(out, OMS_ORDER_COOKING, now, &body, err);
        if (rc != OMS_OK)
            goto rollback;
    }
    rc = kitchen_store_start_cooking(tx, out->order_id, now, err);
    if (rc == OMS_CONFLICT)
        rc = OMS_AGAIN; /* another station (or instance) was faster */
    if (rc != OMS_OK)
        goto rollback;
    if (announce) {
        rc = kitchen_store_add_event(tx, oms_event_exchanges[OMS_EVENT_ORDER_COOKING], body, err);
        if (rc != OMS_OK)
            goto rollback;
    }
    refresh_depth(tx, &depth);
    rc = oms_db_commit(tx, err);
    tx = NULL;
    if (rc != OMS_OK)
        goto fail;
    free(body);
    publish_depth(s, depth);
    out->state = KITCHEN_COOKING;
    out->started_at = now;
    out->cooking_published = 1;
    if (announce)
        notify_outbox(s);
    count_state(KITCHEN_COOKING);
    oms_log_info("cooking", "order_id", out->order_id, "resumed", announce ? "false" : "true");
    return OMS_OK;

rollback:
    oms_db_rollback(tx);
fail:
    free(body);
    kitchen_ticket_free(out);
    kitchen_leave_ticket_trace(rc != OMS_NOTFOUND);
    return rc;
}

int kitchen_finish(kitchen_service *s, kitchen_ticket *t, oms_error *err)
{
    oms_db_tx *tx = NULL;
    char *body = NULL;
    long long now = oms_now_ms();

    int rc = event_body(t, OMS_ORDER_READY, now, &body, err);
    if (rc != OMS_OK)
        return rc;
    rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        goto out;
    rc = kitchen_store_mark_ready(tx, t->order_id, now, err);
    if (rc == OMS_OK)
        rc = kitchen_store_add_event(tx, oms_event_exchanges[OMS_EVENT_ORDER_READY], body, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        goto out;
    }
    rc = oms_db_commit(tx, err);
    if (rc != OMS_OK)
        goto out;
    notify_outbox(s);
    t->state = KITCHEN_READY;
    t->ready_at = now;
    count_state(KITCHEN_READY);
    if (t->started_at > 0 && now >= t->started_at)
        oms_metrics_observe(COOK_SECONDS, COOK_HELP, NULL, (double)(now - t->started_at) / 1000.0);
    oms_log_info("ready for pick-up", "order_id", t->order_id);
out:
    free(body);
    return rc;
}

long long kitchen_stale_cutoff(const kitchen_service *s, long long cook_ms, long long now_ms)
{
    if (!oms_db_locks_rows(s->db))
        return LLONG_MAX;
    return now_ms - cook_ms - KITCHEN_STALE_GRACE_MS;
}

int kitchen_requeue_cooking(kitchen_service *s, long long started_before, long long *n,
                            oms_error *err)
{
    oms_db_tx *tx = NULL;
    long long depth = -1;
    *n = 0;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = kitchen_store_requeue_cooking(tx, started_before, n, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        return rc;
    }
    refresh_depth(tx, &depth);
    rc = oms_db_commit(tx, err);
    if (rc != OMS_OK)
        return rc;
    publish_depth(s, depth);
    if (*n > 0)
        oms_log_infof("%lld ticket(s) left cooking by a stopped station are queued again", *n);
    return OMS_OK;
}

int kitchen_get_ticket(kitchen_service *s, const char *order_id, kitchen_ticket *out,
                       oms_error *err)
{
    oms_db_tx *tx = NULL;
    kitchen_ticket_init(out);
    if (!oms_valid_id(order_id))
        return oms_error_set(err, OMS_INVALID,
                             "orderID: must be 1 to 64 characters of A-Z a-z 0-9 _ . : -");
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = kitchen_store_get(tx, order_id, out, err);
    oms_db_rollback(tx); /* read only */
    return rc;
}

int kitchen_list_tickets(kitchen_service *s, int limit, kitchen_ticket **out, size_t *n,
                         oms_error *err)
{
    oms_db_tx *tx = NULL;
    *out = NULL;
    *n = 0;
    if (limit < 1 || limit > 1000)
        return oms_error_set(err, OMS_INVALID, "limit: must be from 1 to 1000");
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = kitchen_store_list(tx, limit, out, n, err);
    oms_db_rollback(tx); /* read only */
    return rc;
}

int kitchen_close_ticket(kitchen_service *s, kitchen_state final, const char *queue,
                         const char *message_id, const char *body, size_t len, oms_error *err)
{
    oms_order o;
    kitchen_ticket t;
    oms_db_tx *tx = NULL;
    long long depth = -1;
    int changed = 0;

    kitchen_ticket_init(&t);
    if (oms_order_from_json_str(body, len, &o, err) != OMS_OK)
        return OMS_INVALID; /* no retry can fix it: dead-letter */
    snprintf(t.order_id, sizeof(t.order_id), "%s", o.order_id);
    snprintf(t.customer_id, sizeof(t.customer_id), "%s", o.customer_id);
    oms_span_set_str(oms_span_current(), OMS_ATTR_ORDER_ID, t.order_id);
    t.order_json = oms_order_to_json_str(&o);
    oms_order_free(&o);
    t.state = final;
    t.queued_at = oms_now_ms();

    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        goto out;
    if (message_id && message_id[0]) {
        rc = kitchen_store_claim_message(tx, queue, message_id, err);
        if (rc != OMS_OK)
            goto rollback; /* OMS_DUPLICATE: applied before */
    }
    rc = kitchen_store_close(tx, &t, &changed, err);
    if (rc != OMS_OK)
        goto rollback;
    refresh_depth(tx, &depth);
    rc = oms_db_commit(tx, err);
    if (rc != OMS_OK)
        goto out;
    publish_depth(s, depth);
    if (changed) {
        count_state(final);
        oms_log_info(final == KITCHEN_COLLECTED ? "ticket collected" : "ticket withdrawn: refunded",
                     "order_id", t.order_id);
    }
    goto out;
rollback:
    oms_db_rollback(tx);
out:
    kitchen_ticket_free(&t);
    return rc;
}

int kitchen_mark_late(kitchen_service *s, long long now_ms, long long *marked, oms_error *err)
{
    oms_db_tx *tx = NULL;
    long long n[OMS_NELEM(late_stages)] = {0};
    *marked = 0;
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    for (size_t i = 0; i < OMS_NELEM(late_stages) && rc == OMS_OK; i++) {
        long long limit = late_stages[i].state == KITCHEN_READY ? s->pickup_window_ms : s->sla_ms;
        if (limit > 0)
            rc = kitchen_store_mark_late(tx, late_stages[i].state, late_stages[i].bit,
                                         now_ms - limit, &n[i], err);
    }
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        return rc;
    }
    rc = oms_db_commit(tx, err);
    if (rc != OMS_OK)
        return rc;
    for (size_t i = 0; i < OMS_NELEM(late_stages); i++) {
        if (n[i] == 0)
            continue;
        char labels[64] = "";
        oms_metrics_label(labels, sizeof(labels), "stage", kitchen_state_str(late_stages[i].state));
        oms_metrics_counter_add(LATE_TOTAL, LATE_HELP, labels, n[i]);
        *marked += n[i];
    }
    if (*marked > 0)
        oms_log_infof("%lld ticket(s) turned late", *marked);
    return OMS_OK;
}

int kitchen_count_late(kitchen_service *s, long long from_ms, long long to_ms, long long *n,
                       oms_error *err)
{
    oms_db_tx *tx = NULL;
    *n = 0;
    if (from_ms < 0 || to_ms <= from_ms)
        return oms_error_set(err, OMS_INVALID, "since/until: until must be after since");
    int rc = oms_db_begin(s->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = kitchen_store_count_late(tx, from_ms, to_ms, n, err);
    oms_db_rollback(tx); /* read only */
    return rc;
}
