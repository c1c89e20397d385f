/* oms/db.h and oms/inbox.h against a real SQLite file in a private temp directory. */
#define _GNU_SOURCE /* nftw's FTW_DEPTH/FTW_PHYS */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "oms/db.h"
#include "oms/inbox.h"
#include "oms/outbox.h"
#include "oms/retention.h"
#include "oms/log.h"

/* SQLite's allocator wrapped to count calls: lets the cache test prove a statement
 * is reused (preparing one costs several allocations, re-running a cached one none). */
static sqlite3_mem_methods g_sqlite_mem;
static atomic_long g_sqlite_mallocs;

static void *counting_malloc(int n)
{
    atomic_fetch_add(&g_sqlite_mallocs, 1);
    return g_sqlite_mem.xMalloc(n);
}

static int install_counting_malloc(void)
{
    sqlite3_mem_methods m;
    if (sqlite3_config(SQLITE_CONFIG_GETMALLOC, &g_sqlite_mem) != SQLITE_OK)
        return -1;
    m = g_sqlite_mem;
    m.xMalloc = counting_malloc;
    return sqlite3_config(SQLITE_CONFIG_MALLOC, &m) == SQLITE_OK ? 0 : -1;
}

static char g_dir[] = "/tmp/oms-test-db-XXXXXX";

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int group_setup(void **state)
{
    return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    return nftw(g_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* "sqlite:<tmpdir>/<name>" */
static void db_url(char *out, size_t n, const char *name)
{
    int w = snprintf(out, n, "sqlite:%s/%s", g_dir, name);
    assert_true(w > 0 && (size_t)w < n);
}

static const oms_db_migration base_migs[] = {
    {"t_v1",
     "CREATE TABLE p(i INTEGER, s TEXT, n TEXT);"
     "CREATE TABLE u(k TEXT PRIMARY KEY, other TEXT UNIQUE);"
     "CREATE TABLE r(id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);"
     "CREATE TABLE counter(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
     "INSERT INTO counter VALUES(1, 0);",
     NULL},
};

static oms_db *open_db(const char *name, const oms_db_migration *migs, size_t n)
{
    char url[PATH_MAX];
    oms_error err = {0};
    oms_db *db = NULL;
    db_url(url, sizeof(url), name);
    int rc = oms_db_open(&db, url, migs, n, &err);
    if (rc != OMS_OK)
        fail_msg("open %s: %s", url, err.msg);
    return db;
}

static oms_db *open_base(const char *name)
{
    oms_db_migration migs[2] = {base_migs[0], oms_inbox_migration};
    return open_db(name, migs, 2);
}

static int count_cb(const oms_db_row *row, void *ud)
{
    *(long long *)ud = oms_db_row_int(row, 0);
    return OMS_OK;
}

/* SELECT returning one integer, in its own transaction. */
static long long scalar(oms_db *db, const char *sql)
{
    oms_db_tx *tx = NULL;
    oms_error err = {0};
    long long v = -1, rows = 0;
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    int rc = oms_db_query(tx, sql, NULL, 0, count_cb, &v, &rows, &err);
    oms_db_rollback(tx);
    if (rc != OMS_OK)
        fail_msg("%s: %s", sql, err.msg);
    assert_int_equal(rows, 1);
    return v;
}

static void exec_ok(oms_db_tx *tx, const char *sql, const oms_db_param *p, int n)
{
    oms_error err = {0};
    if (oms_db_exec(tx, sql, p, n, NULL, &err) != OMS_OK)
        fail_msg("%s: %s", sql, err.msg);
}

/* ---- migrations ---------------------------------------------------------------- */

static void test_migrations_once(void **state)
{
    static const oms_db_migration m1[] = {
        {"m1", "CREATE TABLE mlog(x TEXT); INSERT INTO mlog VALUES('m1');", NULL},
    };
    static const oms_db_migration m2[] = {
        {"m1", "CREATE TABLE mlog(x TEXT); INSERT INTO mlog VALUES('m1');", NULL},
        {"m2", "INSERT INTO mlog VALUES('m2');", "this is never run on sqlite"},
    };
    oms_db *db = open_db("mig.db", m1, 1);
    assert_int_equal(scalar(db, "SELECT count(*) FROM mlog"), 1);
    assert_int_equal(scalar(db, "SELECT count(*) FROM schema_migrations"), 1);
    assert_string_equal(oms_db_driver_name(db), "sqlite");
    oms_db_close(db);

    /* Reopening must not run m1 again (its CREATE TABLE would fail). */
    db = open_db("mig.db", m1, 1);
    assert_int_equal(scalar(db, "SELECT count(*) FROM mlog"), 1);
    oms_db_close(db);

    db = open_db("mig.db", m2, 2);
    assert_int_equal(scalar(db, "SELECT count(*) FROM mlog"), 2);
    assert_int_equal(scalar(db, "SELECT count(*) FROM mlog WHERE x = 'm2'"), 1);
    assert_int_equal(scalar(db, "SELECT count(*) FROM schema_migrations"), 2);
    assert_int_equal(scalar(db, "SELECT count(*) FROM schema_migrations WHERE applied_at "
                                "LIKE '____-__-__T__:__:__.___Z'"),
                     2);
    oms_db_close(db);

    db = open_db("mig.db", m2, 2);
    assert_int_equal(scalar(db, "SELECT count(*) FROM mlog"), 2);
    oms_db_close(db);
}

static void test_migration_failure_is_atomic(void **state)
{
    static const oms_db_migration bad[] = {
        {"bad", "CREATE TABLE half(x INTEGER); CREATE TABLE broken(;", NULL},
    };
    char url[PATH_MAX];
    oms_error err = {0};
    oms_db *db = NULL;
    db_url(url, sizeof(url), "badmig.db");
    assert_int_equal(oms_db_open(&db, url, bad, 1, &err), OMS_ERR);
    assert_null(db);
    assert_non_null(strstr(err.msg, "migration bad"));
    assert_non_null(strstr(err.msg, "syntax error"));

    /* Neither the half-created table nor the record survived. */
    db = open_db("badmig.db", NULL, 0);
    assert_int_equal(scalar(db, "SELECT count(*) FROM schema_migrations"), 0);
    assert_int_equal(scalar(db, "SELECT count(*) FROM sqlite_master WHERE name = 'half'"), 0);
    oms_db_close(db);
}

/* ---- urls ------------------------------------------------------------------------ */

static void test_open_urls(void **state)
{
    oms_error err = {0};
    oms_db *db = NULL;

    /* Both schemes reach the PostgreSQL driver (tests/unit/test_postgres.c has a real
     * server); nothing listens on port 1, so the connection fails, retryably. */
    assert_int_equal(oms_db_open(&db, "postgres://u@127.0.0.1:1/oms", NULL, 0, &err), OMS_AGAIN);
    assert_null(db);
    assert_non_null(strstr(err.msg, "postgres connect"));
    assert_int_equal(oms_db_open(&db, "postgresql://127.0.0.1:1/oms", NULL, 0, &err), OMS_AGAIN);
    assert_int_equal(oms_db_open(&db, "", NULL, 0, &err), OMS_INVALID);
    assert_int_equal(oms_db_open(&db, "sqlite:", NULL, 0, &err), OMS_INVALID);

    assert_int_equal(oms_db_open(&db, ":memory:", base_migs, 1, &err), OMS_OK);
    assert_int_equal(oms_db_ping(db, &err), OMS_OK);
    assert_int_equal(scalar(db, "SELECT n FROM counter"), 0);
    oms_db_close(db);

    /* A plain path (no scheme) is a SQLite file too. */
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/plain.db", g_dir);
    assert_int_equal(oms_db_open(&db, path, NULL, 0, &err), OMS_OK);
    oms_db_close(db);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
}

static void test_creates_directory(void **state)
{
    oms_db *db = open_db("sub/deeper/x.db", base_migs, 1);
    assert_int_equal(oms_db_ping(db, NULL), OMS_OK);
    oms_db_close(db);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/sub/deeper/x.db", g_dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    /* Reopening with the directory present is fine. */
    db = open_db("sub/deeper/x.db", base_migs, 1);
    oms_db_close(db);
}

/* ---- statements ------------------------------------------------------------------ */

typedef struct {
    int rows;
    long long i;
    char s[64];
    int s_null;
    int n_null;
    const char *n_text;
    long long n_int;
    int cols;
} prow;

static int prow_cb(const oms_db_row *row, void *ud)
{
    prow *r = ud;
    r->rows++;
    r->cols = oms_db_row_columns(row);
    r->i = oms_db_row_int(row, 0);
    const char *s = oms_db_row_text(row, 1);
    r->s_null = s == NULL;
    snprintf(r->s, sizeof(r->s), "%s", s ? s : "");
    r->n_null = oms_db_row_isnull(row, 2);
    r->n_text = oms_db_row_text(row, 2);
    r->n_int = oms_db_row_int(row, 2);
    return OMS_OK;
}

static void test_params_all_types(void **state)
{
    oms_db *db = open_base("params.db");
    oms_db_tx *tx = NULL;
    oms_error err = {0};
    long long changes = -1;
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);

    oms_db_param p[3] = {OMS_DB_I(LLONG_MAX), OMS_DB_S("h\xc3\xa9llo 'q'"), OMS_DB_NULLP};
    assert_int_equal(
        oms_db_exec(tx, "INSERT INTO p(i, s, n) VALUES($1, $2, $3)", p, 3, &changes, &err), OMS_OK);
    assert_int_equal(changes, 1);
    /* A TEXT param with a NULL pointer is SQL NULL too. */
    oms_db_param q[3] = {OMS_DB_I(-5), OMS_DB_S(NULL), OMS_DB_S(NULL)};
    exec_ok(tx, "INSERT INTO p(i, s, n) VALUES($1, $2, $3)", q, 3);

    prow r = {0};
    long long rows = 0;
    oms_db_param w = OMS_DB_I(LLONG_MAX);
    assert_int_equal(
        oms_db_query(tx, "SELECT i, s, n FROM p WHERE i = $1", &w, 1, prow_cb, &r, &rows, &err),
        OMS_OK);
    assert_int_equal(rows, 1);
    assert_int_equal(r.rows, 1);
    assert_int_equal(r.cols, 3);
    assert_true(r.i == LLONG_MAX);
    assert_string_equal(r.s, "h\xc3\xa9llo 'q'");
    assert_true(r.n_null);
    assert_null(r.n_text);
    assert_int_equal(r.n_int, 0);

    memset(&r, 0, sizeof(r));
    w = OMS_DB_I(-5);
    assert_int_equal(
        oms_db_query(tx, "SELECT i, s, n FROM p WHERE i = $1", &w, 1, prow_cb, &r, NULL, &err),
        OMS_OK);
    assert_int_equal(r.i, -5);
    assert_true(r.s_null);

    /* Several changed rows are counted; exec of a row-returning statement steps through. */
    assert_int_equal(oms_db_exec(tx, "UPDATE p SET n = 'x'", NULL, 0, &changes, &err), OMS_OK);
    assert_int_equal(changes, 2);
    assert_int_equal(oms_db_exec(tx, "SELECT * FROM p", NULL, 0, &changes, &err), OMS_OK);
    assert_int_equal(oms_db_commit(tx, &err), OMS_OK);
    oms_db_close(db);
}

static void test_placeholder_order(void **state)
{
    oms_db *db = open_base("order.db");
    oms_db_tx *tx = NULL;
    oms_error err = {0};
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);

    oms_db_param p[2] = {OMS_DB_I(7), OMS_DB_S("seven")};
    exec_ok(tx, "INSERT INTO p(s, i) VALUES($2, $1)", p, 2);
    prow r = {0};
    assert_int_equal(oms_db_query(tx, "SELECT i, s, n FROM p", NULL, 0, prow_cb, &r, NULL, &err),
                     OMS_OK);
    assert_int_equal(r.rows, 1);
    assert_int_equal(r.i, 7);
    assert_string_equal(r.s, "seven");

    /* The same placeholder twice, and a param the SQL does not use, are both fine. */
    oms_db_param three[3] = {OMS_DB_I(20), OMS_DB_S("unused"), OMS_DB_I(1)};
    memset(&r, 0, sizeof(r));
    assert_int_equal(
        oms_db_query(tx, "SELECT $1 + $1 + $3, 'x', NULL", three, 3, prow_cb, &r, NULL, &err),
        OMS_OK);
    assert_int_equal(r.i, 41);

    /* A placeholder without a value is an error, never a silent NULL. */
    assert_int_equal(oms_db_query(tx, "SELECT $1, $2", p, 1, NULL, NULL, NULL, &err), OMS_ERR);
    assert_non_null(strstr(err.msg, "$2"));
    assert_int_equal(oms_db_query(tx, "SELECT ?", p, 1, NULL, NULL, NULL, &err), OMS_ERR);
    oms_db_rollback(tx);
    oms_db_close(db);
}

