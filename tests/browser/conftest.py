"""Fixtures for the browser tests: one shop (private RabbitMQ node + the five real
services on private loopback ports, SQLite files in a temporary directory) shared by
the module, stopped afterwards also when a test fails."""
import os
import shutil
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from oms_harness import BUILD, RabbitMQ, Shop  # noqa: E402

# The staff account the scenarios sign in with (the gateway creates it at first start).
STAFF_PASSWORD = "browser-test-staff-pw"
os.environ["OMS_STAFF_PASSWORD"] = STAFF_PASSWORD

# Enough of everything for the scenarios, except Chocolate (7: the out-of-stock
# scenario) and Truffle cake (0: shown as sold out).
CATALOG = {"currency": "usd", "products": [
    {"productID": "1", "name": "Cheese", "priceID": "price_cheese", "unitPrice": 450, "quantity": 500},
    {"productID": "2", "name": "Chocolate", "priceID": "price_chocolate", "unitPrice": 250, "quantity": 7},
    {"productID": "3", "name": "Sourdough bread", "priceID": "price_bread", "unitPrice": 520, "quantity": 500},
    {"productID": "4", "name": "Flat white", "priceID": "price_flat_white", "unitPrice": 380, "quantity": 500},
    {"productID": "5", "name": "Truffle cake", "priceID": "price_truffle", "unitPrice": 900, "quantity": 0},
    {"productID": "6", "name": "Apple pie", "priceID": "price_apple_pie", "unitPrice": 640, "quantity": 500},
]}


@pytest.fixture(scope="session")
def shots():
    """The screenshot directory (OMS_BROWSER_SHOTS, default $OMS_BUILD_DIR/browser-shots),
    emptied of the previous run's pictures."""
    d = os.environ.get("OMS_BROWSER_SHOTS") or os.path.join(BUILD, "browser-shots")
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.endswith(".png"):
            os.unlink(os.path.join(d, f))
    return d


@pytest.fixture(scope="module")
def shop():
    workdir = tempfile.mkdtemp(prefix="oms-browser-")
    rabbit = RabbitMQ(workdir)
    s = None
    codes = {}
    try:
        rabbit.start()
        s = Shop(rabbit, workdir, catalog=CATALOG, env={"KITCHEN_COOK_MS": 1500, "LOG_LEVEL": "info",
                                                     "KITCHEN_SLA_MS": 20000, "PICKUP_WINDOW": 4,
                                                     "OMS_ADMIN_PASSWORD": STAFF_PASSWORD})
        missing = [n for n in Shop.SERVICES if n not in s.wanted]
        if missing:
            pytest.fail(f"services not built in {BUILD}: {missing}")
        try:
            s.start()
        except Exception:
            print(s.logs())
            raise
        yield s
    finally:
        if s is not None:
            codes = s.stop()
        rabbit.stop()
        logs = s.logs() if s is not None else ""
        if os.environ.get("OMS_KEEP_TEST_DIR"):
            print(f"test dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    bad = {n: c for n, c in codes.items() if c != 0}
    assert not bad, f"services did not stop cleanly: {bad}\n{logs}"


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # The services' logs go with a failure, so CI output says why.
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        s = item.funcargs.get("shop")
        if s is not None:
            rep.sections.append(("service logs", s.logs()))
