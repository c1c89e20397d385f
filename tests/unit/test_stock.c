/* Stock rules against a real SQLite database in a private temporary directory, through
 * service.c/store.c/catalog.c (no servers). Time is injected (now_ms arguments), so
 * expiry is tested without sleeping. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* Relative paths on purpose: every service folder is on the include path of the unit
 * tests, so a bare "service.h" could resolve to another service's header. */
#include "../../stock/catalog.h"
#include "../../stock/service.h"
#include "../../stock/store.h"
#include "oms/log.h"
#include "oms/util.h"

#define T0 1700000000000LL /* an arbitrary wall-clock instant, ms */
#define TTL_MS 1000

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

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/test_stock.XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->catalog, sizeof(fx->catalog), "%s/catalog.json", fx->dir);
    snprintf(fx->dbpath, sizeof(fx->dbpath), "%s/stock.db", fx->dir);
    write_file(fx->catalog, catalog_json);

    oms_error err;
    oms_error_clear(&err);
    size_t loaded = 0;
    assert_int_equal(stock_store_open(&fx->db, fx->dbpath, &err), OMS_OK);
    assert_int_equal(stock_load_catalog(fx->db, fx->catalog, &loaded, &err), OMS_OK);
    assert_int_equal(loaded, 2);
    assert_int_equal(stock_service_new(&fx->svc, fx->db, TTL_MS, &err), OMS_OK);
    *state = fx;
    return 0;
}

static void remove_if_present(const char *dir, const char *name)
{
    char path[192];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (unlink(path) != 0 && errno != ENOENT)
        fail_msg("unlink %s: %s", path, strerror(errno));
}

static int teardown(void **state)
{
    fixture *fx = *state;
    stock_service_free(fx->svc);
    stock_store_close(fx->db);
    static const char *const files[] = {"stock.db", "stock.db-wal", "stock.db-shm", "catalog.json",
                                        "bad.json", "fresh.db",     "fresh.db-wal", "fresh.db-shm"};
    for (size_t i = 0; i < OMS_NELEM(files); i++)
        remove_if_present(fx->dir, files[i]);
    assert_int_equal(rmdir(fx->dir), 0);
    free(fx);
    return 0;
}

typedef struct levels {
    long long available, reserved, sold;
} levels;

static levels level_of(fixture *fx, const char *id)
{
    stock_items items;
    oms_error err;
    stock_items_init(&items);
    assert_int_equal(stock_list_items(fx->svc, &items, &err), OMS_OK);
    levels l = {-1, -1, -1};
    for (size_t i = 0; i < items.n; i++)
        if (strcmp(items.v[i].product_id, id) == 0)
            l = (levels){items.v[i].available, items.v[i].reserved, items.v[i].sold};
    stock_items_free(&items);
    assert_true(l.available >= 0);
    return l;
}

static void assert_levels(fixture *fx, const char *id, long long available, long long reserved,
                          long long sold)
{
    levels l = level_of(fx, id);
    assert_int_equal(l.available, available);
    assert_int_equal(l.reserved, reserved);
    assert_int_equal(l.sold, sold);
}

