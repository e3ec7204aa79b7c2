"""Issue 10 regressions in the shared bootstrap: undecodable request bytes are INVALID_ARGUMENT
(never UNKNOWN), the bearer scheme is case-insensitive, and no error text a client gets is longer
than the cap however large the input it quotes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from voxline.common.config import ServerConfig
from voxline.common.errors import InvalidInput
from voxline.common.grpc_errors import MAX_DETAILS_CHARS, translate_errors
from voxline.common.server import RunningServer, ServiceSpec, start_server
from voxline.llm.config import LlmConfig
from voxline.llm.engine import LanguageModelEngine, build_providers
from voxline.llm.servicer import SERVICE_NAME, LanguageModelServicer
from voxline.v1 import llm_pb2, llm_pb2_grpc

TOKEN = "t0k3n-for-the-guards"
GARBAGE = [b"\xff\xff\xff", b"\x0a\x05ab", b"not a protobuf \x80\x81", b"\x08" + b"\xff" * 12]


class _Talker:
    """Raises a domain error quoting its whole (huge) input, through ``translate_errors``."""

    @translate_errors
    async def Say(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise InvalidInput(f"cannot say {request.decode()!r}")


async def _start(tmp_path: Path, token: bool = False) -> RunningServer:
    config = LlmConfig(providers=("groq",), local_model="none")
    servicer = LanguageModelServicer(LanguageModelEngine(build_providers(config), config))
    talker = _Talker()

    def register(server: grpc.aio.Server) -> None:
        llm_pb2_grpc.add_LanguageModelServicer_to_server(servicer, server)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "voxline.test.Talker", {"Say": grpc.unary_unary_rpc_method_handler(
                lambda r, c: talker.Say(r, c))})])

    async def warm_up() -> None:
        return None

    token_file = ""
    if token:
        (tmp_path / "token").write_text(TOKEN)
        token_file = str(tmp_path / "token")
    spec = ServiceSpec(name="voxline-guards", grpc_services=[SERVICE_NAME], register=register,
                       warm_up=warm_up)
    running = await start_server(spec, ServerConfig(port=0, auth_token_file=token_file))
    await running.warm_up()
    return running


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    running = await _start(tmp_path)
    yield running
    await running.stop(0)


async def test_bytes_that_are_not_a_protobuf_are_invalid_argument(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        for payload in GARBAGE:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary("/voxline.v1.LanguageModel/ListProviders")(payload)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
            assert "not a valid message for ListProviders" in (caught.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in channel.unary_stream("/voxline.v1.LanguageModel/Generate")(payload):
                    pass
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # a bidirectional stream (reflection): the bad message is refused when it is read
            call = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")(
                iter([payload]))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in call:
                    pass
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # the server still serves a good request
        stub = llm_pb2_grpc.LanguageModelStub(channel)
        reply = await stub.ListProviders(llm_pb2.ListProvidersRequest())
        assert next(p.name for p in reply.providers) == "groq"


async def test_error_texts_are_capped(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/voxline.test.Talker/Say")(b"x" * 20_000)
    details = caught.value.details() or ""
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("cannot say 'xxx") and len(details) <= MAX_DETAILS_CHARS + 60


@pytest.mark.parametrize("header, allowed", [
    (f"Bearer {TOKEN}", True), (f"bearer {TOKEN}", True), (f"BEARER {TOKEN}", True),
    (f"BeArEr  {TOKEN}", True), (f"Bearer {TOKEN}x", False), (f"Basic {TOKEN}", False),
    (TOKEN, False), ("bearer", False),
])
async def test_bearer_scheme_is_case_insensitive(tmp_path: Path, header: str, allowed: bool) -> None:
    running = await _start(tmp_path, token=True)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = llm_pb2_grpc.LanguageModelStub(channel)
            try:
                await stub.ListProviders(llm_pb2.ListProvidersRequest(),
                                         metadata=(("authorization", header),))
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
    finally:
        await running.stop(0)
    assert code == (grpc.StatusCode.OK if allowed else grpc.StatusCode.UNAUTHENTICATED)


async def test_a_bad_message_inside_a_request_stream_ends_the_call_promptly() -> None:
    """The servicer reads its requests in a task of its own (as a session does): the call must
    still end, with INVALID_ARGUMENT, right after the good messages are handled."""
    from google.protobuf import empty_pb2

    async def chat(requests: AsyncIterator[empty_pb2.Empty], context: grpc.aio.ServicerContext
                   ) -> AsyncIterator[empty_pb2.Empty]:
        queue: asyncio.Queue[empty_pb2.Empty | None] = asyncio.Queue()

        async def reader() -> None:
            try:
                async for request in requests:
                    await queue.put(request)
            finally:
                await queue.put(None)

        task = asyncio.create_task(reader())
        try:
            while (item := await queue.get()) is not None:
                yield item
        finally:
            task.cancel()

    async def warm_up() -> None:
        return None

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("voxline.test.Chat", {
            "Talk": grpc.stream_stream_rpc_method_handler(
                chat, request_deserializer=empty_pb2.Empty.FromString,
                response_serializer=empty_pb2.Empty.SerializeToString)})])

    running = await start_server(ServiceSpec(name="voxline-chat", grpc_services=[],
                                             register=register, warm_up=warm_up), ServerConfig(port=0))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            replies = 0
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in channel.stream_stream("/voxline.test.Chat/Talk")(
                        iter([b"", b"", b"\x0a\x05ab", b""]), timeout=10):
                    replies += 1
    finally:
        await running.stop(0)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert replies == 2  # the good messages before it were served


class _Strict:
    """A request-streaming method refusing its first message through ``translate_errors``."""

    @translate_errors
    async def Talk(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
                   ) -> AsyncIterator[bytes]:
        async for _ in requests:
            raise InvalidInput("first message must be config")
        yield b""


async def test_an_error_status_reaches_a_client_that_is_still_writing() -> None:
    """A status sent while the client still writes used to reach gRPC's Python client, now and
    then, as INTERNAL "Internal error from Core"; the server now lets the client finish first."""
    strict = _Strict()

    async def warm_up() -> None:
        return None

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("voxline.test.Strict", {
            "Talk": grpc.stream_stream_rpc_method_handler(lambda r, c: strict.Talk(r, c)),
            "Guarded": grpc.stream_stream_rpc_method_handler(
                lambda r, c: strict.Talk(r, c),
                request_deserializer=lambda raw: raw if raw[:1] != b"\xfb" else int("x"))})])

    running = await start_server(ServiceSpec(name="voxline-strict", grpc_services=[],
                                             register=register, warm_up=warm_up), ServerConfig(port=0))
    codes: dict[str, list[grpc.StatusCode]] = {"Talk": [], "Guarded": []}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            for method, first in (("Talk", b"x"), ("Guarded", b"\xfb\x8eR")):
                for _ in range(25):
                    try:
                        async for _ in channel.stream_stream(f"/voxline.test.Strict/{method}")(
                                iter([first, bytes(16000), bytes(16000)]), timeout=10):
                            pass
                    except grpc.aio.AioRpcError as exc:
                        codes[method].append(exc.code())
    finally:
        await running.stop(0)
    assert set(codes["Talk"]) == {grpc.StatusCode.INVALID_ARGUMENT} and len(codes["Talk"]) == 25
    assert set(codes["Guarded"]) == {grpc.StatusCode.INVALID_ARGUMENT} and len(codes["Guarded"]) == 25
