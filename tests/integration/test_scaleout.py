"""Several instances of each service sharing PostgreSQL: no overselling with
two stock and two orders instances, the whole journey across instances, and under etcd
discovery both instances serve, a killed one loses no order and cooks nothing twice,
and a restarted one is used again. These tests always run on PostgreSQL (they start the
session's server if the suite runs on SQLite): instances share state only there."""
import concurrent.futures
import re
import threading
import time
import uuid

import pytest

from oms_harness import db_backend, http, wait_for

# The shops here always use PostgreSQL, so they run once, in make test's PostgreSQL pass.
pytestmark = pytest.mark.skipif(db_backend() != "postgres",
                                reason="runs in the PostgreSQL pass (OMS_TEST_DB=postgres)")

BIG = {"currency": "usd", "products": [
    {"productID": "1", "name": "Cheese", "priceID": "price_cheese", "unitPrice": 450, "quantity": 1000},
    {"productID": "2", "name": "Chocolate", "priceID": "price_chocolate", "unitPrice": 250, "quantity": 1000},
]}


def pay(order):
    st, _, body = http("POST", order["PaymentLink"] + "/pay", b"")
    assert st == 200, (st, body)


def grpc_handled(shop, name, i, method):
    """grpc_server_handled_total for method (all codes) on instance i of name."""
    st, _, text = http("GET", shop.admin_url(name, i) + "/metrics")
    assert st == 200, text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("grpc_server_handled_total{") and f'method="{method}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def kitchen_cooking(shop, i):
    """Tickets kitchen instance i started cooking (kitchen_tickets_total{state="cooking"})."""
    st, _, text = http("GET", shop.admin_url("kitchen", i) + "/metrics", timeout=2)
    m = re.findall(r'^kitchen_tickets_total\{[^}]*state="cooking"[^}]*\} (\S+)', text, re.M)
    return sum(float(x) for x in m)


def test_no_oversell_and_full_journey_with_two_orders_and_two_stock(make_shop):
    shop = make_shop(db="postgres", instances={"orders": 2, "stock": 2}, env={"KITCHEN_COOK_MS": 50})

    def one(i):
        return shop.create(f"over{i}", [{"productID": "2", "quantity": 1}])

    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        results = list(ex.map(one, range(20)))
    codes = sorted(r[0] for r in results)
    assert codes.count(201) == 7, codes
    assert codes.count(409) == 13, codes
    # Both stock instances read the same rows.
    for i in range(2):
        st, _, body = http("GET", shop.admin_url("stock", i) + "/stock")
        assert st == 200
        choc = [p for p in body["products"] if p["productID"] == "2"][0]
        assert (choc["available"], choc["reserved"]) == (0, 7), (i, choc)
    # The gateway balanced over both orders instances, and orders over both stocks.
    for name, method in (("orders", "/api.OrderService/CreateOrder"), ("stock", "/api.StockService/ReserveItems")):
        counts = [grpc_handled(shop, name, i, method) for i in range(2)]
        assert all(c > 0 for c in counts), (name, counts)

    # The whole journey on the shared databases: pay, cook, ready.
    oid = [r[2]["order"]["orderID"] for r in results if r[0] == 201][0]
    cust = [f"over{i}" for i, r in enumerate(results) if r[0] == 201 and r[2]["order"]["orderID"] == oid][0]
    order = shop.wait_status(cust, oid, "waiting_payment")
    pay(order)
    shop.wait_status(cust, oid, "ready for pick-up", timeout=60)
    choc = shop.stock()["2"]
    assert (choc["sold"], choc["reserved"]) == (1, 6)


