/* The gateway's staff identity core: gateway/staff_store.c (Argon2id accounts and
 * sessions, on a real SQLite file in a private temp directory, with a tiny Argon2 cost)
 * and gateway/login_throttle.c (failures per address and per name, the clock passed
 * in). */
#define _GNU_SOURCE /* nftw's FTW_DEPTH/FTW_PHYS, memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "login_throttle.h"
#include "oms/db.h"
#include "oms/log.h"
#include "oms/util.h"
#include "staff_store.h"

#define PW "correct horse battery"
#define T0 1700000000000LL /* a wall-clock ms */
#define IDLE_S 3600

/* The cheapest cost Argon2id accepts: 1 pass over 8 KiB. */
static const gw_staff_params tiny = {1, 8, 1, 0, 0};

typedef struct fixture {
    char dir[64];
    char url[128];
    gw_staff_store *st;
} fixture;

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    oms_error err;
    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/oms-test-staff-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->url, sizeof(f->url), "sqlite:%s/gateway.db", f->dir);
    if (gw_staff_store_open(&f->st, f->url, &tiny, &err) != OMS_OK) {
        fprintf(stderr, "open: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    gw_staff_store_close(f->st);
    int rc = nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return rc;
}

/* ---- helpers reading the tables behind the store's back ---------------------------- */

static int text_row(const oms_db_row *row, void *ud)
{
    snprintf(ud, 512, "%s", oms_db_row_text(row, 0) ? oms_db_row_text(row, 0) : "");
    return OMS_OK;
}

/* The first column of the first row of sql (one text parameter, or none) into out[512];
 * returns the number of rows. */
static long long query_text(gw_staff_store *st, const char *sql, const char *arg, char *out)
{
    oms_db_tx *tx;
    oms_error err;
    long long n = 0;
    oms_db_param p[] = {OMS_DB_S(arg)};
    out[0] = '\0';
    assert_int_equal(oms_db_begin(gw_staff_store_db(st), &tx, &err), OMS_OK);
    int rc = oms_db_query(tx, sql, p, arg ? 1 : 0, text_row, out, &n, &err);
    if (rc != OMS_OK)
        fail_msg("%s: %s", sql, err.msg);
    oms_db_rollback(tx);
    return n;
}

static void stored_hash(gw_staff_store *st, const char *name, char out[512])
{
    assert_int_equal(query_text(st, "SELECT hash FROM staff WHERE name = $1", name, out), 1);
}

static long long sessions_of(gw_staff_store *st, const char *name)
{
    char buf[512];
    query_text(st, "SELECT COUNT(*) FROM staff_sessions WHERE name = $1", name, buf);
    return atoll(buf);
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* ---- passwords --------------------------------------------------------------------- */

static void test_roundtrip_wrong_and_unknown(void **state)
{
    fixture *f = *state;
    oms_error err, err2;
    assert_int_equal(gw_staff_add(f->st, "alice", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_verify(f->st, "alice", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_verify(f->st, "alice", PW "!", &err), OMS_INVALID);
    assert_int_equal(gw_staff_verify(f->st, "alice", "Correct horse battery", &err), OMS_INVALID);
    /* An unknown name gets the same code and the same words. */
    assert_int_equal(gw_staff_verify(f->st, "mallory", PW, &err2), OMS_INVALID);
    assert_string_equal(err.msg, err2.msg);
    assert_string_equal(err.msg, "wrong name or password");
    /* The password is the account's, not any account's. */
    assert_int_equal(gw_staff_add(f->st, "bob", "another long password", &err), OMS_OK);
    assert_int_equal(gw_staff_verify(f->st, "bob", PW, &err), OMS_INVALID);
    assert_int_equal(gw_staff_verify(f->st, "alice", "another long password", &err), OMS_INVALID);
    /* Names are case-sensitive. */
    assert_int_equal(gw_staff_verify(f->st, "Alice", PW, &err), OMS_INVALID);
}

static void test_hash_format_and_salt(void **state)
{
    fixture *f = *state;
    oms_error err;
    char h1[512], h2[512];
    assert_int_equal(gw_staff_add(f->st, "alice", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_add(f->st, "bob", PW, &err), OMS_OK);
    stored_hash(f->st, "alice", h1);
    stored_hash(f->st, "bob", h2);
    /* The cost travels in the string. */
    assert_true(strncmp(h1, "$argon2id$v=19$m=8,t=1,p=1$", 27) == 0);
    assert_true(strncmp(h2, "$argon2id$v=19$m=8,t=1,p=1$", 27) == 0);
    /* Same password, different salt, different hash (salt and tag both differ). */
    assert_string_not_equal(h1, h2);
    assert_true(strncmp(h1, h2, 27 + 22) != 0);
    assert_null(strstr(h1, PW));
    /* A new password for alice is a new salt too. */
    assert_int_equal(gw_staff_passwd(f->st, "alice", PW, &err), OMS_OK);
    char h3[512];
    stored_hash(f->st, "alice", h3);
    assert_string_not_equal(h1, h3);
    assert_int_equal(gw_staff_verify(f->st, "alice", PW, &err), OMS_OK);
}

/* The default cost is OWASP's minimum for Argon2id, written in every hash. */
static void test_default_cost(void **state)
{
    fixture *f = *state;
    gw_staff_store *st;
    oms_error err;
    char url[160], h[512];
    snprintf(url, sizeof(url), "sqlite:%s/defaults.db", f->dir);
    assert_int_equal(gw_staff_store_open(&st, url, NULL, &err), OMS_OK);
    assert_int_equal(gw_staff_add(st, "alice", PW, &err), OMS_OK);
    stored_hash(st, "alice", h);
    assert_true(strncmp(h, "$argon2id$v=19$m=19456,t=2,p=1$", 31) == 0);
    assert_int_equal(gw_staff_verify(st, "alice", PW, &err), OMS_OK);
    gw_staff_store_close(st);
    /* The service runner's way: it opens (and owns) the database, the store attaches. */
    oms_db *db;
    assert_int_equal(gw_staff_db_open(&db, url, &err), OMS_OK);
    assert_int_equal(gw_staff_store_attach(&st, db, NULL, &err), OMS_OK);
    assert_int_equal(gw_staff_verify(st, "alice", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_verify(st, "alice", "not the password", &err), OMS_INVALID);
    gw_staff_store_close(st);
    oms_db_close(db);
    /* A cost Argon2 cannot run is refused at open, naming it, before any file is made. */
    gw_staff_params bad = {1, 4, 1, 0, 0};
    char path[160];
    snprintf(url, sizeof(url), "sqlite:%s/bad.db", f->dir);
    assert_int_equal(gw_staff_store_open(&st, url, &bad, &err), OMS_INVALID);
    assert_non_null(strstr(err.msg, "m=4"));
    assert_null(st);
    snprintf(path, sizeof(path), "%s/bad.db", f->dir);
    assert_int_equal(access(path, F_OK), -1);
}

/* An account hashed at an older cost verifies, then is rehashed at the current one. */
static void test_rehash_on_login(void **state)
{
    fixture *f = *state;
    gw_staff_store *st;
    oms_error err;
    char h[512];
    assert_int_equal(gw_staff_add(f->st, "alice", PW, &err), OMS_OK);
    gw_staff_params newer = {2, 16, 1, 0, 0};
    assert_int_equal(gw_staff_store_attach(&st, gw_staff_store_db(f->st), &newer, &err), OMS_OK);
    assert_int_equal(gw_staff_verify(st, "alice", PW "x", &err), OMS_INVALID);
    stored_hash(st, "alice", h);
    assert_true(strncmp(h, "$argon2id$v=19$m=8,t=1,p=1$", 27) == 0); /* not on a failure */
    assert_int_equal(gw_staff_verify(st, "alice", PW, &err), OMS_OK);
    stored_hash(st, "alice", h);
    assert_true(strncmp(h, "$argon2id$v=19$m=16,t=2,p=1$", 28) == 0);
    assert_int_equal(gw_staff_verify(st, "alice", PW, &err), OMS_OK);
    /* The older store still verifies it: the cost is read from the hash. */
    assert_int_equal(gw_staff_verify(f->st, "alice", PW, &err), OMS_OK);
    gw_staff_store_close(st); /* attached: the database stays open */
    assert_int_equal(gw_staff_verify(f->st, "alice", PW, &err), OMS_OK);
}

static void test_password_length(void **state)
{
    fixture *f = *state;
    oms_error err;
    char *p11 = repeat('p', 11), *p12 = repeat('q', 12), *p256 = repeat('r', 256),
         *p257 = repeat('s', 257);
    assert_int_equal(gw_staff_add(f->st, "short", p11, &err), OMS_INVALID);
    assert_non_null(strstr(err.msg, "11 bytes"));
    assert_non_null(strstr(err.msg, "at least 12"));
    assert_int_equal(gw_staff_add(f->st, "empty", "", &err), OMS_INVALID);
    assert_int_equal(gw_staff_add(f->st, "null", NULL, &err), OMS_INVALID);
    assert_int_equal(gw_staff_add(f->st, "long", p257, &err), OMS_INVALID);
    assert_non_null(strstr(err.msg, "at most 256"));
    long long n = -1;
    assert_int_equal(gw_staff_count(f->st, &n, &err), OMS_OK);
    assert_int_equal(n, 0); /* nothing was stored */
    assert_int_equal(gw_staff_add(f->st, "min", p12, &err), OMS_OK);
    assert_int_equal(gw_staff_add(f->st, "max", p256, &err), OMS_OK);
    assert_int_equal(gw_staff_verify(f->st, "min", p12, &err), OMS_OK);
    assert_int_equal(gw_staff_verify(f->st, "max", p256, &err), OMS_OK);
    assert_int_equal(gw_staff_passwd(f->st, "min", p11, &err), OMS_INVALID);
    assert_int_equal(gw_staff_passwd(f->st, "min", p257, &err), OMS_INVALID);
    assert_int_equal(gw_staff_verify(f->st, "min", p12, &err), OMS_OK); /* unchanged */
    /* Out-of-rule passwords never match, with the usual words. */
    assert_int_equal(gw_staff_verify(f->st, "max", p257, &err), OMS_INVALID);
    assert_string_equal(err.msg, "wrong name or password");
    free(p11);
    free(p12);
    free(p256);
    free(p257);
}

static void test_name_rules(void **state)
{
    fixture *f = *state;
    oms_error err;
    char *n64 = repeat('n', 64), *n65 = repeat('n', 65);
    const char *bad[] = {"",           "has space", "a/b",   "caf\xc3\xa9",
                         "semi;colon", "quote'",    "tab\t", n65};
    for (size_t i = 0; i < OMS_NELEM(bad); i++) {
        assert_int_equal(gw_staff_add(f->st, bad[i], PW, &err), OMS_INVALID);
        assert_non_null(strstr(err.msg, "staff name"));
    }
    assert_int_equal(gw_staff_check_name(NULL, &err), OMS_INVALID);
    assert_int_equal(gw_staff_check_name("a/b", &err), OMS_INVALID);
    assert_non_null(strstr(err.msg, "character 2"));
    assert_int_equal(gw_staff_add(f->st, n64, PW, &err), OMS_OK);
    assert_int_equal(gw_staff_add(f->st, "Ops.Team_2-b", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_add(f->st, "x", PW, &err), OMS_OK);
    long long n = 0;
    assert_int_equal(gw_staff_count(f->st, &n, &err), OMS_OK);
    assert_int_equal(n, 3);
    free(n64);
    free(n65);
}

static int collect(const gw_staff_info *info, void *ud)
{
    char *out = ud;
    char line[128];
    snprintf(line, sizeof(line), "%s:%lld,", info->name, info->sessions);
    strcat(out, line);
    assert_true(info->created_ms > 0 && info->updated_ms >= info->created_ms);
    return OMS_OK;
}

static void test_add_passwd_remove_count_list(void **state)
{
    fixture *f = *state;
    oms_error err;
    long long n = -1;
    char list[512] = "", tok[GW_STAFF_TOKEN_LEN + 1];
    assert_int_equal(gw_staff_count(f->st, &n, &err), OMS_OK);
    assert_int_equal(n, 0);
    assert_int_equal(gw_staff_add(f->st, "alice", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_add(f->st, "alice", "a different password", &err), OMS_CONFLICT);
    assert_non_null(strstr(err.msg, "alice already exists"));
    assert_int_equal(gw_staff_verify(f->st, "alice", PW, &err), OMS_OK); /* untouched */
    assert_int_equal(gw_staff_passwd(f->st, "nobody", PW, &err), OMS_NOTFOUND);
    assert_non_null(strstr(err.msg, "nobody not found"));
    assert_int_equal(gw_staff_passwd(f->st, "alice", "the new password", &err), OMS_OK);
    assert_int_equal(gw_staff_verify(f->st, "alice", PW, &err), OMS_INVALID);
    assert_int_equal(gw_staff_verify(f->st, "alice", "the new password", &err), OMS_OK);
    assert_int_equal(gw_staff_add(f->st, "bob", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_session_create(f->st, "bob", T0, tok, &err), OMS_OK);
    assert_int_equal(gw_staff_count(f->st, &n, &err), OMS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(gw_staff_list(f->st, collect, list, &err), OMS_OK);
    assert_string_equal(list, "alice:0,bob:1,");
    assert_int_equal(gw_staff_remove(f->st, "alice", &err), OMS_OK);
    assert_int_equal(gw_staff_remove(f->st, "alice", &err), OMS_NOTFOUND);
    assert_int_equal(gw_staff_verify(f->st, "alice", "the new password", &err), OMS_INVALID);
    assert_int_equal(gw_staff_count(f->st, &n, &err), OMS_OK);
    assert_int_equal(n, 1);
    /* The name is free again. */
    assert_int_equal(gw_staff_add(f->st, "alice", PW, &err), OMS_OK);
}

static double verify_ms(gw_staff_store *st, const char *name)
{
    struct timespec a, b;
    oms_error err;
    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_int_equal(gw_staff_verify(st, name, "not the password", &err), OMS_INVALID);
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
}

/* An unknown name costs a hash too. With a cost that dominates the database lookup
 * (8 MiB: milliseconds, against microseconds for the lookup), the fastest of a few
 * unknown-name checks is within a factor of the fastest known-name check; without the
 * dummy hash it would be two orders of magnitude faster. */
static void test_unknown_name_costs_a_hash(void **state)
{
    fixture *f = *state;
    gw_staff_store *st;
    oms_error err;
    gw_staff_params cost = {1, 8192, 1, 0, 0};
    assert_int_equal(gw_staff_store_attach(&st, gw_staff_store_db(f->st), &cost, &err), OMS_OK);
    assert_int_equal(gw_staff_add(st, "alice", PW, &err), OMS_OK);
    double known = 1e9, unknown = 1e9;
    for (int i = 0; i < 5; i++) {
        double k = verify_ms(st, "alice"), u = verify_ms(st, "mallory");
        known = k < known ? k : known;
        unknown = u < unknown ? u : unknown;
    }
    if (unknown * 3 < known)
        fail_msg("unknown name %.3f ms, known name %.3f ms", unknown, known);
    gw_staff_store_close(st);
}

typedef struct verify_arg {
    gw_staff_store *st;
    pthread_barrier_t *start;
    int ok, again, bad;
} verify_arg;

static void *verify_thread(void *ud)
{
    verify_arg *a = ud;
    oms_error err;
    pthread_barrier_wait(a->start);
    for (int i = 0; i < 4; i++) {
        int rc = gw_staff_verify(a->st, "alice", PW, &err);
        a->ok += rc == OMS_OK;
        a->again += rc == OMS_AGAIN;
        a->bad += rc == OMS_AGAIN && !strstr(err.msg, "too many password checks at once");
        /* (no cmocka assertion off the main thread: counted, checked after the join) */
    }
    return NULL;
}

/* Four request threads verify at once through a store that hashes one at a time; each
 * hash is slow enough (16 MiB) that they overlap. Returns the OMS_AGAIN answers. */
static int verify_four(gw_staff_store *db_of, const gw_staff_params *p)
{
    gw_staff_store *st;
    oms_error err;
    assert_int_equal(gw_staff_store_attach(&st, gw_staff_store_db(db_of), p, &err), OMS_OK);
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, 4), 0);
    pthread_t th[4];
    verify_arg args[4];
    int again = 0;
    for (int i = 0; i < 4; i++) {
        args[i] = (verify_arg){st, &start, 0, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, verify_thread, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].ok + args[i].again, 4);
        assert_int_equal(args[i].bad, 0);
        again += args[i].again;
    }
    pthread_barrier_destroy(&start);
    gw_staff_store_close(st);
    return again;
}

/* max_hashing 1 with a long wait: concurrent logins queue for the one turn and all get
 * their answer. With a 1 ms wait, those that find it taken get OMS_AGAIN (503). */
static void test_hashing_bounded(void **state)
{
    fixture *f = *state;
    oms_error err;
    assert_int_equal(gw_staff_add(f->st, "alice", PW, &err), OMS_OK);
    gw_staff_params patient = {1, 16384, 1, 1, 60000}, hasty = {1, 16384, 1, 1, 1};
    assert_int_equal(verify_four(f->st, &patient), 0);
    assert_true(verify_four(f->st, &hasty) > 0);
}

/* ---- sessions ---------------------------------------------------------------------- */

static void sha256_hex(const char *s, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    assert_int_equal(EVP_Digest(s, strlen(s), md, &len, EVP_sha256(), NULL), 1);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void test_session_lifecycle(void **state)
{
    fixture *f = *state;
    oms_error err;
    char tok[GW_STAFF_TOKEN_LEN + 1], name[GW_STAFF_NAME_MAX + 1], buf[512];
    assert_int_equal(gw_staff_add(f->st, "alice", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_session_create(f->st, "alice", T0, tok, &err), OMS_OK);
    assert_int_equal(strlen(tok), 64);
    assert_int_equal(strspn(tok, "0123456789abcdef"), 64);
    assert_int_equal(gw_staff_session_check(f->st, tok, T0 + 1000, IDLE_S, name, &err), OMS_OK);
    assert_string_equal(name, "alice");
    /* Used within a minute of the last write: last_seen_at does not move. */
    char digest[65];
    sha256_hex(tok, digest);
    query_text(f->st, "SELECT last_seen_at FROM staff_sessions WHERE token_hash = $1", digest, buf);
    assert_int_equal(atoll(buf), T0);
    /* A minute later it does, and the idle clock restarts from there. */
    assert_int_equal(gw_staff_session_check(f->st, tok, T0 + 61000, IDLE_S, name, &err), OMS_OK);
    query_text(f->st, "SELECT last_seen_at FROM staff_sessions WHERE token_hash = $1", digest, buf);
    assert_int_equal(atoll(buf), T0 + 61000);
    int64_t t1 = T0 + 61000 + IDLE_S * 1000LL - 1;
    assert_int_equal(gw_staff_session_check(f->st, tok, t1, IDLE_S, name, &err), OMS_OK);
    /* idle_s without use: gone for good. */
    int64_t t2 = t1 + IDLE_S * 1000LL;
    assert_int_equal(gw_staff_session_check(f->st, tok, t2, IDLE_S, name, &err), OMS_INVALID);
    assert_string_equal(name, "");
    assert_non_null(strstr(err.msg, "not signed in"));
    assert_int_equal(sessions_of(f->st, "alice"), 0); /* the expired row was deleted */
    assert_int_equal(gw_staff_session_check(f->st, tok, t1, IDLE_S, name, &err), OMS_INVALID);
    /* idle_s <= 0 is the 12 h default. */
    assert_int_equal(gw_staff_session_create(f->st, "alice", T0, tok, &err), OMS_OK);
    assert_int_equal(gw_staff_session_check(f->st, tok, T0 + 11 * 3600000LL, 0, name, &err),
                     OMS_OK);
    assert_int_equal(gw_staff_session_check(f->st, tok, T0 + 23 * 3600000LL + 1, 0, name, &err),
                     OMS_INVALID);
}

static void test_session_bad_tokens_and_logout(void **state)
{
    fixture *f = *state;
    oms_error err;
    char tok[GW_STAFF_TOKEN_LEN + 1], name[GW_STAFF_NAME_MAX + 1];
    assert_int_equal(gw_staff_add(f->st, "alice", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_session_create(f->st, "alice", T0, tok, &err), OMS_OK);
    char upper[GW_STAFF_TOKEN_LEN + 1], shorter[GW_STAFF_TOKEN_LEN];
    snprintf(upper, sizeof(upper), "%s", tok);
    for (char *c = upper; *c; c++)
        if (*c >= 'a' && *c <= 'f')
            *c = (char)(*c - 'a' + 'A');
    memcpy(shorter, tok, sizeof(shorter) - 1); /* 63 chars */
    shorter[sizeof(shorter) - 1] = '\0';
    char *other = repeat('0', 64);
    const char *bad[] = {NULL, "", shorter, other, "zz", "' OR 1=1 --"};
    for (size_t i = 0; i < OMS_NELEM(bad); i++)
        assert_int_equal(gw_staff_session_check(f->st, bad[i], T0, IDLE_S, name, &err),
                         OMS_INVALID);
    if (strcmp(upper, tok) != 0)
        assert_int_equal(gw_staff_session_check(f->st, upper, T0, IDLE_S, name, &err), OMS_INVALID);
    assert_int_equal(gw_staff_session_check(f->st, tok, T0, IDLE_S, name, &err), OMS_OK);
    /* Logout forgets it; logging out twice, or with junk, is fine. */
    assert_int_equal(gw_staff_session_delete(f->st, tok, &err), OMS_OK);
    assert_int_equal(gw_staff_session_check(f->st, tok, T0, IDLE_S, name, &err), OMS_INVALID);
    assert_int_equal(gw_staff_session_delete(f->st, tok, &err), OMS_OK);
    assert_int_equal(gw_staff_session_delete(f->st, "junk", &err), OMS_OK);
    assert_int_equal(gw_staff_session_delete(f->st, NULL, &err), OMS_OK);
    /* No session for an account that does not exist. */
    assert_int_equal(gw_staff_session_create(f->st, "nobody", T0, tok, &err), OMS_NOTFOUND);
    assert_string_equal(tok, "");
    assert_int_equal(gw_staff_session_create(f->st, "bad name", T0, tok, &err), OMS_INVALID);
    free(other);
}

/* Each session is its own: logging one out leaves the others. */
static void test_sessions_independent(void **state)
{
    fixture *f = *state;
    oms_error err;
    char a1[65], a2[65], b1[65], name[65];
    assert_int_equal(gw_staff_add(f->st, "alice", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_add(f->st, "bob", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_session_create(f->st, "alice", T0, a1, &err), OMS_OK);
    assert_int_equal(gw_staff_session_create(f->st, "alice", T0, a2, &err), OMS_OK);
    assert_int_equal(gw_staff_session_create(f->st, "bob", T0, b1, &err), OMS_OK);
    assert_string_not_equal(a1, a2);
    assert_int_equal(gw_staff_session_delete(f->st, a1, &err), OMS_OK);
    assert_int_equal(gw_staff_session_check(f->st, a1, T0, IDLE_S, name, &err), OMS_INVALID);
    assert_int_equal(gw_staff_session_check(f->st, a2, T0, IDLE_S, name, &err), OMS_OK);
    assert_string_equal(name, "alice");
    assert_int_equal(gw_staff_session_check(f->st, b1, T0, IDLE_S, name, &err), OMS_OK);
    assert_string_equal(name, "bob");
}

static void test_remove_and_passwd_end_sessions(void **state)
{
    fixture *f = *state;
    oms_error err;
    char a1[65], a2[65], b1[65], c1[65], name[65];
    assert_int_equal(gw_staff_add(f->st, "alice", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_add(f->st, "bob", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_add(f->st, "carol", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_session_create(f->st, "alice", T0, a1, &err), OMS_OK);
    assert_int_equal(gw_staff_session_create(f->st, "alice", T0, a2, &err), OMS_OK);
    assert_int_equal(gw_staff_session_create(f->st, "bob", T0, b1, &err), OMS_OK);
    assert_int_equal(gw_staff_session_create(f->st, "carol", T0, c1, &err), OMS_OK);
    assert_int_equal(gw_staff_remove(f->st, "alice", &err), OMS_OK);
    assert_int_equal(sessions_of(f->st, "alice"), 0);
    assert_int_equal(gw_staff_session_check(f->st, a1, T0, IDLE_S, name, &err), OMS_INVALID);
    assert_int_equal(gw_staff_session_check(f->st, a2, T0, IDLE_S, name, &err), OMS_INVALID);
    /* A new account of the same name does not inherit them. */
    assert_int_equal(gw_staff_add(f->st, "alice", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_session_check(f->st, a1, T0, IDLE_S, name, &err), OMS_INVALID);
    assert_int_equal(gw_staff_session_check(f->st, b1, T0, IDLE_S, name, &err), OMS_OK);
    /* A new password signs its account out. */
    assert_int_equal(gw_staff_passwd(f->st, "bob", "bob's new password", &err), OMS_OK);
    assert_int_equal(gw_staff_session_check(f->st, b1, T0, IDLE_S, name, &err), OMS_INVALID);
    assert_int_equal(sessions_of(f->st, "bob"), 0);
    assert_int_equal(gw_staff_session_check(f->st, c1, T0, IDLE_S, name, &err), OMS_OK);
    assert_string_equal(name, "carol");
    /* A session whose account vanished (removed by another instance while the session
     * was being created) is no session. */
    char digest[65];
    sha256_hex(a1, digest);
    oms_db_param p[] = {OMS_DB_S(digest), OMS_DB_S("ghost"), OMS_DB_I(T0)};
    assert_int_equal(oms_db_exec_tx(gw_staff_store_db(f->st),
                                    "INSERT INTO staff_sessions(token_hash, name, created_at,"
                                    " last_seen_at) VALUES($1, $2, $3, $3)",
                                    p, 3, NULL, &err),
                     OMS_OK);
    assert_int_equal(gw_staff_session_check(f->st, a1, T0, IDLE_S, name, &err), OMS_INVALID);
}

static int any_column_has(const oms_db_row *row, void *ud)
{
    const char *tok = ud;
    for (int i = 0; i < oms_db_row_columns(row); i++) {
        const char *v = oms_db_row_text(row, i);
        if (v && strstr(v, tok))
            return OMS_CONFLICT;
    }
    return OMS_OK;
}

static int file_has(const char *path, const char *needle)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return 0;
    size_t cap = 1 << 20, len = 0;
    char *data = malloc(cap);
    assert_non_null(data);
    for (;;) {
        size_t r = fread(data + len, 1, cap - len, fp);
        len += r;
        if (len < cap)
            break;
        cap *= 2;
        data = realloc(data, cap);
        assert_non_null(data);
    }
    fclose(fp);
    int found = memmem(data, len, needle, strlen(needle)) != NULL;
    free(data);
    return found;
}

/* The table holds the SHA-256 of the token, never the token: neither a row nor the
 * database files contain it. */
static void test_token_not_stored(void **state)
{
    fixture *f = *state;
    oms_error err;
    char tok[65], digest[65], buf[512], path[160];
    assert_int_equal(gw_staff_add(f->st, "alice", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_session_create(f->st, "alice", T0, tok, &err), OMS_OK);
    sha256_hex(tok, digest);
    assert_int_equal(
        query_text(f->st, "SELECT name FROM staff_sessions WHERE token_hash = $1", digest, buf), 1);
    assert_string_equal(buf, "alice");
    oms_db_tx *tx;
    assert_int_equal(oms_db_begin(gw_staff_store_db(f->st), &tx, &err), OMS_OK);
    int rc =
        oms_db_query(tx, "SELECT * FROM staff_sessions", NULL, 0, any_column_has, tok, NULL, &err);
    if (rc == OMS_OK)
        rc = oms_db_query(tx, "SELECT * FROM staff", NULL, 0, any_column_has, tok, NULL, &err);
    oms_db_rollback(tx);
    assert_int_equal(rc, OMS_OK);
    /* The digest is there (so the grep below can find what is stored)... */
    snprintf(path, sizeof(path), "%s/gateway.db-wal", f->dir);
    char path_db[160];
    snprintf(path_db, sizeof(path_db), "%s/gateway.db", f->dir);
    assert_true(file_has(path, digest) || file_has(path_db, digest));
    /* ...and the token is not, in the database or its write-ahead log. */
    assert_false(file_has(path, tok));
    assert_false(file_has(path_db, tok));
}

static void test_session_cap_per_account(void **state)
{
    fixture *f = *state;
    oms_error err;
    char toks[GW_STAFF_MAX_SESSIONS + 4][65], name[65], bob[65];
    assert_int_equal(gw_staff_add(f->st, "alice", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_add(f->st, "bob", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_session_create(f->st, "bob", T0, bob, &err), OMS_OK);
    for (int i = 0; i < GW_STAFF_MAX_SESSIONS + 4; i++)
        assert_int_equal(gw_staff_session_create(f->st, "alice", T0 + i, toks[i], &err), OMS_OK);
    assert_int_equal(sessions_of(f->st, "alice"), GW_STAFF_MAX_SESSIONS);
    /* The four least recently used went; the newest stayed. */
    for (int i = 0; i < 4; i++)
        assert_int_equal(gw_staff_session_check(f->st, toks[i], T0 + 100, IDLE_S, name, &err),
                         OMS_INVALID);
    for (int i = 4; i < GW_STAFF_MAX_SESSIONS + 4; i++)
        assert_int_equal(gw_staff_session_check(f->st, toks[i], T0 + 100, IDLE_S, name, &err),
                         OMS_OK);
    /* Another account's are not counted. */
    assert_int_equal(gw_staff_session_check(f->st, bob, T0 + 100, IDLE_S, name, &err), OMS_OK);
}

static void test_session_prune(void **state)
{
    fixture *f = *state;
    oms_error err;
    char t_old[65], t_mid[65], t_new[65], name[65];
    long long removed = -1;
    assert_int_equal(gw_staff_add(f->st, "alice", PW, &err), OMS_OK);
    assert_int_equal(gw_staff_session_create(f->st, "alice", T0, t_old, &err), OMS_OK);
    assert_int_equal(gw_staff_session_create(f->st, "alice", T0 + 1000000, t_mid, &err), OMS_OK);
    assert_int_equal(gw_staff_session_create(f->st, "alice", T0 + 3000000, t_new, &err), OMS_OK);
    assert_int_equal(gw_staff_session_prune(f->st, T0 + 3599999, IDLE_S, &removed, &err), OMS_OK);
    assert_int_equal(removed, 0);
    assert_int_equal(gw_staff_session_prune(f->st, T0 + 4600000, IDLE_S, &removed, &err), OMS_OK);
    assert_int_equal(removed, 2);
    assert_int_equal(sessions_of(f->st, "alice"), 1);
    assert_int_equal(gw_staff_session_check(f->st, t_new, T0 + 4600000, IDLE_S, name, &err),
                     OMS_OK);
}

/* ---- login throttle ---------------------------------------------------------------- */

static struct sockaddr_storage ip(const char *s)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, s, &v4->sin_addr) == 1)
        v4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, s, &v6->sin6_addr) == 1)
        v6->sin6_family = AF_INET6;
    else
        fail_msg("bad test address %s", s);
    return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))
#define MIN_MS 60000LL

static gw_login_throttle *throttle(int slots)
{
    gw_login_throttle *t;
    oms_error err;
    gw_login_throttle_cfg cfg = {0, 0, 0, 0, slots};
    assert_int_equal(gw_login_throttle_new(&t, &cfg, &err), OMS_OK);
    return t;
}

static void fail_n(gw_login_throttle *t, const struct sockaddr *a, const char *name, int n,
                   int64_t now)
{
    for (int i = 0; i < n; i++)
        gw_login_throttle_failure(t, a, name, now);
}

static void test_throttle_five_failures(void **state)
{
    gw_login_throttle *t = throttle(0);
    struct sockaddr_storage a = ip("203.0.113.7");
    int retry = -1;
    int64_t now = 1000000;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now, &retry), 1);
        gw_login_throttle_failure(t, SA(a), "alice", now);
    }
    assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now, &retry), 1);
    assert_int_equal(retry, -1); /* untouched when allowed */
    gw_login_throttle_failure(t, SA(a), "alice", now);
    /* The fifth failure locks for 30 s; Retry-After counts whole seconds, rounded up. */
    assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now, &retry), 0);
    assert_int_equal(retry, 30);
    assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now + 10500, &retry), 0);
    assert_int_equal(retry, 20);
    assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now + 29999, &retry), 0);
    assert_int_equal(retry, 1);
    assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now + 30000, &retry), 1);
    gw_login_throttle_free(t);
}

