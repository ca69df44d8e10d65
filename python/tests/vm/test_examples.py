"""The examples/ scripts, run as they are: the acceptance scripts of the SDK."""
import os
import runpy

import pytest

import sandvm

EXAMPLES = os.environ.get("SANDVM_TEST_EXAMPLES", "")


def run(name, capsys):
    runpy.run_path(os.path.join(EXAMPLES, name), run_name="__main__")
    return capsys.readouterr().out


def test_example_hello(capsys):
    assert run("hello.py", capsys) == "42\nreturncode 0\n"


def test_example_csek_snapshot(capsys, client):
    out = run("csek_snapshot.py", capsys).splitlines()
    assert out[0].startswith("image ") and len(out[0].split()[1]) == 32, out
    assert out[1].startswith("refused: wrong key: the key does not match image "), out
    assert out[2] == "private data" and len(out) == 3, out
    img = sandvm.Image.from_id(out[0].split()[1], client=client)
    assert img.info["key"] == "customer"
    # Its sandboxes were terminated; once their VMMs are gone nothing holds the image.
    for s in sandvm.Sandbox.list(app_id="examples", include_finished=True, client=client):
        s.wait(raise_on_termination=False, timeout=60)
    img.delete()
    with pytest.raises(sandvm.NotFoundError):
        sandvm.Image.from_id(img.object_id, client=client)


def test_example_connect_token(capsys):
    out = run("connect_token.py", capsys).splitlines()
    assert out[0].startswith("url https://") and out[0].endswith(":18451"), out
    assert out[1] == "200 hello through a connect token", out


def test_example_tunnel(capsys):
    out = run("tunnel.py", capsys).splitlines()
    assert out[0].startswith("url https://") and ".sdk.test:" in out[0], out
    assert out[1] == "200 hello through a tunnel", out


def test_example_restricted_function(capsys):
    assert run("restricted_function.py", capsys) == "55\n"
