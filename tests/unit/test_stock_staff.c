/* The stock back office (PutProduct, AdjustStock, ListAudit, products off sale) against a
 * real SQLite database in a private temporary directory, through service.c and store.c.
 * Each change must leave exactly one audit row; each refusal none and no change. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* Relative paths: every service folder is on the unit tests' include path. */
#include "../../stock/service.h"
#include "../../stock/store.h"
#include "oms/log.h"
#include "oms/util.h"

#define T0 1700000000000LL
#define TTL_MS 60000

static const char catalog_json[] =
    "{\"currency\":\"usd\",\"products\":["
    "{\"productID\":\"1\",\"name\":\"Cheese\",\"priceID\":\"price_cheese\",\"unitPrice\":450,"
    "\"quantity\":12},"
    "{\"productID\":\"2\",\"name\":\"Chocolate\",\"priceID\":\"price_chocolate\","
    "\"unitPrice\":250,\"quantity\":7}]}";

typedef struct fixture {
    char dir[64];
    char catalog[128];
    char dbpath[128];
    struct oms_db *db;
    stock_service *svc;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/test_stock_staff.XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->catalog, sizeof(fx->catalog), "%s/catalog.json", fx->dir);
    snprintf(fx->dbpath, sizeof(fx->dbpath), "%s/stock.db", fx->dir);
    FILE *f = fopen(fx->catalog, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(catalog_json, 1, strlen(catalog_json), f), strlen(catalog_json));
    assert_int_equal(fclose(f), 0);

    oms_error err;
    oms_error_clear(&err);
    size_t loaded = 0;
    assert_int_equal(stock_store_open(&fx->db, fx->dbpath, &err), OMS_OK);
    assert_int_equal(stock_load_catalog(fx->db, fx->catalog, &loaded, &err), OMS_OK);
    assert_int_equal(stock_service_new(&fx->svc, fx->db, TTL_MS, &err), OMS_OK);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    stock_service_free(fx->svc);
    stock_store_close(fx->db);
    static const char *const files[] = {"stock.db", "stock.db-wal", "stock.db-shm", "catalog.json"};
    for (size_t i = 0; i < OMS_NELEM(files); i++) {
        char path[192];
        snprintf(path, sizeof(path), "%s/%s", fx->dir, files[i]);
        if (unlink(path) != 0 && errno != ENOENT)
            fail_msg("unlink %s: %s", path, strerror(errno));
    }
    assert_int_equal(rmdir(fx->dir), 0);
    free(fx);
    return 0;
}

/* ---- helpers -------------------------------------------------------------------------- */

/* The product as ListProducts shows it; fails when absent. Strings copied into *out
 * (caller frees with stock_items_free on a one-item list). */
static stock_item product(fixture *fx, const char *id)
{
    stock_items all;
    oms_error err;
    stock_items_init(&all);
    assert_int_equal(stock_list_products(fx->svc, &all, &err), OMS_OK);
    stock_item found;
    memset(&found, 0, sizeof(found));
    int seen = 0;
    for (size_t i = 0; i < all.n; i++) {
        if (strcmp(all.v[i].product_id, id) == 0) {
            found = all.v[i];
            memset(&all.v[i], 0, sizeof(all.v[i]));
            seen = 1;
        }
    }
    stock_items_free(&all);
    if (!seen)
        fail_msg("product %s not listed", id);
    return found;
}

static void item_free(stock_item *it)
{
    free(it->name);
    free(it->price_id);
}

static size_t audit_count(fixture *fx)
{
    stock_audit_list l;
    oms_error err;
    stock_audit_list_init(&l);
    assert_int_equal(stock_list_audit(fx->svc, 0, 200, &l, &err), OMS_OK);
    size_t n = l.n;
    stock_audit_list_free(&l);
    return n;
}

static int listed_by_list_items(fixture *fx, const char *id)
{
    stock_items all;
    oms_error err;
    stock_items_init(&all);
    assert_int_equal(stock_list_items(fx->svc, &all, &err), OMS_OK);
    int seen = 0;
    for (size_t i = 0; i < all.n; i++)
        seen |= strcmp(all.v[i].product_id, id) == 0;
    stock_items_free(&all);
    return seen;
}

