"""``App``: a namespace for sandbox names, and restricted functions.

A restricted function (``@app.function(restrict_modal_access=True, max_inputs=1,
timeout=30, block_network=True)``) runs on untrusted input: each ``.remote(...)``
call boots a fresh restricted sandbox (one exec, no file API, no network device,
no API credential, destroyed afterwards), runs the function's source in it with
the arguments, and returns its result.

Arguments and results travel as JSON, never pickle. Unpickling runs whatever
code the bytes name, so a pickled result would let the code inside the sandbox
(which is untrusted: it ran on untrusted input) run code in the caller's
process, the very thing the sandbox is for. JSON decoding builds only dicts,
lists, strings, numbers, booleans and None, so the worst a hostile sandbox can
send back is a wrong value (or a large one: replies over 64 MiB are refused).
So arguments and results must be JSON values: tuples arrive as lists, dict keys
as strings; anything else is refused (InvalidError) before a sandbox is made.
A remote exception comes back as its class name, message and traceback text and
is raised here as a RemoteError subclass of that name (also a subclass of the
built-in exception of that name, if there is one): only names, never classes,
are taken from the sandbox."""
from __future__ import annotations

import ast
import builtins
import inspect
import json
import re
import textwrap
from typing import Any, Callable, Dict, Generic, Optional, Type, TypeVar, Union

from . import _aio
from . import exception as exc
from ._client import Client
from .image import Image
from .sandbox import Sandbox

R = TypeVar("R")
NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
RESULT_MAX = 64 << 20
EXEC_MARGIN_S = 60  # the sandbox's own timeout past the function's: time to boot and to report

# Runs in the sandbox as `python3 -c RUNNER`; the request ({"source", "name",
# "args", "kwargs"}) comes on stdin, the reply goes to the process's stdout,
# which the function's own prints no longer reach (they go to stderr).
RUNNER = r"""
import json, os, sys, traceback
reply = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
try:
    req = json.loads(sys.stdin.read())
    ns = {"__name__": "__sandvm_function__"}
    exec(compile(req["source"], "<" + req["name"] + ">", "exec"), ns)
    result = ns[req["name"]](*req["args"], **req["kwargs"])
    text = json.dumps({"ok": result})
except BaseException as e:
    text = json.dumps({"error": {"type": type(e).__name__, "message": str(e),
                                 "traceback": traceback.format_exc()}})
reply.write(text)
reply.flush()
"""


def function_source(fn: Callable[..., Any]) -> str:
    """The source of fn without its decorators, dedented: what runs remotely."""
    if inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn):
        raise exc.InvalidError(f"{fn.__name__}: a restricted function is a plain function, not async or a generator")
    if fn.__code__.co_freevars:
        raise exc.InvalidError(f"{fn.__name__}: a restricted function cannot use variables of an enclosing "
                               f"function ({', '.join(fn.__code__.co_freevars)}); pass them as arguments")
    try:
        src = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as e:
        raise exc.InvalidError(f"{fn.__name__}: its source is not available ({e})") from None
    tree = ast.parse(src)
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == fn.__name__]
    if not defs:
        raise exc.InvalidError(f"{fn.__name__}: cannot find its def in its source")
    lines = src.splitlines(keepends=True)
    return "".join(lines[defs[0].lineno - 1:defs[0].end_lineno])


def _json_check(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise exc.InvalidError(f"{what} must be JSON values (dict, list, str, int, float, bool, None): {e}") from None


def remote_exception(o: Any) -> exc.RemoteError:
    """The local exception for a remote one, from untrusted JSON: only its class
    name (an identifier), message and traceback text are used."""
    if not isinstance(o, dict):
        return exc.RemoteError("a malformed error from the sandbox")
    name = o.get("type") if isinstance(o.get("type"), str) else "RemoteError"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,99}", name):
        name = "RemoteError"
    message = str(o.get("message", ""))[:65536]
    tb = str(o.get("traceback", ""))[:1 << 20]
    base = getattr(builtins, name, None)
    bases: tuple = (exc.RemoteError,)
    if isinstance(base, type) and issubclass(base, Exception) and not issubclass(base, exc.RemoteError):
        bases = (exc.RemoteError, base)
    try:
        cls: Type[exc.RemoteError] = type(name, bases, {"__module__": "sandvm.remote"})
        return cls(message, type_name=name, remote_traceback=tb)
    except TypeError:
        cls = type(name, (exc.RemoteError,), {"__module__": "sandvm.remote"})
        return cls(message, type_name=name, remote_traceback=tb)


