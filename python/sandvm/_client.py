"""The connection to sandboxd: where it is, the API key, TLS, and the map from
its error answers to the SDK's exceptions.

The host and key come from the same places as vmctl's (docs/vmctl.md):
host: the argument, else $SANDVM_HOST, else unix:///run/sandvm/sandboxd.sock;
key: the argument, else $SANDVM_API_KEY, else the first line of the key_file
argument, $SANDVM_API_KEY_FILE or ~/.config/sandvm/api-key; CA: the argument,
else $SANDVM_CACERT, else the system's CAs."""
from __future__ import annotations

import json
import os
import ssl
import urllib.parse
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Union

import httpx

from . import exception as exc

DEFAULT_HOST = "unix:///run/sandvm/sandboxd.sock"
KEY_DEFAULT_FILE = os.path.join(".config", "sandvm", "api-key")
# A create waits for its VM (and, on a shape's first use, for its template or image build).
CALL_TIMEOUT_S = 900.0
CONNECT_TIMEOUT_S = 30.0

Query = Mapping[str, Union[str, int, Iterable[str]]]


def _key_valid(key: str) -> bool:
    return bool(key) and all(0x21 <= ord(c) <= 0x7E for c in key)


def _read_key_file(path: str, named_by: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="strict") as f:
            line = f.readline().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise exc.AuthError(f"cannot read the API key from {path} (named by {named_by}): {e}") from None
    if not line:
        raise exc.AuthError(f"cannot read the API key from {path} (named by {named_by}): the file is empty")
    return line


def load_api_key(api_key: Optional[str] = None, key_file: Optional[str] = None) -> str:
    """The API key, from the first of: api_key, $SANDVM_API_KEY, key_file,
    $SANDVM_API_KEY_FILE, ~/.config/sandvm/api-key. Raises AuthError."""
    if api_key:
        key, origin = api_key.strip(), "the api_key argument"
    elif os.environ.get("SANDVM_API_KEY"):
        key, origin = os.environ["SANDVM_API_KEY"].strip(), "SANDVM_API_KEY"
    elif key_file:
        key, origin = _read_key_file(key_file, "key_file"), key_file
    elif os.environ.get("SANDVM_API_KEY_FILE"):
        path = os.environ["SANDVM_API_KEY_FILE"]
        key, origin = _read_key_file(path, "SANDVM_API_KEY_FILE"), path
    else:
        path = os.path.join(os.path.expanduser("~"), KEY_DEFAULT_FILE)
        if not os.path.exists(path):
            raise exc.AuthError("no API key: SANDVM_API_KEY is not set, SANDVM_API_KEY_FILE names no file and "
                                f"{path} does not exist (sandboxd makes keys with `sandboxd --new-key NAME`)")
        key, origin = _read_key_file(path, "the default"), path
    if not _key_valid(key):
        raise exc.AuthError(f"the API key from {origin} is empty or has characters a key cannot have")
    return key


_STATUS_ERRORS = {
    400: exc.InvalidError, 401: exc.AuthError, 403: exc.PermissionDeniedError, 404: exc.NotFoundError,
    405: exc.InvalidError, 408: exc.TimeoutError, 409: exc.ConflictError, 413: exc.RequestTooLargeError,
    414: exc.RequestTooLargeError, 429: exc.ResourceExhaustedError, 431: exc.RequestTooLargeError,
    502: exc.UnavailableError, 503: exc.UnavailableError, 504: exc.TimeoutError,
}


def error_for(status: int, body: bytes) -> exc.Error:
    """The exception for one of sandboxd's error answers: {"error": MESSAGE, "field": NAME}."""
    message, field = "", None
    try:
        o = json.loads(body)
        if isinstance(o, dict):
            message = str(o.get("error", ""))
            field = o.get("field") if isinstance(o.get("field"), str) else None
    except ValueError:
        message = body[:500].decode("utf-8", "replace")
    if not message:
        message = f"HTTP {status}"
    cls = _STATUS_ERRORS.get(status, exc.Error)
    if status == 409 and " is finished" in message:
        cls = exc.SandboxTerminatedError
    return cls(message, status=status, field=field)


