/* Staff accounts and sessions (staff_store.h has the contract).
 *
 * Why the shapes below:
 * - A hash is never computed inside a database transaction. With SQLite the one
 *   connection is the writer lock, and an Argon2id hash holds a core for tens of
 *   milliseconds: every order of the shop would queue behind a login. So verify reads
 *   the stored hash, ends the transaction, then hashes; add and passwd hash first.
 * - The number of hashes at once is bounded (hash_slot_take): each holds m_cost of
 *   memory, and a login burst should wait or get 503, not take the gateway down.
 * - An unknown name is verified against a dummy hash made at open with the store's
 *   cost, so it costs what a known name costs and answers the same words.
 * - Sessions are looked up by the SHA-256 of the token. The token has 256 bits of
 *   entropy, so a plain (unsalted, fast) digest is enough: nothing to brute-force, and
 *   the lookup is an index probe on a value the client cannot steer. A session is only
 *   good while its account exists (the lookup joins staff), so a session created while
 *   the account was being removed on another instance can never be used. */
#include "staff_store.h"

#include <argon2.h>
#include <errno.h>
#include <malloc.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "oms/log.h"
#include "oms/util.h"

#define SALT_LEN 16
#define TAG_LEN 32
#define HASH_MAX 192 /* an encoded hash with 10-digit costs is ~130 chars */
#define PRUNE_BATCH 1000
#define NOT_SIGNED_IN "not signed in or session expired"

struct gw_staff_store {
    oms_db *db;
    int owns_db;
    gw_staff_params p;
    char prefix[80];      /* "$argon2id$v=19$m=19456,t=2,p=1$": the current cost */
    char dummy[HASH_MAX]; /* what an unknown name is checked against */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    int hashing;       /* hashes running now, under mu */
};

const oms_db_migration gw_staff_migration = {
    "gateway_staff_v1",
    "CREATE TABLE staff("
    " name TEXT PRIMARY KEY, hash TEXT NOT NULL,"
    " created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);"
    "CREATE TABLE staff_sessions("
    " token_hash TEXT PRIMARY KEY, name TEXT NOT NULL,"
    " created_at BIGINT NOT NULL, last_seen_at BIGINT NOT NULL);"
    "CREATE INDEX staff_sessions_by_name ON staff_sessions(name, last_seen_at);"
    "CREATE INDEX staff_sessions_by_last_seen ON staff_sessions(last_seen_at);",
    NULL,
};

/* ---- rules ------------------------------------------------------------------------ */

int gw_staff_check_name(const char *name, oms_error *err)
{
    if (!name || !*name)
        return oms_error_set(err, OMS_INVALID,
                             "staff name is empty (1..%d characters of "
                             "A-Z a-z 0-9 _ . -)",
                             GW_STAFF_NAME_MAX);
    size_t n = strlen(name);
    if (n > GW_STAFF_NAME_MAX)
        return oms_error_set(err, OMS_INVALID, "staff name is %zu characters long (at most %d)", n,
                             GW_STAFF_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == '-';
        if (!ok)
            return oms_error_set(err, OMS_INVALID,
                                 "staff name: character %zu (0x%02x) is not one of "
                                 "A-Z a-z 0-9 _ . -",
                                 i + 1, c);
    }
    return OMS_OK;
}

int gw_staff_check_password(const char *password, oms_error *err)
{
    size_t n = password ? strlen(password) : 0;
    if (n < GW_STAFF_PASSWORD_MIN)
        return oms_error_set(err, OMS_INVALID, "password is %zu bytes long: at least %d", n,
                             GW_STAFF_PASSWORD_MIN);
    if (n > GW_STAFF_PASSWORD_MAX)
        return oms_error_set(err, OMS_INVALID, "password is %zu bytes long: at most %d", n,
                             GW_STAFF_PASSWORD_MAX);
    return OMS_OK;
}

/* ---- hashing ---------------------------------------------------------------------- */

static int random_bytes(void *out, size_t n, oms_error *err)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom((char *)out + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return oms_error_set(err, OMS_ERR, "getrandom: %s", strerror(errno));
        }
        got += (size_t)r;
    }
    return OMS_OK;
}

