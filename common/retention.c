/* Pruning the outbox and inbox (oms/retention.h). Both statements delete by a
 * subquery with LIMIT, which SQLite and PostgreSQL both accept (a plain DELETE ...
 * LIMIT is SQLite-only), so one chunk is one short transaction on either. */
#include "oms/retention.h"

#include "oms/util.h"

#define PRUNE_CHUNK 1000
#define PRUNE_CHUNKS_PER_PASS 20

const oms_db_migration oms_retention_migration = {
    "retention_v1",
    "CREATE INDEX IF NOT EXISTS inbox_processed ON inbox (processed_at);",
    NULL,
};

static const char *const prune_sql[2] = {
    /* outbox_unsent (sent_at, id) serves the range on sent_at */
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NOT NULL"
    " AND sent_at < $1 ORDER BY id LIMIT $2)",
    "DELETE FROM inbox WHERE (consumer, message_id) IN (SELECT consumer, message_id FROM inbox"
    " WHERE processed_at < $1 LIMIT $2)",
};

/* Deletes chunks from one table until a chunk comes back short or the pass's bound
 * is reached. */
static int prune_table(oms_db *db, const char *sql, int64_t before_ms, long long *deleted,
                       int *more, oms_error *err)
{
    for (int i = 0; i < PRUNE_CHUNKS_PER_PASS; i++) {
        oms_db_param p[] = {OMS_DB_I(before_ms), OMS_DB_I(PRUNE_CHUNK)};
        long long n = 0;
        int rc = oms_db_exec_tx(db, sql, p, 2, &n, err);
        if (rc != OMS_OK)
            return rc;
        *deleted += n;
        if (n < PRUNE_CHUNK)
            return OMS_OK;
    }
    *more = 1;
    return OMS_OK;
}

int oms_retention_prune(oms_db *db, const oms_retention *keep, int64_t now_ms,
                        oms_retention_counts *out, oms_error *err)
{
    oms_retention_counts c = {0, 0, 0};
    int rc = OMS_OK;
    if (keep->outbox_keep_ms > 0)
        rc = prune_table(db, prune_sql[0], now_ms - keep->outbox_keep_ms, &c.outbox, &c.more, err);
    if (rc == OMS_OK && keep->inbox_keep_ms > 0)
        rc = prune_table(db, prune_sql[1], now_ms - keep->inbox_keep_ms, &c.inbox, &c.more, err);
    if (out)
        *out = c;
    return rc;
}
