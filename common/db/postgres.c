/* PostgreSQL driver for oms/db.h (libpq).
 *
 * Several services' instances share one database, so unlike SQLite this driver keeps a
 * pool of connections (db.c owns the pool; PG_POOL_SIZE connections) and transactions
 * really run concurrently under READ COMMITTED. The code above relies on that level:
 * guarded UPDATEs (`... WHERE available >= $2`, `... AND state = $2`) re-check their
 * condition on the newest row version after waiting for a concurrent writer, so a
 * "changes == 0" answer is how a lost race shows up, never a negative counter.
 *
 * Statements: the SQL text is written once in $n style, which is PostgreSQL's own, so
 * it goes to the server unchanged. Each connection prepares a statement the first time
 * it sees a text (PQprepare under a per-connection name "oms_<n>") and afterwards only
 * sends parameters (PQexecPrepared, all values in text format, types inferred by the
 * server from the statement). Past PG_STMT_CACHE_MAX distinct texts a statement runs
 * unprepared (PQexecParams) so SQL built at run time cannot grow server memory.
 *
 * Errors: SQLSTATE 23505 (unique violation) -> OMS_CONFLICT; 40001 / 40P01
 * (serialization failure / deadlock) and 55P03 (lock not available) -> OMS_AGAIN, the
 * caller retries the whole transaction; a lost connection -> OMS_AGAIN, and the next
 * begin on that connection reconnects (PQreset) with an empty statement cache, since
 * prepared statements live in the server session that went away. A statement cancelled
 * by statement_timeout (57014) is an error like any other: the transaction is aborted.
 * libpq's messages can quote the connection URI, password included, so every one of
 * them is passed through oms_url_redact before it reaches an error.
 *
 * Bounds on every connection (conninfo defaults, so a DATABASE_URL that sets the same
 * parameter wins; a URL setting `options` replaces the statement timeout with its own):
 *  - statement_timeout PG_STATEMENT_TIMEOUT_MS: a statement stuck on a lock or a
 *    runaway plan would hold its pool connection, and the request thread, for ever;
 *    10 s is well past the slowest statement the services run (milliseconds) and past
 *    the pool wait (5 s), so it only ends what is already lost. Migrations lift it
 *    for their own transaction (pg_migration_lock): index builds may take longer.
 *  - TCP keepalives (first probe after 30 s idle, every 10 s, 3 misses): a server
 *    that vanished without a FIN (host down, NAT entry dropped) is noticed in about a
 *    minute instead of the kernel's two hours, so the connection is marked broken and
 *    reconnected instead of hanging the next transaction. */
#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/db_driver.h"
#include "oms/log.h"
#include "oms/util.h"

#define PG_POOL_SIZE 8
#define PG_STMT_CACHE_MAX 128
#define PG_PARAMS_MAX 64 /* the services' widest statement has 9 */
/* The migration lock's key: any constant works, it only has to be the same in every
 * instance ("oms" in ASCII). Transaction-level, so COMMIT/ROLLBACK releases it. */
#define PG_MIGRATION_LOCK_KEY 0x6f6d73
#define PG_STATEMENT_TIMEOUT_MS 10000
#define PG_STR2(x) #x
#define PG_STR(x) PG_STR2(x)

typedef struct pg_stmt {
    struct pg_stmt *next;
    uint64_t hash; /* of sql; compared before strcmp */
    char *sql;     /* owned */
    char name[24]; /* server-side prepared statement name */
} pg_stmt;

struct oms_db_conn {
    PGconn *pg;
    pg_stmt *cache; /* most recently used first */
    int ncache;
    unsigned next_id; /* for statement names; never reused within a session */
    int broken;       /* the session was lost: reset before the next transaction */
};

/* A row during a query callback: the whole result is in memory (libpq default). */
typedef struct pg_row {
    PGresult *res;
    int row;
} pg_row;

static uint64_t pg_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static void pg_cache_clear(oms_db_conn *c)
{
    pg_stmt *s = c->cache;
    while (s) {
        pg_stmt *next = s->next;
        free(s->sql);
        free(s);
        s = next;
    }
    c->cache = NULL;
    c->ncache = 0;
}

/* Server notices (e.g. "relation already exists, skipping" from CREATE TABLE IF NOT
 * EXISTS) would otherwise go to stderr as raw text between our JSON log lines. */
