/* Persistence of kitchen tickets: one row per order, moving queued -> cooking -> ready
 * -> collected when the customer takes it, or to withdrawn from any of them when the
 * order is refunded).
 * Every function except kitchen_store_open runs inside the caller's transaction; SQL
 * lives only here (the outbox and inbox are reached through here too, so the rules in
 * service.c never see a storage or broker header). */
#ifndef KITCHEN_STORE_H
#define KITCHEN_STORE_H

#include <stddef.h>

#include "oms/db.h"
#include "oms/order.h"

/* XX(NAME, "column value") */
#define KITCHEN_STATE_MAP(XX)                                                                      \
    XX(QUEUED, "queued")                                                                           \
    XX(COOKING, "cooking")                                                                         \
    XX(READY, "ready")                                                                             \
    XX(WITHDRAWN, "withdrawn")                                                                     \
    XX(COLLECTED, "collected")

typedef enum {
#define KITCHEN_STATE_ENUM(name, str) KITCHEN_##name,
    KITCHEN_STATE_MAP(KITCHEN_STATE_ENUM)
#undef KITCHEN_STATE_ENUM
        KITCHEN_STATE__COUNT
} kitchen_state;

const char *kitchen_state_str(kitchen_state s);
/* The state for a column value, or -1 when unknown. */
int kitchen_state_parse(const char *s);

typedef struct kitchen_ticket {
    char order_id[OMS_ID_MAX + 1];
    char customer_id[OMS_ID_MAX + 1];
    char *order_json;  /* heap, owned by the ticket: the order as received (JSON shape) */
    char *traceparent; /* heap or NULL: the trace of the order.paid that created it */
    kitchen_state state;
    int cooking_published; /* 1 once an order.cooking event was written for it */
    long long queued_at, started_at, ready_at; /* ms since the epoch; 0 = not yet */
    int late_mask; /* KITCHEN_LATE_* bits: the stages in which it turned late */
} kitchen_ticket;

/* A ticket turns late in a stage once; each bit is set (and counted) once. */
#define KITCHEN_LATE_QUEUED 1
#define KITCHEN_LATE_COOKING 2
#define KITCHEN_LATE_READY 4

void kitchen_ticket_init(kitchen_ticket *t);
/* Frees what t owns and re-initialises it. */
void kitchen_ticket_free(kitchen_ticket *t);

/* Opens the kitchen database and applies its migrations (tickets, outbox, inbox).
 * *db is owned by the caller (oms_db_close). */
int kitchen_store_open(oms_db **db, const char *url, oms_error *err);

/* Inserts t as given (state, times, cooking_published; the order's place in the queue
 * comes after every existing ticket). OMS_DUPLICATE, with nothing changed, when a
 * ticket for the same order already exists. */
int kitchen_store_insert(oms_db_tx *tx, const kitchen_ticket *t, oms_error *err);
/* The queued ticket that arrived first, into out (initialised here; caller frees).
 * OMS_NOTFOUND when nothing is queued. */
int kitchen_store_oldest_queued(oms_db_tx *tx, kitchen_ticket *out, oms_error *err);
/* queued -> cooking with started_at, and cooking_published = 1. OMS_CONFLICT when the
 * ticket is no longer queued (another station or instance took it). */
int kitchen_store_start_cooking(oms_db_tx *tx, const char *order_id, long long started_at,
                                oms_error *err);
/* cooking -> ready with ready_at. OMS_CONFLICT when the ticket is not cooking. */
int kitchen_store_mark_ready(oms_db_tx *tx, const char *order_id, long long ready_at,
                             oms_error *err);
/* Every cooking ticket started before started_before (ms) back to queued
 * (cooking_published kept); *n gets how many. */
int kitchen_store_requeue_cooking(oms_db_tx *tx, long long started_before, long long *n,
                                  oms_error *err);
int kitchen_store_count_queued(oms_db_tx *tx, long long *n, oms_error *err);
/* One ticket into out (initialised here; caller frees). OMS_NOTFOUND when absent. */
int kitchen_store_get(oms_db_tx *tx, const char *order_id, kitchen_ticket *out, oms_error *err);
/* Up to limit live tickets (not withdrawn or collected), newest first. *out: heap array of *n
 * tickets (caller frees each with kitchen_ticket_free, then the array); NULL when none. */
int kitchen_store_list(oms_db_tx *tx, int limit, kitchen_ticket **out, size_t *n, oms_error *err);

/* The order's ticket -> t->state (withdrawn or collected: a final state) unless it is
 * in a final state already; without a ticket yet, t is inserted so a later order.paid
 * finds it and cooks nothing. *changed = 1 when something changed. */
int kitchen_store_close(oms_db_tx *tx, const kitchen_ticket *t, int *changed, oms_error *err);
/* Sets late bit on every ticket in state whose time column (queued_at, started_at or
 * ready_at, by state) is at or before since_ms and which lacks the bit; *n = how many. */
int kitchen_store_mark_late(oms_db_tx *tx, kitchen_state state, int bit, long long since_ms,
                            long long *n, oms_error *err);
/* Tickets queued in [from_ms, to_ms) that turned late in any stage. */
int kitchen_store_count_late(oms_db_tx *tx, long long from_ms, long long to_ms, long long *n,
                             oms_error *err);

/* Records a consumed message id (oms_inbox_claim): OMS_OK the first time,
 * OMS_DUPLICATE when seen before. */
int kitchen_store_claim_message(oms_db_tx *tx, const char *queue, const char *message_id,
                                oms_error *err);
/* Writes an outbox row (oms_outbox_add) for exchange with body, in tx. */
int kitchen_store_add_event(oms_db_tx *tx, const char *exchange, const char *body, oms_error *err);

#endif
