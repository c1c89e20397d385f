#include "login_throttle.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "oms/util.h"

#define LT_KEY_MAX 64 /* a name's bytes (longer ones keep their first 64); 16 for an address */
#define LT_PROBE 8    /* entries a key may use */
#define LT_DEFAULT_SLOTS 4096
#define LT_MIN_SLOTS 16

typedef struct lt_slot {
    uint8_t key[LT_KEY_MAX];
    uint8_t keylen; /* 0: unused; 16 an address; a name's length + 1, 66 when cut */
    int failures;
    int64_t last_ms;  /* last failure */
    int64_t until_ms; /* refused before this; 0 when never locked */
} lt_slot;

typedef struct lt_table {
    lt_slot *slots;
    uint32_t seed;
} lt_table;

typedef struct lt_key {
    uint8_t b[LT_KEY_MAX];
    uint8_t len;
} lt_key;

struct gw_login_throttle {
    gw_login_throttle_cfg cfg;
    pthread_mutex_t mu;
    lt_table addrs, names;
};

static int addr_key(const struct sockaddr *addr, lt_key *k)
{
    memset(k, 0, sizeof(*k));
    if (!addr)
        return 0;
    if (addr->sa_family == AF_INET) {
        k->b[10] = k->b[11] = 0xff; /* ::ffff:a.b.c.d */
        memcpy(k->b + 12, &((const struct sockaddr_in *)addr)->sin_addr, 4);
    } else if (addr->sa_family == AF_INET6) {
        memcpy(k->b, &((const struct sockaddr_in6 *)addr)->sin6_addr, 8); /* the /64 */
    } else {
        return 0;
    }
    k->len = 16;
    return 1;
}

static int name_key(const char *name, lt_key *k)
{
    memset(k, 0, sizeof(*k));
    if (!name)
        return 0;
    size_t n = strlen(name);
    memcpy(k->b, name, n > LT_KEY_MAX ? LT_KEY_MAX : n);
    /* Length + 1, so that "" (a key too: its attempts fail like any other) is not 0. */
    k->len = (uint8_t)(n > LT_KEY_MAX ? LT_KEY_MAX + 2 : n + 1);
    return 1;
}

static uint32_t key_hash(const lt_table *tb, const lt_key *k)
{
    uint32_t h = 2166136261u ^ tb->seed; /* FNV-1a, seeded */
    for (int i = 0; i < LT_KEY_MAX; i++)
        h = (h ^ k->b[i]) * 16777619u;
    return (h ^ k->len) * 16777619u;
}

/* Forgotten: window_ms of quiet since the later of the last failure and the lockout's
 * end. */
static int slot_stale(const gw_login_throttle *t, const lt_slot *s, int64_t now_ms)
{
    int64_t quiet_from = s->until_ms > s->last_ms ? s->until_ms : s->last_ms;
    return now_ms - quiet_from >= t->cfg.window_ms;
}

/* Eviction order, lowest first: unused, forgotten, unlocked (idle longest first),
 * locked (ending soonest first). */
static int slot_rank(const gw_login_throttle *t, const lt_slot *s, int64_t now_ms, int64_t *when)
{
    *when = 0;
    if (!s->keylen)
        return 0;
    if (slot_stale(t, s, now_ms))
        return 1;
    if (s->until_ms <= now_ms) {
        *when = s->last_ms;
        return 2;
    }
    *when = s->until_ms;
    return 3;
}

/* The key's entry; with create, a new or reused one when it has none, else NULL. A
 * forgotten entry comes back reset. Under t->mu. */
static lt_slot *slot_find(gw_login_throttle *t, lt_table *tb, const lt_key *k, int64_t now_ms,
                          int create)
{
    uint32_t n = (uint32_t)t->cfg.slots, h = key_hash(tb, k);
    lt_slot *victim = NULL;
    int vrank = 4;
    int64_t vwhen = 0;
    for (uint32_t i = 0; i < LT_PROBE; i++) {
        lt_slot *s = &tb->slots[(h + i) % n];
        if (s->keylen == k->len && memcmp(s->key, k->b, LT_KEY_MAX) == 0) {
            if (slot_stale(t, s, now_ms)) {
                s->failures = 0;
                s->until_ms = 0;
            }
            return s;
        }
        int64_t when;
        int r = slot_rank(t, s, now_ms, &when);
        if (r < vrank || (r == vrank && when < vwhen)) {
            victim = s;
            vrank = r;
            vwhen = when;
        }
    }
    if (!create)
        return NULL;
    memset(victim, 0, sizeof(*victim));
    memcpy(victim->key, k->b, LT_KEY_MAX);
    victim->keylen = k->len;
    return victim;
}

static int64_t lockout_ms(const gw_login_throttle *t, int failures)
{
    int extra = failures - t->cfg.max_failures; /* 0 at the failure that reaches the max */
    int64_t d = t->cfg.base_delay_ms;
    for (int i = 0; i < extra && d < t->cfg.max_delay_ms; i++)
        d *= 2;
    return d < t->cfg.max_delay_ms ? d : t->cfg.max_delay_ms;
}

static int table_init(lt_table *tb, int slots, oms_error *err)
{
    tb->slots = oms_xcalloc((size_t)slots, sizeof(lt_slot));
    for (;;) {
        ssize_t r = getrandom(&tb->seed, sizeof(tb->seed), 0);
        if (r == (ssize_t)sizeof(tb->seed))
            return OMS_OK;
        if (r < 0 && errno != EINTR)
            break;
    }
    free(tb->slots);
    tb->slots = NULL;
    return oms_error_set(err, OMS_ERR, "login throttle: getrandom failed");
}

