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

/* Every record is one line that a log pipeline can parse whatever the caller passed:
 *  - a value (message, field key or value) longer than LOG_VALUE_MAX bytes is cut and
 *    ends in LOG_CUT, so one huge value (a request body, a peer's error page) cannot
 *    crowd out the rest of the record;
 *  - the line buffer keeps LOG_TAIL bytes back for what closes the line, and a field
 *    that no longer fits is left out whole (and counted in "fields_dropped"), so a
 *    JSON line is never cut in the middle of a token;
 *  - JSON strings are escaped completely: control bytes as \uXXXX, and bytes that are
 *    not valid UTF-8 as U+FFFD (what Zap writes), so parsers never see invalid text;
 *  - console lines escape control bytes (\n, \r, \t, ESC, DEL, C1 controls, which some
 *    terminals obey as escapes too) and invalid UTF-8 as \xNN, and quote values with
 *    blanks, '"' or '=', so a hostile value can neither forge a line nor a field nor
 *    drive the terminal;
 *  - the password of any URL in a value is replaced by "***" (oms_url_redact), so a
 *    DATABASE_URL or endpoint logged by whichever caller never shows its secret. */
#define LOG_LINE_MAX 8192
#define LOG_VALUE_MAX 1024
#define LOG_CUT "\xe2\x80\xa6(truncated)" /* U+2026 HORIZONTAL ELLIPSIS */
#define LOG_CUT_LEN (sizeof(LOG_CUT) - 1)
/* Held back for the end of a line: ,"fields_dropped":<n>}\n at most. */
#define LOG_TAIL 48
/* Smallest form of a value: a quoted LOG_CUT. */
#define LOG_VALUE_MIN (2 + LOG_CUT_LEN)

typedef struct {
    char buf[LOG_LINE_MAX];
    size_t len;     /* never above LOG_LINE_MAX - LOG_TAIL until the line is closed */
    size_t dropped; /* fields left out for lack of room */
    int json;       /* 0: console */
} line_buf;

/* Bytes left for the record's content (the tail is not part of it). */
static size_t room(const line_buf *b)
{
    return LOG_LINE_MAX - LOG_TAIL - b->len;
}

/* Appends n bytes the caller made room for; the clamp only guards against a caller
 * that miscounted, it never cuts in normal operation. */
