/* gRPC server + client over real sockets on 127.0.0.1 with kernel-picked ports:
 * values, error codes and messages, unknown methods, malformed requests, deadlines,
 * health, a closed port, trace propagation, concurrency and round robin. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "oms.pb-c.h"
#include "oms/grpc_client.h"
#include "oms/grpc_server.h"
#include "oms/log.h"
#include "oms/trace.h"
#include "oms/util.h"

#define CALL_TIMEOUT_MS 5000

/* One server under test and what its handlers observed (the server's ud). */
typedef struct test_server {
    oms_grpc_server *srv;
    char addr[64];
    atomic_int calls;        /* GetItems calls served */
    atomic_int slow_left_ms; /* remaining deadline the slow handler saw on entry */
} test_server;

/* ---- handlers --------------------------------------------------------------------- */

/* GetItems: echoes each id into an item, quantity = its index. */
static int h_get_items(oms_grpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Api__GetItemsRequest *in = (const Api__GetItemsRequest *)req;
    test_server *ts = ctx->ud;
    atomic_fetch_add(&ts->calls, 1);

    Api__GetItemsResponse *out = oms_xmalloc(sizeof(*out));
    api__get_items_response__init(out);
    out->n_items = in->n_itemids;
    out->items = in->n_itemids ? oms_xcalloc(in->n_itemids, sizeof(*out->items)) : NULL;
    for (size_t i = 0; i < in->n_itemids; i++) {
        Api__OrderItem *it = oms_xmalloc(sizeof(*it));
        api__order_item__init(it);
        it->productid = oms_strdup(in->itemids[i]);
        it->quantity = (int32_t)i;
        out->items[i] = it;
    }
    *resp = &out->base;
    return OMS_OK;
}

static int h_not_found(oms_grpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Api__GetOrderRequest *in = (const Api__GetOrderRequest *)req;
    return oms_error_set(&ctx->err, OMS_NOTFOUND, "product %s not found", in->orderid);
}

static int h_conflict(oms_grpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Api__CancelOrderRequest *in = (const Api__CancelOrderRequest *)req;
    return oms_error_set(&ctx->err, OMS_CONFLICT, "order %s is already paid", in->orderid);
}

/* ListItems: reports what the handler saw: current trace id (productID), span id
 * (productName), peer (priceID), remaining deadline in ms (quantity). */
static int h_trace(oms_grpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const oms_trace_ctx *cur = oms_trace_current();
    if (!cur)
        return oms_error_set(&ctx->err, OMS_ERR, "no trace context in handler");
    char trace[33], span[17];
    oms_trace_id_hex(cur, trace);
    oms_span_id_hex(cur, span);

    Api__ListItemsResponse *out = oms_xmalloc(sizeof(*out));
    api__list_items_response__init(out);
    Api__OrderItem *it = oms_xmalloc(sizeof(*it));
    api__order_item__init(it);
    it->productid = oms_strdup(trace);
    it->productname = oms_strdup(span);
    it->priceid = oms_strdup(ctx->peer);
    it->quantity = ctx->deadline_mono_ms ? (int32_t)(ctx->deadline_mono_ms - oms_mono_ms()) : -1;
    out->n_items = 1;
    out->items = oms_xmalloc(sizeof(*out->items));
    out->items[0] = it;
    *resp = &out->base;
    return OMS_OK;
}

/* Lets a test wait until the slow handler has started (no sleeping on guesses). */
static pthread_mutex_t slow_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slow_cv = PTHREAD_COND_INITIALIZER;
static int slow_entered;

