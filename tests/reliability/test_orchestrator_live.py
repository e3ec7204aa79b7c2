"""The live path (server VAD over STT's Listen) under faults and abuse, issue 20: the real orchestrator
on 127.0.0.1:0, fake stages at the network edge (the fake STT's Listen runs STT's own Endpointer over a
tone/silence detector, see voxline.testing.fake_listen).

What a user sees: a conversation mid-speech survives STT going down and coming back on its port; a
turn that failed (or heard nothing) ends that turn and the next words are a new turn; a minute of
continuous speech ends a turn instead of the conversation; a turn over --max-turn-audio-mb ends the
stream with RESOURCE_EXHAUSTED; and every failure reaches a client that is not sending anything,
as a status, long before its own deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest

from voxline.common.call_status import ServerStatus
from voxline.common.config import ServerConfig
from voxline.common.server import RunningServer, start_server
from voxline.orchestrator.config import Deadlines, OrchestratorConfig
from voxline.orchestrator.wiring import build_spec
from voxline.stt.endpoint import Endpointer, EndpointSettings, SpeechStarted, TurnEnded
from voxline.stt.vad import EnergyVad
from voxline.testing.fake_listen import ListenScript
from voxline.testing.fake_servers import FakeLlm, FakeStt, FakeTts, silence_pcm, tone_pcm
from voxline.v1 import audio_pb2, stt_pb2, voice_pb2, voice_pb2_grpc

#: Every read of a test is bounded by this (a hang fails the test instead of stalling the suite).
READ_S = 20.0
#: The client's own deadline on the Converse call: a failure must reach it as a status well before.
CALL_DEADLINE_S = 40.0
CHUNK = 640  # 20 ms at 16 kHz mono


class LiveStt(FakeStt):
    """The fake STT, counting the audio chunks its Listen streams received. With ``stall_after``, a
    Listen stream stops reading after that many chunks (a recogniser that fell behind, or hung);
    once ``give_up`` is set, it ends the stream with RESOURCE_EXHAUSTED, as the real one does when over
    one of its limits."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks = 0
        self.stall_after: int | None = None
        self.give_up = asyncio.Event()
        self._heard = asyncio.Event()

    async def heard(self, chunks: int) -> None:
        """Wait until ``chunks`` audio chunks arrived over all streams."""
        async with asyncio.timeout(READ_S):
            while self.chunks < chunks:
                self._heard.clear()
                await self._heard.wait()

    async def Listen(self, request_iterator: AsyncIterator[stt_pb2.ListenRequest], context: Any
                     ) -> AsyncIterator[stt_pb2.ListenResponse]:
        async def counted() -> AsyncIterator[stt_pb2.ListenRequest]:
            received = 0
            async for request in request_iterator:
                if request.WhichOneof("request") == "audio":
                    self.chunks += 1
                    received += 1
                    self._heard.set()
                    if received == self.stall_after:
                        await self.give_up.wait()
                        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                            "1 transcriptions running and 8 queued")
                yield request

        async for response in super().Listen(counted(), context):
            yield response


@dataclasses.dataclass
class Rig:
    stt: LiveStt
    llm: FakeLlm
    tts: FakeTts
    server: RunningServer

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@contextlib.asynccontextmanager
async def rig(**overrides: Any) -> AsyncIterator[Rig]:
    stt, llm, tts = LiveStt(), FakeLlm(), FakeTts()
    for fake in (stt, llm, tts):
        await fake.start()
    config = OrchestratorConfig(
        stt_address=stt.address, llm_address=llm.address, tts_address=tts.address, stage_wait_s=0.0,
        deadlines=Deadlines(stt_s=5, llm_ttft_s=5, llm_total_s=10, tts_s=5, control_s=2),
        stage_retry_wait_s=overrides.pop("stage_retry_wait_s", 0.0), **overrides)
    server = await start_server(build_spec(config), ServerConfig(port=0))
    await server.warm_up()
    try:
        yield Rig(stt, llm, tts, server)
    finally:
        await server.stop(0)
        for fake in (stt, llm, tts):
            await fake.stop()


@dataclasses.dataclass
class Heard:
    """One turn as the client saw it."""

    number: int
    transcript: str
    status: str
    error: str