static void test_unique_conflict_then_rollback(void **state)
{
    oms_db *db = open_base("conflict.db");
    oms_db_tx *tx = NULL;
    oms_error err = {0};
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    oms_db_param a[2] = {OMS_DB_S("a"), OMS_DB_S("oa")};
    exec_ok(tx, "INSERT INTO u(k, other) VALUES($1, $2)", a, 2);
    assert_int_equal(oms_db_commit(tx, &err), OMS_OK);

    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    oms_db_param b[2] = {OMS_DB_S("b"), OMS_DB_S("ob")};
    exec_ok(tx, "INSERT INTO u(k, other) VALUES($1, $2)", b, 2);
    /* Primary key and UNIQUE column both map to OMS_CONFLICT. */
    oms_db_param pk[2] = {OMS_DB_S("a"), OMS_DB_S("new")};
    assert_int_equal(oms_db_exec(tx, "INSERT INTO u(k, other) VALUES($1, $2)", pk, 2, NULL, &err),
                     OMS_CONFLICT);
    assert_non_null(strstr(err.msg, "UNIQUE constraint failed"));
    assert_non_null(strstr(err.msg, "INSERT INTO u"));
    oms_db_param uq[2] = {OMS_DB_S("c"), OMS_DB_S("oa")};
    assert_int_equal(oms_db_exec(tx, "INSERT INTO u(k, other) VALUES($1, $2)", uq, 2, NULL, &err),
                     OMS_CONFLICT);
    /* A NOT NULL violation is a constraint failure but not a conflict. */
    assert_int_equal(
        oms_db_exec(tx, "INSERT INTO counter(id, n) VALUES(9, NULL)", NULL, 0, NULL, &err),
        OMS_ERR);
    oms_db_rollback(tx);

    assert_int_equal(scalar(db, "SELECT count(*) FROM u"), 1);
    assert_int_equal(scalar(db, "SELECT count(*) FROM u WHERE k = 'b'"), 0);
    /* The connection is usable again after the failed transaction. */
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    exec_ok(tx, "INSERT INTO u(k, other) VALUES($1, $2)", b, 2);
    assert_int_equal(oms_db_commit(tx, &err), OMS_OK);
    assert_int_equal(scalar(db, "SELECT count(*) FROM u"), 2);
    oms_db_close(db);
}

