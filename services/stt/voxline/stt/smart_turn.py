"""Semantic end of turn: Smart Turn v3 (BSD-2, by Daily) on onnxruntime, with Whisper features in numpy.

At a pause, the model hears the last 8 s of the turn and says how likely the speaker has finished
(intonation and words, not only silence). Its ONNX file ships inside the ``pipecat-ai`` wheel,
installed without its dependencies; the file is located through the package's install metadata and
pipecat itself is never imported (it would pull half of PyPI). No torch, no transformers: the
log-mel features are computed here with numpy, to the same recipe as transformers'
``WhisperFeatureExtractor(chunk_length=8)`` with ``do_normalize=True`` (a test checks the two agree).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from voxline.common.audio import WHISPER_RATE
from voxline.common.errors import NotConfigured

#: Where the model sits inside the pipecat package.
MODEL_RELPATH = Path("audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx")
#: The model hears this much audio (the end of the turn), left-padded with zeros when shorter.
WINDOW_SECONDS = 8
WINDOW_SAMPLES = WINDOW_SECONDS * WHISPER_RATE

_N_FFT = 400
_HOP = 160
_N_MELS = 80


def model_path() -> Path:
    """The Smart Turn v3.2 ONNX file of the installed ``pipecat-ai`` wheel (NotConfigured if absent)."""
    spec = importlib.util.find_spec("pipecat")  # finds the package directory without importing it
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / MODEL_RELPATH
        if path.is_file():
            return path
    raise NotConfigured("the Smart Turn model is missing: install pipecat-ai without its dependencies "
                        "(pip install --no-deps pipecat-ai), or choose another turn detector")


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale (linear below 1 kHz, logarithmic above), as librosa and Whisper use."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = 3.0 * hz / 200.0
    log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * (27.0 / np.log(6.4))
    return np.asarray(np.where(hz >= 1000.0, log, linear))


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = 200.0 * mel / 3.0
    log = 1000.0 * np.exp((mel - 15.0) * (np.log(6.4) / 27.0))
    return np.asarray(np.where(mel >= 15.0, log, linear))


@functools.cache
def _mel_filters() -> np.ndarray:
    """(n_fft/2+1, 80) triangular filters with Slaney area normalisation, 0..8 kHz."""
    bins = np.linspace(0.0, WHISPER_RATE / 2, _N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(WHISPER_RATE / 2)),
                                   _N_MELS + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins[:, None] - lower[None, :]) / (centre - lower)[None, :]
    falling = (upper[None, :] - bins[:, None]) / (upper - centre)[None, :]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    return np.asarray(filters * (2.0 / (upper - lower))[None, :])


@functools.cache
def _window() -> np.ndarray:
    return np.hanning(_N_FFT + 1)[:-1]  # periodic Hann


def whisper_features(samples: np.ndarray) -> np.ndarray:
    """Whisper log-mel features (80, 800) of 16 kHz mono audio: the last 8 s, left-padded with zeros.

    The waveform is normalised to zero mean and unit variance (padding included), then: centred
    STFT (reflect padding, 400-point periodic Hann, hop 160), power, Slaney mel filters, log10
    floored at 1e-10, clamped to 8 decades below the maximum, and scaled by (x + 4) / 4.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)[-WINDOW_SAMPLES:]
    if x.size < WINDOW_SAMPLES:
        x = np.concatenate([np.zeros(WINDOW_SAMPLES - x.size, dtype=np.float32), x])
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), _N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP]
    power = np.abs(np.fft.rfft(frames * _window(), axis=-1)) ** 2  # (frames, bins)
    mel = np.maximum(power @ _mel_filters(), 1e-10).T  # (80, frames)
    log = np.log10(mel)[:, :-1]  # Whisper drops the last frame: 801 → 800
    log = np.maximum(log, log.max() - 8.0)
    return np.asarray((log + 4.0) / 4.0, dtype=np.float32)


class SmartTurn:
    """The Smart Turn v3 model: ``probability(samples)`` that the speaker finished. Thread-safe."""

    def __init__(self, path: Path | None = None, *, threads: int = 1) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]  # ~0.3 s import: only when a stream needs it

        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self._session: Any = ort.InferenceSession(str(path or model_path()), sess_options=options,
                                                  providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def probability(self, samples: np.ndarray) -> float:
        """P(turn complete) for the end of 16 kHz mono float32 audio (blocking, ~20 ms on a CPU)."""
        features = whisper_features(samples)[None, :, :]
        (out,) = self._session.run(None, {self._input: features})
        return float(np.asarray(out).reshape(-1)[0])

