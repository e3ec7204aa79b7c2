"""A streaming call's status as the server sent it, kept from a racing write.

grpc.aio reports INTERNAL "Internal error from Core" when a write loses the race with the server
ending the call (grpc/grpc#36066): the server's status arrives, then the failed write overwrites
it. A caller that reads that as a dead peer retries forever (the orchestrator's Listen replay) or
shows the user a wrong reason (``voxline talk``). ``ServerStatus`` catches the status the moment
it arrives (a done callback) and hands it back instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

import grpc

#: What grpc.aio reports in place of the server's status when a write lost the race.
LOST_STATUS = (grpc.StatusCode.INTERNAL, "Internal error from Core")
_T = TypeVar("_T")


def settled(coroutine: Coroutine[Any, Any, _T]) -> _T | None:
    """The result of a coroutine that finishes without suspending (a finished call's status
    getters do), else None: a done callback cannot await."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return cast(_T, stop.value)
    coroutine.close()
    return None


def is_lost(error: grpc.aio.AioRpcError) -> bool:
    """True when ``error`` is gRPC's stand-in for a status a racing write overwrote."""
    return (error.code(), error.details()) == LOST_STATUS


class ServerStatus:
    """The status the server ended ``call`` with, once it has (see the module)."""

    def __init__(self, call: Any) -> None:
        self.error: grpc.aio.AioRpcError | None = None
        self._arrived = asyncio.Event()
        call.add_done_callback(self._on_done)

    def _on_done(self, call: Any) -> None:
        code, details = settled(call.code()), settled(call.details())
        if self.error is not None or code is None or (code, details) == LOST_STATUS:
            return
        self.error = grpc.aio.AioRpcError(
            code, settled(call.initial_metadata()) or grpc.aio.Metadata(),
            settled(call.trailing_metadata()) or grpc.aio.Metadata(), details,
            settled(call.debug_error_string()))
        self._arrived.set()

    async def error_for(self, failure: grpc.aio.AioRpcError | None, *, wait_s: float,
                        call: Any = None) -> grpc.aio.AioRpcError:
        """The error to raise for a write or read that failed with ``failure``: itself unless gRPC
        lost the server's status, else the server's own, waiting up to ``wait_s`` for it. With
        ``failure`` None (the call had already ended), the status ``call`` ended with."""
        if failure is not None and not is_lost(failure):
            return failure
        try:
            async with asyncio.timeout(wait_s):
                await self._arrived.wait()
        except TimeoutError:
            if failure is not None or call is None:
                assert failure is not None, "error_for(None) needs the call"
                return failure  # a genuine internal error: nothing better will come
            return grpc.aio.AioRpcError(await call.code(), await call.initial_metadata(),
                                        await call.trailing_metadata(), await call.details())
        assert self.error is not None
        return self.error
