"""deploy/docker-compose.yaml against the services themselves. No container
engine runs here, so the images are never built; instead every variable the compose
file sets must exist in that service's configuration table (`oms-<svc> --help` prints
it), every value must pass the table's validation (the binary is started with that
environment), and the ports must agree: the original's published ports, the listen
addresses, and the addresses other services dial; nothing internal (gRPC, admin,
broker, etcd, PostgreSQL) is published, and the broker user is not guest."""
import os
import re
import subprocess
from urllib.parse import urlparse

import pytest

from oms_harness import BUILD, SRC, free_port

yaml = pytest.importorskip("yaml")  # Debian python3-yaml (scripts/deps.sh)

COMPOSE = os.path.join(SRC, "deploy", "docker-compose.yaml")
OURS = ["gateway", "orders", "stock", "payments", "kitchen"]
# The original's ports: HTTP 8080 (gateway), 8081 (payments), gRPC 2000 orders,
# 2001 payments, 2002 stock, 2003 kitchen. Only the two HTTP ones are published.
ORIGINAL_PORTS = {
    "gateway": {"HTTP_ADDR": 8080},
    "orders": {"GRPC_ADDR": 2000},
    "payments": {"GRPC_ADDR": 2001, "PAYMENTS_HTTP_ADDR": 8081},
    "stock": {"GRPC_ADDR": 2002},
    "kitchen": {"GRPC_ADDR": 2003},
}


@pytest.fixture(scope="module")
def compose():
    with open(COMPOSE) as f:
        return yaml.safe_load(f)


def config_table(svc):
    """Variable names (and aliases) from `oms-<svc> --help`."""
    exe = os.path.join(BUILD, f"oms-{svc}")
    if not os.path.exists(exe):
        pytest.skip(f"oms-{svc} not built")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10, check=True).stdout
    names = set()
    for line in out.splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]+)\s", line)
        if m and m.group(1) != "NAME":
            names.add(m.group(1))
        names.update(re.findall(r"\[alias: ([A-Z0-9_]+)\]", line))
    assert len(names) > 5, out
    return names


def env_of(compose, svc):
    env = compose["services"][svc].get("environment") or {}
    assert isinstance(env, dict), f"{svc}: write environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def interpolated(value):
    """A value as compose would pass it: ${VAR:-default} -> default, ${VAR:?msg} and
    ${VAR} -> a stand-in for the secret deploy/.env provides."""
    def sub(m):
        body = m.group(1)
        if ":-" in body:
            return body.split(":-", 1)[1]
        return "stand-in-secret"
    return re.sub(r"\$\{([^}]*)\}", sub, value)


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def test_every_service_is_there(compose):
    services = compose["services"]
    for name in OURS + ["rabbitmq", "postgres", "etcd", "jaeger"]:
        assert name in services, name
    assert "management" in services["rabbitmq"]["image"]
    assert services["jaeger"]["image"].startswith("jaegertracing/all-in-one")
    for svc in OURS:
        assert services[svc]["command"] == [f"oms-{svc}"], svc
        assert services[svc]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert os.path.exists(os.path.join(SRC, "deploy", "Dockerfile"))


@pytest.mark.parametrize("svc", OURS)
def test_every_variable_exists_in_the_config_table(compose, svc):
    table = config_table(svc)
    unknown = sorted(set(env_of(compose, svc)) - table)
    assert not unknown, f"{svc} does not read {unknown}"


