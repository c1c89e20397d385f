#include "oms/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "oms/trace.h"
#include "oms/util.h"

static char log_service[64] = "oms";
static oms_log_level log_min = OMS_LOG_INFO;
static int log_console;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void oms_log_init(const char *service, oms_log_level level, int console)
{
    snprintf(log_service, sizeof(log_service), "%s", service ? service : "oms");
    log_min = level;
    log_console = console;
}

int oms_log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (s && strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

int oms_log_enabled(oms_log_level level)
{
    return level >= log_min;
}

/* A bounded line buffer: a record longer than it is cut, never overflowed. */
typedef struct {
    char buf[4096];
    size_t len;
} line_buf;

static void put(line_buf *b, const char *s, size_t n)
{
    size_t room = sizeof(b->buf) - 2 - b->len; /* keep room for "}\n" */
    if (n > room)
        n = room;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

static void puts_raw(line_buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* JSON string escaping; bytes >= 0x80 pass through (UTF-8), control chars as \u00XX. */
static void put_json_str(line_buf *b, const char *s)
{
    if (!s) {
        puts_raw(b, "null");
        return;
    }
    put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(b, esc, 2);
        } else if (c == '\n') {
            put(b, "\\n", 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            put(b, esc, 6);
        } else {
            put(b, (const char *)&c, 1);
        }
    }
    put(b, "\"", 1);
}

static const char *basename_of(const char *file)
{
    const char *slash = strrchr(file, '/');
    if (!slash)
        return file;
    /* keep one directory ("orders/service.c"), as Zap's caller does */
    const char *p = slash;
    while (p > file && p[-1] != '/')
        p--;
    return p;
}

static void emit(oms_log_level level, const char *file, int line, const char *msg, va_list *fields)
{
    line_buf b;
    b.len = 0;
    char ts[32], caller[128], tid[33] = "", sid[17] = "";
    oms_format_rfc3339(oms_now_ms(), ts);
    snprintf(caller, sizeof(caller), "%s:%d", basename_of(file), line);
    const oms_trace_ctx *tc = oms_trace_current();
    if (tc) {
        oms_trace_id_hex(tc, tid);
        oms_span_id_hex(tc, sid);
    }
    if (log_console) {
        char head[256];
        int n = snprintf(head, sizeof(head), "%s %-5s %s %s ", ts, level_names[level], log_service,
                         caller);
        put(&b, head, n > 0 ? (size_t)n : 0);
        puts_raw(&b, msg);
        if (tc) {
            puts_raw(&b, " trace_id=");
            puts_raw(&b, tid);
        }
        if (fields) {
            const char *k;
            while ((k = va_arg(*fields, const char *)) != NULL) {
                const char *v = va_arg(*fields, const char *);
                puts_raw(&b, " ");
                puts_raw(&b, k);
                puts_raw(&b, "=");
                puts_raw(&b, v ? v : "null");
            }
        }
        b.buf[b.len++] = '\n';
    } else {
        puts_raw(&b, "{\"ts\":");
        put_json_str(&b, ts);
        puts_raw(&b, ",\"level\":");
        put_json_str(&b, level_names[level]);
        puts_raw(&b, ",\"service\":");
        put_json_str(&b, log_service);
        puts_raw(&b, ",\"caller\":");
        put_json_str(&b, caller);
        puts_raw(&b, ",\"msg\":");
        put_json_str(&b, msg);
        if (tc) {
            puts_raw(&b, ",\"trace_id\":");
            put_json_str(&b, tid);
            puts_raw(&b, ",\"span_id\":");
            put_json_str(&b, sid);
        }
        if (fields) {
            const char *k;
            while ((k = va_arg(*fields, const char *)) != NULL) {
                const char *v = va_arg(*fields, const char *);
                puts_raw(&b, ",");
                put_json_str(&b, k);
                puts_raw(&b, ":");
                put_json_str(&b, v);
            }
        }
        b.buf[b.len++] = '}';
        b.buf[b.len++] = '\n';
    }
    /* One write per line so lines from threads never interleave. */
    ssize_t r = write(STDERR_FILENO, b.buf, b.len);
    (void)r; /* nowhere to report a failed log write */
}

void oms_log_write(oms_log_level level, const char *file, int line, const char *msg, ...)
{
    va_list ap;
    va_start(ap, msg);
    emit(level, file, line, msg, &ap);
    va_end(ap);
}

void oms_log_writef(oms_log_level level, const char *file, int line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    emit(level, file, line, msg, NULL);
}
