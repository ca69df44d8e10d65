#!/usr/bin/python3
"""The jailed VMM on real VMs (docs/security.md, "The jail").

    tests/integration/jail_test.py BUILD_DIR RESULTS_DIR

Starts its own sandboxd (private state dir, the jail on as by default) and
looks at its VMMs from outside, as root on the host: every thread's
credentials, capabilities, seccomp mode and namespaces, its root directory,
its cgroup and the limits written there; a control request naming a host
file; a VMM pushed over its cgroup's memory.max; a daemon restart with jailed
VMMs running; a forbidden syscall in a jailed VMM of the test build (it
ends by SIGSYS, the others go on); and `--no-jail`. Prints "OK name" / "FAIL name: why" per case;
tests/integration/jail.sh turns them into the suite's report. Needs /dev/kvm
and cgroup v2 (run through tests/nested/run).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from cases import case, cases, keep_sandbox_logs, on_overrun, unix_api, wait_healthy

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
RESULTS = sys.argv[2] if len(sys.argv) > 2 else BUILD + "/test-results/integration"
SANDBOXD = os.path.join(BUILD, "bin", "sandboxd")
TMP = tempfile.mkdtemp(prefix="sandvm-jail.")
STATE = os.path.join(TMP, "state")
SOCK = os.path.join(TMP, "sandboxd.sock")
MIN = {"image": "minimal", "memory_mib": 128}
KEY = None
shared = {}


def api(method, path, body=None, raw=False, timeout=120):
    return unix_api(SOCK, KEY, method, path, body, raw, timeout)


class Daemon:
    def __init__(self):
        self.proc = None
        self.log = open(os.path.join(RESULTS, "jail-sandboxd.log"), "ab")

    def start(self, *extra):
        self.proc = subprocess.Popen([SANDBOXD, "--state-dir", STATE, "--socket", SOCK, "--max-memory", "2000",
                                      *extra], stdout=self.log, stderr=self.log)
        wait_healthy(self.proc, lambda: api("GET", "/v1/health", timeout=5)[0])

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


daemon = Daemon()


def create(spec=None):
    st, o = api("POST", "/v1/sandboxes", dict(spec or MIN))
    assert st == 201, f"create: HTTP {st} {o}"
    return o["id"]


def delete(sid):
    st, o = api("DELETE", f"/v1/sandboxes/{sid}")
    assert st == 204, f"delete {sid}: HTTP {st} {o}"


def record(sid):
    with open(os.path.join(STATE, "sandboxes", sid, "sandbox.json")) as f:
        return json.load(f)


def keeper_pid(sid):
    """The process sandboxd spawned and records (the jail's keeper)."""
    return record(sid)["pid"]


def vmm_pid(sid):
    """The jailed VMM: the keeper's only child (PID 1 of its own PID namespace)."""
    k = keeper_pid(sid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{k}/task/{k}/children") as f:
            kids = f.read().split()
        if kids:
            assert len(kids) == 1, f"keeper {k} has children {kids}"
            return int(kids[0])
        time.sleep(0.1)
    raise AssertionError(f"keeper {k} has no child")


def status_fields(path):
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def ns(pid, kind):
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def exec_out(sid, argv, timeout=120):
    st, o = api("POST", f"/v1/sandboxes/{sid}/execs", {"argv": argv})
    assert st == 201, f"exec {argv}: HTTP {st} {o}"
    st, data = api("GET", f"/v1/sandboxes/{sid}/execs/{o['id']}/output", raw=True, timeout=timeout)
    assert st == 200, f"exec output: HTTP {st} {data[:200]}"
    out, i, end = bytearray(), 0, None  # bytes += would be quadratic
    while i < len(data):
        t, n = data[i], int.from_bytes(data[i + 4:i + 8], "big")
        p = data[i + 8:i + 8 + n]
        i += 8 + n
        if t == 1:
            out += p
        elif t == 3:
            end = json.loads(p)
    return bytes(out), end


def cgroup_mount():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split()[0] == "cgroup2":
                return pre.split()[4]
    raise AssertionError("no cgroup2 mount on this host")


def cgroup_dir(pid):
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return cgroup_mount() + line[3:].strip()
    raise AssertionError(f"pid {pid} has no cgroup v2 entry")


def wait_gone(path, limit=15):
    """DELETE answers once the end is decided; the VMM may take a few seconds more to exit, and the
    sandbox's jail (cgroup leaf, run directory) is removed after it has."""
    deadline = time.monotonic() + limit
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(path), f"{path} left {limit} s after delete"


def read(path):
    with open(path) as f:
        return f.read().strip()


def control(sid, req):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(os.path.join(STATE, "sandboxes", sid, "control"))
    s.sendall(json.dumps(req).encode() + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        b = s.recv(65536)
        if not b:
            break
        buf += b
    s.close()
    return json.loads(buf)


def check_jailed_thread(where, st, daemon_uid=0):
    uids = st["Uid"].split()
    gids = st["Gid"].split()
    assert all(u != str(daemon_uid) and u != "0" for u in uids), f"{where}: Uid {st['Uid']}"
    assert all(g != "0" for g in gids), f"{where}: Gid {st['Gid']}"
    assert st.get("Groups", "") == "", f"{where}: supplementary groups {st['Groups']}"
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[cap], 16) == 0, f"{where}: {cap} {st[cap]}"
    assert st["NoNewPrivs"] == "1", f"{where}: NoNewPrivs {st['NoNewPrivs']}"


@case("jail-walls")
def _():
    sid = create()
    shared["a"] = sid
    pid = vmm_pid(sid)
    me = daemon.proc.pid
    tids = os.listdir(f"/proc/{pid}/task")
    # The VMM runs its vCPU thread(s) and its event loop: at least two threads, all walled in.
    assert len(tids) >= 2, f"VMM {pid} has threads {tids}"
    for tid in tids:
        st = status_fields(f"/proc/{pid}/task/{tid}/status")
        check_jailed_thread(f"VMM thread {tid} ({st['Name']})", st)
        assert st["Seccomp"] == "2", f"VMM thread {tid} ({st['Name']}): Seccomp {st['Seccomp']}"
    # The keeper outside the PID namespace holds nothing either.
    check_jailed_thread("keeper", status_fields(f"/proc/{keeper_pid(sid)}/status"))
    for kind in ("mnt", "pid", "net", "ipc", "uts"):
        assert ns(pid, kind) != ns(me, kind), f"VMM shares sandboxd's {kind} namespace"
    # PID 1 of its own namespace.
    nspid = status_fields(f"/proc/{pid}/status")["NSpid"].split()
    assert nspid[-1] == "1", f"NSpid {nspid}"
    # Its root is the sandbox's jail directory, and that is empty.
    jail = os.path.join(STATE, "sandboxes", sid, "root")
    a, b = os.stat(f"/proc/{pid}/root"), os.stat(jail)
    assert (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino), "VMM root is not the jail directory"
    assert os.listdir(f"/proc/{pid}/root") == [], f"jail root holds {os.listdir(f'/proc/{pid}/root')}"
    # Nothing it holds open is a host file beyond its own: no daemon state, no image store, no keys.
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        assert "managed.key" not in target and "api-keys" not in target, f"VMM holds {target}"
    out, end = exec_out(sid, ["echo", "jailed"])
    assert out == b"jailed\n" and end and end["returncode"] == 0, f"exec: {out!r} {end}"


@case("jail-apart")
def _():
    a = shared["a"]
    b = create()
    shared["b"] = b
    pa, pb = vmm_pid(a), vmm_pid(b)
    ua = status_fields(f"/proc/{pa}/status")["Uid"].split()[0]
    ub = status_fields(f"/proc/{pb}/status")["Uid"].split()[0]
    assert ua != ub, f"two sandboxes share uid {ua}"
    for kind in ("mnt", "pid", "net"):
        assert ns(pa, kind) != ns(pb, kind), f"two sandboxes share a {kind} namespace"
    assert cgroup_dir(pa) != cgroup_dir(pb), "two sandboxes share a cgroup"


@case("jail-no-host-path")
def _():
    sid = shared["a"]
    # A path in a control request is looked up in the VMM's empty root: nothing on the host is reachable.
    for req in ({"op": "drive-attach", "serial": "sandvm-scratch", "path": "/etc/passwd"},
                {"op": "net-policy", "path": "/etc/passwd"},
                {"op": "drive-attach", "serial": "sandvm-scratch",
                 "path": os.path.join(STATE, "sandboxes", sid, "sandbox.json")}):
        r = control(sid, req)
        assert r.get("ok") is False, f"{req}: {r}"
    r = control(sid, {"op": "status"})
    assert r.get("ok") is True and r.get("state") == "running", f"status after refusals: {r}"


@case("jail-cgroup")
def _():
    sid = shared["a"]
    pid = vmm_pid(sid)
    leaf = cgroup_dir(pid)
    assert leaf.endswith("/sandvm/" + sid), f"VMM cgroup {leaf}"
    assert cgroup_dir(keeper_pid(sid)) == leaf, "keeper outside the sandbox's cgroup"
    assert read(leaf + "/memory.max") == str((128 + 256) << 20), f"memory.max {read(leaf + '/memory.max')}"
    assert read(leaf + "/pids.max") == str(1 + 64), f"pids.max {read(leaf + '/pids.max')}"
    assert read(leaf + "/cpu.max") == "100000 100000", f"cpu.max {read(leaf + '/cpu.max')}"
    shared["leaf_a"] = leaf


@case("jail-oom")
def _():
    sid = create({"image": "minimal", "memory_mib": 384})
    leaf = cgroup_dir(vmm_pid(sid))
    # Lower the cap below what the guest is about to touch: 160 MiB written to the
    # guest's in-memory root file system becomes the VMM's memory.
    cur = int(read(leaf + "/memory.current"))
    with open(leaf + "/memory.max", "w") as f:
        f.write(str(cur + (48 << 20)))
    try:
        exec_out(sid, ["sh", "-c", "head -c 167772160 /dev/zero > /fill; echo done"], timeout=120)
    except Exception:  # noqa: BLE001 - the VM may die under the call
        pass
    st, o = api("GET", f"/v1/sandboxes/{sid}/wait?timeout=60")
    assert st == 200 and o["state"] == "finished", f"after the fill: {st} {o}"
    assert o["reason"] == "failed", f"reason {o['reason']}"
    assert "out of memory" in o.get("message", ""), f"message {o.get('message')}"
    delete(sid)
    wait_gone(leaf)


@case("jail-restart-adopt", limit=200)
def _():
    b = shared["b"]
    pb = vmm_pid(b)
    leaf = cgroup_dir(pb)
    daemon.stop()
    daemon.start()
    st, o = api("GET", f"/v1/sandboxes/{b}")
    assert st == 200 and o["state"] == "running", f"after restart: {st} {o}"
    assert vmm_pid(b) == pb, "the VMM changed across the restart"
    out, end = exec_out(b, ["echo", "still"])
    assert out == b"still\n", f"exec after restart: {out!r} {end}"
    # A new sandbox must not be given the adopted one's uid.
    c = create()
    uc = status_fields(f"/proc/{vmm_pid(c)}/status")["Uid"].split()[0]
    ub = status_fields(f"/proc/{pb}/status")["Uid"].split()[0]
    assert uc != ub, f"new sandbox got adopted sandbox's uid {ub}"
    for sid in (b, c):
        delete(sid)
    wait_gone(leaf)
    wait_gone(os.path.join(STATE, "sandboxes", b))


@case("jail-delete-cleans")
def _():
    a = shared["a"]
    leaf = shared["leaf_a"]
    delete(a)
    wait_gone(leaf)
    wait_gone(os.path.join(STATE, "sandboxes", a))


@case("jail-seccomp-kill", limit=200)
def _():
    # The test build of the VMM knows test-forbidden-syscall: its main thread makes a syscall its
    # filter forbids. Jailed, it is PID 1 of its namespace, which ignores its own default-action
    # signals: the end by SIGSYS must still come, and the other sandbox must go on.
    daemon.stop()
    daemon.start("--vmm", os.path.join(BUILD, "tests", "vmm-testops"))
    x, y = create(), create()
    try:
        control(x, {"op": "test-forbidden-syscall"})
    except (OSError, ValueError):
        pass  # no reply: the VMM ends without one
    st, o = api("GET", f"/v1/sandboxes/{x}/wait?timeout=30")
    assert st == 200 and o["state"] == "finished" and o["reason"] == "failed", f"after the op: {st} {o}"
    msg = o.get("message", "")
    assert "signal 31" in msg and "forbidden syscall socket" in msg, f"message {msg}"
    out, _ = exec_out(y, ["echo", "unharmed"])
    assert out == b"unharmed\n", f"the other sandbox: {out!r}"
    for sid in (x, y):
        delete(sid)


@case("jail-off", limit=200)
def _():
    daemon.stop()
    daemon.start("--no-jail")
    sid = create()
    pid = keeper_pid(sid)
    st = status_fields(f"/proc/{pid}/status")
    assert st["Uid"].split()[0] == "0", f"--no-jail VMM runs as {st['Uid']}"
    assert ns(pid, "mnt") == ns(daemon.proc.pid, "mnt"), "--no-jail VMM in its own mount namespace"
    out, _ = exec_out(sid, ["echo", "free"])
    assert out == b"free\n", f"exec: {out!r}"
    delete(sid)


def cleanup():
    try:
        daemon.stop()
    except Exception:  # noqa: BLE001
        daemon.proc.kill()
    for d in os.listdir(os.path.join(STATE, "sandboxes")):
        try:
            os.kill(record(d)["pid"], signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass
    keep_sandbox_logs(STATE, os.path.join(RESULTS, "jail-sandboxes"))
    subprocess.run("for t in $(ls /sys/class/net | grep '^sbx'); do ip link del $t; done", shell=True)


def main():
    global KEY
    os.makedirs(RESULTS, exist_ok=True)
    KEY = subprocess.run([SANDBOXD, "--state-dir", STATE, "--new-key", "tests"], capture_output=True,
                         check=True).stdout.decode().strip()
    daemon.start()
    on_overrun.append(cleanup)
    try:
        for run in cases:
            run()
    finally:
        on_overrun.remove(cleanup)
        cleanup()


if __name__ == "__main__":
    main()