static void test_throttle_growing_delay(void **state)
{
    gw_login_throttle *t = throttle(0);
    struct sockaddr_storage a = ip("203.0.113.7");
    int retry = 0;
    int64_t now = 1000000;
    fail_n(t, SA(a), "alice", 5, now);
    const int want[] = {30, 60, 120, 240, 480, 900, 900, 900};
    for (size_t i = 0; i < OMS_NELEM(want); i++) {
        assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now, &retry), 0);
        assert_int_equal(retry, want[i]);
        now += (int64_t)want[i] * 1000; /* the lockout ends... */
        assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now, &retry), 1);
        gw_login_throttle_failure(t, SA(a), "alice", now); /* ...and the next guess fails */
    }
    /* A count is forgotten after 15 min of quiet after the lockout, not during it. */
    assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now + 900000 - 1, &retry), 0);
    now += 900000 + 15 * MIN_MS;
    assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now, &retry), 1);
    fail_n(t, SA(a), "alice", 4, now);
    assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now, &retry), 1);
    gw_login_throttle_failure(t, SA(a), "alice", now);
    assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now, &retry), 0);
    assert_int_equal(retry, 30); /* back to the first step */
    gw_login_throttle_free(t);
}

static void test_throttle_window(void **state)
{
    gw_login_throttle *t = throttle(0);
    struct sockaddr_storage a = ip("203.0.113.7");
    int retry = 0;
    int64_t now = 1000000;
    /* Four failures, a quarter of an hour of quiet, four more: never five in a window. */
    fail_n(t, SA(a), "alice", 4, now);
    now += 15 * MIN_MS;
    fail_n(t, SA(a), "alice", 4, now);
    assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now, &retry), 1);
    /* Spread within the window, they add up. */
    now += 14 * MIN_MS;
    gw_login_throttle_failure(t, SA(a), "alice", now);
    assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now, &retry), 0);
    gw_login_throttle_free(t);
}

