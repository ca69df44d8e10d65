"""``Sandbox``: one microVM of a sandboxd worker, with Modal's names.

Every method is a call to sandboxd's HTTP API (docs/api.md); those that wait
also have an ``.aio`` twin (``await sb.exec.aio(...)``)."""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Union, cast

from . import _aio
from . import exception as exc
from ._client import Client
from .files import FILE_MAX, FileIO
from .image import Image, encode_key
from .network import SandboxConnectCredentials, Tunnel
from .process import ContainerProcess

if TYPE_CHECKING:
    from .app import App

WAIT_STEP_S = 60  # one GET .../wait at most this long; the SDK asks again


def _app_name(app: Union["App", str, None]) -> Optional[str]:
    if app is None:
        return None
    return app if isinstance(app, str) else app.name


def _str_map(name: str, m: Optional[Mapping[str, str]]) -> Optional[Dict[str, str]]:
    if m is None:
        return None
    if not isinstance(m, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()):
        raise exc.InvalidError(f"{name} must map strings to strings", field=name)
    return dict(m)


def _ports(name: str, ports: Sequence[int]) -> List[int]:
    if isinstance(ports, (str, bytes)) or not all(isinstance(p, int) and not isinstance(p, bool) for p in ports):
        raise exc.InvalidError(f"{name} must be a list of port numbers", field=name)
    return list(ports)


def _argv(cmd: Sequence[str]) -> List[str]:
    if not cmd:
        raise exc.InvalidError("exec needs a command: sb.exec('python3', '-c', 'print(1)')", field="argv")
    if not all(isinstance(a, str) for a in cmd):
        raise exc.InvalidError("every argument of a command is a str", field="argv")
    return list(cmd)


