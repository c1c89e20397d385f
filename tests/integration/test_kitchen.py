"""The kitchen over the real system (issue: kitchen): order.paid published into the
real broker -> kitchen ticket -> order.cooking / order.ready -> orders shows
"ready for pick-up". Payments is bypassed: the tests publish order.paid themselves
with amqp-tools, the way payments' outbox relay would."""
import json
import re
import uuid

from oms_harness import http, wait_for

CUSTOMER = "kitchen-cust"


def publish_paid(shop, body, message_id=None):
    """Publishes order.paid into this shop's vhost (persistent, message-id header), the
    way payments' outbox relay would. Returns the message id."""
    return shop.publish("order.paid", body, message_id=message_id)


def metric(shop, name, **labels):
    """The value of one series on the kitchen's /metrics; 0 when the series is absent."""
    st, _, text = http("GET", shop.kitchen_admin + "/metrics")
    assert st == 200, text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{want}}}" if want else name
    for line in text.splitlines():
        m = re.match(r"^(\S+)\s+(\S+)$", line)
        if m and m.group(1) == series:
            return float(m.group(2))
    return 0.0


def ticket(shop, order_id):
    st, headers, body = http("GET", f"{shop.kitchen_admin}/tickets/{order_id}")
    return st, headers, body


def new_paid_order(shop, items=None):
    """Creates an order through the gateway and returns it as order.paid's body."""
    st, _, body = shop.create(CUSTOMER, items or [{"productID": "1", "quantity": 1}])
    assert st == 201, body
    order = body["order"]
    if "payments" in shop.svc:
        # Let payments attach its link first, so our paid event is not overtaken by a
        # waiting_payment update (which orders would then refuse as a move backwards).
        shop.wait_status(CUSTOMER, order["orderID"], "waiting_payment")
        order = shop.get(CUSTOMER, order["orderID"])[2]
    return dict(order, status="paid")


def wait_ready(shop, order_id, timeout=30):
    return shop.wait_status(CUSTOMER, order_id, "ready for pick-up", timeout=timeout)


def test_paid_order_becomes_ready_and_shows_on_tickets(make_shop):
    shop = make_shop()
    wait_for(lambda: http("GET", shop.kitchen_admin + "/readyz")[0] == 200, 30, "kitchen /readyz")
    paid = new_paid_order(shop, [{"productID": "1", "quantity": 2}, {"productID": "2", "quantity": 1}])
    oid = paid["orderID"]
    publish_paid(shop, paid)
    wait_ready(shop, oid)

    st, headers, body = http("GET", shop.kitchen_admin + "/tickets")
    assert st == 200, body
    assert headers.get("Access-Control-Allow-Origin") == "*"
    mine = [t for t in body["tickets"] if t["orderID"] == oid]
    assert len(mine) == 1, body
    t = mine[0]
    assert t["customerID"] == CUSTOMER
    assert t["state"] == "ready"
    assert t["items"] == [{"productName": "Cheese", "quantity": 2}, {"productName": "Chocolate", "quantity": 1}]
    for k in ("queuedAt", "startedAt", "readyAt"):
        assert isinstance(t[k], str) and t[k].endswith("Z"), t

    st, headers, one = ticket(shop, oid)
    assert st == 200 and one == t
    assert headers.get("Access-Control-Allow-Origin") == "*"
    st, _, missing = ticket(shop, "000000000000000000000000")
    assert st == 404 and "error" in missing
    assert metric(shop, "kitchen_tickets_total", state="ready") >= 1
    assert "kitchen_queue_depth" in http("GET", shop.kitchen_admin + "/metrics")[2]


