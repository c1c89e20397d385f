/* Staff identity: accounts with Argon2id password hashes and server-side sessions, kept
 * in the gateway's own database (SQLite var/gateway.db, or PostgreSQL by DATABASE_URL,
 * through oms/db.h). No HTTP here: the routes call these functions and map the status
 * codes (oms_status_to_http), and tools/oms-staff.c manages accounts from a shell.
 *
 * Tables: staff(name PK, hash, created_at, updated_at) and
 * staff_sessions(token_hash PK, name, created_at, last_seen_at), times in wall-clock ms.
 *
 * Passwords. Hashed with argon2id_hash_encoded, a fresh 16-byte salt from getrandom per
 * hash, 32-byte tag; the cost travels inside the encoded string
 * ("$argon2id$v=19$m=19456,t=2,p=1$<salt>$<tag>"), so an account keeps verifying after
 * the defaults change, and is rehashed with the current cost at its next good login.
 * argon2id_verify compares in constant time. A name that does not exist is checked
 * against a dummy hash of the same cost, so the answer (OMS_INVALID, "wrong name or
 * password") and the time taken do not tell which names exist. Each hash holds
 * m_cost_kib of memory and a core for its duration: at most max_hashing run at once per
 * store, the others wait (up to hash_wait_ms, then OMS_AGAIN), so a burst of logins
 * cannot take the gateway's memory. No database transaction is open while a hash is computed.
 *
 * Sessions. A token is 256 random bits written as 64 lowercase hex chars; the caller
 * gets it once (for a cookie) and the table keeps only the hex SHA-256 of it, so a copy
 * of the database cannot be replayed as sessions. A session ends after idle_s without
 * use, on logout, when its account is removed or its password changed, and when the
 * account opens more than GW_STAFF_MAX_SESSIONS (the least recently used goes). Each
 * use moves last_seen_at, at most once per GW_STAFF_TOUCH_MS to spare writes (so a
 * session may end up to that much before idle_s of real idleness).
 *
 * Threading: every function is thread-safe; one store is shared by all request
 * threads (the database pool serialises or spreads the transactions). */
#ifndef GATEWAY_STAFF_STORE_H
#define GATEWAY_STAFF_STORE_H

#include <stdint.h>

#include "oms/db.h"
#include "oms/status.h"

#define GW_STAFF_NAME_MAX 64     /* names: 1..64 chars of [A-Za-z0-9_.-], case-sensitive */
#define GW_STAFF_PASSWORD_MIN 12 /* bytes */
#define GW_STAFF_PASSWORD_MAX 256
#define GW_STAFF_TOKEN_LEN 64               /* hex chars of a session token */
#define GW_STAFF_SESSION_IDLE_S (12 * 3600) /* default idle lifetime */
#define GW_STAFF_TOUCH_MS 60000             /* last_seen_at moves at most this often */
#define GW_STAFF_MAX_SESSIONS 16            /* per account; the least recently used goes */

/* Argon2id cost. A zero field takes its default: t_cost 2 passes, m_cost_kib 19456
 * (19 MiB), parallelism 1 (OWASP's minimum for Argon2id), max_hashing 4, hash_wait_ms
 * 5000 (the gateway's upstream deadline). Tests use {1, 8, 1, 0, 0}. m_cost_kib must be
 * >= 8 * parallelism. */
typedef struct gw_staff_params {
    uint32_t t_cost;      /* passes over the memory */
    uint32_t m_cost_kib;  /* memory per hash, KiB */
    uint32_t parallelism; /* lanes (and threads) per hash */
    int max_hashing;      /* hashes this store computes at once */
    int hash_wait_ms;     /* longest wait for a turn before OMS_AGAIN */
} gw_staff_params;

typedef struct gw_staff_store gw_staff_store;

/* The schema, for a caller that opens the gateway database itself with other
 * migrations (then gw_staff_store_attach); gw_staff_store_open applies it. */
extern const oms_db_migration gw_staff_migration;

/* Opens url ("var/gateway.db", "sqlite:PATH", "postgres://...": oms_db_open) with the
 * staff migration. params NULL: defaults; the struct is copied. Computes the dummy
 * hash, so it takes one hash's time. On success *out is owned by the caller
 * (gw_staff_store_close, which closes the database too). OMS_INVALID for bad params. */
int gw_staff_store_open(gw_staff_store **out, const char *url, const gw_staff_params *params,
                        oms_error *err);
/* oms_db_open(out, url) with the staff migration: the gateway's oms_service_def.db_open
 * (the runner owns the database; the start hook attaches the store to rt->db). */
