/* Service discovery over etcd's v3 JSON gateway (oms/discovery.h).
 *
 * One background thread per process does both halves, so a service has exactly one
 * extra thread and one keep-alive HTTP connection to etcd:
 *  - registration: lease/grant (TTL) -> kv/put key=addr with that lease; then
 *    lease/keepalive every TTL/3. etcd answers a keepalive for an expired lease with
 *    200 and no TTL field, so that (or a lease it no longer knows) means register
 *    again with a new lease. Stop revokes the lease (the key goes with it).
 *  - resolution: kv/range over <prefix>/services/<name>/; the values, sorted, become
 *    the client's round-robin target list when they differ from the current one. An
 *    empty answer keeps the last list: with nothing registered there is nothing better
 *    to dial, and gRPC already skips dead addresses.
 * A second thread keeps a watch (POST /v3/watch, a response that streams one JSON
 * object per change) open on <prefix>/services/: any change, and every (re)start of
 * the watch, wakes the first thread to re-read at once, so a new or vanished instance
 * is followed within milliseconds. The kv/range every DISCOVERY_POLL_MS stays as a
 * safety net for a watch that died silently.
 *
 * etcd's JSON mapping: keys and values are base64, int64 fields (lease IDs) are JSON
 * strings, zero/false fields are omitted. Requests are bounded (timeouts, response cap)
 * so a hung etcd cannot wedge the thread past stop. */
#include "oms/discovery.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "oms/dynbuf.h"
#include "oms/log.h"
#include "oms/util.h"

#define DISC_MAX_CLIENTS 8
#define DISC_HTTP_TIMEOUT_MS 2000
#define DISC_CONNECT_TIMEOUT_MS 1000
#define DISC_RESPONSE_MAX (1024 * 1024) /* a range over one service's instances */
#define DISC_ADDR_MAX 256
#define DISC_TARGETS_MAX 1024 /* grpc_client's own limit */

typedef struct disc_client {
    char service[64];
    oms_grpc_client *grpc;          /* borrowed: the caller frees it after stop */
    char targets[DISC_TARGETS_MAX]; /* what the channel dials now */
    int warned_empty;               /* log "no instances" once per episode */
} disc_client;

struct oms_discovery {
    const oms_discovery_config *cfg; /* borrowed */
    int etcd;                        /* mode == etcd */
    char **endpoints;                /* owned, nendpoints entries */
    int nendpoints;
    atomic_int good; /* endpoint that answered last: tried first */

    pthread_mutex_t mu; /* guards everything below and the clients list */
    pthread_cond_t cv;  /* on CLOCK_MONOTONIC; signalled by stop */
    int stopping;
    int thread_started;
    pthread_t thread;

    /* registration (one per process) */
    char key[512]; /* empty: not registering */
    char addr[DISC_ADDR_MAX];
    char lease[32];         /* decimal lease ID as etcd sends it; empty: none yet */
    int64_t next_keepalive; /* monotonic ms */

    disc_client clients[DISC_MAX_CLIENTS];
    int nclients;
    int changed;       /* the watch saw a change: re-read now (guarded by mu) */
    int watch_started; /* the watcher thread runs */
    pthread_t watcher;
    atomic_long watch_events; /* changes the watch delivered (tests, logs) */

    CURL *curl; /* the thread's handle (keeps its connection to etcd open) */
};

/* ---- small helpers ------------------------------------------------------------------- */

/* base64 of len bytes of in; caller frees. */
static char *b64_encode(const char *in, size_t len)
{
    char *out = oms_xmalloc(4 * ((len + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in, (int)len);
    return out;
}

/* Decodes base64 text into a NUL-terminated string (caller frees), NULL when invalid. */
static char *b64_decode(const char *in)
{
    size_t n = strlen(in);
    if (n % 4 != 0)
        return NULL;
    char *out = oms_xmalloc(n / 4 * 3 + 1);
    int got = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)in, (int)n);
    if (got < 0) {
        free(out);
        return NULL;
    }
    /* EVP_DecodeBlock counts the padding as zero bytes; take them off again. */
    if (n >= 1 && in[n - 1] == '=')
        got--;
    if (n >= 2 && in[n - 2] == '=')
        got--;
    out[got] = '\0';
    return out;
}

