/* oms_config_load, data-driven: each row sets (or unsets) one variable and its alias,
 * loads a one-entry table, and checks either the stored value or the exact error line.
 * Then the row macros against their positional form, --help, and the shared HTTP and
 * database rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oms/app.h"
#include "oms/config.h"
#include "oms/status.h"
#include "oms/util.h"

#define VAR "OMS_TEST_VAR"
#define ALIAS "OMS_TEST_ALIAS"

typedef struct {
    const char *name;
    oms_cfg_type type;
    const char *env;   /* value of VAR; NULL = unset */
    const char *alias; /* value of ALIAS; NULL = unset (only read when the row sets use_alias) */
    int use_alias;
    const char *def;
    long long min, max;
    const char *choices;
    int rc;
    const char *want; /* stored value as text (ints/bools printed), or the error line */
} cfg_case;

static const cfg_case cases[] = {
    /* STR */
    {"str from env", OMS_CFG_STR, "hello", NULL, 0, "dflt", 0, 0, NULL, OMS_OK, "hello"},
    {"str default when unset", OMS_CFG_STR, NULL, NULL, 0, "dflt", 0, 0, NULL, OMS_OK, "dflt"},
    {"str empty is a value", OMS_CFG_STR, "", NULL, 0, "dflt", 0, 0, NULL, OMS_OK, ""},
    {"str alias when unset", OMS_CFG_STR, NULL, "via-alias", 1, "dflt", 0, 0, NULL, OMS_OK,
     "via-alias"},
    {"str name wins over alias", OMS_CFG_STR, "direct", "via-alias", 1, "dflt", 0, 0, NULL, OMS_OK,
     "direct"},
    /* INT */
    {"int ok", OMS_CFG_INT, "8", NULL, 0, "4", 1, 64, NULL, OMS_OK, "8"},
    {"int default", OMS_CFG_INT, NULL, NULL, 0, "4", 1, 64, NULL, OMS_OK, "4"},
    {"int min bound", OMS_CFG_INT, "1", NULL, 0, "4", 1, 64, NULL, OMS_OK, "1"},
    {"int max bound", OMS_CFG_INT, "64", NULL, 0, "4", 1, 64, NULL, OMS_OK, "64"},
    {"int negative in range", OMS_CFG_INT, "-5", NULL, 0, "0", -10, 10, NULL, OMS_OK, "-5"},
    {"int letters", OMS_CFG_INT, "abc", NULL, 0, "4", 1, 64, NULL, OMS_INVALID,
     "config: " VAR "=\"abc\": expected an integer in 1..64"},
    {"int trailing junk", OMS_CFG_INT, "8x", NULL, 0, "4", 1, 64, NULL, OMS_INVALID,
     "config: " VAR "=\"8x\": expected an integer in 1..64"},
    {"int leading space", OMS_CFG_INT, " 8", NULL, 0, "4", 1, 64, NULL, OMS_INVALID,
     "config: " VAR "=\" 8\": expected an integer in 1..64"},
    {"int empty", OMS_CFG_INT, "", NULL, 0, "4", 1, 64, NULL, OMS_INVALID,
     "config: " VAR "=\"\": expected an integer in 1..64"},
    {"int below min", OMS_CFG_INT, "0", NULL, 0, "4", 1, 64, NULL, OMS_INVALID,
     "config: " VAR "=\"0\": expected an integer in 1..64"},
    {"int above max", OMS_CFG_INT, "65", NULL, 0, "4", 1, 64, NULL, OMS_INVALID,
     "config: " VAR "=\"65\": expected an integer in 1..64"},
    {"int overflow", OMS_CFG_INT, "99999999999999999999", NULL, 0, "4", 1, 64, NULL, OMS_INVALID,
     "config: " VAR "=\"99999999999999999999\": expected an integer in 1..64"},
    {"int bad default", OMS_CFG_INT, NULL, NULL, 0, "x", 1, 64, NULL, OMS_INVALID,
     "config: " VAR "=\"x\" (built-in default): expected an integer in 1..64"},
    {"int via alias names alias", OMS_CFG_INT, NULL, "zz", 1, "4", 1, 64, NULL, OMS_INVALID,
     "config: " ALIAS "=\"zz\": expected an integer in 1..64"},
    /* BOOL */
    {"bool true", OMS_CFG_BOOL, "true", NULL, 0, "0", 0, 0, NULL, OMS_OK, "1"},
    {"bool YES any case", OMS_CFG_BOOL, "YES", NULL, 0, "0", 0, 0, NULL, OMS_OK, "1"},
    {"bool on", OMS_CFG_BOOL, "on", NULL, 0, "0", 0, 0, NULL, OMS_OK, "1"},
    {"bool 1", OMS_CFG_BOOL, "1", NULL, 0, "0", 0, 0, NULL, OMS_OK, "1"},
    {"bool off", OMS_CFG_BOOL, "off", NULL, 0, "1", 0, 0, NULL, OMS_OK, "0"},
    {"bool False", OMS_CFG_BOOL, "False", NULL, 0, "1", 0, 0, NULL, OMS_OK, "0"},
    {"bool default", OMS_CFG_BOOL, NULL, NULL, 0, "1", 0, 0, NULL, OMS_OK, "1"},
    {"bool junk", OMS_CFG_BOOL, "maybe", NULL, 0, "0", 0, 0, NULL, OMS_INVALID,
     "config: " VAR "=\"maybe\": expected a boolean (1/0, true/false, yes/no, on/off)"},
    {"bool 2", OMS_CFG_BOOL, "2", NULL, 0, "0", 0, 0, NULL, OMS_INVALID,
     "config: " VAR "=\"2\": expected a boolean (1/0, true/false, yes/no, on/off)"},
    /* ADDR */
    {"addr ok", OMS_CFG_ADDR, "127.0.0.1:8080", NULL, 0, ":1", 0, 0, NULL, OMS_OK,
     "127.0.0.1:8080"},
    {"addr name", OMS_CFG_ADDR, "stock:50051", NULL, 0, ":1", 0, 0, NULL, OMS_OK, "stock:50051"},
    {"addr ipv6", OMS_CFG_ADDR, "[::1]:9000", NULL, 0, ":1", 0, 0, NULL, OMS_OK, "[::1]:9000"},
    {"addr max port", OMS_CFG_ADDR, "h:65535", NULL, 0, ":1", 0, 0, NULL, OMS_OK, "h:65535"},
    {"addr no port", OMS_CFG_ADDR, "localhost", NULL, 0, "h:1", 0, 0, NULL, OMS_INVALID,
     "config: " VAR "=\"localhost\": expected host:port with port 1..65535"},
    {"addr empty host", OMS_CFG_ADDR, ":8080", NULL, 0, "h:1", 0, 0, NULL, OMS_INVALID,
     "config: " VAR "=\":8080\": expected host:port with port 1..65535"},
    {"addr port 0", OMS_CFG_ADDR, "h:0", NULL, 0, "h:1", 0, 0, NULL, OMS_INVALID,
     "config: " VAR "=\"h:0\": expected host:port with port 1..65535"},
    {"addr port too big", OMS_CFG_ADDR, "h:65536", NULL, 0, "h:1", 0, 0, NULL, OMS_INVALID,
     "config: " VAR "=\"h:65536\": expected host:port with port 1..65535"},
    {"addr port letters", OMS_CFG_ADDR, "h:http", NULL, 0, "h:1", 0, 0, NULL, OMS_INVALID,
     "config: " VAR "=\"h:http\": expected host:port with port 1..65535"},
    {"addr port sign", OMS_CFG_ADDR, "h:+80", NULL, 0, "h:1", 0, 0, NULL, OMS_INVALID,
     "config: " VAR "=\"h:+80\": expected host:port with port 1..65535"},
    {"addr empty", OMS_CFG_ADDR, "", NULL, 0, "h:1", 0, 0, NULL, OMS_INVALID,
     "config: " VAR "=\"\": expected host:port with port 1..65535"},
    /* ENUM */
    {"enum first", OMS_CFG_ENUM, "static", NULL, 0, "static", 0, 0, "static|etcd", OMS_OK,
     "static"},
    {"enum last", OMS_CFG_ENUM, "etcd", NULL, 0, "static", 0, 0, "static|etcd", OMS_OK, "etcd"},
    {"enum default", OMS_CFG_ENUM, NULL, NULL, 0, "static", 0, 0, "static|etcd", OMS_OK, "static"},
    {"enum prefix is not a match", OMS_CFG_ENUM, "stat", NULL, 0, "static", 0, 0, "static|etcd",
     OMS_INVALID, "config: " VAR "=\"stat\": expected one of static|etcd"},
    {"enum case matters", OMS_CFG_ENUM, "ETCD", NULL, 0, "static", 0, 0, "static|etcd", OMS_INVALID,
     "config: " VAR "=\"ETCD\": expected one of static|etcd"},
    {"enum empty", OMS_CFG_ENUM, "", NULL, 0, "static", 0, 0, "static|etcd", OMS_INVALID,
     "config: " VAR "=\"\": expected one of static|etcd"},
    /* URL */
    {"url http", OMS_CFG_URL, "http://jaeger:4318", NULL, 0, "", 0, 0, NULL, OMS_OK,
     "http://jaeger:4318"},
    {"url https path", OMS_CFG_URL, "https://x.example/v1", NULL, 0, "", 0, 0, NULL, OMS_OK,
     "https://x.example/v1"},
    {"url empty", OMS_CFG_URL, "", NULL, 0, "http://d:1", 0, 0, NULL, OMS_OK, ""},
    {"url default empty", OMS_CFG_URL, NULL, NULL, 0, "", 0, 0, NULL, OMS_OK, ""},
    {"url via alias", OMS_CFG_URL, NULL, "http://a:1", 1, "", 0, 0, NULL, OMS_OK, "http://a:1"},
    {"url no scheme", OMS_CFG_URL, "jaeger:4318", NULL, 0, "", 0, 0, NULL, OMS_INVALID,
     "config: " VAR "=\"jaeger:4318\": expected empty or a URL starting with http:// or https://"},
    {"url ftp", OMS_CFG_URL, "ftp://x", NULL, 0, "", 0, 0, NULL, OMS_INVALID,
     "config: " VAR "=\"ftp://x\": expected empty or a URL starting with http:// or https://"},
    {"url scheme only", OMS_CFG_URL, "http://", NULL, 0, "", 0, 0, NULL, OMS_INVALID,
     "config: " VAR "=\"http://\": expected empty or a URL starting with http:// or https://"},
    /* A value with quotes and a newline stays on one line, escaped. */
    {"error line escapes value", OMS_CFG_INT, "a\"b\nc", NULL, 0, "4", 1, 64, NULL, OMS_INVALID,
     "config: " VAR "=\"a\\\"b\\x0ac\": expected an integer in 1..64"},
};