/* UpdateOrder: blocks until the caller's deadline has passed, then answers. */
static int h_slow(oms_grpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    test_server *ts = ctx->ud;
    if (!ctx->deadline_mono_ms)
        return oms_error_set(&ctx->err, OMS_INVALID, "slow handler needs a deadline");
    atomic_store(&ts->slow_left_ms, (int)(ctx->deadline_mono_ms - oms_mono_ms()));
    oms_mutex_lock(&slow_mu);
    slow_entered = 1;
    oms_cond_broadcast(&slow_cv);
    oms_mutex_unlock(&slow_mu);

    /* A timed wait on a condition nobody signals: sleeps exactly to the deadline. */
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv;
    if (oms_cond_init_monotonic(&cv) != 0)
        return oms_error_set(&ctx->err, OMS_ERR, "slow handler: cannot make a condition variable");
    int64_t until = ctx->deadline_mono_ms + 50;
    struct timespec ts_until = {.tv_sec = until / 1000, .tv_nsec = (until % 1000) * 1000000};
    oms_mutex_lock(&mu);
    while (oms_mono_ms() < until)
        (void)oms_cond_timedwait(&cv, &mu, &ts_until);
    oms_mutex_unlock(&mu);
    pthread_cond_destroy(&cv);

    Api__Order *out = oms_xmalloc(sizeof(*out));
    api__order__init(out);
    *resp = &out->base;
    return OMS_OK;
}

static const oms_grpc_method methods[] = {
    {"/api.StockService/GetItems", &api__get_items_request__descriptor, h_get_items},
    {"/api.OrderService/GetOrder", &api__get_order_request__descriptor, h_not_found},
    {"/api.OrderService/CancelOrder", &api__cancel_order_request__descriptor, h_conflict},
    {"/api.StockService/ListItems", &api__list_items_request__descriptor, h_trace},
    {"/api.OrderService/UpdateOrder", &api__order__descriptor, h_slow},
};

/* ---- helpers ---------------------------------------------------------------------- */

static void server_start(test_server *ts, int threads)
{
    memset(ts, 0, sizeof(*ts));
    oms_error err;
    oms_error_clear(&err);
    int rc = oms_grpc_server_start(&ts->srv, "127.0.0.1:0", methods, OMS_NELEM(methods), threads,
                                   ts, &err);
    if (rc != OMS_OK)
        fail_msg("server start: %s", err.msg);
    assert_true(oms_grpc_server_port(ts->srv) > 0);
    snprintf(ts->addr, sizeof(ts->addr), "127.0.0.1:%d", oms_grpc_server_port(ts->srv));
}

static oms_grpc_client *client_new(const char *target)
{
    oms_grpc_client *c = NULL;
    oms_error err;
    oms_error_clear(&err);
    if (oms_grpc_client_new(&c, target, &err) != OMS_OK)
        fail_msg("client for %s: %s", target, err.msg);
    return c;
}