/* The key range of everything under prefix: [prefix, prefix with last byte + 1). */
static void range_end_of(const char *prefix, char *out, size_t cap)
{
    snprintf(out, cap, "%s", prefix);
    size_t n = strlen(out);
    if (n > 0)
        out[n - 1] = (char)(out[n - 1] + 1);
}

/* ---- HTTP to etcd ---------------------------------------------------------------------- */

/* POSTs body (JSON) to path on one endpoint; on OMS_OK *resp is the parsed answer
 * (caller: json_decref). HTTP errors other than 200 carry etcd's message. */
static int etcd_post_one(CURL *curl, const char *endpoint, const char *path, const char *body,
                         json_t **resp, oms_error *err)
{
    char url[512];
    snprintf(url, sizeof(url), "%s%s", endpoint, path);
    oms_dynbuf b;
    oms_dynbuf_init(&b, DISC_RESPONSE_MAX);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_reset(curl);
    CURLcode cc = curl_easy_setopt(curl, CURLOPT_URL, url);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, oms_dynbuf_curl_write);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)DISC_HTTP_TIMEOUT_MS);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)DISC_CONNECT_TIMEOUT_MS);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM */
    if (cc == CURLE_OK)
        cc = curl_easy_perform(curl);

    int rc = OMS_OK;
    long status = 0;
    if (cc != CURLE_OK) {
        rc = oms_error_set(err, OMS_UNAVAILABLE, "etcd %s: %s", url,
                           b.refused ? "response too large" : curl_easy_strerror(cc));
        goto done;
    }
    (void)curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    json_error_t jerr;
    json_t *j = b.p ? json_loadb(b.p, b.len, 0, &jerr) : NULL;
    if (status != 200) {
        const char *msg = j ? json_string_value(json_object_get(j, "message")) : NULL;
        if (!msg && j)
            msg = json_string_value(json_object_get(j, "error"));
        rc = oms_error_set(err, status >= 500 ? OMS_UNAVAILABLE : OMS_ERR, "etcd %s: HTTP %ld%s%s",
                           url, status, msg ? ": " : "", msg ? msg : "");
        json_decref(j);
        goto done;
    }
    if (!j) {
        rc = oms_error_set(err, OMS_ERR, "etcd %s: answer is not JSON", url);
        goto done;
    }
    *resp = j;
done:
    curl_slist_free_all(hdrs);
    oms_dynbuf_free(&b);
    return rc;
}

/* POSTs to the endpoint that worked last, then the others. body is consumed. */
static int etcd_post(oms_discovery *d, CURL *curl, const char *path, json_t *body, json_t **resp,
                     oms_error *err)
{
    *resp = NULL;
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        return oms_error_set(err, OMS_ERR, "etcd %s: cannot encode the request", path);
    int rc = OMS_UNAVAILABLE;
    int first = atomic_load(&d->good);
    for (int i = 0; i < d->nendpoints; i++) {
        int e = (first + i) % d->nendpoints;
        rc = etcd_post_one(curl, d->endpoints[e], path, text, resp, err);
        if (rc == OMS_OK) {
            atomic_store(&d->good, e);
            break;
        }
        if (rc != OMS_UNAVAILABLE)
            break; /* etcd answered: another endpoint would say the same */
    }
    free(text);
    return rc;
}

/* ---- registration ------------------------------------------------------------------------ */

/* Grants a lease and puts key=addr under it. Called with mu NOT held (network). */
static int etcd_register(oms_discovery *d, CURL *curl, const char *key, const char *addr,
                         char *lease_out, size_t lease_cap, oms_error *err)
{
    json_t *resp = NULL;
    int rc =
        etcd_post(d, curl, "/v3/lease/grant", json_pack("{s:I}", "TTL", d->cfg->ttl_s), &resp, err);
    if (rc != OMS_OK)
        return rc;
    const char *id = json_string_value(json_object_get(resp, "ID"));
    if (!id || !*id) {
        json_decref(resp);
        return oms_error_set(err, OMS_ERR, "etcd lease/grant: no lease ID in the answer");
    }
    snprintf(lease_out, lease_cap, "%s", id);
    json_decref(resp);

    char *k64 = b64_encode(key, strlen(key));
    char *v64 = b64_encode(addr, strlen(addr));
    rc = etcd_post(d, curl, "/v3/kv/put",
                   json_pack("{s:s, s:s, s:s}", "key", k64, "value", v64, "lease", lease_out),
                   &resp, err);
    free(k64);
    free(v64);
    json_decref(resp);
    return rc;
}

