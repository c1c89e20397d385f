/* SQLite driver for oms/db.h.
 *
 * One connection per database (pool_size 1): SQLite allows one writer at a time
 * anyway, and BEGIN IMMEDIATE on a single connection turns every transaction into a
 * serialised read-check-write, which the stock and order rules rely on.
 *
 * Statements are prepared once per connection and kept in a small most-recently-used
 * list keyed by their SQL text; the services use a few dozen fixed statements, so a
 * list with a cheap hash check is as fast as a table and much simpler. The db layer
 * hands a connection to one thread at a time, so the connection is opened without
 * SQLite's own mutex.
 *
 * Checkpoints: SQLite's automatic checkpoint runs inside the COMMIT that crosses 1000
 * WAL pages, copying them into the database and fsyncing while that request (and,
 * with one connection, every request queued behind it) waits. Here a commit only
 * signals a background thread with its own connection, which runs a PASSIVE
 * checkpoint (it never blocks writers). Should that thread fall far behind, the
 * committing connection checkpoints itself, so the WAL stays bounded. */
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "oms/db_driver.h"
#include "oms/log.h"
#include "oms/util.h"

/* Enough for every fixed statement of a service; beyond it the least recently used
 * statement is finalised, so a caller building SQL dynamically cannot grow memory. */
#define SQLITE_STMT_CACHE_MAX 64
#define SQLITE_BUSY_TIMEOUT_MS 5000
#define CKPT_SIGNAL_PAGES 1000  /* SQLite's own autocheckpoint threshold */
#define CKPT_INLINE_PAGES 16000 /* backstop: ~64 MiB of WAL at 4 KiB pages */
#define CKPT_IDLE_MS 5000       /* a pass now and then even without a signal */

typedef struct stmt_entry {
    struct stmt_entry *next;
    uint64_t hash; /* of sql; compared before strcmp */
    char *sql;     /* owned */
    sqlite3_stmt *stmt;
    int in_use; /* running right now (a row callback may issue nested statements) */
} stmt_entry;

/* BEGIN/COMMIT/ROLLBACK run on every transaction: prepared once per connection
 * rather than parsed again by sqlite3_exec each time (~6% of a service's work). */
enum { TX_BEGIN, TX_COMMIT, TX_ROLLBACK, TX__COUNT };
static const char *const tx_sql[TX__COUNT] = {"BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"};

/* The background checkpointer of one database file (see the note at the top). */
typedef struct checkpointer {
    sqlite3 *db; /* its own connection, used by its thread only */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int signalled, stop; /* under mu */
} checkpointer;

struct oms_db_conn {
    sqlite3 *db;
    stmt_entry *cache; /* most recently used first */
    int ncache;
    sqlite3_stmt *tx[TX__COUNT]; /* prepared lazily; finalised at disconnect */
    checkpointer *ckpt;          /* NULL for :memory: or when it could not start */
};

/* Maps the connection's last error to our status set, with sqlite's message. */
static int sqlite_error(sqlite3 *db, int rc, const char *what, oms_error *err)
{
    int ext = sqlite3_extended_errcode(db);
    int code = OMS_ERR;
    if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY)
        code = OMS_CONFLICT;
    else if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
        code = OMS_AGAIN;
    return oms_error_set(err, code, "sqlite %s: %s", what, sqlite3_errmsg(db));
}

static uint64_t sqlite_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static void stmt_entry_free(stmt_entry *e)
{
    /* finalize only repeats the statement's last error, already reported. */
    (void)sqlite3_finalize(e->stmt);
    free(e->sql);
    free(e);
}

/* Finds or prepares the statement for sql and marks it in use. A statement already
 * running (nested use of the same SQL from a row callback) cannot be reset under its
 * caller, so that case gets a private entry (*cached = 0) the caller frees. */
