"""Sandboxes, processes, streams, files and errors on real VMs."""
import asyncio
import hashlib
import json
import os
import socket
import time

import pytest

import sandvm
from conftest import ECHO_PORT, PLAIN_PORT, TLS_PORT


def test_create_and_find(sb, client, app):
    info = sb.refresh()
    assert info["state"] == "running" and info["app"] == "sdk-tests" and sb.name == "shared", info
    assert info["env"] == {"SDK_VAR": "from-create"} and info["workdir"] == "/tmp", info
    assert sb.get_tags() == {"suite": "sdk", "role": "shared"}
    assert sandvm.Sandbox.from_id(sb.object_id, client=client).object_id == sb.object_id
    assert sandvm.Sandbox.from_name("sdk-tests", "shared", client=client).object_id == sb.object_id
    ids = [s.object_id for s in sandvm.Sandbox.list(app_id=app, client=client)]
    assert sb.object_id in ids
    assert [s.object_id for s in sandvm.Sandbox.list(tags={"role": "shared"}, client=client)] == [sb.object_id]
    assert sandvm.Sandbox.list(tags={"role": "nobody"}, client=client) == []
    assert sandvm.App.lookup("sdk-tests", client=client).name == "sdk-tests"
    with pytest.raises(sandvm.NotFoundError):
        sandvm.App.lookup("sdk-no-such-app", client=client)
    with pytest.raises(sandvm.NotFoundError):
        sandvm.Sandbox.from_id("sb-0000000000000000", client=client)
    with pytest.raises(sandvm.NotFoundError):
        sandvm.Sandbox.from_name("sdk-tests", "nobody", client=client)
    # A name is unique among an app's running sandboxes: refused before any VM boots.
    with pytest.raises(sandvm.ConflictError):
        sandvm.Sandbox.create(app=app, name="shared", image="minimal", memory=128, client=client)


def test_invalid_arguments(client):
    with pytest.raises(sandvm.InvalidError) as e:
        sandvm.Sandbox.create(image="minimal", cpu=64, client=client)
    assert e.value.field == "cpu" and e.value.status == 400
    with pytest.raises(sandvm.InvalidError) as e:
        sandvm.Sandbox.create(image="minimal", env={"1BAD": "x"}, client=client)
    assert e.value.field == "env"
    with pytest.raises(sandvm.InvalidError):
        sandvm.Sandbox.create(image="minimal", block_network=True, cidr_allowlist=["10.0.0.0/8"], client=client)
    with pytest.raises(sandvm.PermissionDeniedError):
        sandvm.Sandbox.create(image="/etc/passwd", client=client)
    with pytest.raises(sandvm.InvalidError):
        sandvm.App("no spaces allowed")


def test_auth_errors(tmp_path):
    host = os.environ["SANDVM_HOST"]
    with pytest.raises(sandvm.AuthError) as e:
        sandvm.Sandbox.list(client=sandvm.Client(host, api_key="sk-wrong"))
    assert e.value.status == 401
    # The key file's first line, as vmctl reads it; an empty one is refused before any request.
    f = tmp_path / "key"
    f.write_text(os.environ["SANDVM_API_KEY"] + "\nsecond line\n")
    env_key = os.environ.pop("SANDVM_API_KEY")
    try:
        assert isinstance(sandvm.Sandbox.list(client=sandvm.Client(host, key_file=str(f))), list)
        f.write_text("\n")
        with pytest.raises(sandvm.AuthError):
            sandvm.Client(host, key_file=str(f))
    finally:
        os.environ["SANDVM_API_KEY"] = env_key


def test_https_client(sb):
    c = sandvm.Client(os.environ["SANDVM_TEST_HTTPS_HOST"], cacert=os.environ["SANDVM_CACERT"])
    try:
        assert sandvm.Sandbox.from_id(sb.object_id, client=c).refresh()["state"] == "running"
        assert c.call("GET", "/v1/health")["ok"] is True
    finally:
        c.close()
    # Without sandboxd's CA the certificate is not trusted: nothing is sent.
    c = sandvm.Client(os.environ["SANDVM_TEST_HTTPS_HOST"], cacert="/etc/ssl/certs/ca-certificates.crt")
    with pytest.raises(sandvm.UnavailableError):
        c.call("GET", "/v1/health")
    c.close()


def test_exec_output_and_returncode(sb):
    p = sb.exec("python3", "-c", "import os, sys; print(os.getcwd(), os.environ['SDK_VAR'], os.environ.get('X'));"
                "print('to stderr', file=sys.stderr); sys.exit(3)", env={"X": "exec-env"})
    assert p.wait() == 3 and p.returncode == 3
    assert p.stdout.read() == "/tmp from-create exec-env\n"
    assert p.stderr.read() == "to stderr\n"
    p = sb.exec("sh", "-c", "printf '\\377\\000bytes'; pwd", workdir="/", text=False)
    assert p.stdout.read() == b"\xff\x00bytes/\n" and p.wait() == 0
    p = sb.exec("no-such-program")
    assert p.wait() == 127 and "no-such-program" in (p.error or "")