/* GetItems with ids {a, b}; checks the echo. Returns the call's status. */
static int call_get_items(oms_grpc_client *c, const char *a, const char *b, oms_error *err)
{
    char *ids[2] = {(char *)a, (char *)b};
    Api__GetItemsRequest req = API__GET_ITEMS_REQUEST__INIT;
    req.n_itemids = 2;
    req.itemids = ids;
    ProtobufCMessage *resp = NULL;
    int rc = oms_grpc_call(c, "/api.StockService/GetItems", &req.base,
                           &api__get_items_response__descriptor, &resp, CALL_TIMEOUT_MS, err);
    if (rc != OMS_OK) {
        assert_null(resp);
        return rc;
    }
    const Api__GetItemsResponse *out = (const Api__GetItemsResponse *)resp;
    int same = out->n_items == 2 && strcmp(out->items[0]->productid, a) == 0 &&
               strcmp(out->items[1]->productid, b) == 0 && out->items[0]->quantity == 0 &&
               out->items[1]->quantity == 1;
    protobuf_c_message_free_unpacked(resp, NULL);
    return same ? OMS_OK : OMS_CONFLICT;
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_call_ok(void **state)
{
    test_server ts;
    server_start(&ts, 2);
    oms_grpc_client *c = client_new(ts.addr);
    oms_error err;
    assert_int_equal(call_get_items(c, "p1", "p2", &err), OMS_OK);
    assert_int_equal(call_get_items(c, "", "x", &err), OMS_OK);
    assert_int_equal(atomic_load(&ts.calls), 2);

    /* An empty request and an empty response are valid messages too. */
    Api__GetItemsRequest empty = API__GET_ITEMS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    assert_int_equal(oms_grpc_call(c, "/api.StockService/GetItems", &empty.base,
                                   &api__get_items_response__descriptor, &resp, CALL_TIMEOUT_MS,
                                   &err),
                     OMS_OK);
    assert_non_null(resp);
    assert_int_equal(((Api__GetItemsResponse *)resp)->n_items, 0);
    protobuf_c_message_free_unpacked(resp, NULL);

    oms_grpc_client_free(c);
    oms_grpc_server_stop(ts.srv);
}

static void test_dns_target(void **state)
{
    test_server ts;
    server_start(&ts, 1);
    char target[64];
    snprintf(target, sizeof(target), "localhost:%d", oms_grpc_server_port(ts.srv));
    oms_grpc_client *c = client_new(target);
    oms_error err;
    int rc = call_get_items(c, "a", "b", &err);
    if (rc != OMS_OK)
        fail_msg("localhost call: %s", err.msg);
    oms_grpc_client_free(c);
    oms_grpc_server_stop(ts.srv);
}

static void test_error_codes(void **state)
{
    test_server ts;
    server_start(&ts, 2);
    oms_grpc_client *c = client_new(ts.addr);
    oms_error err;
    ProtobufCMessage *resp = (ProtobufCMessage *)&err; /* must be reset to NULL */

    Api__GetOrderRequest get = API__GET_ORDER_REQUEST__INIT;
    get.orderid = "42";
    assert_int_equal(oms_grpc_call(c, "/api.OrderService/GetOrder", &get.base,
                                   &api__order__descriptor, &resp, CALL_TIMEOUT_MS, &err),
                     OMS_NOTFOUND);
    assert_null(resp);
    assert_int_equal(err.code, OMS_NOTFOUND);
    assert_string_equal(err.msg, "product 42 not found");

    Api__CancelOrderRequest cancel = API__CANCEL_ORDER_REQUEST__INIT;
    cancel.orderid = "o1";
    assert_int_equal(oms_grpc_call(c, "/api.OrderService/CancelOrder", &cancel.base,
                                   &api__order__descriptor, &resp, CALL_TIMEOUT_MS, &err),
                     OMS_CONFLICT);
    assert_string_equal(err.msg, "order o1 is already paid");

    oms_grpc_client_free(c);
    oms_grpc_server_stop(ts.srv);
}

static void test_unknown_method_and_malformed(void **state)
{
    test_server ts;
    server_start(&ts, 1);
    oms_grpc_client *c = client_new(ts.addr);
    oms_error err;
    ProtobufCMessage *resp = NULL;

    Api__GetItemsRequest req = API__GET_ITEMS_REQUEST__INIT;
    int rc = oms_grpc_call(c, "/api.StockService/Nope", &req.base,
                           &api__get_items_response__descriptor, &resp, CALL_TIMEOUT_MS, &err);
    assert_int_equal(rc, OMS_ERR);
    assert_null(resp);
    assert_non_null(strstr(err.msg, "unknown method /api.StockService/Nope"));

    /* Field 1 as a varint where GetItemsRequest has a repeated string: unparseable. */
    Api__CheckIfItemsAreInStockResponse wrong = API__CHECK_IF_ITEMS_ARE_IN_STOCK_RESPONSE__INIT;
    wrong.instock = 1;
    rc = oms_grpc_call(c, "/api.StockService/GetItems", &wrong.base,
                       &api__get_items_response__descriptor, &resp, CALL_TIMEOUT_MS, &err);
    assert_int_equal(rc, OMS_INVALID);
    assert_string_equal(err.msg, "malformed request message");
    assert_int_equal(atomic_load(&ts.calls), 0);

    /* The server still serves after both. */
    assert_int_equal(call_get_items(c, "a", "b", &err), OMS_OK);

    oms_grpc_client_free(c);
    oms_grpc_server_stop(ts.srv);
}

static void test_trace_and_ctx(void **state)
{
    test_server ts;
    server_start(&ts, 1);
    oms_grpc_client *c = client_new(ts.addr);
    oms_error err;
    ProtobufCMessage *resp = NULL;
    Api__ListItemsRequest req = API__LIST_ITEMS_REQUEST__INIT;

    oms_trace_ctx mine;
    oms_trace_new_root(&mine);
    oms_trace_set_current(&mine);
    char trace[33], span[17];
    oms_trace_id_hex(&mine, trace);
    oms_span_id_hex(&mine, span);

    assert_int_equal(oms_grpc_call(c, "/api.StockService/ListItems", &req.base,
                                   &api__list_items_response__descriptor, &resp, CALL_TIMEOUT_MS,
                                   &err),
                     OMS_OK);
    const Api__OrderItem *seen = ((Api__ListItemsResponse *)resp)->items[0];
    assert_string_equal(seen->productid, trace); /* same trace */
    assert_int_equal(strlen(seen->productname), 16);
    assert_string_not_equal(seen->productname, span);    /* a child span */
    assert_non_null(strstr(seen->priceid, "127.0.0.1")); /* peer */
    /* The deadline crosses the wire as grpc-timeout, which gRPC rounds up to a few
     * significant digits (4999 ms may arrive as 5010 ms), hence the slack. */
    if (seen->quantity <= 0 || seen->quantity > CALL_TIMEOUT_MS + 100)
        fail_msg("deadline seen by the handler: %d ms left", seen->quantity);
    protobuf_c_message_free_unpacked(resp, NULL);

    /* Without a context the server starts a new trace. */
    oms_trace_clear_current();
    assert_int_equal(oms_grpc_call(c, "/api.StockService/ListItems", &req.base,
                                   &api__list_items_response__descriptor, &resp, CALL_TIMEOUT_MS,
                                   &err),
                     OMS_OK);
    seen = ((Api__ListItemsResponse *)resp)->items[0];
    assert_int_equal(strlen(seen->productid), 32);
    assert_string_not_equal(seen->productid, trace);
    assert_string_not_equal(seen->productid, "00000000000000000000000000000000");
    protobuf_c_message_free_unpacked(resp, NULL);

    oms_grpc_client_free(c);
    oms_grpc_server_stop(ts.srv);
}

static void test_deadline_exceeded(void **state)
{
    test_server ts;
    server_start(&ts, 1);
    oms_grpc_client *c = client_new(ts.addr);
    oms_error err;
    ProtobufCMessage *resp = NULL;
    Api__Order req = API__ORDER__INIT;

    int64_t t0 = oms_mono_ms();
    int rc = oms_grpc_call(c, "/api.OrderService/UpdateOrder", &req.base, &api__order__descriptor,
                           &resp, 300, &err);
    int64_t took = oms_mono_ms() - t0;
    assert_int_equal(rc, OMS_UNAVAILABLE);
    assert_null(resp);
    assert_non_null(strstr(err.msg, "no answer within 300 ms"));
    assert_non_null(strstr(err.msg, ts.addr));
    assert_true(took >= 250 && took < 3000);
    int left = atomic_load(&ts.slow_left_ms);
    assert_true(left > 0 && left <= 300 + 100); /* grpc-timeout rounds up */

    oms_grpc_client_free(c);
    oms_grpc_server_stop(ts.srv);
}

typedef struct slow_arg {
    oms_grpc_client *c;
    int rc;
    oms_error err;
} slow_arg;

static void *slow_call_thread(void *p)
{
    slow_arg *a = p;
    Api__Order req = API__ORDER__INIT;
    ProtobufCMessage *resp = NULL;
    a->rc = oms_grpc_call(a->c, "/api.OrderService/UpdateOrder", &req.base, &api__order__descriptor,
                          &resp, 1500, &a->err);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return NULL;
}

/* Stop with a connected client and a call in flight: the call is cut off after the
 * grace, stop returns once the handler does, and the client then sees UNAVAILABLE. */
static void test_stop_in_flight(void **state)
{
    test_server ts;
    server_start(&ts, 2);
    oms_grpc_client *c = client_new(ts.addr);
    oms_error err;
    assert_int_equal(call_get_items(c, "a", "b", &err), OMS_OK); /* connected */

    oms_mutex_lock(&slow_mu);
    slow_entered = 0;
    oms_mutex_unlock(&slow_mu);
    slow_arg arg;
    memset(&arg, 0, sizeof(arg));
    arg.c = c;
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, slow_call_thread, &arg), 0);
    oms_mutex_lock(&slow_mu);
    while (!slow_entered)
        oms_cond_wait(&slow_cv, &slow_mu);
    oms_mutex_unlock(&slow_mu);

    int64_t t0 = oms_mono_ms();
    oms_grpc_server_stop(ts.srv);
    int64_t took = oms_mono_ms() - t0;
    assert_int_equal(pthread_join(tid, NULL), 0);
    assert_int_not_equal(arg.rc, OMS_OK); /* cancelled or past its deadline */
    assert_true(took < 3000);

    assert_int_equal(call_get_items(c, "a", "b", &err), OMS_UNAVAILABLE);
    oms_grpc_client_free(c);
}

