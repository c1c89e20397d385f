"""Who may see what, on one shop: staff sign-in (the kitchen display, any customer's
order list, the session cookie, sign-out, cross-site requests, brute force, oms-staff
managing accounts in the gateway's own database, SQLite or PostgreSQL) and customers'
bearer tokens from an OIDC issuer (a JWKS file; tokens minted here with python3-jwt)."""
import http.client as httpclient
import json
import os
import re
import subprocess
import time
import urllib.parse

import pytest

from oms_harness import BUILD, http, serve_shop, wait_for

ADMIN_PW = "staff-test-admin-pw"
ISSUER, AUDIENCE = "https://id.shop.test/", "oms-shop"


@pytest.fixture(scope="module")
def issuer(workdir):
    """An RSA signing key of the 'identity provider' and its JWKS file."""
    jwt = pytest.importorskip("jwt")
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    path = os.path.join(workdir, "jwks.json")
    with open(path, "w") as f:
        json.dump({"keys": [jwk]}, f)

    def token(sub, **over):
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300}
        claims.update(over)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    token.jwt, token.path = jwt, path
    return token


@pytest.fixture(scope="module")
def shop(rabbit, workdir, issuer):
    yield from serve_shop(rabbit, workdir, env={
        "OMS_ADMIN_PASSWORD": ADMIN_PW, "AUTH_ISSUER": ISSUER, "AUTH_AUDIENCE": AUDIENCE,
        "AUTH_JWKS_FILE": issuer.path})


def request(shop, method, path, body=None, headers=None):
    """Raw request (no redirect following, every header kept): (status, headers, body)."""
    u = urllib.parse.urlsplit(shop.gateway)
    conn = httpclient.HTTPConnection(u.hostname, u.port, timeout=20)
    try:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        hdrs = dict(headers or {})
        if data is not None and "Content-Type" not in hdrs:
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        raw = r.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return r.status, r.getheaders(), parsed
    finally:
        conn.close()


def header(headers, name):
    return [v for k, v in headers if k.lower() == name.lower()]


def login(shop, name="admin", password=ADMIN_PW):
    st, hdrs, body = request(shop, "POST", "/staff/login", {"name": name, "password": password})
    assert st == 200 and body == {"name": name}, (st, body)
    cookie = header(hdrs, "Set-Cookie")[0]
    m = re.match(r"oms_staff=([0-9a-f]{64});", cookie)
    assert m, cookie
    return {"Cookie": f"oms_staff={m.group(1)}"}, cookie


def oms_staff(shop, *args, password=None):
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": shop.database_url("gateway")}
    for k in ("LSAN_OPTIONS", "ASAN_OPTIONS", "UBSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    return subprocess.run([os.path.join(BUILD, "oms-staff"), *args], env=env, capture_output=True, text=True,
                          input=None if password is None else password + "\n", timeout=60)


def test_strangers_see_no_staff_data(shop):
    st, _, body = request(shop, "GET", "/api/kitchen/tickets")
    assert st == 401 and "sign in" in body["error"], (st, body)
    st, _, body = request(shop, "GET", "/api/customers/someone/orders")
    assert st == 401, (st, body)
    st, hdrs, _ = request(shop, "GET", "/kitchen", headers={"Accept": "text/html"})
    assert st in (302, 303) and header(hdrs, "Location")[0] == "/staff/login.html?next=/kitchen"
    st, _, body = request(shop, "GET", "/api/staff/me")
    assert st == 401
    # The original's calls stay open: create and read by order id.
    st, _, body = shop.create("walk-in", [{"productID": "1", "quantity": 1}])
    assert st == 201
    assert shop.get("walk-in", body["order"]["orderID"])[0] == 200


