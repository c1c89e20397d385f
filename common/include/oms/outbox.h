/* Transactional outbox: a service writes its state change and the event row in one
 * transaction (oms_outbox_add); the relay thread publishes unsent rows in id order
 * with publisher confirms and marks them sent only after the broker's ack. While the
 * broker is down the rows simply wait. Each row is published in a PRODUCER span
 * ("<exchange> publish", a child of the context stored with the row), and the message
 * carries that span's traceparent. A row may be published more than once (crash
 * between ack and mark), never lost; consumers dedupe by message-id (oms/inbox.h). */
#ifndef OMS_OUTBOX_H
#define OMS_OUTBOX_H

#include "oms/amqp.h"
#include "oms/db.h"
#include "oms/retention.h"

extern const oms_db_migration oms_outbox_migration;

/* Adds an event row inside tx: exchange (e.g. "order.paid"), body (JSON), the current
 * thread's traceparent. A new message id is generated and written to message_id_out
 * (>= 33 bytes) when non-NULL. */
int oms_outbox_add(oms_db_tx *tx, const char *exchange, const char *body, char *message_id_out,
                   oms_error *err);

typedef struct oms_outbox_relay oms_outbox_relay;

/* Starts the relay thread over db, with its own publisher built from cfg.
 * db must outlive the relay. */
int oms_outbox_relay_start(oms_outbox_relay **out, oms_db *db, const oms_amqp_config *cfg,
                           oms_error *err);
/* Wakes the relay now (call after committing a transaction that added rows). */
void oms_outbox_relay_notify(oms_outbox_relay *r);
/* The same as a callback (void *ud = the relay), for services' outbox_notify hooks. */
void oms_outbox_relay_wake(void *relay);
/* Unsent rows and the age in ms of the oldest one (for metrics/readiness). */
int oms_outbox_backlog(oms_db *db, long long *rows, long long *oldest_age_ms, oms_error *err);
/* Prunes the outbox and inbox by age from the relay thread (oms/retention.h), once a
 * minute, or every half retention when that is shorter. Until called, nothing is
 * pruned. */
void oms_outbox_relay_set_retention(oms_outbox_relay *r, const oms_retention *keep);
/* Stops (publishing what it holds first if the broker is up), frees. NULL: no-op. */
void oms_outbox_relay_stop(oms_outbox_relay *r);

#endif