class Live:
    """A server-VAD Converse stream: audio in 20 ms chunks (queued at once), events read with a bound."""

    def __init__(self, channel: grpc.aio.Channel, rate: int = 16_000, channels: int = 1) -> None:
        self._requests: asyncio.Queue[voice_pb2.ConverseRequest | None] = asyncio.Queue()
        self._requests.put_nowait(voice_pb2.ConverseRequest(config=voice_pb2.SessionConfig(
            input_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=rate,
                                               channels=channels),
            output_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE), server_vad=True)))
        self.call = voice_pb2_grpc.VoiceAssistantStub(channel).Converse(self._feed(),
                                                                        timeout=CALL_DEADLINE_S)
        # the server's status as it arrives: a write racing the end of the call may replace it
        # with INTERNAL "Internal error from Core" (grpc/grpc#36066)
        self._status = ServerStatus(self.call)

    async def _feed(self) -> AsyncIterator[voice_pb2.ConverseRequest]:
        while (request := await self._requests.get()) is not None:
            yield request

    def speak(self, pcm: bytes, chunk: int = CHUNK) -> None:
        for i in range(0, len(pcm), chunk):
            self._requests.put_nowait(voice_pb2.ConverseRequest(audio=pcm[i:i + chunk]))

    def half_close(self) -> None:
        self._requests.put_nowait(None)

    async def turn(self) -> Heard:
        """The events of the next turn, up to its metrics."""
        transcript = ""
        async with asyncio.timeout(READ_S):
            while True:
                message = await self.call.read()
                assert message is not grpc.aio.EOF, "the stream ended before the turn's metrics"
                if message.HasField("transcript"):
                    transcript = message.transcript.text
                if message.HasField("metrics"):
                    return Heard(message.turn, transcript,
                                 voice_pb2.TurnStatus.Name(message.metrics.status), message.metrics.error)

    async def status(self) -> tuple[grpc.StatusCode, str]:
        """Read to the end of the stream: its status code and details."""
        failure: grpc.aio.AioRpcError | None = None
        try:
            while await self.call.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError as exc:
            failure = exc
        error = await self._status.error_for(failure, wait_s=5.0, call=self.call)
        return error.code(), error.details() or ""


