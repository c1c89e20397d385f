#include "rate_limit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/util.h"

/* Addresses tracked at once. 4096 x ~40 bytes; an attacker with more addresses than
 * this only evicts idle entries, and each new one starts with a burst anyway. */
#define RL_SLOTS 4096
#define RL_PROBE 8 /* slots looked at per lookup before the idlest one is reused */
#define RL_MAX_EXEMPT 32

typedef struct rl_key {
    uint8_t b[16]; /* IPv4 mapped into ::ffff:a.b.c.d; IPv6 keeps its /64 */
} rl_key;

typedef struct rl_slot {
    rl_key key;
    int used;
    double tokens;
    int64_t last_ms;
} rl_slot;

typedef struct rl_cidr {
    uint8_t b[16];
    int bits; /* prefix length over the 128-bit form */
} rl_cidr;

struct gw_rate_limit {
    double per_ms, burst;
    int off;
    rl_cidr exempt[RL_MAX_EXEMPT];
    int nexempt;
    pthread_mutex_t mu;
    rl_slot slots[RL_SLOTS];
};

/* The 128-bit form of addr; 0 for a family we cannot key. */
static int to_v6(const struct sockaddr *addr, uint8_t out[16])
{
    memset(out, 0, 16);
    if (!addr)
        return 0;
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &in->sin_addr, 4);
        return 1;
    }
    if (addr->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)addr)->sin6_addr, 16);
        return 1;
    }
    return 0;
}

static int in_prefix(const uint8_t a[16], const rl_cidr *c)
{
    int full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(a, c->b, (size_t)full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == (c->b[full] & mask);
}

/* "a.b.c.d/n", "a.b.c.d", "x::y/n" or "x::y" into c (IPv4 as ::ffff:a.b.c.d/96+n). */
static int parse_cidr(const char *s, rl_cidr *c)
{
    char host[64];
    const char *slash = strchr(s, '/');
    size_t hl = slash ? (size_t)(slash - s) : strlen(s);
    if (hl == 0 || hl >= sizeof(host))
        return 0;
    memcpy(host, s, hl);
    host[hl] = '\0';
    int bits = -1, max;
    struct in_addr v4;
    memset(c, 0, sizeof(*c));
    if (inet_pton(AF_INET, host, &v4) == 1) {
        c->b[10] = c->b[11] = 0xff;
        memcpy(c->b + 12, &v4, 4);
        max = 32;
    } else if (inet_pton(AF_INET6, host, c->b) == 1) {
        max = 128;
    } else {
        return 0;
    }
    if (slash) {
        char *end;
        long v = strtol(slash + 1, &end, 10);
        if (!slash[1] || *end || v < 0 || v > max)
            return 0;
        bits = (int)v;
    } else {
        bits = max;
    }
    c->bits = max == 32 ? 96 + bits : bits;
    return 1;
}

int gw_rate_limit_new(gw_rate_limit **out, int per_minute, int burst, const char *exempt,
                      oms_error *err)
{
    *out = NULL;
    gw_rate_limit *rl = oms_xcalloc(1, sizeof(*rl));
    rl->off = per_minute <= 0;
    rl->per_ms = per_minute / 60000.0;
    rl->burst = burst > 0 ? burst : 1;
    char *list = oms_strdup(exempt ? exempt : "");
    char *save = NULL;
    int rc = OMS_OK;
    for (char *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (rl->nexempt == RL_MAX_EXEMPT) {
            rc = oms_error_set(err, OMS_INVALID, "RATE_LIMIT_EXEMPT: at most %d entries",
                               RL_MAX_EXEMPT);
            break;
        }
        if (!parse_cidr(tok, &rl->exempt[rl->nexempt])) {
            rc = oms_error_set(err, OMS_INVALID,
                               "RATE_LIMIT_EXEMPT: \"%.64s\" is not an address or CIDR"
                               " (127.0.0.0/8, ::1/128)",
                               tok);
            break;
        }
        rl->nexempt++;
    }
    free(list);
    if (rc == OMS_OK && pthread_mutex_init(&rl->mu, NULL) != 0)
        rc = oms_error_set(err, OMS_ERR, "rate limit: pthread_mutex_init failed");
    if (rc != OMS_OK) {
        free(rl);
        return rc;
    }
    *out = rl;
    return OMS_OK;
}

void gw_rate_limit_free(gw_rate_limit *rl)
{
    if (!rl)
        return;
    pthread_mutex_destroy(&rl->mu);
    free(rl);
}

static uint32_t key_hash(const rl_key *k)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 16; i++)
        h = (h ^ k->b[i]) * 16777619u;
    return h;
}

int gw_rate_limit_take(gw_rate_limit *rl, const struct sockaddr *addr, int64_t now_ms,
                       int *retry_after_s)
{
    rl_key k;
    if (rl->off || !to_v6(addr, k.b))
        return 1;
    for (int i = 0; i < rl->nexempt; i++)
        if (in_prefix(k.b, &rl->exempt[i]))
            return 1;
    if (addr->sa_family == AF_INET6)
        memset(k.b + 8, 0, 8); /* one customer's /64 is one key */
    oms_mutex_lock(&rl->mu);
    uint32_t h = key_hash(&k);
    rl_slot *slot = NULL, *victim = NULL;
    for (int i = 0; i < RL_PROBE && !slot; i++) {
        rl_slot *s = &rl->slots[(h + (uint32_t)i) % RL_SLOTS];
        if (s->used && memcmp(&s->key, &k, sizeof(k)) == 0)
            slot = s;
        else if (!victim || (!s->used && victim->used) ||
                 (s->used && victim->used && s->last_ms < victim->last_ms))
            victim = s; /* an empty slot first, else the one idle longest */
    }
    if (!slot) {
        slot = victim;
        slot->key = k;
        slot->used = 1;
        slot->tokens = rl->burst;
        slot->last_ms = now_ms;
    }
    if (now_ms > slot->last_ms) {
        slot->tokens += (double)(now_ms - slot->last_ms) * rl->per_ms;
        if (slot->tokens > rl->burst)
            slot->tokens = rl->burst;
        slot->last_ms = now_ms;
    }
    int ok = slot->tokens >= 1.0;
    if (ok)
        slot->tokens -= 1.0;
    else if (retry_after_s) { /* whole seconds until one token, rounded up */
        double ms = (1.0 - slot->tokens) / rl->per_ms;
        int s = (int)((ms + 999.0) / 1000.0);
        *retry_after_s = s < 1 ? 1 : s;
    }
    oms_mutex_unlock(&rl->mu);
    return ok;
}