static void test_rollback_discards(void **state)
{
    oms_db *db = open_base("rollback.db");
    oms_db_tx *tx = NULL;
    oms_error err = {0};
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    exec_ok(tx, "UPDATE counter SET n = 42 WHERE id = 1", NULL, 0);
    exec_ok(tx, "INSERT INTO p(i) VALUES(1)", NULL, 0);
    long long v = 0;
    assert_int_equal(
        oms_db_query(tx, "SELECT n FROM counter WHERE id = 1", NULL, 0, count_cb, &v, NULL, &err),
        OMS_OK);
    assert_int_equal(v, 42); /* visible inside the transaction */
    oms_db_rollback(tx);
    assert_int_equal(scalar(db, "SELECT n FROM counter WHERE id = 1"), 0);
    assert_int_equal(scalar(db, "SELECT count(*) FROM p"), 0);
    oms_db_close(db);
}

static int stop_at_three(const oms_db_row *row, void *ud)
{
    int *seen = ud;
    return ++*seen == 3 ? OMS_NOTFOUND : OMS_OK;
}

static void test_query_stop_code(void **state)
{
    oms_db *db = open_base("stop.db");
    oms_db_tx *tx = NULL;
    oms_error err = {0};
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    for (int i = 0; i < 5; i++) {
        oms_db_param p = OMS_DB_I(i);
        exec_ok(tx, "INSERT INTO p(i) VALUES($1)", &p, 1);
    }
    int seen = 0;
    long long rows = 0;
    snprintf(err.msg, sizeof(err.msg), "set by the callback");
    assert_int_equal(
        oms_db_query(tx, "SELECT i FROM p ORDER BY i", NULL, 0, stop_at_three, &seen, &rows, &err),
        OMS_NOTFOUND);
    assert_int_equal(seen, 3);
    assert_int_equal(rows, 3);
    /* The callback's own message is left alone. */
    assert_string_equal(err.msg, "set by the callback");
    /* The statement was reset: the same query runs again from the start. */
    seen = 0;
    assert_int_equal(
        oms_db_query(tx, "SELECT i FROM p ORDER BY i", NULL, 0, NULL, NULL, &rows, &err), OMS_OK);
    assert_int_equal(rows, 5);
    assert_int_equal(oms_db_commit(tx, &err), OMS_OK);
    oms_db_close(db);
}

