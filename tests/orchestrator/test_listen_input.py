"""The Listen input log (``voxline.orchestrator.listen_input``): what a server-VAD session holds for
STT is bounded in bytes, whatever the chunk size, and given back when the session ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from voxline.common.errors import LimitExceeded
from voxline.orchestrator.config import OrchestratorConfig
from voxline.orchestrator.domain import InputFormat, ReplyStartedSignal, StageError
from voxline.orchestrator.events import (
    AudioRequest,
    ConfigRequest,
    InterimTranscriptEvent,
    MetricsEvent,
    Request,
    SessionSettings,
)
from voxline.orchestrator.listen_input import ENTRY_OVERHEAD, Close, InputLog
from voxline.orchestrator.session import ConverseSession
from voxline.testing.fake_servers import silence_pcm, tone_pcm
from voxline.testing.stage_fakes import InMemoryStages

BPS_48K_8CH = 48_000 * 8 * 2
CHUNK_48K_8CH = BPS_48K_8CH // 50  # 20 ms


async def _drain(log: InputLog, into: list[object]) -> None:
    async for entry in log.read():
        into.append(entry.item)


async def test_idle_audio_is_not_held_beyond_a_few_seconds_however_long_it_goes_on() -> None:
    log = InputLog(BPS_48K_8CH, 16 * 1024 * 1024, stall_s=5)
    read: list[object] = []
    reader = asyncio.ensure_future(_drain(log, read))
    for _ in range(50 * 60):  # a minute of 48 kHz x 8 channel audio with no speech in it
        await log.put_audio(bytes(CHUNK_48K_8CH), 0.0)
        await asyncio.sleep(0)  # the stream takes each chunk as it comes
    assert len(read) == 3000  # all of it went to STT...
    assert log.held_bytes <= 5.2 * BPS_48K_8CH  # ...and only its last ~5 s are kept
    reader.cancel()


async def test_a_turn_over_the_limit_is_resource_exhausted_and_small_chunks_count_their_cost() -> None:
    log = InputLog(32_000, 64 * 1024, stall_s=5)
    log.new_turn(0.0)  # STT heard speech: the turn's audio is kept for a replay
    reader = asyncio.ensure_future(_drain(log, []))
    with pytest.raises(LimitExceeded, match="bytes of audio"):
        for _ in range(10_000):  # 2-byte chunks: 20 KB of audio, but each chunk costs its entry
            await log.put_audio(b"\x00\x00", 0.0)
            await asyncio.sleep(0)
    assert log.held_bytes <= 64 * 1024
    reader.cancel()


async def test_a_boundary_forgets_the_turn_and_release_gives_everything_back() -> None:
    log = InputLog(32_000, 16 * 1024 * 1024, stall_s=5)
    log.new_turn(0.0)
    read: list[object] = []
    reader = asyncio.ensure_future(_drain(log, read))
    for _ in range(100):
        await log.put_audio(bytes(640), 0.0)
    await asyncio.sleep(0)
    held = log.held_bytes
    assert held >= 100 * 640
    log.boundary()  # the reply became audible: no replay before it
    await log.put_audio(bytes(640), 0.0)
    for _ in range(3):
        await asyncio.sleep(0)
    assert isinstance(read[100], ReplyStartedSignal) and log.held_bytes < 2 * (640 + ENTRY_OVERHEAD)
    log.release()
    assert log.held_bytes == 0
    reader.cancel()


async def test_a_full_backlog_wakes_with_the_readers_error_or_the_stall_limit() -> None:
    log = InputLog(32_000, 16 * 1024 * 1024, stall_s=30)
    while True:  # nobody reads: fill the backlog (15 s of audio)
        put = asyncio.ensure_future(log.put_audio(bytes(32_000), 0.0))
        await asyncio.sleep(0)
        if not put.done():
            break
    log.stop(StageError("stt", "UNAVAILABLE", "the speech recogniser went away"))
    with pytest.raises(StageError, match="went away"):
        await put
    stalled = InputLog(32_000, 16 * 1024 * 1024, stall_s=0.01)
    with pytest.raises(StageError, match="took none of the audio"):
        for _ in range(100):
            await stalled.put_audio(bytes(32_000), 0.0)
    with pytest.raises(StageError):
        await log.put(Close())


async def test_a_session_gives_its_audio_back_when_it_ends() -> None:
    stages = InMemoryStages()
    stages.deltas = ["It is sunny."]
    session = ConverseSession(stages, OrchestratorConfig())
    requests: asyncio.Queue[Request | None] = asyncio.Queue()

    async def feed() -> AsyncIterator[Request]:
        while (request := await requests.get()) is not None:
            yield request

    requests.put_nowait(ConfigRequest(SessionSettings(input_format=InputFormat("PCM_S16LE", 48_000, 8),
                                                      server_vad=True)))
    # speech, then a pause too short to end the turn: its interim transcript comes, the turn is open
    pcm = silence_pcm(0.3, 48_000 * 8) + tone_pcm(0.5, 48_000 * 8) + silence_pcm(0.14, 48_000 * 8)
    for i in range(0, len(pcm), CHUNK_48K_8CH):
        requests.put_nowait(AudioRequest(pcm[i:i + CHUNK_48K_8CH]))
    events = session.events(feed())
    async with asyncio.timeout(10):
        while not isinstance(await anext(events), InterimTranscriptEvent):
            pass
    taker = session._taker  # the session's turn-taker: what it holds for STT
    assert taker is not None and taker.held_bytes >= len(pcm) // 2
    requests.put_nowait(None)  # the half-close ends the turn, then the stream
    async with asyncio.timeout(10):
        assert any(isinstance(e, MetricsEvent) for e in await _all(events))
    assert taker.held_bytes == 0


async def _all(events: AsyncIterator[object]) -> list[object]:
    return [e async for e in events]
