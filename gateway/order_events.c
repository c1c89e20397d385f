#include "order_events.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_routes.h"
#include "http_util.h"
#include "oms.pb-c.h"
#include "oms/events.h"
#include "oms/json_out.h"
#include "oms/log.h"
#include "oms/metrics.h"
#include "oms/order.h"
#include "oms/order_pb.h"
#include "oms/tracer.h"
#include "oms/util.h"

#define BUCKETS 1024
/* Events kept to close the gap between a stream's first read of its order and its
 * registration: one arriving in between is found here. */
#define RECENT 256
/* Re-reads per pending tick, so a burst of new streams cannot turn into a burst of
 * calls; the rest wait for the next tick. */
#define PENDING_PER_TICK 256
/* What an EventSource waits before reconnecting after the stream broke. */
#define RETRY_LINE "retry: 2000\n\n"

typedef struct watcher {
    struct watcher *next;
    gw_events *ev;
    oms_http_stream *s; /* the watcher's reference */
    int kitchen;        /* a kitchen stream (all orders, id and status only) */
    char oid[65];
    long long last; /* version of the last state sent (or Last-Event-ID) */
    int pending;    /* last state sent is pending: re-read it on the tick */
} watcher;

typedef struct recent_event {
    char oid[65];
    long long version;
    int pending;
    char *json; /* owned */
} recent_event;

struct gw_events {
    pthread_mutex_t mu;
    watcher *buckets[BUCKETS];
    watcher *kitchen;
    recent_event recent[RECENT];
    size_t recent_next;
    int connects; /* consumer (re)connections seen */
    oms_amqp_consumer *consumer;
    oms_grpc_client *orders;
    int timeout_ms;
};

/* One gateway per process: the routes find it here (the handlers' ud is the
 * gateway_ctx, shared with the other routes). */
static gw_events *the_events;

static size_t bucket_of(const char *oid)
{
    /* FNV-1a */
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)oid; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % BUCKETS;
}

static long long version_of(const oms_order *o)
{
    return (long long)(o->updated_ms ? o->updated_ms : o->created_ms) * 16 + (long long)o->status;
}

/* The order as GET returns it (heap, caller frees). */
static char *order_json(oms_order *o)
{
    o->reason[0] = '\0'; /* events carry why; the order's JSON does not */
    oms_jbuf b;
    oms_jbuf_init(&b, 1024);
    oms_order_write_json(&b, o);
    size_t len;
    return oms_jbuf_take(&b, &len);
}

/* "id: <v>\nevent: <name>\ndata: <json>\n\n" sent to s; json has no newline (compact). */
static void send_event(oms_http_stream *s, long long version, const char *name, const char *json)
{
    oms_jbuf b;
    oms_jbuf_init(&b, strlen(json) + 64);
    oms_jbuf_lit(&b, "id: ");
    oms_jbuf_int(&b, version);
    oms_jbuf_lit(&b, "\nevent: ");
    oms_jbuf_raw(&b, name, strlen(name));
    oms_jbuf_lit(&b, "\ndata: ");
    oms_jbuf_raw(&b, json, strlen(json));
    oms_jbuf_lit(&b, "\n\n");
    (void)oms_http_stream_send(s, b.p, b.len); /* an ended stream is unlinked by its callback */
    oms_jbuf_free(&b);
}

/* Sends the state to the watchers of oid that have an older one; under ev->mu. */
static int deliver_locked(gw_events *ev, const char *oid, long long version, int pending,
                          const char *json)
{
    int n = 0;
    for (watcher *w = ev->buckets[bucket_of(oid)]; w; w = w->next) {
        if (strcmp(w->oid, oid) != 0 || version <= w->last)
            continue;
        send_event(w->s, version, "order", json);
        w->last = version;
        w->pending = pending;
        n++;
    }
    return n;
}

static void remember_locked(gw_events *ev, const char *oid, long long version, int pending,
                            const char *json)
{
    recent_event *r = &ev->recent[ev->recent_next];
    ev->recent_next = (ev->recent_next + 1) % RECENT;
    free(r->json);
    snprintf(r->oid, sizeof(r->oid), "%s", oid);
    r->version = version;
    r->pending = pending;
    r->json = oms_strdup(json);
}