/* Waits (bounded) until fewer than max_hashing hashes run, then counts this one. */
static int hash_slot_take(gw_staff_store *st, oms_error *err)
{
    struct timespec deadline;
    if (oms_deadline_after_ns(CLOCK_MONOTONIC, st->p.hash_wait_ms * 1000000LL, &deadline) != OMS_OK)
        return oms_error_set(err, OMS_ERR, "clock_gettime(CLOCK_MONOTONIC) failed");
    int rc = OMS_OK;
    oms_mutex_lock(&st->mu);
    while (st->hashing >= st->p.max_hashing) {
        int e = oms_cond_timedwait(&st->cv, &st->mu, &deadline);
        if (e == ETIMEDOUT && st->hashing >= st->p.max_hashing) {
            rc = oms_error_set(err, OMS_AGAIN,
                               "too many password checks at once (%d running for %d ms)",
                               st->p.max_hashing, st->p.hash_wait_ms);
            break;
        }
    }
    if (rc == OMS_OK)
        st->hashing++;
    oms_mutex_unlock(&st->mu);
    return rc;
}

static void hash_slot_give(gw_staff_store *st)
{
    oms_mutex_lock(&st->mu);
    st->hashing--;
    oms_cond_signal(&st->cv);
    oms_mutex_unlock(&st->mu);
}

static int argon2_status(int a, const char *what, oms_error *err)
{
    /* Out of memory is passing (other hashes finish and free theirs): retry later. */
    return oms_error_set(err, a == ARGON2_MEMORY_ALLOCATION_ERROR ? OMS_AGAIN : OMS_ERR,
                         "argon2id %s: %s", what, argon2_error_message(a));
}

/* out (HASH_MAX bytes) gets the encoded Argon2id hash of password with a fresh salt. */
static int hash_password(gw_staff_store *st, const char *password, char out[HASH_MAX],
                         oms_error *err)
{
    unsigned char salt[SALT_LEN];
    int rc = random_bytes(salt, sizeof(salt), err);
    if (rc != OMS_OK)
        return rc;
    rc = hash_slot_take(st, err);
    if (rc != OMS_OK)
        return rc;
    int a = argon2id_hash_encoded(st->p.t_cost, st->p.m_cost_kib, st->p.parallelism, password,
                                  strlen(password), salt, sizeof(salt), TAG_LEN, out, HASH_MAX);
    hash_slot_give(st);
    if (a != ARGON2_OK)
        return argon2_status(a, "hash", err);
    return OMS_OK;
}

/* 1 when encoded was made with the store's current cost (its "$argon2id$v=..$m=..,t=..,
 * p=..$" head equals st->prefix). */
static int current_cost(const gw_staff_store *st, const char *encoded)
{
    return strncmp(encoded, st->prefix, strlen(st->prefix)) == 0;
}

/* ---- open / close ----------------------------------------------------------------- */

static int store_init(gw_staff_store *st, const gw_staff_params *params, oms_error *err)
{
    gw_staff_params p = params ? *params : (gw_staff_params){0, 0, 0, 0, 0};
    if (!p.t_cost)
        p.t_cost = 2;
    if (!p.m_cost_kib)
        p.m_cost_kib = 19456;
    if (!p.parallelism)
        p.parallelism = 1;
    if (p.max_hashing <= 0)
        p.max_hashing = 4;
    if (p.hash_wait_ms <= 0)
        p.hash_wait_ms = 5000;
    if (p.m_cost_kib < 8 * p.parallelism || p.parallelism > 64 || p.m_cost_kib > (4u << 20))
        return oms_error_set(err, OMS_INVALID,
                             "argon2id cost m=%u KiB, p=%u: need 8*p <= m <= 4 GiB and p <= 64",
                             p.m_cost_kib, p.parallelism);
    st->p = p;
    /* Each hash allocates m_cost KiB. glibc raises its mmap threshold to the size of the
     * first large block freed, so from the second hash on these blocks would come from
     * the heap and stay resident (~19 MiB per concurrent hash, for the process's life).
     * A fixed threshold (glibc's default value) keeps them mmapped: returned at once. */
    if (mallopt(M_MMAP_THRESHOLD, 128 * 1024) != 1)
        oms_log_warn("staff store: mallopt(M_MMAP_THRESHOLD) failed: password hashing "
                     "memory may stay resident");
    snprintf(st->prefix, sizeof(st->prefix), "$argon2id$v=%d$m=%u,t=%u,p=%u$",
             ARGON2_VERSION_NUMBER, p.m_cost_kib, p.t_cost, p.parallelism);

    int e = oms_cond_init_monotonic(&st->cv);
    if (e != 0)
        return oms_error_set(err, OMS_ERR, "staff store: pthread_cond_init: %s", strerror(e));
    e = pthread_mutex_init(&st->mu, NULL);
    if (e != 0) {
        pthread_cond_destroy(&st->cv);
        return oms_error_set(err, OMS_ERR, "staff store: pthread_mutex_init: %s", strerror(e));
    }

    /* The dummy's password is random and forgotten: nothing can match it. */
    char junk[33];
    int rc = oms_random_hex(junk, 16) == OMS_OK
                 ? hash_password(st, junk, st->dummy, err)
                 : oms_error_set(err, OMS_ERR, "getrandom failed (dummy password)");
    if (rc == OMS_OK && !current_cost(st, st->dummy))
        rc = oms_error_set(err, OMS_ERR, "argon2id: unexpected encoding \"%.40s\"", st->dummy);
    if (rc != OMS_OK) {
        pthread_mutex_destroy(&st->mu);
        pthread_cond_destroy(&st->cv);
    }
    return rc;
}

