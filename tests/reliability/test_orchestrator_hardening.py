"""Issue 10 regressions in the orchestrator (real server on 127.0.0.1:0, fake stages): codes for
bad formats, sane PCM rates and channels, a long conversation that lives on, bounded output for a
client that never reads, and a clean end of every stream at shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from bench.reliability.converse import COMPLETED, Session, pcm_config
from voxline.common.config import ServerConfig
from voxline.common.server import RunningServer, start_server
from voxline.orchestrator.config import Deadlines, OrchestratorConfig
from voxline.orchestrator.wiring import build_spec
from voxline.testing.fake_servers import FakeStack
from voxline.v1 import audio_pb2, voice_pb2


@dataclasses.dataclass
class Rig:
    fakes: FakeStack
    server: RunningServer

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


async def _rig(**overrides: Any) -> Rig:
    fakes = await FakeStack().start()
    config = OrchestratorConfig(stt_address=fakes.stt.address, llm_address=fakes.llm.address,
                                tts_address=fakes.tts.address, stage_wait_s=0.0,
                                deadlines=Deadlines(stt_s=5, llm_ttft_s=5, llm_total_s=10, tts_s=5,
                                                    control_s=2), **overrides)
    server = await start_server(build_spec(config), ServerConfig(port=0, grace_seconds=10.0))
    await server.warm_up()
    return Rig(fakes, server)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    built = await _rig()
    yield built
    await built.server.stop(0)
    await built.fakes.stop()


async def _config_error(address: str, config: voice_pb2.SessionConfig) -> tuple[grpc.StatusCode, str]:
    """Open a session with ``config`` and send a turn: the status the stream ends with."""
    async with grpc.aio.insecure_channel(address) as channel:
        session = Session(channel, config)
        result = await session.turn(timeout_s=10)
        assert result.status == "LOST", "the session must refuse the config"
        return await session.call.code(), await session.call.details() or ""


@pytest.mark.parametrize("config, fragment", [
    (pcm_config(input_format=audio_pb2.AudioFormat(encoding=99, sample_rate_hz=16000)),
     "input_format.encoding 99 is not an AudioEncoding value"),
    (pcm_config(output_format=audio_pb2.AudioFormat(encoding=77)),
     "output_format.encoding 77 is not an AudioEncoding value"),
    (pcm_config(server_vad=True, input_format=audio_pb2.AudioFormat(
        encoding=audio_pb2.PCM_S16LE, sample_rate_hz=16000, channels=-2)),
     "input_format.channels -2 is outside 0..8"),
    (pcm_config(server_vad=True, input_format=audio_pb2.AudioFormat(
        encoding=audio_pb2.PCM_S16LE, sample_rate_hz=2_000_000_000, channels=8)),
     "sample_rate_hz 2000000000 is outside 8000..48000"),
    (pcm_config(output_format=audio_pb2.AudioFormat(channels=-1)), "output_format.channels"),
])
async def test_bad_formats_are_invalid_argument(rig: Rig, config: voice_pb2.SessionConfig,
                                                fragment: str) -> None:
    code, details = await _config_error(rig.address, config)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert fragment in details
    async with grpc.aio.insecure_channel(rig.address) as channel:
        assert (await Session(channel).turn(timeout_s=10)).status == COMPLETED


async def test_a_long_conversation_keeps_the_newest_history_and_lives_on() -> None:
    rig = await _rig(max_history_chars=600)
    try:
        async with grpc.aio.insecure_channel(rig.address) as channel:
            session = Session(channel)
            for turn in range(8):
                result = await session.turn(f"Question {turn}: " + "blah " * 40, timeout_s=10)
                assert result.status == COMPLETED, result.error
            session.cancel()
        last = rig.fakes.llm.requests[-1]
        history = [m for m in last.messages if m.role != "system"][:-1]
        assert sum(len(m.content) for m in history) <= 600
        assert history and history[-2].content.startswith("Question 6:")  # the newest turns stay
        assert len(rig.fakes.llm.requests[2].messages) > len(last.messages) - 10
    finally:
        await rig.server.stop(0)
        await rig.fakes.stop()


async def test_a_client_that_never_reads_holds_back_tts_then_its_stream_ends() -> None:
    rig = await _rig(max_unread_bytes=64 * 1024, unread_timeout_s=1.0)
    rig.fakes.tts.seconds_per_char = 10.0  # 27 characters of reply: ~8.6 MB of audio in all
    rig.fakes.tts.chunks = 160
    full_reply = 27 * 10 * 16000 * 2
    try:
        async with grpc.aio.insecure_channel(rig.address) as channel:
            session = Session(channel)
            await session.send_turn()
            # The stimulus itself, not synchronisation: a client that reads nothing for 3 s.
            await asyncio.sleep(3.0)
            received, metrics, code, details = 0, None, None, ""
            try:
                async with asyncio.timeout(20):
                    while (message := await session.call.read()) is not grpc.aio.EOF:
                        received += len(message.audio)
                        if message.WhichOneof("event") == "metrics":
                            metrics = message.metrics
            except grpc.aio.AioRpcError as exc:
                code, details = exc.code(), exc.details() or ""
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
        assert "read none of its reply for 1 s" in details
        assert metrics is not None and metrics.status == voice_pb2.FAILED
        assert received < full_reply / 2, received  # TTS was held back, then the turn was cut
    finally:
        await rig.server.stop(0)
        await rig.fakes.stop()


async def test_after_sigterm_a_finished_stream_ends_cleanly_at_once(rig: Rig) -> None:
    async with grpc.aio.insecure_channel(rig.address) as channel:
        session = Session(channel)
        assert (await session.turn(timeout_s=10)).status == COMPLETED
        await session.send_turn()  # a turn in flight when the stop begins
        first = await session.call.read()
        stopping = asyncio.create_task(rig.server.stop())  # grace 10 s
        started = time.monotonic()
        rest = await session.read_turn(timeout_s=10)
        while (await session.call.read()) is not grpc.aio.EOF:
            pass
        code = await session.call.code()
        ended_s = time.monotonic() - started
        await stopping
    assert first is not grpc.aio.EOF and rest.status == COMPLETED
    assert code == grpc.StatusCode.OK and ended_s < 5.0, (code, ended_s)
    await rig.fakes.stop()


async def test_start_up_waits_for_stages_that_start_at_the_same_time() -> None:
    """Stages still loading when the orchestrator starts: it stays NOT_SERVING until they are up,
    and the first turn after that is served (it once failed "failed to connect to all addresses")."""
    import socket

    ports = []
    for _ in range(3):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    fakes = FakeStack()
    config = OrchestratorConfig(stt_address=f"127.0.0.1:{ports[0]}", llm_address=f"127.0.0.1:{ports[1]}",
                                tts_address=f"127.0.0.1:{ports[2]}", stage_wait_s=20.0)
    server = await start_server(build_spec(config), ServerConfig(port=0))
    warm_up = asyncio.create_task(server.warm_up())
    try:
        done, _ = await asyncio.wait({warm_up}, timeout=1.0)
        assert not done, "SERVING while no stage is listening"
        for fake, port in zip((fakes.stt, fakes.llm, fakes.tts), ports, strict=True):
            await fake.start(port)
        await asyncio.wait_for(warm_up, 15)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            first = await Session(channel).turn(audio_s=0.5, timeout_s=10)
        assert first.status == COMPLETED, first.error
    finally:
        warm_up.cancel()
        await server.stop(0)
        await fakes.stop()
