#!/usr/bin/python3
"""Profile of the create-order path under callgrind (perf has no hardware counters on
this machine: `perf stat -e instructions true` says <not supported>).

Starts the broker and the five services like bench.py, with gateway, orders, stock and
payments under `valgrind --tool=callgrind`, warms up, zeroes the counters, creates a
fixed number of orders (the open-loop driver at a low rate, so every order is
complete with its asynchronous part: outbox relay, payments, UpdateOrder), stops the
services and writes per-service summaries (instructions per order, top functions
inclusive and self) to bench/results/profile/.

  bench/profile.py [ORDERS]      (default 400; RelWithDebInfo build recommended)
  bench/profile.py --perf [SECS] wall-clock view instead: the services run normally
                                 under wrk -t2 -c32 (create order) and `perf record -e
                                 cpu-clock -a -g` samples the whole machine (software
                                 clock: works without hardware counters); writes the
                                 split by process / library / symbol, kernel included.
"""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402

H = B.H
PROFILED = ["gateway", "orders", "stock", "payments"]


def perf_main(secs):
    root = tempfile.mkdtemp(prefix="oms-perf-")
    outdir = os.path.join(B.HERE, "results", "profile")
    os.makedirs(outdir, exist_ok=True)
    data = os.path.join(root, "perf.data")
    rabbit = B.Rabbit(root)
    shop = None
    try:
        rabbit.start()
        shop = H.Shop(rabbit, root, catalog=B.catalog(), env={"LOG_LEVEL": "warn", "KITCHEN_COOK_MS": 0})
        shop.vhost = "/"
        shop.start()
        B.wrk(shop.gateway, os.path.join(B.HERE, "create_order.lua"), 2)
        B.drain(shop, 60)
        B.log(f"perf record during {secs} s of wrk -t2 -c32 create order")
        perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-a", "-g", "-o", data],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            r = B.wrk(shop.gateway, os.path.join(B.HERE, "create_order.lua"), secs)
        finally:
            perf.send_signal(2)
            perf.wait(60)
        B.log(f"load: {r}")
        B.drain(shop, 60)
    finally:
        if shop:
            shop.stop()
        rabbit.stop()
    report = []
    for title, args in (("by process", ["--sort", "comm"]),
                        ("by process and library", ["--sort", "comm,dso"]),
                        ("by symbol (self)", ["--sort", "comm,dso,sym"])):
        out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none",
                              "--percent-limit", "0.7", *args], capture_output=True, text=True).stdout
        report.append(f"== {title}")
        report += [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("#")][:45]
    text = "\n".join(report)
    with open(os.path.join(outdir, "perf-summary.txt"), "w") as f:
        f.write(text + "\n")
    print(text)
    shutil.rmtree(root, ignore_errors=True)


def main():
    need = "perf" if len(sys.argv) > 1 and sys.argv[1] == "--perf" else "valgrind"
    if not shutil.which(need) or (need == "valgrind" and not shutil.which("callgrind_annotate")):
        print(f"profile: needs {need} (Debian: {'linux-perf' if need == 'perf' else 'valgrind'})", file=sys.stderr)
        return 1
    if len(sys.argv) > 1 and sys.argv[1] == "--perf":
        return perf_main(float(sys.argv[2]) if len(sys.argv) > 2 else 8)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    rate = 50
    root = tempfile.mkdtemp(prefix="oms-profile-")
    outdir = os.path.join(B.HERE, "results", "profile")
    os.makedirs(outdir, exist_ok=True)
    wrap = os.path.join(root, "wrap")
    os.makedirs(wrap)
    for name in B.H.Shop.SERVICES:
        exe = os.path.join(B.BUILD, f"oms-{name}")
        with open(os.path.join(wrap, f"oms-{name}"), "w") as f:
            if name in PROFILED:
                f.write(f"#!/bin/sh\nexec valgrind --tool=callgrind --quiet --callgrind-out-file={root}/cg.{name}.out "
                        f"{exe} \"$@\"\n")
            else:
                f.write(f"#!/bin/sh\nexec {exe} \"$@\"\n")
        os.chmod(os.path.join(wrap, f"oms-{name}"), 0o755)
    H.BUILD = wrap
    rabbit = B.Rabbit(root)
    shop = None
    try:
        rabbit.start()
        shop = H.Shop(rabbit, root, catalog=B.catalog(),
                      env={"LOG_LEVEL": "warn", "KITCHEN_COOK_MS": 0, "GRPC_TIMEOUT_MS": 30000})
        shop.vhost = "/"
        for name in shop.wanted:
            svc = shop.make(name).start(wait=False)
            shop.svc[name] = svc
            svc.wait_healthy(timeout=120)
        B.log("warm-up (50 orders)")
        B.tool("bench_http_open", "-u", shop.gateway, "-r", 25, "-d", 2, "-c", 4, timeout=120)
        B.drain(shop, 120)
        for name in PROFILED:
            subprocess.run(["callgrind_control", "-z", str(shop.svc[name].proc.pid)], capture_output=True)
        B.log(f"profiling {n} orders at {rate}/s")
        r = B.tool("bench_http_open", "-u", shop.gateway, "-r", rate, "-d", n / rate, "-c", 8, timeout=600)
        B.log(f"load: {r}")
        B.drain(shop, 300)
        done = r.get("ok") or n
    finally:
        if shop:
            for s in reversed(list(shop.svc.values())):
                s.stop(timeout=120)
        rabbit.stop()
    report = []
    for name in PROFILED:
        out = os.path.join(root, f"cg.{name}.out")
        if not os.path.exists(out):
            report.append(f"== {name}: no profile")
            continue
        shutil.copyfile(out, os.path.join(outdir, f"callgrind.{name}.out"))
        incl = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=99", out],
                              capture_output=True, text=True).stdout
        excl = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", out],
                              capture_output=True, text=True).stdout
        total = 0
        for line in excl.splitlines():
            if "PROGRAM TOTALS" in line:
                total = int(line.split()[0].replace(",", ""))
        report.append(f"== {name}: {total:,} instructions, {total / done:,.0f} per order ({done} orders)")
        report.append("-- inclusive (top 40)")
        report += [ln for ln in incl.splitlines() if ln.strip() and ln.lstrip()[0].isdigit()][:40]
        report.append("-- self (top 30)")
        # (callgrind books the counters zeroed mid-run on the thread entry frames: skip them)
        report += [ln for ln in excl.splitlines() if ln.strip() and ln.lstrip()[0].isdigit()
                   and "clone.S:clone" not in ln and "start_thread" not in ln][:30]
    text = "\n".join(report)
    with open(os.path.join(outdir, "summary.txt"), "w") as f:
        f.write(text + "\n")
    print(text)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