typedef struct {
    long long id;
    char v[32];
} retrow;

static int ret_cb(const oms_db_row *row, void *ud)
{
    retrow *r = ud;
    r->id = oms_db_row_int(row, 0);
    snprintf(r->v, sizeof(r->v), "%s", oms_db_row_text(row, 1));
    return OMS_OK;
}

static void test_returning(void **state)
{
    oms_db *db = open_base("returning.db");
    oms_db_tx *tx = NULL;
    oms_error err = {0};
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    for (int i = 1; i <= 3; i++) {
        retrow r = {0};
        long long rows = 0;
        oms_db_param p = OMS_DB_S("val");
        assert_int_equal(oms_db_query(tx, "INSERT INTO r(v) VALUES($1) RETURNING id, v", &p, 1,
                                      ret_cb, &r, &rows, &err),
                         OMS_OK);
        assert_int_equal(rows, 1);
        assert_int_equal(r.id, i);
        assert_string_equal(r.v, "val");
    }
    long long rows = 0;
    assert_int_equal(oms_db_query(tx, "UPDATE r SET v = 'w' WHERE id >= 2 RETURNING id", NULL, 0,
                                  NULL, NULL, &rows, &err),
                     OMS_OK);
    assert_int_equal(rows, 2);
    assert_int_equal(oms_db_commit(tx, &err), OMS_OK);
    oms_db_close(db);
}

