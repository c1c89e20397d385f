"""Leak run (scripts/valgrind.sh): every service under valgrind memcheck over
a short workload (orders created, paid, cancelled, a few refused requests), then
SIGTERM. A service passes when it exits 0: valgrind runs with
--errors-for-leak-kinds=definite --error-exitcode=33, so a definite leak or any memory
error turns the exit code into 33. Prints each service's leak summary."""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import oms_harness  # noqa: E402
from oms_harness import RabbitMQ, Service, Shop, http, wait_for  # noqa: E402

VALGRIND = ["valgrind", "--tool=memcheck", "--leak-check=full", "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite", "--error-exitcode=33", "--num-callers=30", "--track-fds=no"]


class VgService(Service):
    def start(self, wait=True):
        exe = os.path.join(oms_harness.BUILD, f"oms-{self.name}")
        env = dict(os.environ)
        env.update({k: str(v) for k, v in self.env.items()})
        self.vglog = os.path.join(os.path.dirname(self.log_path), f"{self.name}.valgrind.log")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(VALGRIND + [f"--log-file={self.vglog}", exe], env=env, cwd=oms_harness.SRC,
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if wait:
            self.wait_healthy(timeout=240)  # memcheck is ~30x slower to start
        return self


class VgShop(Shop):
    def make(self, name):
        return VgService(name, self.env_for(name), self.dir, health_url=self.health_url(name))


def workload(shop):
    """Each code path a request can take once or twice: created, paid to ready, cancelled,
    refused (400/404/415), a forged webhook, the pages."""
    done = []
    for i, pay in enumerate((True, True, False)):
        st, _, body = shop.create(f"vg{i}", [{"productID": "1", "quantity": 1}, {"productID": "2", "quantity": 1}])
        assert st == 201, body
        oid = body["order"]["orderID"]
        order = shop.wait_status(f"vg{i}", oid, "waiting_payment", timeout=120)
        if pay:
            st, _, _ = http("POST", order["PaymentLink"] + "/pay", b"", timeout=60)
            assert st == 200, st
            done.append((f"vg{i}", oid, "ready for pick-up"))
        else:
            st, _, _ = http("POST", f"{shop.gateway}/api/customers/vg{i}/orders/{oid}/cancel", timeout=60)
            assert st == 200, st
            done.append((f"vg{i}", oid, "cancelled"))
    for cid, oid, status in done:
        shop.wait_status(cid, oid, status, timeout=180)
    assert shop.create("vg", None, raw='{"items":[{"productID":"1","quantity":0}]}',
                       headers={"Content-Type": "application/json"})[0] == 400
    assert shop.create("vg", None, raw='{"items":', headers={"Content-Type": "application/json"})[0] == 400
    assert shop.create("vg", [{"productID": "nope", "quantity": 1}])[0] == 404
    assert shop.get("mallory", done[0][1])[0] == 404
    assert http("POST", shop.payments + "/webhook", b'{"id":"evt_x"}',
                headers={"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=00"}, timeout=60)[0] == 400
    assert http("GET", shop.gateway + "/", timeout=60)[0] == 200
    assert http("GET", shop.gateway + "/api/products", timeout=60)[0] == 200
    assert http("GET", shop.kitchen_admin + "/tickets", timeout=60)[0] == 200
    shop.publish("order.paid", "poison {")  # the dead-letter path


def main():
    root = tempfile.mkdtemp(prefix="oms-valgrind-")
    rabbit = RabbitMQ(root)
    shop = None
    failures = []
    try:
        rabbit.start()
        shop = VgShop(rabbit, root, env={"LOG_LEVEL": "info", "GRPC_TIMEOUT_MS": 30000})
        shop.start()
        t0 = time.monotonic()
        workload(shop)
        print(f"valgrind: workload done in {time.monotonic() - t0:.0f}s", flush=True)
    except Exception as e:  # noqa: BLE001
        failures.append(f"workload: {type(e).__name__}: {e}")
    finally:
        codes = {}
        if shop:
            for name in reversed(list(shop.svc)):
                codes[name] = shop.svc[name].stop(timeout=300)
        rabbit.stop()
    for name, code in codes.items():
        vglog = shop.svc[name].vglog
        with open(vglog) as f:
            text = f.read()
        summary = re.findall(r"(definitely lost|indirectly lost|possibly lost|still reachable): ([\d,]+) bytes", text)
        errors = re.search(r"ERROR SUMMARY: (\d+) errors", text)
        print(f"valgrind: {name:9s} exit {code}  " + ", ".join(f"{k} {v} B" for k, v in summary) +
              (f"; {errors.group(1)} errors" if errors else "") + ("" if summary else " (no leaks possible: all freed)"))
        if code != 0:
            failures.append(f"{name}: exit {code} (see {vglog})")
    if failures:
        print("valgrind: FAILED\n  " + "\n  ".join(failures))
        print(f"logs kept in {root}")
        return 1
    shutil.rmtree(root, ignore_errors=True)
    print("valgrind: no definite leaks, no memory errors, every service exited 0")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