static void put(line_buf *b, const char *s, size_t n)
{
    size_t left = LOG_LINE_MAX - b->len;
    if (n > left)
        n = left;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

static void puts_raw(line_buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* Length (2..4) of the well-formed UTF-8 sequence at s, its code point in *cp; 0 when
 * s does not start one (stray continuation byte, overlong form, surrogate, beyond
 * U+10FFFF, or cut short: the NUL terminator is never a continuation byte, so this
 * never reads past the end of the string). */
static size_t utf8_seq(const unsigned char *s, unsigned *cp)
{
    unsigned c = s[0], min;
    size_t n;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        c &= 0x1f;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        c &= 0x0f;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        c &= 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return n;
}

/* 1 when a console value needs quotes to stay one field. */
static int console_needs_quotes(const char *s)
{
    return *s == '\0' || strpbrk(s, " \"=") != NULL;
}

/* The escaped form of the character at s into piece (>= 16 bytes); returns its length
 * and sets *used to the input bytes it stands for. */
static size_t escape_one(const unsigned char *s, int json, int quoted, char *piece, size_t *used)
{
    static const char hex[] = "0123456789abcdef";
    unsigned c = s[0], cp = 0;
    *used = 1;
    if (c == '\\' || (c == '"' && (json || quoted))) {
        piece[0] = '\\';
        piece[1] = (char)c;
        return 2;
    }
    if (c == '\n' || c == '\r' || c == '\t') {
        piece[0] = '\\';
        piece[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
        return 2;
    }
    if (c < 0x20 || c == 0x7f) {
        if (json)
            return (size_t)snprintf(piece, 16, "\\u%04x", c);
        return (size_t)snprintf(piece, 16, "\\x%02x", c);
    }
    if (c < 0x80) {
        piece[0] = (char)c;
        return 1;
    }
    size_t n = utf8_seq(s, &cp);
    if (n == 0) {
        if (json) {
            memcpy(piece, "\\ufffd", 6);
            return 6;
        }
        return (size_t)snprintf(piece, 16, "\\x%02x", c);
    }
    *used = n;
    if (!json && cp <= 0x9f) { /* C1 control (U+0080..U+009F): "\xc2\x9b" is a CSI */
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            piece[o++] = '\\';
            piece[o++] = 'x';
            piece[o++] = hex[s[i] >> 4];
            piece[o++] = hex[s[i] & 15];
        }
        return o;
    }
    memcpy(piece, s, n);
    return n;
}

/* Writes s escaped for the line's format: a JSON string (null for NULL), or on the
 * console a word (quoted when it has blanks, '"' or '=') or, with text set, free text
 * that is never quoted (the message). At most LOG_VALUE_MAX input bytes are written,
 * and never so much that fewer than `after` bytes of room would be left once the value
 * is closed; a cut value ends in LOG_CUT. The caller makes sure
 * room(b) >= LOG_VALUE_MIN + after. */
static void put_value(line_buf *b, const char *s, int text, size_t after)
{
    char red[LOG_VALUE_MAX + 8];
    if (!s) {
        puts_raw(b, "null");
        return;
    }
    /* Cheap test first: most values hold no URL. The redacted copy is cut just past
     * LOG_VALUE_MAX, which the loop below then reports as cut. */
    if (strstr(s, "://") && strchr(s, '@')) {
        oms_url_redact(s, red, sizeof(red));
        s = red;
    }
    int quoted = b->json || (!text && console_needs_quotes(s));
    size_t close = quoted ? 1 : 0;
    if (quoted)
        put(b, "\"", 1);
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (u[i]) {
        char piece[16];
        size_t used = 0;
        size_t n = escape_one(u + i, b->json, quoted, piece, &used);
        if (i + used > LOG_VALUE_MAX || n + LOG_CUT_LEN + close + after > room(b)) {
            put(b, LOG_CUT, LOG_CUT_LEN);
            break;
        }
        put(b, piece, n);
        i += used;
    }
    if (quoted)
        put(b, "\"", 1);
}

/* Appends one key/value pair, or counts it as dropped when the line has no room for
 * even its shortest form. */
static void put_field(line_buf *b, const char *k, const char *v)
{
    if (room(b) < 1 + LOG_VALUE_MIN + 1 + LOG_VALUE_MIN) {
        b->dropped++;
        return;
    }
    put(b, b->json ? "," : " ", 1);
    put_value(b, k, 0, 1 + LOG_VALUE_MIN);
    put(b, b->json ? ":" : "=", 1);
    put_value(b, v, 0, 0);
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
    b.dropped = 0;
    b.json = !log_console;
    char ts[32], caller[128], tid[33] = "", sid[17] = "";
    oms_format_rfc3339(oms_now_ms(), ts);
    snprintf(caller, sizeof(caller), "%s:%d", basename_of(file), line);
    const oms_trace_ctx *tc = oms_trace_current();
    if (tc) {
        oms_trace_id_hex(tc, tid);
        oms_span_id_hex(tc, sid);
    }
    if (!b.json) {
        char head[256];
        int n = snprintf(head, sizeof(head), "%s %-5s %s %s ", ts, level_names[level], log_service,
                         caller);
        if (n < 0)
            n = 0;
        if ((size_t)n >= sizeof(head))
            n = (int)sizeof(head) - 1;
        put(&b, head, (size_t)n);
        put_value(&b, msg ? msg : "", 1, 0);
        if (tc)
            put_field(&b, "trace_id", tid);
    } else {
        puts_raw(&b, "{\"ts\":");
        put_value(&b, ts, 0, 0);
        put_field(&b, "level", level_names[level]);
        put_field(&b, "service", log_service);
        put_field(&b, "caller", caller);
        put_field(&b, "msg", msg);
        if (tc) {
            put_field(&b, "trace_id", tid);
            put_field(&b, "span_id", sid);
        }
    }
    if (fields) {
        const char *k;
        while ((k = va_arg(*fields, const char *)) != NULL) {
            const char *v = va_arg(*fields, const char *);
            put_field(&b, k, v);
        }
    }
    /* The tail: LOG_TAIL bytes were kept for exactly this. */
    if (b.dropped) {
        char note[40];
        int n = b.json ? snprintf(note, sizeof(note), ",\"fields_dropped\":%zu", b.dropped)
                       : snprintf(note, sizeof(note), " fields_dropped=%zu", b.dropped);
        if (n > 0 && (size_t)n < sizeof(note))
            put(&b, note, (size_t)n);
    }
    if (b.json)
        put(&b, "}", 1);
    put(&b, "\n", 1);
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