static void set_or_unset(const char *name, const char *value)
{
    int rc = value ? setenv(name, value, 1) : unsetenv(name);
    assert_int_equal(rc, 0);
}

static void test_config_table(void **state)
{
    for (size_t i = 0; i < OMS_NELEM(cases); i++) {
        const cfg_case *c = &cases[i];
        set_or_unset(VAR, c->env);
        set_or_unset(ALIAS, c->alias);
        char *s = (char *)"untouched";
        long long n = -777;
        int b = -777;
        void *target = c->type == OMS_CFG_INT    ? (void *)&n
                       : c->type == OMS_CFG_BOOL ? (void *)&b
                                                 : (void *)&s;
        oms_cfg_def def = {VAR,    c->type,    c->def, c->min,
                           c->max, c->choices, target, c->use_alias ? ALIAS : NULL,
                           "test"};
        char err[256] = "junk";
        int rc = oms_config_load(&def, 1, err, sizeof(err));
        if (rc != c->rc)
            fail_msg("case \"%s\": rc %d, want %d (err: %s)", c->name, rc, c->rc, err);
        if (rc != OMS_OK) {
            if (strcmp(err, c->want) != 0)
                fail_msg("case \"%s\":\n  got  %s\n  want %s", c->name, err, c->want);
            if (target == (void *)&s && s != NULL)
                fail_msg("case \"%s\": string target not NULL after failure", c->name);
            continue;
        }
        if (err[0] != '\0')
            fail_msg("case \"%s\": err not cleared on success", c->name);
        char got[256];
        if (c->type == OMS_CFG_INT)
            snprintf(got, sizeof(got), "%lld", n);
        else if (c->type == OMS_CFG_BOOL)
            snprintf(got, sizeof(got), "%d", b);
        else
            snprintf(got, sizeof(got), "%s", s ? s : "(null)");
        if (strcmp(got, c->want) != 0)
            fail_msg("case \"%s\": got \"%s\", want \"%s\"", c->name, got, c->want);
        oms_config_free(&def, 1);
        if (target == (void *)&s && s != NULL)
            fail_msg("case \"%s\": oms_config_free left the target set", c->name);
    }
    unsetenv(VAR);
    unsetenv(ALIAS);
}

