#!/usr/bin/python3
"""The isolation monitor on real VMs (docs/security.md, "Isolation monitor").

    tests/integration/isolation_test.py BUILD_DIR RESULTS_DIR

Starts its own sandboxd with the monitor on (`--isolation-probe`), an
allowlisted peer (`--isolation-probe-peer`, a listener in a network
namespace) and an operator's sentinel on a private network
(`--isolation-probe-deny`, a listener in the same namespace on 10.77.0.2),
its TLS API listening on a local, non-loopback address. A healthy worker
must report `ok`, from the periodic run and on demand. Then each wall is
broken on purpose, in a test-only way, and the next run must report
`breached` naming that probe:
  - an nft rule (a DNAT of 192.0.2.1:PORT to the API, and an accept in
    sandboxd's input chain) that lets the canary reach the API listener;
  - a firewall policy that opens the sentinel's private range
    (SANDVM_TEST_ISOLATION_CANARY_ALLOW_PRIVATE, the canary's policy only);
  - an API key in the canary's environment (SANDVM_TEST_ISOLATION_CANARY_ENV).
A canary that cannot start is `unknown`, never `ok`. Prints "OK name" /
"FAIL name: why" per case; tests/integration/isolation.sh turns them into
the suite's report. Needs /dev/kvm (run through tests/nested/run).
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from cases import case, cases, keep_sandbox_logs, on_overrun, unix_api, wait_healthy

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
RESULTS = sys.argv[2] if len(sys.argv) > 2 else BUILD + "/test-results/integration"
SANDBOXD = os.path.join(BUILD, "bin", "sandboxd")
VMCTL = os.path.join(BUILD, "bin", "vmctl")
TMP = tempfile.mkdtemp(prefix="sandvm-isolation.")
STATE = os.path.join(TMP, "state")
SOCK = os.path.join(TMP, "sandboxd.sock")
LOG = os.path.join(RESULTS, "isolation-sandboxd.log")
NS = "sviso"
HOST_ADDR, PEER_ADDR, PEER_PORT = "203.0.113.1", "203.0.113.9", 8080
PRIV_HOST, SENTINEL, SENTINEL_PORT = "10.77.0.1", "10.77.0.2", 5432
API_PORT = 18446
PERIOD_S = 20
KEY = None
shared = {}


def api(method, path, body=None, timeout=200):
    return unix_api(SOCK, KEY, method, path, body, False, timeout)


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True)


def vmctl(*args, timeout=200):
    env = dict(os.environ, SANDVM_HOST="unix://" + SOCK, SANDVM_API_KEY=KEY)
    return subprocess.run([VMCTL, *args], capture_output=True, env=env, timeout=timeout)


class Daemon:
    def __init__(self):
        self.proc = None
        self.log = open(LOG, "ab")

    def start(self, env_extra=None, *extra, periodic=False, memory=2000):
        # Runs on demand only but in the first case: a periodic run in flight would be joined by the
        # next on-demand one, which could then predate the wall a case has just broken.
        args = [SANDBOXD, "--state-dir", STATE, "--socket", SOCK, "--max-memory", str(memory),
                "--listen", f"{PRIV_HOST}:{API_PORT}",
                *(["--isolation-probe", str(PERIOD_S)] if periodic else []),
                "--isolation-probe-peer", f"{PEER_ADDR}:{PEER_PORT}",
                "--isolation-probe-deny", f"{SENTINEL}:{SENTINEL_PORT}", *extra]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log,
                                     env=dict(os.environ, **(env_extra or {})))
        wait_healthy(self.proc, lambda: api("GET", "/v1/health", timeout=5)[0])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)

    def restart(self, env_extra=None, *extra, memory=2000):
        self.stop()
        self.start(env_extra, *extra, memory=memory)


daemon = Daemon()


def selftest():
    """One run on demand through vmctl --json: (exit status, the run's object)."""
    p = vmctl("selftest", "isolation", "--json")
    try:
        o = json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"vmctl selftest isolation --json: status {p.returncode}, "
                             f"stdout {p.stdout[:300]!r}, stderr {p.stderr[:300]!r}") from None
    return p.returncode, o


def probes(o):
    return {p["name"]: p for p in o["probes"]}


def breached(o):
    return sorted(p["name"] for p in o["probes"] if p["verdict"] == "breached")


def log_text():
    with open(LOG, "rb") as f:
        return f.read().decode(errors="replace")


def health():
    st, o = api("GET", "/v1/health", timeout=10)
    assert st == 200, f"health: HTTP {st} {o}"
    return o