static int put(fixture *fx, const char *staff, stock_product_change *c, int *created,
               oms_error *err)
{
    stock_items out;
    stock_items_init(&out);
    oms_error_clear(err);
    int rc = stock_put_product(fx->svc, staff, c, T0, &out, created, err);
    if (rc == OMS_OK)
        assert_int_equal(out.n, 1);
    else
        assert_int_equal(out.n, 0);
    stock_items_free(&out);
    return rc;
}

static int adjust(fixture *fx, const char *id, long long delta, int is_set, long long set,
                  const char *reason, oms_error *err)
{
    stock_items out;
    stock_items_init(&out);
    oms_error_clear(err);
    stock_adjustment a = {
        .product_id = id, .delta = delta, .set = set, .is_set = is_set, .reason = reason};
    int rc = stock_adjust(fx->svc, "alice", &a, T0, &out, err);
    stock_items_free(&out);
    return rc;
}

static const char *const all_fields[] = {"name", "unitPrice", "currency", "priceID", "onSale"};

/* ---- tests ---------------------------------------------------------------------------- */

static void test_create_product_listed_last_and_audited(void **state)
{
    fixture *fx = *state;
    const char *fields[] = {"name", "unitPrice", "currency"};
    stock_product_change c = {.product_id = "chips",
                              .name = "Chips",
                              .unit_price = 300,
                              .currency = "eur",
                              .fields = fields,
                              .nfields = 3};
    oms_error err;
    int created = 0;
    assert_int_equal(put(fx, "alice", &c, &created, &err), OMS_OK);
    assert_int_equal(created, 1);

    stock_items all;
    stock_items_init(&all);
    assert_int_equal(stock_list_products(fx->svc, &all, &err), OMS_OK);
    assert_int_equal(all.n, 3);
    assert_string_equal(all.v[2].product_id, "chips");
    assert_string_equal(all.v[2].price_id, "price_chips");
    assert_string_equal(all.v[2].currency, "EUR");
    assert_int_equal(all.v[2].unit_price, 300);
    assert_int_equal(all.v[2].on_sale, 1);
    assert_int_equal(all.v[2].available, 0);
    stock_items_free(&all);

    stock_audit_list l;
    stock_audit_list_init(&l);
    assert_int_equal(stock_list_audit(fx->svc, 0, 0, &l, &err), OMS_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.v[0].staff, "alice");
    assert_string_equal(l.v[0].action, "product.create");
    assert_string_equal(l.v[0].subject, "chips");
    assert_string_equal(l.v[0].before, "");
    assert_string_equal(l.v[0].after, "{\"name\":\"Chips\",\"priceID\":\"price_chips\","
                                      "\"unitPrice\":300,\"currency\":\"EUR\",\"onSale\":true}");
    assert_int_equal(l.v[0].at_ms, T0);
    stock_audit_list_free(&l);

    /* The same call again changes nothing and records nothing. */
    assert_int_equal(put(fx, "alice", &c, &created, &err), OMS_OK);
    assert_int_equal(created, 0);
    assert_int_equal(audit_count(fx), 1);
}

static void test_update_only_named_fields(void **state)
{
    fixture *fx = *state;
    const char *fields[] = {"unitPrice"};
    stock_product_change c = {
        .product_id = "1", .name = "ignored", .unit_price = 500, .fields = fields, .nfields = 1};
    oms_error err;
    assert_int_equal(put(fx, "bob", &c, NULL, &err), OMS_OK);
    stock_item p = product(fx, "1");
    assert_string_equal(p.name, "Cheese");
    assert_int_equal(p.unit_price, 500);
    assert_string_equal(p.currency, "usd");
    item_free(&p);

    stock_audit_list l;
    stock_audit_list_init(&l);
    assert_int_equal(stock_list_audit(fx->svc, 0, 0, &l, &err), OMS_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.v[0].action, "product.update");
    assert_string_equal(l.v[0].before, "{\"unitPrice\":450}");
    assert_string_equal(l.v[0].after, "{\"unitPrice\":500}");
    stock_audit_list_free(&l);
}

/* A reservation copies nothing it does not need: the caller (orders) keeps the price
 * it was given at reserve time; a reserve after the change gets the new one. */
