"""Audio at the edge: stateful resampling of 16-bit mono PCM, μ-law, and the playback queue.

Everything here is plain PCM bytes in and out (no WebRTC, no HTTP): the recogniser wants 16 kHz, the
voice speaks at its own rate, WebRTC carries 48 kHz and a phone line 8 kHz μ-law.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np

#: What the recogniser is sent (the orchestrator's server VAD wants raw 16 kHz mono PCM).
RECOGNISER_RATE = 16_000


class Resampler:
    """16-bit mono PCM from ``src_rate`` to ``dst_rate``, chunk by chunk (state kept between
    chunks, so no click at their seams)."""

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate, self.dst_rate = src_rate, dst_rate
        self._resampler = (None if src_rate == dst_rate else
                           av.AudioResampler(format="s16", layout="mono", rate=dst_rate))

    def convert(self, pcm: bytes) -> bytes:
        """Resample one chunk (any length, even number of bytes)."""
        if self._resampler is None or not pcm:
            return pcm
        samples = np.frombuffer(pcm, dtype=np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self.src_rate
        return b"".join(out.to_ndarray().tobytes() for out in self._resampler.resample(frame))


def frame_to_mono_pcm(frame: av.AudioFrame) -> tuple[bytes, int]:
    """A decoded WebRTC frame (s16, packed, 1 or 2 channels) as mono 16-bit PCM and its rate."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        mono = data.astype(np.int32).mean(axis=0) if data.shape[0] > 1 else data[0]
    else:
        interleaved = data.reshape(-1, channels)
        mono = interleaved.astype(np.int32).mean(axis=1) if channels > 1 else interleaved[:, 0]
    return np.asarray(mono).astype(np.int16).tobytes(), int(frame.sample_rate)


# ITU-T G.711 μ-law, as numpy tables (the audioop module is gone from Python 3.13).
_BIAS, _CLIP = 0x84, 32635


def _ulaw_decode_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign, exponent, mantissa = codes & 0x80, (codes >> 4) & 0x07, codes & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


_ULAW_TO_PCM = _ulaw_decode_table()


def ulaw_to_pcm16(data: bytes) -> bytes:
    """μ-law bytes as 16-bit PCM."""
    decoded: np.ndarray = _ULAW_TO_PCM[np.frombuffer(data, dtype=np.uint8)]
    return decoded.tobytes()


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """16-bit PCM as μ-law bytes."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.int32)
    sign = np.where(samples < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(samples), _CLIP) + _BIAS
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    encoded: np.ndarray = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)
    return encoded.tobytes()


@dataclass
class Flushed:
    """What a flush threw away."""

    turn: int
    frames: int

    def milliseconds(self, frame_ms: float) -> float:
        return self.frames * frame_ms


class Playback:
    """Reply audio waiting to be sent, in fixed frames at the output rate; bounded.

    The reply arrives from the orchestrator faster than it is spoken; it waits here and leaves one
    frame per frame period. ``flush`` empties it at once (barge-in): the next frame taken is silence.
    ``on_first_frame(turn, seconds)`` is called when a turn's first frame leaves, with the time since
    that turn's first audio arrived (the edge's own share of the latency).
    """

    def __init__(self, rate: int, frame_ms: int, max_seconds: float,
                 on_first_frame: Callable[[int, float], None] | None = None,
                 on_dropped: Callable[[int], None] | None = None) -> None:
        self.rate = rate
        self.frame_ms = frame_ms
        self.frame_bytes = rate * frame_ms // 1000 * 2
        self._max_frames = max(1, int(max_seconds * 1000 / frame_ms))
        self._frames: collections.deque[tuple[int, bytes]] = collections.deque()
        self._partial = b""
        self._partial_turn = 0
        self._arrived: dict[int, float] = {}
        self._on_first_frame = on_first_frame
        self._on_dropped = on_dropped
        #: Frames thrown away because the queue was full.
        self.dropped = 0
        #: The turn whose audio was last taken (0: none yet).
        self.playing_turn = 0

    def push(self, turn: int, pcm: bytes) -> None:
        """Queue reply audio of ``turn`` (16-bit mono PCM at ``rate``)."""
        if turn != self._partial_turn:
            self._pad_partial()
            self._partial_turn = turn
        self._arrived.setdefault(turn, time.perf_counter())
        data = self._partial + pcm
        whole = len(data) - len(data) % self.frame_bytes
        for start in range(0, whole, self.frame_bytes):
            self._append(turn, data[start:start + self.frame_bytes])
        self._partial = data[whole:]

    def end_turn(self, turn: int) -> None:
        """The turn's audio is complete: its last partial frame goes out padded with silence."""
        if turn == self._partial_turn:
            self._pad_partial()

    def _pad_partial(self) -> None:
        if self._partial:
            self._append(self._partial_turn, self._partial.ljust(self.frame_bytes, b"\0"))
            self._partial = b""

    def _append(self, turn: int, frame: bytes) -> None:
        if len(self._frames) >= self._max_frames:
            self._frames.popleft()
            self.dropped += 1
            if self._on_dropped is not None:
                self._on_dropped(1)
        self._frames.append((turn, frame))

    def next_frame(self) -> bytes | None:
        """The next frame to send, or None (send silence)."""
        if not self._frames:
            return None
        turn, frame = self._frames.popleft()
        if turn != self.playing_turn:
            self.playing_turn = turn
            arrived = self._arrived.pop(turn, None)
            if arrived is not None and self._on_first_frame is not None:
                self._on_first_frame(turn, time.perf_counter() - arrived)
        return frame

    def queued_turns(self) -> set[int]:
        """Turns with audio still queued."""
        turns = {turn for turn, _ in self._frames}
        if self._partial:
            turns.add(self._partial_turn)
        return turns

    def flush(self) -> Flushed:
        """Throw away everything queued; what was thrown away."""
        frames = len(self._frames) + (1 if self._partial else 0)
        turn = self._frames[-1][0] if self._frames else self._partial_turn
        self._frames.clear()
        self._partial = b""
        return Flushed(turn, frames)

    def __len__(self) -> int:
        return len(self._frames)
