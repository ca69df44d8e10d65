"""Fixtures of the SDK's tests on real VMs. They need a sandboxd with an
ingress listener and tunnel ports, which tests/integration/sdk_test.py starts
(and names in the environment): without one every test here is skipped, and
that runner counts a skipped test as failed."""
import os

import pytest

import sandvm

NEEDS = ("SANDVM_HOST", "SANDVM_API_KEY", "SANDVM_TEST_DOMAIN", "SANDVM_TEST_IMAGE")


def pytest_collection_modifyitems(config, items):
    missing = [k for k in NEEDS if not os.environ.get(k)]
    if missing:
        skip = pytest.mark.skip(reason="needs the sandboxd of tests/integration/sdk_test.py "
                                       f"({', '.join(missing)} unset)")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def image():
    return os.environ["SANDVM_TEST_IMAGE"]


@pytest.fixture(scope="session")
def fake():
    return bool(os.environ.get("SANDVM_TEST_FAKE"))


@pytest.fixture(scope="session")
def client():
    c = sandvm.Client()
    yield c
    c.close()


@pytest.fixture(scope="session")
def app(client):
    return sandvm.App.lookup("sdk-tests", create_if_missing=True, client=client)


# The guest ports of the shared sandbox: an echo server for connect tokens, a
# plain HTTP server behind an unencrypted tunnel, and a tunnel with nothing on it.
ECHO_PORT, PLAIN_PORT, TLS_PORT = 8081, 8444, 8443

ECHO_SERVER = r"""
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "user_data": self.headers.get_all("X-Verified-User-Data")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


@pytest.fixture(scope="session")
def sb(client, app, image):
    """One sandbox for the tests that do not need their own: with env, workdir,
    a name and tags, an encrypted and an unencrypted tunnel, and two servers."""
    s = sandvm.Sandbox.create(app=app, image=image, timeout=1200, env={"SDK_VAR": "from-create"},
                              workdir="/tmp", name="shared", tags={"suite": "sdk", "role": "shared"},
                              encrypted_ports=[TLS_PORT], unencrypted_ports=[PLAIN_PORT], client=client)
    s.write_file("/tmp/echo_server.py", ECHO_SERVER)
    s.mkdir("/srv/www", parents=True)
    s.write_file("/srv/www/index.txt", "served through a tunnel\n")
    p = s.exec("sh", "-c", f"setsid python3 /tmp/echo_server.py {ECHO_PORT} </dev/null >/tmp/echo.log 2>&1 & "
               f"cd /srv/www && setsid python3 -m http.server --bind 127.0.0.1 {PLAIN_PORT} </dev/null >/tmp/plain.log 2>&1 &")
    p.stdin.write_eof()
    assert p.wait() == 0
    yield s
    s.delete()
