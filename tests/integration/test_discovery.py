"""The etcd registry (DISCOVERY=etcd): an instance registers its gRPC address
under a lease it keeps alive, a clean stop removes it at once, a crash lets the lease
expire, and clients follow the set of live instances."""
import os
import signal

from oms_harness import etcd, wait_for


def test_register_and_clean_shutdown_removes_at_once(make_shop):
    shop = make_shop(services=["stock"], discovery="etcd")
    addr = shop.grpc_addr("stock")
    wait_for(lambda: shop.registered("stock") == [addr], 10, "stock to register")
    # Alive past several TTLs (2 s): the keepalive thread renews the lease.
    lease_ttl = 2
    deadline_checks = 0
    import time
    end = time.monotonic() + 2.5 * lease_ttl
    while time.monotonic() < end:
        assert shop.registered("stock") == [addr]
        deadline_checks += 1
        time.sleep(0.2)
    assert deadline_checks > 5
    svc = shop.svc["stock"]
    assert svc.stop() == 0
    # Revoked on the way out: gone the moment the process has exited.
    assert shop.registered("stock") == []


def test_crash_is_dropped_when_the_lease_expires(make_shop):
    shop = make_shop(services=["stock"], discovery="etcd")
    addr = shop.grpc_addr("stock")
    wait_for(lambda: shop.registered("stock") == [addr], 10, "stock to register")
    shop.svc["stock"].kill9()
    assert shop.registered("stock") == [addr]  # nobody revoked it
    wait_for(lambda: shop.registered("stock") == [], 2 + 3, "the lease to expire")
    # A restarted instance registers again.
    shop.restart("stock")
    wait_for(lambda: shop.registered("stock") == [addr], 10, "stock to register again")


def test_lost_registration_is_restored(make_shop):
    """If the key disappears under a live instance (lease revoked by an operator, etcd
    data lost), the keepalive notices the dead lease and registers again."""
    shop = make_shop(services=["stock"], discovery="etcd")
    addr = shop.grpc_addr("stock")
    wait_for(lambda: shop.registered("stock") == [addr], 10, "stock to register")
    e = etcd()
    leases = e.call("/v3/lease/leases", {}).get("leases", [])
    for lease in leases:
        e.call("/v3/lease/revoke", {"ID": lease["ID"]})
    wait_for(lambda: shop.registered("stock") == [], 2, "the key to go with its lease")
    wait_for(lambda: shop.registered("stock") == [addr], 5, "stock to register again")


def test_clients_follow_the_registry(make_shop):
    """The gateway resolves stock through etcd: with the only instance stopped it answers
    503, and once a stock instance on another port registers, requests work again
    without restarting the gateway."""
    shop = make_shop(services=["stock", "gateway"], discovery="etcd", instances={"stock": 2})
    wait_for(lambda: len(shop.registered("stock")) == 2, 10, "two stock instances")
    from oms_harness import http
    st, _, body = http("GET", shop.gateway + "/api/products")
    assert st == 200, body
    # Stop the second instance cleanly: the gateway keeps working on the first.
    assert shop.svc["stock-2"].stop() == 0
    wait_for(lambda: len(shop.registered("stock")) == 1, 5, "stock-2 to leave")
    for _ in range(10):
        st, _, body = http("GET", shop.gateway + "/api/products")
        assert st == 200, body
    # Now the first goes and the second comes back on its own port.
    assert shop.svc["stock"].stop() == 0
    shop.restart_instance("stock", 1)
    wait_for(lambda: shop.registered("stock") == [shop.grpc_addr("stock", 1)], 5, "stock-2 back")
    wait_for(lambda: http("GET", shop.gateway + "/api/products")[0] == 200, 10,
             "the gateway to follow the registry to stock-2")


def test_gateway_registers_its_http_address(make_shop):
    """The gateway registers too (service "gateway", its HTTP address), for whatever
    balances the shop's front; a clean stop removes it."""
    shop = make_shop(discovery="etcd")
    addr = shop.gateway.split("://", 1)[1]
    wait_for(lambda: shop.registered("gateway") == [addr], 10, "the gateway to register")
    assert shop.svc["gateway"].stop() == 0
    assert shop.registered("gateway") == []


def test_clients_follow_the_registry_by_watch(make_shop):
    """With the poll at its slowest (60 s), the gateway still follows stock to another
    instance within seconds: the etcd watch tells it at once."""
    shop = make_shop(services=["stock", "gateway"], discovery="etcd", instances={"stock": 2},
                     env={"DISCOVERY_POLL_MS": 60000})
    wait_for(lambda: len(shop.registered("stock")) == 2, 10, "two stock instances")
    from oms_harness import http
    assert http("GET", shop.gateway + "/api/products")[0] == 200
    assert shop.svc["stock-2"].stop() == 0
    assert shop.svc["stock"].stop() == 0
    wait_for(lambda: shop.registered("stock") == [], 5, "no stock registered")
    shop.restart_instance("stock", 1)
    wait_for(lambda: shop.registered("stock") == [shop.grpc_addr("stock", 1)], 5, "stock-2 back")
    wait_for(lambda: http("GET", shop.gateway + "/api/products")[0] == 200, 10,
             "the gateway to follow the watch to stock-2 (the poll would take 60 s)")
    log = open(shop.svc["gateway"].log_path, errors="replace").read()
    assert "discovery: instances changed" in log