@case("isolation-periodic", limit=150)
def _():
    # The periodic run comes on its own (the first one soon after the start) and finds every wall held.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        h = health()
        if h.get("isolation_last_run") is not None:
            break
        time.sleep(2)
    else:
        raise AssertionError("no periodic isolation run within 120 s")
    assert h["isolation"] == "ok", f"periodic run: {h['isolation']} (sandboxd log names the probe)"
    assert vmctl("health").returncode == 0, "vmctl health failed on a healthy worker"
    # Its canary is gone once the run ended.
    st, lst = api("GET", "/v1/sandboxes")
    assert st == 200
    items = lst if isinstance(lst, list) else lst.get("sandboxes", lst.get("items", []))
    running = [s for s in items if "canary" in json.dumps(s) and s.get("state") not in ("finished",)]
    assert not running, f"a canary outlived its run: {running}"
    # The other cases run on demand only.
    daemon.restart()


@case("isolation-healthy", limit=120)
def _():
    # Another sandbox with a network runs beside the canary: the canary must not reach it.
    st, o = api("POST", "/v1/sandboxes", {"image": "minimal", "memory_mib": 128, "timeout": 600})
    assert st == 201, f"create: HTTP {st} {o}"
    shared["neighbour"] = o["id"]
    code, o = selftest()
    assert o["result"] == "ok", f"result {o['result']} ({o.get('reason')}), breached {breached(o)}"
    assert code == 0, f"vmctl exit {code} on ok"
    ps = probes(o)
    for family in ("host.", "redirect.", "metadata.", "private.", "deny.", "sandbox.", "vsock.", "guest.",
                   "spoof."):
        assert any(n.startswith(family) for n in ps), f"no {family}* probe in {sorted(ps)}"
    assert ps["peer"]["expected"] == "reached" and ps["peer"]["observed"] == "reached", ps["peer"]
    assert all(p["verdict"] == "held" for p in o["probes"]), [p for p in o["probes"] if p["verdict"] != "held"]
    # The on-demand table: one line per probe, then the summary.
    p = vmctl("selftest", "isolation")
    text = p.stdout.decode()
    assert p.returncode == 0, (p.returncode, text[-400:], p.stderr[-400:])
    assert "PROBE" in text and "VERDICT" in text and "isolation: ok" in text, text[-600:]
    assert health()["isolation"] == "ok"
    st, _ = api("DELETE", f"/v1/sandboxes/{shared['neighbour']}")
    assert st == 204, f"delete: HTTP {st}"


def nft_redirect(on):
    # What an operator's mistake could look like: traffic from sandboxes to a public address and the
    # API's port is sent to the API, and the host's input chain lets it in.
    if on:
        rules = (f"table ip svisotest {{ chain pre {{ type nat hook prerouting priority dstnat; "
                 f"iifname \"sbx*\" ip daddr 192.0.2.1 tcp dport {API_PORT} dnat to {PRIV_HOST}; }}; }}")
        p = sh(f"set -e\nnft -f - <<'EOF'\n{rules}\nEOF\n"
               f"nft insert rule inet sandvm input iifname 'sbx*' tcp dport {API_PORT} accept")
        assert p.returncode == 0, p.stderr
    else:
        sh("nft delete table ip svisotest; "
           "h=$(nft -a list chain inet sandvm input | "
           f"sed -n 's/.*tcp dport {API_PORT} accept # handle \\([0-9]*\\)/\\1/p'); "
           "[ -z \"$h\" ] || nft delete rule inet sandvm input handle $h")


@case("isolation-breach-nft", limit=120)
def _():
    nft_redirect(True)
    try:
        code, o = selftest()
        if o.get("result") != "breached":
            print("--- nft ruleset during the run:\n" + sh("nft list ruleset").stdout, file=sys.stderr)
    finally:
        nft_redirect(False)
    b = breached(o)
    assert o["result"] == "breached", (f"result {o['result']} ({o.get('reason')}); redirect probes: " +
                                       str([p for p in o["probes"] if p["name"].startswith("redirect.")]))
    assert any(n.startswith("redirect.") for n in b), f"breached {b}, expected a redirect.* probe"
    assert code == 1, f"vmctl exit {code} on breached"
    assert health()["isolation"] == "breached"
    assert vmctl("health").returncode != 0, "vmctl health exit 0 after a breach"
    name = next(n for n in b if n.startswith("redirect."))
    assert name in log_text(), f"sandboxd's log does not name {name}"
    # The wall mended: the next run is ok again.
    code, o = selftest()
    assert o["result"] == "ok" and code == 0, f"after the rule went: {o['result']} {breached(o)}"


