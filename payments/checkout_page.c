#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* open_memstream */
#endif
#include "checkout_page.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "oms/util.h"

/* The rules of gateway/public/style.css that this page uses, inlined so it needs
 * nothing else (it is served by payments, on another origin than the gateway). */
static const char page_css[] =
    ":root{--fg:#1d1d1f;--muted:#55555a;--accent:#0b5cad;--accent-dark:#084887;--ok:#17692f;"
    "--bad:#b42318;--bg:#fafaf7;--line:#d9d9d4;--focus:#f5a623}"
    "*{box-sizing:border-box}"
    "body{font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;color:var(--fg);"
    "background:var(--bg);margin:0}"
    ".topbar{background:var(--accent-dark);color:#fff}"
    ".topbar div{max-width:44rem;margin:0 auto;padding:.6rem 1rem;display:flex;flex-wrap:wrap;"
    "gap:.25rem 1rem;justify-content:space-between}"
    ".topbar strong{font-weight:700}"
    "main{max-width:44rem;margin:0 auto;padding:1rem 1rem 2rem}"
    "h1{font-size:1.6rem;margin:.5rem 0 1rem;line-height:1.2}"
    "h2{font-size:1.2rem;margin:0 0 .75rem}"
    ".card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:1rem;"
    "margin:0 0 1rem}"
    "button,.button{font:inherit;font-weight:600;padding:.6rem 1.1rem;border-radius:8px;"
    "border:2px solid var(--accent);background:var(--accent);color:#fff;cursor:pointer;"
    "text-decoration:none;display:inline-block;min-height:44px;line-height:1.4}"
    "button:hover,.button:hover{background:var(--accent-dark);border-color:var(--accent-dark)}"
    "button.secondary{background:#fff;color:var(--accent)}"
    "button.secondary:hover{background:#eef4fb}"
    ":focus-visible{outline:3px solid var(--focus);outline-offset:2px}"
    "table{width:100%;border-collapse:collapse}"
    "caption{text-align:left;color:var(--muted);padding-bottom:.25rem}"
    "td,th{padding:.45rem .4rem;border-bottom:1px solid #ecece8;text-align:left;vertical-align:top}"
    "td.num,th.num{text-align:right;white-space:nowrap}"
    ".total{font-size:1.25rem;font-weight:700;margin:.75rem 0 0}"
    ".muted{color:var(--muted)}"
    ".orderid{font-family:ui-monospace,monospace;font-size:.85rem;color:var(--muted);"
    "word-break:break-all}"
    ".actions{display:flex;gap:.75rem;flex-wrap:wrap;margin:0 0 1rem}"
    ".actions form{margin:0}"
    "@media (max-width:30rem){main{padding:.75rem .75rem 2rem}h1{font-size:1.4rem}"
    ".card{padding:.8rem}}";

/* Writes s with the five HTML-special characters escaped. */
static void put_esc(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* As the shop's pages write it (Intl.NumberFormat 'en' in common.js): "$14.20" for the
 * currencies with a symbol, "14.20 CHF" for the others. */
static void put_money(FILE *f, long long cents, const char *currency)
{
    static const struct {
        const char *code, *symbol;
    } symbols[] = {{"usd", "$"}, {"eur", "\u20ac"}, {"gbp", "\u00a3"}};
    const char *sign = cents < 0 ? "-" : "";
    unsigned long long v = cents < 0 ? 0ULL - (unsigned long long)cents : (unsigned long long)cents;
    for (size_t i = 0; currency && i < OMS_NELEM(symbols); i++) {
        if (strcasecmp(currency, symbols[i].code) == 0) {
            fprintf(f, "%s%s%llu.%02llu", sign, symbols[i].symbol, v / 100, v % 100);
            return;
        }
    }
    fprintf(f, "%s%llu.%02llu ", sign, v / 100, v % 100);
    for (const char *c = currency; c && *c; c++)
        fputc(toupper((unsigned char)*c), f);
}

static void head(FILE *f, const char *title)
{
    fputs("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
          "<link rel=\"icon\" href=\"data:,\"><title>",
          f);
    put_esc(f, title);
    fprintf(f,
            "</title><style>%s</style></head><body>\n<header class=\"topbar\"><div>"
            "<strong>OMS food shop</strong><span>Checkout</span></div></header>\n<main>\n<h1>",
            page_css);
    put_esc(f, title);
    fputs("</h1>\n", f);
}

/* Closes the stream and hands over its buffer. Write errors on a stream are sticky,
 * so the individual fputs/fprintf calls are checked once, here, through ferror. */
static char *finish(FILE *f, char **buf)
{
    fputs("</main></body></html>\n", f);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        free(*buf);
        return NULL;
    }
    return *buf;
}