static int reserve(fixture *fx, const char *order, const stock_req_item *items, size_t n,
                   int64_t now, oms_error *err)
{
    stock_items out;
    stock_items_init(&out);
    oms_error_clear(err);
    int rc = stock_reserve(fx->svc, order, items, n, now, &out, err);
    stock_items_free(&out);
    return rc;
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_reserve_fills_catalog_fields(void **state)
{
    fixture *fx = *state;
    stock_req_item want[] = {{"2", 2}, {"1", 1}};
    stock_items out;
    oms_error err;
    stock_items_init(&out);
    assert_int_equal(stock_reserve(fx->svc, "o1", want, 2, T0, &out, &err), OMS_OK);
    assert_int_equal(out.n, 2);
    assert_string_equal(out.v[0].product_id, "2");
    assert_string_equal(out.v[0].name, "Chocolate");
    assert_string_equal(out.v[0].price_id, "price_chocolate");
    assert_int_equal(out.v[0].unit_price, 250);
    assert_string_equal(out.v[0].currency, "usd");
    assert_int_equal(out.v[0].quantity, 2);
    assert_string_equal(out.v[1].product_id, "1");
    assert_int_equal(out.v[1].quantity, 1);
    stock_items_free(&out);
    assert_levels(fx, "2", 5, 2, 0);
    assert_levels(fx, "1", 11, 1, 0);
}

static void test_reserve_all_or_nothing(void **state)
{
    fixture *fx = *state;
    stock_req_item want[] = {{"1", 3}, {"2", 8}};
    oms_error err;
    assert_int_equal(reserve(fx, "o1", want, 2, T0, &err), OMS_CONFLICT);
    assert_string_equal(err.msg, "not enough stock for product 2 (Chocolate): requested 8, 7 left");
    assert_levels(fx, "1", 12, 0, 0);
    assert_levels(fx, "2", 7, 0, 0);
    /* No reservation was left behind either. */
    stock_res_state st;
    assert_int_equal(stock_release(fx->svc, "o1", T0, &st, &err), OMS_NOTFOUND);
    assert_string_equal(err.msg, "reservation for order o1 not found");
}

static void test_reserve_idempotent(void **state)
{
    fixture *fx = *state;
    stock_req_item want[] = {{"2", 3}};
    stock_req_item other[] = {{"1", 5}};
    stock_items out;
    oms_error err;
    assert_int_equal(reserve(fx, "o1", want, 1, T0, &err), OMS_OK);
    /* Same order again, even with different items: the first reservation is the answer. */
    stock_items_init(&out);
    assert_int_equal(stock_reserve(fx->svc, "o1", other, 1, T0 + 10, &out, &err), OMS_OK);
    assert_int_equal(out.n, 1);
    assert_string_equal(out.v[0].product_id, "2");
    assert_string_equal(out.v[0].name, "Chocolate");
    assert_int_equal(out.v[0].quantity, 3);
    stock_items_free(&out);
    assert_levels(fx, "2", 4, 3, 0);
    assert_levels(fx, "1", 12, 0, 0);
}

static void test_release_returns_stock(void **state)
{
    fixture *fx = *state;
    stock_req_item want[] = {{"1", 4}, {"2", 7}};
    oms_error err;
    stock_res_state st = STOCK_RES_COMMITTED;
    assert_int_equal(reserve(fx, "o1", want, 2, T0, &err), OMS_OK);
    assert_levels(fx, "2", 0, 7, 0);
    assert_int_equal(stock_release(fx->svc, "o1", T0 + 1, &st, &err), OMS_OK);
    assert_int_equal(st, STOCK_RES_RELEASED);
    assert_levels(fx, "1", 12, 0, 0);
    assert_levels(fx, "2", 7, 0, 0);
    /* Idempotent: a second release changes nothing. */
    assert_int_equal(stock_release(fx->svc, "o1", T0 + 2, &st, &err), OMS_OK);
    assert_int_equal(st, STOCK_RES_RELEASED);
    assert_levels(fx, "2", 7, 0, 0);
    assert_int_equal(stock_release(fx->svc, "nope", T0, &st, &err), OMS_NOTFOUND);
}

static void test_commit_moves_reserved_to_sold(void **state)
{
    fixture *fx = *state;
    stock_req_item want[] = {{"2", 3}};
    oms_error err;
    stock_res_state st = STOCK_RES_RELEASED;
    assert_int_equal(reserve(fx, "o1", want, 1, T0, &err), OMS_OK);
    assert_int_equal(stock_commit(fx->svc, "o1", T0 + 1, &st, &err), OMS_OK);
    assert_int_equal(st, STOCK_RES_COMMITTED);
    assert_levels(fx, "2", 4, 0, 3);
    /* Idempotent commit; release after commit refused. */
    assert_int_equal(stock_commit(fx->svc, "o1", T0 + 2, &st, &err), OMS_OK);
    assert_int_equal(st, STOCK_RES_COMMITTED);
    assert_levels(fx, "2", 4, 0, 3);
    assert_int_equal(stock_release(fx->svc, "o1", T0 + 3, &st, &err), OMS_CONFLICT);
    assert_string_equal(err.msg, "reservation for order o1 is already committed");
    assert_levels(fx, "2", 4, 0, 3);
    assert_int_equal(stock_commit(fx->svc, "nope", T0, &st, &err), OMS_NOTFOUND);
    /* A committed reservation never expires. */
    size_t n = 99;
    assert_int_equal(stock_expire_due(fx->svc, T0 + 100 * TTL_MS, &n, &err), OMS_OK);
    assert_int_equal(n, 0);
    assert_levels(fx, "2", 4, 0, 3);
}

static void test_commit_after_expiry_refused(void **state)
{
    fixture *fx = *state;
    stock_req_item want[] = {{"2", 2}, {"1", 1}};
    oms_error err;
    size_t n = 0;
    stock_res_state st;
    assert_int_equal(reserve(fx, "o1", want, 2, T0, &err), OMS_OK);
    assert_int_equal(stock_expire_due(fx->svc, T0 + TTL_MS, &n, &err), OMS_OK);
    assert_int_equal(n, 1);
    assert_levels(fx, "2", 7, 0, 0);
    /* Payment arrived after expiry: released is final even with stock on the shelf
     * (the payment is refunded by the caller), and nothing is taken. */
    assert_int_equal(stock_commit(fx->svc, "o1", T0 + 2 * TTL_MS, &st, &err), OMS_CONFLICT);
    assert_non_null(strstr(err.msg, "was released"));
    assert_int_equal(st, STOCK_RES_RELEASED);
    assert_levels(fx, "2", 7, 0, 0);
    assert_levels(fx, "1", 12, 0, 0);
}

static void test_release_then_commit_then_release(void **state)
{
    fixture *fx = *state;
    stock_req_item a[] = {{"2", 5}};
    oms_error err;
    stock_res_state st;
    /* A cancel that won: the later payment is refused. */
    assert_int_equal(reserve(fx, "a", a, 1, T0, &err), OMS_OK);
    assert_int_equal(stock_release(fx->svc, "a", T0 + 1, &st, &err), OMS_OK);
    assert_int_equal(stock_commit(fx->svc, "a", T0 + 2, &st, &err), OMS_CONFLICT);
    /* A payment that won: the later cancel is refused. */
    assert_int_equal(reserve(fx, "b", a, 1, T0, &err), OMS_OK);
    assert_int_equal(stock_commit(fx->svc, "b", T0 + 1, &st, &err), OMS_OK);
    assert_int_equal(stock_release(fx->svc, "b", T0 + 2, &st, &err), OMS_CONFLICT);
    assert_levels(fx, "2", 2, 0, 5);
}

static void test_expiry_releases_only_due(void **state)
{
    fixture *fx = *state;
    stock_req_item one[] = {{"2", 1}};
    stock_req_item two[] = {{"2", 2}};
    stock_req_item three[] = {{"1", 3}};
    oms_error err;
    size_t n = 99;
    stock_res_state st;
    assert_int_equal(reserve(fx, "early", one, 1, T0, &err), OMS_OK);
    assert_int_equal(reserve(fx, "late", two, 1, T0 + 500, &err), OMS_OK);
    assert_int_equal(reserve(fx, "paid", three, 1, T0, &err), OMS_OK);
    assert_int_equal(stock_commit(fx->svc, "paid", T0 + 1, &st, &err), OMS_OK);

    assert_int_equal(stock_expire_due(fx->svc, T0 + TTL_MS - 1, &n, &err), OMS_OK);
    assert_int_equal(n, 0);
    assert_levels(fx, "2", 4, 3, 0);
    assert_int_equal(stock_expire_due(fx->svc, T0 + TTL_MS, &n, &err), OMS_OK);
    assert_int_equal(n, 1); /* "early" only */
    assert_levels(fx, "2", 5, 2, 0);
    assert_levels(fx, "1", 9, 0, 3);
    assert_int_equal(stock_expire_due(fx->svc, T0 + TTL_MS + 499, &n, &err), OMS_OK);
    assert_int_equal(n, 0);
    assert_int_equal(stock_expire_due(fx->svc, T0 + TTL_MS + 500, &n, &err), OMS_OK);
    assert_int_equal(n, 1);
    assert_levels(fx, "2", 7, 0, 0);
    assert_levels(fx, "1", 9, 0, 3);
    /* Releasing an expired reservation again is the idempotent no-op. */
    assert_int_equal(stock_release(fx->svc, "early", T0 + 5000, &st, &err), OMS_OK);
    assert_int_equal(st, STOCK_RES_RELEASED);
}

typedef struct racer {
    fixture *fx;
    pthread_barrier_t *start;
    char order[16];
    int rc;
} racer;

static void *race_reserve(void *arg)
{
    racer *r = arg;
    stock_req_item want[] = {{"2", 1}};
    oms_error err;
    int b = pthread_barrier_wait(r->start);
    if (b != 0 && b != PTHREAD_BARRIER_SERIAL_THREAD) {
        r->rc = -100;
        return NULL;
    }
    stock_items out;
    stock_items_init(&out);
    oms_error_clear(&err);
    r->rc = stock_reserve(r->fx->svc, r->order, want, 1, T0, &out, &err);
    stock_items_free(&out);
    return NULL;
}

static void test_concurrent_reserve_never_oversells(void **state)
{
    fixture *fx = *state;
    enum { N = 20 };
    pthread_t th[N];
    racer rs[N];
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, N), 0);
    for (int i = 0; i < N; i++) {
        rs[i] = (racer){fx, &start, "", 0};
        snprintf(rs[i].order, sizeof(rs[i].order), "race-%d", i);
        assert_int_equal(pthread_create(&th[i], NULL, race_reserve, &rs[i]), 0);
    }
    int ok = 0, conflict = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        if (rs[i].rc == OMS_OK)
            ok++;
        else if (rs[i].rc == OMS_CONFLICT)
            conflict++;
    }
    assert_int_equal(pthread_barrier_destroy(&start), 0);
    assert_int_equal(ok, 7);
    assert_int_equal(conflict, N - 7);
    assert_levels(fx, "2", 0, 7, 0);
}

