/* Growable byte buffer with a hard cap (oms/dynbuf.h). */
#include "oms/dynbuf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oms/status.h"
#include "oms/util.h"

#define DYNBUF_MIN_ALLOC 256

void oms_dynbuf_init(oms_dynbuf *b, size_t toobig)
{
    memset(b, 0, sizeof(*b));
    b->toobig = toobig;
}

int oms_dynbuf_add(oms_dynbuf *b, const void *data, size_t n)
{
    if (n == 0)
        return OMS_OK;
    if (n > b->toobig - b->len) {
        b->refused = 1;
        return OMS_TOOBIG;
    }
    size_t need = b->len + n + 1; /* <= toobig + 1: cannot wrap */
    if (need > b->cap) {
        /* Doubling keeps a body that arrives in many chunks linear; the cap (plus the
         * NUL) bounds the last step. */
        size_t cap = b->cap ? b->cap : DYNBUF_MIN_ALLOC;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        if (cap > b->toobig + 1 && b->toobig < SIZE_MAX)
            cap = b->toobig + 1;
        b->p = oms_xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return OMS_OK;
}

size_t oms_dynbuf_curl_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    oms_dynbuf *b = ud;
    if (size && nmemb > SIZE_MAX / size) {
        b->refused = 1;
        return 0;
    }
    size_t n = size * nmemb;
    return oms_dynbuf_add(b, ptr, n) == OMS_OK ? n : 0;
}

char *oms_dynbuf_take(oms_dynbuf *b, size_t *len)
{
    char *p = b->p;
    if (len)
        *len = b->len;
    oms_dynbuf_init(b, b->toobig);
    return p;
}

void oms_dynbuf_free(oms_dynbuf *b)
{
    free(b->p);
    oms_dynbuf_init(b, b->toobig);
}