/* One keepalive; *expired = 1 when etcd no longer knows the lease. */
static int etcd_keepalive(oms_discovery *d, CURL *curl, const char *lease, int *expired,
                          oms_error *err)
{
    json_t *resp = NULL;
    *expired = 0;
    int rc = etcd_post(d, curl, "/v3/lease/keepalive", json_pack("{s:s}", "ID", lease), &resp, err);
    if (rc != OMS_OK)
        return rc;
    json_t *result = json_object_get(resp, "result");
    const char *ttl = json_string_value(json_object_get(result ? result : resp, "TTL"));
    *expired = !ttl || strcmp(ttl, "0") == 0;
    json_decref(resp);
    return OMS_OK;
}

static void etcd_revoke(oms_discovery *d, CURL *curl, const char *lease)
{
    json_t *resp = NULL;
    oms_error err;
    oms_error_clear(&err);
    if (etcd_post(d, curl, "/v3/lease/revoke", json_pack("{s:s}", "ID", lease), &resp, &err) !=
        OMS_OK)
        oms_log_warn("discovery: cannot revoke the lease; the key expires with it", "error",
                     err.msg);
    json_decref(resp);
}

/* ---- resolution ---------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The live instances of service as a sorted comma list in out ("" when none). */
static int etcd_resolve(oms_discovery *d, CURL *curl, const char *service, char *out, size_t cap,
                        oms_error *err)
{
    char prefix[512], end[512];
    snprintf(prefix, sizeof(prefix), "%s/services/%s/", d->cfg->etcd_prefix, service);
    range_end_of(prefix, end, sizeof(end));
    char *k64 = b64_encode(prefix, strlen(prefix));
    char *e64 = b64_encode(end, strlen(end));
    json_t *resp = NULL;
    int rc = etcd_post(d, curl, "/v3/kv/range",
                       json_pack("{s:s, s:s}", "key", k64, "range_end", e64), &resp, err);
    free(k64);
    free(e64);
    if (rc != OMS_OK)
        return rc;

    json_t *kvs = json_object_get(resp, "kvs"); /* absent when there are none */
    size_t n = json_is_array(kvs) ? json_array_size(kvs) : 0;
    char **addrs = oms_xcalloc(n ? n : 1, sizeof(*addrs));
    size_t got = 0;
    for (size_t i = 0; i < n; i++) {
        const char *v = json_string_value(json_object_get(json_array_get(kvs, i), "value"));
        char *addr = v ? b64_decode(v) : NULL;
        /* Skip what cannot be an address rather than poisoning the whole list. */
        if (!addr || !*addr || strlen(addr) >= DISC_ADDR_MAX || strchr(addr, ',')) {
            free(addr);
            continue;
        }
        addrs[got++] = addr;
    }
    qsort(addrs, got, sizeof(*addrs), cmp_str);
    out[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; i < got; i++) {
        if (i > 0 && strcmp(addrs[i], addrs[i - 1]) == 0)
            continue;
        int w = snprintf(out + used, cap - used, "%s%s", used ? "," : "", addrs[i]);
        if (w < 0 || (size_t)w >= cap - used) {
            out[used] = '\0'; /* keep the instances that fit */
            break;
        }
        used += (size_t)w;
    }
    for (size_t i = 0; i < got; i++)
        free(addrs[i]);
    free(addrs);
    json_decref(resp);
    return OMS_OK;
}

/* Re-reads service's instances and swaps the client's targets when they changed. */
static void refresh_client(oms_discovery *d, CURL *curl, int idx)
{
    char service[64], current[DISC_TARGETS_MAX], live[DISC_TARGETS_MAX];
    oms_mutex_lock(&d->mu);
    snprintf(service, sizeof(service), "%s", d->clients[idx].service);
    snprintf(current, sizeof(current), "%s", d->clients[idx].targets);
    oms_grpc_client *grpc = d->clients[idx].grpc;
    oms_mutex_unlock(&d->mu);

    oms_error err;
    oms_error_clear(&err);
    if (etcd_resolve(d, curl, service, live, sizeof(live), &err) != OMS_OK) {
        oms_log_debug("discovery: cannot read the registry", "service", service, "error", err.msg);
        return;
    }
    disc_client *c = &d->clients[idx];
    if (!live[0]) {
        if (!c->warned_empty)
            oms_log_warn("discovery: no live instances registered; keeping the last ones",
                         "service", service, "targets", current);
        c->warned_empty = 1;
        return;
    }
    c->warned_empty = 0;
    if (strcmp(live, current) == 0)
        return;
    if (oms_grpc_client_set_targets(grpc, live, &err) != OMS_OK) {
        oms_log_warn("discovery: cannot switch to the registered instances", "service", service,
                     "targets", live, "error", err.msg);
        return;
    }
    oms_mutex_lock(&d->mu);
    snprintf(c->targets, sizeof(c->targets), "%s", live);
    oms_mutex_unlock(&d->mu);
    oms_log_info("discovery: instances changed", "service", service, "from", current, "to", live);
}

