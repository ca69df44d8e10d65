#!/usr/bin/env python3
"""sandboxd API tests against a running daemon with real VMs (docs/api.md).

    tests/integration/api_test.py BUILD_DIR RESULTS_DIR

Starts sandboxd on a private state dir and socket, runs every case over
HTTP (http.client on the unix socket), and prints one line per case:
"OK name" or "FAIL name: why". tests/integration/api.sh turns them into the
suite's report. Needs /dev/kvm (run through tests/nested/run).
"""
import concurrent.futures
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from cases import UnixConn, case, cases, keep_sandbox_logs, on_overrun, wait_healthy

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
RESULTS = sys.argv[2] if len(sys.argv) > 2 else BUILD + "/test-results/integration"
SANDBOXD = os.path.join(BUILD, "bin", "sandboxd")
VMCTL = os.path.join(BUILD, "bin", "vmctl")
TMP = tempfile.mkdtemp(prefix="sandvm-api.")
STATE = os.path.join(TMP, "state")
SOCK = os.path.join(TMP, "sandboxd.sock")
MIN = {"image": "minimal", "memory_mib": 128}




class Daemon:
    def __init__(self, *extra):
        self.extra = list(extra)
        self.proc = None
        self.log = open(os.path.join(RESULTS, "sandboxd.log"), "ab")

    def start(self):
        # A secret in the daemon's environment, which its VMMs must not inherit (api-vmm-environment).
        self.proc = subprocess.Popen([SANDBOXD, "--state-dir", STATE, "--socket", SOCK, *self.extra],
                                     stdout=self.log, stderr=self.log,
                                     env=dict(os.environ, SANDVM_API_KEY=ENV_SECRET))
        wait_healthy(self.proc, lambda: request("GET", "/v1/health", key=None, timeout=5)[0])

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)


KEY = None
TLS_PORT = 18443
METRICS_PORT = 18444
ENV_SECRET = "sk-daemon-environment-marker"


def request(method, path, body=None, key="default", headers=None, timeout=120, raw=False):
    c = UnixConn(SOCK, timeout)
    h = dict(headers or {})
    if key == "default":
        key = KEY
    if key is not None:
        h["Authorization"] = "Bearer " + key
    chunked = False
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        h["Content-Type"] = "application/json"
    elif body is not None and not isinstance(body, (bytes, str)):
        chunked = True  # an iterable of chunks: sent as they come (Transfer-Encoding: chunked)
    c.request(method, path, body=body, headers=h, encode_chunked=chunked)
    r = c.getresponse()
    data = r.read()
    c.close()
    if raw:
        return r.status, data
    try:
        return r.status, json.loads(data) if data else None
    except ValueError:
        return r.status, data


def create(spec=None, expect=201):
    st, o = request("POST", "/v1/sandboxes", dict(spec or MIN))
    if st != expect:
        raise AssertionError(f"create {spec}: HTTP {st} {o}")
    return o


def frames(data):
    # bytearrays: bytes += would copy all that came before for every frame (quadratic on 20 MB).
    out, err, end = bytearray(), bytearray(), None
    i = 0
    while i < len(data):
        t, n = data[i], struct.unpack(">I", data[i + 4:i + 8])[0]
        assert data[i + 1:i + 4] == b"\0\0\0", "frame padding"
        p = data[i + 8:i + 8 + n]
        i += 8 + n
        if t == 1:
            out += p
        elif t == 2:
            err += p
        else:
            end = (t, json.loads(p))
    return bytes(out), bytes(err), end


def run_exec(sid, argv, stdin=None, **kw):
    spec = {"argv": argv, **kw}
    if stdin is not None:
        spec["stdin"] = True
    st, o = request("POST", f"/v1/sandboxes/{sid}/execs", spec)
    if st != 201:
        raise AssertionError(f"exec {argv}: HTTP {st} {o}")
    eid = o["id"]
    got = {}

    def read_output():
        got["r"] = request("GET", f"/v1/sandboxes/{sid}/execs/{eid}/output", raw=True, timeout=300)
    # Output is read while stdin is written, as any client must: each side's buffers are bounded.
    reader = threading.Thread(target=read_output)
    reader.start()
    if stdin is not None:
        st, _ = request("POST", f"/v1/sandboxes/{sid}/execs/{eid}/stdin", stdin)
        assert st == 204, f"stdin: HTTP {st}"
    reader.join(310)
    assert "r" in got, "output: no reply"
    st, data = got["r"]
    assert st == 200, f"output: HTTP {st} {data[:200]}"
    return frames(data)




@case("api-auth")
def _():
    n = len(request("GET", "/v1/sandboxes")[1]["sandboxes"])
    for key in (None, "wrong", "svk_" + "0" * 64, ""):
        st, o = request("POST", "/v1/sandboxes", dict(MIN), key=key)
        assert st == 401, f"key {key!r}: HTTP {st}"
    st, o = request("GET", "/v1/sandboxes", key="Basic abc")
    assert st == 401
    assert len(request("GET", "/v1/sandboxes")[1]["sandboxes"]) == n, "a refused create left a sandbox"
    assert request("GET", "/v1/health", key=None)[0] == 200


@case("api-early-reply")
def _():
    # A 401 sent before the body was read: the client that sends its body afterwards still
    # gets to send it and read the reply (the daemon drains it before closing), and the
    # connection then ends.
    body = json.dumps(MIN).encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(SOCK)
    s.sendall(b"POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    time.sleep(0.5)  # the reply is out by now
    s.sendall(body)
    reply = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        reply += d
    s.close()
    assert reply.startswith(b"HTTP/1.1 401 "), reply[:80]
    assert b"Connection: close" in reply, reply[:200]
    # But not forever: a huge body after an early reply is cut off after a few MiB.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(SOCK)
    s.sendall(b"POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
    sent, chunk = 0, b"x" * 65536
    try:
        while sent < 1000000000:
            sent += s.send(chunk)
    except OSError:
        pass
    s.close()
    assert sent < 64 << 20, f"the daemon read {sent} bytes of a refused body"


@case("api-validation")
def _():
    bad = [({"cpu": 0}, "cpu"), ({"cpu": 1.5}, "cpu"), ({"memory_mib": -1}, "memory_mib"),
           ({"timeout": 86401}, "timeout"), ({"timeout": "10"}, "timeout"), ({"workdir": "tmp"}, "workdir"),
           ({"env": {"1X": "a"}}, "env"), ({"env": {"A": 1}}, "env"), ({"name": "a b"}, "name"),
           ({"tags": []}, "tags"), ({"bogus": 1}, "bogus"), ({"command": ["x" * 70000]}, "command"),
           ({"idle_timeout": -1}, "idle_timeout"), ({"image": "rel/path"}, "image")]
    for spec, field in bad:
        st, o = request("POST", "/v1/sandboxes", spec)
        assert st == 400 and o.get("field") == field, f"{spec}: HTTP {st} {o}"
    for body in ("{", "[]", "null", '{"cpu": 1} x'):
        st, o = request("POST", "/v1/sandboxes", body)
        assert st == 400 and "error" in o, f"{body!r}: {st} {o}"


shared = {}


@case("api-create-exec")
def _():
    t = time.monotonic()
    o = create({**MIN, "tags": {"suite": "api", "n": "1"}, "env": {"GREETING": "hi"}, "name": "first",
                "timeout": 1800})
    assert o["state"] == "running" and o["id"].startswith("sb-"), o
    shared["sb"] = sid = o["id"]
    shared["ready_s"] = time.monotonic() - t
    out, err, end = run_exec(sid, ["sh", "-c", "echo $GREETING; echo oops >&2; exit 3"])
    assert out == b"hi\n" and err == b"oops\n" and end == (3, {"returncode": 3, "reason": "exited"}), (out, err, end)
    st, o = request("GET", f"/v1/sandboxes/{sid}")
    assert st == 200 and o["tags"] == {"suite": "api", "n": "1"} and o["name"] == "first"


@case("api-vmm-environment")
def _():
    # The VMM gets a clean environment: nothing of the daemon's, the API key above least of all.
    sid = shared["sb"]
    with open(os.path.join(STATE, "sandboxes", sid, "sandbox.json")) as f:
        pid = json.load(f)["pid"]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"--vsock" in f.read(), "pid %d is not the sandbox's VMM" % pid
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = [e for e in f.read().split(b"\0") if e]
    assert not any(ENV_SECRET.encode() in e for e in env), env
    assert sorted(env) == [b"LC_ALL=C", b"PATH=/usr/sbin:/usr/bin:/sbin:/bin"], env


@case("api-tls")
def _():
    # --listen is HTTPS with TLS 1.3 only, its certificate from the CA sandboxd made in STATE/tls.
    ca = os.path.join(STATE, "tls", "ca.pem")
    host = "https://127.0.0.1:%d" % TLS_PORT
    p = vmctl("--host", host, "--cacert", ca, "ls", "--json")
    assert p.returncode == 0 and shared["sb"] in p.stdout.decode(), p
    p = vmctl("--host", "https://localhost:%d" % TLS_PORT, "inspect", shared["sb"], env_extra={"SANDVM_CACERT": ca})
    assert p.returncode == 0, p
    p = vmctl("--host", host, "ls")
    assert p.returncode == 125 and b"--cacert" in p.stderr, p
    # A wrong key is still a 401 behind TLS.
    p = vmctl("--host", host, "--cacert", ca, "ls", env_extra={"SANDVM_API_KEY": "svk_wrong"})
    assert p.returncode == 125 and b"HTTP 401" in p.stderr, p
    for version, ok in (("-tls1_2", False), ("-tls1_3", True)):
        s = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % TLS_PORT, version,
                            "-CAfile", ca, "-verify_return_error", "-brief"],
                           input=b"", capture_output=True, timeout=30)
        out = s.stdout + s.stderr
        if ok:
            assert s.returncode == 0 and b"TLSv1.3" in out, out
        else:
            assert s.returncode != 0 and b"protocol version" in out, out