/* A failure part-way frees what earlier entries stored and NULLs every string target. */
static void test_failure_frees_earlier(void **state)
{
    char *a = NULL, *c = NULL;
    long long n = 0;
    oms_cfg_def defs[] = {
        OMS_CFG_STR_ROW("OMS_TEST_A", "first", &a, "a"),
        OMS_CFG_INT_ROW("OMS_TEST_N", "3", 1, 2, &n, "n"),
        OMS_CFG_STR_ROW("OMS_TEST_C", "third", &c, "c"),
    };
    unsetenv("OMS_TEST_A");
    unsetenv("OMS_TEST_N");
    unsetenv("OMS_TEST_C");
    char err[200];
    assert_int_equal(oms_config_load(defs, 3, err, sizeof(err)), OMS_INVALID);
    assert_string_equal(err, "config: OMS_TEST_N=\"3\" (built-in default): expected an integer "
                             "in 1..2");
    assert_null(a);
    assert_null(c);
    oms_config_free(defs, 3); /* still safe */
}

/* Several entries load together; NULL target validates only. */
static void test_multi_and_null_target(void **state)
{
    char *addr = NULL;
    long long n = 0;
    oms_cfg_def defs[] = {
        OMS_CFG_ADDR_ROW("OMS_TEST_ADDR", "0.0.0.0:8080", &addr, "listen"),
        OMS_CFG_INT_ROW("OMS_TEST_N", "2", 1, 64, &n, "threads"),
        OMS_CFG_INT_ROW("OMS_TEST_V", "5", 1, 9, NULL, "validated only"),
    };
    setenv("OMS_TEST_N", "16", 1);
    unsetenv("OMS_TEST_ADDR");
    unsetenv("OMS_TEST_V");
    char err[200];
    assert_int_equal(oms_config_load(defs, 3, err, sizeof(err)), OMS_OK);
    assert_string_equal(addr, "0.0.0.0:8080");
    assert_int_equal(n, 16);
    oms_config_free(defs, 3);
    assert_null(addr);
    unsetenv("OMS_TEST_N");
}