static void pg_notice(void *arg, const char *message)
{
    (void)arg;
    size_t n = strlen(message);
    while (n > 0 && (message[n - 1] == '\n' || message[n - 1] == '\r'))
        n--;
    oms_log_debugf("postgres notice: %.*s", (int)n, message);
}

/* One-line copy of libpq's message (it ends in a newline, sometimes has several), with
 * any URL's password hidden: some parse errors quote the whole connection URI. */
static void pg_message(char *out, size_t cap, const char *msg)
{
    if (cap == 0)
        return;
    oms_url_redact(msg, out, cap);
    size_t n = strlen(out);
    for (size_t i = 0; i < n; i++)
        if (out[i] == '\n' || out[i] == '\r')
            out[i] = ' ';
    while (n > 0 && out[n - 1] == ' ')
        n--;
    out[n] = '\0';
}

/* Maps a failed result (or NULL: the call itself failed) to our status set. A lost
 * connection marks c broken so the next begin resets it. */
static int pg_error(oms_db_conn *c, const PGresult *res, const char *what, oms_error *err)
{
    char msg[400];
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    pg_message(msg, sizeof(msg), res ? PQresultErrorMessage(res) : PQerrorMessage(c->pg));
    if (!*msg)
        pg_message(msg, sizeof(msg), PQerrorMessage(c->pg));

    int code = OMS_ERR;
    if (PQstatus(c->pg) != CONNECTION_OK) {
        c->broken = 1;
        code = OMS_AGAIN;
    } else if (state) {
        if (strcmp(state, "23505") == 0)
            code = OMS_CONFLICT;
        else if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
                 strcmp(state, "55P03") == 0)
            code = OMS_AGAIN;
        else if (strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 ||
                 strcmp(state, "57P03") == 0)
            code = OMS_AGAIN; /* connection exception, server shutting down or starting */
    }
    return oms_error_set(err, code, "postgres %s: %s%s%s%s", what, msg, state ? " [" : "",
                         state ? state : "", state ? "]" : "");
}

/* Runs a parameterless command and checks it completed; res is consumed. */
static int pg_command(oms_db_conn *c, const char *sql, oms_error *err)
{
    PGresult *res = PQexec(c->pg, sql);
    int rc = OMS_OK;
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = pg_error(c, res, sql, err);
    PQclear(res);
    return rc;
}

static int pg_connect(const char *url, oms_db_conn **out, oms_error *err)
{
    *out = NULL;
    /* Defaults first: with expand_dbname the url's own settings override them. A
     * connect timeout keeps a start (or a reconnect) from hanging on a dead host; the
     * other bounds are explained at the top of this file. */
    static const char *const defaults[][2] = {
        {"connect_timeout", "5"},
        {"application_name", "oms"},
        {"keepalives", "1"},
        {"keepalives_idle", "30"},
        {"keepalives_interval", "10"},
        {"keepalives_count", "3"},
        {"options", "-c statement_timeout=" PG_STR(PG_STATEMENT_TIMEOUT_MS)},
    };
    enum { NDEFAULTS = OMS_NELEM(defaults) };
    const char *keys[NDEFAULTS + 2], *vals[NDEFAULTS + 2];
    for (size_t i = 0; i < NDEFAULTS; i++) {
        keys[i] = defaults[i][0];
        vals[i] = defaults[i][1];
    }
    keys[NDEFAULTS] = "dbname";
    vals[NDEFAULTS] = url;
    keys[NDEFAULTS + 1] = vals[NDEFAULTS + 1] = NULL;
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (!pg)
        return oms_error_set(err, OMS_ERR, "postgres connect: out of memory");
    if (PQstatus(pg) != CONNECTION_OK) {
        char msg[400];
        pg_message(msg, sizeof(msg), PQerrorMessage(pg));
        PQfinish(pg);
        /* The url may carry a password: only libpq's message is reported, and
         * pg_message hides the password where that message quotes the url. */
        return oms_error_set(err, OMS_AGAIN, "postgres connect: %s", msg);
    }
    (void)PQsetNoticeProcessor(pg, pg_notice, NULL);
    oms_db_conn *c = oms_xcalloc(1, sizeof(*c));
    c->pg = pg;
    *out = c;
    return OMS_OK;
}

static void pg_disconnect(oms_db_conn *c)
{
    if (!c)
        return;
    pg_cache_clear(c);
    PQfinish(c->pg);
    free(c);
}

