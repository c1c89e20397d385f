"""The web pages in a real browser (README "Web pages"): Debian's chromium, headless, driven by
npm playwright-core. Each test runs one scenario script against the module's shop:
  node tests/browser/<scenario>.mjs <gateway URL> <screenshot dir>
and passes when it exits 0. Every scenario saves screenshots (failures too)."""
import os
import subprocess

from oms_harness import http, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
NODE = os.environ.get("OMS_NODE", "node")
TIMEOUT = int(os.environ.get("OMS_BROWSER_SCENARIO_S", "300"))


def run(name, shop, shots, *extra):
    script = os.path.join(HERE, f"{name}.mjs")
    try:
        p = subprocess.run([NODE, script, shop.gateway, shots, *extra], cwd=HERE, capture_output=True,
                           text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{name}: no result after {TIMEOUT}s\n{e.stdout or ''}\n{e.stderr or ''}")
    print(p.stdout)
    assert p.returncode == 0, f"{name} exited {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
    assert "ok (" in p.stdout, p.stdout
    return p.stdout


def test_order_pay_and_pick_up(shop, shots):
    run("journey", shop, shots)


def test_out_of_stock_message_names_the_product(shop, shots):
    run("out_of_stock", shop, shots)


def test_cancel_before_payment(shop, shots):
    run("cancel", shop, shots)
    wait_for(lambda: shop.stock()["4"]["reserved"] == 0, 10, "the cancelled order's stock released")


def test_my_orders_pages(shop, shots):
    run("orders", shop, shots)


def test_pages_at_phone_width(shop, shots):
    run("phone", shop, shots)


def test_backoffice_menu_and_stock(shop, shots):
    run("backoffice_stock", shop, shots)
    # What the pages did is what stock recorded: one audit row per change, none for
    # the refused dish or the refused count.
    actions = [shop.scalar("stock", "SELECT action FROM stock_audit WHERE subject = ? ORDER BY id LIMIT 1 OFFSET ?",
                           ("pea-soup", i)) for i in range(5)]
    assert actions == ["product.create", "stock.adjust", "product.update", "product.update", None], actions


def staff_cookie(shop):
    """A staff session for API calls from the test (the display's data is staff-only)."""
    from conftest import STAFF_PASSWORD
    st, hdrs, body = http("POST", shop.gateway + "/staff/login", {"name": "admin", "password": STAFF_PASSWORD})
    assert st == 200, body
    return {"Cookie": hdrs["Set-Cookie"].split(";", 1)[0]}


def test_kitchen_display_when_kitchen_is_down(shop, shots):
    cookie = staff_cookie(shop)
    kitchen = shop.svc["kitchen"]
    assert kitchen.stop() == 0
    try:
        st, hdrs, body = http("GET", shop.gateway + "/api/kitchen/tickets", headers=cookie)
        # A generic answer: the detail (the kitchen's internal address) stays in the log.
        assert st == 503 and "unavailable" in body["error"], (st, body)
        assert "127.0.0.1" not in str(body) and len(body.get("traceID", "")) == 32, body
        assert hdrs.get("Retry-After"), hdrs
        run("kitchen_down", shop, shots)
    finally:
        shop.restart("kitchen")
    st, _, body = http("GET", shop.gateway + "/api/kitchen/tickets", headers=cookie)
    assert st == 200 and isinstance(body["tickets"], list) and body["now"], body


def test_backoffice_orders_refund_today_audit(shop, shots):
    run("backoffice_orders", shop, shots)


def test_status_page_live_and_without_stream(shop, shots):
    run("live_status", shop, shots)
