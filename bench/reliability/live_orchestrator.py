"""The live path (server VAD over STT's Listen) under faults, issue 20's orchestrator cases.

Against a stack of processes exactly as ``voxline up`` runs and supervises them (``voxline.cli.stack.
Stack`` with its restart policy; the fake stages of the bench suite: the fake STT's Listen runs STT's
own Endpointer over a tone/silence detector):

- **STT SIGKILL, conversations mid-speech.** ``conversations`` server-VAD conversations stream audio
  at real time; each is in the middle of a sentence when STT is SIGKILLed. The supervisor restarts it
  on its port; the users go on speaking. A turn is lost when its conversation gets no COMPLETED
  turn with the whole sentence's transcript.
- **Orchestrator memory after sessions end.** ``sessions`` server-VAD sessions at 16 kHz mono, each
  ``session_s`` seconds of turns (speech and pauses, pushed at full speed, replies read), then the
  same at 48 kHz x 8 channels (the probe's worst format); the orchestrator's RSS at start (after
  one warm-up session of the format), at its peak (sampled) and after every session ended.

With ``--real-stt`` the SIGKILL case runs the real STT service (Silero VAD, Smart Turn, Whisper)
under the supervisor instead, the users saying a real sentence (``voxline.testing.speech``); a turn
counts when its transcript has the sentence's words (at most 2 word errors).

``python -m bench.reliability.live_orchestrator`` prints both as a table; the reliability suite
(``bench.reliability.run``) runs them as its "live" rows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.reliability import procs
from bench.reliability.matrix import Matrix
from voxline.testing.fake_servers import silence_pcm, tone_pcm
from voxline.v1 import audio_pb2, voice_pb2, voice_pb2_grpc

#: The fake STT's transcript of every speech segment (voxline.testing.fake_listen's default).
SAID = "What time is it?"
#: Real-time chunks, seconds.
CHUNK_S = 0.02


def _config(rate: int = 16_000, channels: int = 1) -> voice_pb2.SessionConfig:
    return voice_pb2.SessionConfig(
        input_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=rate,
                                           channels=channels),
        output_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE), server_vad=True,
        language="en")


@dataclass
class LiveCall:
    """One server-VAD Converse stream: requests queued (bounded), every response read by a task."""

    channel: grpc.aio.Channel
    config: voice_pb2.SessionConfig
    turns: list[tuple[int, str, str]] = field(default_factory=list)  # (turn, transcript, status)
    code: str = ""

    def __post_init__(self) -> None:
        self._requests: asyncio.Queue[voice_pb2.ConverseRequest | None] = asyncio.Queue(maxsize=256)
        self._requests.put_nowait(voice_pb2.ConverseRequest(config=self.config))
        self.call = voice_pb2_grpc.VoiceAssistantStub(self.channel).Converse(self._feed())
        self._reader = asyncio.ensure_future(self._read())
        self._turned = asyncio.Event()

    async def _feed(self) -> AsyncIterator[voice_pb2.ConverseRequest]:
        while (request := await self._requests.get()) is not None:
            yield request

    async def _read(self) -> None:
        transcript = ""
        try:
            while (message := await self.call.read()) is not grpc.aio.EOF:
                if message.HasField("transcript"):
                    transcript = message.transcript.text
                elif message.HasField("metrics"):
                    self.turns.append((message.turn, transcript,
                                       voice_pb2.TurnStatus.Name(message.metrics.status)))
                    self._turned.set()
            self.code = (await self.call.code()).name
        except grpc.aio.AioRpcError as exc:
            self.code = f"{exc.code().name}: {(exc.details() or '')[:80]}"
        finally:
            self._turned.set()

    async def speak(self, pcm: bytes, chunk_bytes: int, realtime: bool) -> None:
        for i in range(0, len(pcm), chunk_bytes):
            if self.call.done():
                return
            await self._requests.put(voice_pb2.ConverseRequest(audio=pcm[i:i + chunk_bytes]))
            if realtime:
                await asyncio.sleep(CHUNK_S)  # a microphone's pace

    async def wait_turns(self, count: int, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while len(self.turns) < count and not self._reader.done():
                    self._turned.clear()
                    await self._turned.wait()

    async def close(self, timeout_s: float = 30.0) -> str:
        await self._requests.put(None)
        done, _ = await asyncio.wait([self._reader], timeout=timeout_s)
        if not done:
            self.call.cancel()
            self.code = "HANG"
        return self.code


def _start_stack(log_dir: Path, real_stt: bool) -> Any:
    from bench.suite.stacks import BenchStack, _fake_command, start_stack
    from voxline.cli.stack import STAGES, Stack, StackConfig, default_command

    if not real_stt:
        return start_stack("fake", log_dir)

    def command(stage: str) -> list[str]:
        return default_command(stage) if stage in ("stt", "orchestrator") else _fake_command(stage)

    stack = Stack(StackConfig(log_dir=log_dir, ports=dict.fromkeys(STAGES, 0), command=command,
                              start_timeout_s=600.0))
    stack.start()
    return BenchStack("real-stt", stack)


@contextlib.asynccontextmanager
async def supervised_stack(log_dir: Path, real_stt: bool = False) -> AsyncIterator[Any]:
    """The stack under the supervisor (``Stack.wait`` restarts what dies), as ``voxline up``:
    fake stages, or the real STT with fake LLM and TTS."""
    stack = await asyncio.to_thread(_start_stack, log_dir, real_stt)
    stop = threading.Event()
    supervisor = asyncio.ensure_future(asyncio.to_thread(stack.stack.wait, stop))
    try:
        yield stack
    finally:
        stop.set()
        await supervisor
        await asyncio.to_thread(stack.stop)


async def stt_sigkill(matrix: Matrix, stack: Any, conversations: int, real_stt: bool = False
                      ) -> dict[str, Any]:
    """SIGKILL STT while every conversation is mid-sentence; the turns that survive."""
    row = matrix.row("live", f"SIGKILL {'real ' if real_stt else ''}stt under the supervisor, "
                             f"{conversations} conversations mid-speech")
    chunk = int(16_000 * 2 * CHUNK_S)
    said = SAID
    if real_stt:
        from voxline.testing.speech import PHRASE, english_speech_pcm16

        said, speech = PHRASE, english_speech_pcm16(PHRASE)
        half = len(speech) // 2 - len(speech) // 2 % 2
        head, tail = silence_pcm(0.3) + speech[:half], speech[half:] + silence_pcm(2.0)
    else:
        head, tail = silence_pcm(0.3) + tone_pcm(0.3), tone_pcm(0.3) + silence_pcm(1.0)
    stt = stack.stack.services["stt"]
    restarts = stack.stack.restarts.get("stt", 0)
    async with grpc.aio.insecure_channel(stack.address("orchestrator")) as channel:
        calls = [LiveCall(channel, _config()) for _ in range(conversations)]
        await asyncio.gather(*(c.speak(head, chunk, True) for c in calls))
        killed_at = time.monotonic()
        stt.proc.send_signal(signal.SIGKILL)
        await asyncio.gather(*(c.speak(tail, chunk, True) for c in calls))
        await asyncio.gather(*(c.wait_turns(1, 90.0) for c in calls))
        answered_s = time.monotonic() - killed_at
        codes = [await c.close() for c in calls]
    for c, code in zip(calls, codes, strict=True):
        ok = any(status == "COMPLETED" and _heard(text, said) for _, text, status in c.turns)
        row.turns_lost += int(not ok)
        row.record(ok and code == "OK", code.split(":")[0], f"turns {c.turns}, stream {code}")
    back = stack.stack.restarts.get("stt", 0) - restarts
    row.notes = f"stt restarted {back}x; last turn answered {answered_s:.1f} s after the kill"
    return {"conversations": conversations, "turns_lost": row.turns_lost, "codes": codes,
            "answered_s": round(answered_s, 1), "stt_restarts": back}


def _heard(text: str, said: str) -> bool:
    from voxline.testing.speech import word_errors

    return text == said or word_errors(text, said) <= 2


async def _session(channel: grpc.aio.Channel, rate: int, channels: int, seconds: float) -> str:
    """Turns of 2 s of speech and 1.5 s of silence, pushed at full speed, replies read."""
    call = LiveCall(channel, _config(rate, channels))
    frames = rate * channels
    pattern = tone_pcm(2.0, frames) + silence_pcm(1.5, frames)
    for _ in range(max(1, round(seconds / 3.5))):
        await call.speak(pattern, int(frames * 2 * CHUNK_S), False)
    return await call.close(60.0)


async def memory_after_sessions(matrix: Matrix, address: str, pid: int, sessions: int,
                                session_s: float, rate: int = 16_000, channels: int = 1
                                ) -> dict[str, Any]:
    """The orchestrator's RSS at start, its peak while ``sessions`` run at once, and after."""
    row = matrix.row("live", f"orchestrator RSS after {sessions} sessions end "
                             f"({rate // 1000} kHz x {channels} ch, {session_s:g} s each)")
    async with grpc.aio.insecure_channel(address) as channel:  # warm: first-use allocations
        await _session(channel, rate, channels, 3.5)
    start = procs.rss_mb(pid)
    peak = start
    running = True

    async def sample() -> None:
        nonlocal peak
        while running:
            peak = max(peak, procs.rss_mb(pid))
            await asyncio.sleep(0.2)

    sampler = asyncio.ensure_future(sample())
    async with grpc.aio.insecure_channel(address) as channel:
        codes = await asyncio.gather(*(_session(channel, rate, channels, session_s)
                                       for _ in range(sessions)))
    running = False
    await sampler
    await asyncio.sleep(2.5)  # the server settles: calls closed, its heap trimmed (heap.DELAY_S)
    after = procs.rss_mb(pid)
    row.memory_growth_mb = after - start
    for code in codes:
        row.record(code == "OK" and after - start <= 20.0, code.split(":")[0],
                   f"stream {code}; RSS {start:.0f} -> {after:.0f} MB")
    row.notes = f"RSS {start:.0f} MB at start, {peak:.0f} MB peak, {after:.0f} MB after"
    return {"sessions": sessions, "rate": rate, "channels": channels, "start_mb": round(start, 1),
            "peak_mb": round(peak, 1), "after_mb": round(after, 1), "codes": sorted(set(codes))}