def metric_samples(text):
    """The samples of an exposition, read by the Prometheus client's strict parser."""
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(text):
        assert fam.type != "unknown", "family %s has no TYPE" % fam.name
        for s in fam.samples:
            key = s.name + ("{" + ",".join('%s="%s"' % kv for kv in sorted(s.labels.items())) + "}"
                            if s.labels else "")
            assert key not in out, "sample %s twice" % key
            out[key] = s.value
    return out


def scrape():
    st, data = request("GET", "/metrics", raw=True)
    assert st == 200, (st, data[:200])
    return data.decode(), metric_samples(data.decode())


def fw_totals(m):
    return {k: v for k, v in m.items() if k.startswith("sandvm_firewall_verdicts_total{")}


@case("api-metrics")
def _():
    # GET /metrics on the API listeners asks for the key like every route but health.
    assert request("GET", "/metrics", key=None, raw=True)[0] == 401
    _, m0 = scrape()
    assert request("POST", "/v1/sandboxes", {**MIN, "memory_mib": 60000})[0] == 429
    o = create({**MIN, "timeout": 600})
    sid, gw = o["id"], o.get("network", {}).get("gateway")
    out, err, end = run_exec(sid, ["sh", "-c", "echo hello; echo oops >&2"])
    assert out == b"hello\n" and err == b"oops\n", (out, err)
    if gw:
        # A connection to the host through the gateway: the egress firewall drops it (drop_host).
        run_exec(sid, ["sh", "-c", f"nc -w 2 {gw} 9 </dev/null; true"])
    st, net = request("GET", f"/v1/sandboxes/{sid}/network")
    assert st == 200, net
    text, m1 = scrape()
    assert sid not in text, "a sandbox id appears in the exposition"

    def d(key, a=m0, b=m1):
        return b.get(key, 0) - a.get(key, 0)
    assert d('sandvm_sandbox_creates_total{outcome="ready"}') >= 1, m1
    assert d('sandvm_sandbox_creates_total{outcome="rejected"}') >= 1, m1
    assert d("sandvm_sandbox_create_ready_seconds_count") >= 1
    assert d('sandvm_sandbox_create_ready_seconds_bucket{le="+Inf"}') >= 1
    assert m1['sandvm_sandboxes{state="running"}'] >= 1
    assert d("sandvm_execs_started_total") >= 2 - (0 if gw else 1)
    assert d('sandvm_execs_completed_total{reason="exited"}') >= 2 - (0 if gw else 1)
    assert d('sandvm_exec_output_bytes_total{stream="stdout"}') >= 6
    assert d('sandvm_exec_output_bytes_total{stream="stderr"}') >= 5
    assert m1['sandvm_connections_open{listener="unix"}'] >= 1
    assert d('sandvm_api_requests_total{code="2xx"}') >= 4
    assert d('sandvm_api_requests_total{code="4xx"}') >= 1  # the 429
    assert m1["process_resident_memory_bytes"] > 1 << 20 and m1["process_open_fds"] > 3
    assert 'sandvm_snapshot_images{key="managed"}' in m1
    assert m1['sandvm_isolation_state{state="unknown"}'] == 1
    if gw:
        # The VMM's counters of this sandbox are in the sums (which hold every sandbox's).
        counters = net["counters"]
        assert sum(counters.values()) > 0 and counters.get("drop_host", 0) > 0, counters
        for reason, n in counters.items():
            assert d('sandvm_firewall_verdicts_total{reason="%s"}' % reason) >= n, (reason, n, m0, m1)
    st, _ = request("POST", f"/v1/sandboxes/{sid}/terminate")
    assert st == 200
    request("GET", f"/v1/sandboxes/{sid}/wait?timeout=60")
    _, m2 = scrape()
    assert d('sandvm_sandbox_terminations_total{reason="terminated"}', m1, m2) >= 1
    # The VMM is gone; what it counted still counts (counters never go back).
    for k, v in fw_totals(m1).items():
        assert m2[k] >= v, (k, v, m2[k])
    request("DELETE", f"/v1/sandboxes/{sid}")
    # --metrics-listen: HTTPS (TLS 1.3, the CA of STATE/tls), GET /metrics alone, no key on loopback.
    import http.client
    import ssl
    ca = os.path.join(STATE, "tls", "ca.pem")
    ctx = ssl.create_default_context(cafile=ca)
    for path, want in (("/metrics", 200), ("/v1/health", 404), ("/v1/sandboxes", 404)):
        c = http.client.HTTPSConnection("127.0.0.1", METRICS_PORT, context=ctx, timeout=60)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        c.close()
        assert r.status == want, (path, r.status, body[:200])
        if want == 200:
            assert r.getheader("Content-Type").startswith("text/plain; version=0.0.4"), r.getheaders()
            assert metric_samples(body.decode())["sandvm_connections_open{listener=\"metrics\"}"] >= 1
    s = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % METRICS_PORT, "-tls1_2",
                        "-CAfile", ca, "-brief"], input=b"", capture_output=True, timeout=30)
    assert s.returncode != 0, s.stdout + s.stderr


