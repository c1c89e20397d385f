"""Helpers for the observability tests: a test OTLP/HTTP receiver, a Prometheus text
parser, and a raw grpc.health.v1 call (Debian's python3-grpcio has no health stubs)."""
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from oms_harness import http


class OtlpCollector:
    """An OTLP/HTTP JSON receiver on a free loopback port that keeps every POSTed
    ExportTraceServiceRequest. url is what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    def __init__(self):
        self.requests = []
        self.paths = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                with outer.lock:
                    outer.paths.append((self.path, self.headers.get("Content-Type")))
                    outer.requests.append(json.loads(raw))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self):
        """Every received span as a dict, with its resource's service.name added as
        "service" and its attributes flattened into "attrs"."""
        out = []
        with self.lock:
            reqs = list(self.requests)
        for req in reqs:
            for rs in req.get("resourceSpans", []):
                service = attr_value(rs.get("resource", {}).get("attributes", []), "service.name")
                for ss in rs.get("scopeSpans", []):
                    for s in ss.get("spans", []):
                        s = dict(s)
                        s["service"] = service
                        s["attrs"] = {a["key"]: attr_plain(a["value"]) for a in s.get("attributes", [])}
                        out.append(s)
        return out

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def attr_plain(v):
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    return v


def attr_value(attrs, key):
    for a in attrs:
        if a["key"] == key:
            return attr_plain(a["value"])
    return None


_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text -> {(name, frozenset(labels.items())): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        labels = frozenset(_LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def metric(samples, name, **labels):
    """The value of the series name{labels} (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def metric_sum(samples, name, **labels):
    """Sum over every series of name whose labels include the given ones."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def scrape(url):
    st, _, text = http("GET", url + "/metrics")
    assert st == 200, text
    return text


def grpc_health(port, timeout=2):
    """grpc.health.v1.Health/Check on 127.0.0.1:port: 1 SERVING, 2 NOT_SERVING."""
    import grpc
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check")
        raw = check(b"", timeout=timeout)  # HealthCheckRequest{} is zero bytes
    # HealthCheckResponse{status}: field 1 varint -> 0x08 <status>; absent means 0.
    return raw[1] if len(raw) >= 2 and raw[0] == 0x08 else 0