def test_repeated_order_paid_cooks_once(make_shop):
    shop = make_shop()
    paid = new_paid_order(shop)
    oid = paid["orderID"]
    ready0 = metric(shop, "kitchen_tickets_total", state="ready")
    new0 = metric(shop, "kitchen_paid_events_total", result="new")
    dup0 = metric(shop, "kitchen_paid_events_total", result="duplicate")
    pub0 = metric(shop, "events_published_total", exchange="order.ready")

    mid = uuid.uuid4().hex
    publish_paid(shop, paid, mid)   # the original
    publish_paid(shop, paid, mid)   # a redelivery: same message id
    publish_paid(shop, paid)        # another event for the same order: new message id
    wait_for(lambda: metric(shop, "kitchen_paid_events_total", result="new") - new0
             + metric(shop, "kitchen_paid_events_total", result="duplicate") - dup0 >= 3,
             30, "the kitchen to handle all three deliveries")
    wait_ready(shop, oid)
    wait_for(lambda: metric(shop, "events_published_total", exchange="order.ready") > pub0, 30,
             "order.ready to be published")

    assert metric(shop, "kitchen_paid_events_total", result="new") - new0 == 1
    assert metric(shop, "kitchen_paid_events_total", result="duplicate") - dup0 == 2
    assert metric(shop, "kitchen_tickets_total", state="ready") - ready0 == 1
    assert metric(shop, "events_published_total", exchange="order.ready") - pub0 == 1
    st, _, body = http("GET", shop.kitchen_admin + "/tickets")
    assert st == 200
    assert [t["state"] for t in body["tickets"] if t["orderID"] == oid] == ["ready"]


def test_event_published_while_kitchen_down_waits_in_its_queue(make_shop):
    shop = make_shop()
    assert shop.svc["kitchen"].stop() == 0
    paid = new_paid_order(shop)
    oid = paid["orderID"]
    publish_paid(shop, paid)
    shop.wait_status(CUSTOMER, oid, "paid")  # orders got it; the kitchen is still down
    shop.restart("kitchen")
    wait_ready(shop, oid)
    st, _, t = ticket(shop, oid)
    assert st == 200 and t["state"] == "ready"


def test_restart_resumes_a_ticket_left_cooking(make_shop):
    shop = make_shop(env={"KITCHEN_COOK_MS": 60000})
    paid = new_paid_order(shop)
    oid = paid["orderID"]
    publish_paid(shop, paid)
    wait_for(lambda: ticket(shop, oid)[2].get("state") == "cooking", 30, "the ticket to be cooking")
    shop.wait_status(CUSTOMER, oid, "cooking")  # order.cooking went out before the stop

    kitchen = shop.svc["kitchen"]
    assert kitchen.stop() == 0  # SIGTERM mid-cooking: prompt and clean
    kitchen.env["KITCHEN_COOK_MS"] = "0"
    kitchen.start()
    wait_ready(shop, oid)
    st, _, t = ticket(shop, oid)
    assert st == 200 and t["state"] == "ready" and t["readyAt"]
    # The restarted process took the ticket again but did not announce cooking twice.
    assert metric(shop, "kitchen_tickets_total", state="cooking") == 1
    wait_for(lambda: metric(shop, "events_published_total", exchange="order.ready") == 1, 30,
             "order.ready to be published")
    assert metric(shop, "events_published_total", exchange="order.cooking") == 0


def test_garbage_order_paid_goes_to_dead_letter_queue(make_shop):
    shop = make_shop()
    dlq = "kitchen.order.paid.dlq"
    # The management API may list a queue declared a moment ago only a little later.
    before = wait_for(lambda: shop.queue(dlq), 30, f"{dlq} listed").get("messages") or 0
    invalid0 = metric(shop, "kitchen_paid_events_total", result="invalid")
    publish_paid(shop, "this is not an order")
    wait_for(lambda: metric(shop, "kitchen_paid_events_total", result="invalid") > invalid0, 30,
             "the kitchen to reject the message")
    # The management API's counters lag by a few seconds: poll with a deadline.
    wait_for(lambda: (shop.queue(dlq).get("messages") or 0) >= before + 1, 60,
             f"a message in {dlq}")
