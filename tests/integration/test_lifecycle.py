"""The whole order journey over real RabbitMQ: create -> waiting_payment ->
pay on the local checkout -> paid -> cooking -> ready for pick-up, and what must hold
when events repeat, arrive out of order, keep failing, or the broker restarts."""
import json
import os
import time

import pytest

from oms_harness import http, wait_for

CHAIN = ["pending", "waiting_payment", "paid", "cooking", "ready for pick-up"]
BIG = {"currency": "usd", "products": [
    {"productID": "1", "name": "Cheese", "priceID": "price_cheese", "unitPrice": 450, "quantity": 1000},
    {"productID": "2", "name": "Chocolate", "priceID": "price_chocolate", "unitPrice": 250, "quantity": 1000},
]}


def need(shop, *names):
    missing = [n for n in names if n not in shop.svc]
    if missing:
        pytest.skip(f"services not built yet: {missing}")


def waiting_payment(shop, customer, oid):
    return shop.wait_status(customer, oid, "waiting_payment")


def pay(shop, order):
    link = order["PaymentLink"]
    st, _, body = http("POST", link + "/pay", b"")
    assert st == 200, (st, body)  # the redirect lands on the status page


def inbox_count(shop, service, message_id):
    return shop.scalar(service, "SELECT count(*) FROM inbox WHERE message_id = ?", (message_id,))


def test_full_journey_through_local_checkout(make_shop):
    shop = make_shop(catalog=BIG, env={"KITCHEN_COOK_MS": 400})
    need(shop, "payments", "kitchen")
    st, _, body = shop.create("journey", [{"productID": "1", "quantity": 2}, {"productID": "2", "quantity": 1}])
    assert st == 201, body
    oid = body["order"]["orderID"]
    order = waiting_payment(shop, "journey", oid)
    assert order["PaymentLink"].startswith(shop.payments + "/checkout/"), order
    st, _, page = http("GET", order["PaymentLink"])
    assert st == 200 and "Cheese" in page and "Chocolate" in page and "11.50" in page
    pay(shop, order)

    seen = []

    def ready():
        st, _, o = shop.get("journey", oid)
        assert st == 200
        if not seen or seen[-1] != o["status"]:
            seen.append(o["status"])
        return o["status"] == "ready for pick-up"
    wait_for(ready, 30, "the order to be ready", interval=0.01)
    ranks = [CHAIN.index(s) for s in seen]
    assert ranks == sorted(ranks), seen       # never backwards
    assert "cooking" in seen, seen            # 400 ms of cooking is seen by a 10 ms poll
    s = shop.stock()
    assert (s["1"]["sold"], s["1"]["reserved"], s["1"]["available"]) == (2, 0, 998)
    assert (s["2"]["sold"], s["2"]["reserved"], s["2"]["available"]) == (1, 0, 999)


def test_checkout_cancel_cancels_and_releases(make_shop):
    shop = make_shop(catalog=BIG)
    need(shop, "payments")
    st, _, body = shop.create("canceller", [{"productID": "2", "quantity": 3}])
    oid = body["order"]["orderID"]
    order = waiting_payment(shop, "canceller", oid)
    st, _, _ = http("POST", order["PaymentLink"] + "/cancel", b"")
    assert st == 200
    shop.wait_status("canceller", oid, "cancelled")
    wait_for(lambda: shop.stock()["2"]["reserved"] == 0, 10, "stock released")
    assert shop.stock()["2"]["available"] == 1000
    # a cancelled checkout cannot be paid afterwards
    http("POST", order["PaymentLink"] + "/pay", b"")
    assert shop.get("canceller", oid)[2]["status"] == "cancelled"


def test_order_paid_twice_is_applied_once(make_shop):
    shop = make_shop(catalog=BIG)
    need(shop, "payments", "kitchen")
    st, _, body = shop.create("twice", [{"productID": "1", "quantity": 3}])
    oid = body["order"]["orderID"]
    order = waiting_payment(shop, "twice", oid)
    paid = dict(order, status="paid")
    mid = shop.publish("order.paid", paid)
    shop.publish("order.paid", paid, message_id=mid)
    shop.wait_status("twice", oid, "ready for pick-up")
    wait_for(lambda: inbox_count(shop, "orders", mid) == 1, 10, "orders to record the event")
    wait_for(lambda: shop.queue("orders.order.paid")["messages"] == 0, 20, "the queue to drain")
    assert inbox_count(shop, "orders", mid) == 1
    s = shop.stock()["1"]
    assert (s["sold"], s["reserved"]) == (3, 0)
    st, _, t = http("GET", f"{shop.kitchen_admin}/tickets")
    assert [x["orderID"] for x in t["tickets"]].count(oid) == 1