@pytest.mark.parametrize("svc", OURS)
def test_values_pass_the_services_validation(compose, svc, tmp_path):
    """The service loads its table with the compose values (a bad value would stop it
    with exit 2 and a line naming the variable). It then fails later, on purpose:
    nothing listens at those hosts here, so we only look for a config error."""
    exe = os.path.join(BUILD, f"oms-{svc}")
    if not os.path.exists(exe):
        pytest.skip(f"oms-{svc} not built")
    env = {"PATH": os.environ.get("PATH", "")}
    env.update({k: interpolated(v) for k, v in env_of(compose, svc).items()})
    # Keep the probe local and short-lived: private loopback ports (the real ones may
    # be in use by a running shop), no reachable dependencies.
    for k, v in list(env.items()):
        if k.endswith("_ADDR") and v.startswith("0.0.0.0:"):
            env[k] = f"127.0.0.1:{free_port()}"
    env["DATABASE_URL"] = str(tmp_path / f"{svc}.db")
    env["DISCOVERY"] = "static"
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = ""
    p = subprocess.Popen([exe], env=env, cwd=SRC, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        p.terminate()
        out, _ = p.communicate(timeout=20)
    assert "config:" not in out, out
    assert p.returncode != 2, out


def test_ports_match_the_original_and_each_other(compose):
    services = compose["services"]
    for svc, want in ORIGINAL_PORTS.items():
        env = env_of(compose, svc)
        published = {}
        for p in services[svc].get("ports", []):
            host, container = str(p).split(":")[-2:]
            published[int(container)] = int(host)
        for var, port in want.items():
            assert port_of(env[var]) == port, (svc, var, env[var])
        public = {want[v] for v in ("HTTP_ADDR", "PAYMENTS_HTTP_ADDR") if v in want}
        assert published == {p: p for p in public}, (svc, "publishes", published)

    # Addresses a service dials match the listener of the service it names.
    def listen(svc, var="GRPC_ADDR"):
        return port_of(env_of(compose, svc)[var])

    for svc in OURS:
        env = env_of(compose, svc)
        for var, target in (("ORDERS_ADDRS", "orders"), ("STOCK_ADDRS", "stock")):
            if var in env:
                for addr in env[var].split(","):
                    host, port = addr.rsplit(":", 1)
                    assert host == target and int(port) == listen(target), (svc, var, addr)
        if "KITCHEN_ADMIN_URL" in env:
            u = urlparse(env["KITCHEN_ADMIN_URL"])
            assert u.hostname == "kitchen" and u.port == listen("kitchen", "ADMIN_ADDR"), env["KITCHEN_ADMIN_URL"]
        if "RABBITMQ_HOST" in env:
            assert env["RABBITMQ_HOST"] == "rabbitmq"
            assert "5672:5672" in [str(p) for p in services["rabbitmq"]["ports"]] or env["RABBITMQ_PORT"] == "5672"
        if "DATABASE_URL" in env:
            u = urlparse(env["DATABASE_URL"])
            assert u.scheme == "postgres" and u.hostname == "postgres" and u.port == 5432, env["DATABASE_URL"]
            # Each service has its own database, created by deploy/postgres-init.sql.
            assert u.path == "/" + svc
            with open(os.path.join(SRC, "deploy", "postgres-init.sql")) as f:
                assert f"CREATE DATABASE {svc};" in f.read()
        if "ETCD_ENDPOINTS" in env:
            u = urlparse(env["ETCD_ENDPOINTS"])
            assert u.hostname == "etcd" and u.port == 2379
        if "OTEL_EXPORTER_OTLP_ENDPOINT" in env:
            u = urlparse(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
            assert u.hostname == "jaeger" and u.port == 4318
            assert "4318" not in str(services["jaeger"].get("ports", []))


def test_nothing_internal_is_published_and_the_broker_is_not_guest(compose):
    """gRPC, admin (metrics), broker, etcd and PostgreSQL stay on the compose network;
    operator UIs only on the host's loopback; secrets come from deploy/.env."""
    services = compose["services"]
    for name, svc in services.items():
        for p in svc.get("ports", []):
            parts = str(p).split(":")
            if name in ("gateway", "payments"):
                assert parts[-1] in ("8080", "8081"), (name, p)
            else:
                assert len(parts) == 3 and parts[0] == "127.0.0.1", f"{name} publishes {p} beyond loopback"
                assert parts[-1] not in ("5672", "2379", "5432", "4318"), (name, p)
    for svc in ("orders", "payments", "kitchen"):
        env = env_of(compose, svc)
        assert env["RABBITMQ_USER"] != "guest", svc
        assert env["RABBITMQ_PASSWORD"].startswith("${"), "the broker password comes from deploy/.env"
    rabbit = services["rabbitmq"]["environment"]
    assert rabbit["RABBITMQ_DEFAULT_USER"] == env_of(compose, "orders")["RABBITMQ_USER"]
    assert "oms:oms@" not in open(COMPOSE).read()
    gw = env_of(compose, "gateway")
    assert gw["OMS_ADMIN_PASSWORD"].startswith("${") and gw["DATABASE_URL"].startswith("postgres://")
    with open(os.path.join(SRC, "deploy", "env.example")) as f:
        example = f.read()
    for var in ("OMS_RABBITMQ_PASSWORD", "OMS_POSTGRES_PASSWORD", "OMS_ADMIN_PASSWORD"):
        assert f"{var}=" in example, var