/* A callback that runs the very statement currently iterating: the cache must hand
 * out a separate statement instead of resetting the running one. */
static int nested_cb(const oms_db_row *row, void *ud)
{
    oms_db_tx *tx = ud;
    long long rows = 0;
    if (oms_db_query(tx, "SELECT i FROM p ORDER BY i", NULL, 0, NULL, NULL, &rows, NULL) != OMS_OK)
        return OMS_ERR;
    return rows == 3 ? OMS_OK : OMS_ERR;
}

static void test_statement_cache(void **state)
{
    oms_db *db = open_base("cache.db");
    oms_db_tx *tx = NULL;
    oms_error err = {0};
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    for (int i = 0; i < 3; i++) {
        oms_db_param p = OMS_DB_I(i);
        exec_ok(tx, "INSERT INTO p(i) VALUES($1)", &p, 1);
    }

    /* Warm up, then 10000 runs of one SQL text must not grow SQLite's memory: one
     * prepared statement is reused, not 10000 prepared and leaked. */
    const char *sql = "SELECT i, s, n FROM p WHERE i = $1";
    for (int i = 0; i < 100; i++) {
        oms_db_param p = OMS_DB_I(i % 3);
        assert_int_equal(oms_db_query(tx, sql, &p, 1, NULL, NULL, NULL, &err), OMS_OK);
    }
    sqlite3_int64 before = sqlite3_memory_used();
    long mallocs = atomic_load(&g_sqlite_mallocs);
    for (int i = 0; i < 10000; i++) {
        prow r = {0};
        oms_db_param p = OMS_DB_I(i % 3);
        assert_int_equal(oms_db_query(tx, sql, &p, 1, prow_cb, &r, NULL, &err), OMS_OK);
        assert_int_equal(r.rows, 1);
        assert_int_equal(r.i, i % 3);
    }
    sqlite3_int64 after = sqlite3_memory_used();
    assert_true(after - before < 16 * 1024);
    mallocs = atomic_load(&g_sqlite_mallocs) - mallocs;
    /* Measured on 3.40: ~1 allocation per cached run (a cursor), ~40 per prepare. */
    if (mallocs >= 5 * 10000)
        fail_msg("%ld sqlite allocations for 10000 runs: statement not reused", mallocs);

    /* More distinct statements than the cache holds: old ones are evicted, memory
     * stays bounded, and an evicted statement is simply prepared again. */
    before = sqlite3_memory_used();
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 300; i++) {
            char dyn[64];
            long long v = -1;
            snprintf(dyn, sizeof(dyn), "SELECT %d + 0 * (SELECT count(*) FROM p)", i);
            assert_int_equal(oms_db_query(tx, dyn, NULL, 0, count_cb, &v, NULL, &err), OMS_OK);
            assert_int_equal(v, i);
        }
        if (round == 0)
            before = sqlite3_memory_used();
    }
    after = sqlite3_memory_used();
    assert_true(after - before < 64 * 1024);

    long long rows = 0;
    assert_int_equal(
        oms_db_query(tx, "SELECT i FROM p ORDER BY i", NULL, 0, nested_cb, tx, &rows, &err),
        OMS_OK);
    assert_int_equal(rows, 3);
    assert_int_equal(oms_db_commit(tx, &err), OMS_OK);
    oms_db_close(db);
}

