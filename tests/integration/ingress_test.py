#!/usr/bin/python3
"""Connect tokens and the ingress proxy on real VMs (docs/ingress.md).

    tests/integration/ingress_test.py BUILD_DIR RESULTS_DIR

Starts sandboxd with `--ingress 127.0.0.1:18444 --ingress-domain sandvm.test`
on a private state dir, boots a Debian sandbox (block_network) running
tests/integration/ingress_server.py on 127.0.0.1:8080 and a minimal one, and
reaches the server through connect tokens with curl, python3-httpx,
python3-websockets and raw TLS sockets (for bytes no client library sends).
Names under sandvm.test resolve to 127.0.0.1 in this process (getaddrinfo is
wrapped) and through curl --resolve. Prints "OK name" / "FAIL name: why" per
case; tests/integration/ingress.sh turns them into the suite's report.
Needs /dev/kvm (run through tests/nested/run).

SANDVM_INGRESS_FAKE=BUILD_DIR/tests runs the same cases against
tests/unit/fake-vmm (the agent on this host), to work on this script on a
host without KVM; the suite never uses it.
"""
import asyncio
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

from cases import (case, cases, keep_sandbox_logs, on_overrun, resolve_to_loopback, results, unix_api,
                   wait_healthy)
import urllib.parse

import httpx
import websockets

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
RESULTS = sys.argv[2] if len(sys.argv) > 2 else BUILD + "/test-results/integration"
HERE = os.path.dirname(os.path.abspath(__file__))
SANDBOXD = os.path.join(BUILD, "bin", "sandboxd")
VMCTL = os.path.join(BUILD, "bin", "vmctl")
FAKE = os.environ.get("SANDVM_INGRESS_FAKE")
TMP = tempfile.mkdtemp(prefix="sandvm-ingress.")
STATE = os.path.join(TMP, "state")
SOCK = os.path.join(TMP, "sandboxd.sock")
CA = os.path.join(STATE, "tls", "ca.pem")
DOMAIN = "sandvm.test"
PORT = 18444
TIMEOUT_S = 5  # --ingress-timeout
IDLE_S = 30  # sandbox A's idle_timeout
SEEN = "/tmp/ingress-seen.log"  # in the guest
METADATA = {"user": "ada", "name": "Zo\u00eb", "roles": ["admin", "dev"], "n": 7}
KEY = None
shared = {}

# Every name under the test domain is this host's loopback.
resolve_to_loopback(DOMAIN)


def api(method, path, body=None, raw=False, timeout=120):
    return unix_api(SOCK, KEY, method, path, body, raw, timeout)


def vmctl(*args, timeout=120):
    env = dict(os.environ, SANDVM_HOST="unix://" + SOCK, SANDVM_API_KEY=KEY)
    return subprocess.run([VMCTL, *args], capture_output=True, env=env, timeout=timeout)


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True)


def guest_exec(sid, argv):
    """Runs argv in the sandbox through vmctl; (status, stdout)."""
    p = vmctl("exec", "--no-stdin", sid, "--", *argv, timeout=300)
    return p.returncode, p.stdout.decode(errors="replace")


def guest_file(sid, path):
    st, data = api("GET", f"/v1/sandboxes/{sid}/files?path={path}", raw=True)
    assert st == 200, f"GET {path}: {st} {data[:200]}"
    return data


def make_token(sid, port=8080, metadata=METADATA, ttl=None):
    args = ["connect-token", sid, "--port", str(port), "--json"]
    if metadata is not None:
        args += ["--user-metadata", json.dumps(metadata)]
    if ttl is not None:
        args += ["--ttl", str(ttl)]
    p = vmctl(*args)
    assert p.returncode == 0, p.stderr.decode()
    o = json.loads(p.stdout)
    assert set(o) >= {"id", "url", "token"}, o
    u = urllib.parse.urlsplit(o["url"])
    assert u.scheme == "https" and u.port == PORT and u.hostname.endswith("." + DOMAIN), o["url"]
    o["host"] = u.hostname
    o["label"] = u.hostname[:-len(DOMAIN) - 1]
    shared.setdefault("secrets", []).append(o["token"])
    return o


