/* Slows password guessing at the staff login: failures are counted per client address
 * (IPv6 by its /64, like rate_limit.h) and per account name, separately. When either
 * reaches max_failures, further attempts on that address or name are refused for
 * base_delay_ms, doubled at each further failure up to max_delay_ms (defaults: 5
 * failures, then 30 s, 60 s, ... 15 min); the caller answers 429 with Retry-After. A
 * good login clears its name's and its address's counts. A count is forgotten after
 * window_ms (15 min) without a failure, measured from the end of its last lockout, so a
 * lockout's growth survives the lockout itself.
 *
 * The caller's order, per login attempt:
 *   if (!gw_login_throttle_check(t, addr, name, now, &retry)) -> 429, Retry-After: retry
 *   verify the password; OMS_INVALID -> gw_login_throttle_failure(t, addr, name, now), 401
 *                         OMS_OK     -> gw_login_throttle_success(t, addr, name)
 *                         otherwise (503/500): neither (the password was not checked)
 *
 * Memory is fixed: two tables (addresses, names) of `slots` entries each. A new key
 * takes an empty or forgotten entry among the few it may use, else the one idle
 * longest, and a locked entry only when all of them are locked, so a flood of new
 * addresses evicts idle strangers before it evicts a lockout. Keys are placed with a
 * per-table random seed, so names cannot be chosen to collide with one under attack.
 * Note the trade-off any per-name lockout has: anyone can keep a known name locked.
 *
 * Threading: every function is thread-safe (one mutex, held for a few probes). Clocks
 * are passed in as monotonic ms (oms_mono_ms), so tests need no sleeping. */
#ifndef GATEWAY_LOGIN_THROTTLE_H
#define GATEWAY_LOGIN_THROTTLE_H

#include <stdint.h>
#include <sys/socket.h>

#include "oms/status.h"

/* A zero field takes its default. */
typedef struct gw_login_throttle_cfg {
    int max_failures;      /* failures before the first lockout: 5 */
    int64_t window_ms;     /* quiet time after which a count is forgotten: 15 min */
    int64_t base_delay_ms; /* first lockout: 30 s */
    int64_t max_delay_ms;  /* longest lockout: 15 min */
    int slots;             /* entries per table (addresses, names): 4096, at least 16 */
} gw_login_throttle_cfg;

typedef struct gw_login_throttle gw_login_throttle;

/* cfg NULL: defaults; copied. OMS_INVALID for a negative field or base > max. On success
 * *out is owned by the caller (gw_login_throttle_free). */
int gw_login_throttle_new(gw_login_throttle **out, const gw_login_throttle_cfg *cfg,
                          oms_error *err);
/* NULL: no-op. */
void gw_login_throttle_free(gw_login_throttle *t);

/* Before checking a password. 1: go on. 0: refused, *retry_after_s (optional) gets the
 * whole seconds until both the address and the name are free again (>= 1). addr NULL or
 * of an unknown family, or name NULL, leaves that key out. addr and name are borrowed
 * for the call. */
int gw_login_throttle_check(gw_login_throttle *t, const struct sockaddr *addr, const char *name,
                            int64_t now_ms, int *retry_after_s);
/* A wrong name or password: counts one failure on each key, and (re)starts the lockout
 * once a count reaches max_failures. */
void gw_login_throttle_failure(gw_login_throttle *t, const struct sockaddr *addr, const char *name,
                               int64_t now_ms);
/* A good login: forgets the address's and the name's counts. */
void gw_login_throttle_success(gw_login_throttle *t, const struct sockaddr *addr, const char *name);
/* Entries in use in both tables (for metrics and tests); never more than 2 * slots. */
int gw_login_throttle_tracked(gw_login_throttle *t);

#endif
