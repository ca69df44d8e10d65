"""The exceptions of the sandvm SDK.

Every error sandboxd answers is raised as one of these, chosen by its HTTP
status (docs/api.md, "Errors"); each carries the daemon's message, the status
(``status``) and, for a validation error, the field it names (``field``).
"""
from __future__ import annotations

import builtins
from typing import Optional


class Error(Exception):
    """The base of every sandvm error."""

    def __init__(self, message: str = "", *, status: Optional[int] = None, field: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


class AuthError(Error):
    """The API key is missing or wrong (401), or none could be found."""


class NotFoundError(Error):
    """No such sandbox, process, image, token, route or guest file (404)."""


class InvalidError(Error):
    """A bad argument: refused by the SDK before anything is sent, or by sandboxd (400)."""


class PermissionDeniedError(Error):
    """Refused (403): an image path outside the worker's image folders, a guest file
    the agent may not touch, or a wrong encryption key for a snapshot image."""


class ConflictError(Error):
    """The request conflicts with the sandbox's state (409): a name already used in
    the app, a sandbox that is not running, output already being read."""


class SandboxTerminatedError(ConflictError):
    """The sandbox has finished (terminated, timed out, failed) and cannot do this."""


class ResourceExhaustedError(Error):
    """A limit of the worker was reached (429): sandboxes, memory, tokens."""


class RequestTooLargeError(Error):
    """A body or a guest file over sandboxd's limits (413)."""


class UnavailableError(Error):
    """sandboxd cannot do it now (503, 502): the image is not built, the sandbox failed
    to start, no ingress listener, the VMM cannot be reached. Also raised when the
    daemon cannot be reached at all."""


class TimeoutError(Error, builtins.TimeoutError):
    """Something did not finish in time (408, 504, or a wait of the SDK)."""


class SandboxTimeoutError(TimeoutError):
    """The sandbox reached its timeout or idle timeout."""


class FunctionTimeoutError(TimeoutError):
    """A restricted function ran past its timeout."""


class ExecutionError(Error):
    """A process could not run, or the sandbox went away under it."""


class RemoteError(Error):
    """An exception raised by a restricted function inside its sandbox.

    The local exception is of a class named after the remote one (``type_name``)
    that derives from this class and, when the name is one of Python's built-in
    exceptions, from that built-in too: ``except ZeroDivisionError`` catches a
    remote ZeroDivisionError. ``remote_traceback`` is the traceback text the
    sandbox sent (untrusted: show it, never evaluate it)."""

    def __init__(self, message: str = "", *, type_name: str = "RemoteError", remote_traceback: str = ""):
        super().__init__(message)
        self.type_name = type_name
        self.remote_traceback = remote_traceback


__all__ = [
    "Error", "AuthError", "NotFoundError", "InvalidError", "PermissionDeniedError", "ConflictError",
    "SandboxTerminatedError", "ResourceExhaustedError", "RequestTooLargeError", "UnavailableError",
    "TimeoutError", "SandboxTimeoutError", "FunctionTimeoutError", "ExecutionError", "RemoteError",
]