def tls_context():
    ctx = ssl.create_default_context(cafile=CA)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def client():
    return httpx.Client(verify=tls_context(), timeout=30)


def raw_exchange(host, data, timeout=30, responses=None):
    """Sends data over one TLS connection to the listener; returns what came back until close, timeout
    or (with responses) that many response heads."""
    ctx = tls_context()
    if not host.endswith("." + DOMAIN):
        ctx.check_hostname = False  # a name the certificate does not cover, on purpose
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", PORT), timeout=timeout),
                        server_hostname=host)
    s.sendall(data)
    got = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
            if responses and responses_in(got) >= responses:
                break
    except (socket.timeout, ssl.SSLError, ConnectionError):
        pass
    s.close()
    return got


def responses_in(data):
    return len(re.findall(rb"HTTP/1\.1 \d\d\d ", data))


def statuses(data):
    return [int(x) for x in re.findall(rb"HTTP/1\.1 (\d\d\d) ", data)]


def echo_bodies(data):
    """The JSON bodies of the echo server's replies in a raw response stream."""
    out = []
    for m in re.finditer(rb"\r\n\r\n(\{\"method\".*?\})(?=HTTP/1\.1 |$)", data, re.S):
        out.append(json.loads(m.group(1)))
    return out


def hdr(echo, name):
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]




def verified_json():
    return json.dumps(METADATA, separators=(",", ":"), ensure_ascii=True)


@case("ingress-setup")
def _():
    # A (Debian, no network at all) serves; B (minimal) only owns a label of its own.
    # idle_timeout: ingress-connection-is-activity holds a WebSocket past it.
    spec = {"image": "debian", "memory_mib": 384, "timeout": 1800, "block_network": True,
            "idle_timeout": IDLE_S}
    if FAKE:
        spec = {"image": "minimal", "timeout": 1800, "idle_timeout": IDLE_S}
    st, a = api("POST", "/v1/sandboxes", spec)
    assert st == 201, (st, a)
    st, b = api("POST", "/v1/sandboxes", {"image": "minimal", "memory_mib": 128, "timeout": 1800}
                if not FAKE else {"image": "minimal", "timeout": 1800})
    assert st == 201, (st, b)
    shared["a"], shared["b"] = a["id"], b["id"]
    if not FAKE:
        assert a["network"]["mode"] == "block", a
    with open(os.path.join(HERE, "ingress_server.py"), "rb") as f:
        st, o = api("PUT", f"/v1/sandboxes/{a['id']}/files?path=/tmp/ingress_server.py", f.read())
        assert st == 204, (st, o)
    # The server outlives the exec that starts it (its own session, output to a file).
    rc, out = guest_exec(a["id"], ["sh", "-c", f"rm -f {SEEN}; setsid python3 /tmp/ingress_server.py 8080 "
                                   f"{SEEN} >/tmp/ingress-server.log 2>&1 < /dev/null & "
                                   "for i in $(seq 1 100); do grep -q listening /tmp/ingress-server.log "
                                   "&& exit 0; sleep 0.1; done; cat /tmp/ingress-server.log; exit 1"])
    assert rc == 0, f"the server did not start: {out}"
    shared["ta"] = make_token(a["id"])
    shared["tb"] = make_token(b["id"])
    assert shared["ta"]["label"] != shared["tb"]["label"]


@case("ingress-token-header")
def _():
    t = shared["ta"]
    with client() as c:
        r = c.post(t["url"] + "/echo/header?x=1&y=%2F", content=b"hello body",
                   headers={"Authorization": "Bearer " + t["token"], "X-Custom": "kept"})
    assert r.status_code == 200, (r.status_code, r.text)
    e = r.json()
    assert e["method"] == "POST" and e["target"] == "/echo/header?x=1&y=%2F", e
    assert hdr(e, "X-Verified-User-Data") == [verified_json()], hdr(e, "X-Verified-User-Data")
    assert json.loads(hdr(e, "X-Verified-User-Data")[0]) == METADATA
    assert hdr(e, "X-Custom") == ["kept"] and hdr(e, "Authorization") == [], e["headers"]
    assert hdr(e, "X-Forwarded-Proto") == ["https"] and hdr(e, "X-Forwarded-Host") == [t["host"] + f":{PORT}"], \
        e["headers"]
    assert hdr(e, "X-Forwarded-For") == ["127.0.0.1"], e["headers"]
    assert e["body_len"] == 10
    # The guest's cookie for the token's name never reaches the client; its others do.
    cookies = r.headers.get_list("set-cookie")
    assert cookies == ["guest=1; Path=/"], cookies


