"""sandvm: drive sandvm sandboxes (KVM microVMs) from Python, with the names of
Modal's sandbox API. It talks to sandboxd's HTTP API (docs/api.md) over its
unix socket or HTTPS; see docs/python.md.

    import sandvm
    sb = sandvm.Sandbox.create(app=sandvm.App.lookup("demo", create_if_missing=True))
    p = sb.exec("python3", "-c", "print(6 * 7)")
    print(p.stdout.read())      # 42
    sb.terminate()
"""
from . import exception
from ._client import Client
from .app import App, Function
from .exception import (AuthError, ConflictError, Error, ExecutionError, FunctionTimeoutError, InvalidError,
                        NotFoundError, PermissionDeniedError, RemoteError, RequestTooLargeError,
                        ResourceExhaustedError, SandboxTerminatedError, SandboxTimeoutError, TimeoutError,
                        UnavailableError)
from .files import FileIO
from .image import Image
from .network import SandboxConnectCredentials, Tunnel
from .process import ContainerProcess, StreamReader, StreamWriter
from .sandbox import Sandbox

__version__ = "0.1.0"

__all__ = [
    "App", "Client", "ContainerProcess", "FileIO", "Function", "Image", "Sandbox", "SandboxConnectCredentials",
    "StreamReader", "StreamWriter", "Tunnel", "exception",
    "AuthError", "ConflictError", "Error", "ExecutionError", "FunctionTimeoutError", "InvalidError",
    "NotFoundError", "PermissionDeniedError", "RemoteError", "RequestTooLargeError", "ResourceExhaustedError",
    "SandboxTerminatedError", "SandboxTimeoutError", "TimeoutError", "UnavailableError",
]