/* --help text, data-driven: each row is a small table and the exact text it prints.
 * Columns are as wide as the longest name and default (at least "NAME" and
 * "DEFAULT"); an empty default shows as ""; INT rows add their bounds, ENUM rows their
 * choices, and an alias comes last. */
typedef struct {
    const char *name;
    oms_cfg_def defs[4];
    size_t n;
    const char *want;
} help_case;

static const help_case help_cases[] = {
    {"no rows: the header alone", {{0}}, 0, "NAME  DEFAULT  DESCRIPTION\n"},
    {"addr, and url with an empty default and an alias",
     {
         OMS_CFG_ADDR_ROW("HTTP_ADDR", "127.0.0.1:8080", NULL, "listen address"),
         OMS_CFG_ROW(OMS_CFG_URL, "OTEL_EXPORTER_OTLP_ENDPOINT", "", 0, 0, NULL, NULL,
                     "JAEGER_ADDR", "OTLP/HTTP collector"),
     },
     2,
     "NAME                         DEFAULT         DESCRIPTION\n"
     "HTTP_ADDR                    127.0.0.1:8080  listen address\n"
     "OTEL_EXPORTER_OTLP_ENDPOINT  \"\"              OTLP/HTTP collector [alias: JAEGER_ADDR]\n"},
    {"int bounds before the alias, enum choices, bool, NULL default",
     {
         OMS_CFG_ROW(OMS_CFG_INT, "WORKERS", "4", 1, 64, NULL, NULL, "THREADS", "consumer threads"),
         OMS_CFG_ENUM_ROW("DISCOVERY", "static", "static|etcd", NULL, "service discovery"),
         OMS_CFG_BOOL_ROW("DEBUG", "0", NULL, "log every request"),
         OMS_CFG_STR_ROW("NOTE", NULL, NULL, "free text"),
     },
     4,
     "NAME       DEFAULT  DESCRIPTION\n"
     "WORKERS    4        consumer threads (1..64) [alias: THREADS]\n"
     "DISCOVERY  static   service discovery (static|etcd)\n"
     "DEBUG      0        log every request\n"
     "NOTE       \"\"       free text\n"},
};

