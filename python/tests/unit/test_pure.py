"""The SDK's parts that need no daemon: the exec stream decoder, key checks,
file modes, the error map, key loading, restricted functions' source and the
decoding of a remote exception (the sandbox's reply is untrusted)."""
import json
import os
import random
import struct

import pytest

import sandvm
from sandvm import _client, _frames, app as app_mod, files, image


def frame(kind, payload):
    return struct.pack(">B3xI", kind, len(payload)) + payload


STREAM = (frame(1, b"out-1\n") + frame(2, b"err") + frame(1, b"") + frame(1, b"x" * 70000) +
          frame(3, json.dumps({"returncode": 3, "reason": "exited"}).encode()))


def decode(chunks):
    d = _frames.FrameDecoder()
    got = []
    for c in chunks:
        got += d.feed(c)
    return got, d


def test_frames_cut_anywhere():
    whole, d = decode([STREAM])
    assert [k for k, _ in whole] == [1, 2, 1, 1, 3] and d.ended and d.pending == 0
    for cut in range(len(STREAM) + 1):
        assert decode([STREAM[:cut], STREAM[cut:]])[0] == whole
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(STREAM)), 5))
        parts = [STREAM[a:b] for a, b in zip([0] + cuts, cuts + [len(STREAM)])]
        assert decode(parts)[0] == whole
    assert decode([STREAM[:-1]])[1].ended is False


@pytest.mark.parametrize("bad", [
    b"\x01\x00\x01\x00\x00\x00\x00\x00",                  # a pad byte set
    b"\x07\x00\x00\x00\x00\x00\x00\x00",                  # unknown type
    struct.pack(">B3xI", 1, _frames.PAYLOAD_MAX + 1),     # past the cap
    frame(3, b"{}") + b"\x01",                            # bytes after the end
    frame(4, b"{}") + frame(1, b"late"),
])
def test_frames_hostile(bad):
    with pytest.raises(_frames.FrameError):
        decode([bad])


def test_keys_checked_before_sending():
    assert image.encode_key(None) is None
    for n in (16, 32, 512):
        assert len(image.encode_key(os.urandom(n))) == (n + 2) // 3 * 4
    for bad in (b"", b"k" * 15, b"k" * 513, "sixteen chars!!!", 12345):
        with pytest.raises(sandvm.InvalidError):
            image.encode_key(bad)


def test_file_modes():
    for m in ("r", "rb", "w", "wb", "a", "ab", "x", "xb", "r+", "rb+", "w+b", "rt"):
        files._Mode(m)
    for m in ("", "rw", "rr", "q", "rbb", "bt", "r+b+", "wa"):
        with pytest.raises(sandvm.InvalidError):
            files._Mode(m)
    assert files._Mode("r").writable is False and files._Mode("r+").writable is True
    assert files._Mode("a").readable is False and files._Mode("w+").readable is True


@pytest.mark.parametrize("status,cls", [
    (400, sandvm.InvalidError), (401, sandvm.AuthError), (403, sandvm.PermissionDeniedError),
    (404, sandvm.NotFoundError), (408, sandvm.TimeoutError), (409, sandvm.ConflictError),
    (413, sandvm.RequestTooLargeError), (429, sandvm.ResourceExhaustedError), (502, sandvm.UnavailableError),
    (503, sandvm.UnavailableError), (504, sandvm.TimeoutError), (500, sandvm.Error), (418, sandvm.Error),
])
def test_error_map(status, cls):
    e = _client.error_for(status, b'{"error": "why", "field": "cpu"}')
    assert type(e) is cls and str(e) == "why" and e.status == status and e.field == "cpu"


def test_error_map_details():
    e = _client.error_for(409, b'{"error": "sandbox sb-1 is finished, not running"}')
    assert isinstance(e, sandvm.SandboxTerminatedError) and isinstance(e, sandvm.ConflictError)
    assert str(_client.error_for(502, b"<html>not json</html>")) == "<html>not json</html>"
    assert str(_client.error_for(500, b"")) == "HTTP 500"
    assert _client.error_for(400, b'{"error": "x", "field": 7}').field is None
    assert isinstance(sandvm.TimeoutError("t"), TimeoutError)  # the built-in one too