static void test_price_change_applies_to_new_reservations(void **state)
{
    fixture *fx = *state;
    stock_req_item want[] = {{"2", 1}};
    stock_items out;
    oms_error err;
    stock_items_init(&out);
    assert_int_equal(stock_reserve(fx->svc, "o1", want, 1, T0, &out, &err), OMS_OK);
    assert_int_equal(out.v[0].unit_price, 250);
    stock_items_free(&out);

    const char *fields[] = {"unitPrice"};
    stock_product_change c = {.product_id = "2", .unit_price = 275, .fields = fields, .nfields = 1};
    assert_int_equal(put(fx, "bob", &c, NULL, &err), OMS_OK);
    assert_int_equal(stock_reserve(fx->svc, "o2", want, 1, T0, &out, &err), OMS_OK);
    assert_int_equal(out.v[0].unit_price, 275);
    stock_items_free(&out);
}

typedef struct bad_put {
    const char *staff;
    stock_product_change c;
    const char *field; /* the message must start with it */
} bad_put;

static void test_put_validation_table(void **state)
{
    fixture *fx = *state;
    char long_name[82];
    memset(long_name, 'x', 81);
    long_name[81] = '\0';
    /* 80 two-byte characters: 160 bytes, still fine */
    char accents[161];
    for (int i = 0; i < 80; i++)
        memcpy(accents + 2 * i, "\xc3\xa9", 2);
    accents[160] = '\0';
    const char *f_name[] = {"name"}, *f_price[] = {"unitPrice"}, *f_cur[] = {"currency"},
               *f_pid[] = {"priceID"}, *f_bad[] = {"name", "colour"}, *f_create[] = {"name"};
    const bad_put cases[] = {
        {"alice", {.product_id = "1", .name = "", .fields = f_name, .nfields = 1}, "name:"},
        {"alice", {.product_id = "1", .name = "   ", .fields = f_name, .nfields = 1}, "name:"},
        {"alice", {.product_id = "1", .name = long_name, .fields = f_name, .nfields = 1}, "name:"},
        {"alice", {.product_id = "1", .name = "a\tb", .fields = f_name, .nfields = 1}, "name:"},
        {"alice", {.product_id = "1", .name = "a\x7f", .fields = f_name, .nfields = 1}, "name:"},
        {"alice",
         {.product_id = "1", .name = "a\xc2\x85", .fields = f_name, .nfields = 1},
         "name:"},
        {"alice", {.product_id = "1", .name = "\xff\xfe", .fields = f_name, .nfields = 1}, "name:"},
        {"alice", {.product_id = "1", .name = "\xc0\xaf", .fields = f_name, .nfields = 1}, "name:"},
        {"alice",
         {.product_id = "1", .name = "\xed\xa0\x80", .fields = f_name, .nfields = 1},
         "name:"},
        {"alice", {.product_id = "1", .name = "caf\xc3", .fields = f_name, .nfields = 1}, "name:"},
        {"alice",
         {.product_id = "1", .unit_price = 0, .fields = f_price, .nfields = 1},
         "unitPrice:"},
        {"alice",
         {.product_id = "1", .unit_price = -1, .fields = f_price, .nfields = 1},
         "unitPrice:"},
        {"alice",
         {.product_id = "1", .unit_price = 100000001, .fields = f_price, .nfields = 1},
         "unitPrice:"},
        {"alice",
         {.product_id = "1", .currency = "XYZ", .fields = f_cur, .nfields = 1},
         "currency:"},
        {"alice", {.product_id = "1", .currency = "", .fields = f_cur, .nfields = 1}, "currency:"},
        {"alice",
         {.product_id = "1", .currency = NULL, .fields = f_cur, .nfields = 1},
         "currency:"},
        {"alice",
         {.product_id = "1", .price_id = "price 1", .fields = f_pid, .nfields = 1},
         "priceID:"},
        {"alice", {.product_id = "1", .name = "X", .fields = f_bad, .nfields = 2}, "fields:"},
        {"alice", {.product_id = "1", .fields = NULL, .nfields = 0}, "fields:"},
        {"alice",
         {.product_id = "bad id", .name = "X", .fields = f_name, .nfields = 1},
         "productID:"},
        {"", {.product_id = "1", .name = "X", .fields = f_name, .nfields = 1}, "staff:"},
        {NULL, {.product_id = "1", .name = "X", .fields = f_name, .nfields = 1}, "staff:"},
        /* creating needs name, unitPrice and currency */
        {"alice",
         {.product_id = "new", .name = "New", .fields = f_create, .nfields = 1},
         "unitPrice:"},
    };
    for (size_t i = 0; i < OMS_NELEM(cases); i++) {
        oms_error err;
        stock_product_change c = cases[i].c;
        int rc = put(fx, cases[i].staff, &c, NULL, &err);
        if (rc != OMS_INVALID || strncmp(err.msg, cases[i].field, strlen(cases[i].field)) != 0)
            fail_msg("case %zu: rc %d, message \"%s\" (wanted %s...)", i, rc, err.msg,
                     cases[i].field);
    }
    assert_int_equal(audit_count(fx), 0);
    stock_item p = product(fx, "1");
    assert_string_equal(p.name, "Cheese");
    assert_int_equal(p.unit_price, 450);
    assert_string_equal(p.price_id, "price_cheese");
    item_free(&p);
    stock_items all;
    oms_error err;
    stock_items_init(&all);
    assert_int_equal(stock_list_products(fx->svc, &all, &err), OMS_OK);
    assert_int_equal(all.n, 2); /* "new" was not created */
    stock_items_free(&all);

    /* The edges that are allowed. */
    stock_product_change ok = {.product_id = "1", .name = accents, .fields = f_name, .nfields = 1};
    assert_int_equal(put(fx, "alice", &ok, NULL, &err), OMS_OK);
    ok = (stock_product_change){
        .product_id = "1", .unit_price = 100000000, .fields = f_price, .nfields = 1};
    assert_int_equal(put(fx, "alice", &ok, NULL, &err), OMS_OK);
    ok =
        (stock_product_change){.product_id = "1", .currency = "gbp", .fields = f_cur, .nfields = 1};
    assert_int_equal(put(fx, "alice", &ok, NULL, &err), OMS_OK);
    p = product(fx, "1");
    assert_string_equal(p.currency, "GBP");
    item_free(&p);
    assert_int_equal(audit_count(fx), 3);
}