static void test_print_help(void **state)
{
    for (size_t i = 0; i < OMS_NELEM(help_cases); i++) {
        const help_case *c = &help_cases[i];
        char *got = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&got, &len);
        assert_non_null(out);
        oms_config_print_help_to(out, c->defs, c->n);
        assert_int_equal(fclose(out), 0);
        if (strcmp(got, c->want) != 0)
            fail_msg("case \"%s\":\n--- got\n%s--- want\n%s", c->name, got, c->want);
        free(got);
    }
}

/* Each row macro fills exactly the fields of its type and leaves the others zero, so a
 * one-line row means what the nine positional fields meant. */
static void test_row_macros(void **state)
{
    static long long n;
    static char *str;
    static int b;
    const struct {
        const char *what;
        oms_cfg_def got, want;
    } rows[] = {
        {"STR",
         OMS_CFG_STR_ROW("S", "d", &str, "h"),
         {"S", OMS_CFG_STR, "d", 0, 0, NULL, &str, NULL, "h"}},
        {"INT",
         OMS_CFG_INT_ROW("I", "4", 1, 64, &n, "h"),
         {"I", OMS_CFG_INT, "4", 1, 64, NULL, &n, NULL, "h"}},
        {"BOOL",
         OMS_CFG_BOOL_ROW("B", "false", &b, "h"),
         {"B", OMS_CFG_BOOL, "false", 0, 0, NULL, &b, NULL, "h"}},
        {"ADDR",
         OMS_CFG_ADDR_ROW("A", "h:1", &str, "h"),
         {"A", OMS_CFG_ADDR, "h:1", 0, 0, NULL, &str, NULL, "h"}},
        {"URL",
         OMS_CFG_URL_ROW("U", "", &str, "h"),
         {"U", OMS_CFG_URL, "", 0, 0, NULL, &str, NULL, "h"}},
        {"ENUM",
         OMS_CFG_ENUM_ROW("E", "a", "a|b", &str, "h"),
         {"E", OMS_CFG_ENUM, "a", 0, 0, "a|b", &str, NULL, "h"}},
        {"STR alias",
         OMS_CFG_STR_ALIAS_ROW("S", "OLD", "", &str, "h"),
         {"S", OMS_CFG_STR, "", 0, 0, NULL, &str, "OLD", "h"}},
    };
    for (size_t i = 0; i < OMS_NELEM(rows); i++) {
        const oms_cfg_def *g = &rows[i].got, *w = &rows[i].want;
        if (strcmp(g->name, w->name) != 0 || g->type != w->type || strcmp(g->def, w->def) != 0 ||
            g->min != w->min || g->max != w->max || g->target != w->target ||
            strcmp(g->help, w->help) != 0 || (g->choices == NULL) != (w->choices == NULL) ||
            (g->choices && strcmp(g->choices, w->choices) != 0) ||
            (g->alias == NULL) != (w->alias == NULL) ||
            (g->alias && strcmp(g->alias, w->alias) != 0))
            fail_msg("%s row macro differs from its positional form", rows[i].what);
    }
}

