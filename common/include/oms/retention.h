/* How long the outbox and the inbox keep their rows. A sent outbox row is history
 * once the broker has confirmed it; an inbox row only matters while a redelivery of
 * its message is still possible. Without pruning both tables grow with every order.
 * Unsent outbox rows are never pruned, whatever their age. */
#ifndef OMS_RETENTION_H
#define OMS_RETENTION_H

#include <stdint.h>

#include "oms/db.h"

/* The index pruning the inbox by age needs; list it after oms_inbox_migration. */
extern const oms_db_migration oms_retention_migration;

typedef struct oms_retention {
    int64_t outbox_keep_ms; /* sent rows older than this go; 0 keeps them all */
    int64_t inbox_keep_ms;  /* processed ids older than this go; 0 keeps them all */
} oms_retention;

typedef struct oms_retention_counts {
    long long outbox, inbox; /* rows deleted */
    int more;                /* 1: the pass stopped at its bound; rows are left */
} oms_retention_counts;

/* One bounded pass at time now_ms: deletes in short transactions of at most 1,000
 * rows each, at most 20 of them per table, so a large backlog is worked off over
 * several passes without holding the database. */
int oms_retention_prune(oms_db *db, const oms_retention *keep, int64_t now_ms,
                        oms_retention_counts *out, oms_error *err);

#endif