/* ---- the thread ---------------------------------------------------------------------- */

/* Keeps the registration alive (or creates it again). */
static void tend_registration(oms_discovery *d, CURL *curl)
{
    char key[sizeof(d->key)], addr[DISC_ADDR_MAX], lease[32];
    oms_mutex_lock(&d->mu);
    int due = d->key[0] && oms_mono_ms() >= d->next_keepalive;
    snprintf(key, sizeof(key), "%s", d->key);
    snprintf(addr, sizeof(addr), "%s", d->addr);
    snprintf(lease, sizeof(lease), "%s", d->lease);
    oms_mutex_unlock(&d->mu);
    if (!due)
        return;

    oms_error err;
    oms_error_clear(&err);
    int rc = OMS_OK, expired = !lease[0];
    if (lease[0])
        rc = etcd_keepalive(d, curl, lease, &expired, &err);
    if (rc == OMS_OK && expired) {
        if (lease[0])
            oms_log_warn("discovery: lease expired; registering again", "key", key);
        rc = etcd_register(d, curl, key, addr, lease, sizeof(lease), &err);
        if (rc == OMS_OK)
            oms_log_info("discovery: registered", "key", key, "lease", lease);
        else
            lease[0] = '\0';
    }
    int64_t period = d->cfg->ttl_s * 1000 / 3;
    oms_mutex_lock(&d->mu);
    if (rc == OMS_OK) {
        snprintf(d->lease, sizeof(d->lease), "%s", lease);
        d->next_keepalive = oms_mono_ms() + period;
    } else {
        /* etcd away: retry soon; the lease may still be alive when it is back. */
        d->next_keepalive = oms_mono_ms() + 500;
    }
    oms_mutex_unlock(&d->mu);
    if (rc != OMS_OK)
        oms_log_debug("discovery: registration not renewed", "key", key, "error", err.msg);
}

/* Sleeps ms on the monotonic clock; returns 1 when stop was asked. */
static int disc_wait(oms_discovery *d, int64_t ms)
{
    struct timespec until;
    oms_mono_deadline_ms(ms, &until);
    oms_mutex_lock(&d->mu);
    while (!d->stopping && !d->changed) {
        if (oms_cond_timedwait(&d->cv, &d->mu, &until) == ETIMEDOUT)
            break;
    }
    int stop = d->stopping;
    oms_mutex_unlock(&d->mu);
    return stop;
}

/* ---- the watch ------------------------------------------------------------------------ */

/* Tells the registry thread to re-read now. */
static void registry_changed(oms_discovery *d)
{
    oms_mutex_lock(&d->mu);
    d->changed = 1;
    oms_cond_broadcast(&d->cv);
    oms_mutex_unlock(&d->mu);
}

static int stopping(oms_discovery *d)
{
    oms_mutex_lock(&d->mu);
    int s = d->stopping;
    oms_mutex_unlock(&d->mu);
    return s;
}

typedef struct watch_stream {
    oms_discovery *d;
    size_t since_newline; /* bytes of the current message: bounded like any answer */
} watch_stream;

/* The watch's body: one JSON object per message ({"result":{"created":true}} first,
 * then {"result":{"events":[...]}} per change). Their content does not matter: any
 * message means "re-read", which keeps one code path (kv/range) for what is live. */
static size_t watch_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
    watch_stream *w = ud;
    size_t n = size * nmemb;
    int message = 0;
    for (size_t i = 0; i < n; i++) {
        if (ptr[i] == '\n') {
            message = 1;
            w->since_newline = 0;
        } else if (++w->since_newline > DISC_RESPONSE_MAX) {
            return 0; /* a runaway message: drop the stream, it is opened again */
        }
    }
    if (message) {
        atomic_fetch_add(&w->d->watch_events, 1);
        registry_changed(w->d);
    }
    return n;
}