/* The kitchen's view of a change: the order number and its status, never who. */
static void kitchen_locked(gw_events *ev, const oms_order *o, long long version)
{
    if (!ev->kitchen)
        return;
    oms_jbuf b;
    oms_jbuf_init(&b, 128);
    oms_jbuf_lit(&b, "{\"orderID\":");
    oms_jbuf_str(&b, o->order_id);
    oms_jbuf_lit(&b, ",\"status\":");
    oms_jbuf_str(&b, oms_order_status_str(o->status));
    oms_jbuf_lit(&b, "}");
    for (watcher *w = ev->kitchen; w; w = w->next)
        send_event(w->s, version, "order", b.p);
    oms_jbuf_free(&b);
}

/* ---- the broker side ------------------------------------------------------------- */

static int kitchen_relevant(oms_order_status st)
{
    return st == OMS_ORDER_PAID || st == OMS_ORDER_COOKING || st == OMS_ORDER_READY ||
           st == OMS_ORDER_COLLECTED || st == OMS_ORDER_CANCELLED || st == OMS_ORDER_REFUNDED;
}

static int on_event(const oms_amqp_delivery *d, void *ud)
{
    gw_events *ev = ud;
    oms_order o;
    oms_error err;
    if (oms_order_from_json_str(d->body, d->len, &o, &err) != OMS_OK) {
        oms_log_warn("order event unreadable; not pushed", "exchange", d->exchange, "error",
                     err.msg);
        return OMS_INVALID;
    }
    long long version = version_of(&o);
    int pending = o.status == OMS_ORDER_PENDING;
    char *json = order_json(&o);
    oms_mutex_lock(&ev->mu);
    remember_locked(ev, o.order_id, version, pending, json);
    deliver_locked(ev, o.order_id, version, pending, json);
    if (kitchen_relevant(o.status))
        kitchen_locked(ev, &o, version);
    oms_mutex_unlock(&ev->mu);
    free(json);
    oms_order_free(&o);
    return OMS_OK;
}

/* GetOrder; on OMS_OK *out is the order (caller frees with oms_order_free). */
static int read_order(gw_events *ev, const char *oid, oms_order *out, oms_error *err)
{
    Api__GetOrderRequest m = API__GET_ORDER_REQUEST__INIT;
    m.orderid = (char *)oid;
    ProtobufCMessage *pb = NULL;
    int rc = oms_grpc_call(ev->orders, "/api.OrderService/GetOrder", &m.base,
                           &api__order__descriptor, &pb, ev->timeout_ms, err);
    if (rc != OMS_OK)
        return rc;
    rc = oms_order_from_pb((const Api__Order *)pb, out, err);
    protobuf_c_message_free_unpacked(pb, NULL);
    if (rc == OMS_OK && (int)out->status < 0)
        out->status = OMS_ORDER_PENDING;
    return rc;
}

/* Re-reads each order and pushes it to its watchers when newer. */
static void refresh(gw_events *ev, char (*oids)[65], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        oms_order o;
        oms_error err;
        oms_error_clear(&err);
        if (read_order(ev, oids[i], &o, &err) != OMS_OK) {
            oms_log_debug("stream re-read failed", "order_id", oids[i], "error", err.msg);
            continue;
        }
        long long version = version_of(&o);
        char *json = order_json(&o);
        oms_mutex_lock(&ev->mu);
        deliver_locked(ev, o.order_id, version, o.status == OMS_ORDER_PENDING, json);
        oms_mutex_unlock(&ev->mu);
        free(json);
        oms_order_free(&o);
    }
}

/* The order ids of the watchers that match (pending only, or all), each once, at most
 * max; heap array owned by the caller. */
static size_t watched(gw_events *ev, int pending_only, size_t max, char (**out)[65])
{
    size_t n = 0, cap = 16;
    char(*ids)[65] = oms_xmalloc(cap * sizeof(*ids));
    oms_mutex_lock(&ev->mu);
    for (size_t b = 0; b < BUCKETS && n < max; b++)
        for (watcher *w = ev->buckets[b]; w && n < max; w = w->next) {
            if (pending_only && !w->pending)
                continue;
            int seen = 0;
            for (watcher *v = ev->buckets[b]; v != w && !seen; v = v->next)
                seen = strcmp(v->oid, w->oid) == 0 && (!pending_only || v->pending);
            if (seen)
                continue;
            if (n == cap) {
                cap *= 2;
                ids = oms_xrealloc(ids, cap * sizeof(*ids));
            }
            memcpy(ids[n++], w->oid, sizeof(w->oid));
        }
    oms_mutex_unlock(&ev->mu);
    *out = ids;
    return n;
}