static void test_bad_sql_message(void **state)
{
    oms_db *db = open_base("badsql.db");
    oms_db_tx *tx = NULL;
    oms_error err = {0};
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    assert_int_equal(oms_db_exec(tx, "SELEC 1 FROM\n    p", NULL, 0, NULL, &err), OMS_ERR);
    assert_non_null(strstr(err.msg, "near \"SELEC\": syntax error"));
    assert_non_null(strstr(err.msg, "SELEC 1 FROM p")); /* which statement, on one line */
    assert_int_equal(oms_db_query(tx, "SELECT nope FROM p", NULL, 0, NULL, NULL, NULL, &err),
                     OMS_ERR);
    assert_non_null(strstr(err.msg, "no such column: nope"));
    /* Long statements are cut in the hint, the message stays bounded. */
    char longsql[2048];
    snprintf(longsql, sizeof(longsql), "SELECT %01500d FROM missing_table", 1);
    assert_int_equal(oms_db_query(tx, longsql, NULL, 0, NULL, NULL, NULL, &err), OMS_ERR);
    assert_non_null(strstr(err.msg, "no such table: missing_table"));
    assert_non_null(strstr(err.msg, "..."));
    oms_db_rollback(tx);
    oms_db_close(db);
}

/* ---- inbox --------------------------------------------------------------------- */

static void test_inbox_claim(void **state)
{
    oms_db *db = open_base("inbox.db");
    oms_db_tx *tx = NULL;
    oms_error err = {0};

    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    assert_int_equal(oms_inbox_claim(tx, "stock.order_created", "m-1", &err), OMS_OK);
    assert_int_equal(oms_inbox_claim(tx, "stock.order_created", "m-1", &err), OMS_DUPLICATE);
    /* The same message id for another consumer is a separate claim. */
    assert_int_equal(oms_inbox_claim(tx, "kitchen.order_paid", "m-1", &err), OMS_OK);
    assert_int_equal(oms_db_commit(tx, &err), OMS_OK);

    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    assert_int_equal(oms_inbox_claim(tx, "stock.order_created", "m-1", &err), OMS_DUPLICATE);
    assert_non_null(strstr(err.msg, "m-1"));
    assert_int_equal(oms_inbox_claim(tx, "stock.order_created", "m-2", &err), OMS_OK);
    oms_db_rollback(tx);

    /* The rolled-back claim is gone: the redelivery gets processed. */
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    assert_int_equal(oms_inbox_claim(tx, "stock.order_created", "m-2", &err), OMS_OK);

    char big[202];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(oms_inbox_claim(tx, "c", big, &err), OMS_INVALID);
    big[200] = '\0';
    assert_int_equal(oms_inbox_claim(tx, "c", big, &err), OMS_OK);
    assert_int_equal(oms_inbox_claim(tx, "c", "", &err), OMS_INVALID);
    assert_int_equal(oms_inbox_claim(tx, "c", NULL, &err), OMS_INVALID);
    assert_int_equal(oms_inbox_claim(tx, "", "m", &err), OMS_INVALID);
    assert_int_equal(oms_db_commit(tx, &err), OMS_OK);
    assert_int_equal(scalar(db, "SELECT count(*) FROM inbox"), 4);
    oms_db_close(db);
}

/* ---- concurrency ----------------------------------------------------------------- */