static void test_throttle_success_resets(void **state)
{
    gw_login_throttle *t = throttle(0);
    struct sockaddr_storage a = ip("203.0.113.7"), b = ip("198.51.100.1");
    int retry = 0;
    int64_t now = 1000000;
    fail_n(t, SA(a), "alice", 4, now);
    gw_login_throttle_success(t, SA(a), "alice");
    fail_n(t, SA(a), "alice", 4, now);
    assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now, &retry), 1);
    gw_login_throttle_failure(t, SA(a), "alice", now);
    assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now, &retry), 0);
    /* After the lockout a good login clears the escalation of both keys. */
    now += 30000;
    gw_login_throttle_success(t, SA(a), "alice");
    fail_n(t, SA(a), "alice", 4, now);
    assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now, &retry), 1);
    gw_login_throttle_failure(t, SA(a), "alice", now);
    assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now, &retry), 0);
    assert_int_equal(retry, 30);
    /* A success clears only its own address and name. */
    fail_n(t, SA(b), "bob", 5, now);
    gw_login_throttle_success(t, SA(a), "alice");
    assert_int_equal(gw_login_throttle_check(t, SA(a), "alice", now, &retry), 1);
    assert_int_equal(gw_login_throttle_check(t, SA(b), "carol", now, &retry), 0);
    assert_int_equal(gw_login_throttle_check(t, SA(a), "bob", now, &retry), 0);
    gw_login_throttle_free(t);
}