/* After a reconnect: events published while the queue was gone are lost, so every
 * watched order is re-read, and the kitchen displays are told to reload. */
static void on_connect(void *ud)
{
    gw_events *ev = ud;
    oms_mutex_lock(&ev->mu);
    int first = ev->connects++ == 0;
    if (!first)
        for (watcher *w = ev->kitchen; w; w = w->next)
            (void)oms_http_stream_send(w->s, "event: resync\ndata: {}\n\n", 24);
    oms_mutex_unlock(&ev->mu);
    if (first)
        return;
    char(*ids)[65] = NULL;
    size_t n = watched(ev, 0, (size_t)-1, &ids);
    oms_log_info("order events: broker connection back; re-reading watched orders");
    refresh(ev, ids, n);
    free(ids);
}

int gw_events_pending_tick(void *gateway, oms_error *err)
{
    (void)err;
    (void)gateway;
    gw_events *ev = the_events;
    if (!ev)
        return OMS_OK;
    char(*ids)[65] = NULL;
    size_t n = watched(ev, 1, PENDING_PER_TICK, &ids);
    refresh(ev, ids, n);
    free(ids);
    return OMS_OK;
}

int gw_events_new(gw_events **out, const oms_amqp_config *amqp, oms_grpc_client *orders,
                  int timeout_ms, oms_error *err)
{
    *out = NULL;
    gw_events *ev = oms_xcalloc(1, sizeof(*ev));
    if (pthread_mutex_init(&ev->mu, NULL) != 0) {
        free(ev);
        return oms_error_set(err, OMS_ERR, "order events: cannot create a mutex");
    }
    ev->orders = orders;
    ev->timeout_ms = timeout_ms;
    char host[64] = "", rnd[9] = "", queue[160];
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "gateway");
    host[sizeof(host) - 1] = '\0';
    if (oms_random_hex(rnd, 4) != OMS_OK)
        snprintf(rnd, sizeof(rnd), "0");
    snprintf(queue, sizeof(queue), "gateway.%s-%ld-%s.events", host, (long)getpid(), rnd);
    const char *exchanges[OMS_EVENT__COUNT];
    for (int i = 0; i < OMS_EVENT__COUNT; i++)
        exchanges[i] = oms_event_exchanges[i];
    oms_amqp_consumer_config cc = {
        .queue = queue,
        .exchanges = exchanges,
        .nexchanges = OMS_EVENT__COUNT,
        .prefetch = 64,
        .workers = 1,
        .fn = on_event,
        .ud = ev,
        .transient = 1,
        .on_connect = on_connect,
    };
    the_events = ev;
    int rc = oms_amqp_consumer_start(&ev->consumer, amqp, &cc, err);
    if (rc != OMS_OK) {
        the_events = NULL;
        pthread_mutex_destroy(&ev->mu);
        free(ev);
        return rc;
    }
    *out = ev;
    return OMS_OK;
}

void gw_events_free(gw_events *ev)
{
    if (!ev)
        return;
    oms_amqp_consumer_stop(ev->consumer);
    if (the_events == ev)
        the_events = NULL;
    for (size_t i = 0; i < RECENT; i++)
        free(ev->recent[i].json);
    pthread_mutex_destroy(&ev->mu);
    free(ev);
}

/* ---- the streams ------------------------------------------------------------------- */

static void unlink_from(watcher **head, watcher *w)
{
    for (watcher **p = head; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            return;
        }
}

static void count_stream(const char *kind)
{
    char labels[64] = "";
    oms_metrics_label(labels, sizeof(labels), "kind", kind);
    oms_metrics_counter_add("gateway_streams_opened_total",
                            "Event streams opened, by kind (order, kitchen).", labels, 1);
}

