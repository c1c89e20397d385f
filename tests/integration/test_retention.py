"""Outbox and inbox retention: with short OUTBOX_RETENTION_S / INBOX_RETENTION_S the
relay deletes sent events and processed message ids once they are old enough, and
counts them; with the defaults a fresh journey's rows are all still there."""
from obs_helpers import metric_sum, parse_metrics, scrape
from oms_harness import http, wait_for

BIG = {"currency": "usd", "products": [
    {"productID": "1", "name": "Cheese", "priceID": "price_cheese", "unitPrice": 450, "quantity": 100},
]}


def journey(shop, customer):
    st, _, body = shop.create(customer, [{"productID": "1", "quantity": 1}])
    assert st == 201, body
    oid = body["order"]["orderID"]
    order = shop.wait_status(customer, oid, "waiting_payment")
    st, _, page = http("POST", order["PaymentLink"] + "/pay", b"")
    assert st == 200, (st, page)
    shop.wait_status(customer, oid, "ready for pick-up")
    return oid


def rows(shop, service, table):
    return shop.scalar(service, f"SELECT count(*) FROM {table}")


def test_old_rows_are_pruned(make_shop):
    shop = make_shop(catalog=BIG, env={"KITCHEN_COOK_MS": 0, "OUTBOX_RETENTION_S": 2,
                                       "INBOX_RETENTION_S": 2})
    journey(shop, "keep-short")
    # Each of the three wrote events and took some; the counters below show that rows
    # existed and went, the tables that none is left.
    for svc in ("orders", "payments", "kitchen"):
        wait_for(lambda: rows(shop, svc, "outbox") == 0 and rows(shop, svc, "inbox") == 0, 30,
                 f"{svc} to prune its outbox and inbox")
    samples = parse_metrics(scrape(shop.orders_admin))
    assert metric_sum(samples, "retention_pruned_total", table="outbox") >= 1
    assert metric_sum(samples, "retention_pruned_total", table="inbox") >= 1
    # pruning did not disturb anything: the next order goes the whole way
    journey(shop, "keep-short-2")


def test_default_retention_keeps_recent_rows(make_shop):
    shop = make_shop(catalog=BIG, env={"KITCHEN_COOK_MS": 0})
    journey(shop, "keep-default")
    assert rows(shop, "orders", "outbox") >= 1
    assert rows(shop, "orders", "inbox") >= 2  # order.paid, order.cooking, order.ready ...
    assert rows(shop, "payments", "inbox") >= 1
