"""Stage replicas: addresses, round_robin balancing, and one retry on UNAVAILABLE before any output.

Real gRPC servers on 127.0.0.1 (the shared fakes, or a servicer written here when a failure must
come in the middle of a stream) behind the orchestrator's own ``GrpcStages``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from voxline.common.config import ConfigError, ServerConfig
from voxline.common.server import RunningServer, ServiceSpec, start_server
from voxline.orchestrator.balancing import channel_target, check_stage_address
from voxline.orchestrator.config import OrchestratorConfig
from voxline.orchestrator.domain import ChatMessage, GenerateOptions, InputFormat, LlmSummary, StageError
from voxline.orchestrator.grpc_stages import GrpcStages
from voxline.testing.fake_servers import FakeLlm, FakeServer, FakeStt, FakeTts, silence_pcm
from voxline.v1 import audio_pb2, llm_pb2, tts_pb2

PCM = InputFormat("PCM_S16LE", 16000, 1)
UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, "replica going away")


# --- addresses ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "target"), [
    ("127.0.0.1:50051", "127.0.0.1:50051"),
    ("stt.local:50051", "stt.local:50051"),
    ("dns:///voxline-stt:50051", "dns:///voxline-stt:50051"),
    ("127.0.0.1:5001, 127.0.0.1:5002", "ipv4:127.0.0.1:5001,127.0.0.1:5002"),
    ("localhost:5001,10.0.0.7:5002", "ipv4:127.0.0.1:5001,10.0.0.7:5002"),
    ("[::1]:5001,[::1]:5002", "ipv6:[::1]:5001,[::1]:5002"),
    ("ipv4:10.0.0.1:1,10.0.0.2:1", "ipv4:10.0.0.1:1,10.0.0.2:1"),
])
def test_stage_addresses_become_grpc_targets(address: str, target: str) -> None:
    assert channel_target(check_stage_address("--stt", address)) == target


@pytest.mark.parametrize(("address", "message"), [
    ("127.0.0.1", "must be host:port"),
    ("dns:///voxline-stt", "must be host:port"),
    ("127.0.0.1:5001,127.0.0.1:x", "must be host:port"),
    ("stt-a:5001,stt-b:5001", "use dns:///name:port"),
    ("127.0.0.1:5001,[::1]:5002", "all IPv4 or all IPv6"),
])
def test_unusable_stage_addresses_are_refused(address: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_stage_address("--stt", address)


# --- helpers ------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def replicas(*fakes: FakeServer) -> AsyncIterator[list[FakeServer]]:
    for fake in fakes:
        await fake.start()
    try:
        yield list(fakes)
    finally:
        for fake in fakes:
            await fake.stop()


@contextlib.asynccontextmanager
async def stages(**addresses: str) -> AsyncIterator[GrpcStages]:
    clients = GrpcStages(OrchestratorConfig(**addresses))
    try:
        yield clients
    finally:
        await clients.close()


def joined(fakes: list[FakeServer]) -> str:
    return ",".join(f.address for f in fakes)


async def until_all_reached(fakes: list[FakeServer], call: Callable[[], Awaitable[object]]) -> None:
    """Call until every replica has answered once: the channel is then connected to all of them
    (round_robin starts with the first replica that connects)."""
    for _ in range(200):
        if all(f.log.calls for f in fakes):
            break
        await call()
    assert all(f.log.calls for f in fakes)
    for fake in fakes:
        fake.log.calls = 0


@contextlib.asynccontextmanager
async def custom_server(name: str, handlers: dict[str, grpc.RpcMethodHandler]
                        ) -> AsyncIterator[RunningServer]:
    """A stage whose methods are written by the test (failures in the middle of a stream)."""
    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(name, handlers)])

    async def warm_up() -> None:
        return None

    running = await start_server(ServiceSpec(name="test-stage", grpc_services=[name], register=register,
                                             warm_up=warm_up), ServerConfig())
    await running.warm_up()
    try:
        yield running
    finally:
        await running.stop(0)


# --- balancing ----------------------------------------------------------------------------------

async def test_calls_spread_evenly_over_the_replicas() -> None:
    async with replicas(FakeStt(), FakeStt()) as fakes, stages(stt_address=joined(fakes)) as clients:
        audio = silence_pcm(0.1)
        await until_all_reached(fakes, lambda: clients.transcribe(audio, PCM, "en"))
        for _ in range(100):
            result = await clients.transcribe(audio, PCM, "en")
            assert result.text == "What time is it?"
        shares = [f.log.calls for f in fakes]
    assert sum(shares) == 100
    assert all(37.5 <= share <= 62.5 for share in shares), shares  # 50 each, within ±25 %


async def test_concurrent_sentences_spread_over_three_tts_replicas() -> None:
    async with replicas(FakeTts(), FakeTts(), FakeTts()) as fakes, \
            stages(tts_address=joined(fakes)) as clients:
        async def speak(i: int) -> int:
            out = 0
            async with contextlib.aclosing(clients.synthesize(f"Sentence {i}.", "", 16000)) as audio:
                async for item in audio:
                    out += len(item) if isinstance(item, bytes) else 0
            return out

        await until_all_reached(fakes, lambda: speak(0))
        sizes = await asyncio.gather(*(speak(i) for i in range(99)))
        shares = [f.log.calls for f in fakes]
    assert all(sizes)
    assert all(24.75 <= share <= 41.25 for share in shares), shares  # 33 each, within ±25 %


# --- retry before any output --------------------------------------------------------------------

async def test_stt_unavailable_on_one_replica_is_retried_on_the_other() -> None:
    going, staying = FakeStt(), FakeStt()
    async with replicas(going, staying) as fakes, stages(stt_address=joined(fakes)) as clients:
        await until_all_reached(fakes, lambda: clients.transcribe(silence_pcm(0.1), PCM, "en"))
        going.fail = UNAVAILABLE
        results = [await clients.transcribe(silence_pcm(0.1), PCM, "en") for _ in range(10)]
    assert all(r.text == "What time is it?" for r in results)
    assert going.log.calls >= 3  # it was picked, failed, and each of those calls was retried
    assert staying.log.calls == 10  # every utterance transcribed there, once


async def test_a_retry_happens_once() -> None:
    a, b = FakeStt(), FakeStt()
    async with replicas(a, b) as fakes, stages(stt_address=joined(fakes)) as clients:
        a.fail = b.fail = UNAVAILABLE
        with pytest.raises(StageError) as err:
            await clients.transcribe(silence_pcm(0.1), PCM, "en")
    assert err.value.code_name == "UNAVAILABLE"
    assert a.log.calls + b.log.calls == 2


async def test_other_failures_are_not_retried() -> None:
    a, b = FakeStt(), FakeStt()
    async with replicas(a, b) as fakes, stages(stt_address=joined(fakes)) as clients:
        a.fail = b.fail = (grpc.StatusCode.INVALID_ARGUMENT, "bad audio")
        with pytest.raises(StageError) as err:
            await clients.transcribe(silence_pcm(0.1), PCM, "en")
    assert err.value.code_name == "INVALID_ARGUMENT"
    assert a.log.calls + b.log.calls == 1


async def test_a_replica_not_serving_gets_no_calls() -> None:
    """Client-side health checking: a replica still loading, or draining before it stops, is
    skipped by round_robin."""
    draining, serving = FakeStt(), FakeStt()
    async with replicas(draining, serving) as fakes, stages(stt_address=joined(fakes)) as clients:
        await until_all_reached(fakes, lambda: clients.transcribe(silence_pcm(0.1), PCM, "en"))
        assert draining._running is not None
        await draining._running.set_serving(False)
        for _ in range(200):  # bounded: until the channel has seen the health change
            before = draining.log.calls
            await clients.transcribe(silence_pcm(0.1), PCM, "en")
            if draining.log.calls == before:
                break
        draining.log.calls = serving.log.calls = 0
        for _ in range(20):
            await clients.transcribe(silence_pcm(0.1), PCM, "en")
        assert (draining.log.calls, serving.log.calls) == (0, 20)
        await draining._running.set_serving(True)
        for _ in range(200):  # back in the rotation once SERVING again
            await clients.transcribe(silence_pcm(0.1), PCM, "en")
            if draining.log.calls:
                break
        assert draining.log.calls > 0


async def test_a_replica_that_is_gone_leaves_the_rotation() -> None:
    a, b = FakeStt(), FakeStt()
    async with replicas(a, b) as fakes, stages(stt_address=joined(fakes)) as clients:
        await until_all_reached(fakes, lambda: clients.transcribe(silence_pcm(0.1), PCM, "en"))
        await a.stop()
        results = [await clients.transcribe(silence_pcm(0.1), PCM, "en") for _ in range(10)]
    assert [r.text for r in results] == ["What time is it?"] * 10
    assert b.log.calls == 10


async def test_llm_unavailable_before_the_first_token_is_retried() -> None:
    going, staying = FakeLlm(), FakeLlm()
    async with replicas(going, staying) as fakes, stages(llm_address=joined(fakes)) as clients:
        await until_all_reached(fakes, lambda: _reply(clients))
        going.fail = UNAVAILABLE
        for _ in range(4):
            items = [item async for item in clients.generate([ChatMessage("user", "hi")], GenerateOptions())]
            text = "".join(i for i in items if isinstance(i, str))
            assert text == "Hello there. How can I help?"
            assert isinstance(items[-1], LlmSummary)
    assert going.log.calls >= 1 and staying.log.calls == 4


async def _reply(clients: GrpcStages) -> list[str | LlmSummary]:
    return [item async for item in clients.generate([ChatMessage("user", "hi")], GenerateOptions())]


def _aborting_stream(before: Callable[[], list[object]], code: grpc.StatusCode
                     ) -> Callable[[object, grpc.aio.ServicerContext], AsyncIterator[object]]:
    async def handler(request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
        for reply in before():
            yield reply
        await context.abort(code, "replica died mid-stream")
    return handler


async def test_a_half_streamed_llm_reply_is_not_retried() -> None:
    calls = {"n": 0}

    def half_reply() -> list[object]:
        calls["n"] += 1
        return [llm_pb2.GenerateResponse(text_delta="Hello th")]

    handler = grpc.unary_stream_rpc_method_handler(
        _aborting_stream(half_reply, grpc.StatusCode.UNAVAILABLE),
        request_deserializer=llm_pb2.GenerateRequest.FromString,
        response_serializer=llm_pb2.GenerateResponse.SerializeToString)
    async with custom_server("voxline.v1.LanguageModel", {"Generate": handler}) as a, \
            custom_server("voxline.v1.LanguageModel", {"Generate": handler}) as b, \
            stages(llm_address=f"127.0.0.1:{a.port},127.0.0.1:{b.port}") as clients:
        received: list[object] = []
        with pytest.raises(StageError) as err:
            async for item in clients.generate([ChatMessage("user", "hi")], GenerateOptions()):
                received.append(item)
    assert err.value.code_name == "UNAVAILABLE"
    assert received == ["Hello th"]  # what was streamed stays streamed once
    assert calls["n"] == 1


async def test_tts_retries_a_sentence_only_before_its_first_audio() -> None:
    calls = {"format_only": 0, "half": 0}
    fmt = tts_pb2.SynthesizeResponse(format=audio_pb2.AudioFormat(
        encoding=audio_pb2.PCM_S16LE, sample_rate_hz=16000, channels=1))

    def format_only() -> list[object]:
        calls["format_only"] += 1
        return [fmt]

    def half() -> list[object]:
        calls["half"] += 1
        return [fmt, tts_pb2.SynthesizeResponse(audio=tts_pb2.AudioChunk(data=b"\x01\x00" * 80))]

    def handler(before: Callable[[], list[object]]) -> grpc.RpcMethodHandler:
        return grpc.unary_stream_rpc_method_handler(
            _aborting_stream(before, grpc.StatusCode.UNAVAILABLE),
            request_deserializer=tts_pb2.SynthesizeRequest.FromString,
            response_serializer=tts_pb2.SynthesizeResponse.SerializeToString)

    healthy = FakeTts()
    async with replicas(healthy):
        # died after the format, before audio: retried on the healthy replica, format said once
        async def voices(request: object, context: grpc.aio.ServicerContext) -> tts_pb2.ListVoicesResponse:
            return tts_pb2.ListVoicesResponse(voices=[tts_pb2.Voice(name="bad")])

        list_voices = grpc.unary_unary_rpc_method_handler(
            voices, request_deserializer=tts_pb2.ListVoicesRequest.FromString,
            response_serializer=tts_pb2.ListVoicesResponse.SerializeToString)
        async with custom_server("voxline.v1.TextToSpeech", {"Synthesize": handler(format_only),
                                                             "ListVoices": list_voices}) as bad:
            async with stages(tts_address=f"127.0.0.1:{bad.port},{healthy.address}") as clients:
                answered: set[str] = set()
                for _ in range(200):  # until both replicas are connected (both answered)
                    answered.add((await clients.list_voices())[0])
                    if len(answered) == 2:
                        break
                assert answered == {"bad", "fake:en"}
                for _ in range(4):
                    items = [i async for i in clients.synthesize("Hello there.", "", 16000)]
                    assert sum(1 for i in items if not isinstance(i, bytes)) == 1
                    assert sum(len(i) for i in items if isinstance(i, bytes)) > 0
        assert calls["format_only"] >= 1 and healthy.log.calls == 4
        # died after some audio: never retried (the user would hear the start twice)
        async with custom_server("voxline.v1.TextToSpeech", {"Synthesize": handler(half)}) as bad:
            async with stages(tts_address=f"127.0.0.1:{bad.port}") as clients:
                with pytest.raises(StageError) as err:
                    _ = [i async for i in clients.synthesize("Hello there.", "", 16000)]
        assert err.value.code_name == "UNAVAILABLE" and calls["half"] == 1
