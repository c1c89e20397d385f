/* Ceiling of RabbitMQ publishing with publisher confirms through the common AMQP layer
 * (oms/amqp.h), as the outbox relay publishes: persistent, mandatory messages of about
 * the size of an order event, `batch` messages per confirm round. The messages go to
 * a durable queue of their own (declared here over rabbitmq-c and deleted at the end)
 * through the default exchange, so no service consumes them. Prints one JSON line.
 *
 *   bench_amqp -p PORT [-H host] [-V vhost] [-b batch] [-d seconds] [-q queue]
 */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../bench/bench_lat.h"
#include "oms/amqp.h"
#include "oms/log.h"
#include "oms/util.h"

/* Declares (delete=0) or deletes (delete=1) the sink queue on a connection of its own. */
static int sink_queue(const char *host, int port, const char *vhost, const char *queue, int delete)
{
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    int ok = 0;
    if (!sock || amqp_socket_open(sock, host, port) != AMQP_STATUS_OK) {
        fprintf(stderr, "bench_amqp: cannot connect to %s:%d\n", host, port);
        goto out;
    }
    amqp_rpc_reply_t r =
        amqp_login(conn, vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest");
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        fprintf(stderr, "bench_amqp: login failed\n");
        goto close;
    }
    amqp_channel_open(conn, 1);
    if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL)
        goto close;
    if (delete)
        amqp_queue_delete(conn, 1, amqp_cstring_bytes(queue), 0, 0);
    else
        amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue), 0, 1 /* durable */, 0, 0,
                           amqp_empty_table);
    ok = amqp_get_rpc_reply(conn).reply_type == AMQP_RESPONSE_NORMAL;
    if (!ok)
        fprintf(stderr, "bench_amqp: cannot %s queue %s\n", delete ? "delete" : "declare", queue);
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
close:
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
out:
    amqp_destroy_connection(conn);
    return ok;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *vhost = "/", *queue = "bench.amqp.sink";
    int port = 0, batch = 1, bytes = 600;
    double seconds = 5;
    int opt;
    while ((opt = getopt(argc, argv, "H:p:V:b:d:q:s:")) != -1) {
        switch (opt) {
        case 'H': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'V': vhost = optarg; break;
        case 'b': batch = atoi(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'q': queue = optarg; break;
        case 's': bytes = atoi(optarg); break;
        default:
            fprintf(stderr,
                    "usage: %s -p PORT [-H host] [-V vhost] [-b batch] [-d seconds] [-q queue] "
                    "[-s bytes]\n",
                    argv[0]);
            return 2;
        }
    }
    if (port <= 0 || batch < 1 || batch > 10000 || seconds <= 0 || bytes < 1 || bytes > 1 << 20) {
        fprintf(stderr, "bench_amqp: bad arguments (-p PORT is required)\n");
        return 2;
    }
    oms_log_init("bench_amqp", OMS_LOG_WARN, 1);
    if (!sink_queue(host, port, vhost, queue, 0))
        return 1;

    oms_amqp_config cfg = {
        .host = host, .port = port, .user = "guest", .password = "guest", .vhost = vhost};
    oms_amqp_publisher *pub = NULL;
    if (oms_amqp_publisher_new(&pub, &cfg) != OMS_OK) {
        fprintf(stderr, "bench_amqp: cannot create a publisher\n");
        sink_queue(host, port, vhost, queue, 1);
        return 1;
    }
    char *body = oms_xmalloc((size_t)bytes + 1);
    memset(body, 'x', (size_t)bytes);
    body[0] = '{';
    body[bytes - 1] = '}';
    body[bytes] = 0;
    oms_amqp_msg *msgs = oms_xcalloc((size_t)batch, sizeof(*msgs));
    char(*ids)[33] = oms_xcalloc((size_t)batch, sizeof(*ids));
    for (int i = 0; i < batch; i++) {
        msgs[i].exchange = "";
        msgs[i].routing_key = queue;
        msgs[i].message_id = ids[i];
        msgs[i].traceparent = "";
        msgs[i].body = body;
        msgs[i].len = (size_t)bytes;
    }

    oms_error err;
    /* Warm-up: connect, declare, confirm_select. */
    for (int i = 0; i < batch; i++)
        (void)oms_random_hex(ids[i], 16);
    int rc = oms_amqp_publish(pub, msgs, (size_t)batch, NULL, 10000, &err);
    if (rc != OMS_OK) {
        fprintf(stderr, "bench_amqp: publish failed: %s\n", err.msg);
        oms_amqp_publisher_free(pub);
        sink_queue(host, port, vhost, queue, 1);
        return 1;
    }

    bench_lat lat = {0};
    long errors = 0;
    size_t sent = 0;
    int64_t start = bench_now_ns();
    int64_t end = start + (int64_t)(seconds * 1e9);
    while (bench_now_ns() < end) {
        for (int i = 0; i < batch; i++)
            (void)oms_random_hex(ids[i], 16);
        int64_t t0 = bench_now_ns();
        rc = oms_amqp_publish(pub, msgs, (size_t)batch, NULL, 10000, &err);
        int64_t t1 = bench_now_ns();
        if (rc == OMS_OK) {
            sent += (size_t)batch;
            bench_lat_add(&lat, t1 - t0);
        } else if (++errors == 1) {
            fprintf(stderr, "bench_amqp: publish failed: %s\n", err.msg);
        }
    }
    double elapsed = (double)(bench_now_ns() - start) / 1e9;
    bench_lat_sort(&lat);
    printf("{\"batch\":%d,\"message_bytes\":%d,\"seconds\":%.3f,\"messages\":%zu,\"errors\":%ld,"
           "\"msgs_per_s\":%.1f,\"confirm_p50_ms\":%.3f,\"confirm_p99_ms\":%.3f}\n",
           batch, bytes, elapsed, sent, errors, (double)sent / elapsed,
           bench_lat_pct(&lat, 50) / 1000.0, bench_lat_pct(&lat, 99) / 1000.0);
    fflush(stdout);
    bench_lat_free(&lat);
    oms_amqp_publisher_free(pub);
    free(msgs);
    free(ids);
    free(body);
    return sink_queue(host, port, vhost, queue, 1) ? 0 : 1;
}