static void test_set_below_reserved_refused(void **state)
{
    fixture *fx = *state;
    stock_req_item want[] = {{"2", 3}};
    stock_items out;
    oms_error err;
    stock_items_init(&out);
    assert_int_equal(stock_reserve(fx->svc, "o1", want, 1, T0, &out, &err), OMS_OK);
    stock_items_free(&out);

    assert_int_equal(adjust(fx, "2", 0, 1, 2, "count", &err), OMS_CONFLICT);
    assert_string_equal(err.msg, "cannot set Chocolate to 2: 3 are reserved");
    assert_int_equal(adjust(fx, "2", -5, 0, 0, "broken", &err), OMS_CONFLICT);
    assert_string_equal(err.msg, "cannot take 5 of Chocolate: 4 are free (3 reserved)");
    stock_item p = product(fx, "2");
    assert_int_equal(p.available, 4);
    assert_int_equal(p.reserved, 3);
    item_free(&p);
    assert_int_equal(audit_count(fx), 0);

    /* Exactly the reserved count is fine: nothing left to sell. */
    assert_int_equal(adjust(fx, "2", 0, 1, 3, "count", &err), OMS_OK);
    p = product(fx, "2");
    assert_int_equal(p.available, 0);
    assert_int_equal(p.reserved, 3);
    item_free(&p);
    assert_int_equal(audit_count(fx), 1);
}

static void test_adjust_audited_with_reason(void **state)
{
    fixture *fx = *state;
    oms_error err;
    assert_int_equal(adjust(fx, "1", 8, 0, 0, "delivery", &err), OMS_OK);
    assert_int_equal(adjust(fx, "1", 0, 1, 15, "evening count", &err), OMS_OK);
    stock_item p = product(fx, "1");
    assert_int_equal(p.available, 15);
    item_free(&p);

    stock_audit_list l;
    stock_audit_list_init(&l);
    assert_int_equal(stock_list_audit(fx->svc, 0, 0, &l, &err), OMS_OK);
    assert_int_equal(l.n, 2);
    /* newest first: both at T0, so the larger id comes first */
    assert_true(l.v[0].id > l.v[1].id);
    assert_string_equal(l.v[0].action, "stock.adjust");
    assert_string_equal(l.v[0].reason, "evening count");
    assert_string_equal(l.v[0].before, "{\"available\":20,\"reserved\":0,\"sold\":0}");
    assert_string_equal(l.v[0].after, "{\"available\":15,\"reserved\":0,\"sold\":0}");
    assert_string_equal(l.v[1].reason, "delivery");
    assert_string_equal(l.v[1].before, "{\"available\":12,\"reserved\":0,\"sold\":0}");
    stock_audit_list_free(&l);
}