static void test_unknown_product(void **state)
{
    fixture *fx = *state;
    stock_req_item want[] = {{"1", 1}, {"99", 1}};
    oms_error err;
    assert_int_equal(reserve(fx, "o1", want, 2, T0, &err), OMS_NOTFOUND);
    assert_string_equal(err.msg, "product 99 not found");
    assert_levels(fx, "1", 12, 0, 0);
}

static void test_invalid_input(void **state)
{
    fixture *fx = *state;
    stock_req_item zero[] = {{"1", 0}};
    stock_req_item big[] = {{"1", 1001}};
    stock_req_item bad_id[] = {{"1", 1}, {"no spaces", 1}};
    stock_req_item sum_big[] = {{"1", 600}, {"1", 401}};
    stock_req_item ok[] = {{"1", 1}};
    oms_error err;
    assert_int_equal(reserve(fx, "o1", zero, 1, T0, &err), OMS_INVALID);
    assert_non_null(strstr(err.msg, "items[0].quantity"));
    assert_int_equal(reserve(fx, "o1", big, 1, T0, &err), OMS_INVALID);
    assert_non_null(strstr(err.msg, "items[0].quantity"));
    assert_int_equal(reserve(fx, "o1", bad_id, 2, T0, &err), OMS_INVALID);
    assert_non_null(strstr(err.msg, "items[1].productID"));
    assert_int_equal(reserve(fx, "o1", sum_big, 2, T0, &err), OMS_INVALID);
    assert_int_equal(reserve(fx, "o1", ok, 0, T0, &err), OMS_INVALID);
    assert_non_null(strstr(err.msg, "items"));
    assert_int_equal(reserve(fx, "", ok, 1, T0, &err), OMS_INVALID);
    assert_non_null(strstr(err.msg, "orderID"));
    assert_int_equal(reserve(fx, "bad/order", ok, 1, T0, &err), OMS_INVALID);
    assert_non_null(strstr(err.msg, "orderID"));
    assert_levels(fx, "1", 12, 0, 0);
}

