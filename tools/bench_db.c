/* Ceiling of the database commit rate for the orders service's insert pattern, through
 * the common db layer (oms/db.h) on SQLite as the services open it (WAL,
 * synchronous=NORMAL): per transaction, one row in orders, two in order_items (with
 * orders' own migrations and orders_store_insert) and one outbox row holding the
 * order's JSON (oms_outbox_add), then commit. `threads`
 * threads share the database like the orders service's gRPC workers do. Prints one
 * JSON line: commits/s and commit-transaction latency percentiles.
 *
 *   bench_db [-f file.db] [-t threads] [-d seconds]
 */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../bench/bench_lat.h"
#include "oms/db.h"
#include "oms/log.h"
#include "oms/order.h"
#include "oms/outbox.h"
#include "oms/util.h"
#include "store.h" /* orders/store.h: the service's own schema and statements */

typedef struct worker {
    pthread_t tid;
    oms_db *db;
    int64_t end_ns;
    unsigned seed;
    bench_lat lat;
    long errors;
    char first_error[512];
} worker;

static int insert_order(oms_db *db, unsigned *seed, oms_error *err)
{
    oms_order o;
    oms_order_init(&o);
    if (oms_new_id(o.order_id) != OMS_OK)
        return oms_error_set(err, OMS_ERR, "no randomness");
    snprintf(o.customer_id, sizeof(o.customer_id), "c%u", rand_r(seed) % 1000);
    snprintf(o.currency, sizeof(o.currency), "usd");
    for (int i = 0; i < 2; i++) {
        oms_order_item it;
        memset(&it, 0, sizeof(it));
        snprintf(it.product_id, sizeof(it.product_id), "%u", 1 + rand_r(seed) % 50);
        it.product_name = "Benchmark product";
        it.price_id = "price_bench_0123456789";
        it.quantity = 1 + (int)(rand_r(seed) % 3);
        it.unit_price = 450;
        oms_order_add_item(&o, &it);
    }
    o.status = OMS_ORDER_PENDING;
    o.created_ms = o.updated_ms = oms_now_ms();
    (void)oms_order_compute_total(&o, &o.total, err);

    oms_db_tx *tx = NULL;
    int rc = oms_db_begin(db, &tx, err);
    if (rc != OMS_OK) {
        oms_order_free(&o);
        return rc;
    }
    rc = orders_store_insert(tx, &o, NULL, err);
    if (rc == OMS_OK) {
        char *body = oms_order_to_json_str(&o);
        rc = oms_outbox_add(tx, "order.created", body, NULL, err);
        free(body);
    }
    oms_order_free(&o);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        return rc;
    }
    return oms_db_commit(tx, err);
}

static void *run(void *arg)
{
    worker *w = arg;
    while (bench_now_ns() < w->end_ns) {
        oms_error err;
        int64_t t0 = bench_now_ns();
        int rc = insert_order(w->db, &w->seed, &err);
        int64_t t1 = bench_now_ns();
        if (rc == OMS_OK) {
            bench_lat_add(&w->lat, t1 - t0);
        } else {
            if (!w->errors)
                snprintf(w->first_error, sizeof(w->first_error), "%s", err.msg);
            w->errors++;
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = 1;
    double seconds = 5;
    const char *file = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "f:t:d:")) != -1) {
        switch (opt) {
        case 'f': file = optarg; break;
        case 't': threads = atoi(optarg); break;
        case 'd': seconds = atof(optarg); break;
        default:
            fprintf(stderr, "usage: %s [-f file.db] [-t threads] [-d seconds]\n", argv[0]);
            return 2;
        }
    }
    if (threads < 1 || threads > 64 || seconds <= 0) {
        fprintf(stderr, "bench_db: bad arguments\n");
        return 2;
    }
    oms_log_init("bench_db", OMS_LOG_WARN, 1);
    char tmpl[] = "/tmp/oms-bench-db-XXXXXX";
    char path[512];
    int own_dir = 0;
    if (!file) {
        if (!mkdtemp(tmpl)) {
            perror("bench_db: mkdtemp");
            return 1;
        }
        snprintf(path, sizeof(path), "%s/orders.db", tmpl);
        file = path;
        own_dir = 1;
    }
    oms_db *db = NULL;
    oms_error err;
    if (orders_store_open(&db, file, &err) != OMS_OK) {
        fprintf(stderr, "bench_db: %s\n", err.msg);
        return 1;
    }
    worker *ws = calloc((size_t)threads, sizeof(*ws));
    int64_t start = bench_now_ns();
    int64_t end = start + (int64_t)(seconds * 1e9);
    for (int i = 0; i < threads; i++) {
        ws[i].db = db;
        ws[i].end_ns = end;
        ws[i].seed = 12345u + (unsigned)i;
        if (pthread_create(&ws[i].tid, NULL, run, &ws[i]) != 0)
            abort();
    }
    bench_lat all = {0};
    long errors = 0;
    const char *first_error = "";
    for (int i = 0; i < threads; i++) {
        pthread_join(ws[i].tid, NULL);
        bench_lat_merge(&all, &ws[i].lat);
        errors += ws[i].errors;
        if (ws[i].errors && !*first_error)
            first_error = ws[i].first_error;
    }
    double elapsed = (double)(bench_now_ns() - start) / 1e9;
    bench_lat_sort(&all);
    printf("{\"driver\":\"%s\",\"threads\":%d,\"seconds\":%.3f,\"commits\":%zu,\"errors\":%ld,"
           "\"commits_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f}\n",
           oms_db_driver_name(db), threads, elapsed, all.n, errors, (double)all.n / elapsed,
           bench_lat_pct(&all, 50) / 1000.0, bench_lat_pct(&all, 99) / 1000.0,
           bench_lat_pct(&all, 100) / 1000.0);
    if (errors)
        fprintf(stderr, "bench_db: %ld failed transactions, first: %s\n", errors, first_error);
    fflush(stdout);
    for (int i = 0; i < threads; i++)
        bench_lat_free(&ws[i].lat);
    bench_lat_free(&all);
    free(ws);
    oms_db_close(db);
    if (own_dir) {
        char f[600];
        const char *sfx[] = {"", "-wal", "-shm", "-journal"};
        for (size_t i = 0; i < 4; i++) {
            snprintf(f, sizeof(f), "%s%s", path, sfx[i]);
            unlink(f);
        }
        rmdir(tmpl);
    }
    return 0;
}
