/* Cooking stations: KITCHEN_STATIONS threads, each cooking one ticket at a time
 * through the service's rules (take the oldest queued ticket, cook for the configured
 * time, mark it ready). Idle stations sleep on a condition variable that the consumer
 * signals after a new ticket (and time out every second, which also picks up tickets
 * written by another instance sharing a PostgreSQL database). */
#ifndef KITCHEN_STATIONS_H
#define KITCHEN_STATIONS_H

#include "oms/status.h"
#include "service.h"

typedef struct kitchen_stations kitchen_stations;

/* Starts n (1..64) station threads over svc, which must outlive them. cook_ms: time
 * a ticket spends cooking (0: ready at once). On OMS_OK *out is owned by the caller
 * until kitchen_stations_stop. */
int kitchen_stations_start(kitchen_stations **out, kitchen_service *svc, int n, long long cook_ms,
                           oms_error *err);
/* Wakes idle stations: a ticket was queued. Safe from any thread; NULL is a no-op. */
void kitchen_stations_wake(kitchen_stations *st);
/* Stops every station and frees. A station in the middle of cooking stops at once and
 * leaves its ticket cooking: the next start queues it again (kitchen_requeue_cooking).
 * NULL is a no-op. */
void kitchen_stations_stop(kitchen_stations *st);

#endif