def test_ready_before_paid_never_moves_backwards(make_shop):
    shop = make_shop(catalog=BIG, services=["stock", "orders", "payments", "gateway"])
    need(shop, "payments")
    st, _, body = shop.create("ooo", [{"productID": "2", "quantity": 1}])
    oid = body["order"]["orderID"]
    order = waiting_payment(shop, "ooo", oid)
    shop.publish("order.ready", dict(order, status="ready for pick-up"))
    shop.wait_status("ooo", oid, "ready for pick-up")
    late = shop.publish("order.paid", dict(order, status="paid"))
    wait_for(lambda: inbox_count(shop, "orders", late) == 1, 20, "orders to take the late order.paid")
    assert shop.get("ooo", oid)[2]["status"] == "ready for pick-up"
    s = shop.stock()["2"]
    assert (s["sold"], s["reserved"]) == (1, 0)  # committed once, by whichever came first


def test_failing_message_lands_in_dlq_after_max_retries(make_shop):
    shop = make_shop(catalog=BIG, services=["stock", "orders", "payments", "gateway"])
    need(shop, "payments")
    st, _, body = shop.create("dlq", [{"productID": "1", "quantity": 1}])
    oid = body["order"]["orderID"]
    order = waiting_payment(shop, "dlq", oid)
    assert shop.svc["stock"].stop() == 0  # committing the reservation now fails: UNAVAILABLE
    mid = shop.publish("order.paid", dict(order, status="paid"))
    wait_for(lambda: shop.queue("orders.order.paid.dlq")["messages"] == 1, 30, "the dead letter")
    msgs = shop.rabbit.get_messages("orders.order.paid.dlq", shop.vhost)
    assert len(msgs) == 1
    assert msgs[0]["properties"]["headers"]["message-id"] == mid
    assert msgs[0]["properties"]["headers"]["x-retry-count"] == 3  # MAX_RETRIES in the harness
    assert shop.get("dlq", oid)[2]["status"] == "waiting_payment"  # nothing applied
    # unparseable: straight to the dead-letter queue, no retries
    shop.publish("order.paid", "this is not json")
    wait_for(lambda: shop.queue("orders.order.paid.dlq")["messages"] == 2, 30, "the poison message")
    shop.restart("stock")


def test_broker_restart_loses_no_order(make_shop):
    shop = make_shop(catalog=BIG)
    need(shop, "payments", "kitchen")
    created = []
    for i in range(4):
        st, _, body = shop.create(f"r{i}", [{"productID": "1", "quantity": 1}])
        assert st == 201
        created.append((f"r{i}", body["order"]["orderID"]))
    shop.rabbit.stop()
    try:
        # The broker is down: orders are still accepted (the outbox holds the events).
        for i in range(4, 8):
            st, _, body = shop.create(f"r{i}", [{"productID": "1", "quantity": 1}])
            assert st == 201, body
            created.append((f"r{i}", body["order"]["orderID"]))
    finally:
        shop.rabbit.start()
    for cid, oid in created:
        pay(shop, waiting_payment(shop, cid, oid))
    for cid, oid in created:
        shop.wait_status(cid, oid, "ready for pick-up", timeout=60)
    s = shop.stock()["1"]
    assert (s["sold"], s["reserved"]) == (8, 0)


def test_consumer_workers_per_queue(make_shop):
    """CONSUMER_WORKERS consumers (own connection each) on every event queue of the
    services that consume: what lets payments keep several orders in flight."""
    shop = make_shop(catalog=BIG, env={"CONSUMER_WORKERS": 3})
    need(shop, "payments", "kitchen")
    for q in ("payments.order.created", "payments.order.cancelled", "orders.order.paid",
              "orders.order.ready", "kitchen.order.paid"):
        wait_for(lambda: (shop.rabbit.queue(q, shop.vhost) or {}).get("consumers") == 3, 20,
                 f"3 consumers on {q}")
