/* Metrics registry: exact Prometheus text for a known sequence of updates, label
 * escaping, and (when promtool is installed) a full render that promtool accepts.
 * The registry is process-wide, so each test uses its own metric names and compares
 * only its own families' blocks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "oms/metrics.h"
#include "oms/util.h"

/* The block of one family in render output: from its "# HELP name " line up to the
 * next "# HELP" (or the end). Caller frees. */
static char *family_block(const char *name)
{
    size_t len = 0;
    char *all = oms_metrics_render(&len);
    assert_non_null(all);
    assert_int_equal(strlen(all), len);
    char head[256];
    snprintf(head, sizeof(head), "# HELP %s ", name);
    char *start = strstr(all, head);
    char *out = NULL;
    if (start) {
        char *end = strstr(start + 1, "# HELP ");
        size_t n = end ? (size_t)(end - start) : strlen(start);
        out = strndup(start, n);
    }
    free(all);
    return out;
}

static void expect_block(const char *name, const char *want)
{
    char *got = family_block(name);
    if (!got)
        fail_msg("family %s not rendered", name);
    if (strcmp(got, want) != 0) {
        print_error("got:\n%s\nwant:\n%s\n", got, want);
        free(got);
        fail_msg("family %s differs", name);
    }
    free(got);
}

static void test_counter(void **state)
{
    char l1[128] = "", l2[128] = "";
    oms_metrics_label(l1, sizeof(l1), "route", "/a");
    oms_metrics_label(l1, sizeof(l1), "code", "200");
    oms_metrics_label(l2, sizeof(l2), "route", "/b");
    oms_metrics_label(l2, sizeof(l2), "code", "404");
    oms_metrics_counter_add("t_requests_total", "Requests seen.", l1, 1);
    oms_metrics_counter_add("t_requests_total", "Requests seen.", l2, 1);
    oms_metrics_counter_add("t_requests_total", "Requests seen.", l1, 2);
    oms_metrics_counter_add("t_requests_total", "Requests seen.", l1, -5); /* ignored */
    oms_metrics_counter_add("t_plain_total", "No labels.", NULL, 0.5);
    oms_metrics_counter_add("t_plain_total", "No labels.", "", 0.25);
    expect_block("t_requests_total", "# HELP t_requests_total Requests seen.\n"
                                     "# TYPE t_requests_total counter\n"
                                     "t_requests_total{route=\"/a\",code=\"200\"} 3\n"
                                     "t_requests_total{route=\"/b\",code=\"404\"} 1\n");
    expect_block("t_plain_total", "# HELP t_plain_total No labels.\n"
                                  "# TYPE t_plain_total counter\n"
                                  "t_plain_total 0.75\n");
}

static double twelve(void *ud)
{
    return *(double *)ud;
}

static void test_gauge(void **state)
{
    static double v = 12;
    oms_metrics_gauge_set("t_queue_depth", "Depth.\nSecond line \\ backslash.", "q=\"x\"", 5);
    oms_metrics_gauge_set("t_queue_depth", "ignored later help", "q=\"x\"", -2.5);
    oms_metrics_gauge_fn("t_queue_depth", NULL, "q=\"y\"", twelve, &v);
    oms_metrics_gauge_set("t_small", "Tiny.", NULL, 0.1);
    expect_block("t_queue_depth", "# HELP t_queue_depth Depth.\\nSecond line \\\\ backslash.\n"
                                  "# TYPE t_queue_depth gauge\n"
                                  "t_queue_depth{q=\"x\"} -2.5\n"
                                  "t_queue_depth{q=\"y\"} 12\n");
    v = 13;
    expect_block("t_small", "# HELP t_small Tiny.\n# TYPE t_small gauge\nt_small 0.1\n");
    char *b = family_block("t_queue_depth");
    assert_non_null(strstr(b, "t_queue_depth{q=\"y\"} 13\n")); /* computed at render time */
    free(b);
}