static void test_health(void **state)
{
    test_server ts;
    server_start(&ts, 1);
    oms_grpc_client *c = client_new(ts.addr);
    oms_error err;
    assert_int_equal(oms_grpc_client_check_health(c, CALL_TIMEOUT_MS, &err), OMS_OK);
    oms_grpc_server_set_serving(ts.srv, 0);
    assert_int_equal(oms_grpc_client_check_health(c, CALL_TIMEOUT_MS, &err), OMS_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "NOT_SERVING"));
    oms_grpc_server_set_serving(ts.srv, 1);
    assert_int_equal(oms_grpc_client_check_health(c, CALL_TIMEOUT_MS, &err), OMS_OK);
    oms_grpc_client_free(c);
    oms_grpc_server_stop(ts.srv);
}

static void test_closed_port(void **state)
{
    /* A bound socket that never listens holds a port nobody answers on. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t slen = sizeof(sa);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &slen), 0);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", ntohs(sa.sin_port));

    oms_grpc_client *c = client_new(target);
    oms_error err;
    int64_t t0 = oms_mono_ms();
    assert_int_equal(call_get_items(c, "a", "b", &err), OMS_UNAVAILABLE);
    assert_true(oms_mono_ms() - t0 < CALL_TIMEOUT_MS / 2); /* fail fast, not at the deadline */
    assert_non_null(strstr(err.msg, target));
    assert_int_equal(oms_grpc_client_check_health(c, 1000, &err), OMS_UNAVAILABLE);
    oms_grpc_client_free(c);
    close(fd);
}