def test_sign_in_session_and_sign_out(shop):
    cookie, raw = login(shop)
    for attr in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert attr in raw, raw
    assert "Secure" not in raw  # PUBLIC_URL is http here
    st, _, body = request(shop, "GET", "/api/staff/me", headers=cookie)
    assert st == 200 and body == {"name": "admin"}
    st, _, body = request(shop, "GET", "/api/customers/walk-in/orders", headers=cookie)
    assert st == 200 and len(body["orders"]) >= 1
    # The kitchen display, without who the customer is.
    st, _, body = shop.create("kitchen-guest", [{"productID": "1", "quantity": 1}])
    oid = body["order"]["orderID"]
    order = shop.wait_status("kitchen-guest", oid, "waiting_payment")
    st, _, _ = http("POST", order["PaymentLink"] + "/pay", b"")

    def ticket():
        st, _, body = request(shop, "GET", "/api/kitchen/tickets", headers=cookie)
        assert st == 200, body
        return [t for t in body["tickets"] if t["orderID"] == oid]
    t = wait_for(ticket, 30, "the ticket on the display")[0]
    assert "customerID" not in t and "kitchen-guest" not in json.dumps(t), t
    st, _, page = request(shop, "GET", "/kitchen", headers=cookie)
    assert st == 200 and "Kitchen display" in page
    # The database keeps only a hash of the token.
    token = cookie["Cookie"].split("=", 1)[1]
    assert shop.scalar("gateway", "SELECT COUNT(*) FROM staff_sessions WHERE token_hash = ?", (token,)) == 0
    st, hdrs, _ = request(shop, "POST", "/staff/logout", b"", headers=cookie)
    assert st == 204 and "Max-Age=0" in header(hdrs, "Set-Cookie")[0]
    assert request(shop, "GET", "/api/staff/me", headers=cookie)[0] == 401
    assert request(shop, "GET", "/api/kitchen/tickets", headers=cookie)[0] == 401


def test_wrong_credentials_give_one_answer(shop):
    a = request(shop, "POST", "/staff/login", {"name": "admin", "password": "not-the-password"})
    b = request(shop, "POST", "/staff/login", {"name": "nobody-at-all", "password": "not-the-password"})
    assert a[0] == b[0] == 401 and a[2] == b[2] == {"error": "wrong name or password"}, (a, b)
    assert request(shop, "POST", "/staff/login", b"{", headers={"Content-Type": "application/json"})[0] == 400
    assert request(shop, "GET", "/api/staff/me", headers={"Cookie": "oms_staff=" + "0" * 64})[0] == 401
    assert request(shop, "GET", "/api/staff/me", headers={"Cookie": "oms_staff=../../x"})[0] == 401


def test_cross_site_requests_refused(shop):
    st, hdrs, body = request(shop, "POST", "/staff/login", {"name": "admin", "password": ADMIN_PW},
                             headers={"Origin": "http://evil.example", "Content-Type": "application/json"})
    assert st == 403 and not header(hdrs, "Set-Cookie"), (st, body)
    cookie, _ = login(shop)
    st, _, _ = request(shop, "POST", "/staff/logout", b"", headers=dict(cookie, Origin="https://evil.example"))
    assert st == 403
    assert request(shop, "GET", "/api/staff/me", headers=cookie)[0] == 200  # still signed in
    st, _, _ = request(shop, "POST", "/staff/logout", b"", headers=dict(cookie, Origin=shop.gateway))
    assert st == 204


def test_form_sign_in_goes_only_to_this_site(shop):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for nxt, want in (("/kitchen", "/kitchen"), ("//evil.example/x", "/staff/"), ("https://evil.example", "/staff/")):
        body = urllib.parse.urlencode({"name": "admin", "password": ADMIN_PW, "next": nxt}).encode()
        st, hdrs, _ = request(shop, "POST", "/staff/login", body, headers=form)
        assert st in (302, 303) and header(hdrs, "Location")[0] == want, (nxt, st, hdrs)