#define THREADS 4
#define TX_PER_THREAD 500

typedef struct {
    oms_db *db;
    atomic_int failures;
    char first_error[512];
    atomic_flag have_error;
} race;

static void race_fail(race *r, const oms_error *err)
{
    atomic_fetch_add(&r->failures, 1);
    if (!atomic_flag_test_and_set(&r->have_error))
        snprintf(r->first_error, sizeof(r->first_error), "%s", err->msg);
}

/* Read, check in C, write back: only safe when transactions are serialised. */
static void *race_worker(void *arg)
{
    race *r = arg;
    for (int i = 0; i < TX_PER_THREAD; i++) {
        oms_db_tx *tx = NULL;
        oms_error err = {0};
        long long n = -1;
        if (oms_db_begin(r->db, &tx, &err) != OMS_OK) {
            race_fail(r, &err);
            continue;
        }
        if (oms_db_query(tx, "SELECT n FROM counter WHERE id = 1", NULL, 0, count_cb, &n, NULL,
                         &err) != OMS_OK) {
            race_fail(r, &err);
            oms_db_rollback(tx);
            continue;
        }
        oms_db_param p = OMS_DB_I(n + 1);
        if (oms_db_exec(tx, "UPDATE counter SET n = $1 WHERE id = 1", &p, 1, NULL, &err) !=
            OMS_OK) {
            race_fail(r, &err);
            oms_db_rollback(tx);
            continue;
        }
        if (oms_db_commit(tx, &err) != OMS_OK)
            race_fail(r, &err);
    }
    return NULL;
}

static void test_serialised_transactions(void **state)
{
    race r = {.db = open_base("race.db"), .have_error = ATOMIC_FLAG_INIT};
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race_worker, &r), 0);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    if (atomic_load(&r.failures) != 0)
        fail_msg("%d failures, first: %s", atomic_load(&r.failures), r.first_error);
    assert_int_equal(scalar(r.db, "SELECT n FROM counter WHERE id = 1"), THREADS * TX_PER_THREAD);
    oms_db_close(r.db);
}

/* Commits never checkpoint themselves below the backstop, so data can only reach the
 * database file while the connection is open if the background checkpointer copies
 * it there: ~1500 commits of 3 KB each cross SQLite's 1000-page mark, and the file
 * must then grow past 3 MB within the deadline. */
static void test_background_checkpoint(void **state)
{
    (void)state;
    oms_db *db = open_base("ckpt.db");
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/ckpt.db", g_dir);
    char *blob = malloc(3001);
    memset(blob, 'x', 3000);
    blob[3000] = '\0';
    for (int i = 0; i < 1500; i++) {
        oms_db_tx *tx = NULL;
        oms_error err = {0};
        assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
        oms_db_param p[] = {OMS_DB_S(blob)};
        exec_ok(tx, "INSERT INTO r(v) VALUES($1)", p, 1);
        assert_int_equal(oms_db_commit(tx, &err), OMS_OK);
    }
    free(blob);
    struct stat st = {0};
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        assert_int_equal(stat(path, &st), 0);
        if (st.st_size > 3 * 1024 * 1024)
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec > 20)
            fail_msg("database file still %lld bytes after 20 s: no background checkpoint",
                     (long long)st.st_size);
        struct timespec pause = {0, 20 * 1000 * 1000}; /* poll interval, not a wait for it */
        nanosleep(&pause, NULL);
    }
    assert_int_equal(scalar(db, "SELECT count(*) FROM r"), 1500);
    oms_db_close(db);
}

/* Fills the outbox and inbox in one transaction: n rows each stamped at ms. */
static void fill_outbox(oms_db *db, int from, int n, long long sent_ms, long long created_ms)
{
    oms_db_tx *tx = NULL;
    oms_error err = {0};
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    for (int i = from; i < from + n; i++) {
        char mid[32];
        snprintf(mid, sizeof(mid), "m%d", i);
        oms_db_param p[] = {OMS_DB_S(mid), OMS_DB_I(created_ms),
                            sent_ms ? OMS_DB_I(sent_ms) : OMS_DB_NULLP};
        exec_ok(tx,
                "INSERT INTO outbox(message_id, exchange, body, created_at, sent_at)"
                " VALUES($1, 'order.created', '{}', $2, $3)",
                p, 3);
    }
    assert_int_equal(oms_db_commit(tx, &err), OMS_OK);
}

