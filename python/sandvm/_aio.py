"""Blocking calls with an ``.aio`` twin, as in ``await sb.exec.aio(...)``.

The SDK is written blocking (one thread per waiting call is cheap next to a VM);
``f.aio(...)`` runs ``f(...)`` in a worker thread (asyncio.to_thread), so an
event loop is never blocked by a call to sandboxd."""
from __future__ import annotations

import asyncio
import functools
from typing import Any, Callable, Generic, Optional, ParamSpec, TypeVar, overload

P = ParamSpec("P")
R = TypeVar("R")


class Dual(Generic[P, R]):
    """A callable with an awaitable twin, ``.aio``."""

    def __init__(self, fn: Callable[P, R]):
        self._fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._fn(*args, **kwargs)

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(self._fn, *args, **kwargs)


class _DualMethod(Generic[R]):
    def __init__(self, fn: Callable[..., R], cls_bound: bool):
        self._fn = fn
        self._cls_bound = cls_bound
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    @overload
    def __get__(self, obj: None, objtype: type) -> "Dual[..., R]": ...

    @overload
    def __get__(self, obj: object, objtype: Optional[type] = None) -> "Dual[..., R]": ...

    def __get__(self, obj: Any, objtype: Optional[type] = None) -> "Dual[..., R]":
        owner = objtype if self._cls_bound else obj
        if owner is None:
            return Dual(self._fn)
        return Dual(functools.partial(self._fn, owner))


def method(fn: Callable[..., R]) -> _DualMethod[R]:
    """Decorates a method: obj.f(...) blocks, await obj.f.aio(...) does not."""
    return _DualMethod(fn, cls_bound=False)


def classmethod_(fn: Callable[..., R]) -> _DualMethod[R]:
    """Decorates a class method the same way: Cls.f(...) and await Cls.f.aio(...)."""
    return _DualMethod(fn, cls_bound=True)
