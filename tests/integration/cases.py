"""What the Python case scripts of the integration suite share (api_test.py,
ingress_test.py): a registry of cases, each printing "OK name (T s)" or
"FAIL name: why" (the suite's runner turns the lines into its report), HTTP
over a unix socket (sandboxd's API socket, unix_api), names of a test domain
resolved to loopback, and a bounded wait for a daemon's first answer.

Each case has a time limit (CASE_LIMIT_S unless case() names another). A case
that overruns it is reported failed with every thread's stack on stderr, the
hooks in on_overrun run (stop the daemon, kill VMs, keep logs), and the script
exits with status 3: a hung case ends the script, never the whole suite."""
import faulthandler
import http.client
import json
import os
import socket
import sys
import threading
import time
import traceback

CASE_LIMIT_S = 300
OVERRUN_EXIT = 3
results = []     # (name, None or why), in the order the cases ran
cases = []       # the registered cases' runners, each with .name
on_overrun = []  # functions run, in order, before the script exits on an overrun


def overrun(name, limit):
    """Called by a case's watchdog: reports the case, shows where every thread
    waits, runs the on_overrun hooks and ends the process."""
    print(f"FAIL {name}: still running after its limit of {limit} s (stacks in the .err file)",
          flush=True)
    print(f"--- {name} overran {limit} s; every thread's stack:", file=sys.stderr, flush=True)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    for hook in on_overrun:
        try:
            hook()
        except Exception:  # noqa: BLE001 - the next hooks still run
            traceback.print_exc(file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(OVERRUN_EXIT)


def case(name, limit=CASE_LIMIT_S):
    """Registers the decorated function as case name, to finish within limit seconds."""
    def wrap(fn):
        def run():
            t = time.monotonic()
            watchdog = threading.Timer(limit, overrun, (name, limit))
            watchdog.daemon = True
            watchdog.start()
            try:
                fn()
                results.append((name, None))
                print(f"OK {name} ({time.monotonic() - t:.1f} s)", flush=True)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                why = f"{type(e).__name__}: {e}"
                traceback.print_exc(file=sys.stderr)
                results.append((name, why))
                print(f"FAIL {name}: {why}".replace("\n", " ")[:400], flush=True)
            finally:
                watchdog.cancel()
        run.name = name
        cases.append(run)
        return fn
    return wrap


def wait_healthy(proc, health, limit=60):
    """Waits until health() (GET /v1/health's status, each try bounded by its
    own timeout) is 200: a daemon that accepts but never answers, or one that
    exits, fails here within limit seconds instead of hanging its script."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if health() == 200:
                return
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"sandboxd exited with status {proc.returncode} while starting")
        time.sleep(0.05)
    raise RuntimeError(f"sandboxd did not answer /v1/health within {limit} s")


class UnixConn(http.client.HTTPConnection):
    """http.client over a unix socket."""
    def __init__(self, path, timeout=120):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def unix_api(sock, key, method, path, body=None, raw=False, timeout=120):
    """One API call over sandboxd's unix socket: (status, the JSON reply or None), or the raw
    bytes with raw. A dict or list body goes as JSON."""
    c = UnixConn(sock, timeout)
    h = {"Authorization": "Bearer " + key}
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        h["Content-Type"] = "application/json"
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    if raw:
        return r.status, data
    return r.status, json.loads(data) if data else None


def resolve_to_loopback(domain):
    """From now on, in this process, DOMAIN and every name under it resolve to 127.0.0.1."""
    real = socket.getaddrinfo

    def local(host, *a, **kw):
        if isinstance(host, str) and (host == domain or host.endswith("." + domain)):
            host = "127.0.0.1"
        return real(host, *a, **kw)

    socket.getaddrinfo = local


def keep_sandbox_logs(state, dest):
    """Copies the last 200 KB of each sandbox's console and VMM log under
    state into dest/ID/, for whoever reads a failure."""
    root = os.path.join(state, "sandboxes")
    for sid in os.listdir(root) if os.path.isdir(root) else ():
        for name in ("console/console.log.1", "console/console.log", "vmm.log"):
            src = os.path.join(root, sid, name)
            if not os.path.exists(src):
                continue
            os.makedirs(os.path.join(dest, sid), exist_ok=True)
            with open(src, "rb") as f, open(os.path.join(dest, sid, os.path.basename(name)), "wb") as out:
                f.seek(max(0, os.path.getsize(src) - 200000))
                out.write(f.read())
