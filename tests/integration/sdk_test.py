#!/usr/bin/python3
"""The Python SDK (python/sandvm) on real VMs: its pytest tests (python/tests/vm)
and the examples/ scripts, against a sandboxd of their own.

    tests/integration/sdk_test.py BUILD_DIR RESULTS_DIR

Starts sandboxd on a private state dir with its unix socket, an HTTPS listener
(--listen 127.0.0.1:18450, its own CA), the ingress listener of connect tokens
and tunnels (--ingress 127.0.0.1:18451 --ingress-domain sdk.test) and plain
tunnel ports 18452-18455; names under sdk.test resolve to 127.0.0.1 in this
process. Then runs pytest in this process and prints "OK name (T s)" or "FAIL
name: why" per test (a skipped test is a failure); pytest's own report goes to
stderr (RESULTS_DIR/sdk_test.err). tests/integration/sdk.sh hooks it into the
daemon shard. Needs /dev/kvm (run through tests/nested/run).

SANDVM_SDK_ONLY=EXPR runs only the tests pytest -k EXPR selects.
SANDVM_SDK_FAKE=BUILD_DIR/tests runs the same tests against tests/unit/fake-vmm
(the agent on this host, the minimal image's name), to work on the SDK without
KVM; the snapshot tests cannot pass there, and the suite never uses it.
"""
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from cases import keep_sandbox_logs, on_overrun, overrun, resolve_to_loopback, unix_api, wait_healthy

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
RESULTS = sys.argv[2] if len(sys.argv) > 2 else BUILD + "/test-results/integration"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SANDBOXD = os.path.join(BUILD, "bin", "sandboxd")
FAKE = os.environ.get("SANDVM_SDK_FAKE")
TMP = tempfile.mkdtemp(prefix="sandvm-sdk.")
STATE = os.path.join(TMP, "state")
SOCK = os.path.join(TMP, "sandboxd.sock")
DOMAIN = "sdk.test"
API_PORT, INGRESS_PORT, TUNNEL_PORTS = 18450, 18451, "18452-18455"
# Per-test limits (s); the rest have DEFAULT_LIMIT_S.
DEFAULT_LIMIT_S = 120
LIMITS = {"test_example_csek_snapshot": 200, "test_snapshot_keys": 200}


class Reporter:
    """A pytest plugin: one "OK name (T s)" / "FAIL name: why" line per test on
    the real stdout, and a watchdog per test (cases.overrun)."""

    def __init__(self, out):
        self.out = out
        self.failed = {}
        self.started = {}

    @staticmethod
    def name(nodeid):
        return "sdk-" + nodeid.split("::")[-1].removeprefix("test_").replace("_", "-").replace("[", "-").rstrip("]")

    def line(self, text):
        self.out.write(text.replace("\n", " ")[:400] + "\n")
        self.out.flush()

    def pytest_collectreport(self, report):
        if report.failed:
            self.line(f"FAIL sdk-collect: {report.nodeid}: {str(report.longrepr).splitlines()[-1]}")

    def pytest_runtest_logstart(self, nodeid, location):
        self.started[nodeid] = time.monotonic()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        name, limit = self.name(item.nodeid), LIMITS.get(item.name, DEFAULT_LIMIT_S)

        def fire():
            self.line(f"FAIL {name}: still running after its limit of {limit} s (stacks in sdk_test.err)")
            overrun(name, limit)
        watchdog = threading.Timer(limit, fire)
        watchdog.daemon = True
        watchdog.start()
        try:
            yield
        finally:
            watchdog.cancel()

    def pytest_runtest_logreport(self, report):
        n = self.name(report.nodeid)
        if report.skipped and report.nodeid not in self.failed:
            why = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.failed[report.nodeid] = f"skipped ({why})"
        elif report.failed and report.nodeid not in self.failed:
            self.failed[report.nodeid] = f"{report.when}: " + (str(report.longrepr).strip().splitlines() or ["?"])[-1]
        if report.when == "teardown":
            if report.nodeid in self.failed:
                self.line(f"FAIL {n}: {self.failed[report.nodeid]}")
            else:
                self.line(f"OK {n} ({time.monotonic() - self.started.get(report.nodeid, time.monotonic()):.1f} s)")