static void test_duplicates_merged(void **state)
{
    fixture *fx = *state;
    stock_req_item want[] = {{"1", 2}, {"2", 1}, {"1", 3}};
    stock_items out;
    oms_error err;
    stock_items_init(&out);
    assert_int_equal(stock_reserve(fx->svc, "o1", want, 3, T0, &out, &err), OMS_OK);
    assert_int_equal(out.n, 2);
    assert_string_equal(out.v[0].product_id, "1");
    assert_int_equal(out.v[0].quantity, 5);
    assert_string_equal(out.v[1].product_id, "2");
    assert_int_equal(out.v[1].quantity, 1);
    stock_items_free(&out);
    assert_levels(fx, "1", 7, 5, 0);
    /* Merging happens before the stock check: 4 + 4 Chocolate is 8 > 7. */
    stock_req_item split[] = {{"2", 4}, {"2", 4}};
    assert_int_equal(reserve(fx, "o2", split, 2, T0, &err), OMS_CONFLICT);
    assert_string_equal(err.msg, "not enough stock for product 2 (Chocolate): requested 8, 6 left");
}

static void test_check_and_get_items(void **state)
{
    fixture *fx = *state;
    stock_req_item enough[] = {{"1", 12}, {"2", 1}};
    stock_req_item too_many[] = {{"1", 13}};
    stock_req_item unknown[] = {{"1", 1}, {"99", 1}};
    stock_items out;
    oms_error err;
    int in_stock = -1;
    stock_items_init(&out);
    assert_int_equal(stock_check(fx->svc, enough, 2, &in_stock, &out, &err), OMS_OK);
    assert_int_equal(in_stock, 1);
    assert_int_equal(out.n, 2);
    assert_string_equal(out.v[0].name, "Cheese");
    assert_string_equal(out.v[0].price_id, "price_cheese");
    assert_int_equal(out.v[0].quantity, 12);
    assert_int_equal(out.v[0].unit_price, 450);
    stock_items_free(&out);
    assert_int_equal(stock_check(fx->svc, too_many, 1, &in_stock, &out, &err), OMS_OK);
    assert_int_equal(in_stock, 0);
    assert_int_equal(out.n, 0);
    assert_int_equal(stock_check(fx->svc, unknown, 2, &in_stock, &out, &err), OMS_OK);
    assert_int_equal(in_stock, 0);
    /* Checking takes nothing. */
    assert_levels(fx, "1", 12, 0, 0);

    const char *ids[] = {"2", "99", "1", "2", "not valid!"};
    assert_int_equal(stock_get_items(fx->svc, ids, 5, &out, &err), OMS_OK);
    assert_int_equal(out.n, 2);
    assert_string_equal(out.v[0].product_id, "2");
    assert_string_equal(out.v[0].name, "Chocolate");
    assert_int_equal(out.v[0].quantity, 7);
    assert_int_equal(out.v[0].available, 7);
    assert_string_equal(out.v[1].product_id, "1");
    stock_items_free(&out);
}

