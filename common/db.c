/* The driver-independent database layer (oms/db.h): picks a driver from the url,
 * keeps a small pool of connections, applies migrations and dispatches statements.
 *
 * Pool: each connection has one preallocated oms_db_tx; free ones sit on a stack
 * guarded by a mutex. oms_db_begin pops one (waiting on a condition variable while
 * the stack is empty) and commit/rollback push it back, so a transaction owns its
 * connection exclusively and drivers need no locking of their own.
 *
 * A shared server's pool (PostgreSQL) is sized by DB_POOL_SIZE and its wait bounded by
 * DB_POOL_WAIT_MS (default DB_POOL_WAIT_MS_DEFAULT): when every connection stays busy
 * that long (a slow database, a stuck transaction), begin answers OMS_AGAIN ("retry
 * later", 503 / UNAVAILABLE) instead of piling up request threads that each hold a
 * client until its own deadline. The service runner sets both from its configuration
 * table (oms_db_set_pool) before it opens the database. SQLite keeps an unbounded wait:
 * its one connection is the writer lock, and its callers are built to queue on it. */
#include "oms/db.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "oms/db_driver.h"
#include "oms/log.h"
#include "oms/util.h"

/* 5 s: the gateway's gRPC deadline (GRPC_TIMEOUT_MS) is 5 s by default, so a request
 * that waited longer for a connection has already been given up by its caller; any
 * work done for it after that is wasted, and the threads waiting meanwhile are
 * threads that cannot answer anything else. */
#define DB_POOL_WAIT_MS_DEFAULT 5000
#define DB_POOL_WAIT_MS_MAX 600000
#define DB_POOL_SIZE_MAX 256

struct oms_db_tx {
    oms_db *db;
    oms_db_conn *conn;
};

struct oms_db {
    const oms_db_driver *drv;
    int nconns;           /* connections actually opened */
    oms_db_tx *txs;       /* nconns entries, one per connection */
    oms_db_tx **free_txs; /* stack of idle entries of txs */
    int nfree;
    int pg_sql;  /* from the scheme table: prefer sql_pg in migrations */
    int wait_ms; /* longest wait for a free connection in begin; 0: no limit */
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

/* url prefix -> driver. drv NULL means "known scheme, driver not compiled in".
 * strip: remove the prefix before handing the url to the driver (sqlite only; libpq
 * wants the whole postgres:// url). mkdir: create the file's parent directory.
 * shared: a pool of concurrent connections to a server, sized by DB_POOL_SIZE, with
 * a bounded wait (DB_POOL_WAIT_MS). */
static const struct {
    const char *prefix;
    const oms_db_driver *drv;
    int strip;
    int mkdir;
    int pg_sql; /* run oms_db_migration.sql_pg when a migration has one */
    int shared;
    const char *missing;
} db_schemes[] = {
    {"sqlite:", &oms_db_driver_sqlite, 1, 1, 0, 0, NULL},
    {"postgres://", &oms_db_driver_postgres, 0, 0, 1, 1, NULL},
    {"postgresql://", &oms_db_driver_postgres, 0, 0, 1, 1, NULL},
};

/* Anything without a known prefix is a SQLite file path (or ":memory:"). */
#define DB_DEFAULT_SCHEME 0

/* Copies the driver's error into err, followed by a short, single-line excerpt of
 * the statement that failed, so a log line says which of many statements broke. */
static int db_error_with_hint(oms_error *err, const oms_error *derr, const char *sql)
{
    char hint[72];
    size_t n = 0;
    int space = 0;
    const char *p = sql ? sql : "";
    for (; *p && n < sizeof(hint) - 4; p++) {
        /* Collapse newlines and indentation of multi-line SQL into single spaces. */
        if (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') {
            space = n > 0;
            continue;
        }
        if (space) {
            hint[n++] = ' ';
            space = 0;
        }
        hint[n++] = *p;
    }
    hint[n] = '\0';
    return oms_error_set(err, derr->code, "%s (in: %s%s)", derr->msg, hint, *p ? "..." : "");
}

/* mkdir -p of the directory part of path; a path without '/' needs nothing. */
static int db_make_parent_dir(const char *path, oms_error *err)
{
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path)
        return OMS_OK;
    size_t len = (size_t)(slash - path);
    char *dir = oms_xmalloc(len + 1);
    memcpy(dir, path, len);
    dir[len] = '\0';

    int rc = OMS_OK;
    /* Create each prefix in turn; EEXIST is fine (another process may race us). */
    for (size_t i = 1; i <= len; i++) {
        if (dir[i] != '/' && dir[i] != '\0')
            continue;
        char saved = dir[i];
        dir[i] = '\0';
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            rc = oms_error_set(err, OMS_ERR, "cannot create database directory %s: %s", dir,
                               strerror(errno));
            goto done;
        }
        dir[i] = saved;
    }