@case("api-list-tags")
def _():
    other = create({**MIN, "tags": {"suite": "api", "n": "2"}, "timeout": 1800})["id"]
    shared["other"] = other
    ids = {s["id"] for s in request("GET", "/v1/sandboxes?tag=suite=api")[1]["sandboxes"]}
    assert {shared["sb"], other} <= ids, ids
    ids = [s["id"] for s in request("GET", "/v1/sandboxes?tag=suite=api&tag=n=2")[1]["sandboxes"]]
    assert ids == [other], ids
    assert request("GET", "/v1/sandboxes?tag=suite=nope")[1]["sandboxes"] == []


@case("api-name-conflict")
def _():
    st, o = request("POST", "/v1/sandboxes", {**MIN, "name": "first"})
    assert st == 409 and o["field"] == "name", (st, o)
    st, o = request("POST", "/v1/sandboxes", {**MIN, "name": "first", "app": "other", "timeout": 5})
    assert st == 201, (st, o)
    request("DELETE", f"/v1/sandboxes/{o['id']}")


@case("api-exec-stdin-stream")
def _():
    data = os.urandom(3 * 1024 * 1024)

    def chunks():
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]
    out, err, end = run_exec(shared["sb"], ["sh", "-c", "cat; echo done >&2"], stdin=chunks())
    assert out == data and err == b"done\n" and end[1]["returncode"] == 0, (len(out), err, end)


@case("api-exec-large-output")
def _():
    out, err, end = run_exec(shared["sb"], ["sh", "-c", "head -c 20000000 /dev/zero | tr '\\0' a"])
    assert len(out) == 20000000 and out.count(b"a") == 20000000 and end[1]["returncode"] == 0


@case("api-exec-timeout-signal")
def _():
    t = time.monotonic()
    out, err, end = run_exec(shared["sb"], ["sleep", "30"], timeout=1)
    assert end[1] == {"returncode": 124, "reason": "timeout"} and time.monotonic() - t < 15, end
    sid = shared["sb"]
    eid = request("POST", f"/v1/sandboxes/{sid}/execs", {"argv": ["sh", "-c", "echo up; exec sleep 60"]})[1]["id"]
    got = {}

    def reader():
        got["r"] = request("GET", f"/v1/sandboxes/{sid}/execs/{eid}/output", raw=True)
    th = threading.Thread(target=reader)
    th.start()
    time.sleep(1.0)
    st, _ = request("POST", f"/v1/sandboxes/{sid}/execs/{eid}/signal", {"signal": 15})
    assert st == 204, st
    th.join(30)
    out, err, end = frames(got["r"][1])
    assert out == b"up\n" and end[1]["returncode"] == 143, (out, end)
    st, o = request("POST", f"/v1/sandboxes/{sid}/execs/{eid}/signal", {"signal": 99})
    assert st in (400, 404), st


@case("api-exec-errors")
def _():
    sid = shared["sb"]
    out, err, end = run_exec(sid, ["/no/such/binary"])
    assert end[0] == 4 and end[1]["returncode"] == 127, end
    st, o = request("POST", f"/v1/sandboxes/{sid}/execs", {"argv": []})
    assert st == 400 and o["field"] == "argv"
    st, o = request("POST", f"/v1/sandboxes/{sid}/execs", {"argv": ["true"], "workdir": "rel"})
    assert st == 400 and o["field"] == "workdir"
    st, o = request("POST", f"/v1/sandboxes/{sid}/execs", {"argv": ["a" * 40000, "b" * 40000]})
    assert st == 400 and o["field"] == "argv"
    st, o = request("POST", "/v1/sandboxes/sb-nope/execs", {"argv": ["true"]})
    assert st == 404


@case("api-files")
def _():
    sid = shared["sb"]
    blob = os.urandom(1024 * 1024 + 17)
    st, _ = request("POST", f"/v1/sandboxes/{sid}/files/mkdir?path=/tmp/a/b&parents=1")
    assert st == 204, st
    st, _ = request("PUT", f"/v1/sandboxes/{sid}/files?path=/tmp/a/b/blob.bin&mode=0600", blob)
    assert st == 204, st
    st, got = request("GET", f"/v1/sandboxes/{sid}/files?path=/tmp/a/b/blob.bin", raw=True)
    assert st == 200 and got == blob, (st, len(got))
    st, o = request("GET", f"/v1/sandboxes/{sid}/files/stat?path=/tmp/a/b/blob.bin")
    assert st == 200 and o["type"] == "file" and o["size"] == len(blob) and o["mode"] == 0o600, o
    st, o = request("GET", f"/v1/sandboxes/{sid}/files/list?path=/tmp/a/b")
    assert st == 200 and [e["name"] for e in o["entries"]] == ["blob.bin"], o
    out, _, _ = run_exec(sid, ["sha256sum", "/tmp/a/b/blob.bin"])
    import hashlib
    assert out.split()[0].decode() == hashlib.sha256(blob).hexdigest()
    st, o = request("GET", f"/v1/sandboxes/{sid}/files?path=/tmp/missing")
    assert st == 404 and "error" in o, (st, o)
    st, o = request("DELETE", f"/v1/sandboxes/{sid}/files?path=/tmp/a")
    assert st == 409, (st, o)
    st, _ = request("DELETE", f"/v1/sandboxes/{sid}/files?path=/tmp/a&recursive=1")
    assert st == 204
    assert request("GET", f"/v1/sandboxes/{sid}/files/stat?path=/tmp/a")[0] == 404
    st, o = request("GET", f"/v1/sandboxes/{sid}/files?path=relative")
    assert st == 400 and o["field"] == "path"


@case("api-entrypoint-logs-wait")
def _():
    o = create({**MIN, "command": ["sh", "-c", "echo from-entrypoint; echo err-line >&2; sleep 1; exit 7"]})
    st, o = request("GET", f"/v1/sandboxes/{o['id']}/wait?timeout=60")
    assert st == 200 and o["state"] == "finished" and o["returncode"] == 7 and o["reason"] == "exited", o
    st, logs = request("GET", f"/v1/sandboxes/{o['id']}/logs", raw=True)
    assert b"from-entrypoint\n" in logs and b"err-line\n" in logs, logs


@case("api-sandbox-timeout")
def _():
    o = create({**MIN, "timeout": 3})
    st, o = request("GET", f"/v1/sandboxes/{o['id']}/wait?timeout=60")
    assert o["returncode"] == 124 and o["reason"] == "timeout", o
    st, e = request("POST", f"/v1/sandboxes/{o['id']}/execs", {"argv": ["true"]})
    assert st == 409, (st, e)


@case("api-idle-timeout")
def _():
    o = create({**MIN, "idle_timeout": 2})
    sid = o["id"]
    # A running exec keeps it alive past the idle timeout.
    out, _, end = run_exec(sid, ["sh", "-c", "sleep 4; echo alive"])
    assert out == b"alive\n", (out, end)
    st, o = request("GET", f"/v1/sandboxes/{sid}/wait?timeout=60")
    assert o["reason"] == "idle_timeout" and o["returncode"] == 124, o


@case("api-terminate-delete")
def _():
    sid = create()["id"]
    st, o = request("POST", f"/v1/sandboxes/{sid}/terminate")
    assert st == 200 and o["returncode"] == 137 and o["reason"] == "terminated", o
    st, _ = request("DELETE", f"/v1/sandboxes/{sid}")
    assert st == 204
    time.sleep(1)
    assert request("GET", f"/v1/sandboxes/{sid}")[0] == 404
    assert not os.path.exists(os.path.join(STATE, "sandboxes", sid)), "run dir left behind"


