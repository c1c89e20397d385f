/* A growable byte buffer with a hard cap, after curl's dynbuf (lib/dynbuf.h): an add
 * that would take it past toobig is refused and leaves it as it was, so a peer that
 * sends more than we agreed to read cannot make us allocate without bound. Every body
 * we collect from libcurl goes into one (oms_dynbuf_curl_write).
 *
 *     oms_dynbuf b;
 *     oms_dynbuf_init(&b, 1 << 20);
 *     curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, oms_dynbuf_curl_write);
 *     curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
 *     ... curl_easy_perform: CURLE_WRITE_ERROR with b.refused set = over the cap ...
 *     json_loadb(b.p ? b.p : "", b.len, 0, NULL);
 *     oms_dynbuf_free(&b);
 *
 * Caller-allocated; not thread-safe (one transfer fills one buffer). */
#ifndef OMS_DYNBUF_H
#define OMS_DYNBUF_H

#include <stddef.h>

typedef struct oms_dynbuf {
    char *p;       /* NULL until the first byte, then NUL-terminated (so text can be read
                    * as a C string); owned by the buffer until oms_dynbuf_take/free */
    size_t len;    /* bytes held, without the NUL; never more than toobig */
    size_t cap;    /* bytes allocated */
    size_t toobig; /* the cap */
    int refused;   /* 1 once an add was refused for the cap (says why a transfer failed) */
} oms_dynbuf;

/* An empty buffer that will hold at most toobig bytes. Allocates nothing. */
void oms_dynbuf_init(oms_dynbuf *b, size_t toobig);
/* Appends n bytes of data (borrowed). OMS_OK, or OMS_TOOBIG when len + n would pass
 * toobig: nothing is appended and refused is set. Aborts when out of memory, like
 * oms_xrealloc. */
int oms_dynbuf_add(oms_dynbuf *b, const void *data, size_t n);
/* A CURLOPT_WRITEFUNCTION for CURLOPT_WRITEDATA = an oms_dynbuf *: appends the chunk,
 * or returns 0 when it would pass the cap, which makes libcurl stop the transfer with
 * CURLE_WRITE_ERROR (refused tells that apart from other write errors). */
size_t oms_dynbuf_curl_write(char *ptr, size_t size, size_t nmemb, void *ud);
/* Hands the bytes over (caller frees; NULL when none were added) and leaves b empty,
 * with the same cap and refused cleared; *len (may be NULL) gets their number. */
char *oms_dynbuf_take(oms_dynbuf *b, size_t *len);
/* Frees the bytes and leaves b empty and usable, with the same cap. */
void oms_dynbuf_free(oms_dynbuf *b);

#endif
