/* Process-wide Prometheus registry.
 *
 * A metric family (one name, one HELP, one TYPE) owns its series (one label set each).
 * Families and series are kept in creation order so the rendering is stable (tests can
 * compare it byte for byte); a small chained hash on name+labels makes the hot path
 * (one counter_add and one observe per HTTP request) a hash probe instead of a scan.
 * One mutex guards everything: updates are a few instructions, so a finer scheme would
 * cost more than it saves. Nothing is ever freed: series live until exit (metrics.h). */
#include "oms/metrics.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oms/log.h"
#include "oms/util.h"

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } metric_kind;

static const char *const kind_names[] = {"counter", "gauge", "histogram"};

/* Upper bounds in seconds; +Inf is implicit (the count). */
static const double bucket_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                       0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define NBUCKETS OMS_NELEM(bucket_bounds)

typedef struct series {
    struct series *next_in_family; /* creation order */
    struct series *next_in_hash;
    struct family *family;
    char *labels; /* "" when none; already escaped by the caller */
    double value;
    double (*fn)(void *ud); /* gauge computed at render time, or NULL */
    void *ud;
    uint64_t buckets[NBUCKETS]; /* per-bucket (not cumulative) counts */
    double sum;
    uint64_t count;
} series;

typedef struct family {
    struct family *next; /* creation order */
    char *name;
    char *help;
    metric_kind kind;
    series *first, *last;
} family;

#define HASH_SIZE 1024 /* series are bounded by label cardinality; chains stay short */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static family *fam_first, *fam_last;
static series *hash_tab[HASH_SIZE];