static void test_throttle_per_name_and_address(void **state)
{
    gw_login_throttle *t = throttle(0);
    int retry = 0;
    int64_t now = 1000000;
    char addr[32];
    /* One name guessed from five addresses: the name is locked, from anywhere... */
    for (int i = 1; i <= 5; i++) {
        snprintf(addr, sizeof(addr), "192.0.2.%d", i);
        struct sockaddr_storage a = ip(addr);
        gw_login_throttle_failure(t, SA(a), "alice", now);
    }
    struct sockaddr_storage fresh = ip("192.0.2.200"), a1 = ip("192.0.2.1");
    assert_int_equal(gw_login_throttle_check(t, SA(fresh), "alice", now, &retry), 0);
    assert_int_equal(gw_login_throttle_check(t, NULL, "alice", now, &retry), 0);
    /* ...while those addresses, one failure each, may try other names. */
    assert_int_equal(gw_login_throttle_check(t, SA(a1), "bob", now, &retry), 1);
    /* Five names guessed from one address: the address is locked, for any name. */
    struct sockaddr_storage x = ip("198.51.100.9");
    const char *names[] = {"n1", "n2", "n3", "n4", "n5"};
    for (int i = 0; i < 5; i++)
        gw_login_throttle_failure(t, SA(x), names[i], now);
    assert_int_equal(gw_login_throttle_check(t, SA(x), "zoe", now, &retry), 0);
    assert_int_equal(gw_login_throttle_check(t, SA(x), NULL, now, &retry), 0);
    assert_int_equal(gw_login_throttle_check(t, SA(fresh), "n1", now, &retry), 1);
    /* An IPv6 client is its /64; the next /64 is someone else. */
    struct sockaddr_storage v6a = ip("2001:db8:1:2::10"), v6b = ip("2001:db8:1:2::99"),
                            v6c = ip("2001:db8:1:3::10");
    for (int i = 0; i < 5; i++) {
        snprintf(addr, sizeof(addr), "v6name%d", i);
        gw_login_throttle_failure(t, SA(v6a), addr, now);
    }
    assert_int_equal(gw_login_throttle_check(t, SA(v6b), "anyone", now, &retry), 0);
    assert_int_equal(gw_login_throttle_check(t, SA(v6c), "anyone", now, &retry), 1);
    /* Names are compared whole: "alicex" and "Alice" are not "alice". */
    assert_int_equal(gw_login_throttle_check(t, SA(fresh), "alicex", now, &retry), 1);
    assert_int_equal(gw_login_throttle_check(t, SA(fresh), "Alice", now, &retry), 1);
    /* Both keys locked: the answer is the longer wait. */
    fail_n(t, NULL, "alice", 1, now + 10000); /* 6th failure: 60 s from then */
    assert_int_equal(gw_login_throttle_check(t, SA(x), "alice", now + 10000, &retry), 0);
    assert_int_equal(retry, 60);
    assert_int_equal(gw_login_throttle_check(t, SA(x), "bob", now + 10000, &retry), 0);
    assert_int_equal(retry, 20);
    gw_login_throttle_free(t);
}