done:
    free(dir);
    return rc;
}

/* The pool of shared-server databases opened from now on (oms_db_set_pool); 0: the
 * driver's pool size / DB_POOL_WAIT_MS_DEFAULT. Written before any thread opens one. */
static oms_db_pool_config db_pool;

void oms_db_set_pool(const oms_db_pool_config *cfg)
{
    if (cfg)
        db_pool = *cfg;
    else
        memset(&db_pool, 0, sizeof(db_pool));
}

static void db_free(oms_db *db)
{
    for (int i = 0; i < db->nconns; i++)
        db->drv->disconnect(db->txs[i].conn);
    /* Destroy fails only for a mutex/cond still in use, which the "no open
     * transaction at close" contract rules out; there is nothing to do about it. */
    (void)pthread_cond_destroy(&db->cv);
    (void)pthread_mutex_destroy(&db->mu);
    free(db->txs);
    free(db->free_txs);
    free(db);
}

/* Takes the driver's migration lock (if it has one) inside tx: concurrent instances
 * then apply each migration once, one after the other. */
static int db_migration_lock(oms_db_tx *tx, oms_error *err)
{
    if (!tx->db->drv->migration_lock)
        return OMS_OK;
    oms_error derr;
    oms_error_clear(&derr);
    int rc = tx->db->drv->migration_lock(tx->conn, &derr);
    if (rc != OMS_OK)
        return oms_error_set(err, rc, "migration lock: %s", derr.msg);
    return OMS_OK;
}

/* Applies one migration in its own transaction unless schema_migrations already
 * names it. The check and the script run in the same transaction, so a crash halfway
 * leaves neither the tables nor the record. */