static uint64_t hash_key(const char *name, const char *labels)
{
    /* FNV-1a over name, a separator, labels. */
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
    for (const char *p = labels; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

/* Prometheus metric names: [a-zA-Z_:][a-zA-Z0-9_:]*. A bad name would make the whole
 * scrape unparseable, so it is refused at the call site instead. */
static int valid_name(const char *s)
{
    if (!s || !*s)
        return 0;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                 (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

/* Rendered by oms_metrics_render itself; a second family of the same name would make
 * the scrape invalid. */
static int reserved_name(const char *s)
{
    return strcmp(s, "process_resident_memory_bytes") == 0 || strcmp(s, "process_open_fds") == 0;
}

static family *family_find(const char *name)
{
    for (family *f = fam_first; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

/* Returns the series for name+labels, creating family and series on first use, or NULL
 * when the name is invalid or already used with another type (logged: a programming
 * error, but not worth crashing a service over). Caller holds reg_lock. */
static series *series_get(const char *name, const char *help, const char *labels, metric_kind kind)
{
    if (!labels)
        labels = "";
    uint64_t h = hash_key(name, labels) % HASH_SIZE;
    for (series *s = hash_tab[h]; s; s = s->next_in_hash) {
        if (strcmp(s->family->name, name) == 0 && strcmp(s->labels, labels) == 0) {
            if (s->family->kind != kind)
                break;
            return s;
        }
    }
    if (!valid_name(name) || reserved_name(name)) {
        oms_log_warn("metrics: invalid or reserved metric name ignored", "name", name);
        return NULL;
    }
    family *f = family_find(name);
    if (f && f->kind != kind) {
        oms_log_warn("metrics: metric used with two types; update ignored", "name", name, "type",
                     kind_names[f->kind], "attempted", kind_names[kind]);
        return NULL;
    }
    if (!f) {
        f = oms_xcalloc(1, sizeof(*f));
        f->name = oms_strdup(name);
        f->help = oms_strdup(help && *help ? help : name);
        f->kind = kind;
        if (fam_last)
            fam_last->next = f;
        else
            fam_first = f;
        fam_last = f;
    }
    series *s = oms_xcalloc(1, sizeof(*s));
    s->family = f;
    s->labels = oms_strdup(labels);
    if (f->last)
        f->last->next_in_family = s;
    else
        f->first = s;
    f->last = s;
    s->next_in_hash = hash_tab[h];
    hash_tab[h] = s;
    return s;
}

void oms_metrics_counter_add(const char *name, const char *help, const char *labels, double v)
{
    /* Counters only go up; a negative or NaN increment would break rate(). */
    if (!(v >= 0))
        return;
    oms_mutex_lock(&reg_lock);
    series *s = series_get(name, help, labels, KIND_COUNTER);
    if (s)
        s->value += v;
    oms_mutex_unlock(&reg_lock);
}

void oms_metrics_gauge_set(const char *name, const char *help, const char *labels, double v)
{
    oms_mutex_lock(&reg_lock);
    series *s = series_get(name, help, labels, KIND_GAUGE);
    if (s) {
        s->value = v;
        s->fn = NULL; /* an explicit value replaces a computed one */
    }
    oms_mutex_unlock(&reg_lock);
}

void oms_metrics_gauge_fn(const char *name, const char *help, const char *labels,
                          double (*fn)(void *ud), void *ud)
{
    oms_mutex_lock(&reg_lock);
    series *s = series_get(name, help, labels, KIND_GAUGE);
    if (s) {
        s->fn = fn;
        s->ud = ud;
    }
    oms_mutex_unlock(&reg_lock);
}

void oms_metrics_observe(const char *name, const char *help, const char *labels, double seconds)
{
    if (isnan(seconds))
        return;
    oms_mutex_lock(&reg_lock);
    series *s = series_get(name, help, labels, KIND_HISTOGRAM);
    if (s) {
        for (size_t i = 0; i < NBUCKETS; i++) {
            if (seconds <= bucket_bounds[i]) {
                s->buckets[i]++;
                break;
            }
        }
        s->sum += seconds;
        s->count++;
    }
    oms_mutex_unlock(&reg_lock);
}

char *oms_metrics_label(char *buf, size_t size, const char *key, const char *value)
{
    if (!buf || size == 0)
        return buf;
    if (!value)
        value = "";
    size_t len = strnlen(buf, size);
    if (len == size) /* not NUL-terminated: refuse rather than overrun */
        return buf;
    /* Worst case: comma, key, =", every value byte escaped (2), ", NUL. */
    size_t need = (len ? 1 : 0) + strlen(key) + 2 + 2 * strlen(value) + 1 + 1;
    if (len + need > size) {
        /* Dropping the label keeps the label set well-formed; a cut one would break the
         * whole scrape. */
        oms_log_warn("metrics: label does not fit; dropped", "key", key);
        return buf;
    }
    char *p = buf + len;
    if (len)
        *p++ = ',';
    size_t kl = strlen(key);
    memcpy(p, key, kl);
    p += kl;
    *p++ = '=';
    *p++ = '"';
    for (const char *v = value; *v; v++) {
        if (*v == '\\' || *v == '"') {
            *p++ = '\\';
            *p++ = *v;
        } else if (*v == '\n') {
            *p++ = '\\';
            *p++ = 'n';
        } else {
            *p++ = *v;
        }
    }
    *p++ = '"';
    *p = '\0';
    return buf;
}

/* ---- rendering ------------------------------------------------------------------ */

typedef struct {
    char *buf;
    size_t len, cap;
} out_buf;

static void out_printf(out_buf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out_printf(out_buf *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = o->cap - o->len;
        int n = vsnprintf(o->buf + o->len, room, fmt, ap);
        va_end(ap);
        if (n < 0) /* only on an invalid format: nothing sensible to append */
            return;
        if ((size_t)n < room) {
            o->len += (size_t)n;
            return;
        }
        o->cap = o->cap * 2 + (size_t)n + 1;
        o->buf = oms_xrealloc(o->buf, o->cap);
    }
}

/* Shortest decimal that reads back as the same double, so 0.1 prints as "0.1" and
 * large counters do not lose precision; Prometheus spellings for the specials. */
static void fmt_double(double v, char out[32])
{
    if (isnan(v)) {
        strcpy(out, "NaN");
        return;
    }
    if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

/* HELP text escapes backslash and newline (format 0.0.4). */
static void out_help(out_buf *o, const char *name, const char *help)
{
    out_printf(o, "# HELP %s ", name);
    for (const char *p = help; *p; p++) {
        if (*p == '\\')
            out_printf(o, "\\\\");
        else if (*p == '\n')
            out_printf(o, "\\n");
        else
            out_printf(o, "%c", *p);
    }
    out_printf(o, "\n");
}

/* name{labels} or name{labels,extra} or name when both are empty. */
static void out_series_name(out_buf *o, const char *name, const char *suffix, const char *labels,
                            const char *extra)
{
    int has_l = labels && *labels, has_e = extra && *extra;
    out_printf(o, "%s%s", name, suffix);
    if (has_l || has_e)
        out_printf(o, "{%s%s%s}", has_l ? labels : "", has_l && has_e ? "," : "",
                   has_e ? extra : "");
}

static void render_family(out_buf *o, const family *f)
{
    char num[32];
    out_help(o, f->name, f->help);
    out_printf(o, "# TYPE %s %s\n", f->name, kind_names[f->kind]);
    for (const series *s = f->first; s; s = s->next_in_family) {
        if (f->kind != KIND_HISTOGRAM) {
            fmt_double(s->fn ? s->fn(s->ud) : s->value, num);
            out_series_name(o, f->name, "", s->labels, NULL);
            out_printf(o, " %s\n", num);
            continue;
        }
        uint64_t cum = 0;
        for (size_t i = 0; i < NBUCKETS; i++) {
            char le[48];
            cum += s->buckets[i];
            fmt_double(bucket_bounds[i], num);
            snprintf(le, sizeof(le), "le=\"%s\"", num);
            out_series_name(o, f->name, "_bucket", s->labels, le);
            out_printf(o, " %llu\n", (unsigned long long)cum);
        }
        out_series_name(o, f->name, "_bucket", s->labels, "le=\"+Inf\"");
        out_printf(o, " %llu\n", (unsigned long long)s->count);
        fmt_double(s->sum, num);
        out_series_name(o, f->name, "_sum", s->labels, NULL);
        out_printf(o, " %s\n", num);
        out_series_name(o, f->name, "_count", s->labels, NULL);
        out_printf(o, " %llu\n", (unsigned long long)s->count);
    }
}

/* Resident set size from /proc/self/statm (second field, in pages); -1 when unreadable. */
static double resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "re");
    if (!f)
        return -1;
    unsigned long long size = 0, resident = 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    if (n != 2 || page <= 0)
        return -1;
    return (double)resident * (double)page;
}

/* Entries of /proc/self/fd, not counting the directory stream's own descriptor. */
static double open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int self = dirfd(d);
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (atoi(e->d_name) == self)
            continue;
        n++;
    }
    closedir(d);
    return (double)n;
}

char *oms_metrics_render(size_t *len)
{
    out_buf o = {.buf = oms_xmalloc(4096), .len = 0, .cap = 4096};
    o.buf[0] = '\0';
    oms_mutex_lock(&reg_lock);
    for (const family *f = fam_first; f; f = f->next)
        render_family(&o, f);
    oms_mutex_unlock(&reg_lock);

    /* Process metrics are read fresh on every scrape rather than stored as series, so a
     * caller cannot collide with them by name and they never go stale. */
    char num[32];
    double rss = resident_bytes(), fds = open_fds();
    if (rss >= 0) {
        fmt_double(rss, num);
        out_printf(&o,
                   "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                   "# TYPE process_resident_memory_bytes gauge\n"
                   "process_resident_memory_bytes %s\n",
                   num);
    }
    if (fds >= 0) {
        fmt_double(fds, num);
        out_printf(&o,
                   "# HELP process_open_fds Number of open file descriptors.\n"
                   "# TYPE process_open_fds gauge\n"
                   "process_open_fds %s\n",
                   num);
    }
    if (len)
        *len = o.len;
    return o.buf;
}
