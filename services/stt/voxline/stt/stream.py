"""Streaming recognition: audio chunks in, partial transcripts while they arrive, one final.

Raw PCM gets partial transcripts of everything received so far every ``partial_interval_s`` of new
audio. They are best-effort: one at a time per stream, only when a worker is idle, and they never
hold up receiving further chunks. Container formats (WAV, FLAC, ...) are decoded once at the end.
The final transcript always comes after the client half-closes (or an error does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from voxline.common.audio import MAX_RATE, MIN_RATE
from voxline.common.errors import InvalidInput, LimitExceeded, VoxlineError
from voxline.stt.engine import AudioInput, RecognitionOptions, Transcriber, Transcript

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamFormat:
    """How the stream's bytes are encoded (encoding names as in ``voxline.common.audio``)."""

    encoding: str | None
    sample_rate: int = 0
    channels: int = 0

    @property
    def is_pcm(self) -> bool:
        return self.encoding == "pcm_s16le"

    def validate(self) -> None:
        """Reject a raw PCM format that cannot be read, before any audio arrives."""
        if not self.is_pcm:
            return
        if self.sample_rate <= 0:
            raise InvalidInput("raw PCM (PCM_S16LE) needs sample_rate_hz > 0 in the audio format")
        if not MIN_RATE <= self.sample_rate <= MAX_RATE:
            raise InvalidInput(f"sample rate {self.sample_rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")
        if not 0 <= self.channels <= 8:
            raise InvalidInput(f"raw PCM channels must be 1..8, got {self.channels}")

    @property
    def frame_bytes(self) -> int:
        return 2 * max(self.channels, 1)


async def transcribe_stream(
    engine: Transcriber,
    fmt: StreamFormat,
    options: RecognitionOptions,
    chunks: AsyncIterator[bytes],
    *,
    partial_interval_s: float,
    max_stream_bytes: int,
) -> AsyncIterator[tuple[bool, Transcript]]:
    """Yield ``(is_final, transcript)``: partials (raw PCM only), then exactly one final."""
    fmt.validate()
    engine.check_options(options)
    buffer = bytearray()
    bytes_per_second = fmt.frame_bytes * fmt.sample_rate if fmt.is_pcm else 0
    partial_every = int(partial_interval_s * bytes_per_second) if partial_interval_s > 0 else 0
    last_partial_at = 0
    partial: asyncio.Task[Transcript | None] | None = None
    receive: asyncio.Task[bytes] | None = asyncio.ensure_future(anext(chunks))
    try:
        while receive is not None:
            waiting: set[asyncio.Future[Any]] = {receive}
            if partial is not None:
                waiting.add(partial)
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if partial is not None and partial in done:
                result, partial = _partial_result(partial), None
                if result is not None:
                    yield False, result
            if receive not in done:
                continue
            try:
                chunk = receive.result()
            except StopAsyncIteration:
                receive = None
                break
            buffer += chunk
            _check_limits(len(buffer), bytes_per_second, engine.max_audio_seconds, max_stream_bytes)
            receive = asyncio.ensure_future(anext(chunks))
            if partial_every and partial is None and len(buffer) - last_partial_at >= partial_every:
                last_partial_at = len(buffer) - len(buffer) % fmt.frame_bytes
                audio = AudioInput(bytes(buffer[:last_partial_at]), fmt.encoding, fmt.sample_rate,
                                   fmt.channels)
                partial = asyncio.create_task(engine.transcribe_if_idle(audio, options),
                                              name="stt-partial")
        if partial is not None:  # let a running partial finish (it holds a worker anyway)
            await asyncio.wait([partial])
            result, partial = _partial_result(partial), None
            if result is not None:
                yield False, result
        audio = AudioInput(bytes(buffer), fmt.encoding, fmt.sample_rate, fmt.channels)
        yield True, await engine.transcribe(audio, options)
    finally:
        owned: list[asyncio.Future[Any]] = []
        if receive is not None:
            owned.append(receive)
        if partial is not None:
            owned.append(partial)
        for task in owned:
            task.cancel()  # no-op when already done
        await asyncio.gather(*owned, return_exceptions=True)


def _partial_result(task: asyncio.Task[Transcript | None]) -> Transcript | None:
    """The partial's transcript; a failed partial is dropped (the final reports real problems)."""
    try:
        return task.result()
    except VoxlineError as exc:
        log.debug("partial transcript skipped", extra={"reason": str(exc)})
        return None


def _check_limits(total: int, bytes_per_second: int, max_seconds: float, max_bytes: int) -> None:
    if total > max_bytes:
        raise LimitExceeded(f"the stream sent more than {max_bytes} bytes of audio (the limit)")
    if bytes_per_second and total / bytes_per_second > max_seconds:
        raise LimitExceeded(f"the stream is longer than {max_seconds:g} s of audio (the limit)")
