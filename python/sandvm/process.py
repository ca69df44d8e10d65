"""A process started by ``Sandbox.exec``: its output streams, its stdin, its end.

sandboxd sends an exec's stdout and stderr as one stream of frames
(GET .../execs/EID/output, one reader at a time). The SDK reads it on demand:
reading stdout pulls frames until stdout has what was asked for, keeping any
stderr met on the way for the stderr reader (and the other way round), so a
process streams while it runs and is slowed down, never dropped, when nobody
reads. ``wait()`` reads to the end, keeping all output for later reads.
Stdin is one streamed request (POST .../stdin) fed from a queue by a thread:
``write`` queues, ``drain`` waits until what was queued is on the wire,
``write_eof`` ends the request, which closes the process's stdin."""
from __future__ import annotations

import codecs
import json
import queue
import threading
from typing import TYPE_CHECKING, Any, Dict, Generic, Iterator, Optional, TypeVar, Union, cast

import httpx

from . import _aio
from . import exception as exc
from ._frames import ERROR, EXIT, STDERR, STDOUT, FrameDecoder, FrameError

if TYPE_CHECKING:
    from .sandbox import Sandbox

T = TypeVar("T", str, bytes)
_RECONNECTS = 3
_EOF = object()


class _Output:
    """The demultiplexed output of one exec, shared by its two readers."""

    def __init__(self, proc: "ContainerProcess[Any]"):
        self._proc = proc
        self._lock = threading.Lock()
        self._bufs: Dict[int, bytearray] = {STDOUT: bytearray(), STDERR: bytearray()}
        self._decoder = FrameDecoder()
        self._resp: Optional[httpx.Response] = None
        self._chunks: Optional[Iterator[bytes]] = None
        self.ended = False
        self.end: Optional[Dict[str, Any]] = None
        self.end_kind = 0

    def _open(self) -> None:
        self._resp = self._proc._client.stream("GET", self._proc._path + "/output")
        self._chunks = self._resp.iter_raw()

    def _close(self) -> None:
        if self._resp is not None:
            self._resp.close()
        self._resp, self._chunks = None, None

    def _pump_once(self) -> None:
        """Reads one piece of the stream (the lock held). A stream cut short is
        read again where it stopped (sandboxd keeps what was not read)."""
        for attempt in range(_RECONNECTS + 1):
            try:
                if self._chunks is None:
                    self._open()
                assert self._chunks is not None
                data = next(self._chunks, None)
            except (httpx.TransportError, exc.UnavailableError):
                self._close()
                if attempt == _RECONNECTS:
                    raise
                continue
            if data is None:
                self._close()
                if self._decoder.pending:
                    # Cut at a frame boundary is the only clean cut; a partial frame is read again.
                    self._decoder = FrameDecoder()
                if attempt == _RECONNECTS:
                    raise exc.ExecutionError(f"the output of {self._proc.object_id} ended before its exit frame")
                continue
            try:
                frames = self._decoder.feed(data)
            except FrameError as e:
                self._close()
                raise exc.ExecutionError(f"the output of {self._proc.object_id} is not an exec stream: {e}") from None
            for kind, payload in frames:
                if kind in (STDOUT, STDERR):
                    self._bufs[kind] += payload
                else:
                    self._finish(kind, payload)
            return

    def _finish(self, kind: int, payload: bytes) -> None:
        self.ended = True
        self.end_kind = kind
        try:
            o = json.loads(payload)
        except ValueError:
            o = None
        self.end = o if isinstance(o, dict) else {"error": "a malformed end frame"}
        self._close()
        rc = self.end.get("returncode")
        self._proc._set_end(rc if isinstance(rc, int) else None, self.end, kind == ERROR)

    def pull(self, fd: int, until: Any) -> bytes:
        """Pulls frames until until(buffer) says how many bytes of fd's buffer to take
        (>= 0), or the stream ended (then everything left)."""
        with self._lock:
            while True:
                buf = self._bufs[fd]
                n = until(buf)
                if n >= 0 or self.ended:
                    if n < 0:
                        n = len(buf)
                    out = bytes(buf[:n])
                    del buf[:n]
                    return out
                self._pump_once()

    def drain_all(self) -> None:
        with self._lock:
            while not self.ended:
                self._pump_once()


class StreamReader(Generic[T]):
    """stdout or stderr of a process: ``read()`` everything (to the end of the
    process), or iterate line by line as it comes. ``str`` with ``text=True``
    (the default of exec), else ``bytes``."""

    def __init__(self, out: _Output, fd: int, text: bool):
        self._out = out
        self._fd = fd
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def _convert(self, data: bytes, final: bool) -> T:
        if self._text:
            return cast(T, self._decoder.decode(data, final))
        return cast(T, data)

    @_aio.method
    def read(self) -> T:
        """Everything the process writes to this stream, once it has ended."""
        return self._convert(self._out.pull(self._fd, lambda b: -1), True)

    def readline(self) -> T:
        """The next line with its newline; the last one may lack it; empty at the end."""
        def line(b: bytearray) -> int:
            i = b.find(b"\n")
            return i + 1 if i >= 0 else -1
        data = self._out.pull(self._fd, line)
        return self._convert(data, not data.endswith(b"\n"))

    def __iter__(self) -> Iterator[T]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line