class Client:
    """A connection to one sandboxd. Thread-safe; Sandbox and Image objects keep
    the client they came from. ``Client.from_env()`` (what every call uses when
    given none) reads the host, key and CA as vmctl does."""

    def __init__(self, host: Optional[str] = None, api_key: Optional[str] = None, *,
                 key_file: Optional[str] = None, cacert: Optional[str] = None):
        host = host or os.environ.get("SANDVM_HOST") or DEFAULT_HOST
        cacert = cacert or os.environ.get("SANDVM_CACERT") or None
        self.host = host
        self._key = load_api_key(api_key, key_file)
        u = urllib.parse.urlsplit(host)
        timeout = httpx.Timeout(CALL_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=16)
        if u.scheme == "unix":
            path = u.path
            if u.netloc or not path.startswith("/"):
                raise exc.InvalidError(f"host {host!r}: a unix host is unix:///ABSOLUTE/PATH")
            transport = httpx.HTTPTransport(uds=path, limits=limits)
            self._http = httpx.Client(transport=transport, base_url="http://localhost", timeout=timeout)
        elif u.scheme in ("http", "https") and u.hostname:
            verify: Union[bool, ssl.SSLContext] = False
            if u.scheme == "https":
                ctx = ssl.create_default_context(cafile=cacert)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_3
                verify = ctx
            transport = httpx.HTTPTransport(verify=verify, limits=limits)
            base = f"{u.scheme}://{u.netloc}"
            self._http = httpx.Client(transport=transport, base_url=base, timeout=timeout)
        else:
            raise exc.InvalidError(f"host {host!r}: give unix:///PATH, http://HOST:PORT or https://HOST:PORT")
        self._headers = {"Authorization": "Bearer " + self._key, "User-Agent": "sandvm-python"}

    @classmethod
    def from_env(cls) -> "Client":
        return cls()

    def __repr__(self) -> str:
        return f"sandvm.Client({self.host!r})"  # never the key

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *a: Any) -> None:
        self.close()

    # ---- requests ----

    def _send(self, method: str, path: str, *, params: Optional[Query] = None, json_body: Any = None,
              content: Union[bytes, Iterator[bytes], None] = None, timeout: Optional[float] = None,
              stream: bool = False, headers: Optional[Dict[str, str]] = None) -> httpx.Response:
        h = dict(self._headers)
        if headers:
            h.update(headers)
        if json_body is not None:
            content = json.dumps(json_body).encode()
            h["Content-Type"] = "application/json"
        kw: Dict[str, Any] = {}
        if timeout is not None:
            kw["timeout"] = httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S)
        try:
            req = self._http.build_request(method, path, params=_params(params), content=content, headers=h, **kw)
            r = self._http.send(req, stream=stream)
        except httpx.TimeoutException as e:
            raise exc.TimeoutError(f"{method} {path}: sandboxd did not answer in time ({e})") from None
        except httpx.TransportError as e:
            raise exc.UnavailableError(f"cannot reach sandboxd at {self.host}: {e}") from None
        if r.status_code >= 400:
            body = r.read() if stream else r.content
            if stream:
                r.close()
            raise error_for(r.status_code, body)
        return r

    def call(self, method: str, path: str, body: Any = None, *, params: Optional[Query] = None,
             timeout: Optional[float] = None) -> Any:
        """One JSON call: the reply's JSON, or None for 204."""
        r = self._send(method, path, params=params, json_body=body, timeout=timeout)
        if r.status_code == 204 or not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            raise exc.Error(f"{method} {path}: sandboxd's reply is not JSON", status=r.status_code) from None

    def get_bytes(self, path: str, *, params: Optional[Query] = None) -> bytes:
        return self._send("GET", path, params=params).content

    def put_bytes(self, path: str, data: Union[bytes, Iterator[bytes]], *, params: Optional[Query] = None) -> None:
        self._send("PUT", path, params=params, content=data,
                   headers={"Content-Type": "application/octet-stream"})

    def stream(self, method: str, path: str, *, content: Union[bytes, Iterator[bytes], None] = None,
               read_timeout: Optional[float] = None) -> httpx.Response:
        """A request whose reply (or body) streams: the caller closes the response."""
        h = {"Content-Type": "application/octet-stream"} if content is not None else None
        t = httpx.Timeout(CALL_TIMEOUT_S, connect=CONNECT_TIMEOUT_S, read=read_timeout, write=None)
        try:
            req = self._http.build_request(method, path, content=content, headers={**self._headers, **(h or {})},
                                           timeout=t)
            r = self._http.send(req, stream=True)
        except httpx.TimeoutException as e:
            raise exc.TimeoutError(f"{method} {path}: sandboxd did not answer in time ({e})") from None
        except httpx.TransportError as e:
            raise exc.UnavailableError(f"cannot reach sandboxd at {self.host}: {e}") from None
        if r.status_code >= 400:
            body = r.read()
            r.close()
            raise error_for(r.status_code, body)
        return r


def _params(q: Optional[Query]) -> Optional[list]:
    if not q:
        return None
    out = []
    for k, v in q.items():
        if isinstance(v, (str, int)):
            out.append((k, str(v)))
        else:
            out.extend((k, str(x)) for x in v)
    return out
