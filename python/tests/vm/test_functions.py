"""Restricted functions on real VMs: a fresh restricted sandbox per call."""
import time

import pytest

import sandvm

app = sandvm.App("sdk-functions")


@app.function(restrict_modal_access=True, max_inputs=1, timeout=30, block_network=True)
def probe(code: str, target=None):
    import os
    import socket
    seen = {"api_key": "SANDVM_API_KEY" in os.environ, "interfaces": sorted(os.listdir("/sys/class/net"))}
    if target:
        try:
            socket.create_connection((target, 80), timeout=3).close()
            seen["network"] = "reached " + target
        except OSError as e:
            seen["network"] = type(e).__name__
    namespace = {}
    exec(code, namespace)
    seen["result"] = namespace.get("result")
    return seen


@app.function(timeout=3)
def spin():
    while True:
        pass


def test_function_result_and_isolation(client, fake):
    before = {s.object_id for s in sandvm.Sandbox.list(include_finished=True, client=client)}
    # A documentation address (RFC 5737): in the VM no route leads anywhere; the fake runs on this host,
    # whose traffic stays on loopback, so it tries none.
    got = probe.remote("def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nresult = (fib(10), 'x')",
                       target=None if fake else "192.0.2.1")
    # JSON: the tuple comes back as a list. No network device (loopback and the kernel's sit0 tunnel
    # device are no way out), no key, no route out.
    assert not [i for i in got.pop("interfaces") if i not in ("lo", "sit0")], got
    assert got == {"api_key": False, "network": "OSError", "result": [55, "x"]}, got
    # The sandbox is gone once the call returns.
    after = {s.object_id for s in sandvm.Sandbox.list(include_finished=True, client=client)}
    assert after == before, after - before


def test_function_remote_exception():
    with pytest.raises(ZeroDivisionError) as e:
        probe.remote("result = 1 / 0")
    assert isinstance(e.value, sandvm.RemoteError) and e.value.type_name == "ZeroDivisionError"
    assert str(e.value) == "division by zero" and "ZeroDivisionError" in e.value.remote_traceback
    with pytest.raises(sandvm.RemoteError) as e:
        probe.remote("class Custom(Exception): pass\nraise Custom('mine')")
    assert type(e.value).__name__ == "Custom" and str(e.value) == "mine"
    # A result that is not JSON is the remote's error, reported as such.
    with pytest.raises(TypeError) as e:
        probe.remote("result = object()")
    assert "JSON serializable" in str(e.value)


def test_function_timeout():
    t = time.monotonic()
    with pytest.raises(sandvm.FunctionTimeoutError):
        spin.remote()
    assert time.monotonic() - t < 120


def test_function_refuses_before_sending():
    with pytest.raises(sandvm.InvalidError):
        probe.remote({1, 2})  # not JSON: refused here, no sandbox made
    with pytest.raises(sandvm.InvalidError):
        app.function(max_inputs=5)
    with pytest.raises(sandvm.InvalidError):
        app.function(block_network=False)