def test_exec_streams_while_running(sb):
    # Each line is read while the process still runs (it waits for a file that the test writes after).
    p = sb.exec("sh", "-c", "echo first; echo err-first >&2; while [ ! -e /tmp/go ]; do sleep 0.1; done; "
                "echo second; exit 5")
    assert p.stdout.readline() == "first\n"
    assert p.stderr.readline() == "err-first\n"
    assert p.poll() is None and p.returncode is None
    sb.write_file("/tmp/go", "")
    assert list(p.stdout) == ["second\n"]
    assert p.wait() == 5 and p.poll() == 5
    sb.rm("/tmp/go")


def test_exec_line_iteration(sb):
    p = sb.exec("python3", "-c", "import sys\nfor i in range(1000): print('line', i)\nsys.stdout.write('no newline')")
    lines = list(p.stdout)
    assert len(lines) == 1001 and lines[0] == "line 0\n" and lines[999] == "line 999\n", lines[-3:]
    assert lines[-1] == "no newline" and p.wait() == 0


def test_exec_stdin(sb):
    p = sb.exec("python3", "-c", "import sys\nfor line in sys.stdin: print(line.strip().upper(), flush=True)")
    p.stdin.write("hello\n")
    p.stdin.drain()
    assert p.stdout.readline() == "HELLO\n"  # answered before stdin ends
    p.stdin.write(b"world\n")
    p.stdin.write_eof()
    p.stdin.drain()
    assert p.stdout.read() == "WORLD\n" and p.wait() == 0
    with pytest.raises(sandvm.InvalidError):
        p.stdin.write("after eof")


def test_exec_stdin_large(sb):
    data = os.urandom(3 << 20)
    p = sb.exec("sh", "-c", "tee /tmp/stdin.bin | sha256sum; wc -c </tmp/stdin.bin; rm /tmp/stdin.bin")
    for i in range(0, len(data), 256 << 10):
        p.stdin.write(data[i:i + (256 << 10)])
        p.stdin.drain()
    p.stdin.write_eof()
    p.stdin.drain()
    out = p.stdout.read().split()
    assert out[0] == hashlib.sha256(data).hexdigest() and out[2] == str(len(data)), out
    assert p.wait() == 0


def test_exec_large_output(sb):
    p = sb.exec("sh", "-c", "head -c 8000000 /dev/zero | tr '\\0' x; echo; echo done >&2", text=False)
    assert p.wait() == 0  # wait reads to the end and keeps the output
    out = p.stdout.read()
    assert len(out) == 8000001 and out.count(b"x") == 8000000
    assert p.stderr.read() == b"done\n"


def test_exec_timeout_and_signal(sb):
    t = time.monotonic()
    p = sb.exec("sleep", "60", timeout=2)
    assert p.wait() == 124 and p.reason == "timeout" and time.monotonic() - t < 30
    p = sb.exec("sleep", "60")
    p.terminate()
    assert p.wait() == 128 + 15 and p.reason == "signaled"


def test_aio(sb):
    async def main():
        p = await sb.exec.aio("sh", "-c", "echo aio; exit 2")
        rc = await p.wait.aio()
        return rc, await p.stdout.read.aio()
    assert asyncio.run(main()) == (2, "aio\n")


def test_files(sb):
    sb.mkdir("/tmp/sdk", parents=True)
    with sb.open("/tmp/sdk/f.txt", "w") as f:
        f.write("line 1\nline 2\n")
    with sb.open("/tmp/sdk/f.txt", "a") as f:
        f.write("line 3\n")
    with sb.open("/tmp/sdk/f.txt") as f:
        assert f.readline() == "line 1\n"
        assert f.read() == "line 2\nline 3\n"
    with sb.open("/tmp/sdk/f.txt", "r+") as f:
        f.seek(5)
        f.write("X")
    p = sb.exec("cat", "/tmp/sdk/f.txt")
    assert p.stdout.read() == "line X\nline 2\nline 3\n"  # what the guest sees
    blob = os.urandom(1 << 20) + b"tail"
    with sb.open("/tmp/sdk/blob.bin", "wb") as f:
        f.write(blob)
    assert sb.open("/tmp/sdk/blob.bin", "rb").read() == blob
    p = sb.exec("sha256sum", "/tmp/sdk/blob.bin")
    assert p.stdout.read().split()[0] == hashlib.sha256(blob).hexdigest()
    with pytest.raises(sandvm.ConflictError):
        sb.open("/tmp/sdk/blob.bin", "x")
    with sb.open("/tmp/sdk/new.txt", "x") as f:
        f.write("new")
    assert sorted(sb.ls("/tmp/sdk")) == ["blob.bin", "f.txt", "new.txt"]
    st = sb.stat("/tmp/sdk/blob.bin")
    assert st["type"] == "file" and st["size"] == len(blob)
    sb.mkdir("/tmp/sdk/a/b/c", parents=True)
    assert sb.stat("/tmp/sdk/a/b")["type"] == "dir"
    with pytest.raises(sandvm.ConflictError):
        sb.rm("/tmp/sdk/a")  # not empty
    sb.rm("/tmp/sdk/a", recursive=True)
    sb.rm("/tmp/sdk/new.txt")
    assert sorted(sb.ls("/tmp/sdk")) == ["blob.bin", "f.txt"]
    with pytest.raises(sandvm.NotFoundError):
        sb.open("/tmp/sdk/missing.txt")
    with pytest.raises(sandvm.NotFoundError):
        sb.ls("/tmp/no-such-dir")
    with pytest.raises(sandvm.InvalidError):
        sb.open("relative/path")
    with pytest.raises(sandvm.InvalidError):
        sb.open("/tmp/x", "rw")


