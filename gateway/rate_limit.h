/* Order creation rate per client address: a token bucket per address (IPv6 by its /64,
 * which one customer usually holds whole), so a loop of curl calls cannot place unpaid
 * orders that hold the menu's stock until their checkout deadline. Addresses in the
 * exempt list (the benchmark's load generator on loopback, a trusted kiosk) are never
 * limited. The table is bounded: when it is full the entry idle longest is reused, so
 * memory stays fixed whatever the number of addresses. Thread-safe. */
#ifndef GATEWAY_RATE_LIMIT_H
#define GATEWAY_RATE_LIMIT_H

#include <stdint.h>
#include <sys/socket.h>

#include "oms/status.h"

typedef struct gw_rate_limit gw_rate_limit;

/* per_minute tokens refill per address per minute (0: no limit at all), up to burst;
 * exempt: comma list of CIDRs ("127.0.0.0/8,::1/128"; "" none). OMS_INVALID naming the
 * bad entry. *out owned by the caller (gw_rate_limit_free). */
int gw_rate_limit_new(gw_rate_limit **out, int per_minute, int burst, const char *exempt,
                      oms_error *err);
void gw_rate_limit_free(gw_rate_limit *rl);

/* Takes a token for addr at now_ms (monotonic). 1: allowed. 0: refused, and
 * *retry_after_s gets the whole seconds until a token is back (>= 1). A NULL addr or an
 * unknown family is allowed (nothing to key it on). */
int gw_rate_limit_take(gw_rate_limit *rl, const struct sockaddr *addr, int64_t now_ms,
                       int *retry_after_s);

#endif