async def run_live(matrix: Matrix, log_dir: Path, conversations: int = 8, sessions: int = 50,
                   session_s: float = 20.0, wide_sessions: int = 10, real_stt: bool = False
                   ) -> dict[str, Any]:
    """Every case above on one supervised fake stack (and the SIGKILL with the real STT)."""
    out: dict[str, Any] = {}
    if real_stt:
        async with supervised_stack(log_dir / "real-stt", real_stt=True) as stack:
            out["sigkill_real_stt"] = await stt_sigkill(matrix, stack, conversations, real_stt=True)
    async with supervised_stack(log_dir) as stack:
        pid = stack.pids["orchestrator"]
        out["sigkill"] = await stt_sigkill(matrix, stack, conversations)
        address = stack.address("orchestrator")
        out["memory_16k"] = await memory_after_sessions(matrix, address, pid, sessions, session_s)
        out["memory_48k8"] = await memory_after_sessions(matrix, address, pid, wide_sessions,
                                                         session_s / 2, 48_000, 8)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability.live_orchestrator",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=8, help="conversations mid-speech at the kill")
    parser.add_argument("--sessions", type=int, default=50, help="16 kHz sessions for the memory case")
    parser.add_argument("--session-s", type=float, default=20.0, help="audio per session, seconds")
    parser.add_argument("--wide-sessions", type=int, default=10,
                        help="48 kHz x 8 channel sessions for the memory case")
    parser.add_argument("--real-stt", action="store_true",
                        help="also SIGKILL the real STT service (real speech, Whisper) mid-speech")
    parser.add_argument("--log-dir", type=Path, default=None, help="service logs (default: a temp dir)")
    ns = parser.parse_args(argv)
    log_dir = ns.log_dir or Path(tempfile.mkdtemp(prefix="voxline-live-"))
    matrix = Matrix()
    result = asyncio.run(run_live(matrix, log_dir, ns.conversations, ns.sessions, ns.session_s,
                                  ns.wide_sessions, ns.real_stt))
    print("\n".join(matrix.markdown()))
    print(result)
    return 0 if all(r.ok for r in matrix.rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
