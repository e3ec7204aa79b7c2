"""The orchestrator's former server VAD, kept for the benchmark's path (a): an energy (RMS) voice
activity detector over raw PCM s16le that ends an utterance after a fixed silence.

Server VAD now lives in the STT service's Listen stream (Silero VAD + Smart Turn; an RMS detector
remains there as the ``energy_vad`` fallback); bench/turn_taking.py replays this one on the client
side to measure what the path before that change cost.

Deliberately simple: a frame is speech when its RMS is above a threshold; speech starts after a
short run of speech frames and the utterance ends after ``silence_ms`` of non-speech frames. Before
speech starts only a short pre-roll is kept, so a client streaming an open microphone does not
accumulate silence.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from voxline.common.errors import InvalidInput


@dataclasses.dataclass(frozen=True)
class VadStep:
    """What one ``feed`` found."""

    #: Speech started in this chunk (a reply still playing should be interrupted).
    speech_started: bool = False
    #: Utterances that ended in this chunk (pre-roll + speech + trailing silence), in order.
    utterances: tuple[bytes, ...] = ()


class EnergyVad:
    """Cuts a stream of PCM s16le audio into utterances at silences."""

    def __init__(self, sample_rate: int, channels: int = 1, *, threshold: float = 0.015,
                 silence_ms: int = 600, frame_ms: int = 20, min_speech_ms: int = 60,
                 preroll_ms: int = 300) -> None:
        if sample_rate <= 0:
            raise InvalidInput("server VAD needs the input sample_rate_hz")
        self._frame_bytes = max(1, sample_rate * frame_ms // 1000) * 2 * channels
        self._channels = channels
        self._threshold = threshold
        self._silence_frames = max(1, -(-silence_ms // frame_ms))
        self._speech_frames = max(1, -(-min_speech_ms // frame_ms))
        # The frames that made speech start, and ``preroll_ms`` of audio before them.
        self._preroll: collections.deque[bytes] = collections.deque(
            maxlen=self._speech_frames + preroll_ms // frame_ms)
        self._pending = b""
        self._speech: bytearray | None = None  # the utterance being collected, once speech started
        self._voiced_run = 0
        self._silent_run = 0

    @property
    def in_speech(self) -> bool:
        return self._speech is not None

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for the current utterance."""
        return len(self._speech) if self._speech is not None else 0

    def feed(self, chunk: bytes) -> VadStep:
        """Add audio; report a speech start and any utterances that ended."""
        data = self._pending + chunk
        whole = len(data) - len(data) % self._frame_bytes
        self._pending = data[whole:]
        if not whole:
            return VadStep()
        samples = np.frombuffer(data[:whole], dtype="<i2").astype(np.float32) / 32768.0
        frames = samples.reshape(-1, self._frame_bytes // 2)
        voiced = np.sqrt(np.mean(frames * frames, axis=1)) > self._threshold
        started = False
        ended: list[bytes] = []
        for i, is_voiced in enumerate(voiced.tolist()):
            frame = data[i * self._frame_bytes:(i + 1) * self._frame_bytes]
            if self._speech is None:
                self._preroll.append(frame)
                self._voiced_run = self._voiced_run + 1 if is_voiced else 0
                if self._voiced_run >= self._speech_frames:
                    self._speech = bytearray(b"".join(self._preroll))
                    self._preroll.clear()
                    self._silent_run = 0
                    started = True
                continue
            self._speech += frame
            self._silent_run = 0 if is_voiced else self._silent_run + 1
            if self._silent_run >= self._silence_frames:
                ended.append(bytes(self._speech))
                self._speech = None
                self._voiced_run = 0
        return VadStep(speech_started=started, utterances=tuple(ended))

    def flush(self) -> bytes | None:
        """End the utterance now (the client sent end_of_utterance): its audio, or None if no speech."""
        if self._speech is None:
            self._preroll.clear()
            self._pending = b""
            return None
        whole = len(self._pending) - len(self._pending) % (2 * self._channels)
        audio = bytes(self._speech) + self._pending[:whole]
        self._speech = None
        self._pending = b""
        self._voiced_run = 0
        return audio