static void test_throttle_bounded(void **state)
{
    gw_login_throttle *t = throttle(16);
    oms_error err;
    int retry = 0;
    int64_t now = 1000000;
    struct sockaddr_storage locked = ip("203.0.113.7");
    fail_n(t, SA(locked), "victim", 5, now);
    char addr[32], name[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(addr, sizeof(addr), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        snprintf(name, sizeof(name), "user%d", i);
        struct sockaddr_storage a = ip(addr);
        gw_login_throttle_failure(t, SA(a), name, now + 1 + i);
        assert_true(gw_login_throttle_tracked(t) <= 32);
    }
    assert_int_equal(gw_login_throttle_tracked(t), 32);
    /* Idle strangers were evicted first: the lockout stayed. */
    assert_int_equal(gw_login_throttle_check(t, SA(locked), "someone", now + 6000, &retry), 0);
    assert_int_equal(gw_login_throttle_check(t, NULL, "victim", now + 6000, &retry), 0);
    /* A very long name is a key too (its first 64 bytes), distinct from a valid name. */
    char *longname = repeat('a', 300);
    fail_n(t, NULL, longname, 5, now);
    assert_int_equal(gw_login_throttle_check(t, NULL, longname, now, &retry), 0);
    longname[64] = '\0';
    assert_int_equal(gw_login_throttle_check(t, NULL, longname, now, &retry), 1);
    free(longname);
    gw_login_throttle_free(t);
    /* Settings are checked. */
    gw_login_throttle_cfg bad = {5, 0, 20 * MIN_MS, 15 * MIN_MS, 0};
    assert_int_equal(gw_login_throttle_new(&t, &bad, &err), OMS_INVALID);
    assert_null(t);
    gw_login_throttle_cfg neg = {-1, 0, 0, 0, 0};
    assert_int_equal(gw_login_throttle_new(&t, &neg, &err), OMS_INVALID);
}

typedef struct fail_arg {
    gw_login_throttle *t;
    pthread_barrier_t *start;
    int id;
} fail_arg;

static void *fail_thread(void *ud)
{
    fail_arg *a = ud;
    char name[32];
    snprintf(name, sizeof(name), "worker%d", a->id);
    pthread_barrier_wait(a->start);
    for (int i = 0; i < 20000; i++) {
        gw_login_throttle_failure(a->t, NULL, name, 1000000 + i);
        gw_login_throttle_failure(a->t, NULL, "shared", 1000000 + i);
    }
    return NULL;
}

/* Several request threads at once: every failure is counted, none lost. */
static void test_throttle_threads(void **state)
{
    gw_login_throttle_cfg cfg = {80001, 0, 1000, 1000, 0};
    gw_login_throttle *t;
    oms_error err;
    int retry = 0;
    assert_int_equal(gw_login_throttle_new(&t, &cfg, &err), OMS_OK);
    pthread_t th[4];
    fail_arg args[4];
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, 4), 0);
    for (int i = 0; i < 4; i++) {
        args[i] = (fail_arg){t, &start, i};
        assert_int_equal(pthread_create(&th[i], NULL, fail_thread, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&start);
    /* 4 x 20000 failures on "shared": one short of 80001. */
    assert_int_equal(gw_login_throttle_check(t, NULL, "shared", 1020000, &retry), 1);
    gw_login_throttle_failure(t, NULL, "shared", 1020000);
    assert_int_equal(gw_login_throttle_check(t, NULL, "shared", 1020000, &retry), 0);
    gw_login_throttle_free(t);
}

int main(void)
{
    oms_log_init("test_staff", OMS_LOG_WARN, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_wrong_and_unknown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hash_format_and_salt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_cost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rehash_on_login, setup, teardown),
        cmocka_unit_test_setup_teardown(test_password_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_name_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_add_passwd_remove_count_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_name_costs_a_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hashing_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_bad_tokens_and_logout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sessions_independent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_and_passwd_end_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_not_stored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_cap_per_account, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_prune, setup, teardown),
        cmocka_unit_test(test_throttle_five_failures),
        cmocka_unit_test(test_throttle_growing_delay),
        cmocka_unit_test(test_throttle_window),
        cmocka_unit_test(test_throttle_success_resets),
        cmocka_unit_test(test_throttle_per_name_and_address),
        cmocka_unit_test(test_throttle_bounded),
        cmocka_unit_test(test_throttle_threads),
    };
    return cmocka_run_group_tests_name("staff", tests, NULL, NULL);
}