@case("isolation-breach-policy", limit=90)
def _():
    daemon.restart({"SANDVM_TEST_ISOLATION_CANARY_ALLOW_PRIVATE": "10.77.0.0/24"})
    code, o = selftest()
    b = breached(o)
    assert o["result"] == "breached" and code == 1, f"result {o['result']} ({o.get('reason')}), exit {code}"
    sentinel = [n for n in b if n.startswith("deny.")]
    assert sentinel, f"breached {b}, expected the deny.* sentinel"
    assert probes(o)[sentinel[0]]["observed"] == "reached"
    assert sentinel[0] in log_text(), f"sandboxd's log does not name {sentinel[0]}"


@case("isolation-breach-env", limit=90)
def _():
    daemon.restart({"SANDVM_TEST_ISOLATION_CANARY_ENV": "SANDVM_API_KEY=" + KEY})
    code, o = selftest()
    b = breached(o)
    assert o["result"] == "breached" and code == 1, f"result {o['result']} ({o.get('reason')}), exit {code}"
    assert any(n.startswith("guest.env") for n in b), f"breached {b}, expected guest.env*"
    # The key itself is named nowhere: not in the reply, not in the log.
    assert KEY not in json.dumps(o), "the API key is in the run's report"
    assert KEY not in log_text(), "the API key is in sandboxd's log"


@case("isolation-unknown", limit=60)
def _():
    # No room for the canary (its memory does not fit): the run proves nothing, and says so.
    daemon.restart(None, memory=64)
    code, o = selftest()
    assert o["result"] == "unknown", f"result {o['result']}"
    assert o.get("reason"), "an unknown run without a reason"
    assert code == 2, f"vmctl exit {code} on unknown"
    assert health()["isolation"] == "unknown"


def netns(up):
    if up:
        p = sh(f"ip netns add {NS} && ip link add {NS}-h type veth peer name {NS}-p && "
               f"ip link set {NS}-p netns {NS} && ip addr add {HOST_ADDR}/24 dev {NS}-h && "
               f"ip addr add {PRIV_HOST}/24 dev {NS}-h && ip link set {NS}-h up && "
               f"ip -n {NS} addr add {PEER_ADDR}/24 dev {NS}-p && ip -n {NS} addr add {SENTINEL}/24 dev {NS}-p && "
               f"ip -n {NS} link set {NS}-p up && ip -n {NS} link set lo up && "
               f"ip -n {NS} route add default via {HOST_ADDR}")
        assert p.returncode == 0, p.stderr
        listeners = []
        for addr, port in ((PEER_ADDR, PEER_PORT), (SENTINEL, SENTINEL_PORT)):
            listeners.append(subprocess.Popen(
                ["ip", "netns", "exec", NS, "python3", "-c",
                 "import socket, sys\n"
                 "t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                 "t.bind((sys.argv[1], int(sys.argv[2]))); t.listen(16); print('listening', flush=True)\n"
                 "while True:\n"
                 "    c, _ = t.accept(); c.close()\n", addr, str(port)], stdout=subprocess.PIPE))
        for p in listeners:
            assert p.stdout.readline() == b"listening\n"
        shared["listeners"] = listeners
    else:
        for p in shared.get("listeners", []):
            p.kill()
            p.wait()
        sh(f"ip netns del {NS}; ip link del {NS}-h")


def cleanup():
    try:
        daemon.stop()
    except Exception:  # noqa: BLE001
        daemon.proc.kill()
    for d in os.listdir(os.path.join(STATE, "sandboxes")) if os.path.isdir(os.path.join(STATE, "sandboxes")) else ():
        try:
            pid = json.load(open(os.path.join(STATE, "sandboxes", d, "sandbox.json")))["pid"]
            if pid > 1:
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass
    keep_sandbox_logs(STATE, os.path.join(RESULTS, "isolation-sandboxes"))
    nft_redirect(False)
    netns(False)


def main():
    global KEY
    os.makedirs(RESULTS, exist_ok=True)
    KEY = subprocess.run([SANDBOXD, "--state-dir", STATE, "--new-key", "tests"], capture_output=True,
                         check=True).stdout.decode().strip()
    netns(True)
    on_overrun.append(cleanup)
    try:
        daemon.start(periodic=True)
        for run in cases:
            run()
    finally:
        on_overrun.remove(cleanup)
        cleanup()


if __name__ == "__main__":
    main()