int gw_staff_db_open(oms_db **out, const char *url, oms_error *err);
/* The same as gw_staff_store_open over a database opened with gw_staff_migration among
 * its migrations (gw_staff_db_open); db is borrowed and must outlive the store (close
 * does not close it). */
int gw_staff_store_attach(gw_staff_store **out, oms_db *db, const gw_staff_params *params,
                          oms_error *err);
/* NULL: no-op. No call may be running on st. */
void gw_staff_store_close(gw_staff_store *st);
/* The database the store uses (borrowed from the store). */
oms_db *gw_staff_store_db(gw_staff_store *st);

/* OMS_OK, or OMS_INVALID saying what is wrong with the name (length, the character). */
int gw_staff_check_name(const char *name, oms_error *err);
/* OMS_OK, or OMS_INVALID when password is not 12..256 bytes (says which bound). */
int gw_staff_check_password(const char *password, oms_error *err);

/* Creates an account. OMS_INVALID (name or password rule), OMS_CONFLICT when the name
 * exists, OMS_AGAIN (database busy, or too many hashes waiting), OMS_ERR. */
int gw_staff_add(gw_staff_store *st, const char *name, const char *password, oms_error *err);
/* Sets a new password and ends the account's sessions (whoever held the old password
 * is signed out). OMS_NOTFOUND when the name does not exist; else as gw_staff_add. */
int gw_staff_passwd(gw_staff_store *st, const char *name, const char *password, oms_error *err);
/* Deletes the account and its sessions. OMS_NOTFOUND when the name does not exist. */
int gw_staff_remove(gw_staff_store *st, const char *name, oms_error *err);
/* OMS_OK when password is the account's; OMS_INVALID "wrong name or password" for a
 * wrong password, an unknown name (after as much work as a known one), or a name or
 * password that breaks the rules (at once: those rules are public). OMS_AGAIN / OMS_ERR
 * when the check could not be made (the caller answers 503/500, and counts no failure).
 * A good password stored with another cost than the store's is rehashed (best effort). */
int gw_staff_verify(gw_staff_store *st, const char *name, const char *password, oms_error *err);
/* Number of accounts (the gateway creates a first admin when it is 0). */
int gw_staff_count(gw_staff_store *st, long long *n, oms_error *err);

/* One account as listed; strings valid only during the callback. */
typedef struct gw_staff_info {
    const char *name;
    int64_t created_ms, updated_ms;
    long long sessions; /* stored sessions, expired ones not yet pruned included */
} gw_staff_info;
/* Return OMS_OK to go on; anything else stops the listing and is returned. */
typedef int (*gw_staff_list_fn)(const gw_staff_info *info, void *ud);
/* Calls fn for each account, by name, inside one read transaction (do not call the
 * store from fn). */
int gw_staff_list(gw_staff_store *st, gw_staff_list_fn fn, void *ud, oms_error *err);

/* Opens a session for an existing account at now_ms (wall clock, oms_now_ms) and writes
 * its token, 64 hex chars and a NUL, into token (caller's buffer, >= 65 bytes). The
 * token exists only there: hand it to the client and forget it. OMS_NOTFOUND when the
 * account does not exist (removed since the password check). */
int gw_staff_session_create(gw_staff_store *st, const char *name, int64_t now_ms,
                            char token[GW_STAFF_TOKEN_LEN + 1], oms_error *err);
/* Checks token at now_ms with idle_s of allowed idleness (<= 0: GW_STAFF_SESSION_IDLE_S).
 * OMS_OK: name (caller's buffer, >= 65 bytes) gets the account. OMS_INVALID "not signed
 * in or session expired" for a malformed, unknown or expired token (an expired one is
 * deleted). OMS_AGAIN / OMS_ERR: database trouble (503/500, not 401). */
int gw_staff_session_check(gw_staff_store *st, const char *token, int64_t now_ms, int64_t idle_s,
                           char name[GW_STAFF_NAME_MAX + 1], oms_error *err);
/* Logout: forgets the session. OMS_OK also when there was none (a malformed token
 * included); only database trouble fails. */
int gw_staff_session_delete(gw_staff_store *st, const char *token, oms_error *err);
/* Deletes up to 1000 sessions idle for idle_s (<= 0: the default) at now_ms; *removed
 * (optional) gets how many. Call it periodically (an oms_ticker) and repeat while it
 * removes 1000. */
int gw_staff_session_prune(gw_staff_store *st, int64_t now_ms, int64_t idle_s, long long *removed,
                           oms_error *err);

#endif