/* The shared rows that replaced getenv in http.c and db.c: their defaults load into the
 * config structs, and a bad value is the same one-line error as any other row. */
static void test_http_and_db_rows(void **state)
{
    oms_app_common c;
    memset(&c, 0, sizeof(c));
    const oms_cfg_def defs[] = {OMS_APP_HTTP_CONFIG(&c), OMS_APP_DB_CONFIG(&c)};
    const size_t n = OMS_NELEM(defs);
    const char *const vars[] = {"HTTP_TIMEOUT_S",        "HTTP_CONN_LIMIT",   "HTTP_PER_IP_LIMIT",
                                "HTTP_MAX_IN_FLIGHT",    "HTTP_MAX_QUEUE_MS", "HTTP_MAX_STREAMS",
                                "HTTP_SSE_HEARTBEAT_MS", "DB_POOL_SIZE",      "DB_POOL_WAIT_MS"};
    assert_int_equal(n, OMS_NELEM(vars));
    for (size_t i = 0; i < n; i++)
        assert_int_equal(unsetenv(vars[i]), 0);
    char err[256];
    assert_int_equal(oms_config_load(defs, n, err, sizeof(err)), OMS_OK);
    assert_int_equal(c.http.timeout_s, 30);
    assert_int_equal(c.http.conn_limit, 512);
    assert_int_equal(c.http.per_ip_limit, 128);
    assert_int_equal(c.http.max_in_flight, 64);
    assert_int_equal(c.http.max_queue_ms, 10);
    assert_int_equal(c.http.max_streams, 2000);
    assert_int_equal(c.http.heartbeat_ms, 15000);
    assert_int_equal(c.db_pool.size, 8);
    assert_int_equal(c.db_pool.wait_ms, 5000);

    assert_int_equal(setenv("HTTP_PER_IP_LIMIT", "0", 1), 0); /* 0: no per-address limit */
    assert_int_equal(oms_config_load(defs, n, err, sizeof(err)), OMS_OK);
    assert_int_equal(c.http.per_ip_limit, 0);
    assert_int_equal(setenv("HTTP_PER_IP_LIMIT", "-1", 1), 0);
    assert_int_equal(oms_config_load(defs, n, err, sizeof(err)), OMS_INVALID);
    assert_string_equal(err, "config: HTTP_PER_IP_LIMIT=\"-1\": expected an integer in 0..100000");
    assert_int_equal(unsetenv("HTTP_PER_IP_LIMIT"), 0);
    assert_int_equal(setenv("DB_POOL_SIZE", "0", 1), 0);
    assert_int_equal(oms_config_load(defs, n, err, sizeof(err)), OMS_INVALID);
    assert_string_equal(err, "config: DB_POOL_SIZE=\"0\": expected an integer in 1..256");
    assert_int_equal(unsetenv("DB_POOL_SIZE"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_table),
        cmocka_unit_test(test_failure_frees_earlier),
        cmocka_unit_test(test_multi_and_null_target),
        cmocka_unit_test(test_print_help),
        cmocka_unit_test(test_row_macros),
        cmocka_unit_test(test_http_and_db_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
