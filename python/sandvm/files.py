"""``Sandbox.open``: a guest file as a Python file object.

sandboxd moves whole files (GET/PUT .../files, at most 256 MiB), so the
object holds the file's bytes here: a mode that reads fetches the file at
open, a mode that writes sends it back whole on flush() and close()."""
from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Union

from . import exception as exc

if TYPE_CHECKING:
    from .sandbox import Sandbox

FILE_MAX = 256 << 20


class _Mode:
    def __init__(self, mode: str):
        kinds = [c for c in mode if c in "rwax"]
        rest = [c for c in mode if c not in "rwax"]
        if len(kinds) != 1 or any(c not in "b+t" for c in rest) or len(set(rest)) != len(rest) or \
                ("b" in rest and "t" in rest):
            raise exc.InvalidError(f"invalid mode {mode!r}: one of r, w, a, x, then b or t, and + if wanted")
        self.kind = kinds[0]
        self.binary = "b" in rest
        self.plus = "+" in rest
        self.readable = self.kind == "r" or self.plus
        self.writable = self.kind != "r" or self.plus


class FileIO:
    """A file in a sandbox, opened by ``sb.open(path, mode)``; a context manager.
    Text modes read and write UTF-8 (``encoding`` otherwise)."""

    def __init__(self, sandbox: "Sandbox", path: str, mode: str = "r", encoding: str = "utf-8"):
        if not path.startswith("/"):
            raise exc.InvalidError(f"path {path!r}: guest paths are absolute")
        self._m = _Mode(mode)
        self._sb = sandbox
        self.path = path
        self.mode = mode
        self._encoding = encoding
        self._buf = io.BytesIO()
        self._dirty = False
        self.closed = False
        k = self._m.kind
        if k == "x" and self._exists():
            raise exc.ConflictError(f"{path} exists in {sandbox.object_id} (mode 'x')")
        if k == "r" or k == "a":
            try:
                self._buf = io.BytesIO(sandbox._read_file(path))
            except exc.NotFoundError:
                if k == "r":
                    raise
            if k == "a":
                self._buf.seek(0, io.SEEK_END)
        if k in "wx":
            self._dirty = True  # the file is created (or emptied) even if nothing is written

    def _exists(self) -> bool:
        try:
            self._sb._stat(self.path)
            return True
        except exc.NotFoundError:
            return False

    def _check(self, reading: bool) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if reading and not self._m.readable:
            raise io.UnsupportedOperation("not readable")
        if not reading and not self._m.writable:
            raise io.UnsupportedOperation("not writable")

    def _out(self, b: bytes) -> Union[str, bytes]:
        return b if self._m.binary else b.decode(self._encoding)

    def read(self, n: Optional[int] = -1) -> Union[str, bytes]:
        self._check(True)
        if self._m.binary:
            return self._buf.read(-1 if n is None else n)
        # Text: n counts characters.
        rest = self._buf.read().decode(self._encoding)
        if n is None or n < 0 or n >= len(rest):
            return rest
        self._buf.seek(self._buf.tell() - len(rest[n:].encode(self._encoding)))
        return rest[:n]

    def readline(self) -> Union[str, bytes]:
        self._check(True)
        return self._out(self._buf.readline())

    def readlines(self) -> List[Union[str, bytes]]:
        return list(self)

    def __iter__(self) -> Iterator[Union[str, bytes]]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def write(self, data: Union[str, bytes, bytearray]) -> int:
        self._check(False)
        if self._m.binary:
            if isinstance(data, str):
                raise TypeError("write() argument must be bytes in a binary mode")
            b = bytes(data)
        else:
            if not isinstance(data, str):
                raise TypeError("write() argument must be str in a text mode")
            b = data.encode(self._encoding)
        if self._m.kind == "a":
            self._buf.seek(0, io.SEEK_END)
        if self._buf.tell() + len(b) > FILE_MAX:
            raise exc.RequestTooLargeError(f"{self.path}: guest files are at most {FILE_MAX} bytes here")
        self._buf.write(b)
        self._dirty = True
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        return self._buf.seek(offset, whence)

    def tell(self) -> int:
        return self._buf.tell()

    def flush(self) -> None:
        """Sends the file's bytes to the sandbox if anything changed."""
        if self.closed or not self._dirty:
            return
        self._sb._write_file(self.path, self._buf.getvalue())
        self._dirty = False

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.flush()
        finally:
            self.closed = True

    def readable(self) -> bool:
        return self._m.readable

    def writable(self) -> bool:
        return self._m.writable

    def __enter__(self) -> "FileIO":
        return self

    def __exit__(self, *a: Any) -> None:
        self.close()
