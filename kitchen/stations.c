#include "stations.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "oms/log.h"
#include "oms/trace.h"
#include "oms/util.h"

#define STATIONS_MAX 64
#define STALE_SWEEP_MS 5000 /* idle stations look for tickets of dead instances */
#define IDLE_WAIT_MS 1000   /* idle re-check, also for tickets from other instances */
#define BACKOFF_MIN_MS 100  /* after a database error */
#define BACKOFF_MAX_MS 5000

struct kitchen_stations {
    kitchen_service *svc; /* borrowed */
    long long cook_ms;
    int n; /* threads started */
    pthread_t threads[STATIONS_MAX];
    pthread_mutex_t mu;
    pthread_cond_t cv;   /* on CLOCK_MONOTONIC */
    int stopping;        /* under mu */
    unsigned long wakes; /* under mu: bumped by kitchen_stations_wake */
};

static int before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Sleeps until ms have passed or stop is asked; with wake_on_ticket, also until a new
 * ticket is announced after `seen` was read. Returns 1 when stopping. */
static int station_wait(kitchen_stations *st, long long ms, int wake_on_ticket, unsigned long seen)
{
    struct timespec until;
    oms_mono_deadline_ms(ms, &until);
    oms_mutex_lock(&st->mu);
    for (;;) {
        if (st->stopping || (wake_on_ticket && st->wakes != seen))
            break;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (!before(&now, &until))
            break;
        (void)oms_cond_timedwait(&st->cv, &st->mu, &until);
    }
    int stopping = st->stopping;
    oms_mutex_unlock(&st->mu);
    return stopping;
}

/* The wake-up count now; returns 1 when stopping (checked before every ticket, so a
 * long queue with no cooking time still lets a station stop promptly). */
static int station_poll(kitchen_stations *st, unsigned long *wakes)
{
    oms_mutex_lock(&st->mu);
    *wakes = st->wakes;
    int stopping = st->stopping;
    oms_mutex_unlock(&st->mu);
    return stopping;
}

static long long backoff_next(long long ms)
{
    ms *= 2;
    return ms > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms;
}

/* Marks t ready, retrying database errors with backoff: the order is cooked, so giving
 * up would strand it. Returns 1 when stopped first (the ticket stays cooking and is
 * queued again at the next start). */
static int finish_ticket(kitchen_stations *st, kitchen_ticket *t)
{
    long long backoff = BACKOFF_MIN_MS;
    for (;;) {
        oms_error err;
        oms_error_clear(&err);
        int rc = kitchen_finish(st->svc, t, &err);
        if (rc == OMS_OK)
            return 0;
        if (rc == OMS_CONFLICT) {
            /* Not cooking any more: nothing of ours to finish. */
            oms_log_warn("ticket changed while cooking; left as it is", "order_id", t->order_id,
                         "error", err.msg);
            return 0;
        }
        oms_log_warn("cannot mark ticket ready; retrying", "order_id", t->order_id, "error",
                     err.msg);
        if (station_wait(st, backoff, 0, 0))
            return 1;
        backoff = backoff_next(backoff);
    }
}

/* Where kitchens share a database, a ticket an instance was cooking when it died stays
 * "cooking" until someone puts it back: an idle station does, once it is clearly too
 * old to be a live station's (kitchen_stale_cutoff). With SQLite the start did it. */
static void requeue_stale(kitchen_stations *st, int64_t *next_sweep)
{
    if (!oms_db_locks_rows(st->svc->db) || oms_mono_ms() < *next_sweep)
        return;
    *next_sweep = oms_mono_ms() + STALE_SWEEP_MS;
    long long n = 0;
    oms_error err;
    oms_error_clear(&err);
    if (kitchen_requeue_cooking(st->svc, kitchen_stale_cutoff(st->svc, st->cook_ms, oms_now_ms()),
                                &n, &err) != OMS_OK)
        oms_log_warn("cannot queue again tickets of stopped stations", "error", err.msg);
}

