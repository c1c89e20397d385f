import os
import shutil
import tempfile

import pytest

from oms_harness import RabbitMQ, Shop, grpc_stubs, serve_shop, stop_etcd, stop_postgres

SEED_CATALOG = None  # default data/catalog.json


@pytest.fixture(scope="session")
def workdir():
    d = tempfile.mkdtemp(prefix="oms-test-")
    yield d
    if os.environ.get("OMS_KEEP_TEST_DIR"):
        print(f"test dir kept: {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def postgres_session():
    """Stops the session's PostgreSQL server and etcd node after the last test; each
    starts on first use (a shop with db="postgres", i.e. every shop under
    OMS_TEST_DB=postgres; a shop with discovery="etcd")."""
    yield
    stop_postgres()
    stop_etcd()


@pytest.fixture(scope="session")
def rabbit(workdir):
    r = RabbitMQ(workdir)
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def pb(workdir):
    return grpc_stubs(os.path.join(workdir, "pystubs"))


def _shop(rabbit, workdir, request, **kw):
    s = Shop(rabbit, workdir, **kw)
    try:
        s.start()
    except Exception:
        s.stop()
        print(s.logs())
        raise
    return s


@pytest.fixture
def make_shop(rabbit, workdir, request):
    """Factory: make_shop(catalog=..., env=...) -> a started Shop, stopped after the test;
    each service must exit 0 (clean shutdown; under ASan also: no leaks)."""
    shops = []

    def factory(**kw):
        s = _shop(rabbit, workdir, request, **kw)
        shops.append(s)
        return s

    yield factory
    failed = []
    for s in shops:
        codes = s.stop()
        bad = {n: c for n, c in codes.items() if c != 0}
        if bad:
            failed.append((bad, s.logs()))
    if failed:
        pytest.fail("services did not stop cleanly: " + "; ".join(f"{b}\n{logs}" for b, logs in failed))


@pytest.fixture(scope="module")
def shop(rabbit, workdir, request):
    """One shop with the default catalog shared by a module's tests."""
    yield from serve_shop(rabbit, workdir)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Print the services' logs when a test fails, so CI output says why.
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for name in ("shop",):
            s = item.funcargs.get(name)
            if s is not None:
                rep.sections.append(("service logs", s.logs()))
