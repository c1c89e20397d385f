/* Latency recording shared by the bench_* tools (header-only: CMake builds every
 * tools/NAME.c into its own executable, so shared code lives in a header).
 * A growable array of samples in microseconds, merged and sorted at the end. */
#ifndef OMS_BENCH_LAT_H
#define OMS_BENCH_LAT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct bench_lat {
    uint32_t *us;
    size_t n, cap;
} bench_lat;

static inline int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void bench_lat_add(bench_lat *l, int64_t ns)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        uint32_t *p = realloc(l->us, cap * sizeof(*p));
        if (!p)
            abort();
        l->us = p;
        l->cap = cap;
    }
    int64_t us = ns / 1000;
    l->us[l->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)(us < 0 ? 0 : us);
}

static inline void bench_lat_merge(bench_lat *dst, const bench_lat *src)
{
    for (size_t i = 0; i < src->n; i++)
        bench_lat_add(dst, (int64_t)src->us[i] * 1000);
}

static int bench_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static inline void bench_lat_sort(bench_lat *l)
{
    if (l->n)
        qsort(l->us, l->n, sizeof(*l->us), bench_cmp_u32);
}

/* Percentile (0..100) of a sorted set, in microseconds; 0 when empty. */
static inline double bench_lat_pct(const bench_lat *l, double p)
{
    if (!l->n)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)(l->n - 1) + 0.5);
    if (i >= l->n)
        i = l->n - 1;
    return l->us[i];
}

static inline void bench_lat_free(bench_lat *l)
{
    free(l->us);
    memset(l, 0, sizeof(*l));
}

#endif