/* Polled by libcurl about once a second even on an idle stream: stop aborts it. */
static int watch_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    return stopping(ud);
}

static void *watch_thread(void *arg)
{
    oms_discovery *d = arg;
    oms_thread_background();
    char prefix[512], end[512];
    snprintf(prefix, sizeof(prefix), "%s/services/", d->cfg->etcd_prefix);
    range_end_of(prefix, end, sizeof(end));
    char *k64 = b64_encode(prefix, strlen(prefix)), *e64 = b64_encode(end, strlen(end));
    char body[2048];
    snprintf(body, sizeof(body), "{\"create_request\":{\"key\":\"%s\",\"range_end\":\"%s\"}}",
             k64 ? k64 : "", e64 ? e64 : "");
    free(k64);
    free(e64);
    CURL *curl = curl_easy_init();
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    int failing = 0;
    for (int attempt = 0; curl && hdrs && !stopping(d); attempt++) {
        char url[512];
        snprintf(url, sizeof(url), "%s/v3/watch",
                 d->endpoints[(atomic_load(&d->good) + attempt) % d->nendpoints]);
        watch_stream w = {d, 0};
        curl_easy_reset(curl);
        CURLcode cc = curl_easy_setopt(curl, CURLOPT_URL, url);
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, watch_data);
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(curl, CURLOPT_WRITEDATA, &w);
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, watch_progress);
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(curl, CURLOPT_XFERINFODATA, d);
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)DISC_CONNECT_TIMEOUT_MS);
        /* No overall timeout (the stream lives as long as etcd does); TCP keepalive
         * finds a peer that vanished without closing. */
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        if (cc == CURLE_OK)
            cc = curl_easy_perform(curl);
        if (stopping(d))
            break;
        if (!failing)
            oms_log_debug("discovery: watch ended; opening it again", "url", url, "error",
                          curl_easy_strerror(cc));
        failing = 1;
        /* Whatever changed while the watch was down is read again when it reopens (its
         * first message); meanwhile the poll covers. */
        if (disc_wait(d, 500))
            break;
        oms_mutex_lock(&d->mu);
        d->changed = 0; /* the wait may have returned on a stale flag */
        oms_mutex_unlock(&d->mu);
    }
    curl_slist_free_all(hdrs);
    if (curl)
        curl_easy_cleanup(curl);
    return NULL;
}

static void *disc_thread(void *arg)
{
    oms_discovery *d = arg;
    /* Wake often enough for both the keepalive (TTL/3) and the clients' poll. */
    int64_t tick = d->cfg->poll_ms;
    if (tick > d->cfg->ttl_s * 1000 / 3)
        tick = d->cfg->ttl_s * 1000 / 3;
    int64_t next_poll = 0;
    for (;;) {
        tend_registration(d, d->curl);
        oms_mutex_lock(&d->mu);
        int changed = d->changed;
        d->changed = 0;
        oms_mutex_unlock(&d->mu);
        if (changed || oms_mono_ms() >= next_poll) {
            oms_mutex_lock(&d->mu);
            int n = d->nclients;
            oms_mutex_unlock(&d->mu);
            for (int i = 0; i < n; i++)
                refresh_client(d, d->curl, i);
            next_poll = oms_mono_ms() + d->cfg->poll_ms;
        }
        if (disc_wait(d, tick))
            break;
    }
    return NULL;
}

/* ---- public API ---------------------------------------------------------------------- */

static void disc_free(oms_discovery *d)
{
    for (int i = 0; i < d->nendpoints; i++)
        free(d->endpoints[i]);
    free(d->endpoints);
    if (d->curl)
        curl_easy_cleanup(d->curl);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    if (d->etcd)
        curl_global_cleanup();
    free(d);
}

/* Splits the comma list of endpoints, trimming spaces and a trailing '/'. */
static int parse_endpoints(oms_discovery *d, const char *list, oms_error *err)
{
    char *copy = oms_strdup(list);
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        size_t n = strlen(tok);
        while (n && (tok[n - 1] == ' ' || tok[n - 1] == '/'))
            tok[--n] = '\0';
        if (!n)
            continue;
        if (strncmp(tok, "http://", 7) != 0 && strncmp(tok, "https://", 8) != 0) {
            free(copy);
            return oms_error_set(err, OMS_INVALID,
                                 "ETCD_ENDPOINTS: \"%s\" is not an http:// or https:// URL", tok);
        }
        d->endpoints = oms_xrealloc(d->endpoints, (size_t)(d->nendpoints + 1) * sizeof(char *));
        d->endpoints[d->nendpoints++] = oms_strdup(tok);
    }
    free(copy);
    if (!d->nendpoints)
        return oms_error_set(err, OMS_INVALID, "ETCD_ENDPOINTS: no endpoint given");
    return OMS_OK;
}