@case("api-concurrent-creates")
def _():
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        made = list(pool.map(lambda i: create({**MIN, "tags": {"batch": "c"}, "env": {"N": str(i)}}), range(6)))
        outs = list(pool.map(lambda o: run_exec(o["id"], ["sh", "-c", "echo $N"])[0], made))
    assert sorted(outs) == [f"{i}\n".encode() for i in range(6)], outs
    assert len({o["id"] for o in made}) == 6
    for o in made:
        request("DELETE", f"/v1/sandboxes/{o['id']}")


@case("api-memory-limit")
def _():
    st, o = request("POST", "/v1/sandboxes", {**MIN, "memory_mib": 60000})
    assert st == 429 and "limit" in o["error"], (st, o)


@case("api-restart-adopts")
def _():
    sid = shared["sb"]
    run_exec(sid, ["sh", "-c", "echo kept > /tmp/marker"])
    victim = shared["other"]
    pid = json.load(open(os.path.join(STATE, "sandboxes", victim, "sandbox.json")))["pid"]
    daemon.stop()
    os.kill(pid, signal.SIGKILL)  # this VM dies while the daemon is down
    time.sleep(0.5)
    daemon.start()
    st, o = request("GET", f"/v1/sandboxes/{sid}")
    assert st == 200 and o["state"] == "running", o
    out, _, end = run_exec(sid, ["cat", "/tmp/marker"])
    assert out == b"kept\n", (out, end)
    st, o = request("GET", f"/v1/sandboxes/{victim}")
    assert o["state"] == "finished" and o["reason"] == "failed" and "down" in o["message"], o


def vmctl(*args, stdin=b"", env_extra=None, timeout=300):
    env = dict(os.environ, SANDVM_HOST="unix://" + SOCK, SANDVM_API_KEY=KEY)
    env.update(env_extra or {})
    return subprocess.run([VMCTL, *args], input=stdin, capture_output=True, env=env, timeout=timeout)


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True)


@case("api-warm-start", limit=600)
def _():
    # Two sandboxes of one shape restored from its template (docs/architecture.md, "Templates"): each
    # is its own machine (entropy, MAC, addresses, machine-id, hostname, clock) and reaches only its
    # own allowlist. Peers 203.0.113.7 and .8 in a network namespace routed through this host.
    setup = ("ip netns add svwarm && ip link add svwarm-h type veth peer name svwarm-p && "
             "ip link set svwarm-p netns svwarm && ip addr add 203.0.113.1/24 dev svwarm-h && "
             "ip link set svwarm-h up && ip -n svwarm addr add 203.0.113.7/24 dev svwarm-p && "
             "ip -n svwarm addr add 203.0.113.8/24 dev svwarm-p && ip -n svwarm link set svwarm-p up && "
             "ip -n svwarm link set lo up && ip -n svwarm route add default via 203.0.113.1")
    p = sh(setup)
    assert p.returncode == 0, p.stderr
    peer = subprocess.Popen(["ip", "netns", "exec", "svwarm", "python3", "-c",
                             "import socket\n"
                             "t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                             "t.bind(('0.0.0.0', 8080)); t.listen(8); print('listening', flush=True)\n"
                             "while True:\n"
                             "    c, _ = t.accept(); c.close()\n"], stdout=subprocess.PIPE)
    sids = []
    try:
        assert peer.stdout.readline() == b"listening\n"
        spec = {"image": "debian", "memory_mib": 384, "timeout": 600}
        for allow in ("203.0.113.7/32", "203.0.113.8/32"):
            o = create(dict(spec, cidr_allowlist=[allow]))
            sids.append(o["id"])
            assert o["start"] == "warm", (o.get("start"), o.get("start_reason"))
        ident = ("import os, socket, fcntl, struct, time\n"
                 "s = socket.socket()\n"
                 "ip = socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, struct.pack('256s', b'eth0'))[20:24])\n"
                 "print(os.urandom(16).hex(), open('/sys/class/net/eth0/address').read().strip(), ip,\n"
                 "      open('/etc/machine-id').read().strip(), socket.gethostname(), repr(time.time()))\n")
        seen = []
        for sid in sids:
            before = time.time()
            out, err, end = run_exec(sid, ["python3", "-c", ident])
            after = time.time()
            f = out.decode().split()
            assert len(f) == 6, (out, err)
            o = request("GET", f"/v1/sandboxes/{sid}")[1]
            assert f[2] == o["network"]["ip"], (f, o["network"])
            assert f[4] == sid, ("hostname", f[4], sid)
            # The guest's clock is the host's (the template's was minutes old), within 1 s.
            assert before - 1 <= float(f[5]) <= after + 1, (before, f[5], after)
            seen.append(f)
        for i in range(5):
            assert seen[0][i] != seen[1][i], ("the clones share", ["entropy", "MAC", "IP", "machine-id",
                                                                  "hostname"][i], seen)
        probe = ("import socket, sys\n"
                 "for a in sys.argv[1:]:\n"
                 "    try: socket.create_connection((a, 8080), timeout=3).close(); print(a, 'ok')\n"
                 "    except OSError: print(a, 'fail')\n")
        for sid, mine in zip(sids, ("203.0.113.7", "203.0.113.8")):
            out, err, end = run_exec(sid, ["python3", "-c", probe, "203.0.113.7", "203.0.113.8"])
            want = [f"{a} {'ok' if a == mine else 'fail'}" for a in ("203.0.113.7", "203.0.113.8")]
            assert out.decode().splitlines() == want, (sid, out, err)
        # Asked to boot: the same shape, cold, and it says so.
        o = create(dict(spec, cold_boot=True))
        sids.append(o["id"])
        assert o["start"] == "cold", o.get("start")
        shared["warm_ready"] = True
    finally:
        for sid in sids:
            request("DELETE", f"/v1/sandboxes/{sid}")
        peer.kill()
        peer.wait()
        sh("ip netns del svwarm; ip link del svwarm-h")


def guest_count(sid):
    out, _, end = run_exec(sid, ["cat", "/tmp/count"])
    return int(out.decode().strip() or "0")


def vmm_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


