/* Expiry sweeper. It waits on a condition variable (CLOCK_MONOTONIC, so wall-clock
 * jumps neither stall nor rush it) instead of sleeping, so stop wakes it at once. */
#include "expiry.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "oms/log.h"
#include "oms/util.h"

struct stock_expiry {
    stock_service *svc;
    long long period_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop; /* guarded by mu */
};

/* Mutex/condvar calls on objects we initialised can only fail on memory corruption;
 * carrying on then would be worse than stopping. */
static void must(int rc, const char *what)
{
    if (rc != 0) {
        oms_log_errorf("expiry: %s: %s", what, strerror(rc));
        abort();
    }
}

static void deadline_after(struct timespec *ts, long long ms)
{
    must(clock_gettime(CLOCK_MONOTONIC, ts) == 0 ? 0 : errno, "clock_gettime");
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *expiry_main(void *arg)
{
    stock_expiry *e = arg;
    int failing = 0;
    for (;;) {
        struct timespec until;
        deadline_after(&until, e->period_ms);
        must(pthread_mutex_lock(&e->mu), "pthread_mutex_lock");
        int rc = 0;
        while (!e->stop && rc != ETIMEDOUT) {
            rc = pthread_cond_timedwait(&e->cv, &e->mu, &until);
            if (rc != 0 && rc != ETIMEDOUT)
                must(rc, "pthread_cond_timedwait");
        }
        int stop = e->stop;
        must(pthread_mutex_unlock(&e->mu), "pthread_mutex_unlock");
        if (stop)
            break;

        oms_error err;
        oms_error_clear(&err);
        size_t n = 0;
        rc = stock_expire_due(e->svc, oms_now_ms(), &n, &err);
        /* Log a failing database once per outage, not once per second. */
        if (rc != OMS_OK && !failing)
            oms_log_errorf("expiry sweep failed (will keep retrying): %s", err.msg);
        else if (rc == OMS_OK && failing)
            oms_log_infof("expiry sweep recovered");
        failing = rc != OMS_OK;
    }
    return NULL;
}

int stock_expiry_start(stock_expiry **out, stock_service *svc, long long period_ms, oms_error *err)
{
    *out = NULL;
    stock_expiry *e = oms_xcalloc(1, sizeof(*e));
    e->svc = svc;
    e->period_ms = period_ms > 0 ? period_ms : 1000;
    pthread_condattr_t attr;
    int rc = pthread_mutex_init(&e->mu, NULL);
    if (rc != 0) {
        free(e);
        return oms_error_set(err, OMS_ERR, "expiry: pthread_mutex_init: %s", strerror(rc));
    }
    rc = pthread_condattr_init(&attr);
    if (rc == 0) {
        rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        if (rc == 0)
            rc = pthread_cond_init(&e->cv, &attr);
        pthread_condattr_destroy(&attr);
    }
    if (rc != 0) {
        pthread_mutex_destroy(&e->mu);
        free(e);
        return oms_error_set(err, OMS_ERR, "expiry: condition variable: %s", strerror(rc));
    }
    rc = pthread_create(&e->thread, NULL, expiry_main, e);
    if (rc != 0) {
        pthread_cond_destroy(&e->cv);
        pthread_mutex_destroy(&e->mu);
        free(e);
        return oms_error_set(err, OMS_ERR, "expiry: pthread_create: %s", strerror(rc));
    }
    *out = e;
    return OMS_OK;
}

void stock_expiry_stop(stock_expiry *e)
{
    if (!e)
        return;
    must(pthread_mutex_lock(&e->mu), "pthread_mutex_lock");
    e->stop = 1;
    must(pthread_cond_signal(&e->cv), "pthread_cond_signal");
    must(pthread_mutex_unlock(&e->mu), "pthread_mutex_unlock");
    int rc = pthread_join(e->thread, NULL);
    if (rc != 0)
        oms_log_errorf("expiry: pthread_join: %s", strerror(rc));
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}
