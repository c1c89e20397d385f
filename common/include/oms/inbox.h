/* Idempotent consumers: the inbox records processed message ids in the same
 * transaction as the effect, so a redelivered message is recognised and skipped. */
#ifndef OMS_INBOX_H
#define OMS_INBOX_H

#include "oms/db.h"

/* Include in a service's migrations (after its own tables). */
extern const oms_db_migration oms_inbox_migration;

/* Records (consumer, message_id) inside tx. Returns OMS_OK the first time,
 * OMS_DUPLICATE when already recorded (the caller then commits nothing else and acks),
 * or an error code. consumer is the queue name. */
int oms_inbox_claim(oms_db_tx *tx, const char *consumer, const char *message_id, oms_error *err);

/* *seen = 1 when (consumer, message_id) is recorded, without writing: for a consumer
 * whose effect spans several transactions and claims only at the end. Same checks of
 * the arguments as oms_inbox_claim. */
int oms_inbox_seen(oms_db_tx *tx, const char *consumer, const char *message_id, int *seen,
                   oms_error *err);

#endif