int oms_discovery_start(oms_discovery **out, const oms_discovery_config *cfg, oms_error *err)
{
    *out = NULL;
    oms_discovery *d = oms_xcalloc(1, sizeof(*d));
    d->cfg = cfg;
    d->etcd = cfg->mode && strcmp(cfg->mode, "etcd") == 0;
    atomic_init(&d->good, 0);
    atomic_init(&d->watch_events, 0);
    int e = oms_cond_init_monotonic(&d->cv);
    if (e != 0) {
        free(d);
        return oms_error_set(err, OMS_ERR, "discovery: cond init: %s", strerror(e));
    }
    e = pthread_mutex_init(&d->mu, NULL);
    if (e != 0) {
        pthread_cond_destroy(&d->cv);
        free(d);
        return oms_error_set(err, OMS_ERR, "discovery: mutex init: %s", strerror(e));
    }
    if (!d->etcd) {
        *out = d;
        return OMS_OK;
    }
    /* From here disc_free undoes everything (it balances this global init). */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        d->etcd = 0;
        disc_free(d);
        return oms_error_set(err, OMS_ERR, "discovery: curl_global_init failed");
    }
    int rc = parse_endpoints(d, cfg->etcd_endpoints ? cfg->etcd_endpoints : "", err);
    if (rc != OMS_OK) {
        disc_free(d);
        return rc;
    }
    d->curl = curl_easy_init();
    if (!d->curl) {
        disc_free(d);
        return oms_error_set(err, OMS_ERR, "discovery: curl_easy_init failed");
    }
    e = pthread_create(&d->thread, NULL, disc_thread, d);
    if (e != 0) {
        disc_free(d);
        return oms_error_set(err, OMS_ERR, "discovery: pthread_create: %s", strerror(e));
    }
    d->thread_started = 1;
    e = pthread_create(&d->watcher, NULL, watch_thread, d);
    if (e != 0) /* the poll still follows the registry, only slower */
        oms_log_warn("discovery: no watch thread; polling only", "error", strerror(e));
    else
        d->watch_started = 1;
    *out = d;
    return OMS_OK;
}

/* The address to register: ADVERTISE_ADDR, else listen_addr with a wildcard host
 * replaced by this machine's name (0.0.0.0 cannot be dialled from elsewhere). */
static int advertised(const oms_discovery *d, const char *listen_addr, char *out, size_t cap,
                      oms_error *err)
{
    const char *a =
        d->cfg->advertise_addr && *d->cfg->advertise_addr ? d->cfg->advertise_addr : listen_addr;
    const char *colon = a ? strrchr(a, ':') : NULL;
    if (!colon || !colon[1])
        return oms_error_set(err, OMS_INVALID, "discovery: address \"%s\" is not host:port",
                             a ? a : "");
    size_t hlen = (size_t)(colon - a);
    if (hlen == 0 || (hlen == 7 && strncmp(a, "0.0.0.0", 7) == 0) ||
        (hlen == 4 && strncmp(a, "[::]", 4) == 0)) {
        char host[256];
        if (gethostname(host, sizeof(host)) != 0)
            return oms_error_set(err, OMS_ERR, "discovery: gethostname: %s", strerror(errno));
        host[sizeof(host) - 1] = '\0';
        snprintf(out, cap, "%s%s", host, colon);
    } else {
        snprintf(out, cap, "%s", a);
    }
    if (strlen(out) >= DISC_ADDR_MAX - 1)
        return oms_error_set(err, OMS_INVALID, "discovery: address %s is too long", out);
    return OMS_OK;
}

