/* Open-loop HTTP load at a fixed rate for the create-order benchmark (wrk2 is not
 * packaged in Debian; plain wrk is closed-loop, so its latencies hide queueing:
 * "coordinated omission"). Request i is due at start + i/rate whatever happened to
 * earlier ones; its latency is measured from that due time, so time spent waiting for
 * a free connection counts. Up to `conns` keep-alive connections (libcurl multi);
 * a timerfd wakes the loop exactly when the next request is due.
 *
 * Each request: POST BASE/api/customers/c<N>/orders with two distinct random products
 * (1..P) of quantity 1..3, Content-Type: application/json. 2xx counts as success.
 *
 *   bench_http_open -u http://127.0.0.1:8080 -r RATE -d SECONDS [-c conns]
 *                   [-C customers] [-P products]
 * Prints one JSON line.
 */
#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "../bench/bench_lat.h"

typedef struct slot {
    CURL *h;
    int64_t due_ns;
    int busy;
    char url[256];
    char body[160];
} slot;

static size_t discard(char *p, size_t sz, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return sz * n;
}

static void arm(int tfd, int64_t at_ns)
{
    struct itimerspec its;
    memset(&its, 0, sizeof(its));
    if (at_ns <= 0)
        at_ns = 1;
    its.it_value.tv_sec = at_ns / 1000000000LL;
    its.it_value.tv_nsec = at_ns % 1000000000LL;
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

int main(int argc, char **argv)
{
    const char *base = NULL;
    double rate = 100, seconds = 5;
    int conns = 16, customers = 1000, products = 50;
    int opt;
    while ((opt = getopt(argc, argv, "u:r:d:c:C:P:")) != -1) {
        switch (opt) {
        case 'u': base = optarg; break;
        case 'r': rate = atof(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'c': conns = atoi(optarg); break;
        case 'C': customers = atoi(optarg); break;
        case 'P': products = atoi(optarg); break;
        default:
            fprintf(stderr,
                    "usage: %s -u BASE_URL -r RATE -d SECONDS [-c conns] [-C customers] "
                    "[-P products]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!base || rate <= 0 || rate > 1e6 || seconds <= 0 || conns < 1 || conns > 1024 ||
        customers < 1 || products < 2) {
        fprintf(stderr, "bench_http_open: bad arguments (-u BASE_URL is required)\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)conns);
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)conns);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Expect:");
    slot *slots = calloc((size_t)conns, sizeof(*slots));
    for (int i = 0; i < conns; i++) {
        CURL *h = curl_easy_init();
        slots[i].h = h;
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(h, CURLOPT_PRIVATE, &slots[i]);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    }
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0) {
        perror("bench_http_open: timerfd_create");
        return 1;
    }
    unsigned seed = 4242;
    bench_lat lat = {0};     /* 2xx: the accepted requests */
    bench_lat refused = {0}; /* 503: refused at once, or so they should be */
    long ok = 0, bad = 0, n503 = 0, transport = 0, active = 0, max_backlog = 0;
    long first_bad_status = 0;
    const double interval_ns = 1e9 / rate;
    int64_t start = bench_now_ns() + 1000000; /* 1 ms to get going */
    int64_t end = start + (int64_t)(seconds * 1e9);
    long total = (long)(seconds * rate);
    long next = 0; /* index of the next request to dispatch */
    int64_t drain_deadline = end + 10000000000LL;

    for (;;) {
        int64_t now = bench_now_ns();
        /* Dispatch every due request that has a free connection. */
        while (next < total && start + (int64_t)(next * interval_ns) <= now) {
            slot *s = NULL;
            for (int i = 0; i < conns; i++)
                if (!slots[i].busy) {
                    s = &slots[i];
                    break;
                }
            if (!s)
                break; /* all busy: it stays due and its latency keeps growing */
            s->busy = 1;
            s->due_ns = start + (int64_t)(next * interval_ns);
            unsigned p1 = 1 + rand_r(&seed) % (unsigned)products;
            unsigned p2 = 1 + rand_r(&seed) % (unsigned)(products - 1);
            if (p2 >= p1)
                p2++;
            snprintf(s->url, sizeof(s->url), "%s/api/customers/c%u/orders", base,
                     1 + rand_r(&seed) % (unsigned)customers);
            snprintf(s->body, sizeof(s->body),
                     "{\"items\":[{\"productID\":\"%u\",\"quantity\":%u},"
                     "{\"productID\":\"%u\",\"quantity\":%u}]}",
                     p1, 1 + rand_r(&seed) % 3, p2, 1 + rand_r(&seed) % 3);
            curl_easy_setopt(s->h, CURLOPT_URL, s->url);
            curl_easy_setopt(s->h, CURLOPT_POSTFIELDS, s->body);
            curl_multi_add_handle(multi, s->h);
            active++;
            next++;
        }
        long backlog = 0;
        if (next < total) {
            int64_t due_now = (now - start) / (int64_t)interval_ns + 1;
            if (due_now > total)
                due_now = total;
            backlog = due_now > next ? (long)(due_now - next) : 0;
        }
        if (backlog > max_backlog)
            max_backlog = backlog;

        int running = 0;
        curl_multi_perform(multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            slot *s = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            int64_t t = bench_now_ns();
            if (m->data.result == CURLE_OK) {
                long code = 0;
                curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &code);
                if (code >= 200 && code < 300) {
                    ok++;
                    bench_lat_add(&lat, t - s->due_ns);
                } else {
                    if (!first_bad_status)
                        first_bad_status = code;
                    bad++;
                    if (code == 503) {
                        n503++;
                        bench_lat_add(&refused, t - s->due_ns);
                    }
                }
            } else {
                transport++;
            }
            curl_multi_remove_handle(multi, m->easy_handle);
            s->busy = 0;
            active--;
        }
        now = bench_now_ns();
        if (next >= total && active == 0)
            break;
        if (now > drain_deadline)
            break;
        /* Sleep until the next due time (timerfd) or socket activity. A due request
         * that waits for a free connection is retried when one frees up. */
        long wait_ms = 100;
        long ct = -1;
        curl_multi_timeout(multi, &ct);
        if (ct >= 0 && ct < wait_ms)
            wait_ms = ct;
        struct curl_waitfd extra = {tfd, CURL_WAIT_POLLIN, 0};
        int nextra = 0;
        if (next < total && !backlog) {
            arm(tfd, start + (int64_t)(next * interval_ns));
            nextra = 1;
        } else if (next < total && active < conns) {
            wait_ms = 0;
        }
        curl_multi_poll(multi, nextra ? &extra : NULL, (unsigned)nextra, (int)wait_ms, NULL);
        if (nextra) {
            uint64_t expirations;
            (void)!read(tfd, &expirations, sizeof(expirations));
        }
    }
    double elapsed = (double)(bench_now_ns() - start) / 1e9;
    bench_lat_sort(&lat);
    bench_lat_sort(&refused);
    /* p50/p90/p99/max: accepted (2xx) requests only; refused_*: the 503s. */
    printf("{\"target_rps\":%.1f,\"seconds\":%.3f,\"elapsed_s\":%.3f,\"connections\":%d,"
           "\"scheduled\":%ld,"
           "\"sent\":%ld,\"ok\":%ld,\"errors\":%ld,\"first_error_status\":%ld,"
           "\"transport_errors\":%ld,\"unfinished\":%ld,\"rps\":%.1f,\"p50_ms\":%.3f,"
           "\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"max_backlog\":%ld,"
           "\"refused_503\":%ld,\"refused_p50_ms\":%.3f,\"refused_p99_ms\":%.3f,"
           "\"refused_max_ms\":%.3f}\n",
           rate, seconds, elapsed, conns, total, next, ok, bad, first_bad_status, transport, active,
           (double)ok / seconds, bench_lat_pct(&lat, 50) / 1000.0, bench_lat_pct(&lat, 90) / 1000.0,
           bench_lat_pct(&lat, 99) / 1000.0, bench_lat_pct(&lat, 100) / 1000.0, max_backlog, n503,
           bench_lat_pct(&refused, 50) / 1000.0, bench_lat_pct(&refused, 99) / 1000.0,
           bench_lat_pct(&refused, 100) / 1000.0);
    fflush(stdout);
    for (int i = 0; i < conns; i++) {
        if (slots[i].busy)
            curl_multi_remove_handle(multi, slots[i].h);
        curl_easy_cleanup(slots[i].h);
    }
    free(slots);
    curl_slist_free_all(hdrs);
    curl_multi_cleanup(multi);
    curl_global_cleanup();
    close(tfd);
    bench_lat_free(&lat);
    bench_lat_free(&refused);
    return 0;
}
