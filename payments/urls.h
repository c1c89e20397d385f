/* The URLs payments hands to customers: the gateway's status pages and the local
 * checkout page. One place, so the processors and the HTTP routes agree. */
#ifndef PAYMENTS_URLS_H
#define PAYMENTS_URLS_H

#include <stddef.h>

/* "<base>/<page>?customerID=<c>&orderID=<o>" with both values percent-encoded and a
 * trailing '/' of base dropped. page: "success.html" or "cancel.html". Returns a
 * heap string (caller frees). */
char *payments_status_url(const char *base, const char *page, const char *customer_id,
                          const char *order_id);
/* "<base><path>" without a doubled '/'. Heap (caller frees). */
char *payments_join_url(const char *base, const char *path);
/* Percent-encodes everything but RFC 3986 unreserved characters into out (size >=
 * 3*strlen(in)+1). Returns out. */
char *payments_url_encode(const char *in, char *out, size_t outlen);

#endif
