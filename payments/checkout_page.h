/* The local checkout's HTML pages: the session with its order lines, total, Pay and
 * Cancel; a session that is no longer open; an unknown session. Every page is
 * self-contained (inline CSS in the gateway's look), readable on a phone, and
 * escapes every value it prints. */
#ifndef PAYMENTS_CHECKOUT_PAGE_H
#define PAYMENTS_CHECKOUT_PAGE_H

#include <stddef.h>

#include "oms/order.h"
#include "store.h"

/* Each returns a heap string (caller frees) with its length in *len, or NULL when
 * out of memory. */
char *payments_page_checkout(const payments_row *r, const oms_order *o, size_t *len);
/* status_url: the gateway's order status page. */
char *payments_page_closed(const payments_row *r, const char *status_url, size_t *len);
char *payments_page_message(const char *title, const char *text, size_t *len);

#endif