static void test_adjust_validation(void **state)
{
    fixture *fx = *state;
    oms_error err;
    char long_reason[202];
    memset(long_reason, 'r', 201);
    long_reason[201] = '\0';
    assert_int_equal(adjust(fx, "1", 1, 0, 0, "", &err), OMS_INVALID);
    assert_memory_equal(err.msg, "reason:", 7);
    assert_int_equal(adjust(fx, "1", 1, 0, 0, NULL, &err), OMS_INVALID);
    assert_memory_equal(err.msg, "reason:", 7);
    assert_int_equal(adjust(fx, "1", 1, 0, 0, long_reason, &err), OMS_INVALID);
    assert_memory_equal(err.msg, "reason:", 7);
    assert_int_equal(adjust(fx, "1", 1, 0, 0, "a\nb", &err), OMS_INVALID);
    assert_memory_equal(err.msg, "reason:", 7);
    assert_int_equal(adjust(fx, "1", 0, 0, 0, "x", &err), OMS_INVALID);
    assert_memory_equal(err.msg, "delta:", 6);
    assert_int_equal(adjust(fx, "1", 1000001, 0, 0, "x", &err), OMS_INVALID);
    assert_memory_equal(err.msg, "delta:", 6);
    assert_int_equal(adjust(fx, "1", -1000001, 0, 0, "x", &err), OMS_INVALID);
    assert_memory_equal(err.msg, "delta:", 6);
    assert_int_equal(adjust(fx, "1", 0, 1, -1, "x", &err), OMS_INVALID);
    assert_memory_equal(err.msg, "set:", 4);
    assert_int_equal(adjust(fx, "1", 0, 1, 1000001, "x", &err), OMS_INVALID);
    assert_memory_equal(err.msg, "set:", 4);
    assert_int_equal(adjust(fx, "nope", 1, 0, 0, "x", &err), OMS_NOTFOUND);
    assert_string_equal(err.msg, "product nope not found");
    assert_int_equal(audit_count(fx), 0);
    stock_item p = product(fx, "1");
    assert_int_equal(p.available, 12);
    item_free(&p);
}

static void test_off_sale_not_listed_not_reservable(void **state)
{
    fixture *fx = *state;
    stock_req_item want[] = {{"2", 2}};
    stock_items out;
    oms_error err;
    stock_items_init(&out);
    assert_int_equal(stock_reserve(fx->svc, "before", want, 1, T0, &out, &err), OMS_OK);
    stock_items_free(&out);

    const char *fields[] = {"onSale"};
    stock_product_change c = {.product_id = "2", .on_sale = 0, .fields = fields, .nfields = 1};
    assert_int_equal(put(fx, "alice", &c, NULL, &err), OMS_OK);
    assert_false(listed_by_list_items(fx, "2"));
    assert_true(listed_by_list_items(fx, "1"));

    assert_int_equal(stock_reserve(fx->svc, "after", want, 1, T0, &out, &err), OMS_CONFLICT);
    assert_string_equal(err.msg, "product 2 (Chocolate) is not on sale");
    assert_int_equal(out.n, 0);

    int in_stock = 1;
    assert_int_equal(stock_check(fx->svc, want, 1, &in_stock, &out, &err), OMS_OK);
    assert_int_equal(in_stock, 0);
    const char *ids[] = {"2"};
    assert_int_equal(stock_get_items(fx->svc, ids, 1, &out, &err), OMS_OK);
    assert_int_equal(out.n, 1);
    assert_int_equal(out.v[0].quantity, 0);
    stock_items_free(&out);

    /* The reservation made while it was on sale is untouched and can still be paid. */
    stock_res_state st;
    assert_int_equal(stock_commit(fx->svc, "before", T0, &st, &err), OMS_OK);
    stock_item p = product(fx, "2");
    assert_int_equal(p.available, 5);
    assert_int_equal(p.sold, 2);
    assert_int_equal(p.on_sale, 0);
    item_free(&p);

    /* Back on sale: listed and reservable again. */
    c.on_sale = 1;
    assert_int_equal(put(fx, "alice", &c, NULL, &err), OMS_OK);
    assert_true(listed_by_list_items(fx, "2"));
    assert_int_equal(stock_reserve(fx->svc, "again", want, 1, T0, &out, &err), OMS_OK);
    stock_items_free(&out);

    stock_audit_list l;
    stock_audit_list_init(&l);
    assert_int_equal(stock_list_audit(fx->svc, 0, 0, &l, &err), OMS_OK);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.v[0].after, "{\"onSale\":true}");
    assert_string_equal(l.v[1].after, "{\"onSale\":false}");
    stock_audit_list_free(&l);
}

