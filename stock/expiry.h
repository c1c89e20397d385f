/* The background thread that releases unpaid reservations once their TTL has passed
 * (DESIGN §6): every period it calls stock_expire_due with the wall clock. */
#ifndef STOCK_EXPIRY_H
#define STOCK_EXPIRY_H

#include "oms/status.h"
#include "service.h"

typedef struct stock_expiry stock_expiry;

/* Starts the sweeper over svc (borrowed; must outlive the sweeper). On success *out is
 * owned by the caller and must be stopped with stock_expiry_stop. */
int stock_expiry_start(stock_expiry **out, stock_service *svc, long long period_ms, oms_error *err);
/* Wakes the thread, waits for a sweep in progress to finish, joins and frees.
 * NULL is a no-op. */
void stock_expiry_stop(stock_expiry *e);

#endif
