/* Writing JSON text straight into a growable buffer: for the hot paths (an order as an
 * HTTP body or an event), where building a jansson tree only to print it cost a third
 * of the gateway's and a tenth of orders' work (bench/profile.py). Output is compact
 * and always valid JSON: strings are escaped, invalid UTF-8 becomes U+FFFD. */
#ifndef OMS_JSON_OUT_H
#define OMS_JSON_OUT_H

#include <stddef.h>

typedef struct oms_jbuf {
    char *p; /* NUL-terminated at all times; owned until oms_jbuf_take */
    size_t len, cap;
} oms_jbuf;

void oms_jbuf_init(oms_jbuf *b, size_t cap);
void oms_jbuf_free(oms_jbuf *b);
/* Appends bytes as they are (punctuation, keys known to need no escaping, or JSON
 * produced by this module). */
void oms_jbuf_raw(oms_jbuf *b, const char *s, size_t n);
/* s must be a string literal (its size is taken). */
#define oms_jbuf_lit(b, s) oms_jbuf_raw((b), "" s, sizeof(s) - 1)
/* Appends s as a JSON string (with quotes); NULL is written as "". */
void oms_jbuf_str(oms_jbuf *b, const char *s);
void oms_jbuf_int(oms_jbuf *b, long long v);
/* Hands the text over (caller frees) and leaves b empty; *len may be NULL. */
char *oms_jbuf_take(oms_jbuf *b, size_t *len);

/* For code that builds jansson trees: a JSON string even for bytes that are not UTF-8
 * (a URL path, a message quoting client input), which jansson refuses; such bytes
 * become '?'. NULL counts as "". New reference. */
struct json_t *oms_json_string_lossy(const char *s);

#endif