static void fill_inbox(oms_db *db, int from, int n, long long ms)
{
    oms_db_tx *tx = NULL;
    oms_error err = {0};
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    for (int i = from; i < from + n; i++) {
        char mid[32];
        snprintf(mid, sizeof(mid), "i%d", i);
        oms_db_param p[] = {OMS_DB_S(mid), OMS_DB_I(ms)};
        exec_ok(tx, "INSERT INTO inbox(consumer, message_id, processed_at) VALUES('q', $1, $2)", p,
                2);
    }
    assert_int_equal(oms_db_commit(tx, &err), OMS_OK);
}

/* Old sent outbox rows and old inbox ids go, in bounded passes; unsent rows stay
 * whatever their age, recent rows stay, and a retention of 0 keeps everything. */
static void test_retention_prune(void **state)
{
    (void)state;
    oms_db_migration migs[] = {base_migs[0], oms_outbox_migration, oms_inbox_migration,
                               oms_retention_migration};
    oms_db *db = open_db("retention.db", migs, 4);
    long long now = 1800000000000LL, hour = 3600 * 1000LL, old = now - 2 * hour;
    fill_outbox(db, 0, 2500, old, old); /* sent long ago: pruned */
    fill_outbox(db, 2500, 5, 0, old);   /* never sent: kept */
    fill_outbox(db, 2505, 3, now, now); /* sent just now: kept */
    fill_inbox(db, 0, 1200, old);
    fill_inbox(db, 1200, 2, now);
    oms_error err = {0};
    oms_retention_counts c;
    oms_retention none = {0, 0};
    assert_int_equal(oms_retention_prune(db, &none, now, &c, &err), OMS_OK);
    assert_int_equal(c.outbox + c.inbox, 0);
    assert_int_equal(scalar(db, "SELECT count(*) FROM outbox"), 2508);

    oms_retention keep = {hour, hour};
    assert_int_equal(oms_retention_prune(db, &keep, now, &c, &err), OMS_OK);
    assert_int_equal(c.outbox, 2500);
    assert_int_equal(c.inbox, 1200);
    assert_int_equal(c.more, 0);
    assert_int_equal(scalar(db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL"), 5);
    assert_int_equal(scalar(db, "SELECT count(*) FROM outbox"), 8);
    assert_int_equal(scalar(db, "SELECT count(*) FROM inbox"), 2);

    /* More than one pass holds (20 chunks of 1,000): the pass says so and the next
     * one finishes. */
    fill_outbox(db, 10000, 21500, old, old);
    assert_int_equal(oms_retention_prune(db, &keep, now, &c, &err), OMS_OK);
    assert_int_equal(c.outbox, 20000);
    assert_int_equal(c.more, 1);
    assert_int_equal(oms_retention_prune(db, &keep, now, &c, &err), OMS_OK);
    assert_int_equal(c.outbox, 1500);
    assert_int_equal(c.more, 0);
    assert_int_equal(scalar(db, "SELECT count(*) FROM outbox"), 8);
    oms_db_close(db);
}

int main(void)
{
    /* Must precede the first sqlite3_open, which initialises the library. */
    if (install_counting_malloc() != 0) {
        fprintf(stderr, "cannot wrap sqlite's allocator\n");
        return 1;
    }
    oms_log_init("test_db", OMS_LOG_WARN, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrations_once),
        cmocka_unit_test(test_migration_failure_is_atomic),
        cmocka_unit_test(test_open_urls),
        cmocka_unit_test(test_creates_directory),
        cmocka_unit_test(test_params_all_types),
        cmocka_unit_test(test_placeholder_order),
        cmocka_unit_test(test_unique_conflict_then_rollback),
        cmocka_unit_test(test_rollback_discards),
        cmocka_unit_test(test_query_stop_code),
        cmocka_unit_test(test_returning),
        cmocka_unit_test(test_statement_cache),
        cmocka_unit_test(test_bad_sql_message),
        cmocka_unit_test(test_inbox_claim),
        cmocka_unit_test(test_serialised_transactions),
        cmocka_unit_test(test_background_checkpoint),
        cmocka_unit_test(test_retention_prune),
    };
    return cmocka_run_group_tests_name("db", tests, group_setup, group_teardown);
}