@case("ingress-token-query-and-cookie")
def _():
    t = shared["ta"]
    tok = t["token"]
    # The query form, with curl: the token leaves the query (every copy, an encoded name too).
    url = f"{t['url']}/echo/q?a=1&_modal_connect_token={tok}&b=%20x&_modal%5Fconnect_token={tok}&c"
    p = subprocess.run(["curl", "-sS", "-i", "--cacert", CA, "--tlsv1.3", "--resolve",
                        f"{t['host']}:{PORT}:127.0.0.1", url], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    e = json.loads(body)
    assert e["target"] == "/echo/q?a=1&b=%20x&c", e["target"]
    assert hdr(e, "X-Verified-User-Data") == [verified_json()]
    cookies = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"set-cookie:")]
    assert sorted(cookies) == [f"_modal_connect_token={tok}; Path=/; Secure; HttpOnly; SameSite=Lax".encode(),
                               b"guest=1; Path=/"], cookies
    # The cookie form: the token leaves the Cookie header, other cookies stay.
    with client() as c:
        r = c.get(t["url"] + "/echo/c", headers={"Cookie": f"theme=dark; _modal_connect_token={tok}; z=9"})
    assert r.status_code == 200, (r.status_code, r.text)
    e = r.json()
    assert hdr(e, "Cookie") == ["theme=dark; z=9"], hdr(e, "Cookie")
    assert hdr(e, "X-Verified-User-Data") == [verified_json()]
    # A browser-like session: the query once, then the cookie it was given.
    with client() as c:
        r1 = c.get(f"{t['url']}/echo/first?_modal_connect_token={tok}")
        r2 = c.get(f"{t['url']}/echo/second")
    assert r1.status_code == 200 and r2.status_code == 200, (r1.status_code, r2.status_code, r2.text)
    assert r2.json()["target"] == "/echo/second"


@case("ingress-metadata")
def _():
    a = shared["a"]
    # A string and no metadata; too long a one is refused naming the field.
    t1 = make_token(a, metadata="plain \"string\"")
    t2 = make_token(a, metadata=None)
    with client() as c:
        e1 = c.get(t1["url"] + "/echo/m", headers={"Authorization": "Bearer " + t1["token"]}).json()
        e2 = c.get(t2["url"] + "/echo/m", headers={"Authorization": "Bearer " + t2["token"]}).json()
    assert hdr(e1, "X-Verified-User-Data") == ['"plain \\"string\\""'], e1["headers"]
    assert hdr(e2, "X-Verified-User-Data") == ["{}"], e2["headers"]
    st, o = api("POST", f"/v1/sandboxes/{a}/connect-tokens", {"user_metadata": {"k": "x" * 600}, "port": 8080})
    assert st == 400 and o.get("field") == "user_metadata", (st, o)
    # Listing shows no secret.
    p = vmctl("connect-tokens", a, "--json")
    assert p.returncode == 0, p.stderr
    assert shared["ta"]["token"].encode() not in p.stdout and shared["ta"]["id"].encode() in p.stdout, p.stdout


