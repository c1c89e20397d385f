/* The kitchen's rules: a paid order becomes one ticket, however often its
 * order.paid arrives; a station takes the oldest queued ticket, announces
 * order.cooking once per ticket, and after cooking announces order.ready. Each step is
 * one transaction with its outbox row. No transport headers: the AMQP consumer, the
 * station threads and the HTTP routes call in with plain values. */
#ifndef KITCHEN_SERVICE_H
#define KITCHEN_SERVICE_H

#include <stdatomic.h>
#include <stddef.h>

#include "oms/db.h"
#include "oms/status.h"
#include "store.h"

typedef struct kitchen_service {
    oms_db *db;                      /* borrowed */
    void (*outbox_notify)(void *ud); /* wakes the outbox relay after a commit; may be NULL */
    void *outbox_ud;
    void (*ticket_notify)(void *ud); /* wakes idle stations after a new ticket; may be NULL */
    void *ticket_ud;
    /* Queued tickets as last counted inside a committed transaction. The
     * kitchen_queue_depth gauge reads this instead of the database because gauge
     * callbacks run under the metrics lock, and a station may be waiting for that lock
     * while it holds the only SQLite connection. */
    atomic_llong queue_depth;
    long long sla_ms;           /* KITCHEN_SLA_MS: longest a ticket should stay queued or cooking */
    long long pickup_window_ms; /* PICKUP_WINDOW: longest a ready order should wait */
} kitchen_service;

/* db is borrowed and must outlive s; the callbacks start unset. */
void kitchen_service_init(kitchen_service *s, oms_db *db);

/* Handles one order.paid delivery from queue (the inbox consumer name). Parses the
 * order; in one transaction records message_id and inserts a queued ticket, then wakes
 * the stations. Returns OMS_OK (new ticket), OMS_DUPLICATE (message seen before, or
 * the order already has a ticket: nothing changed), OMS_INVALID (unparseable: the
 * caller dead-letters it), or another error (retry later). An empty message_id skips
 * the inbox; the one-ticket-per-order rule still holds. */
int kitchen_accept_paid(kitchen_service *s, const char *queue, const char *message_id,
                        const char *body, size_t len, oms_error *err);

/* Takes the oldest queued ticket for a station: in one transaction marks it cooking
 * and, unless it was announced before (a restart), writes an order.cooking event with
 * the order JSON in status "cooking". On OMS_OK *out holds the ticket (initialised
 * here; caller frees) and the calling thread is in the ticket's "kitchen cook" span, a
 * child of the order's trace; the caller ends it (kitchen_leave_ticket_trace) when done
 * with the ticket.
 * OMS_NOTFOUND: nothing queued. OMS_AGAIN: another station took it first; try again. */
int kitchen_start_next(kitchen_service *s, kitchen_ticket *out, oms_error *err);

/* Ends the span kitchen_start_next entered (failed: the ticket was not finished) and
 * leaves the thread without a trace context. */
void kitchen_leave_ticket_trace(int failed);

/* Finishes a cooking ticket (from kitchen_start_next): in one transaction marks it
 * ready and writes an order.ready event (status "ready for pick-up"). Updates t's
 * state and ready_at. OMS_CONFLICT when the ticket is not cooking. */
int kitchen_finish(kitchen_service *s, kitchen_ticket *t, oms_error *err);

/* Tickets left cooking by a stopped or crashed station go back to the queue (their
 * order.cooking is not published again): those started before started_before (ms).
 * *n gets how many. */
int kitchen_requeue_cooking(kitchen_service *s, long long started_before, long long *n,
                            oms_error *err);

/* A ticket still cooking this long past its cook time has no live station: its
 * instance died (several kitchens share a PostgreSQL database). */
#define KITCHEN_STALE_GRACE_MS 10000

/* The started_before for kitchen_requeue_cooking at now: with a database of its own
 * (SQLite: one instance) everything left cooking is this instance's past, so all of
 * it; when instances share the database only tickets too old to be another live
 * instance's (cook_ms + KITCHEN_STALE_GRACE_MS), so none is cooked twice. */
long long kitchen_stale_cutoff(const kitchen_service *s, long long cook_ms, long long now_ms);

/* Handles one order.refunded (final = KITCHEN_WITHDRAWN) or order.collected
 * (KITCHEN_COLLECTED) delivery: the order's ticket leaves the display for good (a
 * withdrawn queued ticket is never cooked; a cooking one is not announced ready), or
 * such a ticket is recorded when none exists yet so a later order.paid cooks nothing.
 * Verdicts as kitchen_accept_paid. */
int kitchen_close_ticket(kitchen_service *s, kitchen_state final, const char *queue,
                         const char *message_id, const char *body, size_t len, oms_error *err);

/* Marks tickets that turned late at now_ms (queued or cooking longer than sla_ms,
 * ready longer than pickup_window_ms; 0 disables a limit), each once per stage, and
 * counts them in kitchen_late_tickets_total{stage}. *marked = how many this time. */
int kitchen_mark_late(kitchen_service *s, long long now_ms, long long *marked, oms_error *err);
/* Tickets queued in [from_ms, to_ms) that were late in some stage. */
int kitchen_count_late(kitchen_service *s, long long from_ms, long long to_ms, long long *n,
                       oms_error *err);

/* Read side for the admin routes. Same ownership as kitchen_store_get/_list. */
int kitchen_get_ticket(kitchen_service *s, const char *order_id, kitchen_ticket *out,
                       oms_error *err);
int kitchen_list_tickets(kitchen_service *s, int limit, kitchen_ticket **out, size_t *n,
                         oms_error *err);

/* The kitchen_queue_depth gauge callback (ud: the kitchen_service). */
double kitchen_queue_depth(void *ud);

/* Creates the kitchen's metric series at zero so dashboards and tests see them before
 * the first order. */
void kitchen_metrics_register(kitchen_service *s);

#endif