class Function(Generic[R]):
    """A restricted function: ``f.remote(*args, **kwargs)`` runs it in a fresh
    restricted sandbox; ``f.local(...)`` (or ``f(...)``) here."""

    def __init__(self, app: "App", fn: Callable[..., R], *, timeout: int, image: Union[Image, str, None],
                 cpu: Optional[float], memory: Optional[int], env: Optional[Dict[str, str]]):
        self._app = app
        self._fn = fn
        self._source = function_source(fn)
        self.timeout = timeout
        self._image = image
        self._cpu = cpu
        self._memory = memory
        self._env = env
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self._fn(*args, **kwargs)

    def local(self, *args: Any, **kwargs: Any) -> R:
        return self._fn(*args, **kwargs)

    @_aio.method
    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the function in a fresh restricted sandbox and returns its result
        (a JSON value). Raises the remote exception (a RemoteError subclass of its
        name), FunctionTimeoutError past the timeout, ExecutionError when the
        sandbox sent no valid reply."""
        _json_check(list(args), "the arguments")
        _json_check(kwargs, "the keyword arguments")
        request = json.dumps({"source": self._source, "name": self.__name__, "args": list(args),
                              "kwargs": kwargs}).encode()
        client = self._app._get_client()
        sb = Sandbox.create(image=self._image, timeout=self.timeout + EXEC_MARGIN_S, cpu=self._cpu,
                            memory=self._memory, restricted=True, block_network=True,
                            app=self._app.name, client=client)
        try:
            p = sb.exec("python3", "-c", RUNNER, timeout=self.timeout, env=self._env, text=False)
            p.stdin.write(request)
            p.stdin.write_eof()
            p.stdin.drain()
            rc = p.wait()
            if p.reason == "timeout":
                raise exc.FunctionTimeoutError(f"{self.__name__} ran past its timeout of {self.timeout} s")
            out = p.stdout.read()
        finally:
            try:
                sb.delete()
            except exc.Error:
                pass
        if len(out) > RESULT_MAX:
            raise exc.ExecutionError(f"{self.__name__}: the reply is over {RESULT_MAX} bytes")
        try:
            reply = json.loads(out)
        except ValueError:
            reply = None
        if not isinstance(reply, dict) or len(reply) != 1 or not ({"ok", "error"} & reply.keys()):
            err = p.stderr.read()[-2000:].decode("utf-8", "replace")
            raise exc.ExecutionError(f"{self.__name__}: no reply from the sandbox (status {rc}): {err}")
        if "error" in reply:
            raise remote_exception(reply["error"])
        return reply["ok"]


class App:
    """An app: the namespace of sandbox names (sandboxd's ``app``), and the
    home of restricted functions. ``App("name")`` or ``App.lookup("name")``."""

    def __init__(self, name: str = "default", *, client: Optional[Client] = None):
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise exc.InvalidError(f"app name {name!r}: [A-Za-z0-9._-]{{1,64}}", field="app")
        self.name = name
        self._client = client

    def __repr__(self) -> str:
        return f"App({self.name!r})"

    @property
    def app_id(self) -> str:
        return self.name

    def _get_client(self) -> Client:
        if self._client is None:
            self._client = Client.from_env()
        return self._client

    @_aio.classmethod_
    def lookup(cls, name: str, *, create_if_missing: bool = False, client: Optional[Client] = None) -> "App":
        """The app called name. Apps are namespaces and need no creating: with
        create_if_missing=False an app no sandbox of this worker uses (running
        or finished within the hour) raises NotFoundError."""
        app = cls(name, client=client or Client.from_env())
        if not create_if_missing and not Sandbox.list(app_id=name, include_finished=True, client=app._client):
            raise exc.NotFoundError(f"no app {name!r}: no sandbox uses it (create_if_missing=True makes it)")
        return app

    def function(self, *, restrict_modal_access: bool = True, max_inputs: Optional[int] = 1, timeout: int = 300,
                 block_network: bool = True, image: Union[Image, str, None] = None, cpu: Optional[float] = None,
                 memory: Optional[int] = None, env: Optional[Dict[str, str]] = None
                 ) -> Callable[[Callable[..., R]], Function[R]]:
        """The decorator of a restricted function. Every call of .remote() gets a
        fresh restricted sandbox (max_inputs=1), which has no network and no API
        access whatever the flags say: restrict_modal_access and block_network
        must be True, max_inputs 1 (or None). timeout: seconds the function may run."""
        if not restrict_modal_access or not block_network:
            raise exc.InvalidError("sandvm runs functions only restricted: restrict_modal_access=True, "
                                   "block_network=True")
        if max_inputs not in (None, 1):
            raise exc.InvalidError("each call gets a fresh sandbox: max_inputs is 1")
        if not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= 86400 - EXEC_MARGIN_S:
            raise exc.InvalidError(f"timeout {timeout!r}: whole seconds, 1..{86400 - EXEC_MARGIN_S}")

        def wrap(fn: Callable[..., R]) -> Function[R]:
            return Function(self, fn, timeout=timeout, image=image, cpu=cpu, memory=memory, env=env)
        return wrap