class Daemon:
    def __init__(self):
        self.log = open(os.path.join(RESULTS, "sdk-sandboxd.log"), "ab")
        args = [SANDBOXD, "--state-dir", STATE, "--socket", SOCK, "--listen", f"127.0.0.1:{API_PORT}",
                "--ingress", f"127.0.0.1:{INGRESS_PORT}", "--ingress-domain", DOMAIN,
                "--tunnel-ports", TUNNEL_PORTS, "--max-memory", "3000"]
        if FAKE:
            images = os.path.join(TMP, "images")
            os.makedirs(images)
            for f in ("vmlinux", "initramfs.cpio.gz", "debian.ext4"):
                with open(os.path.join(images, f), "w") as out:
                    out.write("boot\n")
            args += ["--vmm", os.path.join(FAKE, "fake-vmm"), "--images", images, "--image-builder", "",
                     "--no-net", "--no-jail"]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        wait_healthy(self.proc, lambda: unix_api(SOCK, "", "GET", "/v1/health", timeout=5)[0])

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def cleanup(daemon, key):
    """Deletes what the tests left, stops the daemon, keeps the VMs' logs."""
    try:
        st, o = unix_api(SOCK, key, "GET", "/v1/sandboxes", timeout=30)
        for s in (o or {}).get("sandboxes", []):
            unix_api(SOCK, key, "DELETE", f"/v1/sandboxes/{s['id']}", timeout=30)
    except OSError:
        pass
    daemon.stop()
    keep_sandbox_logs(STATE, os.path.join(RESULTS, "sdk-sandboxes"))
    subprocess.run("for t in $(ls /sys/class/net | grep '^sbx'); do ip link del $t; done", shell=True,
                   capture_output=True)


def main():
    os.makedirs(RESULTS, exist_ok=True)
    key = subprocess.run([SANDBOXD, "--state-dir", STATE, "--new-key", "sdk"], capture_output=True,
                         check=True).stdout.decode().strip()
    daemon = Daemon()
    hook = lambda: cleanup(daemon, key)  # noqa: E731
    on_overrun.append(hook)
    os.environ.update({
        "SANDVM_HOST": "unix://" + SOCK, "SANDVM_API_KEY": key, "SANDVM_CACERT": os.path.join(STATE, "tls", "ca.pem"),
        "SANDVM_TEST_HTTPS_HOST": f"https://127.0.0.1:{API_PORT}", "SANDVM_TEST_DOMAIN": DOMAIN,
        "SANDVM_TEST_IMAGE": "debian", "SANDVM_TEST_FAKE": "1" if FAKE else "",
        "SANDVM_TEST_EXAMPLES": os.path.join(REPO, "examples"),
    })
    for k in ("SANDVM_API_KEY_FILE",):
        os.environ.pop(k, None)
    resolve_to_loopback(DOMAIN)
    sys.path.insert(0, os.path.join(REPO, "python"))
    real_stdout = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # pytest's own report goes with stderr
    sys.stdout = sys.stderr
    try:
        args = ["-p", "no:cacheprovider", "-rA", "-v", "--durations=0", "--rootdir", os.path.join(REPO, "python"),
                os.path.join(REPO, "python", "tests", "vm")]
        if os.environ.get("SANDVM_SDK_ONLY"):
            args += ["-k", os.environ["SANDVM_SDK_ONLY"]]
        rc = pytest.main(args, plugins=[Reporter(real_stdout)])
        print(f"pytest exit status {rc}", file=sys.stderr)
    finally:
        on_overrun.remove(hook)
        cleanup(daemon, key)
    real_stdout.flush()


if __name__ == "__main__":
    main()