def test_two_of_each_under_etcd_survive_a_kill(make_shop):
    shop = make_shop(db="postgres", discovery="etcd", catalog=BIG,
                     instances={"orders": 2, "stock": 2, "payments": 2, "kitchen": 2},
                     env={"KITCHEN_COOK_MS": 300, "MAX_RETRIES": 20})
    for name in ("orders", "stock", "payments", "kitchen"):
        want = sorted(shop.addrs(name).split(","))
        wait_for(lambda n=name, w=want: shop.registered(n) == w, 10, f"two {name} instances registered")

    # Requests reach both instances of orders and stock once the resolvers caught up.
    def both_used():
        shop.create("warm", [{"productID": "1", "quantity": 1}])
        return all(grpc_handled(shop, n, i, m) > 0
                   for n, m in (("orders", "/api.OrderService/CreateOrder"),
                                ("stock", "/api.StockService/ReserveItems"))
                   for i in range(2))
    wait_for(both_used, 20, "both instances of orders and stock to serve", interval=0.05)

    # Bounded load: 60 orders, each retried with its idempotency key until accepted;
    # orders-2 is killed (kill -9) a third of the way through.
    created = {}
    errors = []
    lock = threading.Lock()

    def customer(i):
        key = uuid.uuid4().hex
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st, _, body = shop.create(f"load{i}", [{"productID": "1", "quantity": 1}],
                                      headers={"Idempotency-Key": key})
            if st == 201:
                with lock:
                    created[f"load{i}"] = body["order"]["orderID"]
                return
            if st not in (500, 502, 503, 504):
                errors.append((i, st, body))
                return
            time.sleep(0.05)
        errors.append((i, "gave up"))

    killed = threading.Event()

    def killer():
        wait_for(lambda: len(created) >= 20, 30, "a third of the load")
        shop.svc["orders-2"].kill9()
        killed.set()

    k = threading.Thread(target=killer)
    k.start()
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        list(ex.map(customer, range(60)))
    k.join()
    assert killed.is_set()
    assert not errors, errors
    assert len(created) == 60

    # Discovery drops the dead instance (lease TTL 2 s).
    live = shop.grpc_addr("orders", 0)
    wait_for(lambda: shop.registered("orders") == [live], 5, "orders-2 to leave the registry")

    # Nothing lost: every accepted order is paid, cooked once and ready, although
    # kitchen-2 is killed while cooking: its tickets go back to the queue once they are
    # clearly nobody's (cook time + KITCHEN_STALE_GRACE_MS) and kitchen-1 cooks them.
    for n, (cust, oid) in enumerate(created.items()):
        pay(shop.wait_status(cust, oid, "waiting_payment"))
        if n == 30:
            wait_for(lambda: kitchen_cooking(shop, 1) > 0, 20, "kitchen-2 to be cooking")
            shop.svc["kitchen-2"].kill9()
    for cust, oid in created.items():
        shop.wait_status(cust, oid, "ready for pick-up", timeout=60)
    ids = set(created.values())
    assert shop.scalar("kitchen", "SELECT count(*) FROM tickets WHERE state = 'ready'") >= len(ids)
    # One order.cooking and one order.ready per order, whichever kitchen cooked it.
    for exchange in ("order.cooking", "order.ready"):
        n = shop.scalar("kitchen", "SELECT count(*) FROM outbox WHERE exchange = ?", (exchange,))
        assert n == shop.scalar("kitchen", "SELECT count(*) FROM tickets"), exchange
    # kitchen-1 took tickets from the shared queue too (kitchen-2's metrics died with it).
    assert kitchen_cooking(shop, 0) > 0
    shop.restart_instance("kitchen", 1)

    # A restarted instance registers again and takes requests again (kitchen-2 too).
    wait_for(lambda: sorted(shop.registered("kitchen")) == sorted(shop.addrs("kitchen").split(",")), 10,
             "kitchen-2 back in the registry")
    shop.restart_instance("orders", 1)
    wait_for(lambda: sorted(shop.registered("orders")) == sorted(shop.addrs("orders").split(",")), 10,
             "orders-2 back in the registry")

    def used_again():
        shop.create("again", [{"productID": "1", "quantity": 1}])
        return grpc_handled(shop, "orders", 1, "/api.OrderService/CreateOrder") > 0
    wait_for(used_again, 20, "the restarted orders-2 to serve", interval=0.05)