def test_oms_staff_manages_accounts(shop):
    r = oms_staff(shop, "add", "cashier", password="cashier-password-1")
    assert r.returncode == 0, r.stderr
    login(shop, "cashier", "cashier-password-1")
    r = oms_staff(shop, "add", "cashier", password="cashier-password-1")
    assert r.returncode == 1 and "cashier" in r.stderr
    r = oms_staff(shop, "add", "short", password="short")
    assert r.returncode == 1 and "password" in r.stderr.lower()
    r = oms_staff(shop, "passwd", "cashier", password="cashier-password-2")
    assert r.returncode == 0, r.stderr
    assert request(shop, "POST", "/staff/login", {"name": "cashier", "password": "cashier-password-1"})[0] == 401
    cookie, _ = login(shop, "cashier", "cashier-password-2")
    r = oms_staff(shop, "list")
    assert r.returncode == 0 and "cashier" in r.stdout and "admin" in r.stdout
    r = oms_staff(shop, "remove", "cashier")
    assert r.returncode == 0
    assert request(shop, "GET", "/api/staff/me", headers=cookie)[0] == 401  # its sessions went too
    assert oms_staff(shop, "frobnicate").returncode == 2
    hashes = shop.scalar("gateway", "SELECT hash FROM staff WHERE name = ?", ("admin",))
    assert hashes.startswith("$argon2id$") and ADMIN_PW not in hashes


def test_brute_force_is_slowed_down(shop):
    assert oms_staff(shop, "add", "target", password="target-password-1").returncode == 0
    answers = [request(shop, "POST", "/staff/login", {"name": "target", "password": f"guess-{i}-xxxxxx"})
               for i in range(8)]
    codes = [a[0] for a in answers]
    assert codes[:5] == [401] * 5 and 429 in codes[5:], codes
    limited = [a for a in answers if a[0] == 429][0]
    assert int(header(limited[1], "Retry-After")[0]) >= 1
    # Even the right password waits its turn now.
    assert request(shop, "POST", "/staff/login", {"name": "target", "password": "target-password-1"})[0] == 429


def test_customer_token_lists_only_its_own_orders(shop, issuer):
    st, _, body = shop.create("cust-tok", [{"productID": "1", "quantity": 1}])
    oid = body["order"]["orderID"]

    def listing(token, cid="cust-tok"):
        return request(shop, "GET", f"/api/customers/{cid}/orders",
                       headers={"Authorization": f"Bearer {token}"} if token else {})
    st, _, body = listing(issuer("cust-tok"))
    assert st == 200 and [o["orderID"] for o in body["orders"]] == [oid], (st, body)
    # Another customer's token: 404, as if the customer did not exist.
    st, _, body = listing(issuer("someone-else"))
    assert st == 404, (st, body)
    refused = {
        "none": None,
        "expired": issuer("cust-tok", exp=int(time.time()) - 120),
        "wrong issuer": issuer("cust-tok", iss="https://evil.example/"),
        "wrong audience": issuer("cust-tok", aud="another-app"),
        "alg none": issuer.jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "cust-tok",
                                       "exp": int(time.time()) + 300}, None, algorithm="none"),
        "tampered": issuer("cust-tok")[:-4] + "AAAA",
        # Over the verifier's 8 KiB, within the 12 KiB the HTTP server takes for headers.
        "oversized": issuer("cust-tok", pad="x" * 6600),
    }
    assert 8192 < len(refused["oversized"]) < 10000
    for what, tok in refused.items():
        st, hdrs, body = listing(tok)
        assert st == 401, (what, st, body)
        # One answer whatever was wrong with it.
        assert body["error"] in ("sign in again: the token is not accepted", "sign in as staff first"), body
    # Past what the HTTP server takes for a request's head: refused before our code runs.
    st, _, body = listing(issuer("cust-tok", pad="x" * 20000))
    assert st == 431, (st, body)
    log = open(shop.svc["gateway"].log_path, errors="replace").read()
    for check in ("exp", "iss", "aud", "signature", "format", "size"):  # the reason is in the log only
        assert f'"reason":"{check}' in log, check
