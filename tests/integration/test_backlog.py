"""The asynchronous side's backlog is bounded (ORDERS_MAX_PENDING): while payments is
down, orders wait for their payment link; past the bound a new order is answered 503
with Retry-After at once (by orders, then by the gateway itself for a moment, without
asking again), nothing is created, and once payments is back and the backlog drains,
orders are taken again. Runs on SQLite and, with OMS_TEST_DB=postgres, on PostgreSQL."""
import re

import pytest

from oms_harness import http, serve_shop, wait_for

CATALOG = {"currency": "usd", "products": [
    {"productID": "1", "name": "Cheese", "priceID": "price_cheese", "unitPrice": 450, "quantity": 1000},
]}


@pytest.fixture(scope="module")
def shop(rabbit, workdir):
    yield from serve_shop(rabbit, workdir, catalog=CATALOG, env={"ORDERS_MAX_PENDING": 2})


def metric(url, name, labels=""):
    st, _, text = http("GET", url + "/metrics")
    assert st == 200
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def create(shop, customer):
    return shop.create(customer, [{"productID": "1", "quantity": 1}])


def test_backlog_refused_at_once_then_taken_again(shop):
    shop.svc["payments"].stop()
    try:
        ids = []
        for i in range(2):
            st, _, body = create(shop, f"backlog-{i}")
            assert st == 201, body
            ids.append(body["order"]["orderID"])
        wait_for(lambda: metric(shop.orders_admin, "orders_pending") == 2, 10, "orders to count 2 pending")
        orders_before = shop.scalar("orders", "SELECT COUNT(*) FROM orders")
        stock_before = shop.stock()

        st, hdrs, body = create(shop, "backlog-3")
        assert st == 503, (st, body)
        assert hdrs.get("Retry-After") == "1"
        assert "overloaded" in body["error"], body
        assert metric(shop.orders_admin, "orders_refused_total") >= 1
        # Right after, the gateway answers for orders without asking it again.
        upstream = '{reason="upstream"}'
        shed_before = metric(shop.gateway, "http_requests_refused_total", upstream)
        refused_before = metric(shop.orders_admin, "orders_refused_total")
        for _ in range(20):
            st, hdrs, body = create(shop, "backlog-4")
            assert st == 503 and hdrs.get("Retry-After") == "1", (st, body)
        assert metric(shop.gateway, "http_requests_refused_total", upstream) > shed_before
        assert metric(shop.orders_admin, "orders_refused_total") < refused_before + 20
        # Nothing was created or reserved by the refusals.
        assert shop.scalar("orders", "SELECT COUNT(*) FROM orders") == orders_before
        assert shop.stock() == stock_before
    finally:
        shop.svc["payments"].start()
    # Payments back: the waiting orders get their links, and new orders are taken.
    for i, oid in enumerate(ids):
        shop.wait_status(f"backlog-{i}", oid, "waiting_payment")
    wait_for(lambda: metric(shop.orders_admin, "orders_pending") == 0, 10, "the backlog to drain")
    st, _, body = wait_for(lambda: (lambda r: r if r[0] == 201 else None)(create(shop, "backlog-5")), 10,
                           "an order to be taken again")
    assert body["order"]["status"] in ("pending", "waiting_payment"), body
