/* Ceiling of a gRPC unary round trip C<->C on the common gRPC layer (oms/grpc_server.h,
 * oms/grpc_client.h), as the services use it: a tiny echo server in this process and
 * `threads` client threads sharing one channel, each making synchronous calls for a
 * fixed time. Prints one JSON line: calls/s and latency percentiles.
 *
 *   bench_grpc_echo [-t client_threads] [-s server_threads] [-d seconds] [-b payload_bytes]
 */
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../bench/bench_lat.h"
#include "oms.pb-c.h"
#include "oms/grpc_client.h"
#include "oms/grpc_server.h"
#include "oms/log.h"
#include "oms/util.h"

#define ECHO_PATH "/bench.Echo/Echo"

static int echo(oms_grpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Api__GetOrderRequest *in = (const Api__GetOrderRequest *)req;
    Api__GetOrderRequest *out = oms_xmalloc(sizeof(*out));
    api__get_order_request__init(out);
    out->orderid = oms_strdup(in->orderid);
    *resp = &out->base;
    return OMS_OK;
}

static const oms_grpc_method methods[] = {
    {ECHO_PATH, &api__get_order_request__descriptor, echo},
};

typedef struct worker {
    pthread_t tid;
    oms_grpc_client *client;
    const char *payload;
    int64_t end_ns;
    bench_lat lat;
    long errors;
} worker;

static void *run(void *arg)
{
    worker *w = arg;
    Api__GetOrderRequest req = API__GET_ORDER_REQUEST__INIT;
    req.orderid = (char *)w->payload;
    while (bench_now_ns() < w->end_ns) {
        ProtobufCMessage *resp = NULL;
        oms_error err;
        int64_t t0 = bench_now_ns();
        int rc = oms_grpc_call(w->client, ECHO_PATH, &req.base, &api__get_order_request__descriptor,
                               &resp, 5000, &err);
        int64_t t1 = bench_now_ns();
        if (rc == OMS_OK) {
            bench_lat_add(&w->lat, t1 - t0);
            protobuf_c_message_free_unpacked(resp, NULL);
        } else {
            w->errors++;
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = 2, server_threads = 4, bytes = 64;
    double seconds = 5;
    int opt;
    while ((opt = getopt(argc, argv, "t:s:d:b:")) != -1) {
        switch (opt) {
        case 't': threads = atoi(optarg); break;
        case 's': server_threads = atoi(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'b': bytes = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: %s [-t threads] [-s server_threads] [-d seconds] [-b bytes]\n",
                    argv[0]);
            return 2;
        }
    }
    if (threads < 1 || threads > 256 || server_threads < 1 || server_threads > 64 || seconds <= 0 ||
        bytes < 1 || bytes > 65536) {
        fprintf(stderr, "bench_grpc_echo: bad arguments\n");
        return 2;
    }
    oms_log_init("bench_grpc_echo", OMS_LOG_WARN, 1);

    oms_error err;
    oms_grpc_server *srv = NULL;
    if (oms_grpc_server_start(&srv, "127.0.0.1:0", methods, 1, server_threads, NULL, &err) !=
        OMS_OK) {
        fprintf(stderr, "bench_grpc_echo: %s\n", err.msg);
        return 1;
    }
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", oms_grpc_server_port(srv));
    oms_grpc_client *client = NULL;
    if (oms_grpc_client_new(&client, target, &err) != OMS_OK) {
        fprintf(stderr, "bench_grpc_echo: %s\n", err.msg);
        oms_grpc_server_stop(srv);
        return 1;
    }
    char *payload = oms_xmalloc((size_t)bytes + 1);
    memset(payload, 'x', (size_t)bytes);
    payload[bytes] = 0;

    /* Warm-up: connect the channel and touch every server worker. */
    {
        worker w = {.client = client, .payload = payload, .end_ns = bench_now_ns() + 200000000LL};
        run(&w);
        bench_lat_free(&w.lat);
    }

    worker *ws = calloc((size_t)threads, sizeof(*ws));
    int64_t start = bench_now_ns();
    int64_t end = start + (int64_t)(seconds * 1e9);
    for (int i = 0; i < threads; i++) {
        ws[i].client = client;
        ws[i].payload = payload;
        ws[i].end_ns = end;
        if (pthread_create(&ws[i].tid, NULL, run, &ws[i]) != 0) {
            fprintf(stderr, "bench_grpc_echo: cannot start a thread\n");
            abort();
        }
    }
    bench_lat all = {0};
    long errors = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ws[i].tid, NULL);
        bench_lat_merge(&all, &ws[i].lat);
        bench_lat_free(&ws[i].lat);
        errors += ws[i].errors;
    }
    double elapsed = (double)(bench_now_ns() - start) / 1e9;
    bench_lat_sort(&all);
    printf("{\"threads\":%d,\"server_threads\":%d,\"payload_bytes\":%d,\"seconds\":%.3f,"
           "\"calls\":%zu,\"errors\":%ld,\"calls_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
           "\"max_ms\":%.3f}\n",
           threads, server_threads, bytes, elapsed, all.n, errors, (double)all.n / elapsed,
           bench_lat_pct(&all, 50) / 1000.0, bench_lat_pct(&all, 99) / 1000.0,
           bench_lat_pct(&all, 100) / 1000.0);
    fflush(stdout);
    bench_lat_free(&all);
    free(ws);
    free(payload);
    oms_grpc_client_free(client);
    oms_grpc_server_stop(srv);
    return 0;
}