/* Brings a lost session back (PQreset reconnects with the same parameters). */
static int pg_revive(oms_db_conn *c, oms_error *err)
{
    if (!c->broken && PQstatus(c->pg) == CONNECTION_OK)
        return OMS_OK;
    pg_cache_clear(c); /* the old session's prepared statements are gone */
    PQreset(c->pg);
    if (PQstatus(c->pg) != CONNECTION_OK) {
        char msg[400];
        pg_message(msg, sizeof(msg), PQerrorMessage(c->pg));
        return oms_error_set(err, OMS_AGAIN, "postgres reconnect: %s", msg);
    }
    (void)PQsetNoticeProcessor(c->pg, pg_notice, NULL);
    c->broken = 0;
    oms_log_info("postgres connection re-established");
    return OMS_OK;
}

static int pg_begin(oms_db_conn *c, oms_error *err)
{
    int rc = pg_revive(c, err);
    if (rc != OMS_OK)
        return rc;
    return pg_command(c, "BEGIN", err);
}

static int pg_commit(oms_db_conn *c, oms_error *err)
{
    PGresult *res = PQexec(c->pg, "COMMIT");
    int rc = OMS_OK;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = pg_error(c, res, "COMMIT", err);
    } else if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        /* COMMIT of a transaction an earlier error aborted "succeeds" as ROLLBACK;
         * the caller must not believe its writes were kept. */
        rc = oms_error_set(err, OMS_ERR, "postgres COMMIT: transaction was rolled back (%s)",
                           PQcmdStatus(res));
    }
    PQclear(res);
    return rc;
}

static void pg_rollback(oms_db_conn *c)
{
    if (c->broken || PQstatus(c->pg) != CONNECTION_OK)
        return; /* the server ended the transaction with the session */
    oms_error ignored;
    /* Fails only when the session died meanwhile, which marks it broken; there is no
     * transaction left to roll back either way. */
    (void)pg_command(c, "ROLLBACK", &ignored);
}

static int pg_exec_script(oms_db_conn *c, const char *sql, oms_error *err)
{
    /* The simple query protocol runs several ;-separated statements in one call. */
    return pg_command(c, sql, err);
}

/* Serialises the migrations of all instances of a service: held until the migration's
 * transaction ends, so the second instance sees the first one's schema_migrations row
 * (READ COMMITTED takes a fresh snapshot per statement) instead of racing it. */
static int pg_migration_lock(oms_db_conn *c, oms_error *err)
{
    /* Neither waiting for another instance's migration nor the migration itself is a
     * request that someone waits for: no statement timeout until this transaction
     * ends (SET LOCAL). */
    int rc = pg_command(c, "SET LOCAL statement_timeout = 0", err);
    if (rc != OMS_OK)
        return rc;
    char sql[64];
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_xact_lock(%d)", PG_MIGRATION_LOCK_KEY);
    return pg_command(c, sql, err);
}

/* The cached statement for sql, prepared on first use. *stmt is NULL when the cache is
 * full: run the statement unprepared then. */
static int pg_prepared(oms_db_conn *c, const char *sql, int nparams, const pg_stmt **stmt,
                       oms_error *err)
{
    uint64_t h = pg_hash(sql);
    pg_stmt *prev = NULL;
    *stmt = NULL;
    for (pg_stmt *s = c->cache; s; prev = s, s = s->next) {
        if (s->hash != h || strcmp(s->sql, sql) != 0)
            continue;
        if (prev) { /* move to front: keeps hot statements cheap to find */
            prev->next = s->next;
            s->next = c->cache;
            c->cache = s;
        }
        *stmt = s;
        return OMS_OK;
    }
    if (c->ncache >= PG_STMT_CACHE_MAX)
        return OMS_OK;

    pg_stmt *s = oms_xcalloc(1, sizeof(*s));
    snprintf(s->name, sizeof(s->name), "oms_%u", c->next_id++);
    /* No parameter types: the server infers each from where it is used, exactly as
     * it would for a literal, and every value is sent as text. */
    PGresult *res = PQprepare(c->pg, s->name, sql, nparams, NULL);
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        int rc = pg_error(c, res, "prepare", err);
        PQclear(res);
        free(s);
        return rc;
    }
    PQclear(res);
    s->hash = h;
    s->sql = oms_strdup(sql);
    s->next = c->cache;
    c->cache = s;
    c->ncache++;
    *stmt = s;
    return OMS_OK;
}

/* Runs sql with p as text parameters; calls fn per row. Returns fn's stop code untouched
 * and without setting err (db.c relies on that), or a mapped PostgreSQL error. */
