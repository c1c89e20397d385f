/* The PostgreSQL driver (common/db/postgres.c) against a real server this test starts
 * itself with scripts/postgres.sh: a world-traversable temp dir, a private port, and
 * one fresh database per test. Skipped (not failed) when the server binaries are not
 * installed, so a machine without PostgreSQL still runs the rest of the unit suite. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "oms/db.h"
#include "oms/outbox.h"
#include "oms/status.h"
#include "oms/util.h"

static char g_top[] = "/tmp/oms-test-pg-XXXXXX";
static char g_script[1024];
static int g_port;
static int g_started;
static int g_dbs;

/* The repository root from this file's path (CMake passes absolute source paths). */
static void find_script(void)
{
    const char *env = getenv("OMS_SOURCE_DIR");
    if (env && *env) {
        snprintf(g_script, sizeof(g_script), "%s/scripts/postgres.sh", env);
        return;
    }
    snprintf(g_script, sizeof(g_script), "%s", __FILE__);
    char *p = strstr(g_script, "/tests/unit/");
    if (p)
        snprintf(p, sizeof(g_script) - (size_t)(p - g_script), "/scripts/postgres.sh");
}

/* A port the kernel hands out now (closed again for the server). */
static int pick_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int run(const char *cmd)
{
    int rc = system(cmd);
    return rc == 0 ? 0 : -1;
}

static int group_setup(void **state)
{
    if (access("/usr/lib/postgresql/15/bin/pg_ctl", X_OK) != 0)
        return 0; /* tests skip themselves */
    find_script();
    if (!mkdtemp(g_top) || chmod(g_top, 0755) != 0)
        return -1;
    g_port = pick_port();
    if (g_port <= 0)
        return -1;
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "PG_NO_FSYNC=1 %s start %s/pg %d >/dev/null", g_script, g_top,
             g_port);
    if (run(cmd) != 0)
        return -1;
    g_started = 1;
    return 0;
}

static int group_teardown(void **state)
{
    char cmd[2048];
    if (g_started) {
        snprintf(cmd, sizeof(cmd), "%s stop %s/pg >/dev/null", g_script, g_top);
        (void)run(cmd);
    }
    if (g_top[sizeof(g_top) - 7] != 'X') {
        snprintf(cmd, sizeof(cmd), "rm -rf %s", g_top);
        (void)run(cmd);
    }
    return 0;
}

static const oms_db_migration migs[] = {
    {"t_v1",
     "CREATE TABLE p(i INTEGER, s TEXT, n TEXT);"
     "CREATE TABLE u(k TEXT PRIMARY KEY, other TEXT UNIQUE);"
     "CREATE TABLE r(id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);"
     "CREATE TABLE counter(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
     "INSERT INTO counter VALUES(1, 0);",
     /* Same tables; only the auto-increment spelling differs. */
     "CREATE TABLE p(i INTEGER, s TEXT, n TEXT);"
     "CREATE TABLE u(k TEXT PRIMARY KEY, other TEXT UNIQUE);"
     "CREATE TABLE r(id BIGSERIAL PRIMARY KEY, v TEXT);"
     "CREATE TABLE counter(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
     "INSERT INTO counter VALUES(1, 0);"},
};

/* A fresh database in the test server; its url in out. */
static void new_db_url(char *out, size_t n)
{
    char cmd[2048];
    char name[32];
    snprintf(name, sizeof(name), "t%d_%d", (int)getpid(), ++g_dbs);
    snprintf(cmd, sizeof(cmd), "%s createdb %s/pg %d %s", g_script, g_top, g_port, name);
    assert_int_equal(run(cmd), 0);
    snprintf(out, n, "postgres://postgres@127.0.0.1:%d/%s", g_port, name);
}

static oms_db *open_db(void)
{
    char url[256];
    new_db_url(url, sizeof(url));
    oms_db *db = NULL;
    oms_error err;
    oms_error_clear(&err);
    int rc = oms_db_open(&db, url, migs, 1, &err);
    if (rc != OMS_OK)
        fail_msg("open %s: %s", url, err.msg);
    assert_string_equal(oms_db_driver_name(db), "postgres");
    assert_int_equal(oms_db_locks_rows(db), 1);
    return db;
}

#define NEED_SERVER()                                                                              \
    do {                                                                                           \
        if (!g_started)                                                                            \
            skip();                                                                                \
    } while (0)