static void test_one_currency_per_order(void **state)
{
    fixture *fx = *state;
    stock_product_change c = {.product_id = "crepe",
                              .name = "Crêpe",
                              .unit_price = 400,
                              .currency = "EUR",
                              .fields = all_fields,
                              .nfields = 3};
    oms_error err;
    assert_int_equal(put(fx, "alice", &c, NULL, &err), OMS_OK);
    assert_int_equal(adjust(fx, "crepe", 5, 0, 0, "made", &err), OMS_OK);
    stock_req_item want[] = {{"1", 1}, {"crepe", 1}};
    stock_items out;
    stock_items_init(&out);
    assert_int_equal(stock_reserve(fx->svc, "mixed", want, 2, T0, &out, &err), OMS_INVALID);
    assert_non_null(strstr(err.msg, "one currency"));
    assert_int_equal(out.n, 0);
    assert_int_equal(stock_reserve(fx->svc, "euro", want + 1, 1, T0, &out, &err), OMS_OK);
    assert_string_equal(out.v[0].currency, "EUR");
    stock_items_free(&out);
}

static void test_list_audit_pages(void **state)
{
    fixture *fx = *state;
    oms_error err;
    for (int i = 0; i < 5; i++) {
        stock_items out;
        stock_items_init(&out);
        stock_adjustment a = {.product_id = "1", .delta = 1, .reason = "step"};
        assert_int_equal(stock_adjust(fx->svc, "alice", &a, T0 + i * 1000, &out, &err), OMS_OK);
        stock_items_free(&out);
    }
    stock_audit_list l;
    stock_audit_list_init(&l);
    assert_int_equal(stock_list_audit(fx->svc, 0, 2, &l, &err), OMS_OK);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.v[0].at_ms, T0 + 4000);
    assert_int_equal(l.v[1].at_ms, T0 + 3000);
    int64_t cursor = l.v[1].at_ms;
    stock_audit_list_free(&l);
    assert_int_equal(stock_list_audit(fx->svc, cursor, 10, &l, &err), OMS_OK);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.v[0].at_ms, T0 + 2000);
    stock_audit_list_free(&l);

    assert_int_equal(stock_list_audit(fx->svc, 0, 201, &l, &err), OMS_INVALID);
    assert_memory_equal(err.msg, "limit:", 6);
    assert_int_equal(stock_list_audit(fx->svc, 0, -1, &l, &err), OMS_INVALID);
    assert_int_equal(stock_list_audit(fx->svc, -5, 10, &l, &err), OMS_INVALID);
    assert_memory_equal(err.msg, "beforeMs:", 9);
    assert_int_equal(l.n, 0);
}

int main(void)
{
    oms_log_init("test_stock_staff", OMS_LOG_ERROR, 1);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_create_product_listed_last_and_audited),
        T(test_update_only_named_fields),
        T(test_price_change_applies_to_new_reservations),
        T(test_put_validation_table),
        T(test_set_below_reserved_refused),
        T(test_adjust_audited_with_reason),
        T(test_adjust_validation),
        T(test_off_sale_not_listed_not_reservable),
        T(test_one_currency_per_order),
        T(test_list_audit_pages),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
