/* A background thread that calls one function every period (stock's reservation
 * expiry, payments' checkout deadline). It waits on a condition variable with
 * CLOCK_MONOTONIC, so wall-clock jumps neither stall nor rush it and stop wakes it at
 * once; it runs at background priority (oms_thread_background). */
#ifndef OMS_TICKER_H
#define OMS_TICKER_H

#include "oms/status.h"

typedef struct oms_ticker oms_ticker;

/* fn(ud, err) runs every period_ms (<= 0: 1000) until stop. A failure is logged once
 * per outage under name ("reservation expiry failed (will keep retrying): ..."), and
 * the recovery once. name and ud are borrowed and must outlive the ticker. On success
 * *out is owned by the caller (oms_ticker_stop). */
int oms_ticker_start(oms_ticker **out, const char *name, long long period_ms,
                     int (*fn)(void *ud, oms_error *err), void *ud, oms_error *err);
/* Wakes the thread, waits for a call in progress to finish, joins and frees. NULL is a
 * no-op. */
void oms_ticker_stop(oms_ticker *t);

#endif
