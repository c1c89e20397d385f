#include "urls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/util.h"

char *payments_url_encode(const char *in, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    if (outlen == 0)
        return out;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        int plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~';
        size_t need = plain ? 1 : 3;
        if (o + need >= outlen)
            break; /* truncated: callers size out for the worst case */
        if (plain) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
    return out;
}

/* base without its trailing slashes: length to keep. */
static size_t base_len(const char *base)
{
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    return n;
}

char *payments_join_url(const char *base, const char *path)
{
    size_t bl = base_len(base);
    const char *sep = path[0] == '/' ? "" : "/";
    size_t n = bl + strlen(sep) + strlen(path) + 1;
    char *s = oms_xmalloc(n);
    snprintf(s, n, "%.*s%s%s", (int)bl, base, sep, path);
    return s;
}

char *payments_status_url(const char *base, const char *page, const char *customer_id,
                          const char *order_id)
{
    size_t cl = strlen(customer_id) * 3 + 1, ol = strlen(order_id) * 3 + 1;
    char *c = oms_xmalloc(cl), *o = oms_xmalloc(ol);
    payments_url_encode(customer_id, c, cl);
    payments_url_encode(order_id, o, ol);
    size_t bl = base_len(base);
    size_t n = bl + strlen(page) + strlen(c) + strlen(o) + 32;
    char *s = oms_xmalloc(n);
    snprintf(s, n, "%.*s/%s?customerID=%s&orderID=%s", (int)bl, base, page, c, o);
    free(c);
    free(o);
    return s;
}