static int row_p(const oms_db_row *row, void *ud)
{
    char *out = ud;
    snprintf(out, 128, "%lld|%s|%s|%d", oms_db_row_int(row, 0),
             oms_db_row_text(row, 1) ? oms_db_row_text(row, 1) : "NULL",
             oms_db_row_isnull(row, 2) ? "NULL" : oms_db_row_text(row, 2), oms_db_row_columns(row));
    return OMS_OK;
}

static int id_row(const oms_db_row *row, void *ud)
{
    *(long long *)ud = oms_db_row_int(row, 0);
    return OMS_OK;
}

static int stop_row(const oms_db_row *row, void *ud)
{
    return OMS_NOTFOUND;
}

static void test_params_and_types(void **state)
{
    NEED_SERVER();
    oms_db *db = open_db();
    oms_db_tx *tx = NULL;
    oms_error err;
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    /* $2 before $1 in the text and $1 used twice: placeholders are positional. */
    oms_db_param p[3] = {OMS_DB_I(2000000000LL), OMS_DB_S("it's"), OMS_DB_NULLP};
    long long changes = 0;
    assert_int_equal(
        oms_db_exec(tx, "INSERT INTO p(s, i, n) VALUES($2, $1, $3)", p, 3, &changes, &err), OMS_OK);
    assert_int_equal(changes, 1);
    char out[128] = "";
    long long n = 0;
    oms_db_param q = OMS_DB_S("it's");
    assert_int_equal(
        oms_db_query(tx, "SELECT i, s, n FROM p WHERE s = $1", &q, 1, row_p, out, &n, &err),
        OMS_OK);
    assert_int_equal(n, 1);
    assert_string_equal(out, "2000000000|it's|NULL|3");
    /* Integers past 2^31 travel as text too (BIGINT arithmetic on the server). */
    oms_db_param big = OMS_DB_I(9000000000LL);
    long long twice = 0;
    assert_int_equal(oms_db_query(tx, "SELECT $1::bigint * 2", &big, 1, id_row, &twice, NULL, &err),
                     OMS_OK);
    assert_int_equal(twice, 18000000000LL);
    assert_int_equal(oms_db_commit(tx, &err), OMS_OK);
    oms_db_close(db);
}

static void test_unique_violation_is_conflict(void **state)
{
    NEED_SERVER();
    oms_db *db = open_db();
    oms_db_tx *tx = NULL;
    oms_error err;
    oms_db_param p[2] = {OMS_DB_S("k1"), OMS_DB_S("o1")};
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    assert_int_equal(oms_db_exec(tx, "INSERT INTO u(k, other) VALUES($1, $2)", p, 2, NULL, &err),
                     OMS_OK);
    assert_int_equal(oms_db_commit(tx, &err), OMS_OK);

    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    oms_error_clear(&err);
    int rc = oms_db_exec(tx, "INSERT INTO u(k, other) VALUES($1, $2)", p, 2, NULL, &err);
    assert_int_equal(rc, OMS_CONFLICT);
    assert_int_equal(err.code, OMS_CONFLICT);
    assert_non_null(strstr(err.msg, "23505"));
    /* The transaction is aborted now; COMMIT must not claim success. */
    assert_int_not_equal(oms_db_commit(tx, &err), OMS_OK);

    /* The connection is fine for the next transaction. */
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    long long n = 0;
    assert_int_equal(oms_db_query(tx, "SELECT k FROM u", NULL, 0, NULL, NULL, &n, &err), OMS_OK);
    assert_int_equal(n, 1);
    oms_db_rollback(tx);

    /* A syntax error is a plain error, with the statement excerpt. */
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    rc = oms_db_exec(tx, "INSERT INTO nope VALUES($1)", p, 1, NULL, &err);
    assert_int_equal(rc, OMS_ERR);
    assert_non_null(strstr(err.msg, "INSERT INTO nope"));
    oms_db_rollback(tx);
    oms_db_close(db);
}

