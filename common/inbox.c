/* Idempotent consumers (oms/inbox.h). The claim is a plain INSERT into a table keyed
 * by (consumer, message_id), done in the caller's transaction: if the effect rolls
 * back, so does the claim, and a redelivery is processed again. ON CONFLICT DO
 * NOTHING (SQLite >= 3.24 and PostgreSQL) turns a repeat into "0 rows changed"
 * instead of an error, so it cannot abort a PostgreSQL transaction. */
#include "oms/inbox.h"

#include <string.h>

#include "oms/util.h"

/* Message ids come from other services and brokers; the bound keeps a hostile or
 * broken producer from filling the table with huge keys. */
#define INBOX_MESSAGE_ID_MAX 200

const oms_db_migration oms_inbox_migration = {
    "inbox_v1",
    "CREATE TABLE IF NOT EXISTS inbox("
    "consumer TEXT NOT NULL, message_id TEXT NOT NULL, processed_at BIGINT NOT NULL, "
    "PRIMARY KEY(consumer, message_id));",
    NULL,
};

static int check_key(const char *consumer, const char *message_id, oms_error *err)
{
    if (!consumer || !*consumer)
        return oms_error_set(err, OMS_INVALID, "inbox: consumer name is empty");
    if (!message_id || !*message_id)
        return oms_error_set(err, OMS_INVALID, "inbox %s: message id is empty", consumer);
    size_t len = strlen(message_id);
    if (len > INBOX_MESSAGE_ID_MAX)
        return oms_error_set(err, OMS_INVALID, "inbox %s: message id is %zu chars (max %d)",
                             consumer, len, INBOX_MESSAGE_ID_MAX);
    return OMS_OK;
}

static int seen_row(const oms_db_row *row, void *ud)
{
    (void)row;
    *(int *)ud = 1;
    return OMS_OK;
}

int oms_inbox_seen(oms_db_tx *tx, const char *consumer, const char *message_id, int *seen,
                   oms_error *err)
{
    *seen = 0;
    int rc = check_key(consumer, message_id, err);
    if (rc != OMS_OK)
        return rc;
    oms_db_param p[2] = {OMS_DB_S(consumer), OMS_DB_S(message_id)};
    return oms_db_query(tx, "SELECT 1 FROM inbox WHERE consumer = $1 AND message_id = $2", p, 2,
                        seen_row, seen, NULL, err);
}

int oms_inbox_claim(oms_db_tx *tx, const char *consumer, const char *message_id, oms_error *err)
{
    int rc = check_key(consumer, message_id, err);
    if (rc != OMS_OK)
        return rc;
    oms_db_param p[3] = {OMS_DB_S(consumer), OMS_DB_S(message_id), OMS_DB_I(oms_now_ms())};
    long long changes = 0;
    rc = oms_db_exec(tx,
                     "INSERT INTO inbox(consumer, message_id, processed_at) "
                     "VALUES($1, $2, $3) ON CONFLICT DO NOTHING",
                     p, 3, &changes, err);
    if (rc != OMS_OK)
        return rc;
    if (changes == 0)
        return oms_error_set(err, OMS_DUPLICATE, "inbox %s: message %s already processed", consumer,
                             message_id);
    return OMS_OK;
}
