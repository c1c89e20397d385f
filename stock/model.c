#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oms/util.h"

void stock_items_init(stock_items *l)
{
    l->v = NULL;
    l->n = 0;
    l->cap = 0;
}

void stock_items_free(stock_items *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].name);
        free(l->v[i].price_id);
    }
    free(l->v);
    stock_items_init(l);
}

stock_item *stock_items_push(stock_items *l)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        l->v = oms_xrealloc(l->v, cap * sizeof(*l->v));
        l->cap = cap;
    }
    stock_item *it = &l->v[l->n++];
    memset(it, 0, sizeof(*it));
    return it;
}

void stock_item_set_info(stock_item *it, const char *name, const char *price_id,
                         const char *currency)
{
    free(it->name);
    free(it->price_id);
    it->name = oms_strdup(name);
    it->price_id = oms_strdup(price_id);
    snprintf(it->currency, sizeof(it->currency), "%s", currency ? currency : "");
}

void stock_item_set_id(stock_item *it, const char *id)
{
    snprintf(it->product_id, sizeof(it->product_id), "%s", id ? id : "");
}

static const char *const res_state_names[] = {
#define STOCK_RES_STATE_NAME(name, str) str,
    STOCK_RES_STATE_MAP(STOCK_RES_STATE_NAME)
#undef STOCK_RES_STATE_NAME
};

const char *stock_res_state_str(stock_res_state s)
{
    if ((int)s < 0 || s >= STOCK_RES__COUNT)
        return "unknown";
    return res_state_names[s];
}

int stock_res_state_parse(const char *s)
{
    for (int i = 0; s && i < STOCK_RES__COUNT; i++)
        if (strcmp(s, res_state_names[i]) == 0)
            return i;
    return -1;
}

void stock_reservation_init(stock_reservation *r)
{
    memset(r, 0, sizeof(*r));
    stock_items_init(&r->items);
}

void stock_reservation_free(stock_reservation *r)
{
    stock_items_free(&r->items);
    stock_reservation_init(r);
}

void stock_audit_list_init(stock_audit_list *l)
{
    l->v = NULL;
    l->n = 0;
    l->cap = 0;
}

void stock_audit_list_free(stock_audit_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        stock_audit_entry *e = &l->v[i];
        free(e->staff);
        free(e->action);
        free(e->subject);
        free(e->before);
        free(e->after);
        free(e->reason);
    }
    free(l->v);
    stock_audit_list_init(l);
}

stock_audit_entry *stock_audit_list_push(stock_audit_list *l)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        l->v = oms_xrealloc(l->v, cap * sizeof(*l->v));
        l->cap = cap;
    }
    stock_audit_entry *e = &l->v[l->n++];
    memset(e, 0, sizeof(*e));
    return e;
}
