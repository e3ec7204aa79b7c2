"""Bytes that are not the method's protobuf get INVALID_ARGUMENT, not UNKNOWN.

grpc decodes a request with the handler's ``request_deserializer`` before any servicer code runs;
when that raises, grpc answers UNKNOWN with the parser's exception text. This interceptor swaps in
a deserializer that returns a marker instead of raising, and a behaviour that answers the marker
with INVALID_ARGUMENT naming the expected message type. In a request stream a bad message ends
the stream there (as a half-close would) and the call ends with INVALID_ARGUMENT once the servicer
has finished with what came before it. Every method of every service gets it, health and reflection included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger(__name__)


class _Undecodable:
    """Stands for a request message that could not be parsed."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


def _message_name(method: str) -> str:
    return method.rsplit("/", 1)[-1] or "request"


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:  # DecodeError, or a message type's own parse failure
            return _Undecodable(len(raw))

    return decode


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Answers undecodable request bytes with INVALID_ARGUMENT."""

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method: str = handler_call_details.method
        message = (f"the request is not a valid message for {_message_name(method)}: "
                   "send the protobuf the method's .proto declares")

        async def refuse(bad: _Undecodable, context: grpc.aio.ServicerContext) -> None:
            log.info("undecodable request", extra={"method": method, "bytes": bad.size})
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

        async def checked(requests: AsyncIterator[Any], bad: list[_Undecodable]
                          ) -> AsyncIterator[Any]:
            # A bad message ends the request stream, as a half-close would; the call's status is
            # set once the servicer has finished (it may read its requests in a task of its own,
            # where an abort would end only that task and leave the call hanging).
            async for request in requests:
                if isinstance(request, _Undecodable):
                    bad.append(request)
                    # before the servicer answers the end of its input (it may abort at once)
                    await let_client_finish(requests)
                    return
                yield request

        decode = _safe(handler.request_deserializer)
        serialize = handler.response_serializer
        if handler.request_streaming and handler.response_streaming:
            inner_ss = handler.stream_stream

            async def stream_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
                                    ) -> AsyncIterator[Any]:
                bad: list[_Undecodable] = []
                try:
                    async for reply in _as_stream(inner_ss(checked(requests, bad), context)):
                        yield reply
                except grpc.aio.AbortError:
                    await let_client_finish(requests)
                    raise
                if bad:
                    await refuse(bad[0], context)

            return grpc.stream_stream_rpc_method_handler(stream_stream, decode, serialize)
        if handler.request_streaming:
            inner_su = handler.stream_unary

            async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
                                   ) -> Any:
                bad: list[_Undecodable] = []
                try:
                    reply = await inner_su(checked(requests, bad), context)
                except grpc.aio.AbortError:
                    await let_client_finish(requests)
                    raise
                if bad:
                    await refuse(bad[0], context)
                return reply

            return grpc.stream_unary_rpc_method_handler(stream_unary, decode, serialize)
        if handler.response_streaming:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext
                                   ) -> AsyncIterator[Any]:
                if isinstance(request, _Undecodable):
                    await refuse(request, context)
                async for reply in _as_stream(inner_us(request, context)):
                    yield reply

            return grpc.unary_stream_rpc_method_handler(unary_stream, decode, serialize)
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                await refuse(request, context)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, decode, serialize)


#: How long a refused request stream may go on being read (and dropped) before its status is sent.
_FINISH_S = 0.5
_FINISH_MESSAGES = 4096


async def let_client_finish(requests: AsyncIterator[Any]) -> None:
    """Read and drop what the client is still sending (bounded), before the error status goes
    out: a status that reaches a client in the middle of a write shows there, in gRPC's Python
    client, as INTERNAL "Internal error from Core" instead of the status that was sent."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_FINISH_S):
            count = 0
            async for _ in requests:
                count += 1
                if count >= _FINISH_MESSAGES:
                    break


async def _as_stream(result: Any) -> AsyncIterator[Any]:
    """A streaming behaviour's replies, whether it is an async generator or a coroutine that
    writes with ``context.write`` and returns None."""
    if hasattr(result, "__aiter__"):
        async for reply in result:
            yield reply
    else:
        await result