class StreamWriter:
    """stdin of a process. ``write`` queues bytes (or text, sent as UTF-8),
    ``drain`` waits until everything queued is on its way to the process
    (back-pressure from the guest holds it), ``write_eof`` closes stdin."""

    def __init__(self, proc: "ContainerProcess[Any]"):
        self._proc = proc
        self._q: "queue.Queue[object]" = queue.Queue()
        self._cond = threading.Condition()
        self._queued = 0
        self._sent = 0
        self._eof = False
        self._done = False
        self._error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None

    def _body(self) -> Iterator[bytes]:
        while True:
            with self._cond:
                self._cond.notify_all()
            item = self._q.get()
            if item is _EOF:
                return
            data = cast(bytes, item)
            yield data
            with self._cond:
                self._sent += len(data)

    def _run(self) -> None:
        try:
            r = self._proc._client.stream("POST", self._proc._path + "/stdin", content=self._body())
            r.read()
            r.close()
        except BaseException as e:  # noqa: BLE001 - handed to the writer's caller
            self._error = e
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"stdin-{self._proc.object_id}", daemon=True)
            self._thread.start()

    def write(self, data: Union[bytes, bytearray, memoryview, str]) -> None:
        if self._eof:
            raise exc.InvalidError("stdin was closed (write_eof)")
        if self._error is not None:
            raise exc.ExecutionError(f"stdin of {self._proc.object_id} failed: {self._error}")
        b = data.encode() if isinstance(data, str) else bytes(data)
        if not b:
            return
        self._start()
        with self._cond:
            self._queued += len(b)
        self._q.put(b)

    def write_eof(self) -> None:
        """Closes the process's stdin once what was written has gone."""
        if self._eof:
            return
        self._eof = True
        self._start()
        self._q.put(_EOF)

    @_aio.method
    def drain(self) -> None:
        """Waits until what was written is on its way to the process; raises if
        stdin failed. After write_eof, waits until stdin is closed."""
        with self._cond:
            while not self._done and self._sent < self._queued:
                self._cond.wait()
            while self._eof and not self._done:
                self._cond.wait()
        if self._error is not None and not self._proc._ended:
            raise exc.ExecutionError(f"stdin of {self._proc.object_id} failed: {self._error}")

    def _abandon(self) -> None:
        """The process ended: nothing more can reach it."""
        if not self._eof:
            self._eof = True
            if self._thread is not None:
                self._q.put(_EOF)


class ContainerProcess(Generic[T]):
    """A process running in a sandbox (what ``Sandbox.exec`` returns)."""

    def __init__(self, sandbox: "Sandbox", exec_id: str, text: bool):
        self._sandbox = sandbox
        self._client = sandbox._client
        self.object_id = exec_id
        self._path = f"/v1/sandboxes/{sandbox.object_id}/execs/{exec_id}"
        self._returncode: Optional[int] = None
        self._ended = False
        self._error: Optional[str] = None
        self._end: Optional[Dict[str, Any]] = None
        out = _Output(self)
        self._output = out
        self.stdout: StreamReader[T] = StreamReader(out, STDOUT, text)
        self.stderr: StreamReader[T] = StreamReader(out, STDERR, text)
        self.stdin = StreamWriter(self)

    def __repr__(self) -> str:
        return f"ContainerProcess({self.object_id!r}, returncode={self._returncode})"

    def _set_end(self, rc: Optional[int], end: Dict[str, Any], error: bool) -> None:
        self._ended = True
        self._end = end
        self._returncode = rc
        if error:
            self._error = str(end.get("error", "the process could not run"))
        self.stdin._abandon()

    @property
    def returncode(self) -> Optional[int]:
        """The exit status once known (after poll() or wait() saw the end): 128+N for
        signal N, 124 for the exec's timeout, 127/126 for a program that cannot run."""
        return self._returncode

    @property
    def reason(self) -> Optional[str]:
        """How it ended: "exited", "signaled", "timeout" or "error"."""
        if self._end is None:
            return None
        return "error" if self._error is not None else cast(Optional[str], self._end.get("reason"))

    @_aio.method
    def poll(self) -> Optional[int]:
        """The returncode if the process has ended, else None; never blocks for long."""
        if self._ended:
            return self._returncode
        o = self._client.call("GET", self._path)
        if isinstance(o, dict) and o.get("state") == "exited" and isinstance(o.get("returncode"), int):
            self._returncode = o["returncode"]
        return self._returncode

    @_aio.method
    def wait(self) -> int:
        """Waits for the process to end and returns its returncode. Output not
        read yet is kept for stdout.read()/stderr.read(). Raises
        SandboxTerminatedError when the sandbox went away under it, and
        ExecutionError when it could not run for another reason than a missing
        or non-executable program (those give 127 and 126)."""
        self._output.drain_all()
        if self._error is not None and self._returncode not in (126, 127):
            try:
                finished = self._sandbox.poll() is not None
            except exc.Error:
                finished = False
            cls = exc.SandboxTerminatedError if finished else exc.ExecutionError
            raise cls(f"{self.object_id}: {self._error}")
        assert self._returncode is not None
        return self._returncode

    @_aio.method
    def signal(self, signum: int) -> None:
        """Delivers signal signum (1..64) to the process (sandvm's addition)."""
        self._client.call("POST", self._path + "/signal", {"signal": int(signum)})

    def kill(self) -> None:
        self.signal(9)

    def terminate(self) -> None:
        self.signal(15)

    @property
    def error(self) -> Optional[str]:
        """sandboxd's message when the process could not run, else None."""
        return self._error