static void test_histogram(void **state)
{
    const double obs[] = {0.0004, 0.0005, 0.003, 0.2, 0.2, 7, 11};
    for (size_t i = 0; i < OMS_NELEM(obs); i++)
        oms_metrics_observe("t_latency_seconds", "Latency.", "route=\"/x\"", obs[i]);
    oms_metrics_observe("t_bare_seconds", "Bare.", NULL, 1);
    expect_block("t_latency_seconds", "# HELP t_latency_seconds Latency.\n"
                                      "# TYPE t_latency_seconds histogram\n"
                                      "t_latency_seconds_bucket{route=\"/x\",le=\"0.0005\"} 2\n"
                                      "t_latency_seconds_bucket{route=\"/x\",le=\"0.001\"} 2\n"
                                      "t_latency_seconds_bucket{route=\"/x\",le=\"0.0025\"} 2\n"
                                      "t_latency_seconds_bucket{route=\"/x\",le=\"0.005\"} 3\n"
                                      "t_latency_seconds_bucket{route=\"/x\",le=\"0.01\"} 3\n"
                                      "t_latency_seconds_bucket{route=\"/x\",le=\"0.025\"} 3\n"
                                      "t_latency_seconds_bucket{route=\"/x\",le=\"0.05\"} 3\n"
                                      "t_latency_seconds_bucket{route=\"/x\",le=\"0.1\"} 3\n"
                                      "t_latency_seconds_bucket{route=\"/x\",le=\"0.25\"} 5\n"
                                      "t_latency_seconds_bucket{route=\"/x\",le=\"0.5\"} 5\n"
                                      "t_latency_seconds_bucket{route=\"/x\",le=\"1\"} 5\n"
                                      "t_latency_seconds_bucket{route=\"/x\",le=\"2.5\"} 5\n"
                                      "t_latency_seconds_bucket{route=\"/x\",le=\"5\"} 5\n"
                                      "t_latency_seconds_bucket{route=\"/x\",le=\"10\"} 6\n"
                                      "t_latency_seconds_bucket{route=\"/x\",le=\"+Inf\"} 7\n"
                                      "t_latency_seconds_sum{route=\"/x\"} 18.4039\n"
                                      "t_latency_seconds_count{route=\"/x\"} 7\n");
    char *b = family_block("t_bare_seconds");
    assert_non_null(b);
    assert_non_null(strstr(b, "\nt_bare_seconds_bucket{le=\"0.5\"} 0\n"));
    assert_non_null(strstr(b, "\nt_bare_seconds_bucket{le=\"1\"} 1\n"));
    assert_non_null(strstr(b, "\nt_bare_seconds_sum 1\nt_bare_seconds_count 1\n"));
    free(b);
}

static void test_label_escape(void **state)
{
    char buf[128] = "";
    oms_metrics_label(buf, sizeof(buf), "path", "a\\b\"c\nd");
    assert_string_equal(buf, "path=\"a\\\\b\\\"c\\nd\"");
    oms_metrics_label(buf, sizeof(buf), "k", "");
    assert_string_equal(buf, "path=\"a\\\\b\\\"c\\nd\",k=\"\"");
    /* Does not fit: buf unchanged rather than cut mid-escape. */
    char small[12] = "";
    oms_metrics_label(small, sizeof(small), "key", "\"\"\"\"");
    assert_string_equal(small, "");
    oms_metrics_counter_add("t_escaped_total", "Escaped labels.", buf, 1);
    expect_block("t_escaped_total", "# HELP t_escaped_total Escaped labels.\n"
                                    "# TYPE t_escaped_total counter\n"
                                    "t_escaped_total{path=\"a\\\\b\\\"c\\nd\",k=\"\"} 1\n");
}

/* Wrong type for an existing name, bad names and reserved names are ignored. */
static void test_misuse_ignored(void **state)
{
    oms_metrics_counter_add("t_kind_total", "Kind.", NULL, 1);
    oms_metrics_gauge_set("t_kind_total", "Kind.", NULL, 99);
    oms_metrics_counter_add("9bad name", "Bad.", NULL, 1);
    oms_metrics_gauge_set("process_open_fds", "Clash.", NULL, 1);
    expect_block("t_kind_total", "# HELP t_kind_total Kind.\n"
                                 "# TYPE t_kind_total counter\n"
                                 "t_kind_total 1\n");
    char *all = oms_metrics_render(NULL);
    assert_null(strstr(all, "9bad"));
    assert_non_null(strstr(all, "\n# TYPE process_resident_memory_bytes gauge\n"));
    assert_non_null(strstr(all, "\n# TYPE process_open_fds gauge\n"));
    const char *p = strstr(all, "# TYPE process_open_fds");
    assert_null(strstr(p + 1, "# TYPE process_open_fds")); /* exactly one */
    free(all);
}

static int have_promtool(void)
{
    return system("command -v promtool >/dev/null 2>&1") == 0;
}

/* The whole render (everything the tests above registered plus process metrics) must
 * pass promtool's parser and linter. */
static void test_promtool(void **state)
{
    if (!have_promtool())
        skip();
    size_t len = 0;
    char *all = oms_metrics_render(&len);
    char path[] = "/tmp/oms_metrics_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, all, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
    free(all);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", path);
    int st = system(cmd);
    unlink(path);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter),        cmocka_unit_test(test_gauge),
        cmocka_unit_test(test_histogram),      cmocka_unit_test(test_label_escape),
        cmocka_unit_test(test_misuse_ignored), cmocka_unit_test(test_promtool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