static int stmt_acquire(oms_db_conn *c, const char *sql, stmt_entry **out, int *cached,
                        oms_error *err)
{
    uint64_t h = sqlite_hash(sql);
    stmt_entry *prev = NULL;
    int running = 0;
    *out = NULL;
    *cached = 0;
    for (stmt_entry *e = c->cache; e; prev = e, e = e->next) {
        if (e->hash != h || strcmp(e->sql, sql) != 0)
            continue;
        if (e->in_use) {
            running = 1;
            break;
        }
        if (prev) { /* move to front: keeps hot statements cheap to find */
            prev->next = e->next;
            e->next = c->cache;
            c->cache = e;
        }
        /* reset only fails by repeating the previous step's error, which was already
         * reported to that statement's caller. */
        (void)sqlite3_reset(e->stmt);
        if (sqlite3_clear_bindings(e->stmt) != SQLITE_OK)
            return sqlite_error(c->db, SQLITE_ERROR, "clear bindings", err);
        e->in_use = 1;
        *out = e;
        *cached = 1;
        return OMS_OK;
    }

    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK)
        return sqlite_error(c->db, rc, "prepare", err);
    if (!stmt) /* empty or comment-only SQL */
        return oms_error_set(err, OMS_ERR, "sqlite prepare: no statement in SQL text");

    stmt_entry *e = oms_xcalloc(1, sizeof(*e));
    e->hash = h;
    e->sql = oms_strdup(sql);
    e->stmt = stmt;
    e->in_use = 1;
    if (!running) {
        e->next = c->cache;
        c->cache = e;
        c->ncache++;
        *cached = 1;
        /* Over the bound: drop the least recently used idle statement. */
        if (c->ncache > SQLITE_STMT_CACHE_MAX) {
            stmt_entry **victim = NULL;
            for (stmt_entry **pp = &c->cache; *pp; pp = &(*pp)->next)
                if (!(*pp)->in_use)
                    victim = pp;
            if (victim) {
                stmt_entry *v = *victim;
                *victim = v->next;
                stmt_entry_free(v);
                c->ncache--;
            }
        }
    }
    *out = e;
    return OMS_OK;
}

/* Ends a use of e: resets it so it holds no read snapshot and no locks. */
static void stmt_release(stmt_entry *e, int cached)
{
    if (!cached) {
        stmt_entry_free(e);
        return;
    }
    (void)sqlite3_reset(e->stmt); /* the step's error was already reported */
    e->in_use = 0;
}

/* Binds params to $1..$n by name (so $2 may come before $1 in the text, and a
 * parameter may be used twice). A $i absent from the SQL is skipped; a placeholder
 * in the SQL we have no value for is an error, never a silent NULL. */
static int sqlite_bind(oms_db_conn *c, sqlite3_stmt *stmt, const oms_db_param *p, int n,
                       oms_error *err)
{
    int count = sqlite3_bind_parameter_count(stmt);
    for (int j = 1; j <= count; j++) {
        const char *name = sqlite3_bind_parameter_name(stmt, j);
        char *end = NULL;
        long k = name && name[0] == '$' ? strtol(name + 1, &end, 10) : 0;
        if (!name || !end || *end != '\0' || k < 1 || k > n)
            return oms_error_set(err, OMS_ERR,
                                 "sqlite bind: placeholder %s has no value (%d param%s given)",
                                 name ? name : "?", n, n == 1 ? "" : "s");
    }
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof(name), "$%d", i + 1);
        int idx = sqlite3_bind_parameter_index(stmt, name);
        if (idx == 0)
            continue;
        int rc;
        switch (p[i].type) {
        case OMS_DB_INT: rc = sqlite3_bind_int64(stmt, idx, p[i].i); break;
        case OMS_DB_TEXT:
            /* STATIC: the value outlives the statement's steps (they all happen inside
             * this call), and the next use clears the bindings before stepping. */
            rc = p[i].s ? sqlite3_bind_text(stmt, idx, p[i].s, -1, SQLITE_STATIC)
                        : sqlite3_bind_null(stmt, idx);
            break;
        case OMS_DB_NULL: rc = sqlite3_bind_null(stmt, idx); break;
        default:
            return oms_error_set(err, OMS_ERR, "sqlite bind: %s has unknown type %d", name,
                                 (int)p[i].type);
        }
        if (rc != SQLITE_OK)
            return sqlite_error(c->db, rc, "bind", err);
    }
    return OMS_OK;
}