char *payments_page_checkout(const payments_row *r, const oms_order *o, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (!f)
        return NULL;
    head(f, "Checkout");
    fputs("<section class=\"card\" aria-labelledby=\"order-h\"><h2 id=\"order-h\">Your order</h2>\n"
          "<p class=\"orderid\">Order id: ",
          f);
    put_esc(f, r->order_id);
    fputs("</p>\n<table><caption>Items in this order</caption>"
          "<thead><tr><th scope=\"col\">Item</th><th scope=\"col\" class=\"num\">Quantity</th>"
          "<th scope=\"col\" class=\"num\">Price</th></tr></thead><tbody>\n",
          f);
    for (size_t i = 0; i < o->nitems; i++) {
        const oms_order_item *it = &o->items[i];
        fputs("<tr><td>", f);
        put_esc(f, it->product_name && it->product_name[0] ? it->product_name : it->product_id);
        fprintf(f, "</td><td class=\"num\">%d</td><td class=\"num\">", it->quantity);
        put_money(f, it->unit_price * it->quantity, r->currency);
        fputs("</td></tr>\n", f);
    }
    fputs("</tbody></table>\n<p class=\"total\">Total: <span id=\"total\">", f);
    put_money(f, r->amount, r->currency);
    fputs("</span></p></section>\n<div class=\"actions\">"
          "<form method=\"post\" action=\"/checkout/",
          f);
    put_esc(f, r->session_id);
    fputs("/pay\"><button type=\"submit\">Pay</button></form>"
          "<form method=\"post\" action=\"/checkout/",
          f);
    put_esc(f, r->session_id);
    fputs("/cancel\"><button type=\"submit\" class=\"secondary\">Cancel</button></form></div>\n"
          "<p class=\"muted\">Local test checkout: no card is charged. After paying or cancelling "
          "you return to your order's status page.</p>\n",
          f);
    return finish(f, &buf);
}

char *payments_page_closed(const payments_row *r, const char *status_url, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (!f)
        return NULL;
    const char *title = "Checkout closed", *what = "is closed";
    switch (r->status) {
    case PAYMENTS_SESSION_PAID: title = "Already paid", what = "is already paid"; break;
    case PAYMENTS_SESSION_EXPIRED: title = "Checkout expired", what = "expired unpaid"; break;
    case PAYMENTS_SESSION_REFUNDED: title = "Payment refunded", what = "was refunded"; break;
    default: break;
    }
    head(f, title);
    fputs("<section class=\"card\"><p>This checkout for order ", f);
    put_esc(f, r->order_id);
    fprintf(f, " %s (%s); nothing was charged now.</p>", what,
            payments_session_status_str(r->status));
    fputs("<p><a class=\"button\" href=\"", f);
    put_esc(f, status_url);
    fputs("\">See the order's status</a></p></section>\n", f);
    return finish(f, &buf);
}

char *payments_page_message(const char *title, const char *text, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (!f)
        return NULL;
    head(f, title);
    fputs("<section class=\"card\"><p>", f);
    put_esc(f, text);
    fputs("</p></section>\n", f);
    return finish(f, &buf);
}
