/* oms-trace ORDER_ID: prints an order's trace as a text waterfall across services,
 * read from oms-tracestore (GET /api/traces?order_id=...).
 *
 * The order's trace is the one that reaches the most services (the journey that
 * started with the create request); the other traces that mention the order (status
 * polls, the checkout page's own requests) are listed in one line each. Each span line
 * shows its start offset from the trace's first span and its duration in ms, the
 * service, and the span name indented under its parent.
 *
 * TRACESTORE_URL (default http://127.0.0.1:4318, or http://$TRACESTORE_ADDR) says
 * where the store is. Exit status: 0 printed, 1 no trace for that order, 2 usage or
 * store unreachable. */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/dynbuf.h"
#include "oms/util.h"

#define MAX_RESPONSE (64u << 20)
#define MAX_DEPTH 32

/* GETs url; on success *out is the parsed JSON (caller decrefs). Errors go to stderr. */
static int fetch_json(const char *url, json_t **out)
{
    int rc = 2;
    oms_dynbuf b;
    oms_dynbuf_init(&b, MAX_RESPONSE);
    CURL *curl = curl_easy_init();
    if (!curl) {
        fprintf(stderr, "oms-trace: cannot initialise libcurl\n");
        return 2;
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, oms_dynbuf_curl_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    CURLcode cc = curl_easy_perform(curl);
    long status = 0;
    if (cc == CURLE_OK)
        cc = curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK) {
        fprintf(stderr, "oms-trace: %s: %s%s (is oms-tracestore running? make run starts it)\n",
                url, curl_easy_strerror(cc), b.refused ? " (response too large)" : "");
        goto done;
    }
    json_error_t jerr;
    json_t *j = json_loadb(b.p ? b.p : "", b.len, 0, &jerr);
    if (status != 200 || !j) {
        const char *msg = j ? json_string_value(json_object_get(j, "error")) : NULL;
        fprintf(stderr, "oms-trace: %s: HTTP %ld%s%s\n", url, status, msg ? ": " : "",
                msg ? msg : "");
        json_decref(j);
        goto done;
    }
    *out = j;
    rc = 0;
done:
    oms_dynbuf_free(&b);
    curl_easy_cleanup(curl);
    return rc;
}

static long long nanos(const json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? strtoll(s, NULL, 10) : 0;
}

static const char *str(const json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "";
}

static const char *kind_name(json_int_t k)
{
    static const char *const names[] = {"", "internal", "server", "client", "producer", "consumer"};
    return k >= 1 && k <= 5 ? names[k] : "?";
}

/* 1 when a span of spans has span id id. */
static int has_span(const json_t *spans, const char *id)
{
    size_t i;
    const json_t *s;
    json_array_foreach(spans, i, s) if (strcmp(str(s, "spanId"), id) == 0) return 1;
    return 0;
}

/* Prints the children of parent ("" = the roots: spans whose parent is not in the
 * trace), in start order (the store sends spans sorted by start), depth first. */
static void print_tree(const json_t *spans, const char *parent, int depth, long long t0)
{
    size_t i;
    const json_t *s;
    json_array_foreach(spans, i, s)
    {
        const char *pid = str(s, "parentSpanId");
        int is_root = !*pid || !has_span(spans, pid);
        if (*parent ? strcmp(pid, parent) != 0 : !is_root)
            continue;
        long long start = nanos(s, "startTimeUnixNano"), end = nanos(s, "endTimeUnixNano");
        const json_t *st = json_object_get(s, "status");
        int error = json_integer_value(json_object_get(st, "code")) == 2;
        const char *msg = str(st, "message");
        printf("%10.3f %10.3f  %-9s %*s%s [%s]%s%s\n", (double)(start - t0) / 1e6,
               (double)(end - start) / 1e6, str(s, "service"), depth * 2, "", str(s, "name"),
               kind_name(json_integer_value(json_object_get(s, "kind"))), error ? "  ERROR " : "",
               error ? msg : "");
        if (depth < MAX_DEPTH)
            print_tree(spans, str(s, "spanId"), depth + 1, t0);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fprintf(stderr, "usage: oms-trace ORDER_ID\n"
                        "  prints the order's trace from oms-tracestore (TRACESTORE_URL, default "
                        "http://127.0.0.1:4318)\n");
        return 2;
    }
    const char *oid = argv[1];
    if (!oms_valid_id(oid)) {
        fprintf(stderr, "oms-trace: %s is not an order id (1 to 64 of A-Z a-z 0-9 _ . : -)\n", oid);
        return 2;
    }
    char base[512], url[1024];
    const char *env_url = getenv("TRACESTORE_URL"), *env_addr = getenv("TRACESTORE_ADDR");
    if (env_url && *env_url)
        snprintf(base, sizeof(base), "%s", env_url);
    else
        snprintf(base, sizeof(base), "http://%s",
                 env_addr && *env_addr ? env_addr : "127.0.0.1:4318");
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        base[--bl] = '\0';
    /* The id is [A-Za-z0-9_.:-] only, so it needs no escaping in a query. */
    int n = snprintf(url, sizeof(url), "%s/api/traces?order_id=%s", base, oid);
    if (n < 0 || (size_t)n >= sizeof(url)) {
        fprintf(stderr, "oms-trace: TRACESTORE_URL too long\n");
        return 2;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "oms-trace: curl_global_init failed\n");
        return 2;
    }
    json_t *j = NULL;
    int rc = fetch_json(url, &j);
    if (rc != 0)
        goto out;
    const json_t *traces = json_object_get(j, "traces");
    size_t ntraces = json_array_size(traces);
    if (ntraces == 0) {
        printf("no spans stored for order %s (yet: spans reach the store within a second or "
               "two; are the services exporting to %s?)\n",
               oid, base);
        rc = 1;
        goto out;
    }
    /* The order's trace: the one through the most services; the earliest on a tie. */
    const json_t *main_trace = NULL;
    size_t i;
    const json_t *t;
    json_array_foreach(traces, i, t)
    {
        if (!main_trace || json_array_size(json_object_get(t, "services")) >
                               json_array_size(json_object_get(main_trace, "services")))
            main_trace = t;
    }
    const json_t *spans = json_object_get(main_trace, "spans");
    long long t0 = nanos(main_trace, "startTimeUnixNano");
    printf("order %s: trace %s, %zu spans, %zu services, %.1f ms\n", oid,
           str(main_trace, "traceId"), json_array_size(spans),
           json_array_size(json_object_get(main_trace, "services")),
           json_real_value(json_object_get(main_trace, "durationMs")));
    printf("%10s %10s  %-9s %s\n", "start ms", "dur ms", "service", "span");
    print_tree(spans, "", 0, t0);
    if (ntraces > 1) {
        printf("\n%zu other trace(s) mention this order (status polls, checkout page):\n",
               ntraces - 1);
        json_array_foreach(traces, i, t)
        {
            if (t == main_trace)
                continue;
            const json_t *first = json_array_get(json_object_get(t, "spans"), 0);
            printf("  %s  %-40s %6.1f ms  %zu spans\n", str(t, "traceId"), str(first, "name"),
                   json_real_value(json_object_get(t, "durationMs")),
                   json_array_size(json_object_get(t, "spans")));
        }
    }
    printf("\npage: %s/trace.html?order_id=%s\n", base, oid);
out:
    json_decref(j);
    curl_global_cleanup();
    return rc;
}