static void test_catalog_loaded_only_once(void **state)
{
    fixture *fx = *state;
    oms_error err;
    size_t loaded = 99;
    /* The products table is seeded: the file is not even read again. */
    write_file(fx->catalog, "this is not json");
    assert_int_equal(stock_load_catalog(fx->db, fx->catalog, &loaded, &err), OMS_OK);
    assert_int_equal(loaded, 0);
    assert_levels(fx, "2", 7, 0, 0);
}

static void expect_catalog_error(fixture *fx, const char *text, const char *fragment)
{
    char path[160];
    stock_items items;
    oms_error err;
    snprintf(path, sizeof(path), "%s/bad.json", fx->dir);
    write_file(path, text);
    stock_items_init(&items);
    oms_error_clear(&err);
    assert_int_equal(stock_catalog_load(path, &items, &err), OMS_INVALID);
    assert_int_equal(items.n, 0);
    if (!strstr(err.msg, path) || !strstr(err.msg, fragment))
        fail_msg("catalog error \"%s\" lacks \"%s\" or the file name", err.msg, fragment);
}

static void test_malformed_catalog_rejected(void **state)
{
    fixture *fx = *state;
    expect_catalog_error(fx, "{\"currency\":\"usd\",\"products\":[", "line 1");
    expect_catalog_error(fx, "{\"products\":[]}", "currency");
    expect_catalog_error(fx, "{\"currency\":\"usd\",\"products\":[]}", "products");
    expect_catalog_error(fx,
                         "{\"currency\":\"usd\",\"products\":[{\"productID\":\"1\",\"name\":\"A\","
                         "\"priceID\":\"p\",\"unitPrice\":1,\"quantity\":1},{\"productID\":\"2\","
                         "\"name\":\"B\",\"priceID\":\"p2\",\"unitPrice\":-5,\"quantity\":1}]}",
                         "products[1] (productID \"2\"): unitPrice");
    expect_catalog_error(fx,
                         "{\"currency\":\"usd\",\"products\":[{\"productID\":\"1\",\"name\":\"A\","
                         "\"priceID\":\"p\",\"unitPrice\":1,\"quantity\":\"lots\"}]}",
                         "products[0] (productID \"1\"): quantity");
    expect_catalog_error(fx,
                         "{\"currency\":\"usd\",\"products\":[{\"productID\":\"1\",\"name\":\"A\","
                         "\"priceID\":\"p\",\"unitPrice\":1,\"quantity\":1},{\"productID\":\"1\","
                         "\"name\":\"B\",\"priceID\":\"p\",\"unitPrice\":1,\"quantity\":1}]}",
                         "products[1]: productID \"1\" repeats products[0]");
    expect_catalog_error(fx, "{\"currency\":\"usd\",\"products\":[{\"name\":\"A\"}]}",
                         "products[0]: productID");

    /* Through the first-start path: the error surfaces and nothing is seeded. */
    char dbpath[160], path[160];
    struct oms_db *db = NULL;
    oms_error err;
    size_t loaded = 99;
    snprintf(dbpath, sizeof(dbpath), "%s/fresh.db", fx->dir);
    snprintf(path, sizeof(path), "%s/bad.json", fx->dir);
    assert_int_equal(stock_store_open(&db, dbpath, &err), OMS_OK);
    assert_int_equal(stock_load_catalog(db, path, &loaded, &err), OMS_INVALID);
    assert_non_null(strstr(err.msg, "products[0]"));
    assert_int_equal(loaded, 0);
    write_file(path, catalog_json);
    assert_int_equal(stock_load_catalog(db, path, &loaded, &err), OMS_OK);
    assert_int_equal(loaded, 2);
    stock_store_close(db);
}

int main(void)
{
    oms_log_init("test_stock", OMS_LOG_ERROR, 1);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_reserve_fills_catalog_fields),
        T(test_reserve_all_or_nothing),
        T(test_reserve_idempotent),
        T(test_release_returns_stock),
        T(test_commit_moves_reserved_to_sold),
        T(test_commit_after_expiry_refused),
        T(test_release_then_commit_then_release),
        T(test_expiry_releases_only_due),
        T(test_concurrent_reserve_never_oversells),
        T(test_unknown_product),
        T(test_invalid_input),
        T(test_duplicates_merged),
        T(test_check_and_get_items),
        T(test_catalog_loaded_only_once),
        T(test_malformed_catalog_rejected),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