int gw_login_throttle_new(gw_login_throttle **out, const gw_login_throttle_cfg *cfg, oms_error *err)
{
    *out = NULL;
    gw_login_throttle_cfg c = cfg ? *cfg : (gw_login_throttle_cfg){0, 0, 0, 0, 0};
    if (c.max_failures < 0 || c.window_ms < 0 || c.base_delay_ms < 0 || c.max_delay_ms < 0 ||
        c.slots < 0)
        return oms_error_set(err, OMS_INVALID, "login throttle: negative setting");
    if (!c.max_failures)
        c.max_failures = 5;
    if (!c.window_ms)
        c.window_ms = 15 * 60 * 1000;
    if (!c.base_delay_ms)
        c.base_delay_ms = 30 * 1000;
    if (!c.max_delay_ms)
        c.max_delay_ms = 15 * 60 * 1000;
    if (!c.slots)
        c.slots = LT_DEFAULT_SLOTS;
    if (c.slots < LT_MIN_SLOTS)
        c.slots = LT_MIN_SLOTS;
    if (c.base_delay_ms > c.max_delay_ms)
        return oms_error_set(err, OMS_INVALID,
                             "login throttle: first lockout %lld ms is longer than the "
                             "longest %lld ms",
                             (long long)c.base_delay_ms, (long long)c.max_delay_ms);
    gw_login_throttle *t = oms_xcalloc(1, sizeof(*t));
    t->cfg = c;
    int rc = table_init(&t->addrs, c.slots, err);
    if (rc == OMS_OK)
        rc = table_init(&t->names, c.slots, err);
    if (rc == OMS_OK && pthread_mutex_init(&t->mu, NULL) != 0)
        rc = oms_error_set(err, OMS_ERR, "login throttle: pthread_mutex_init failed");
    if (rc != OMS_OK) {
        free(t->addrs.slots);
        free(t->names.slots);
        free(t);
        return rc;
    }
    *out = t;
    return OMS_OK;
}

void gw_login_throttle_free(gw_login_throttle *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->mu);
    free(t->addrs.slots);
    free(t->names.slots);
    free(t);
}

int gw_login_throttle_check(gw_login_throttle *t, const struct sockaddr *addr, const char *name,
                            int64_t now_ms, int *retry_after_s)
{
    lt_key ka, kn;
    int64_t until = 0;
    int has_a = addr_key(addr, &ka), has_n = name_key(name, &kn);
    oms_mutex_lock(&t->mu);
    lt_slot *sa = has_a ? slot_find(t, &t->addrs, &ka, now_ms, 0) : NULL;
    lt_slot *sn = has_n ? slot_find(t, &t->names, &kn, now_ms, 0) : NULL;
    if (sa && sa->until_ms > until)
        until = sa->until_ms;
    if (sn && sn->until_ms > until)
        until = sn->until_ms;
    oms_mutex_unlock(&t->mu);
    if (until <= now_ms)
        return 1;
    if (retry_after_s) {
        int64_t s = (until - now_ms + 999) / 1000; /* whole seconds, rounded up */
        *retry_after_s = s < 1 ? 1 : (int)s;
    }
    return 0;
}

static void count_failure(gw_login_throttle *t, lt_slot *s, int64_t now_ms)
{
    if (s->failures < 1000000)
        s->failures++;
    s->last_ms = now_ms;
    if (s->failures >= t->cfg.max_failures)
        s->until_ms = now_ms + lockout_ms(t, s->failures);
}

void gw_login_throttle_failure(gw_login_throttle *t, const struct sockaddr *addr, const char *name,
                               int64_t now_ms)
{
    lt_key ka, kn;
    int has_a = addr_key(addr, &ka), has_n = name_key(name, &kn);
    oms_mutex_lock(&t->mu);
    if (has_a)
        count_failure(t, slot_find(t, &t->addrs, &ka, now_ms, 1), now_ms);
    if (has_n)
        count_failure(t, slot_find(t, &t->names, &kn, now_ms, 1), now_ms);
    oms_mutex_unlock(&t->mu);
}

void gw_login_throttle_success(gw_login_throttle *t, const struct sockaddr *addr, const char *name)
{
    lt_key ka, kn;
    int has_a = addr_key(addr, &ka), has_n = name_key(name, &kn);
    oms_mutex_lock(&t->mu);
    /* Lookups scan all LT_PROBE entries of a key, so an entry can simply be cleared. */
    lt_slot *sa = has_a ? slot_find(t, &t->addrs, &ka, 0, 0) : NULL;
    lt_slot *sn = has_n ? slot_find(t, &t->names, &kn, 0, 0) : NULL;
    if (sa)
        memset(sa, 0, sizeof(*sa));
    if (sn)
        memset(sn, 0, sizeof(*sn));
    oms_mutex_unlock(&t->mu);
}

int gw_login_throttle_tracked(gw_login_throttle *t)
{
    int n = 0;
    oms_mutex_lock(&t->mu);
    for (int i = 0; i < t->cfg.slots; i++)
        n += (t->addrs.slots[i].keylen != 0) + (t->names.slots[i].keylen != 0);
    oms_mutex_unlock(&t->mu);
    return n;
}