int oms_discovery_register(oms_discovery *d, const char *service, const char *listen_addr,
                           oms_error *err)
{
    if (!d || !d->etcd)
        return OMS_OK;
    char addr[DISC_ADDR_MAX];
    int rc = advertised(d, listen_addr, addr, sizeof(addr), err);
    if (rc != OMS_OK)
        return rc;
    char key[sizeof(d->key)];
    int w = snprintf(key, sizeof(key), "%s/services/%s/%s", d->cfg->etcd_prefix, service, addr);
    if (w < 0 || (size_t)w >= sizeof(key))
        return oms_error_set(err, OMS_INVALID, "discovery: key for %s is too long", service);

    /* First attempt here, on a handle of our own (the thread has its own). */
    char lease[32] = "";
    CURL *curl = curl_easy_init();
    oms_error rerr;
    oms_error_clear(&rerr);
    rc = curl ? etcd_register(d, curl, key, addr, lease, sizeof(lease), &rerr) : OMS_ERR;
    if (curl)
        curl_easy_cleanup(curl);
    if (rc == OMS_OK)
        oms_log_info("discovery: registered", "key", key, "lease", lease);
    else
        oms_log_warn("discovery: cannot register yet; will keep trying", "key", key, "error",
                     curl ? rerr.msg : "curl_easy_init failed");

    oms_mutex_lock(&d->mu);
    snprintf(d->key, sizeof(d->key), "%s", key);
    snprintf(d->addr, sizeof(d->addr), "%s", addr);
    snprintf(d->lease, sizeof(d->lease), "%s", rc == OMS_OK ? lease : "");
    d->next_keepalive = oms_mono_ms() + (rc == OMS_OK ? d->cfg->ttl_s * 1000 / 3 : 0);
    oms_cond_signal(&d->cv);
    oms_mutex_unlock(&d->mu);
    return OMS_OK;
}

int oms_discovery_client(oms_discovery *d, const char *service, const char *static_addrs,
                         oms_grpc_client **out, oms_error *err)
{
    *out = NULL;
    if (!d || !d->etcd)
        return oms_grpc_client_new(out, static_addrs, err);
    if (strlen(service) >= sizeof(d->clients[0].service))
        return oms_error_set(err, OMS_INVALID, "discovery: service name %s is too long", service);

    /* Start from what the registry says now, so the first call already goes to a live
     * instance; the static list covers "nothing registered yet" (we may start first). */
    char live[DISC_TARGETS_MAX] = "";
    CURL *curl = curl_easy_init();
    oms_error rerr;
    oms_error_clear(&rerr);
    if (!curl || etcd_resolve(d, curl, service, live, sizeof(live), &rerr) != OMS_OK)
        oms_log_warn("discovery: cannot read the registry yet; starting with the static list",
                     "service", service, "targets", static_addrs, "error", rerr.msg);
    if (curl)
        curl_easy_cleanup(curl);
    const char *targets = live[0] ? live : static_addrs;
    int rc = oms_grpc_client_new(out, targets, err);
    if (rc != OMS_OK)
        return rc;

    oms_mutex_lock(&d->mu);
    if (d->nclients >= DISC_MAX_CLIENTS) {
        oms_mutex_unlock(&d->mu);
        oms_grpc_client_free(*out);
        *out = NULL;
        return oms_error_set(err, OMS_ERR, "discovery: more than %d clients", DISC_MAX_CLIENTS);
    }
    disc_client *c = &d->clients[d->nclients];
    memset(c, 0, sizeof(*c));
    snprintf(c->service, sizeof(c->service), "%s", service);
    snprintf(c->targets, sizeof(c->targets), "%s", targets);
    c->grpc = *out;
    d->nclients++;
    oms_mutex_unlock(&d->mu);
    oms_log_info("discovery: resolving through etcd", "service", service, "targets", targets);
    return OMS_OK;
}

void oms_discovery_stop(oms_discovery *d)
{
    if (!d)
        return;
    if (d->thread_started) {
        oms_mutex_lock(&d->mu);
        d->stopping = 1;
        oms_cond_broadcast(&d->cv);
        oms_mutex_unlock(&d->mu);
        int e = pthread_join(d->thread, NULL);
        if (e != 0)
            oms_log_errorf("discovery: pthread_join: %s", strerror(e));
        if (d->watch_started) { /* its transfer aborts at the next progress call (~1 s) */
            e = pthread_join(d->watcher, NULL);
            if (e != 0)
                oms_log_errorf("discovery: pthread_join (watch): %s", strerror(e));
        }
    }
    /* The thread is gone: no lock needed. Revoking deletes the key with the lease. */
    if (d->etcd && d->lease[0]) {
        etcd_revoke(d, d->curl, d->lease);
        oms_log_info("discovery: deregistered", "key", d->key);
    }
    disc_free(d);
}