int gw_staff_store_attach(gw_staff_store **out, oms_db *db, const gw_staff_params *params,
                          oms_error *err)
{
    *out = NULL;
    gw_staff_store *st = oms_xcalloc(1, sizeof(*st));
    int rc = store_init(st, params, err);
    if (rc != OMS_OK) {
        free(st);
        return rc;
    }
    st->db = db;
    *out = st;
    return OMS_OK;
}

int gw_staff_db_open(oms_db **out, const char *url, oms_error *err)
{
    return oms_db_open(out, url, &gw_staff_migration, 1, err);
}

int gw_staff_store_open(gw_staff_store **out, const char *url, const gw_staff_params *params,
                        oms_error *err)
{
    /* The cost is checked before the database is touched: a bad one creates no file. */
    int rc = gw_staff_store_attach(out, NULL, params, err);
    if (rc != OMS_OK)
        return rc;
    rc = gw_staff_db_open(&(*out)->db, url, err);
    if (rc != OMS_OK) {
        gw_staff_store_close(*out);
        *out = NULL;
        return rc;
    }
    (*out)->owns_db = 1;
    return OMS_OK;
}

void gw_staff_store_close(gw_staff_store *st)
{
    if (!st)
        return;
    if (st->owns_db)
        oms_db_close(st->db);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
    free(st);
}

oms_db *gw_staff_store_db(gw_staff_store *st)
{
    return st->db;
}

/* ---- accounts --------------------------------------------------------------------- */

int gw_staff_add(gw_staff_store *st, const char *name, const char *password, oms_error *err)
{
    char hash[HASH_MAX];
    int rc = gw_staff_check_name(name, err);
    if (rc == OMS_OK)
        rc = gw_staff_check_password(password, err);
    if (rc == OMS_OK)
        rc = hash_password(st, password, hash, err);
    if (rc != OMS_OK)
        return rc;
    oms_db_param p[] = {OMS_DB_S(name), OMS_DB_S(hash), OMS_DB_I(oms_now_ms())};
    rc = oms_db_exec_tx(st->db,
                        "INSERT INTO staff(name, hash, created_at, updated_at) "
                        "VALUES($1, $2, $3, $3)",
                        p, 3, NULL, err);
    if (rc == OMS_CONFLICT)
        oms_error_set(err, OMS_CONFLICT, "staff account %s already exists", name);
    return rc;
}

