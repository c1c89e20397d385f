#include "oms/ticker.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "oms/log.h"
#include "oms/util.h"

struct oms_ticker {
    const char *name;
    long long period_ms;
    int (*fn)(void *ud, oms_error *err);
    void *ud;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop; /* guarded by mu */
};

static void *ticker_main(void *arg)
{
    oms_ticker *t = arg;
    int failing = 0;
    oms_thread_background();
    for (;;) {
        struct timespec until;
        oms_mono_deadline_ms(t->period_ms, &until);
        oms_mutex_lock(&t->mu);
        int rc = 0;
        while (!t->stop && rc != ETIMEDOUT)
            rc = oms_cond_timedwait(&t->cv, &t->mu, &until);
        int stop = t->stop;
        oms_mutex_unlock(&t->mu);
        if (stop)
            break;
        oms_error err;
        oms_error_clear(&err);
        rc = t->fn(t->ud, &err);
        /* A failing dependency is logged once per outage, not once per period. */
        if (rc != OMS_OK && !failing)
            oms_log_errorf("%s failed (will keep retrying): %s", t->name, err.msg);
        else if (rc == OMS_OK && failing)
            oms_log_infof("%s recovered", t->name);
        failing = rc != OMS_OK;
    }
    return NULL;
}

int oms_ticker_start(oms_ticker **out, const char *name, long long period_ms,
                     int (*fn)(void *ud, oms_error *err), void *ud, oms_error *err)
{
    *out = NULL;
    oms_ticker *t = oms_xcalloc(1, sizeof(*t));
    t->name = name;
    t->period_ms = period_ms > 0 ? period_ms : 1000;
    t->fn = fn;
    t->ud = ud;
    int rc = pthread_mutex_init(&t->mu, NULL);
    if (rc != 0) {
        free(t);
        return oms_error_set(err, OMS_ERR, "%s: pthread_mutex_init: %s", name, strerror(rc));
    }
    rc = oms_cond_init_monotonic(&t->cv);
    if (rc != 0) {
        pthread_mutex_destroy(&t->mu);
        free(t);
        return oms_error_set(err, OMS_ERR, "%s: condition variable: %s", name, strerror(rc));
    }
    rc = pthread_create(&t->thread, NULL, ticker_main, t);
    if (rc != 0) {
        pthread_cond_destroy(&t->cv);
        pthread_mutex_destroy(&t->mu);
        free(t);
        return oms_error_set(err, OMS_ERR, "%s: pthread_create: %s", name, strerror(rc));
    }
    *out = t;
    return OMS_OK;
}

void oms_ticker_stop(oms_ticker *t)
{
    if (!t)
        return;
    oms_mutex_lock(&t->mu);
    t->stop = 1;
    oms_cond_signal(&t->cv);
    oms_mutex_unlock(&t->mu);
    oms_thread_join(t->thread);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