static void *station_main(void *arg)
{
    kitchen_stations *st = arg;
    long long backoff = BACKOFF_MIN_MS;
    int64_t next_sweep = oms_mono_ms() + STALE_SWEEP_MS;
    for (;;) {
        /* Read before looking for work: a ticket announced after this point ends the
         * idle wait below at once, so no wake-up is lost between the two. */
        unsigned long seen;
        if (station_poll(st, &seen))
            break;
        kitchen_ticket t;
        oms_error err;
        oms_error_clear(&err);
        int rc = kitchen_start_next(st->svc, &t, &err);
        if (rc == OMS_AGAIN)
            continue;
        if (rc == OMS_NOTFOUND) {
            backoff = BACKOFF_MIN_MS;
            requeue_stale(st, &next_sweep);
            if (station_wait(st, IDLE_WAIT_MS, 1, seen))
                break;
            continue;
        }
        if (rc != OMS_OK) {
            oms_log_warn("station cannot take a ticket", "error", err.msg);
            if (station_wait(st, backoff, 0, 0))
                break;
            backoff = backoff_next(backoff);
            continue;
        }
        backoff = BACKOFF_MIN_MS;
        int stopped = st->cook_ms > 0 && station_wait(st, st->cook_ms, 0, 0);
        if (stopped)
            oms_log_info("stopping while cooking; ticket resumes at the next start", "order_id",
                         t.order_id);
        else
            stopped = finish_ticket(st, &t);
        kitchen_ticket_free(&t);
        kitchen_leave_ticket_trace(stopped);
        if (stopped)
            break;
    }
    return NULL;
}

int kitchen_stations_start(kitchen_stations **out, kitchen_service *svc, int n, long long cook_ms,
                           oms_error *err)
{
    *out = NULL;
    if (n < 1 || n > STATIONS_MAX)
        return oms_error_set(err, OMS_INVALID, "stations: %d requested, 1..%d allowed", n,
                             STATIONS_MAX);
    if (cook_ms < 0)
        return oms_error_set(err, OMS_INVALID, "stations: negative cook time");
    kitchen_stations *st = oms_xcalloc(1, sizeof(*st));
    st->svc = svc;
    st->cook_ms = cook_ms;
    int rc = oms_cond_init_monotonic(&st->cv);
    if (rc != 0) {
        free(st);
        return oms_error_set(err, OMS_ERR, "stations: condition variable: %s", strerror(rc));
    }
    rc = pthread_mutex_init(&st->mu, NULL);
    if (rc != 0) {
        pthread_cond_destroy(&st->cv);
        free(st);
        return oms_error_set(err, OMS_ERR, "stations: mutex: %s", strerror(rc));
    }
    for (int i = 0; i < n; i++) {
        rc = pthread_create(&st->threads[i], NULL, station_main, st);
        if (rc != 0) {
            oms_error_set(err, OMS_ERR, "stations: cannot start thread %d: %s", i + 1,
                          strerror(rc));
            kitchen_stations_stop(st); /* joins the ones already running */
            return OMS_ERR;
        }
        st->n = i + 1;
    }
    *out = st;
    return OMS_OK;
}

void kitchen_stations_wake(kitchen_stations *st)
{
    if (!st)
        return;
    oms_mutex_lock(&st->mu);
    st->wakes++;
    oms_cond_broadcast(&st->cv);
    oms_mutex_unlock(&st->mu);
}

void kitchen_stations_stop(kitchen_stations *st)
{
    if (!st)
        return;
    oms_mutex_lock(&st->mu);
    st->stopping = 1;
    oms_cond_broadcast(&st->cv);
    oms_mutex_unlock(&st->mu);
    for (int i = 0; i < st->n; i++) {
        int rc = pthread_join(st->threads[i], NULL);
        if (rc != 0)
            oms_log_errorf("station %d: pthread_join failed: %s", i + 1, strerror(rc));
    }
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
    free(st);
}