async def test_conversations_mid_speech_survive_stt_going_down_and_back_on_its_port() -> None:
    # Eight conversations are in the middle of a sentence when STT goes away. While it is down
    # (its port refuses the orchestrator's reconnections) the users finish their sentences; STT
    # comes back on the same port, and every conversation gets its whole turn answered.
    async with rig(stage_retry_wait_s=15.0) as r, grpc.aio.insecure_channel(r.address) as channel:
        sessions = [Live(channel) for _ in range(8)]
        for session in sessions:
            session.speak(silence_pcm(0.3) + tone_pcm(0.3))
        await r.stt.heard(8 * 30)  # mid-speech in every stream
        port = r.stt.port
        await r.stt.stop()
        refused = asyncio.Event()
        attempts = 0

        def refuse(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal attempts
            attempts += 1
            if attempts >= 3:
                refused.set()
            writer.close()

        down = await asyncio.start_server(refuse, "127.0.0.1", port)
        for session in sessions:
            session.speak(tone_pcm(0.2) + silence_pcm(0.8))
        with contextlib.suppress(TimeoutError):  # the orchestrator tried to reconnect, and failed
            await asyncio.wait_for(refused.wait(), READ_S)
        down.close()
        await down.wait_closed()
        await r.stt.start(port=port)
        turns = await asyncio.gather(*(s.turn() for s in sessions), return_exceptions=True)
        assert [t if isinstance(t, BaseException) else (t.number, t.transcript, t.status)
                for t in turns] == [(1, "What time is it?", "COMPLETED")] * 8
        for session in sessions:
            session.half_close()
        assert [(await s.status())[0] for s in sessions] == [grpc.StatusCode.OK] * 8


@pytest.mark.parametrize("script, first_fails", [
    (ListenScript(segments=["What time is it?", "Hello?"]), "llm"),
    (ListenScript(segments=["", "Hello?"]), "empty"),
])
async def test_a_failed_or_empty_turn_ends_that_turn_and_the_next_words_are_a_new_turn(
        script: ListenScript, first_fails: str) -> None:
    async with rig() as r, grpc.aio.insecure_channel(r.address) as channel:
        r.stt.listen_script = script
        if first_fails == "llm":
            r.llm.fail = (grpc.StatusCode.UNAVAILABLE, "the provider is down")
        session = Live(channel)
        session.speak(silence_pcm(0.3) + tone_pcm(0.4) + silence_pcm(0.5))
        failed = await session.turn()
        assert failed.status == "FAILED" and failed.number == 1
        r.llm.fail = None
        session.speak(tone_pcm(0.4) + silence_pcm(0.5))  # no reply was heard: STT was told anyway
        after = await session.turn()
        assert (after.number, after.transcript, after.status) == (2, "Hello?", "COMPLETED")
        assert r.stt.replies_started >= 1
        session.half_close()
        assert (await session.status())[0] == grpc.StatusCode.OK


async def test_a_minute_of_continuous_speech_ends_a_turn_not_the_conversation() -> None:
    async with rig() as r, grpc.aio.insecure_channel(r.address) as channel:
        r.stt.listen_script = ListenScript(segments=["(a minute of chatter)", "Hello?"])
        session = Live(channel)
        session.speak(silence_pcm(0.2) + tone_pcm(70.0) + silence_pcm(0.6), chunk=16_000)
        first = await session.turn()  # ended by the turn limit while the speech went on
        assert first.number == 1 and first.transcript == "(a minute of chatter)"
        second = await session.turn()
        assert (second.number, second.transcript, second.status) == (2, "Hello?", "COMPLETED")
        session.half_close()
        assert (await session.status())[0] == grpc.StatusCode.OK


async def test_a_turn_over_the_audio_limit_ends_the_stream_with_resource_exhausted() -> None:
    # 48 kHz x 8 channels is 768 KB a second: with --max-turn-audio-mb 1, a 2 s turn is over it.
    async with rig(max_turn_audio_bytes=1024 * 1024) as r, grpc.aio.insecure_channel(r.address) as ch:
        session = Live(ch, rate=48_000, channels=8)
        session.speak(silence_pcm(0.2, 48_000 * 8) + tone_pcm(0.25, 48_000 * 8), chunk=16 * 960)
        await r.stt.heard(10)
        session.speak(tone_pcm(2.0, 48_000 * 8), chunk=16 * 960)
        code, details = await session.status()
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
        assert "bytes of audio" in details


async def test_silence_at_a_high_rate_is_not_held_against_the_turn_limit() -> None:
    # The same limit, 12 s of silence: only the last seconds are kept, the stream goes on.
    async with rig(max_turn_audio_bytes=4 * 1024 * 1024) as r, grpc.aio.insecure_channel(r.address) as ch:
        session = Live(ch, rate=48_000, channels=8)
        session.speak(silence_pcm(12.0, 48_000 * 8), chunk=16 * 960)
        session.half_close()
        code, details = await session.status()
        assert code == grpc.StatusCode.OK, details


async def test_a_failed_recogniser_reaches_a_client_that_waits_for_its_reply() -> None:
    # The user spoke; the client sends nothing more and waits. STT then ends the Listen stream (over
    # one of its limits): the client gets that status, not its own deadline.
    async with rig() as r, grpc.aio.insecure_channel(r.address) as channel:
        r.stt.stall_after = 21
        session = Live(channel)
        session.speak(silence_pcm(0.2) + tone_pcm(0.4))
        await r.stt.heard(21)
        r.stt.give_up.set()
        code, details = await session.status()
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
        assert "stt stage" in details


async def test_stt_down_for_longer_than_the_retry_wait_ends_a_waiting_client_with_unavailable() -> None:
    async with rig(stage_retry_wait_s=1.0) as r, grpc.aio.insecure_channel(r.address) as channel:
        session = Live(channel)
        session.speak(silence_pcm(0.2) + tone_pcm(0.4))
        await r.stt.heard(30)
        await r.stt.stop()  # and it does not come back; the client sends nothing more
        code, details = await session.status()
        assert code == grpc.StatusCode.UNAVAILABLE, details
        assert "stt stage" in details


async def test_a_hung_recogniser_under_a_flood_ends_the_stream_with_a_status() -> None:
    # STT stops reading (hung) while the client pushes 30 s of audio at full speed and half-closes:
    # whether the backlog filled and nothing took from it, or gRPC's windows took it all and STT
    # never finished the turn, the client is told (DEADLINE_EXCEEDED naming STT) after the stall
    # limit instead of hanging in the orchestrator until its own deadline.
    async with rig() as r, grpc.aio.insecure_channel(r.address) as channel:
        r.stt.stall_after = 21
        session = Live(channel)
        session.speak(silence_pcm(0.2) + tone_pcm(30.0))
        session.half_close()
        code, details = await session.status()
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED, details
        assert "stt stage" in details  # (it took none of the audio, or did not finish the turn)
        r.stt.give_up.set()


async def test_thousands_of_three_byte_chunks_get_invalid_argument_not_a_hang() -> None:
    async with rig() as r, grpc.aio.insecure_channel(r.address) as channel:
        session = Live(channel)
        session.speak(b"\x01\x02\x03" * 5000, chunk=3)
        session.half_close()
        code, details = await session.status()
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert "not whole" in details
        good = Live(channel)  # and the server keeps serving
        good.speak(silence_pcm(0.2) + tone_pcm(0.4) + silence_pcm(0.5))
        assert (await good.turn()).status == "COMPLETED"


def _endpoint_events(endpointer: Endpointer, pcm: bytes) -> list[object]:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    return list(endpointer.feed(samples))


def test_stt_does_not_continue_a_turn_nobody_answered_for_ever() -> None:
    # STT's own bound, for a client that never says a reply started: speech 30 s after an ended
    # turn is a new turn (its audio let go), speech within that continues it.
    endpointer = Endpointer(EnergyVad(), EndpointSettings(min_speech_ms=60, silence_ms=600))
    ended = _endpoint_events(endpointer, silence_pcm(0.3) + tone_pcm(0.5) + silence_pcm(0.8))
    assert [type(e).__name__ for e in ended if isinstance(e, TurnEnded)] == ["TurnEnded"]
    soon = [e for e in _endpoint_events(endpointer, silence_pcm(2.0) + tone_pcm(0.3) + silence_pcm(0.8))
            if isinstance(e, SpeechStarted)]
    assert [(e.turn, e.continues_turn) for e in soon] == [(1, True)]
    assert endpointer.holds_turn
    _endpoint_events(endpointer, silence_pcm(31.0))
    assert not endpointer.holds_turn  # its audio is let go
    late = [e for e in _endpoint_events(endpointer, tone_pcm(0.3)) if isinstance(e, SpeechStarted)]
    assert [(e.turn, e.continues_turn) for e in late] == [(2, False)]