/* The stream ended (client gone, server stopping): forget the watcher. */
static void watcher_closed(oms_http_stream *s, void *arg)
{
    watcher *w = arg;
    gw_events *ev = w->ev;
    oms_mutex_lock(&ev->mu);
    unlink_from(w->kitchen ? &ev->kitchen : &ev->buckets[bucket_of(w->oid)], w);
    oms_mutex_unlock(&ev->mu);
    oms_http_stream_release(s);
    free(w);
}

/* Last-Event-ID: the version the client already has; 0 when absent. -1: malformed. */
static long long last_event_id(const oms_http_req *req)
{
    const char *h = oms_http_header(req, "Last-Event-ID");
    if (!h || !*h)
        return 0;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(h, &end, 10);
    if (errno || *end || v < 0 || end == h)
        return -1;
    return v;
}

static void stream_unavailable(oms_http_resp *resp)
{
    oms_http_resp_error(resp, 503, "order events are not available");
    oms_http_resp_header(resp, "Retry-After", "1");
}

void gw_order_events(const oms_http_req *req, oms_http_resp *resp)
{
    gw_events *ev = the_events;
    const char *cid = req->params[0], *oid = req->params[1];
    if (!gw_check_id(resp, "customerID", cid) || !gw_check_id(resp, "orderID", oid))
        return;
    long long since = last_event_id(req);
    if (since < 0) {
        oms_http_resp_error(resp, 400, "Last-Event-ID: must be an event id from this stream");
        return;
    }
    if (!ev) {
        stream_unavailable(resp);
        return;
    }
    oms_span_set_str(oms_span_current(), OMS_ATTR_ORDER_ID, oid);
    oms_order o;
    oms_error err;
    oms_error_clear(&err);
    int rc = read_order(ev, oid, &o, &err);
    if (rc != OMS_OK) {
        gw_reply_status(resp, rc, err.msg);
        return;
    }
    if (strcmp(o.customer_id, cid) != 0) {
        /* Same answer as a missing order: never reveal another customer's order. */
        oms_order_free(&o);
        oms_http_resp_error(resp, 404, "order %s not found", oid);
        return;
    }
    watcher *w = oms_xcalloc(1, sizeof(*w));
    w->ev = ev;
    snprintf(w->oid, sizeof(w->oid), "%s", oid);
    w->last = since;
    w->s = oms_http_stream_open(req, resp, watcher_closed, w);
    if (!w->s) {
        free(w);
        oms_order_free(&o);
        return;
    }
    count_stream("order");
    long long version = version_of(&o);
    char *json = order_json(&o);
    (void)oms_http_stream_send(w->s, RETRY_LINE, sizeof(RETRY_LINE) - 1);
    oms_mutex_lock(&ev->mu);
    size_t b = bucket_of(oid);
    w->next = ev->buckets[b];
    ev->buckets[b] = w;
    if (version > w->last) {
        send_event(w->s, version, "order", json);
        w->last = version;
    }
    w->pending = o.status == OMS_ORDER_PENDING;
    /* What arrived between the read above and now, oldest first. */
    for (size_t i = 0; i < RECENT; i++) {
        const recent_event *r = &ev->recent[(ev->recent_next + i) % RECENT];
        if (r->json && strcmp(r->oid, oid) == 0 && r->version > w->last) {
            send_event(w->s, r->version, "order", r->json);
            w->last = r->version;
            w->pending = r->pending;
        }
    }
    oms_mutex_unlock(&ev->mu);
    free(json);
    oms_order_free(&o);
}

void gw_kitchen_events(const oms_http_req *req, oms_http_resp *resp)
{
    gw_events *ev = the_events;
    if (!gw_require_staff(req, resp, NULL))
        return;
    if (!ev) {
        stream_unavailable(resp);
        return;
    }
    watcher *w = oms_xcalloc(1, sizeof(*w));
    w->ev = ev;
    w->kitchen = 1;
    w->s = oms_http_stream_open(req, resp, watcher_closed, w);
    if (!w->s) {
        free(w);
        return;
    }
    count_stream("kitchen");
    (void)oms_http_stream_send(w->s, RETRY_LINE, sizeof(RETRY_LINE) - 1);
    oms_mutex_lock(&ev->mu);
    w->next = ev->kitchen;
    ev->kitchen = w;
    oms_mutex_unlock(&ev->mu);
}