@case("ingress-forgeries")
def _():
    t = shared["ta"]
    host, tok = t["host"], t["token"]
    base = f"Host: {host}:{PORT}\r\nAuthorization: Bearer {tok}\r\n"

    def one(extra, method="GET", body=b"", path="/echo/f"):
        return (f"{method} {path} HTTP/1.1\r\n{base}{extra}Connection: close\r\n\r\n").encode() + body

    forwarded = {
        "mixed case": one("x-VeRiFiEd-uSeR-dAtA: forged-1\r\n"),
        "two copies": one("X-Verified-User-Data: forged-2a\r\nX-Verified-User-Data: forged-2b\r\n"),
        "underscore": one("X_Verified_User_Data: forged-3\r\nx_verified-user_data: forged-3b\r\n"),
        "connection names it": one("Connection: X-Verified-User-Data\r\nX-Verified-User-Data: forged-4\r\n"),
        "trailer": one("Transfer-Encoding: chunked\r\nTrailer: X-Verified-User-Data\r\n", "POST",
                       b"5\r\nhello\r\n0\r\nX-Verified-User-Data: forged-5\r\n\r\n"),
    }
    for why, data in forwarded.items():
        got = raw_exchange(host, data)
        assert statuses(got) == [200], f"{why}: {got[:300]}"
        e = echo_bodies(got)[0]
        assert hdr(e, "X-Verified-User-Data") == [verified_json()], f"{why}: {e['headers']}"
        assert "forged" not in json.dumps(e), f"{why}: {e}"
    refused = {
        "folded": (one("X-Verified-User-Data: ok\r\n forged-6\r\n"), 400),
        "space before colon": (one("X-Verified-User-Data : forged-7\r\n"), 400),
        "CL+TE": (one("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "POST",
                      b"0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: x\r\nX-Verified-User-Data: forged-8\r\n\r\n"), 400),
        "absolute-form elsewhere": (f"GET https://{shared['tb']['host']}:{PORT}/echo/abs HTTP/1.1\r\n{base}"
                                    "X-Verified-User-Data: forged-9\r\nConnection: close\r\n\r\n".encode(), 421),
        "absolute-form foreign host": (f"GET http://example.org/echo/abs HTTP/1.1\r\n{base}"
                                       "Connection: close\r\n\r\n".encode(), 421),
    }
    for why, (data, want) in refused.items():
        got = raw_exchange(host, data)
        assert statuses(got)[:1] == [want], f"{why}: want {want}, got {got[:300]}"
    # Pipelined: the second request carries no token and is refused on its own.
    got = raw_exchange(host, (f"GET /echo/p1 HTTP/1.1\r\n{base}\r\n"
                              f"GET /echo/p2 HTTP/1.1\r\nHost: {host}:{PORT}\r\n"
                              "X-Verified-User-Data: forged-10\r\n\r\n"
                              f"GET /echo/p3 HTTP/1.1\r\n{base}Connection: close\r\n\r\n").encode())
    assert statuses(got) == [200, 401, 200], (statuses(got), got[-300:])
    # Nothing forged, no smuggled request, reached the server.
    seen = guest_file(shared["a"], SEEN)
    assert b"forged" not in seen, re.findall(rb".{0,80}forged.{0,20}", seen)
    assert b"/echo/smuggled" not in seen and b"/echo/p2" not in seen and b"/echo/abs" not in seen