class Sandbox:
    """A sandbox. Make one with ``Sandbox.create``, find one with ``from_id``,
    ``from_name`` or ``list``. A ``with`` block terminates it at its end."""

    def __init__(self, client: Client, info: Dict[str, Any]):
        self._client = client
        self._info = info
        self.object_id: str = info["id"]
        self._returncode: Optional[int] = info.get("returncode") if info.get("state") == "finished" else None

    def __repr__(self) -> str:
        return f"Sandbox({self.object_id!r})"

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *a: Any) -> None:
        try:
            self.terminate()
        except exc.NotFoundError:
            pass

    # ---- making and finding ----

    @_aio.classmethod_
    def create(cls, *cmd: str, app: Union["App", str, None] = None, image: Union[Image, str, None] = None,
               timeout: Optional[int] = None, idle_timeout: Optional[int] = None, workdir: Optional[str] = None,
               env: Optional[Mapping[str, str]] = None, cpu: Optional[float] = None,
               memory: Optional[int] = None, block_network: bool = False,
               cidr_allowlist: Optional[Sequence[str]] = None, encrypted_ports: Sequence[int] = (),
               unencrypted_ports: Sequence[int] = (), h2_ports: Sequence[int] = (), name: Optional[str] = None,
               tags: Optional[Mapping[str, str]] = None, restricted: bool = False, cold_boot: bool = False,
               client: Optional[Client] = None) -> "Sandbox":
        """Creates a sandbox and returns once it runs. ``cmd``, if given, is its
        entrypoint: the sandbox ends with it. ``cpu`` is vCPUs (a fraction is
        rounded up), ``memory`` MiB, ``timeout``/``idle_timeout`` seconds.
        sandboxd checks every field and refuses with InvalidError naming it."""
        body: Dict[str, Any] = {}
        if cmd:
            body["command"] = _argv(cmd)
        if isinstance(image, Image):
            if image.kind != "root":
                raise exc.InvalidError(f"{image.object_id} is a directory snapshot: it cannot boot a sandbox; "
                                       "mount it with sb.mount_image(path, image)", field="image")
            body["image"] = image.object_id
        elif image is not None:
            body["image"] = image
        if cpu is not None:
            if not isinstance(cpu, (int, float)) or cpu <= 0:
                raise exc.InvalidError(f"cpu must be a positive number, not {cpu!r}", field="cpu")
            body["cpu"] = int(math.ceil(cpu))
        for k, v in (("timeout", timeout), ("idle_timeout", idle_timeout), ("memory_mib", memory),
                     ("workdir", workdir), ("name", name), ("app", _app_name(app))):
            if v is not None:
                body[k] = v
        for k, m in (("env", env), ("tags", tags)):
            mm = _str_map(k, m)
            if mm is not None:
                body[k] = mm
        if block_network:
            body["block_network"] = True
        if cidr_allowlist is not None:
            if isinstance(cidr_allowlist, str):
                raise exc.InvalidError("cidr_allowlist is a list of CIDRs", field="cidr_allowlist")
            body["cidr_allowlist"] = list(cidr_allowlist)
        for k, p in (("encrypted_ports", encrypted_ports), ("unencrypted_ports", unencrypted_ports),
                     ("h2_ports", h2_ports)):
            if p:
                body[k] = _ports(k, p)
        if restricted:
            body["restricted"] = True
        if cold_boot:
            body["cold_boot"] = True
        c = client or (getattr(app, "_client", None) if app is not None and not isinstance(app, str) else None) \
            or Client.from_env()
        return cls(c, c.call("POST", "/v1/sandboxes", body))

    @_aio.classmethod_
    def from_id(cls, sandbox_id: str, *, client: Optional[Client] = None) -> "Sandbox":
        """The sandbox with this id (NotFoundError if none)."""
        c = client or Client.from_env()
        return cls(c, c.call("GET", f"/v1/sandboxes/{_seg(sandbox_id)}"))

    @_aio.classmethod_
    def from_name(cls, app_name: str, name: str, *, client: Optional[Client] = None) -> "Sandbox":
        """The running sandbox called name in app app_name (NotFoundError if none)."""
        c = client or Client.from_env()
        for o in c.call("GET", "/v1/sandboxes")["sandboxes"]:
            if o.get("app") == app_name and o.get("name") == name and o.get("state") != "finished":
                return cls(c, o)
        raise exc.NotFoundError(f"no running sandbox {name!r} in app {app_name!r}")

    @_aio.classmethod_
    def list(cls, *, app_id: Union["App", str, None] = None, tags: Optional[Mapping[str, str]] = None,
             include_finished: bool = False, client: Optional[Client] = None) -> List["Sandbox"]:
        """The sandboxes that have not finished (all of them with include_finished),
        of app app_id if given, having every tag of tags."""
        c = client or (getattr(app_id, "_client", None) if app_id is not None and not isinstance(app_id, str)
                       else None) or Client.from_env()
        t = _str_map("tags", tags) or {}
        o = c.call("GET", "/v1/sandboxes", params={"tag": [f"{k}={v}" for k, v in t.items()]} if t else None)
        app = _app_name(app_id)
        return [cls(c, s) for s in o["sandboxes"]
                if (include_finished or s.get("state") != "finished") and (app is None or s.get("app") == app)]

    # ---- state ----

    @_aio.method
    def refresh(self) -> Dict[str, Any]:
        """Fetches the sandbox object again (docs/api.md) and returns it."""
        self._set(self._client.call("GET", f"/v1/sandboxes/{self.object_id}"))
        return dict(self._info)

    def _set(self, info: Dict[str, Any]) -> None:
        self._info = info
        if info.get("state") == "finished":
            self._returncode = info.get("returncode")

    @property
    def info(self) -> Dict[str, Any]:
        """The sandbox object as last fetched (refresh() fetches it again)."""
        return dict(self._info)

    @property
    def name(self) -> Optional[str]:
        return cast(Optional[str], self._info.get("name"))

    @property
    def app_name(self) -> str:
        return cast(str, self._info.get("app", "default"))

    def get_tags(self) -> Dict[str, str]:
        return dict(self._info.get("tags") or {})

    @property
    def returncode(self) -> Optional[int]:
        """The sandbox's returncode once poll() or wait() saw it finish: its
        entrypoint's status, 124 for a timeout, 137 when terminated, 125 failed."""
        return self._returncode

    @_aio.method
    def poll(self) -> Optional[int]:
        """The returncode if the sandbox has finished, else None."""
        self.refresh()
        return self._returncode

    @_aio.method
    def wait(self, raise_on_termination: bool = True, timeout: Optional[float] = None) -> None:
        """Waits until the sandbox finishes (for at most timeout seconds, then
        TimeoutError). With raise_on_termination, a sandbox that timed out raises
        SandboxTimeoutError and one terminated or failed SandboxTerminatedError;
        one whose entrypoint exited returns."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = WAIT_STEP_S if deadline is None else max(1, min(WAIT_STEP_S, math.ceil(deadline - time.monotonic())))
            o = self._client.call("GET", f"/v1/sandboxes/{self.object_id}/wait", params={"timeout": step},
                                  timeout=step + 30)
            self._set(o)
            if o.get("state") == "finished":
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise exc.TimeoutError(f"{self.object_id} is still {o.get('state')} after {timeout} s")
        reason = o.get("reason")
        if not raise_on_termination or reason == "exited":
            return
        if reason in ("timeout", "idle_timeout"):
            raise exc.SandboxTimeoutError(f"{self.object_id} reached its {reason.replace('_', ' ')}")
        raise exc.SandboxTerminatedError(f"{self.object_id} ended: {reason}")

    @_aio.method
    def terminate(self) -> None:
        """Stops the VM (returncode 137); the record stays for an hour."""
        self._set(self._client.call("POST", f"/v1/sandboxes/{self.object_id}/terminate"))

    @_aio.method
    def delete(self) -> None:
        """Terminates the sandbox if needed and forgets it (sandvm's addition)."""
        self._client.call("DELETE", f"/v1/sandboxes/{self.object_id}")

    @_aio.method
    def pause(self) -> None:
        """Pauses the sandbox to disk (sandvm's addition; docs/api.md "Pause and resume")."""
        self._set(self._client.call("POST", f"/v1/sandboxes/{self.object_id}/pause"))

    @_aio.method
    def resume(self) -> None:
        self._set(self._client.call("POST", f"/v1/sandboxes/{self.object_id}/resume"))

    @_aio.method
    def logs(self) -> str:
        """The entrypoint's stdout and stderr (the last MiB)."""
        return self._client.get_bytes(f"/v1/sandboxes/{self.object_id}/logs").decode("utf-8", "replace")

    # ---- processes ----

    @_aio.method
    def exec(self, *cmd: str, timeout: Optional[int] = None, workdir: Optional[str] = None,
             env: Optional[Mapping[str, str]] = None, text: bool = True) -> ContainerProcess[Any]:
        """Starts cmd in the sandbox and returns the process at once. Its stdin
        stays open until stdin.write_eof(); stdout/stderr are str (bytes with
        text=False). timeout (seconds) kills its process group (returncode 124)."""
        body: Dict[str, Any] = {"argv": _argv(cmd), "stdin": True}
        if timeout is not None:
            body["timeout"] = timeout
        if workdir is not None:
            body["workdir"] = workdir
        e = _str_map("env", env)
        if e is not None:
            body["env"] = e
        o = self._client.call("POST", f"/v1/sandboxes/{self.object_id}/execs", body)
        return ContainerProcess(self, o["id"], text)

    # ---- files ----

    def _files(self, op: str = "") -> str:
        return f"/v1/sandboxes/{self.object_id}/files" + (f"/{op}" if op else "")

    def _read_file(self, path: str) -> bytes:
        return self._client.get_bytes(self._files(), params={"path": path})

    def _write_file(self, path: str, data: bytes, mode: Optional[int] = None) -> None:
        if len(data) > FILE_MAX:
            raise exc.RequestTooLargeError(f"{path}: guest files are at most {FILE_MAX} bytes")
        q: Dict[str, Any] = {"path": path}
        if mode is not None:
            q["mode"] = format(mode, "04o")
        self._client.put_bytes(self._files(), data, params=q)

    def _stat(self, path: str) -> Dict[str, Any]:
        return cast(Dict[str, Any], self._client.call("GET", self._files("stat"), params={"path": path}))

    def open(self, path: str, mode: str = "r", *, encoding: str = "utf-8") -> FileIO:
        """Opens a guest file: modes r, w, a, x with b (bytes) and +, as Python's open."""
        return FileIO(self, path, mode, encoding)

    @_aio.method
    def ls(self, path: str) -> List[str]:
        """The names in a guest directory."""
        return [e["name"] for e in self.listdir(path)]

    def listdir(self, path: str) -> List[Dict[str, Any]]:
        """The entries of a guest directory with their type and size (sandvm's addition)."""
        o = self._client.call("GET", self._files("list"), params={"path": path})
        return cast(List[Dict[str, Any]], o["entries"])

    @_aio.method
    def mkdir(self, path: str, parents: bool = False) -> None:
        q: Dict[str, Any] = {"path": path}
        if parents:
            q["parents"] = 1
        self._client.call("POST", self._files("mkdir"), params=q)

    @_aio.method
    def rm(self, path: str, recursive: bool = False) -> None:
        q: Dict[str, Any] = {"path": path}
        if recursive:
            q["recursive"] = 1
        self._client.call("DELETE", self._files(), params=q)

    @_aio.method
    def stat(self, path: str) -> Dict[str, Any]:
        """{"type": "file"|"dir"|"symlink"|"other", "size", "mode", "mtime"}."""
        return self._stat(path)

    @_aio.method
    def read_file(self, path: str) -> bytes:
        """A guest file's bytes (sandvm's addition)."""
        return self._read_file(path)

    @_aio.method
    def write_file(self, path: str, data: Union[bytes, str], mode: Optional[int] = None) -> None:
        """Creates or replaces a guest file (sandvm's addition); mode such as 0o600."""
        self._write_file(path, data.encode() if isinstance(data, str) else bytes(data), mode)

    # ---- snapshot images ----

    @_aio.method
    def snapshot_directory(self, path: str, *, _experimental_encryption_key: Optional[bytes] = None,
                           ttl: Union[int, str, None] = None) -> Image:
        """An encrypted image of a guest directory. With a key (bytes, 16..512) the
        image is sealed with it and sandboxd keeps none of it: the same key must be
        given to mount it. Without, sandboxd manages the key. ttl: seconds until it
        expires unused (default 30 days), or "none"."""
        body: Dict[str, Any] = {"path": path}
        key = encode_key(_experimental_encryption_key)
        if key is not None:
            body["key"] = key
        if ttl is not None:
            body["ttl"] = ttl
        o = self._client.call("POST", f"/v1/sandboxes/{self.object_id}/snapshots", body)
        return Image(o["image"], "snapshot", self._client, o)

    @_aio.method
    def mount_image(self, path: str, image: Union[Image, str], *,
                    _experimental_encryption_key: Optional[bytes] = None) -> None:
        """Mounts a snapshot image at path (writable; writes stay in this sandbox).
        A wrong key raises PermissionDeniedError ("wrong key: ..."), a missing one
        InvalidError ("missing key: ..."); nothing is mounted then."""
        image_id = image.object_id if isinstance(image, Image) else image
        if isinstance(image, Image) and image.kind != "snapshot":
            raise exc.InvalidError(f"{image_id} is a root image, not a directory snapshot", field="image")
        body: Dict[str, Any] = {"path": path, "image": image_id}
        key = encode_key(_experimental_encryption_key)
        if key is not None:
            body["key"] = key
        self._client.call("POST", f"/v1/sandboxes/{self.object_id}/mounts", body)

    @_aio.method
    def unmount_image(self, path: str) -> None:
        self._client.call("POST", f"/v1/sandboxes/{self.object_id}/unmount", {"path": path})

    # ---- network, connect tokens, tunnels ----

    @_aio.method
    def create_connect_token(self, user_metadata: Union[Dict[str, Any], str, None] = None, *,
                             port: Optional[int] = None, ttl: Optional[int] = None) -> SandboxConnectCredentials:
        """A token for HTTP and WebSocket to port (default 8080) through the ingress
        listener; the server receives user_metadata as X-Verified-User-Data."""
        body: Dict[str, Any] = {}
        if user_metadata is not None:
            if not isinstance(user_metadata, (dict, str)):
                raise exc.InvalidError("user_metadata is a dict or a str", field="user_metadata")
            body["user_metadata"] = user_metadata
        if port is not None:
            body["port"] = port
        if ttl is not None:
            body["ttl"] = ttl
        o = self._client.call("POST", f"/v1/sandboxes/{self.object_id}/connect-tokens", body)
        return SandboxConnectCredentials(url=o["url"], token=o["token"], id=o.get("id", ""),
                                         port=o.get("port", 8080), expires_at=o.get("expires_at"))

    @_aio.method
    def tunnels(self, timeout: int = 50) -> Dict[int, Tunnel]:
        """The sandbox's tunnels by guest port (allocated at create, so at once)."""
        o = self._client.call("GET", f"/v1/sandboxes/{self.object_id}/tunnels", timeout=timeout)
        return {int(p): Tunnel._from_json(t) for p, t in o["tunnels"].items()}

    @_aio.method
    def network(self) -> Dict[str, Any]:
        """The network: mode, addresses, firewall counters (sandvm's addition)."""
        return cast(Dict[str, Any], self._client.call("GET", f"/v1/sandboxes/{self.object_id}/network"))

    @_aio.method
    def set_network(self, *, block_network: bool = False,
                    cidr_allowlist: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """A new egress policy, in force from the guest's next frame (sandvm's addition)."""
        body: Dict[str, Any] = {}
        if block_network:
            body["block_network"] = True
        if cidr_allowlist is not None:
            body["cidr_allowlist"] = list(cidr_allowlist)
        return cast(Dict[str, Any], self._client.call("PUT", f"/v1/sandboxes/{self.object_id}/network", body))


def _seg(s: str) -> str:
    """An id or name as one path segment."""
    if not isinstance(s, str) or not s or "/" in s or "?" in s or "#" in s or s in (".", ".."):
        raise exc.InvalidError(f"{s!r} is not a sandbox id or name")
    return s
