"""Translate domain errors into gRPC statuses, once, for every servicer method.

Use ``@translate_errors`` on each servicer method (unary or async-generator). A ``VoxlineError``
becomes its mapped status code with its message; anything else becomes INTERNAL with a short
message (the stack trace goes to the log, never to the client).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from voxline.common.decode_guard import let_client_finish
from voxline.common.errors import VoxlineError

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code for a domain error (INTERNAL for anything unexpected)."""
    if isinstance(exc, VoxlineError):
        return grpc.StatusCode[exc.code_name]
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.INTERNAL


#: Longest error text a client receives (the whole text goes to the log). Far longer texts once
#: broke the status trailer itself, and the client saw only "Stream removed".
MAX_DETAILS_CHARS = 1000


def _message(exc: BaseException) -> str:
    if isinstance(exc, VoxlineError):
        text = str(exc)
        if len(text) > MAX_DETAILS_CHARS:
            text = f"{text[:MAX_DETAILS_CHARS]}… (cut; the server log has the rest)"
        return text
    return f"internal error ({type(exc).__name__}); see the server log"


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    code = status_for(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.error("unexpected error", exc_info=exc, extra={"method": method})
    else:
        log.info("request failed", extra={"method": method, "code": code.name, "reason": str(exc)})
    await context.abort(code, _message(exc))


def translate_errors(method: F) -> F:
    """Decorator mapping exceptions raised by a servicer method to gRPC status codes."""
    name = method.__qualname__
    if inspect.isasyncgenfunction(method):
        @functools.wraps(method)
        async def gen_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext
                              ) -> AsyncIterator[Any]:
            try:
                async for item in method(self, request, context):
                    yield item
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                if hasattr(request, "__aiter__"):  # a request stream the client may still write to
                    await let_client_finish(request)
                await _abort(context, exc, name)

        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            if hasattr(request, "__aiter__"):
                await let_client_finish(request)
            await _abort(context, exc, name)

    return wrapper  # type: ignore[return-value]