@case("ingress-refusals")
def _():
    ta, tb = shared["ta"], shared["tb"]
    with client() as c:
        def get(url, token):
            return c.get(url + "/echo/r", headers={"Authorization": "Bearer " + token} if token else {})
        assert get(ta["url"], None).status_code == 401
        assert get(ta["url"], "ct_" + "A" * 43).status_code == 401
        assert get(ta["url"], KEY).status_code == 401  # an API key means nothing here
        # A's token on B's label and the other way round.
        assert get(tb["url"], ta["token"]).status_code == 401
        assert get(ta["url"], tb["token"]).status_code == 401
        # A token of another port of the same sandbox.
        t9 = make_token(shared["a"], port=9090)
        assert get(ta["url"], t9["token"]).status_code == 401
        # Revoked (vmctl connect-token rm) and expired.
        tr = make_token(shared["a"])
        assert get(tr["url"], tr["token"]).status_code == 200
        p = vmctl("connect-token", "rm", shared["a"], tr["id"])
        assert p.returncode == 0, p.stderr
        assert get(tr["url"], tr["token"]).status_code == 401
        te = make_token(shared["a"], ttl=1)
        assert get(te["url"], te["token"]).status_code == 200
        time.sleep(2.2)
        assert get(te["url"], te["token"]).status_code == 401
        # An unknown label.
        r = c.get(f"https://nosuchlabel0000.{DOMAIN}:{PORT}/echo/r", headers={"Authorization": "Bearer " + ta["token"]})
        assert r.status_code == 404, r.status_code
    # SNI of A, Host of B; a name outside the domain.
    got = raw_exchange(ta["host"], f"GET /echo/x HTTP/1.1\r\nHost: {tb['host']}:{PORT}\r\n"
                       f"Authorization: Bearer {tb['token']}\r\n\r\n".encode(), responses=1)
    assert statuses(got) == [421], got[:200]
    got = raw_exchange("other.example", f"GET /echo/x HTTP/1.1\r\nHost: {ta['host']}\r\n"
                       f"Authorization: Bearer {ta['token']}\r\nConnection: close\r\n\r\n".encode())
    assert statuses(got) == [421], got[:200]
    # A non-websocket upgrade and CONNECT.
    got = raw_exchange(ta["host"], f"GET /echo/x HTTP/1.1\r\nHost: {ta['host']}\r\nConnection: upgrade\r\n"
                       f"Upgrade: h2c\r\nAuthorization: Bearer {ta['token']}\r\n\r\n".encode(), responses=1)
    assert statuses(got) == [501], got[:200]


async def ws_echo(url, headers, n, size=None):
    async with websockets.connect(url, ssl=tls_context(), extra_headers=headers, max_size=2 ** 20,
                                  open_timeout=30) as ws:
        for i in range(n):
            await ws.send(f"message {i} " + ("x" * size if size else ""))
        got = [await asyncio.wait_for(ws.recv(), 30) for _ in range(n)]
        big = os.urandom(300000)
        await ws.send(big)
        assert await asyncio.wait_for(ws.recv(), 30) == big, "a 300 KB binary message came back changed"
    return got


@case("ingress-websocket")
def _():
    t = shared["ta"]
    wss = t["url"].replace("https://", "wss://")
    got = asyncio.run(ws_echo(wss + "/ws", {"Authorization": "Bearer " + t["token"]}, 1000))
    assert got == [f"message {i} " for i in range(1000)], "1,000 messages out of order or changed"
    got = asyncio.run(ws_echo(f"{wss}/ws?_modal_connect_token={t['token']}", {}, 10))
    assert got == [f"message {i} " for i in range(10)]

    async def refused(path, headers):
        try:
            async with websockets.connect(wss + path, ssl=tls_context(), extra_headers=headers, open_timeout=30):
                return None
        except websockets.exceptions.InvalidStatusCode as e:
            return e.status_code
    assert asyncio.run(refused("/ws-refuse", {"Authorization": "Bearer " + t["token"]})) == 403
    assert asyncio.run(refused("/ws", {})) == 401
    assert asyncio.run(refused("/ws", {"Authorization": "Bearer " + shared["tb"]["token"]})) == 401


def daemon_rss_kib():
    m = re.search(r"VmRSS:\s+(\d+) kB", open(f"/proc/{shared['daemon'].pid}/status").read())
    return int(m.group(1))


