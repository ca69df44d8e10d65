"""Ways into a sandbox: connect tokens (through the ingress listener, with
verified user metadata) and tunnels (a port opened to anyone with its address)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from . import exception as exc


@dataclass(frozen=True)
class SandboxConnectCredentials:
    """What ``create_connect_token`` returns. ``token`` is shown this once; send it
    as ``Authorization: Bearer TOKEN`` (or the ``_modal_connect_token`` query
    parameter or cookie) to ``url``."""
    url: str
    token: str
    id: str = ""
    port: int = 8080
    expires_at: Optional[float] = None

    def __repr__(self) -> str:
        return f"SandboxConnectCredentials(url={self.url!r}, id={self.id!r})"  # never the token


@dataclass(frozen=True)
class Tunnel:
    """A tunnel to a port of a sandbox (``Sandbox.tunnels()``)."""
    host: Optional[str]
    port: Optional[int]
    unencrypted_host: Optional[str] = None
    unencrypted_port: Optional[int] = None
    container_port: int = 0
    h2: bool = False

    @property
    def url(self) -> str:
        """https://HOST[:PORT] (the port left out when it is 443)."""
        if not self.host or not self.port:
            raise exc.UnavailableError("this worker serves no tunnels (sandboxd runs without --ingress)")
        return f"https://{self.host}" + ("" if self.port == 443 else f":{self.port}")

    @property
    def tls_socket(self) -> Tuple[str, int]:
        """(host, port) of the TLS endpoint."""
        if not self.host or not self.port:
            raise exc.UnavailableError("this worker serves no tunnels (sandboxd runs without --ingress)")
        return (self.host, self.port)

    @property
    def tcp_socket(self) -> Tuple[str, int]:
        """(host, port) of the plain TCP endpoint of an unencrypted tunnel."""
        if not self.unencrypted_host or not self.unencrypted_port:
            raise exc.InvalidError(f"the tunnel to port {self.container_port} has no plain TCP endpoint: "
                                   "ask for it in unencrypted_ports")
        return (self.unencrypted_host, self.unencrypted_port)

    @classmethod
    def _from_json(cls, o: Dict[str, Any]) -> "Tunnel":
        return cls(host=o.get("host"), port=o.get("port"), unencrypted_host=o.get("unencrypted_host"),
                   unencrypted_port=o.get("unencrypted_port"), container_port=int(o.get("container_port", 0)),
                   h2=bool(o.get("h2")))
