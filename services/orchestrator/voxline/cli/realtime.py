"""A microphone-paced Converse client: raw PCM in 20 ms chunks at real-time pace, then silence.

Used by ``voxline talk --realtime`` and the turn-taking benchmark. The client knows when the user
stopped speaking (``end_of_speech_s`` into the audio: it is "spoken" at start + that offset), so it
measures what the user feels: end of speech to the first reply audio that reaches it, with the
server's endpointing, transcription, LLM and TTS all inside that figure.

What is sent at each 20 ms tick is a *schedule*, so other clients can be emulated on the same clock:
a plain microphone (``microphone_schedule``), or one that marks the end of the utterance itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import numpy as np

from voxline.cli.client import Conversation, metrics_to_dict
from voxline.v1 import voice_pb2

CHUNK_MS = 20

#: What to send at one tick (after the tick's audio was "captured").
Tick = list[voice_pb2.ConverseRequest]


@dataclasses.dataclass
class SeenTurn:
    """One turn as the client saw it (times are perf_counter)."""

    number: int
    transcript: str = ""
    reply: str = ""
    first_audio_at: float | None = None
    audio_bytes: int = 0
    metrics: dict[str, object] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RealtimeRun:
    """A whole paced session."""

    #: When the audio's first sample was "spoken", and its last voiced one.
    started_at: float
    speech_ended_at: float
    turns: list[SeenTurn]
    interims: list[str]
    #: What the session was waiting for when this was taken (see ``SessionUnfinished``).
    awaited: str = ""

    def waiting_for(self) -> str:
        return self.awaited

    @property
    def replied(self) -> list[SeenTurn]:
        """Turns whose reply reached the client as audio."""
        return [t for t in self.turns if t.first_audio_at is not None]

    @property
    def end_of_speech_to_first_audio_ms(self) -> float | None:
        """From the end of speech to the first audio of the reply to the last turn (the one that
        heard the end of the speech; a reply to an earlier piece of a split question does not count).
        None: that turn got no audio."""
        answered = [t for t in self.turns if t.transcript]
        last = answered[-1] if answered else None
        if last is None or last.first_audio_at is None:
            return None
        return (last.first_audio_at - self.speech_ended_at) * 1000.0

    @property
    def early_replies(self) -> int:
        """Replies whose audio started before the user had finished speaking."""
        return sum(1 for t in self.replied if t.first_audio_at is not None
                   and t.first_audio_at < self.speech_ended_at)


def chunks_of(pcm: bytes, rate: int, channels: int = 1) -> list[bytes]:
    """``pcm`` cut into 20 ms chunks (the last one may be shorter)."""
    size = rate * CHUNK_MS // 1000 * 2 * channels
    return [pcm[i:i + size] for i in range(0, len(pcm), size)]


def microphone_schedule(pcm: bytes, rate: int, channels: int = 1) -> list[Tick]:
    """Every chunk as it is captured; nothing else."""
    return [[voice_pb2.ConverseRequest(audio=c)] for c in chunks_of(pcm, rate, channels)]


def last_voiced_s(pcm: bytes, rate: int, channels: int = 1, threshold: float = 0.01) -> float:
    """End of the last 10 ms frame whose RMS is over ``threshold``: where the speech ends."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        x = x[:len(x) // channels * channels].reshape(-1, channels).mean(axis=1)
    frame = max(1, rate // 100)
    n = len(x) // frame
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(x[:n * frame].reshape(n, frame) ** 2, axis=1))
    voiced = np.nonzero(rms > threshold)[0]
    return float((voiced[-1] + 1) * frame / rate) if len(voiced) else 0.0


class SessionUnfinished(Exception):
    """The session did not end within its time: what the client had seen, and what it waited for."""

    def __init__(self, run: RealtimeRun, waited_s: float) -> None:
        self.run, self.waited_s = run, waited_s
        super().__init__(f"the session had not ended after {waited_s:.0f} s: {run.waiting_for()}")


def _waiting_for(turns: list[SeenTurn], interims: list[str], sent_all: bool) -> str:
    """What a session that has not ended is waiting for, as far as the client can tell."""
    if not sent_all:
        return "the audio was still being sent"
    last = turns[-1] if turns else None
    if last is None or not last.transcript:
        heard = f" (last interim transcript: {interims[-1]!r})" if interims else " (no transcript yet)"
        return "the server was still recognising the speech or waiting for its end" + heard
    if not last.reply:
        return f"the LLM had not started the reply to {last.transcript!r}"
    if last.first_audio_at is None:
        return f"TTS had not sent audio for the reply {last.reply[:60]!r}"
    return "the reply was still streaming (the server had not closed the stream)"