@case("ingress-hostile-servers")
def _():
    t = shared["ta"]
    auth = {"Authorization": "Bearer " + t["token"]}
    before = daemon_rss_kib()
    with client() as c:
        for path, want in (("/hostile/huge", 502), ("/hostile/101", 502), ("/hostile/garbage", 502),
                           ("/hostile/close", 502)):
            r = c.get(t["url"] + path, headers=auth)
            assert r.status_code == want, f"{path}: {r.status_code} {r.text[:200]}"
        # Nothing listening on the token's port.
        t9 = make_token(shared["a"], port=8089)
        r = c.get(t9["url"] + "/x", headers={"Authorization": "Bearer " + t9["token"]})
        assert r.status_code == 502 and "8089" in r.text, (r.status_code, r.text)
        # A response that ends when the server closes is passed on, whole (RFC 9112 section 6.3).
        r = c.get(t["url"] + "/hostile/nolength", headers=auth)
        assert r.status_code == 200 and len(r.content) == 1 << 20, (r.status_code, len(r.content))
        # A silent server: 504 after --ingress-timeout.
        start = time.monotonic()
        r = c.get(t["url"] + "/hostile/silent", headers=auth)
        took = time.monotonic() - start
        assert r.status_code == 504 and TIMEOUT_S - 0.5 < took < TIMEOUT_S + 10, (r.status_code, took)
    # A server that never reads a 64 MiB upload: back-pressure stops the client, then 504.
    s = tls_context().wrap_socket(socket.create_connection(("127.0.0.1", PORT), timeout=60),
                                  server_hostname=t["host"])
    s.sendall(f"POST /hostile/noread HTTP/1.1\r\nHost: {t['host']}\r\nAuthorization: Bearer {t['token']}\r\n"
              f"Content-Length: {64 << 20}\r\n\r\n".encode())
    s.settimeout(TIMEOUT_S + 15)
    sent, chunk = 0, b"u" * 65536
    try:
        while sent < 64 << 20:
            sent += s.send(chunk)
    except (socket.timeout, ssl.SSLError, ConnectionError):
        pass
    reply = b""
    try:
        reply = s.recv(4096)
    except (socket.timeout, ssl.SSLError, ConnectionError):
        pass
    s.close()
    assert sent < 48 << 20, f"{sent} bytes of an upload taken by a server that reads nothing"
    assert reply == b"" or statuses(reply) == [504], reply[:200]
    # A flood read slowly: the daemon queues a bounded amount.
    s = tls_context().wrap_socket(socket.create_connection(("127.0.0.1", PORT), timeout=60),
                                  server_hostname=t["host"])
    s.sendall(f"GET /hostile/flood HTTP/1.1\r\nHost: {t['host']}\r\nAuthorization: Bearer {t['token']}\r\n"
              "\r\n".encode())
    got = 0
    while got < 1 << 20:
        got += len(s.recv(65536))
    time.sleep(3)
    grown = daemon_rss_kib() - before
    s.close()
    assert grown < 32 * 1024, f"sandboxd grew by {grown} KiB"
    shared["rss_growth_kib"] = grown
    # The proxy still serves.
    with client() as c:
        assert c.get(t["url"] + "/echo/after", headers=auth).status_code == 200


@case("ingress-revoke-closes-connections")
def _():
    a = shared["a"]
    t = make_token(a)
    wss = t["url"].replace("https://", "wss://")

    async def run():
        async with websockets.connect(wss + "/ws", ssl=tls_context(),
                                      extra_headers={"Authorization": "Bearer " + t["token"]}) as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            p = vmctl("connect-token", "rm", a, t["id"])
            assert p.returncode == 0, p.stderr
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except websockets.exceptions.ConnectionClosed:
                return True
            return False
    assert asyncio.run(run()), "the WebSocket stayed open after its token was removed"


@case("ingress-connection-is-activity")
def _():
    # A WebSocket open and silent past the sandbox's idle_timeout keeps it running.
    a, t = shared["a"], shared["ta"]
    wss = t["url"].replace("https://", "wss://")

    async def run():
        async with websockets.connect(wss + "/ws", ssl=tls_context(), ping_interval=None,
                                      extra_headers={"Authorization": "Bearer " + t["token"]}) as ws:
            await asyncio.sleep(IDLE_S + 10)
            await ws.send("still here")
            return await asyncio.wait_for(ws.recv(), 30)
    assert asyncio.run(run()) == "still here"
    st, o = api("GET", f"/v1/sandboxes/{a}")
    assert st == 200 and o["state"] == "running", (st, o.get("state"), o.get("reason"))


@case("ingress-network-changes")
def _():
    # The proxy does not use the guest network: open and blocked again, the same requests work.
    a, t = shared["a"], shared["ta"]
    for policy in ({"block_network": False}, {"block_network": True}):
        if not FAKE:
            st, o = api("PUT", f"/v1/sandboxes/{a}/network", policy)
            assert st == 200, (st, o)
        with client() as c:
            r = c.get(t["url"] + "/echo/n", headers={"Authorization": "Bearer " + t["token"]})
        assert r.status_code == 200 and hdr(r.json(), "X-Verified-User-Data") == [verified_json()], r.text


