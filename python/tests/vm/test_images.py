"""Snapshot images and their keys on real VMs, beyond examples/csek_snapshot.py."""
import os

import pytest

import sandvm


def test_snapshot_keys(sb, client):
    # Keys are checked before anything is sent: a client with no daemon behind it still says InvalidError.
    nowhere = sandvm.Sandbox(sandvm.Client("unix:///nonexistent/sandboxd.sock", api_key="k"), {"id": sb.object_id})
    for bad in (b"k" * 15, b"k" * 513, "a str key"):
        with pytest.raises(sandvm.InvalidError):
            nowhere.snapshot_directory("/tmp", _experimental_encryption_key=bad)
        with pytest.raises(sandvm.InvalidError):
            nowhere.mount_image("/mnt", "0" * 32, _experimental_encryption_key=bad)
    with pytest.raises(sandvm.UnavailableError):
        nowhere.snapshot_directory("/tmp")  # and that client does fail once it sends
    key = os.urandom(16)
    sb.mkdir("/tmp/snap-src", parents=True)
    sb.write_file("/tmp/snap-src/a.txt", "snapshot contents\n")
    img = sb.snapshot_directory("/tmp/snap-src", _experimental_encryption_key=key, ttl=600)
    managed = sb.snapshot_directory("/tmp/snap-src")
    try:
        with pytest.raises(sandvm.InvalidError) as e:
            sb.mount_image("/mnt/a", img)
        assert str(e.value).startswith("missing key: ")
        with pytest.raises(sandvm.PermissionDeniedError) as e:
            sb.mount_image("/mnt/a", img, _experimental_encryption_key=os.urandom(16))
        assert str(e.value).startswith("wrong key: ")
        with pytest.raises(sandvm.InvalidError):
            sb.mount_image("/mnt/b", managed, _experimental_encryption_key=key)  # a managed image takes none
        with pytest.raises(sandvm.NotFoundError):
            sb.snapshot_directory("/tmp/no-such-dir")
        sb.mount_image("/mnt/a", img, _experimental_encryption_key=key)
        sb.mount_image("/mnt/b", managed)
        assert sb.exec("cat", "/mnt/a/a.txt", "/mnt/b/a.txt").stdout.read() == "snapshot contents\n" * 2
        assert {m["path"] for m in sb.refresh()["mounts"]} == {"/mnt/a", "/mnt/b"}
        with pytest.raises(sandvm.InvalidError):
            sandvm.Sandbox.create(image=img, client=client)  # a snapshot boots nothing
        sb.unmount_image("/mnt/a")
        sb.unmount_image("/mnt/b")
        assert sandvm.Image.from_id(img.object_id, client=client).info["key"] == "customer"
    finally:
        for i in (img, managed):
            i.delete()