static int db_migrate_one(oms_db *db, const oms_db_migration *m, oms_error *err)
{
    oms_db_tx *tx = NULL;
    long long seen = 0;
    int rc = oms_db_begin(db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = db_migration_lock(tx, err);
    if (rc != OMS_OK)
        goto fail;
    oms_db_param name = OMS_DB_S(m->name);
    rc = oms_db_query(tx, "SELECT 1 FROM schema_migrations WHERE name = $1", &name, 1, NULL, NULL,
                      &seen, err);
    if (rc != OMS_OK || seen > 0)
        goto fail;

    const char *sql = m->sql;
    if (db->pg_sql && m->sql_pg)
        sql = m->sql_pg;
    oms_error derr;
    oms_error_clear(&derr);
    rc = db->drv->exec_script(tx->conn, sql, &derr);
    if (rc != OMS_OK) {
        oms_error_set(err, rc, "migration %s: %s", m->name, derr.msg);
        goto fail;
    }

    char when[32];
    oms_format_rfc3339(oms_now_ms(), when);
    oms_db_param rec[2] = {OMS_DB_S(m->name), OMS_DB_S(when)};
    rc = oms_db_exec(tx, "INSERT INTO schema_migrations(name, applied_at) VALUES($1, $2)", rec, 2,
                     NULL, err);
    if (rc != OMS_OK)
        goto fail;
    rc = oms_db_commit(tx, err);
    if (rc == OMS_OK)
        oms_log_infof("applied migration %s", m->name);
    return rc;

fail:
    /* Also the path for "already applied": nothing was written, so rolling back is
     * the cheapest way to give the connection back. */
    oms_db_rollback(tx);
    return rc;
}

static int db_migrate(oms_db *db, const oms_db_migration *migs, size_t nmigs, oms_error *err)
{
    oms_db_tx *tx = NULL;
    int rc = oms_db_begin(db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    oms_error derr;
    oms_error_clear(&derr);
    rc = db_migration_lock(tx, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        return rc;
    }
    rc = db->drv->exec_script(tx->conn,
                              "CREATE TABLE IF NOT EXISTS schema_migrations("
                              "name TEXT PRIMARY KEY, applied_at TEXT)",
                              &derr);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        return oms_error_set(err, rc, "creating schema_migrations: %s", derr.msg);
    }
    rc = oms_db_commit(tx, err);
    for (size_t i = 0; rc == OMS_OK && i < nmigs; i++) {
        if (!migs[i].name || !migs[i].sql)
            return oms_error_set(err, OMS_INVALID, "migration %zu has no name or sql", i);
        rc = db_migrate_one(db, &migs[i], err);
    }
    return rc;
}

int oms_db_open(oms_db **out, const char *url, const oms_db_migration *migs, size_t nmigs,
                oms_error *err)
{
    *out = NULL;
    if (!url || !*url)
        return oms_error_set(err, OMS_INVALID, "database url is empty");

    size_t scheme = DB_DEFAULT_SCHEME;
    const char *target = url;
    for (size_t i = 0; i < OMS_NELEM(db_schemes); i++) {
        size_t plen = strlen(db_schemes[i].prefix);
        if (strncmp(url, db_schemes[i].prefix, plen) == 0) {
            scheme = i;
            target = db_schemes[i].strip ? url + plen : url;
            break;
        }
    }
    if (!db_schemes[scheme].drv)
        return oms_error_set(err, OMS_ERR, "%s", db_schemes[scheme].missing);
    if (!*target) {
        char shown[256];
        oms_url_redact(url, shown, sizeof(shown));
        return oms_error_set(err, OMS_INVALID, "database url %s has no path", shown);
    }
    if (db_schemes[scheme].mkdir && strcmp(target, ":memory:") != 0) {
        int rc = db_make_parent_dir(target, err);
        if (rc != OMS_OK)
            return rc;
    }

    const oms_db_driver *drv = db_schemes[scheme].drv;
    int size = drv->pool_size > 0 ? drv->pool_size : 1;
    int wait_ms = 0;
    if (db_schemes[scheme].shared) {
        wait_ms = DB_POOL_WAIT_MS_DEFAULT;
        if (db_pool.size > 0)
            size = db_pool.size > DB_POOL_SIZE_MAX ? DB_POOL_SIZE_MAX : (int)db_pool.size;
        if (db_pool.wait_ms > 0)
            wait_ms =
                db_pool.wait_ms > DB_POOL_WAIT_MS_MAX ? DB_POOL_WAIT_MS_MAX : (int)db_pool.wait_ms;
    }
    oms_db *db = oms_xcalloc(1, sizeof(*db));
    db->drv = drv;
    db->pg_sql = db_schemes[scheme].pg_sql;
    db->wait_ms = wait_ms;
    db->txs = oms_xcalloc((size_t)size, sizeof(*db->txs));
    db->free_txs = oms_xcalloc((size_t)size, sizeof(*db->free_txs));
    int rc = pthread_mutex_init(&db->mu, NULL);
    if (rc != 0) {
        free(db->txs);
        free(db->free_txs);
        free(db);
        return oms_error_set(err, OMS_ERR, "pthread_mutex_init: %s", strerror(rc));
    }
    rc = oms_cond_init_monotonic(&db->cv);
    if (rc != 0) {
        (void)pthread_mutex_destroy(&db->mu);
        free(db->txs);
        free(db->free_txs);
        free(db);
        return oms_error_set(err, OMS_ERR, "pthread_cond_init: %s", strerror(rc));
    }
    /* From here db_free undoes everything, including the connections opened so far. */
    for (int i = 0; i < size; i++) {
        rc = drv->connect(target, &db->txs[i].conn, err);
        if (rc != OMS_OK)
            goto fail;
        db->txs[i].db = db;
        db->free_txs[db->nfree++] = &db->txs[i];
        db->nconns++;
    }
    rc = db_migrate(db, migs, nmigs, err);
    if (rc != OMS_OK)
        goto fail;
    *out = db;
    return OMS_OK;

fail:
    db_free(db);
    return rc;
}

void oms_db_close(oms_db *db)
{
    if (!db)
        return;
    /* A transaction still open here is a caller bug (its connection would be freed
     * under it); say so loudly rather than hang waiting for it. */
    if (db->nfree != db->nconns)
        oms_log_errorf("oms_db_close with %d transaction(s) still open", db->nconns - db->nfree);
    db_free(db);
}

const char *oms_db_driver_name(const oms_db *db)
{
    return db->drv->name;
}

int oms_db_locks_rows(const oms_db *db)
{
    return db->drv->row_locks;
}

int oms_db_tx_locks_rows(const oms_db_tx *tx)
{
    return tx->db->drv->row_locks;
}

int oms_db_ping(oms_db *db, oms_error *err)
{
    oms_db_tx *tx = NULL;
    long long n = 0;
    int rc = oms_db_begin(db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = oms_db_query(tx, "SELECT 1", NULL, 0, NULL, NULL, &n, err);
    oms_db_rollback(tx);
    if (rc == OMS_OK && n != 1)
        rc = oms_error_set(err, OMS_ERR, "ping: SELECT 1 returned %lld rows", n);
    return rc;
}

static void db_release(oms_db_tx *tx)
{
    oms_db *db = tx->db;
    oms_mutex_lock(&db->mu);
    db->free_txs[db->nfree++] = tx;
    oms_cond_signal(&db->cv);
    oms_mutex_unlock(&db->mu);
}

/* Writes the wait bound for the pool-exhausted message: "5 s" or "250 ms". */
static void db_format_wait(int ms, char *out, size_t n)
{
    if (ms % 1000 == 0)
        snprintf(out, n, "%d s", ms / 1000);
    else
        snprintf(out, n, "%d ms", ms);
}

int oms_db_begin(oms_db *db, oms_db_tx **tx, oms_error *err)
{
    *tx = NULL;
    oms_mutex_lock(&db->mu);
    if (db->nfree == 0 && db->wait_ms > 0) {
        struct timespec until;
        oms_mono_deadline_ms(db->wait_ms, &until);
        while (db->nfree == 0) {
            if (oms_cond_timedwait(&db->cv, &db->mu, &until) == ETIMEDOUT)
                break; /* a connection freed at the same moment is still taken below */
        }
    } else {
        while (db->nfree == 0)
            oms_cond_wait(&db->cv, &db->mu);
    }
    if (db->nfree == 0) {
        int busy = db->nconns;
        oms_mutex_unlock(&db->mu);
        char waited[32];
        db_format_wait(db->wait_ms, waited, sizeof(waited));
        return oms_error_set(err, OMS_AGAIN,
                             "database pool exhausted: no connection free after %s (all %d in use; "
                             "DB_POOL_SIZE and DB_POOL_WAIT_MS tune the pool)",
                             waited, busy);
    }
    oms_db_tx *t = db->free_txs[--db->nfree];
    oms_mutex_unlock(&db->mu);

    oms_error derr;
    oms_error_clear(&derr);
    int rc = db->drv->begin(t->conn, &derr);
    if (rc != OMS_OK) {
        db_release(t);
        return oms_error_set(err, rc, "begin transaction: %s", derr.msg);
    }
    *tx = t;
    return OMS_OK;
}

int oms_db_commit(oms_db_tx *tx, oms_error *err)
{
    oms_error derr;
    oms_error_clear(&derr);
    int rc = tx->db->drv->commit(tx->conn, &derr);
    if (rc != OMS_OK) {
        /* A failed COMMIT (e.g. SQLITE_BUSY) can leave the transaction open; roll it
         * back so the next user of this connection starts clean. */
        tx->db->drv->rollback(tx->conn);
        oms_error_set(err, rc, "commit: %s", derr.msg);
    }
    db_release(tx);
    return rc;
}

void oms_db_rollback(oms_db_tx *tx)
{
    if (!tx)
        return;
    tx->db->drv->rollback(tx->conn);
    db_release(tx);
}

int oms_db_exec(oms_db_tx *tx, const char *sql, const oms_db_param *params, int nparams,
                long long *changes, oms_error *err)
{
    oms_error derr;
    oms_error_clear(&derr);
    if (changes)
        *changes = 0;
    int rc = tx->db->drv->exec(tx->conn, sql, params, nparams, changes, &derr);
    if (rc != OMS_OK)
        return db_error_with_hint(err, &derr, sql);
    return OMS_OK;
}

int oms_db_exec_tx(oms_db *db, const char *sql, const oms_db_param *params, int nparams,
                   long long *changes, oms_error *err)
{
    oms_db_tx *tx = NULL;
    int rc = oms_db_begin(db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = oms_db_exec(tx, sql, params, nparams, changes, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        return rc;
    }
    return oms_db_commit(tx, err);
}

int oms_db_query(oms_db_tx *tx, const char *sql, const oms_db_param *params, int nparams,
                 oms_db_row_fn fn, void *ud, long long *nrows, oms_error *err)
{
    oms_error derr;
    oms_error_clear(&derr);
    if (nrows)
        *nrows = 0;
    int rc = tx->db->drv->query(tx->conn, sql, params, nparams, fn, ud, nrows, &derr);
    /* The driver leaves derr clear when rc is the callback's own stop code: the
     * callback may have filled err itself (through ud), so we must not overwrite it. */
    if (rc != OMS_OK && derr.code != OMS_OK)
        return db_error_with_hint(err, &derr, sql);
    return rc;
}

const char *oms_db_row_text(const oms_db_row *row, int col)
{
    return row->drv->row_text(row, col);
}

long long oms_db_row_int(const oms_db_row *row, int col)
{
    return row->drv->row_int(row, col);
}

int oms_db_row_isnull(const oms_db_row *row, int col)
{
    return row->drv->row_isnull(row, col);
}

int oms_db_row_columns(const oms_db_row *row)
{
    return row->drv->row_columns(row);
}