@case("ingress-sandbox-end")
def _():
    b, tb = shared["b"], shared["tb"]
    st, _ = api("DELETE", f"/v1/sandboxes/{b}")
    assert st in (200, 202, 204), st
    with client() as c:
        r = c.get(tb["url"] + "/x", headers={"Authorization": "Bearer " + tb["token"]})
    assert r.status_code == 404, r.status_code


class Daemon:
    def __init__(self):
        self.log = open(os.path.join(RESULTS, "ingress-sandboxd.log"), "ab")
        args = [SANDBOXD, "--state-dir", STATE, "--socket", SOCK, "--ingress", f"127.0.0.1:{PORT}",
                "--ingress-domain", DOMAIN, "--ingress-timeout", str(TIMEOUT_S), "--max-memory", "2000"]
        if FAKE:
            images = os.path.join(TMP, "images")
            os.makedirs(images)
            for f in ("vmlinux", "initramfs.cpio.gz"):
                open(os.path.join(images, f), "w").write("boot\n")
            args += ["--vmm", os.path.join(FAKE, "fake-vmm"), "--images", images, "--image-builder", "",
                     "--no-net"]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        wait_healthy(self.proc, lambda: api("GET", "/v1/health", timeout=5)[0])

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def cleanup(daemon):
    """Deletes the sandboxes, stops the daemon, keeps the logs, removes the taps, and
    checks the daemon's log for secrets (ingress-log-hygiene)."""
    if "rss_growth_kib" in shared:
        print(f"# sandboxd RSS growth across the hostile servers: {shared['rss_growth_kib']} KiB", file=sys.stderr)
    for sid in (shared.get("a"), shared.get("b")):
        if sid:
            try:
                api("DELETE", f"/v1/sandboxes/{sid}", timeout=30)
            except OSError:
                pass
    daemon.stop()
    if FAKE:
        sh("pkill -f /tmp/ingress_server.py")  # on this host, outside any VM
    keep_sandbox_logs(STATE, os.path.join(RESULTS, "ingress-sandboxes"))
    sh("for t in $(ls /sys/class/net | grep '^sbx'); do ip link del $t; done")
    with open(os.path.join(RESULTS, "ingress-sandboxd.log"), "rb") as f:
        log = f.read()
    leaked = [s for s in shared.get("secrets", []) + [KEY] if s.encode() in log]
    print("FAIL ingress-log-hygiene: a token or the API key is in the daemon log" if leaked
          else "OK ingress-log-hygiene", flush=True)


def main():
    global KEY
    os.makedirs(RESULTS, exist_ok=True)
    KEY = subprocess.run([SANDBOXD, "--state-dir", STATE, "--new-key", "ingress"], capture_output=True,
                         check=True).stdout.decode().strip()
    daemon = Daemon()
    shared["daemon"] = daemon.proc
    hook = lambda: cleanup(daemon)  # noqa: E731
    on_overrun.append(hook)
    try:
        for run in cases:
            if run.name != "ingress-setup" and results and results[0][1]:
                print(f"FAIL {run.name}: setup failed", flush=True)
                continue
            run()
        # What the server in the sandbox received: no token, no API key, ever.
        if "a" in shared and not (results and results[0][1]):
            seen = guest_file(shared["a"], SEEN)
            leaked = [s for s in shared["secrets"] + [KEY] if s.encode() in seen]
            if leaked:
                print(f"FAIL ingress-guest-never-sees-secrets: {len(leaked)} secret(s) in what the server got")
            elif b"X-Verified-User-Data" not in seen:
                print("FAIL ingress-guest-never-sees-secrets: the server's log is empty")
            else:
                print("OK ingress-guest-never-sees-secrets")
    finally:
        on_overrun.remove(hook)
        cleanup(daemon)


if __name__ == "__main__":
    main()
