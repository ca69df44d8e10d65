"""The decoder of an exec's output stream (docs/api.md, "Exec"): frames of an
8-byte header (type, three zero bytes, a big-endian payload length) and the
payload. A pure function of the bytes fed in, so its tests need no daemon."""
from __future__ import annotations

import struct
from typing import List, Tuple

STDOUT = 1
STDERR = 2
EXIT = 3
ERROR = 4
HEADER = 8
# sandboxd's frames are at most 64 KiB of output, or a short JSON end; anything
# far past that is not its stream.
PAYLOAD_MAX = 16 << 20


class FrameError(ValueError):
    """The bytes are not an exec stream."""


class FrameDecoder:
    """Feed it bytes in any pieces; it returns the whole frames they complete.
    After an exit or error frame (always the last) any further byte is an error."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.ended = False

    def feed(self, data: bytes) -> List[Tuple[int, bytes]]:
        self._buf += data
        out: List[Tuple[int, bytes]] = []
        while len(self._buf) >= HEADER:
            if self.ended:
                raise FrameError("bytes after the last frame")
            kind = self._buf[0]
            if self._buf[1:4] != b"\0\0\0":
                raise FrameError("a frame header's pad bytes are not zero")
            if kind not in (STDOUT, STDERR, EXIT, ERROR):
                raise FrameError(f"unknown frame type {kind}")
            (n,) = struct.unpack(">I", bytes(self._buf[4:8]))
            if n > PAYLOAD_MAX:
                raise FrameError(f"a frame of {n} bytes is past the cap")
            if len(self._buf) < HEADER + n:
                break
            out.append((kind, bytes(self._buf[HEADER:HEADER + n])))
            del self._buf[:HEADER + n]
            if kind in (EXIT, ERROR):
                self.ended = True
        if self.ended and self._buf:
            raise FrameError("bytes after the last frame")
        return out

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a whole frame."""
        return len(self._buf)
