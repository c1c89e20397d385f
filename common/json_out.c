/* JSON text writer (oms/json_out.h). */
#include "oms/json_out.h"

#include <jansson.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/util.h"

void oms_jbuf_init(oms_jbuf *b, size_t cap)
{
    b->cap = cap ? cap : 256;
    b->p = oms_xmalloc(b->cap);
    b->p[0] = '\0';
    b->len = 0;
}

void oms_jbuf_free(oms_jbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* Room for n more bytes and the terminating NUL. */
static void reserve(oms_jbuf *b, size_t n)
{
    if (b->len + n + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    b->p = oms_xrealloc(b->p, cap);
    b->cap = cap;
}

void oms_jbuf_raw(oms_jbuf *b, const char *s, size_t n)
{
    reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void oms_jbuf_int(oms_jbuf *b, long long v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%lld", v);
    oms_jbuf_raw(b, tmp, (size_t)n);
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80 ? 4 : 0;
    }
    return 0;
}

void oms_jbuf_str(oms_jbuf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    /* Worst case per input byte is 6 output bytes ("\u00XX"); reserving for that up
     * front keeps the loop free of checks. */
    size_t n = strlen((const char *)p);
    reserve(b, n * 6 + 2);
    char *o = b->p + b->len;
    *o++ = '"';
    while (*p) {
        unsigned char c = *p;
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            *o++ = (char)c;
            p++;
            continue;
        }
        if (c >= 0x80) {
            size_t k = utf8_len(p); /* reads at most up to the NUL: it is not a continuation */
            if (k) {
                memcpy(o, p, k);
                o += k;
                p += k;
            } else { /* U+FFFD: 3 bytes, fewer than the 6 reserved for this byte */
                memcpy(o, "\xEF\xBF\xBD", 3);
                o += 3;
                p++;
            }
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        default:
            memcpy(o, "u00", 3);
            o += 3;
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
        p++;
    }
    *o++ = '"';
    b->len = (size_t)(o - b->p);
    b->p[b->len] = '\0';
}

char *oms_jbuf_take(oms_jbuf *b, size_t *len)
{
    char *s = b->p;
    if (len)
        *len = b->len;
    b->p = NULL;
    b->len = b->cap = 0;
    return s;
}

json_t *oms_json_string_lossy(const char *s)
{
    json_t *j = json_string(s ? s : "");
    if (j)
        return j;
    char *copy = oms_strdup(s);
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}