static int pg_run(oms_db_conn *c, const char *sql, const oms_db_param *p, int n, oms_db_row_fn fn,
                  void *ud, long long *nrows, long long *changes, oms_error *err)
{
    if (n < 0 || n > PG_PARAMS_MAX)
        return oms_error_set(err, OMS_ERR, "postgres: %d parameters (max %d)", n, PG_PARAMS_MAX);
    if (c->broken)
        return oms_error_set(err, OMS_AGAIN, "postgres: connection lost; transaction aborted");

    /* Integers are formatted into ints[]; text is borrowed from the caller. */
    char ints[PG_PARAMS_MAX][24];
    const char *vals[PG_PARAMS_MAX];
    for (int i = 0; i < n; i++) {
        switch (p[i].type) {
        case OMS_DB_INT:
            snprintf(ints[i], sizeof(ints[i]), "%lld", p[i].i);
            vals[i] = ints[i];
            break;
        case OMS_DB_TEXT: vals[i] = p[i].s; break; /* NULL pointer: SQL NULL */
        case OMS_DB_NULL: vals[i] = NULL; break;
        default:
            return oms_error_set(err, OMS_ERR, "postgres bind: $%d has unknown type %d", i + 1,
                                 (int)p[i].type);
        }
    }

    const pg_stmt *stmt = NULL;
    int rc = pg_prepared(c, sql, n, &stmt, err);
    if (rc != OMS_OK)
        return rc;
    PGresult *res = stmt ? PQexecPrepared(c->pg, stmt->name, n, vals, NULL, NULL, 0)
                         : PQexecParams(c->pg, sql, n, NULL, vals, NULL, NULL, 0);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        rc = pg_error(c, res, "statement", err);
        PQclear(res);
        return rc;
    }

    long long rows = 0;
    if (st == PGRES_TUPLES_OK) {
        int nt = PQntuples(res);
        for (int r = 0; r < nt; r++) {
            rows++;
            if (!fn)
                continue;
            pg_row cur = {res, r};
            oms_db_row row = {&oms_db_driver_postgres, &cur};
            rc = fn(&row, ud);
            if (rc != OMS_OK)
                break;
        }
    }
    if (changes) {
        const char *t = PQcmdTuples(res); /* "" for statements that change nothing */
        *changes = *t ? strtoll(t, NULL, 10) : 0;
    }
    if (nrows)
        *nrows = rows;
    PQclear(res);
    return rc;
}

static int pg_exec(oms_db_conn *c, const char *sql, const oms_db_param *p, int n,
                   long long *changes, oms_error *err)
{
    return pg_run(c, sql, p, n, NULL, NULL, NULL, changes, err);
}

static int pg_query(oms_db_conn *c, const char *sql, const oms_db_param *p, int n, oms_db_row_fn fn,
                    void *ud, long long *nrows, oms_error *err)
{
    return pg_run(c, sql, p, n, fn, ud, nrows, NULL, err);
}

static const char *pg_row_text(const oms_db_row *row, int col)
{
    const pg_row *r = row->impl;
    if (col < 0 || col >= PQnfields(r->res) || PQgetisnull(r->res, r->row, col))
        return NULL;
    return PQgetvalue(r->res, r->row, col);
}

static long long pg_row_int(const oms_db_row *row, int col)
{
    const char *v = pg_row_text(row, col);
    if (!v)
        return 0;
    /* Booleans come back as t/f in text format; count(*) and BIGINT as digits. */
    if (v[0] == 't' && v[1] == '\0')
        return 1;
    return strtoll(v, NULL, 10);
}

static int pg_row_isnull(const oms_db_row *row, int col)
{
    const pg_row *r = row->impl;
    return col < 0 || col >= PQnfields(r->res) || PQgetisnull(r->res, r->row, col);
}

static int pg_row_columns(const oms_db_row *row)
{
    const pg_row *r = row->impl;
    return PQnfields(r->res);
}

const oms_db_driver oms_db_driver_postgres = {
    .name = "postgres",
    .connect = pg_connect,
    .disconnect = pg_disconnect,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .exec_script = pg_exec_script,
    .exec = pg_exec,
    .query = pg_query,
    .row_text = pg_row_text,
    .row_int = pg_row_int,
    .row_isnull = pg_row_isnull,
    .row_columns = pg_row_columns,
    .migration_lock = pg_migration_lock,
    .pool_size = PG_POOL_SIZE,
    .row_locks = 1,
};