async def run_paced(conversation: Conversation, config: voice_pb2.SessionConfig, schedule: list[Tick],
                    end_of_speech_s: float, *, timeout_s: float = 120.0, speed: float = 1.0) -> RealtimeRun:
    """Send ``config``, then each tick's requests at its real time (``speed`` times faster: only for
    smoke runs); half-close after the last tick, and read until the server ends the stream: as long
    as it is working, up to ``timeout_s`` for the whole session. Past it, ``SessionUnfinished`` says
    what was still awaited and carries what had arrived (interim transcripts included)."""
    turns: dict[int, SeenTurn] = {}
    interims: list[str] = []
    sent_all = False
    started = time.perf_counter()

    def seen() -> RealtimeRun:
        ordered = sorted(turns.values(), key=lambda t: t.number)
        return RealtimeRun(started, started + end_of_speech_s / speed, ordered, interims,
                           _waiting_for(ordered, interims, sent_all))

    async def read() -> None:
        while (event := await conversation.read()) is not None:
            kind = event.WhichOneof("event")
            if kind == "interim_transcript":
                interims.append(event.interim_transcript.text)
                continue
            turn = turns.setdefault(event.turn, SeenTurn(event.turn))
            if kind == "transcript":
                turn.transcript = event.transcript.text
            elif kind == "assistant_text":
                turn.reply += event.assistant_text.delta
            elif kind == "audio":
                if turn.first_audio_at is None:
                    turn.first_audio_at = time.perf_counter()
                turn.audio_bytes += len(event.audio)
            elif kind == "metrics":
                turn.metrics = metrics_to_dict(event.metrics)

    async def talk() -> None:
        nonlocal sent_all
        await conversation.send_config(config)
        reader = asyncio.create_task(read(), name="realtime-reader")
        try:
            for i, tick in enumerate(schedule):
                due = started + (i + 1) * CHUNK_MS / 1000.0 / speed  # sent once it has been captured
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                for request in tick:
                    await conversation.call.write(request)
                if reader.done():
                    break  # the stream ended (an error): stop talking to it
            await conversation.call.done_writing()
            sent_all = True
            await asyncio.shield(reader)  # the server ends the stream once its turns are done
        finally:
            if not reader.done():
                reader.cancel()
            await asyncio.wait([reader])
        reader.result()  # the stream's error, if it failed

    try:
        async with asyncio.timeout(timeout_s):
            await talk()
    except TimeoutError:  # the session's time, or the conversation's read timeout (no event)
        raise SessionUnfinished(seen(), time.perf_counter() - started) from None
    return seen()


def realtime_pcm(audio: bytes, rate: int, channels: int) -> bytes:
    """An audio file's bytes (a container, or raw PCM16 at ``rate``) as 16 kHz mono PCM16."""
    from voxline.common.audio import WHISPER_RATE, decode, float_to_pcm16

    decoded = decode(audio, "pcm_s16le" if rate else None, sample_rate=rate, channels=channels,
                     target_rate=WHISPER_RATE)
    return float_to_pcm16(decoded.samples)


def describe_run(run: RealtimeRun) -> list[str]:
    """What ``voxline talk --realtime`` prints after the session (or as far as it got)."""
    lines = []
    if run.interims and not any(t.transcript for t in run.turns):
        lines.append(f"heard so far (interim): {run.interims[-1]!r}")
    for turn in run.turns:
        m = turn.metrics
        lines.append(f"turn {turn.number}: you: {turn.transcript!r}")
        lines.append(f"        assistant: {turn.reply!r}")
        felt = m.get("end_of_speech_to_first_audio_ms") or 0.0
        lines.append(f"        server: end of speech -> first audio {felt:.0f} ms (endpointing "
                     f"{m.get('endpointing_ms', 0.0):.0f} ms, recognition after it "
                     f"{m.get('stt_ms', 0.0):.0f} ms), speculative starts/hits/misses "
                     f"{m.get('speculative_starts', 0)}/{m.get('speculative_hits', 0)}/"
                     f"{m.get('speculative_misses', 0)}")
    felt_ms = run.end_of_speech_to_first_audio_ms
    lines.append("end of speech -> first audio, as this client saw it: "
                 + (f"{felt_ms:.0f} ms" if felt_ms is not None else "no reply audio after the end of speech"))
    if run.early_replies:
        lines.append(f"replies that started before the end of speech: {run.early_replies}")
    return lines