@case("api-pause-resume")
def _():
    """A paused sandbox's processes stand still and its files stay; it resumes where it was,
    also after sandboxd restarted; its VMM is gone while paused; its memory on disk is sealed."""
    sid = create({**MIN, "timeout": 900})["id"]
    folder = os.path.join(STATE, "sandboxes", sid)
    # About 1 MiB of a random token in guest RAM: in /tmp (memory) and held by a process.
    token = "SANDVM-RAM-MARKER-" + secrets.token_hex(16)
    run_exec(sid, ["sh", "-c", f"i=0; while [ $i -lt 20000 ]; do echo {token}; i=$((i+1)); done > /tmp/marker; "
                   "setsid sh -c 'm=$(cat /tmp/marker); sleep 100000' </dev/null >/dev/null 2>&1 &"])
    run_exec(sid, ["sh", "-c", "echo kept > /tmp/paused-file; setsid sh -c 'i=0; while :; do i=$((i+1)); "
                   "echo $i > /tmp/count.n; mv /tmp/count.n /tmp/count; sleep 0.1; done' </dev/null >/dev/null 2>&1 &"])
    time.sleep(1.5)
    c0 = guest_count(sid)
    time.sleep(1)
    rate = guest_count(sid) - c0  # counts per second of this L1's guest
    assert rate > 0, "the counter does not count"
    pid = json.load(open(os.path.join(folder, "sandbox.json")))["pid"]
    c1 = guest_count(sid)
    st, o = request("POST", f"/v1/sandboxes/{sid}/pause")
    assert st == 200 and o["state"] == "paused", (st, o)
    assert not vmm_alive(pid), "the VMM still runs while paused"
    for name in ("state", "memory", "key"):
        f = os.stat(os.path.join(folder, "pause", name))
        assert f.st_uid == 0 and f.st_mode & 0o777 == 0o600, (name, oct(f.st_mode))
    assert os.path.getsize(os.path.join(folder, "pause", "key")) == 61
    # Sealed: no page of guest RAM in clear, the marker nowhere in the file.
    needle, tail = token.encode(), b""
    with open(os.path.join(folder, "pause", "state"), "rb") as f:
        assert f.read(8) == b"SVSTSEAL", "the state file is not sealed"
    with open(os.path.join(folder, "pause", "memory"), "rb") as f:
        assert f.read(8) == b"SANDVMIM", "the memory file is not sealed"
        f.seek(0)
        while True:
            block = f.read(4 << 20)
            if not block:
                break
            assert needle not in tail + block, "the guest's memory is on disk in clear"
            tail = block[-len(needle):]
    st, o = request("POST", f"/v1/sandboxes/{sid}/execs", {"argv": ["true"]})
    assert st == 409 and "paused" in o["error"], (st, o)
    paused_s = 4
    time.sleep(paused_s)
    st, o = request("POST", f"/v1/sandboxes/{sid}/resume")
    assert st == 200 and o["state"] == "running", (st, o)
    assert not os.path.exists(os.path.join(folder, "pause")), "the spent snapshot was kept"
    c2 = guest_count(sid)
    # It counted on from where it stood: far less than the paused seconds' worth.
    assert c1 <= c2 < c1 + max(rate * paused_s // 2, 3), (c1, c2, rate)
    out, _, _ = run_exec(sid, ["cat", "/tmp/paused-file"])
    assert out == b"kept\n", out
    out, _, _ = run_exec(sid, ["sh", "-c", f"grep -c {token} /tmp/marker"])
    assert out == b"20000\n", out
    time.sleep(1)
    assert guest_count(sid) > c2, "the counter stopped after the resume"
    # Paused, sandboxd restarted, resumed (through vmctl).
    r = vmctl("pause", sid)
    assert r.returncode == 0, r.stderr
    daemon.stop()
    daemon.start()
    st, o = request("GET", f"/v1/sandboxes/{sid}")
    assert st == 200 and o["state"] == "paused", o
    r = vmctl("resume", sid)
    assert r.returncode == 0, r.stderr
    out, _, _ = run_exec(sid, ["sh", "-c", "cat /tmp/paused-file; echo after-restart"])
    assert out == b"kept\nafter-restart\n", out
    c3 = guest_count(sid)
    time.sleep(1)
    assert guest_count(sid) > c3, "the counter stopped after the second resume"
    request("DELETE", f"/v1/sandboxes/{sid}")



@case("api-network", limit=600)
def _():
    # A peer in a network namespace, routed through this host (the L1): the
    # daemon's NAT masquerades the sandbox to it. The sandbox (Debian) probes it
    # under each policy, changed at run time through the API. The peer also
    # has addresses on two private networks of the worker's: 172.30.8.0/24 and
    # fd30:8::/64, which the daemon opens (--allow-private-egress, main()), and
    # 172.30.9.0/24 and fd30:9::/64, which stay closed.
    setup = ("ip netns add svapi && ip link add svapi-h type veth peer name svapi-p && "
             "ip link set svapi-p netns svapi && ip addr add 198.51.100.1/24 dev svapi-h && "
             "ip link set svapi-h up && ip -n svapi addr add 198.51.100.7/24 dev svapi-p && "
             "ip -n svapi link set svapi-p up && ip -n svapi link set lo up && "
             "ip -n svapi route add default via 198.51.100.1 && "
             "ip addr add 2001:db8:a::1/64 dev svapi-h nodad && "
             "ip -n svapi addr add 2001:db8:a::7/64 dev svapi-p nodad && "
             "ip -n svapi -6 route add default via 2001:db8:a::1")
    for net in ("172.30.8", "172.30.9"):
        setup += f" && ip addr add {net}.1/24 dev svapi-h && ip -n svapi addr add {net}.7/24 dev svapi-p"
    for net in ("fd30:8", "fd30:9"):
        setup += f" && ip addr add {net}::1/64 dev svapi-h nodad && ip -n svapi addr add {net}::7/64 dev svapi-p nodad"
    p = sh(setup)
    assert p.returncode == 0, p.stderr
    peer = subprocess.Popen(["ip", "netns", "exec", "svapi", "python3", "-c",
                             "import socket\n"
                             "t = socket.socket(socket.AF_INET6); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                             "t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n"
                             "t.bind(('::', 8080)); t.listen(8); print('listening', flush=True)\n"
                             "while True:\n"
                             "    c, _ = t.accept(); c.settimeout(5)\n"
                             "    try: c.sendall(c.recv(64))\n"
                             "    except OSError: pass\n"
                             "    c.close()\n"], stdout=subprocess.PIPE)
    try:
        assert peer.stdout.readline() == b"listening\n"
        st, o = request("POST", "/v1/sandboxes", {"image": "debian", "block_network": True,
                                                   "cidr_allowlist": ["198.51.100.0/24"]})
        assert st == 400 and o["field"] == "cidr_allowlist", (st, o)
        st, o = request("POST", "/v1/sandboxes", {"image": "debian", "cidr_allowlist": ["198.51.100.1/24"]})
        assert st == 400 and o["field"] == "cidr_allowlist", (st, o)
        o = create({"image": "debian", "memory_mib": 384, "timeout": 900,
                    "cidr_allowlist": ["198.51.100.0/24", "2001:db8:a::/48"]})
        sid, tap = o["id"], o["network"]["tap"]
        assert o["network"]["mode"] == "allowlist" and o["network"]["ip"].startswith("10.200."), o
        assert sh(f"ip link show {tap}").returncode == 0, "no tap on the host"
        with open(os.path.join(os.path.dirname(__file__), "net_probe.py"), "rb") as f:
            assert request("PUT", f"/v1/sandboxes/{sid}/files?path=/tmp/net_probe.py", f.read())[0] == 204

        def probe(*targets):
            out, err, end = run_exec(sid, ["python3", "/tmp/net_probe.py", *targets])
            return out.decode().splitlines()
        assert o["network"].get("ip6", "").startswith("fd53:5356:"), o["network"]
        time.sleep(2)  # IPv6 neighbour discovery settles
        assert probe("tcp:198.51.100.7", "tcp:198.51.100.1", "tcp:2001:db8:a::7", "tcp:2001:db8:a::1") == [
            "tcp 198.51.100.7 ok", "tcp 198.51.100.1 fail", "tcp 2001:db8:a::7 ok", "tcp 2001:db8:a::1 fail"]
        st, n = request("GET", f"/v1/sandboxes/{sid}/network")
        assert st == 200 and n["mode"] == "allowlist" and n["counters"]["pass_allowlist"] > 0 and \
            n["counters"]["drop_host"] > 0, n
        # The reply is the VMM's word: its mode and list sizes (deny, allow_private: only its reply has them).
        st, n = request("PUT", f"/v1/sandboxes/{sid}/network", {"block_network": True})
        assert st == 200 and n["mode"] == "block" and n["deny"] > 0 and n["allow_private"] == 2, (st, n)
        assert request("GET", f"/v1/sandboxes/{sid}")[1]["network"]["mode"] == "block"
        assert probe("tcp:198.51.100.7") == ["tcp 198.51.100.7 fail"]
        assert request("GET", f"/v1/sandboxes/{sid}/network")[1]["counters"]["drop_blocked"] > 0
        p = vmctl("net", "set", sid, "--open")
        assert p.returncode == 0, p
        assert probe("tcp:198.51.100.7", "tcp:198.51.100.1") == ["tcp 198.51.100.7 ok", "tcp 198.51.100.1 fail"]
        p = vmctl("net", "show", sid, "--json")
        assert p.returncode == 0 and json.loads(p.stdout)["mode"] == "open", p

        # The worker's private networks: the daemon's opt-in reaches, the other is closed.
        assert probe("tcp:172.30.8.7", "tcp:fd30:8::7", "tcp:172.30.9.7", "tcp:fd30:9::7") == [
            "tcp 172.30.8.7 ok", "tcp fd30:8::7 ok", "tcp 172.30.9.7 fail", "tcp fd30:9::7 fail"]
        st, n = request("GET", f"/v1/sandboxes/{sid}/network")
        assert st == 200 and n["allow_private"] == 2 and n["counters"]["drop_private"] > 0, n
        # An allowlist entry inside a private network opens it; the opt-in still needs the list.
        st, n = request("PUT", f"/v1/sandboxes/{sid}/network",
                        {"cidr_allowlist": ["172.30.9.0/24", "198.51.100.0/24"]})
        assert st == 200 and n["mode"] == "allowlist" and n["allow"] == 2, (st, n)
        assert probe("tcp:172.30.9.7", "tcp:172.30.8.7", "tcp:198.51.100.7") == [
            "tcp 172.30.9.7 ok", "tcp 172.30.8.7 fail", "tcp 198.51.100.7 ok"]
        # An allowlist that merely holds it does not.
        st, n = request("PUT", f"/v1/sandboxes/{sid}/network", {"cidr_allowlist": ["0.0.0.0/0", "::/0"]})
        assert st == 200 and n["mode"] == "allowlist", (st, n)
        assert probe("tcp:172.30.9.7", "tcp:fd30:9::7", "tcp:198.51.100.7") == [
            "tcp 172.30.9.7 fail", "tcp fd30:9::7 fail", "tcp 198.51.100.7 ok"]

        # A VMM that does not answer: 504 after the daemon's 10 s, and the mode recorded and in
        # force stays allowlist (the change it asked for is withdrawn, so it cannot land late).
        with open(os.path.join(STATE, "sandboxes", sid, "sandbox.json")) as f:
            vmm_pid = json.load(f)["pid"]
        # Meanwhile a second change is refused rather than raced.
        got = {}

        def slow_put():
            got["r"] = request("PUT", f"/v1/sandboxes/{sid}/network", {"block_network": True}, timeout=60)
        # With the jail the recorded pid is the keeper: the VMM that must stop answering is its child.
        try:
            with open(f"/proc/{vmm_pid}/task/{vmm_pid}/children") as f:
                vmm_pid = int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            pass
        os.kill(vmm_pid, signal.SIGSTOP)
        try:
            t = time.monotonic()
            th = threading.Thread(target=slow_put)
            th.start()
            time.sleep(1)
            second = request("PUT", f"/v1/sandboxes/{sid}/network", {}, timeout=30)
            th.join(60)
            took = time.monotonic() - t
        finally:
            os.kill(vmm_pid, signal.SIGCONT)
        assert second[0] == 409, second
        st, n = got["r"]
        assert st == 504 and 8 < took < 40, (st, n, took)
        assert request("GET", f"/v1/sandboxes/{sid}")[1]["network"]["mode"] == "allowlist"
        st, n = request("GET", f"/v1/sandboxes/{sid}/network")
        assert st == 200 and n["mode"] == "allowlist", (st, n)
        assert probe("tcp:198.51.100.7") == ["tcp 198.51.100.7 ok"]
        request("DELETE", f"/v1/sandboxes/{sid}")
        for _ in range(50):
            if sh(f"ip link show {tap}").returncode != 0:
                break
            time.sleep(0.2)
        assert sh(f"ip link show {tap}").returncode != 0, f"tap {tap} left behind"
    finally:
        peer.kill()
        sh("ip netns del svapi; ip link del svapi-h")


@case("vmctl-exec")
def _():
    sid = shared["sb"]
    p = vmctl("exec", sid, "--", "sh", "-c", "echo out; echo err >&2; exit 42")
    assert p.returncode == 42 and p.stdout == b"out\n" and p.stderr.endswith(b"err\n"), p
    p = vmctl("exec", sid, "--", "sh", "-c", "tr a-z A-Z", stdin=b"piped input\n")
    assert p.returncode == 0 and p.stdout == b"PIPED INPUT\n", p
    p = vmctl("ls", "--json")
    assert p.returncode == 0 and sid in p.stdout.decode(), p
    p = vmctl("exec", "sb-0000000000000000", "--", "true")
    assert p.returncode == 125 and b"no sandbox" in p.stderr, p


@case("vmctl-ctrl-c")
def _():
    # Ctrl-C at vmctl reaches the process in the guest, which dies of it (130).
    env = dict(os.environ, SANDVM_HOST="unix://" + SOCK, SANDVM_API_KEY=KEY)
    p = subprocess.Popen([VMCTL, "exec", shared["sb"], "--", "sh", "-c", "echo started; exec sleep 60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert p.stdout.readline() == b"started\n"
    t = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130 and time.monotonic() - t < 20, (p.returncode, err)


@case("vmctl-run-restricted")
def _():
    code = ("import os, socket\n"
            "print('key' if any('SANDVM' in k for k in os.environ) else 'nokey')\n"
            # No network device but loopback (sit0 is the kernel's idle IPv6-in-IPv4 stub), no route.
            "print(sorted(set(os.listdir('/sys/class/net')) - {'sit0'}))\n"
            "print(len(open('/proc/net/route').read().splitlines()) - 1)\n"
            # The host (CID 2) answers no vsock port but the ones the VMM serves: not the API.
            "for port in (1024, 80, 443, 8080):\n"
            "  s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM); s.settimeout(3)\n"
            "  try:\n"
            "    s.connect((2, port)); print('reached', port)\n"
            "  except OSError as e:\n"
            "    print('refused', port)\n"
            "print(6 * 7)\n")
    before = set(os.listdir(os.path.join(STATE, "sandboxes")))
    p = vmctl("run", "--restricted", "--block-network", "--timeout", "60", "--", "python3", "-c", code)
    out = p.stdout.decode()
    assert p.returncode == 0, p
    assert out.splitlines() == ["nokey", "['lo']", "0", "refused 1024", "refused 80", "refused 443",
                                "refused 8080", "42"], out
    time.sleep(1)
    after = set(os.listdir(os.path.join(STATE, "sandboxes")))
    assert after <= before, f"sandbox left behind: {after - before}"


@case("api-image-built-on-first-use", limit=900)
def _():
    # A second daemon whose images folder lacks the initramfs, with a builder
    # that makes it slowly and says so: creates wait for it, vmctl shows progress.
    images = os.path.join(TMP, "images2")
    os.makedirs(images, exist_ok=True)
    os.symlink(os.path.abspath(os.path.join(BUILD, "guest", "vmlinux")), os.path.join(images, "vmlinux"))
    builder = os.path.join(TMP, "builder.sh")
    src = os.path.abspath(os.path.join(BUILD, "guest", "initramfs.cpio.gz"))
    with open(builder, "w") as f:
        f.write(f"#!/bin/sh\necho \"building $1 into $2\"\nfor i in 1 2 3; do echo \"step $i of 3\"; sleep 1.5; done\n"
                f"cp {src} \"$2\"\necho done\n")
    os.chmod(builder, 0o755)
    sock2 = os.path.join(TMP, "sandboxd2.sock")
    log = open(os.path.join(RESULTS, "sandboxd2.log"), "wb")
    d2 = subprocess.Popen([SANDBOXD, "--state-dir", os.path.join(TMP, "state2"), "--socket", sock2,
                           "--images", images, "--image-builder", builder, "--no-net"],
                          stdout=log, stderr=log)
    try:
        key2 = subprocess.run([SANDBOXD, "--state-dir", os.path.join(TMP, "state2"), "--new-key", "t"],
                              capture_output=True, check=True).stdout.decode().strip()
        for _ in range(100):
            if os.path.exists(sock2):
                break
            time.sleep(0.05)
        env = {"SANDVM_HOST": "unix://" + sock2, "SANDVM_API_KEY": key2}
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda i: vmctl("create", "--image", "minimal", "--memory", "128",
                                                  env_extra=env), range(2)))
        for p in runs:
            assert p.returncode == 0 and p.stdout.decode().startswith("sb-"), p
        err = b"".join(p.stderr for p in runs)
        assert b"building image minimal: step" in err, err
        assert os.path.exists(os.path.join(images, "initramfs.cpio.gz"))
        with open(os.path.join(RESULTS, "sandboxd2.log"), "rb") as f:
            assert f.read().count(b"not built yet; building it") == 1, "the image was built twice"
        for p in runs:
            vmctl("rm", p.stdout.decode().strip(), env_extra=env)
    finally:
        d2.terminate()
        d2.wait(30)

# ---- encrypted snapshot images (docs/image-format.md) ----

SNAP = {"image": "debian", "memory_mib": 512, "timeout": 1800}
PROJECT_SETUP = r"""set -e
mkdir -p /project/sub /project/many
echo 'private data' > /project/secret.txt
chmod 0640 /project/secret.txt
: > /project/empty
ln -s secret.txt /project/link
head -c 209715200 /dev/urandom > /project/big.bin
for i in $(seq 1 1000); do echo "file $i" > /project/many/f$i; done
cd /project && sha256sum big.bin > /tmp/big.sha
"""
PROJECT_CHECK = r"""set -e
cd "$1"
cat secret.txt
stat -c '%a %s' secret.txt empty
readlink link
ls many | wc -l
cat many/f777
sha256sum big.bin
"""


def key_file(name, n):
    path = os.path.join(TMP, name)
    with open(path, "wb") as f:
        f.write(os.urandom(n))
    return path


def guest(sid, script, *args):
    out, err, end = run_exec(sid, ["sh", "-c", script, "sh", *args])
    return out.decode(errors="replace"), err.decode(errors="replace"), end[1]["returncode"]


def mounted(sid, path):
    out, _, _ = guest(sid, "grep -c \" $1 \" /proc/mounts || true", path)
    return out.strip() != "0"


@case("api-snapshot-csek", limit=900)
def _():
    a = create(SNAP)["id"]
    out, err, code = guest(a, PROJECT_SETUP)
    assert code == 0, (out, err)
    want_sha = guest(a, "cat /tmp/big.sha")[0].split()[0]
    k = key_file("key32", 32)
    p = vmctl("snapshot-dir", a, "/project", "--key-file", k, timeout=700)
    assert p.returncode == 0, p
    img = p.stdout.decode().strip()
    assert len(img) == 32 and p.stdout.decode() == img + "\n", p.stdout
    shared["csek_image"], shared["csek_key"] = img, k
    assert vmctl("terminate", a).returncode == 0
    b = create(SNAP)["id"]
    shared["snap_sb"] = b
    # Wrong key, no key, keys of 15 and 513 bytes: refused, nothing mounted.
    p = vmctl("mount", b, "/project", img, "--key-file", key_file("wrong", 32))
    assert p.returncode == 125 and b"wrong key" in p.stderr, p
    p = vmctl("mount", b, "/project", img)
    assert p.returncode == 125 and b"missing key" in p.stderr, p
    for n in (15, 513):
        p = vmctl("mount", b, "/project", img, "--key-file", key_file(f"k{n}", n))
        assert p.returncode == 2 and b"16..512" in p.stderr, p
        st, o = request("POST", f"/v1/sandboxes/{b}/mounts",
                        {"path": "/project", "image": img,
                         "key": __import__("base64").b64encode(os.urandom(n)).decode()})
        assert st == 400 and "16..512" in o["error"], (st, o)
    assert not mounted(b, "/project")
    p = vmctl("mount", b, "/project", img, "--key-file", k)
    assert p.returncode == 0, p
    out, err, code = guest(b, PROJECT_CHECK, "/project")
    assert code == 0, (out, err)
    lines = out.splitlines()
    assert lines[0] == "private data", lines
    assert lines[1] == "640 13" and lines[2].endswith(" 0"), lines
    assert lines[3] == "secret.txt" and lines[4] == "1000" and lines[5] == "file 777", lines
    assert lines[6].split()[0] == want_sha, (lines[6], want_sha)
    st, o = request("GET", f"/v1/sandboxes/{b}")
    assert o["mounts"] == [{"path": "/project", "image": img}], o
    # Writes go to the overlay; the image stays as it was.
    assert guest(b, "echo changed > /project/secret.txt && sync")[2] == 0
    assert vmctl("unmount", b, "/project").returncode == 0
    assert not mounted(b, "/project")
    assert vmctl("mount", b, "/data", img, "--key-file", k).returncode == 0
    assert guest(b, "cat /data/secret.txt")[0] == "private data\n"
    assert vmctl("unmount", b, "/data").returncode == 0


@case("api-snapshot-reseal", limit=900)
def _():
    # A small customer-key image, mounted, then snapshotted again with a new key and with none.
    b, k = shared["snap_sb"], shared["csek_key"]
    assert guest(b, "mkdir -p /src && echo 'private data' > /src/secret.txt")[2] == 0
    p = vmctl("snapshot-dir", b, "/src", "--key-file", k, timeout=700)
    assert p.returncode == 0, p
    img = p.stdout.decode().strip()
    assert vmctl("mount", b, "/data2", img, "--key-file", k).returncode == 0
    k2 = key_file("key-new", 48)
    p = vmctl("snapshot-dir", b, "/data2", "--key-file", k2, timeout=700)
    assert p.returncode == 0, p
    img2 = p.stdout.decode().strip()
    p = vmctl("snapshot-dir", b, "/data2", "--ttl", "none", timeout=700)
    assert p.returncode == 0, p
    img3 = p.stdout.decode().strip()
    assert len({img, img2, img3}) == 3
    st, o = request("GET", f"/v1/snapshots/{img3}")
    assert o["key"] == "managed" and o["ttl"] is None and o["expires"] is None, o
    # Each image is tied to the key it was made with.
    p = vmctl("mount", b, "/resealed", img2, "--key-file", k)
    assert p.returncode == 125 and b"wrong key" in p.stderr, p
    assert vmctl("mount", b, "/resealed", img2, "--key-file", k2).returncode == 0
    assert vmctl("mount", b, "/managed", img3).returncode == 0
    out = guest(b, "cat /resealed/secret.txt /managed/secret.txt")[0]
    assert out.splitlines() == ["private data", "private data"], out
    p = vmctl("mount", b, "/x", img3, "--key-file", k)
    assert p.returncode == 125 and b"managed" in p.stderr, p
    p = vmctl("images")
    assert p.returncode == 0 and img3.encode() in p.stdout and b"managed" in p.stdout, p
    shared["managed_image"] = img3
    for path in ("/resealed", "/managed", "/data2"):
        assert vmctl("unmount", b, path).returncode == 0, path


def copy_image(src, tamper):
    """A copy of image src under a fresh id, its bytes changed by tamper(bytearray)."""
    new = os.urandom(16).hex()
    store = os.path.join(STATE, "snapshots")
    data = bytearray(open(os.path.join(store, src + ".img"), "rb").read())
    tamper(data)
    open(os.path.join(store, new + ".img"), "wb").write(data)
    rec = json.load(open(os.path.join(store, src + ".json")))
    rec["id"] = new
    json.dump(rec, open(os.path.join(store, new + ".json"), "w"))
    return new


def chunk_table(data):
    count, data_off = struct.unpack_from("<Q", data, 32)[0], struct.unpack_from("<Q", data, 48)[0]
    entries = [struct.unpack_from("<QII", data, 512 + 16 * i) for i in range(count)]
    return data_off, entries


@case("api-snapshot-tamper", limit=600)
def _():
    b, img, k = shared["snap_sb"], shared["csek_image"], shared["csek_key"]
    tool = os.path.join(BUILD, "bin", "sandvm-image")

    def flip(d):
        _, entries = chunk_table(d)
        big = [e for e in entries if e[1] == 262144 + 16]  # whole random chunks: the big file
        off = big[len(big) // 2][0] + 1000
        d[off] ^= 0x40

    def swap(d):
        _, entries = chunk_table(d)
        big = [e for e in entries if e[1] == 262144 + 16]
        x, y = big[len(big) // 3], big[2 * len(big) // 3]
        d[x[0]:x[0] + x[1]], d[y[0]:y[0] + y[1]] = d[y[0]:y[0] + y[1]], d[x[0]:x[0] + x[1]]

    def truncate(d):
        del d[len(d) - 4096:]

    # The image's own file is tampered with (the id is in its authenticated header, so a tampered
    # copy under another name would be refused for that alone), and put back afterwards; a file is
    # replaced by a rename, so a VMM that has the original open keeps reading the original.
    path = os.path.join(STATE, "snapshots", img + ".img")
    original = open(path, "rb").read()

    def replace(data):
        open(path + ".tmp", "wb").write(data)
        os.replace(path + ".tmp", path)

    try:
        for name, fn in (("flip", flip), ("swap", swap), ("truncate", truncate)):
            data = bytearray(original)
            fn(data)
            replace(data)
            v = subprocess.run([tool, "verify", path, "--key-file", k], capture_output=True)
            assert v.returncode != 0, (name, v)
            p = vmctl("mount", b, "/t-" + name, img, "--key-file", k)
            if name == "truncate":
                assert p.returncode == 125 and b"truncated" in p.stderr, (name, p)
                assert not mounted(b, "/t-" + name)
                continue
            assert p.returncode == 0, (name, p)
            out, err, code = guest(b, "sha256sum /t-$1/big.bin", name)
            assert code != 0 and "Input/output error" in err, (name, out, err, code)
            assert vmctl("unmount", b, "/t-" + name).returncode == 0
    finally:
        replace(original)
    # An intact image under another image's name (same key) is not mounted as that image.
    renamed = copy_image(img, lambda d: None)
    p = vmctl("mount", b, "/t-renamed", renamed, "--key-file", k)
    assert p.returncode != 0 and b"holds image " + img.encode() in p.stderr, p
    assert not mounted(b, "/t-renamed")
    log = open(os.path.join(STATE, "sandboxes", b, "vmm.log"), "rb").read()
    assert b"failed authentication" in log, log[-2000:]


@case("api-snapshot-retention", limit=900)
def _():
    b = shared["snap_sb"]
    assert guest(b, "mkdir -p /small && echo x > /small/f")[2] == 0
    p = vmctl("snapshot-dir", b, "/small", "--ttl", "1", timeout=900)
    assert p.returncode == 0, p
    short = p.stdout.decode().strip()
    p = vmctl("snapshot-dir", b, "/small", timeout=900)
    assert p.returncode == 0, p
    fresh = p.stdout.decode().strip()
    time.sleep(2)
    daemon.stop()
    # The managed key is replaced while the daemon is down; managed images stay readable.
    master = os.path.join(STATE, "snapshots", "managed.key")
    before = open(master, "rb").read()
    rot = subprocess.run([SANDBOXD, "--state-dir", STATE, "--rotate-managed-key"], capture_output=True)
    assert rot.returncode == 0 and b"re-wrapped" in rot.stderr, rot
    assert open(master, "rb").read() != before and os.stat(master).st_mode & 0o077 == 0
    daemon.start()  # the sweep runs at start, then every --image-sweep seconds
    store = os.path.join(STATE, "snapshots")
    for _ in range(50):
        if not os.path.exists(os.path.join(store, short + ".img")):
            break
        time.sleep(0.1)
    assert not os.path.exists(os.path.join(store, short + ".img")), "expired image kept"
    assert not os.path.exists(os.path.join(store, short + ".key")), "its key kept"
    assert request("GET", f"/v1/snapshots/{short}")[0] == 404
    assert os.path.exists(os.path.join(store, fresh + ".img")), "fresh image removed"
    assert os.path.exists(os.path.join(store, shared["managed_image"] + ".img"))
    assert vmctl("mount", b, "/managed", shared["managed_image"]).returncode == 0
    assert guest(b, "cat /managed/secret.txt")[0] == "private data\n"
    assert vmctl("unmount", b, "/managed").returncode == 0
    assert vmctl("image", "rm", fresh).returncode == 0
    assert not os.path.exists(os.path.join(store, fresh + ".img"))
    assert not os.path.exists(os.path.join(store, fresh + ".key")), "deleted image left its key"
    assert vmctl("rm", b).returncode == 0



def cleanup():
    """Stops the daemon and every VMM it left, keeps their logs, removes their
    taps, and checks the daemon's log for the API key (api-log-hygiene)."""
    try:
        daemon.stop()
    except Exception:  # noqa: BLE001
        daemon.proc.kill()
    for d in os.listdir(os.path.join(STATE, "sandboxes")):
        try:
            pid = json.load(open(os.path.join(STATE, "sandboxes", d, "sandbox.json")))["pid"]
            if pid > 1:  # a paused sandbox has no VMM (-1): kill(-1) would be everything
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass
    # Each sandbox's console and VMM log, for whoever reads a failure.
    keep_sandbox_logs(STATE, os.path.join(RESULTS, "sandboxes"))
    # VMMs killed above leave their persistent taps: sandboxd removes them when it
    # sees the VMM gone, but it is stopped; clean up what this run made.
    sh("for t in $(ls /sys/class/net | grep '^sbx'); do ip link del $t; done")
    with open(os.path.join(RESULTS, "sandboxd.log"), "rb") as f:
        log = f.read()
    if KEY.encode() in log:
        print("FAIL api-log-hygiene: the API key appears in the daemon log", flush=True)
    else:
        print("OK api-log-hygiene", flush=True)


def main():
    global KEY, daemon
    os.makedirs(RESULTS, exist_ok=True)
    KEY = subprocess.run([SANDBOXD, "--state-dir", STATE, "--new-key", "tests"], capture_output=True,
                         check=True).stdout.decode().strip()
    with open(os.path.join(STATE, "api-keys")) as f:
        assert KEY not in f.read(), "the key itself was stored"
    # The worker opens one private network of api-network's peer, and leaves another closed.
    daemon = Daemon("--max-memory", "3000", "--max-sandboxes", "16",
                    "--allow-private-egress", "172.30.8.0/24,fd30:8::/64",
                    "--listen", "127.0.0.1:" + str(TLS_PORT),
                    "--metrics-listen", "127.0.0.1:" + str(METRICS_PORT))
    daemon.start()
    only = os.environ.get("SANDVM_API_ONLY")
    on_overrun.append(cleanup)
    try:
        for run in cases:
            if not only or only in run.name:
                run()
    finally:
        on_overrun.remove(cleanup)
        cleanup()
    if "ready_s" in shared:
        print(f"# create-to-ready (minimal image): {shared['ready_s']:.2f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
