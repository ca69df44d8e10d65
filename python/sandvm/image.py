"""Images: what a sandbox boots (``Image.debian()``, ``Image.minimal()``,
``Image.from_path``) and encrypted directory snapshots (``Sandbox.snapshot_directory``,
``Image.from_id``), which are mounted into sandboxes (``Sandbox.mount_image``)."""
from __future__ import annotations

import base64
from typing import Any, Dict, Optional

from . import _aio
from . import exception as exc
from ._client import Client

KEY_MIN = 16
KEY_MAX = 512


def encode_key(key: Optional[bytes]) -> Optional[str]:
    """A customer key for the JSON body: bytes of 16..512, checked here so that a bad
    key is refused before anything is sent."""
    if key is None:
        return None
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise exc.InvalidError(f"_experimental_encryption_key must be bytes, not {type(key).__name__}")
    raw = bytes(key)
    if not KEY_MIN <= len(raw) <= KEY_MAX:
        raise exc.InvalidError(f"_experimental_encryption_key is {len(raw)} bytes; it must be {KEY_MIN}..{KEY_MAX}")
    return base64.b64encode(raw).decode()


class Image:
    """An image. ``object_id`` is a snapshot's 32-hex-digit id, or the name or path
    of a root image (``debian``, ``minimal``, an absolute path)."""

    def __init__(self, object_id: str, kind: str, client: Optional[Client] = None,
                 info: Optional[Dict[str, Any]] = None):
        self.object_id = object_id
        self.kind = kind  # "root" or "snapshot"
        self._client = client
        self._info = info or {}

    def __repr__(self) -> str:
        return f"Image({self.object_id!r}, kind={self.kind!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and (self.object_id, self.kind) == (other.object_id, other.kind)

    def __hash__(self) -> int:
        return hash((self.object_id, self.kind))

    @staticmethod
    def debian() -> "Image":
        """Debian bookworm with python3 (the default)."""
        return Image("debian", "root")

    @staticmethod
    def minimal() -> "Image":
        """The busybox initramfs: boots fastest, no python3."""
        return Image("minimal", "root")

    @staticmethod
    def from_path(path: str) -> "Image":
        """An ext4 root file system in the worker's image folders (sandboxd --images/--image-dir)."""
        if not path.startswith("/"):
            raise exc.InvalidError(f"image path {path!r} is not absolute")
        return Image(path, "root")

    @_aio.classmethod_
    def from_id(cls, image_id: str, *, client: Optional[Client] = None) -> "Image":
        """A directory snapshot by id (NotFoundError when the worker has none by that id)."""
        c = client or Client.from_env()
        info = c.call("GET", f"/v1/snapshots/{_check_id(image_id)}")
        return cls(image_id, "snapshot", c, info)

    @property
    def info(self) -> Dict[str, Any]:
        """The snapshot's record when last fetched (created, last_used, expires, key, sizes, source)."""
        return dict(self._info)

    @_aio.method
    def delete(self) -> None:
        """Deletes a snapshot image, its record and its key material (409 while mounted)."""
        if self.kind != "snapshot":
            raise exc.InvalidError("only snapshot images can be deleted")
        c = self._client or Client.from_env()
        c.call("DELETE", f"/v1/snapshots/{_check_id(self.object_id)}")


def _check_id(image_id: str) -> str:
    if not isinstance(image_id, str) or len(image_id) != 32 or any(c not in "0123456789abcdef" for c in image_id):
        raise exc.InvalidError(f"image id {image_id!r} is not 32 lowercase hex digits")
    return image_id