def test_connect_token_metadata(sb):
    import httpx
    meta = {"user": "ada", "roles": ["admin"], "name": "Zo\u00eb"}
    creds = sb.create_connect_token(user_metadata=meta, port=ECHO_PORT)
    assert creds.url.startswith("https://") and creds.url.split("//")[1].split(":")[0].endswith(
        "." + os.environ["SANDVM_TEST_DOMAIN"]) and creds.token and creds.token not in repr(creds)
    with httpx.Client(verify=os.environ["SANDVM_CACERT"], timeout=30) as h:
        r = h.get(creds.url + "/hello", headers={"Authorization": "Bearer " + creds.token})
        assert r.status_code == 200, r.text
        assert r.json() == {"path": "/hello", "user_data": [json.dumps(meta, separators=(",", ":"))]}, r.text
        assert h.get(creds.url + "/hello").status_code == 401
    s = sb.create_connect_token(user_metadata="just text", port=ECHO_PORT)
    with httpx.Client(verify=os.environ["SANDVM_CACERT"], timeout=30) as h:
        r = h.get(s.url + "/", params={"_modal_connect_token": s.token})
        assert r.json()["user_data"] == ['"just text"'], r.text
    with pytest.raises(sandvm.InvalidError) as e:
        sb.create_connect_token(user_metadata="x" * 600, port=ECHO_PORT)
    assert e.value.field == "user_metadata"
    with pytest.raises(sandvm.InvalidError) as e:
        sb.create_connect_token(port=TLS_PORT)  # a tunnel port takes no token
    assert e.value.field == "port"


def test_tunnels(sb):
    t = sb.tunnels()
    assert set(t) == {TLS_PORT, PLAIN_PORT}, t
    enc, plain = t[TLS_PORT], t[PLAIN_PORT]
    domain = os.environ["SANDVM_TEST_DOMAIN"]
    assert enc.host.endswith("." + domain) and enc.url == f"https://{enc.host}:{enc.port}"
    assert enc.tls_socket == (enc.host, enc.port) and not enc.h2
    with pytest.raises(sandvm.InvalidError):
        enc.tcp_socket
    host, port = plain.tcp_socket
    assert 18452 <= port <= 18455
    # The plain endpoint of the unencrypted tunnel reaches http.server in the guest.
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(b"GET /index.txt HTTP/1.0\r\nHost: x\r\n\r\n")
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    assert got.startswith(b"HTTP/1.0 200") and got.endswith(b"served through a tunnel\n"), got[:200]


def test_sandbox_lifecycle(client, app):
    # Entrypoint: the sandbox ends with its status; wait() returns, returncode says it.
    a = sandvm.Sandbox.create("sh", "-c", "echo from-entrypoint; exit 7", app=app, image="minimal", memory=128,
                              client=client)
    a.wait()
    assert a.returncode == 7 and a.poll() == 7 and "from-entrypoint" in a.logs()
    # Terminated: wait raises (or not, when asked), returncode 137, exec refused.
    b = sandvm.Sandbox.create(app=app, image="minimal", memory=128, client=client)
    assert b.poll() is None and b.returncode is None
    b.terminate()
    with pytest.raises(sandvm.SandboxTerminatedError):
        b.wait()
    b.wait(raise_on_termination=False)
    assert b.returncode == 137
    with pytest.raises(sandvm.SandboxTerminatedError):
        b.exec("true")
    # Timed out: SandboxTimeoutError, a TimeoutError.
    c = sandvm.Sandbox.create(app=app, image="minimal", memory=128, timeout=2, client=client)
    with pytest.raises(sandvm.SandboxTimeoutError):
        c.wait(timeout=60)
    assert c.returncode == 124 and isinstance(sandvm.SandboxTimeoutError(), TimeoutError)
    # wait(timeout=) gives up on a sandbox that keeps running.
    d = sandvm.Sandbox.create(app=app, image="minimal", memory=128, client=client)
    with pytest.raises(sandvm.TimeoutError):
        d.wait(timeout=1)
    with d:
        pass  # a with block terminates it
    assert d.poll() == 137
    for s in (a, b, c, d):
        s.delete()
    with pytest.raises(sandvm.NotFoundError):
        a.refresh()