static void test_bind_failure(void **state)
{
    test_server ts;
    server_start(&ts, 1);
    oms_grpc_server *other = NULL;
    oms_error err;
    oms_error_clear(&err);
    assert_int_equal(oms_grpc_server_start(&other, ts.addr, methods, 1, 1, NULL, &err), OMS_ERR);
    assert_null(other);
    char want[96];
    snprintf(want, sizeof(want), "grpc: cannot bind %s", ts.addr);
    assert_string_equal(err.msg, want);

    assert_int_equal(
        oms_grpc_server_start(&other, "no-such-host.invalid:1", methods, 1, 1, NULL, &err),
        OMS_ERR);
    assert_null(other);
    assert_non_null(strstr(err.msg, "cannot bind"));
    oms_grpc_server_stop(ts.srv);
    oms_grpc_server_stop(NULL); /* no-op */
    oms_grpc_client_free(NULL);
}

typedef struct load_arg {
    oms_grpc_client *c;
    int id;
    atomic_int *ok;
    char first_err[600];
} load_arg;

static void *load_thread(void *p)
{
    load_arg *a = p;
    for (int i = 0; i < 200; i++) {
        char x[32], y[32];
        snprintf(x, sizeof(x), "t%d-%d", a->id, i);
        snprintf(y, sizeof(y), "c%d", i);
        oms_error err;
        oms_error_clear(&err);
        int rc = call_get_items(a->c, x, y, &err);
        if (rc == OMS_OK)
            atomic_fetch_add(a->ok, 1);
        else if (!a->first_err[0])
            snprintf(a->first_err, sizeof(a->first_err), "rc %d: %s", rc, err.msg);
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    test_server ts;
    server_start(&ts, 4);
    oms_grpc_client *c = client_new(ts.addr);
    atomic_int ok;
    atomic_init(&ok, 0);
    load_arg args[8];
    pthread_t tids[8];
    for (int i = 0; i < 8; i++) {
        memset(&args[i], 0, sizeof(args[i]));
        args[i].c = c;
        args[i].id = i;
        args[i].ok = &ok;
        assert_int_equal(pthread_create(&tids[i], NULL, load_thread, &args[i]), 0);
    }
    for (int i = 0; i < 8; i++)
        assert_int_equal(pthread_join(tids[i], NULL), 0);
    for (int i = 0; i < 8; i++)
        if (args[i].first_err[0])
            fail_msg("thread %d: %s", i, args[i].first_err);
    assert_int_equal(atomic_load(&ok), 8 * 200);
    assert_int_equal(atomic_load(&ts.calls), 8 * 200);
    oms_grpc_client_free(c);
    oms_grpc_server_stop(ts.srv);
}

static void test_round_robin(void **state)
{
    test_server a, b;
    server_start(&a, 1);
    server_start(&b, 1);
    char target[160];
    snprintf(target, sizeof(target), "%s, %s", a.addr, b.addr);
    oms_grpc_client *c = client_new(target);
    oms_error err;
    /* Round robin picks among READY subchannels, so the first calls may all land on
     * whichever connected first; keep calling until both have served some. */
    for (int i = 0; i < 200 && (atomic_load(&a.calls) < 5 || atomic_load(&b.calls) < 5); i++) {
        int rc = call_get_items(c, "x", "y", &err);
        if (rc != OMS_OK)
            fail_msg("call %d: %s", i, err.msg);
    }
    assert_true(atomic_load(&a.calls) >= 5);
    assert_true(atomic_load(&b.calls) >= 5);
    oms_grpc_client_free(c);
    oms_grpc_server_stop(a.srv);
    oms_grpc_server_stop(b.srv);
}

/* A handler that calls another server: ListItems on the client in its ud, with a long
 * timeout of its own; answers what the downstream handler saw as its remaining deadline
 * (quantity of the one item). */
static int h_chain(oms_grpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    (void)req;
    oms_grpc_client *down = ctx->ud;
    Api__ListItemsRequest m = API__LIST_ITEMS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    int rc = oms_grpc_call(down, "/api.StockService/ListItems", &m.base,
                           &api__list_items_response__descriptor, &out, 60000, &ctx->err);
    if (rc != OMS_OK)
        return rc;
    *resp = out; /* a ListItemsResponse: the caller unpacks it as such */
    return OMS_OK;
}

static const oms_grpc_method chain_methods[] = {
    {"/api.StockService/ListItems", &api__list_items_request__descriptor, h_chain},
};

/* The caller gives 800 ms; the front handler calls on with 60 s of its own: the
 * downstream handler sees what is left of the 800 ms, not 60 s. */
static void test_deadline_propagates(void **state)
{
    test_server back;
    server_start(&back, 1);
    oms_grpc_client *down = client_new(back.addr);
    oms_grpc_server *front = NULL;
    oms_error err;
    oms_error_clear(&err);
    assert_int_equal(oms_grpc_server_start(&front, "127.0.0.1:0", chain_methods, 1, 1, down, &err),
                     OMS_OK);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", oms_grpc_server_port(front));
    oms_grpc_client *c = client_new(addr);
    Api__ListItemsRequest m = API__LIST_ITEMS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    assert_int_equal(oms_grpc_call(c, "/api.StockService/ListItems", &m.base,
                                   &api__list_items_response__descriptor, &out, 800, &err),
                     OMS_OK);
    const Api__ListItemsResponse *r = (const Api__ListItemsResponse *)out;
    assert_int_equal(r->n_items, 1);
    assert_true(r->items[0]->quantity > 0);
    assert_true(r->items[0]->quantity <= 800);
    protobuf_c_message_free_unpacked(out, NULL);
    oms_grpc_client_free(c);
    oms_grpc_server_stop(front);
    oms_grpc_client_free(down);
    oms_grpc_server_stop(back.srv);
}

/* Work whose deadline has passed sends nothing: OMS_AGAIN, the server sees no call. */
static void test_expired_deadline_not_sent(void **state)
{
    test_server ts;
    server_start(&ts, 1);
    oms_grpc_client *c = client_new(ts.addr);
    oms_error err;
    assert_int_equal(call_get_items(c, "p1", "p2", &err), OMS_OK);
    assert_int_equal(atomic_load(&ts.calls), 1);
    oms_work_deadline_set(oms_mono_ms() - 1);
    assert_int_equal(call_get_items(c, "p1", "p2", &err), OMS_AGAIN);
    assert_non_null(strstr(err.msg, "not started"));
    oms_work_deadline_set(0);
    assert_int_equal(atomic_load(&ts.calls), 1);
    assert_int_equal(call_get_items(c, "p1", "p2", &err), OMS_OK);
    assert_int_equal(atomic_load(&ts.calls), 2);
    oms_grpc_client_free(c);
    oms_grpc_server_stop(ts.srv);
}

/* One worker, bound 1: while the slow handler holds it, the next call is refused at
 * once (RESOURCE_EXHAUSTED "server overloaded", OMS_UNAVAILABLE for the caller, the
 * handler never runs), health checks are still answered; afterwards calls pass. */
static void test_overload_refused(void **state)
{
    test_server ts;
    memset(&ts, 0, sizeof(ts));
    oms_error err;
    oms_error_clear(&err);
    assert_int_equal(oms_grpc_server_start_bounded(&ts.srv, "127.0.0.1:0", methods,
                                                   OMS_NELEM(methods), 1, 1, &ts, &err),
                     OMS_OK);
    snprintf(ts.addr, sizeof(ts.addr), "127.0.0.1:%d", oms_grpc_server_port(ts.srv));
    oms_grpc_client *c = client_new(ts.addr);
    assert_int_equal(call_get_items(c, "a", "b", &err), OMS_OK);

    oms_mutex_lock(&slow_mu);
    slow_entered = 0;
    oms_mutex_unlock(&slow_mu);
    slow_arg arg;
    memset(&arg, 0, sizeof(arg));
    arg.c = c;
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, slow_call_thread, &arg), 0);
    oms_mutex_lock(&slow_mu);
    while (!slow_entered)
        oms_cond_wait(&slow_cv, &slow_mu);
    oms_mutex_unlock(&slow_mu);

    int64_t t0 = oms_mono_ms();
    assert_int_equal(call_get_items(c, "a", "b", &err), OMS_UNAVAILABLE);
    assert_true(oms_mono_ms() - t0 < 500);
    assert_non_null(strstr(err.msg, OMS_GRPC_OVERLOADED));
    assert_int_equal(atomic_load(&ts.calls), 1);
    assert_int_equal(oms_grpc_client_check_health(c, 1000, &err), OMS_OK);

    assert_int_equal(pthread_join(tid, NULL), 0);
    /* The slow handler outlives its caller's deadline by 50 ms: poll until it is done. */
    int64_t until = oms_mono_ms() + 3000;
    int rc = call_get_items(c, "a", "b", &err);
    while (rc == OMS_UNAVAILABLE && oms_mono_ms() < until) {
        usleep(10 * 1000);
        rc = call_get_items(c, "a", "b", &err);
    }
    assert_int_equal(rc, OMS_OK);
    assert_int_equal(atomic_load(&ts.calls), 2);
    oms_grpc_client_free(c);
    oms_grpc_server_stop(ts.srv);
}

static void test_bad_client_args(void **state)
{
    oms_grpc_client *c = NULL;
    oms_error err;
    assert_int_equal(oms_grpc_client_new(&c, "", &err), OMS_INVALID);
    assert_int_equal(oms_grpc_client_new(&c, "127.0.0.1:1,nocolon", &err), OMS_INVALID);
    assert_null(c);
    assert_int_equal(oms_grpc_client_new(&c, " , ", &err), OMS_INVALID);
    assert_null(c);
}

int main(void)
{
    oms_log_init("test_grpc", OMS_LOG_WARN, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_ok),
        cmocka_unit_test(test_dns_target),
        cmocka_unit_test(test_error_codes),
        cmocka_unit_test(test_unknown_method_and_malformed),
        cmocka_unit_test(test_trace_and_ctx),
        cmocka_unit_test(test_deadline_exceeded),
        cmocka_unit_test(test_stop_in_flight),
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_closed_port),
        cmocka_unit_test(test_bind_failure),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_round_robin),
        cmocka_unit_test(test_bad_client_args),
        cmocka_unit_test(test_deadline_propagates),
        cmocka_unit_test(test_overload_refused),
        cmocka_unit_test(test_expired_deadline_not_sent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