static void *ckpt_main(void *arg)
{
    checkpointer *k = arg;
    oms_thread_background();
    oms_mutex_lock(&k->mu);
    while (!k->stop) {
        if (!k->signalled) {
            struct timespec until;
            if (oms_deadline_after_ns(CLOCK_MONOTONIC, CKPT_IDLE_MS * 1000000LL, &until) != OMS_OK)
                break; /* no clock: stop checkpointing here; commits do it past the backstop */
            (void)oms_cond_timedwait(&k->cv, &k->mu, &until);
            if (k->stop)
                break;
        }
        k->signalled = 0;
        oms_mutex_unlock(&k->mu);
        /* PASSIVE: copies what no reader still needs, never waits for a lock. BUSY
         * (another checkpoint running) is normal and needs no retry: the next commit
         * signals again. */
        int rc = sqlite3_wal_checkpoint_v2(k->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
            oms_log_warn("sqlite: background checkpoint failed", "error", sqlite3_errmsg(k->db));
        oms_mutex_lock(&k->mu);
    }
    oms_mutex_unlock(&k->mu);
    return NULL;
}

/* sqlite3_wal_hook: runs in the committing thread after each commit, with the WAL's
 * size in pages. Installing it turns SQLite's automatic checkpoint off. */
static int ckpt_hook(void *arg, sqlite3 *db, const char *schema, int pages)
{
    checkpointer *k = arg;
    if (pages >= CKPT_INLINE_PAGES) {
        /* The background thread is not keeping up (or cannot run): do it here. */
        (void)sqlite3_wal_checkpoint_v2(db, schema, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        return SQLITE_OK;
    }
    if (pages >= CKPT_SIGNAL_PAGES) {
        oms_mutex_lock(&k->mu);
        if (!k->signalled) {
            k->signalled = 1;
            oms_cond_signal(&k->cv);
        }
        oms_mutex_unlock(&k->mu);
    }
    return SQLITE_OK;
}

static void ckpt_stop(checkpointer *k)
{
    if (!k)
        return;
    oms_mutex_lock(&k->mu);
    k->stop = 1;
    oms_cond_signal(&k->cv);
    oms_mutex_unlock(&k->mu);
    oms_thread_join(k->thread);
    if (sqlite3_close(k->db) != SQLITE_OK)
        oms_log_errorf("sqlite checkpointer close: %s", sqlite3_errmsg(k->db));
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    free(k);
}

/* Starts the checkpointer for the file url and hooks it to db. On any failure the
 * connection keeps SQLite's automatic checkpoint and a warning says why. */
static checkpointer *ckpt_start(sqlite3 *db, const char *url)
{
    checkpointer *k = oms_xcalloc(1, sizeof(*k));
    int rc = sqlite3_open_v2(url, &k->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    const char *why = NULL;
    /* A fresh connection only learns the file is in WAL mode when it first reads it;
     * until then a checkpoint on it does nothing. */
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(k->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        why = k->db ? sqlite3_errmsg(k->db) : sqlite3_errstr(rc);
        goto fail;
    }
    int e = oms_cond_init_monotonic(&k->cv);
    if (e == 0 && (e = pthread_mutex_init(&k->mu, NULL)) != 0)
        pthread_cond_destroy(&k->cv);
    if (e != 0) {
        why = strerror(e);
        goto fail;
    }
    e = pthread_create(&k->thread, NULL, ckpt_main, k);
    if (e != 0) {
        pthread_mutex_destroy(&k->mu);
        pthread_cond_destroy(&k->cv);
        why = strerror(e);
        goto fail;
    }
    sqlite3_wal_hook(db, ckpt_hook, k);
    return k;
fail:
    oms_log_warn("sqlite: no background checkpointer; checkpoints run in commits", "database", url,
                 "error", why ? why : "unknown");
    (void)sqlite3_close(k->db); /* NULL is a no-op; nothing prepared on it */
    free(k);
    return NULL;
}

static int sqlite_connect(const char *url, oms_db_conn **out, oms_error *err)
{
    *out = NULL;
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(url, &db, flags, NULL);
    if (rc != SQLITE_OK) {
        /* sqlite returns a handle even on failure (for the message); close it. */
        oms_error_set(err, OMS_ERR, "sqlite open %s: %s", url,
                      db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        (void)sqlite3_close(db); /* nothing prepared on it, so close cannot refuse */
        return OMS_ERR;
    }
    /* Extended codes let us tell a UNIQUE violation from other constraint failures. */
    rc = sqlite3_extended_result_codes(db, 1);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(db, SQLITE_BUSY_TIMEOUT_MS);
    if (rc != SQLITE_OK) {
        rc = sqlite_error(db, rc, "configure", err);
        goto fail;
    }

    /* WAL lets readers in other processes (sqlite3 CLI, backups) run during writes;
     * with WAL, synchronous=NORMAL is still crash-safe and avoids an fsync per commit.
     * An in-memory database has no journal file to switch. */
    const char *pragmas[] = {
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA foreign_keys=ON",
    };
    int memory = strcmp(url, ":memory:") == 0;
    for (size_t i = memory ? 1 : 0; i < OMS_NELEM(pragmas); i++) {
        rc = sqlite3_exec(db, pragmas[i], NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            rc = sqlite_error(db, rc, pragmas[i], err);
            goto fail;
        }
    }

    oms_db_conn *c = oms_xcalloc(1, sizeof(*c));
    c->db = db;
    if (!memory)
        c->ckpt = ckpt_start(db, url);
    *out = c;
    return OMS_OK;

fail:
    (void)sqlite3_close(db); /* nothing prepared yet, so close cannot refuse */
    return rc;
}

static void sqlite_disconnect(oms_db_conn *c)
{
    if (!c)
        return;
    stmt_entry *e = c->cache;
    while (e) {
        stmt_entry *next = e->next;
        stmt_entry_free(e);
        e = next;
    }
    for (int i = 0; i < TX__COUNT; i++)
        (void)sqlite3_finalize(c->tx[i]); /* NULL is a no-op */
    /* The checkpointer's connection closes first, so that closing the last one (ours)
     * checkpoints the WAL into the database and removes it, as before. */
    sqlite3_wal_hook(c->db, NULL, NULL);
    ckpt_stop(c->ckpt);
    /* With every statement finalised close cannot be refused (SQLITE_BUSY). */
    if (sqlite3_close(c->db) != SQLITE_OK)
        oms_log_errorf("sqlite close: %s", sqlite3_errmsg(c->db));
    free(c);
}

static int sqlite_tx_step(oms_db_conn *c, int which, oms_error *err)
{
    int rc;
    if (!c->tx[which]) {
        rc = sqlite3_prepare_v2(c->db, tx_sql[which], -1, &c->tx[which], NULL);
        if (rc != SQLITE_OK)
            return sqlite_error(c->db, rc, tx_sql[which], err);
    }
    rc = sqlite3_step(c->tx[which]);
    (void)sqlite3_reset(c->tx[which]); /* its error, if any, is rc's */
    if (rc != SQLITE_DONE)
        return sqlite_error(c->db, rc, tx_sql[which], err);
    return OMS_OK;
}

/* IMMEDIATE takes the write lock at BEGIN, so two transactions never both read and
 * then fail to upgrade; waiting happens here, bounded by busy_timeout. */
static int sqlite_begin(oms_db_conn *c, oms_error *err)
{
    return sqlite_tx_step(c, TX_BEGIN, err);
}

static int sqlite_commit(oms_db_conn *c, oms_error *err)
{
    return sqlite_tx_step(c, TX_COMMIT, err);
}

static void sqlite_rollback(oms_db_conn *c)
{
    /* Fails only when no transaction is open (SQLite may already have rolled back
     * after an error such as SQLITE_FULL); either way none is open afterwards. */
    (void)sqlite_tx_step(c, TX_ROLLBACK, NULL);
}

static int sqlite_exec_script(oms_db_conn *c, const char *sql, oms_error *err)
{
    char *msg = NULL;
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        rc = sqlite_error(c->db, rc, "script", err);
        sqlite3_free(msg); /* same text as sqlite3_errmsg, which we used */
        return rc;
    }
    return OMS_OK;
}

/* Steps stmt to the end, calling fn per row. Returns fn's stop code untouched and
 * without setting err (the db layer relies on that), or a mapped sqlite error. */
static int sqlite_run(oms_db_conn *c, const char *sql, const oms_db_param *p, int n,
                      oms_db_row_fn fn, void *ud, long long *nrows, long long *changes,
                      oms_error *err)
{
    stmt_entry *e = NULL;
    int cached = 0;
    long long rows = 0;
    int rc = stmt_acquire(c, sql, &e, &cached, err);
    if (rc != OMS_OK)
        return rc;
    rc = sqlite_bind(c, e->stmt, p, n, err);
    if (rc != OMS_OK)
        goto done;

    for (;;) {
        int s = sqlite3_step(e->stmt);
        if (s == SQLITE_DONE)
            break;
        if (s != SQLITE_ROW) {
            rc = sqlite_error(c->db, s, "step", err);
            goto done;
        }
        rows++;
        if (fn) {
            oms_db_row row = {&oms_db_driver_sqlite, e->stmt};
            rc = fn(&row, ud);
            if (rc != OMS_OK)
                goto done;
        }
    }
    if (changes)
        *changes = (long long)sqlite3_changes64(c->db);
done:
    if (nrows)
        *nrows = rows;
    stmt_release(e, cached);
    return rc;
}

static int sqlite_exec(oms_db_conn *c, const char *sql, const oms_db_param *p, int n,
                       long long *changes, oms_error *err)
{
    return sqlite_run(c, sql, p, n, NULL, NULL, NULL, changes, err);
}

static int sqlite_query(oms_db_conn *c, const char *sql, const oms_db_param *p, int n,
                        oms_db_row_fn fn, void *ud, long long *nrows, oms_error *err)
{
    return sqlite_run(c, sql, p, n, fn, ud, nrows, NULL, err);
}

static const char *sqlite_row_text(const oms_db_row *row, int col)
{
    return (const char *)sqlite3_column_text(row->impl, col);
}

static long long sqlite_row_int(const oms_db_row *row, int col)
{
    return (long long)sqlite3_column_int64(row->impl, col);
}

static int sqlite_row_isnull(const oms_db_row *row, int col)
{
    return sqlite3_column_type(row->impl, col) == SQLITE_NULL;
}

static int sqlite_row_columns(const oms_db_row *row)
{
    return sqlite3_column_count(row->impl);
}

const oms_db_driver oms_db_driver_sqlite = {
    .name = "sqlite",
    .connect = sqlite_connect,
    .disconnect = sqlite_disconnect,
    .begin = sqlite_begin,
    .commit = sqlite_commit,
    .rollback = sqlite_rollback,
    .exec_script = sqlite_exec_script,
    .exec = sqlite_exec,
    .query = sqlite_query,
    .row_text = sqlite_row_text,
    .row_int = sqlite_row_int,
    .row_isnull = sqlite_row_isnull,
    .row_columns = sqlite_row_columns,
    .pool_size = 1,
};