int gw_staff_passwd(gw_staff_store *st, const char *name, const char *password, oms_error *err)
{
    char hash[HASH_MAX];
    oms_db_tx *tx = NULL;
    long long changed = 0;
    int rc = gw_staff_check_name(name, err);
    if (rc == OMS_OK)
        rc = gw_staff_check_password(password, err);
    if (rc == OMS_OK)
        rc = hash_password(st, password, hash, err);
    if (rc == OMS_OK)
        rc = oms_db_begin(st->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    oms_db_param p[] = {OMS_DB_S(name), OMS_DB_S(hash), OMS_DB_I(oms_now_ms())};
    rc = oms_db_exec(tx, "UPDATE staff SET hash = $2, updated_at = $3 WHERE name = $1", p, 3,
                     &changed, err);
    if (rc != OMS_OK)
        goto fail;
    if (changed == 0) {
        rc = oms_error_set(err, OMS_NOTFOUND, "staff account %s not found", name);
        goto fail;
    }
    rc = oms_db_exec(tx, "DELETE FROM staff_sessions WHERE name = $1", p, 1, NULL, err);
    if (rc != OMS_OK)
        goto fail;
    return oms_db_commit(tx, err);
fail:
    oms_db_rollback(tx);
    return rc;
}

int gw_staff_remove(gw_staff_store *st, const char *name, oms_error *err)
{
    oms_db_tx *tx = NULL;
    long long changed = 0;
    int rc = gw_staff_check_name(name, err);
    if (rc == OMS_OK)
        rc = oms_db_begin(st->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    oms_db_param p[] = {OMS_DB_S(name)};
    rc = oms_db_exec(tx, "DELETE FROM staff_sessions WHERE name = $1", p, 1, NULL, err);
    if (rc != OMS_OK)
        goto fail;
    rc = oms_db_exec(tx, "DELETE FROM staff WHERE name = $1", p, 1, &changed, err);
    if (rc != OMS_OK)
        goto fail;
    if (changed == 0) {
        rc = oms_error_set(err, OMS_NOTFOUND, "staff account %s not found", name);
        goto fail;
    }
    return oms_db_commit(tx, err);
fail:
    oms_db_rollback(tx);
    return rc;
}

static int hash_row(const oms_db_row *row, void *ud)
{
    const char *h = oms_db_row_text(row, 0);
    char *out = ud;
    /* Not a hash we wrote: keep "" so that load_hash reports it. */
    if (h && strlen(h) < HASH_MAX)
        memcpy(out, h, strlen(h) + 1);
    return OMS_OK;
}

/* The account's stored hash into out; *found 0 when the name does not exist. */
static int load_hash(gw_staff_store *st, const char *name, char out[HASH_MAX], int *found,
                     oms_error *err)
{
    oms_db_tx *tx = NULL;
    long long n = 0;
    int rc = oms_db_begin(st->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    oms_db_param p[] = {OMS_DB_S(name)};
    out[0] = '\0';
    rc = oms_db_query(tx, "SELECT hash FROM staff WHERE name = $1", p, 1, hash_row, out, &n, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        return rc;
    }
    rc = oms_db_commit(tx, err);
    if (rc == OMS_OK && n > 0 && strncmp(out, "$argon2id$", 10) != 0)
        rc = oms_error_set(err, OMS_ERR, "staff account %s: stored hash is not an argon2id hash",
                           name);
    *found = n > 0;
    return rc;
}

/* After a good login with a hash of another cost: store one of the current cost. Only
 * if the hash is still the one checked (a passwd in between wins). Best effort. */
static void rehash(gw_staff_store *st, const char *name, const char *password, const char *old)
{
    char hash[HASH_MAX];
    oms_error err;
    int rc = hash_password(st, password, hash, &err);
    if (rc == OMS_OK) {
        oms_db_param p[] = {OMS_DB_S(name), OMS_DB_S(hash), OMS_DB_S(old)};
        rc = oms_db_exec_tx(st->db, "UPDATE staff SET hash = $2 WHERE name = $1 AND hash = $3", p,
                            3, NULL, &err);
    }
    if (rc != OMS_OK)
        oms_log_warn("staff: rehash with the current argon2id cost failed (will retry at the "
                     "next login)",
                     "staff", name, "error", err.msg);
}

int gw_staff_verify(gw_staff_store *st, const char *name, const char *password, oms_error *err)
{
    char hash[HASH_MAX];
    int found = 0;
    /* A name or password that breaks the public rules cannot match: no need to hash. */
    if (gw_staff_check_name(name, NULL) != OMS_OK ||
        gw_staff_check_password(password, NULL) != OMS_OK)
        return oms_error_set(err, OMS_INVALID, "wrong name or password");
    int rc = load_hash(st, name, hash, &found, err);
    if (rc != OMS_OK)
        return rc;
    rc = hash_slot_take(st, err);
    if (rc != OMS_OK)
        return rc;
    int a = argon2id_verify(found ? hash : st->dummy, password, strlen(password));
    hash_slot_give(st);
    if (!found || a == ARGON2_VERIFY_MISMATCH)
        return oms_error_set(err, OMS_INVALID, "wrong name or password");
    if (a != ARGON2_OK)
        return argon2_status(a, "verify", err);
    if (!current_cost(st, hash))
        rehash(st, name, password, hash);
    return OMS_OK;
}

static int count_row(const oms_db_row *row, void *ud)
{
    *(long long *)ud = oms_db_row_int(row, 0);
    return OMS_OK;
}

int gw_staff_count(gw_staff_store *st, long long *n, oms_error *err)
{
    oms_db_tx *tx = NULL;
    *n = 0;
    int rc = oms_db_begin(st->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = oms_db_query(tx, "SELECT COUNT(*) FROM staff", NULL, 0, count_row, n, NULL, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        return rc;
    }
    return oms_db_commit(tx, err);
}

typedef struct list_ctx {
    gw_staff_list_fn fn;
    void *ud;
} list_ctx;

static int list_row(const oms_db_row *row, void *ud)
{
    list_ctx *c = ud;
    gw_staff_info info = {oms_db_row_text(row, 0), oms_db_row_int(row, 1), oms_db_row_int(row, 2),
                          oms_db_row_int(row, 3)};
    return c->fn(&info, c->ud);
}

int gw_staff_list(gw_staff_store *st, gw_staff_list_fn fn, void *ud, oms_error *err)
{
    oms_db_tx *tx = NULL;
    list_ctx c = {fn, ud};
    int rc = oms_db_begin(st->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    rc = oms_db_query(tx,
                      "SELECT s.name, s.created_at, s.updated_at,"
                      " (SELECT COUNT(*) FROM staff_sessions x WHERE x.name = s.name) "
                      "FROM staff s ORDER BY s.name",
                      NULL, 0, list_row, &c, NULL, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        return rc;
    }
    return oms_db_commit(tx, err);
}

/* ---- sessions --------------------------------------------------------------------- */

static int token_wellformed(const char *token)
{
    if (!token || strlen(token) != GW_STAFF_TOKEN_LEN)
        return 0;
    for (int i = 0; i < GW_STAFF_TOKEN_LEN; i++) {
        char c = token[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return 1;
}

/* out = lowercase hex SHA-256 of the token's text: the only form stored. */
static int token_digest(const char *token, char out[65], oms_error *err)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(token, strlen(token), md, &len, EVP_sha256(), NULL) != 1 || len != 32)
        return oms_error_set(err, OMS_ERR, "EVP_Digest(SHA-256) failed");
    for (unsigned int i = 0; i < len; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
    return OMS_OK;
}

static int64_t idle_ms_of(int64_t idle_s)
{
    return (idle_s > 0 ? idle_s : GW_STAFF_SESSION_IDLE_S) * 1000;
}

int gw_staff_session_create(gw_staff_store *st, const char *name, int64_t now_ms,
                            char token[GW_STAFF_TOKEN_LEN + 1], oms_error *err)
{
    char digest[65];
    oms_db_tx *tx = NULL;
    long long n = 0;
    token[0] = '\0';
    int rc = gw_staff_check_name(name, err);
    if (rc != OMS_OK)
        return rc;
    if (oms_random_hex(token, GW_STAFF_TOKEN_LEN / 2) != OMS_OK)
        return oms_error_set(err, OMS_ERR, "getrandom failed (session token)");
    rc = token_digest(token, digest, err);
    if (rc == OMS_OK)
        rc = oms_db_begin(st->db, &tx, err);
    if (rc != OMS_OK)
        goto out;
    /* Each statement gets exactly the parameters it uses: PostgreSQL cannot type an
     * unused one. */
    oms_db_param p[] = {OMS_DB_S(name), OMS_DB_S(digest), OMS_DB_I(now_ms)};
    oms_db_param keep[] = {OMS_DB_S(name), OMS_DB_S(digest), OMS_DB_I(GW_STAFF_MAX_SESSIONS - 1)};
    rc = oms_db_query(tx, "SELECT 1 FROM staff WHERE name = $1", p, 1, NULL, NULL, &n, err);
    if (rc == OMS_OK && n == 0)
        rc = oms_error_set(err, OMS_NOTFOUND, "staff account %s not found", name);
    if (rc == OMS_OK)
        rc = oms_db_exec(tx,
                         "INSERT INTO staff_sessions(token_hash, name, created_at, last_seen_at) "
                         "VALUES($2, $1, $3, $3)",
                         p, 3, NULL, err);
    /* Keep the new session and the account's most recently used others. */
    if (rc == OMS_OK)
        rc = oms_db_exec(tx,
                         "DELETE FROM staff_sessions WHERE name = $1 AND token_hash <> $2"
                         " AND token_hash NOT IN (SELECT token_hash FROM staff_sessions"
                         " WHERE name = $1 AND token_hash <> $2"
                         " ORDER BY last_seen_at DESC, created_at DESC LIMIT $3)",
                         keep, 3, NULL, err);
    if (rc != OMS_OK) {
        oms_db_rollback(tx);
        goto out;
    }
    rc = oms_db_commit(tx, err);
out:
    if (rc != OMS_OK)
        memset(token, 0, GW_STAFF_TOKEN_LEN + 1);
    return rc;
}

typedef struct session_row {
    char name[GW_STAFF_NAME_MAX + 1];
    int64_t last_seen_ms;
} session_row;

static int session_row_fn(const oms_db_row *row, void *ud)
{
    session_row *s = ud;
    snprintf(s->name, sizeof(s->name), "%s", oms_db_row_text(row, 0));
    s->last_seen_ms = oms_db_row_int(row, 1);
    return OMS_OK;
}

int gw_staff_session_check(gw_staff_store *st, const char *token, int64_t now_ms, int64_t idle_s,
                           char name[GW_STAFF_NAME_MAX + 1], oms_error *err)
{
    char digest[65];
    session_row s;
    oms_db_tx *tx = NULL;
    long long n = 0;
    name[0] = '\0';
    if (!token_wellformed(token))
        return oms_error_set(err, OMS_INVALID, NOT_SIGNED_IN);
    int rc = token_digest(token, digest, err);
    if (rc == OMS_OK)
        rc = oms_db_begin(st->db, &tx, err);
    if (rc != OMS_OK)
        return rc;
    oms_db_param p[] = {OMS_DB_S(digest), OMS_DB_I(now_ms)};
    rc = oms_db_query(tx,
                      "SELECT s.name, s.last_seen_at FROM staff_sessions s"
                      " JOIN staff a ON a.name = s.name WHERE s.token_hash = $1",
                      p, 1, session_row_fn, &s, &n, err);
    if (rc != OMS_OK)
        goto fail;
    if (n == 0) {
        rc = oms_error_set(err, OMS_INVALID, NOT_SIGNED_IN);
        goto fail;
    }
    if (now_ms - s.last_seen_ms >= idle_ms_of(idle_s)) {
        rc = oms_db_exec(tx, "DELETE FROM staff_sessions WHERE token_hash = $1", p, 1, NULL, err);
        if (rc == OMS_OK)
            rc = oms_db_commit(tx, err);
        return rc == OMS_OK ? oms_error_set(err, OMS_INVALID, NOT_SIGNED_IN) : rc;
    }
    if (now_ms - s.last_seen_ms >= GW_STAFF_TOUCH_MS) {
        rc = oms_db_exec(tx,
                         "UPDATE staff_sessions SET last_seen_at = $2"
                         " WHERE token_hash = $1 AND last_seen_at < $2",
                         p, 2, NULL, err);
        if (rc != OMS_OK)
            goto fail;
    }
    rc = oms_db_commit(tx, err);
    if (rc == OMS_OK)
        memcpy(name, s.name, sizeof(s.name));
    return rc;
fail:
    oms_db_rollback(tx);
    return rc;
}

int gw_staff_session_delete(gw_staff_store *st, const char *token, oms_error *err)
{
    char digest[65];
    if (!token_wellformed(token))
        return OMS_OK; /* never issued, so nothing to forget */
    int rc = token_digest(token, digest, err);
    if (rc != OMS_OK)
        return rc;
    oms_db_param p[] = {OMS_DB_S(digest)};
    return oms_db_exec_tx(st->db, "DELETE FROM staff_sessions WHERE token_hash = $1", p, 1, NULL,
                          err);
}

int gw_staff_session_prune(gw_staff_store *st, int64_t now_ms, int64_t idle_s, long long *removed,
                           oms_error *err)
{
    long long n = 0;
    oms_db_param p[] = {OMS_DB_I(now_ms - idle_ms_of(idle_s)), OMS_DB_I(PRUNE_BATCH)};
    int rc = oms_db_exec_tx(st->db,
                            "DELETE FROM staff_sessions WHERE token_hash IN"
                            " (SELECT token_hash FROM staff_sessions"
                            " WHERE last_seen_at <= $1 LIMIT $2)",
                            p, 2, &n, err);
    if (removed)
        *removed = rc == OMS_OK ? n : 0;
    return rc;
}