static void test_returning_and_rollback(void **state)
{
    NEED_SERVER();
    oms_db *db = open_db();
    oms_db_tx *tx = NULL;
    oms_error err;
    long long id1 = 0, id2 = 0, n = 0;
    oms_db_param v = OMS_DB_S("a");
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    assert_int_equal(
        oms_db_query(tx, "INSERT INTO r(v) VALUES($1) RETURNING id", &v, 1, id_row, &id1, &n, &err),
        OMS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(
        oms_db_query(tx, "INSERT INTO r(v) VALUES($1) RETURNING id", &v, 1, id_row, &id2, &n, &err),
        OMS_OK);
    assert_true(id1 > 0 && id2 == id1 + 1);
    oms_db_rollback(tx);

    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    assert_int_equal(oms_db_query(tx, "SELECT id FROM r", NULL, 0, NULL, NULL, &n, &err), OMS_OK);
    assert_int_equal(n, 0); /* rolled back */
    assert_int_equal(oms_db_query(tx, "SELECT 1 UNION ALL SELECT 2", NULL, 0, NULL, NULL, &n, &err),
                     OMS_OK);
    assert_int_equal(n, 2);
    /* A callback's own stop code comes back untouched. */
    assert_int_equal(
        oms_db_query(tx, "SELECT 1 UNION ALL SELECT 2", NULL, 0, stop_row, NULL, &n, &err),
        OMS_NOTFOUND);
    assert_int_equal(n, 1);
    oms_db_rollback(tx);
    oms_db_close(db);
}

typedef struct inc_ctx {
    oms_db *db;
    int loops;
    int failures;
} inc_ctx;

/* Read-check-update the way the services do it: a guarded UPDATE whose changes count
 * says whether it won, retried on OMS_AGAIN. */
static void *incrementer(void *arg)
{
    inc_ctx *c = arg;
    for (int i = 0; i < c->loops; i++) {
        for (int attempt = 0;; attempt++) {
            oms_db_tx *tx = NULL;
            oms_error err;
            long long cur = 0, changes = 0;
            int rc = oms_db_begin(c->db, &tx, &err);
            if (rc == OMS_OK)
                rc = oms_db_query(tx, "SELECT n FROM counter WHERE id = 1", NULL, 0, id_row, &cur,
                                  NULL, &err);
            oms_db_param p[2] = {OMS_DB_I(cur + 1), OMS_DB_I(cur)};
            if (rc == OMS_OK)
                rc = oms_db_exec(tx, "UPDATE counter SET n = $1 WHERE id = 1 AND n = $2", p, 2,
                                 &changes, &err);
            if (rc == OMS_OK && changes == 1) {
                rc = oms_db_commit(tx, &err);
                if (rc == OMS_OK)
                    break;
                continue;
            }
            if (tx)
                oms_db_rollback(tx); /* lost the race (or AGAIN): read again */
            if (rc != OMS_OK && rc != OMS_AGAIN) {
                c->failures++;
                break;
            }
            if (attempt > 10000) {
                c->failures++;
                break;
            }
        }
    }
    return NULL;
}

static void test_concurrent_increments(void **state)
{
    NEED_SERVER();
    oms_db *db = open_db();
    enum { THREADS = 4, LOOPS = 100 };
    pthread_t th[THREADS];
    inc_ctx ctx[THREADS];
    for (int i = 0; i < THREADS; i++) {
        ctx[i] = (inc_ctx){db, LOOPS, 0};
        assert_int_equal(pthread_create(&th[i], NULL, incrementer, &ctx[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(ctx[i].failures, 0);
    }
    oms_db_tx *tx = NULL;
    oms_error err;
    long long n = 0;
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    assert_int_equal(
        oms_db_query(tx, "SELECT n FROM counter WHERE id = 1", NULL, 0, id_row, &n, NULL, &err),
        OMS_OK);
    oms_db_rollback(tx);
    assert_int_equal(n, THREADS * LOOPS);
    oms_db_close(db);
}

static void test_migrations_once_and_skip_locked(void **state)
{
    NEED_SERVER();
    char url[256];
    new_db_url(url, sizeof(url));
    oms_db *a = NULL, *b = NULL;
    oms_error err;
    oms_db_migration both[2] = {migs[0], oms_outbox_migration};
    /* Two "instances" migrate the same database: the second finds everything applied. */
    assert_int_equal(oms_db_open(&a, url, both, 2, &err), OMS_OK);
    assert_int_equal(oms_db_open(&b, url, both, 2, &err), OMS_OK);

    oms_db_tx *tx = NULL, *tx2 = NULL;
    assert_int_equal(oms_db_begin(a, &tx, &err), OMS_OK);
    assert_int_equal(oms_outbox_add(tx, "order.created", "{}", NULL, &err), OMS_OK);
    assert_int_equal(oms_outbox_add(tx, "order.created", "{}", NULL, &err), OMS_OK);
    assert_int_equal(oms_db_commit(tx, &err), OMS_OK);

    /* One relay claims the oldest row; the other skips it and gets the next one. */
    long long id1 = 0, id2 = 0, n1 = 0, n2 = 0;
    const char *claim = "SELECT id FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT 1"
                        " FOR UPDATE SKIP LOCKED";
    assert_int_equal(oms_db_begin(a, &tx, &err), OMS_OK);
    assert_int_equal(oms_db_query(tx, claim, NULL, 0, id_row, &id1, &n1, &err), OMS_OK);
    assert_int_equal(oms_db_begin(b, &tx2, &err), OMS_OK);
    assert_int_equal(oms_db_query(tx2, claim, NULL, 0, id_row, &id2, &n2, &err), OMS_OK);
    assert_int_equal(n1, 1);
    assert_int_equal(n2, 1);
    assert_int_not_equal(id1, id2);
    oms_db_rollback(tx2);
    oms_db_rollback(tx);

    long long applied = 0;
    assert_int_equal(oms_db_begin(b, &tx, &err), OMS_OK);
    assert_int_equal(oms_db_query(tx, "SELECT count(*) FROM schema_migrations", NULL, 0, id_row,
                                  &applied, NULL, &err),
                     OMS_OK);
    oms_db_rollback(tx);
    assert_int_equal(applied, 2);
    oms_db_close(b);
    oms_db_close(a);
}

static void test_bad_url_and_lost_connection(void **state)
{
    NEED_SERVER();
    oms_db *db = NULL;
    oms_error err;
    oms_error_clear(&err);
    /* Nothing listens on port 1: an error naming the cause, no crash, no leak. */
    int rc = oms_db_open(&db, "postgres://postgres@127.0.0.1:1/x", migs, 1, &err);
    assert_int_not_equal(rc, OMS_OK);
    assert_null(db);
    assert_non_null(strstr(err.msg, "postgres connect"));

    /* A session killed under us: OMS_AGAIN now, a working connection next time. */
    db = open_db();
    oms_db_tx *tx = NULL;
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    rc = oms_db_exec(tx,
                     "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE pid = pg_backend_pid()",
                     NULL, 0, NULL, &err);
    assert_int_equal(rc, OMS_AGAIN);
    oms_db_rollback(tx);
    for (int i = 0; i < 8; i++) { /* every pooled connection, the broken one included */
        assert_int_equal(oms_db_ping(db, &err), OMS_OK);
    }
    oms_db_close(db);
}

static int text_row(const oms_db_row *row, void *ud)
{
    snprintf(ud, 64, "%s", oms_db_row_text(row, 0) ? oms_db_row_text(row, 0) : "NULL");
    return OMS_OK;
}

/* The first row's first column of sql, run in a transaction of its own. */
static void query_text(oms_db *db, const char *sql, char out[64])
{
    oms_db_tx *tx = NULL;
    oms_error err;
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    out[0] = '\0';
    if (oms_db_query(tx, sql, NULL, 0, text_row, out, NULL, &err) != OMS_OK)
        fail_msg("%s: %s", sql, err.msg);
    oms_db_rollback(tx);
}

/* Every pooled connection carries a statement timeout; a URL that sets its own options
 * (or keepalives) wins over the defaults. */
static void test_statement_timeout_and_url_overrides(void **state)
{
    NEED_SERVER();
    oms_db *db = open_db();
    char v[64];
    query_text(db, "SHOW statement_timeout", v);
    assert_string_equal(v, "10s");
    /* ... and it ends a statement that outlives it (here lowered for the test). */
    oms_db_tx *tx = NULL;
    oms_error err;
    assert_int_equal(oms_db_begin(db, &tx, &err), OMS_OK);
    assert_int_equal(oms_db_exec(tx, "SET LOCAL statement_timeout = 50", NULL, 0, NULL, &err),
                     OMS_OK);
    assert_int_equal(oms_db_exec(tx, "SELECT pg_sleep(30)", NULL, 0, NULL, &err), OMS_ERR);
    assert_non_null(strstr(err.msg, "57014"));
    oms_db_rollback(tx);
    oms_db_close(db);

    char url[384], base[256];
    new_db_url(base, sizeof(base));
    snprintf(url, sizeof(url),
             "%s?options=-c%%20statement_timeout%%3D1234&keepalives_idle=60&keepalives_count=5",
             base);
    db = NULL;
    if (oms_db_open(&db, url, migs, 1, &err) != OMS_OK)
        fail_msg("open %s: %s", url, err.msg);
    query_text(db, "SHOW statement_timeout", v);
    assert_string_equal(v, "1234ms");
    oms_db_close(db);
}

typedef struct begin_ctx {
    oms_db *db;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done; /* under mu */
    int rc;
    oms_error err;
} begin_ctx;

static void *begin_in_thread(void *arg)
{
    begin_ctx *c = arg;
    oms_db_tx *tx = NULL;
    oms_error err;
    oms_error_clear(&err);
    int rc = oms_db_begin(c->db, &tx, &err);
    if (rc == OMS_OK)
        oms_db_rollback(tx);
    oms_mutex_lock(&c->mu);
    c->rc = rc;
    c->err = err;
    c->done = 1;
    oms_cond_signal(&c->cv);
    oms_mutex_unlock(&c->mu);
    return NULL;
}

/* A pool of one whose connection sits in an open transaction: the next begin gives up
 * with OMS_AGAIN after the pool wait instead of blocking for ever. */
static void test_pool_wait_is_bounded(void **state)
{
    NEED_SERVER();
    oms_db_set_pool(&(oms_db_pool_config){.size = 1, .wait_ms = 1000});
    oms_db *db = open_db();
    oms_db_set_pool(NULL);

    oms_db_tx *held = NULL;
    oms_error err;
    assert_int_equal(oms_db_begin(db, &held, &err), OMS_OK);
    assert_int_equal(oms_db_exec(held, "INSERT INTO p(i) VALUES(1)", NULL, 0, NULL, &err), OMS_OK);

    begin_ctx c = {.db = db, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, begin_in_thread, &c), 0);
    /* Generous deadline: only "it returned at all" is asserted, never how fast. */
    struct timespec until;
    assert_int_equal(oms_deadline_after_ns(CLOCK_REALTIME, 60LL * 1000000000LL, &until), OMS_OK);
    oms_mutex_lock(&c.mu);
    while (!c.done && oms_cond_timedwait(&c.cv, &c.mu, &until) == 0) {
    }
    int returned = c.done;
    oms_mutex_unlock(&c.mu);
    oms_db_rollback(held); /* lets a still-blocked begin finish, so the join below ends */
    assert_int_equal(pthread_join(th, NULL), 0);
    if (!returned)
        fail_msg("oms_db_begin on an exhausted pool did not return within 60 s");
    assert_int_equal(c.rc, OMS_AGAIN);
    assert_non_null(
        strstr(c.err.msg, "database pool exhausted: no connection free after 1 s (all 1 in use"));
    assert_int_equal(oms_status_to_http(c.rc), 503);

    /* The connection is back: the pool works as before. */
    assert_int_equal(oms_db_ping(db, &err), OMS_OK);
    oms_db_close(db);
}

/* libpq quotes the whole URI in some parse errors; the error we return must not carry
 * the password. Needs no server: the URI is refused before any connection. */
static void test_connect_error_hides_password(void **state)
{
    oms_db *db = NULL;
    oms_error err;
    oms_error_clear(&err);
    int rc = oms_db_open(&db, "postgres://app:s3cret@[::1/orders", migs, 1, &err);
    assert_int_not_equal(rc, OMS_OK);
    assert_null(db);
    assert_non_null(strstr(err.msg, "postgres connect"));
    assert_null(strstr(err.msg, "s3cret"));
    assert_non_null(strstr(err.msg, "app:***@"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_and_types),
        cmocka_unit_test(test_unique_violation_is_conflict),
        cmocka_unit_test(test_returning_and_rollback),
        cmocka_unit_test(test_concurrent_increments),
        cmocka_unit_test(test_migrations_once_and_skip_locked),
        cmocka_unit_test(test_bad_url_and_lost_connection),
        cmocka_unit_test(test_statement_timeout_and_url_overrides),
        cmocka_unit_test(test_pool_wait_is_bounded),
        cmocka_unit_test(test_connect_error_hides_password),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