def test_api_key_sources(tmp_path, monkeypatch):
    for k in ("SANDVM_API_KEY", "SANDVM_API_KEY_FILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(sandvm.AuthError, match="no API key"):
        _client.load_api_key()
    (tmp_path / ".config" / "sandvm").mkdir(parents=True)
    (tmp_path / ".config" / "sandvm" / "api-key").write_text("from-home\n")
    assert _client.load_api_key() == "from-home"
    f = tmp_path / "k"
    f.write_text("  from-file  \nsecond\n")
    monkeypatch.setenv("SANDVM_API_KEY_FILE", str(f))
    assert _client.load_api_key() == "from-file"
    monkeypatch.setenv("SANDVM_API_KEY", "from-env")
    assert _client.load_api_key() == "from-env" and _client.load_api_key(key_file=str(f)) == "from-env"
    assert _client.load_api_key("explicit") == "explicit"
    with pytest.raises(sandvm.AuthError, match="characters"):
        _client.load_api_key("two words")
    monkeypatch.delenv("SANDVM_API_KEY")
    f.write_text("\n")
    with pytest.raises(sandvm.AuthError, match="empty"):
        _client.load_api_key()


def test_client_hosts():
    for bad in ("ftp://x", "unix://relative", "localhost:8080"):
        with pytest.raises(sandvm.InvalidError):
            sandvm.Client(bad, api_key="k")
    c = sandvm.Client("unix:///run/x.sock", api_key="secret-key")
    assert "secret-key" not in repr(c)
    c.close()


test_app = sandvm.App("unit")


@test_app.function(timeout=30)
def decorated(x, y=2):
    """doc"""
    return x * y


def test_function_source():
    src = app_mod.function_source(decorated._fn)
    assert src.startswith("def decorated(x, y=2):") and "@test_app" not in src
    ns = {}
    exec(src, ns)
    assert ns["decorated"](3) == 6 and decorated(3) == 6 and decorated.local(3, y=3) == 9
    assert decorated.__name__ == "decorated" and decorated.__doc__ == "doc"
    k = 1

    def closure():
        return k
    with pytest.raises(sandvm.InvalidError, match="enclosing"):
        test_app.function()(closure)

    async def coro():
        pass
    with pytest.raises(sandvm.InvalidError):
        test_app.function()(coro)
    with pytest.raises(sandvm.InvalidError):
        decorated.remote(object())  # not JSON: refused before a client is even made
    with pytest.raises(sandvm.InvalidError):
        test_app.function(timeout=0)


def test_remote_exception_from_untrusted_json():
    e = app_mod.remote_exception({"type": "ValueError", "message": "bad", "traceback": "tb"})
    assert isinstance(e, ValueError) and isinstance(e, sandvm.RemoteError) and str(e) == "bad"
    assert e.type_name == "ValueError" and e.remote_traceback == "tb"
    e = app_mod.remote_exception({"type": "MyError", "message": "m"})
    assert type(e).__name__ == "MyError" and type(e).__bases__ == (sandvm.RemoteError,)
    # Names that are not identifiers, or that name non-exceptions, give no more than a RemoteError.
    for name in ("os.system('x')", "__import__", "a" * 200, 7, None, "print", "SystemExit", "KeyboardInterrupt"):
        e = app_mod.remote_exception({"type": name, "message": "m"})
        assert isinstance(e, sandvm.RemoteError) and not isinstance(e, (SystemExit, KeyboardInterrupt))
        assert type(e).__bases__ == (sandvm.RemoteError,)
    e = app_mod.remote_exception({"type": "UnicodeDecodeError", "message": "needs five arguments"})
    assert isinstance(e, sandvm.RemoteError) and str(e) == "needs five arguments"
    for junk in ([], "x", {"type": "E", "message": {"nested": 1}}):
        assert isinstance(app_mod.remote_exception(junk), sandvm.RemoteError)
    assert len(str(app_mod.remote_exception({"type": "E", "message": "m" * 100000}))) == 65536
