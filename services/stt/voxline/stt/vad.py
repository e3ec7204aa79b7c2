"""Voice activity: Silero VAD (the ONNX model faster-whisper ships) and an RMS energy fallback.

Both judge fixed frames of 16 kHz mono float32 audio and return a speech probability. Silero is a
small recurrent network, so a ``SileroVad`` holds the state of one stream; the ONNX session itself
is loaded once per process and shared (onnxruntime sessions are safe to run from several threads).
The energy detector says 1.0 when a frame's RMS is over a threshold: cheap, but it takes a fan or a
keyboard for speech, which is why it is only the fallback.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from voxline.common.errors import NotConfigured

#: Silero v6 at 16 kHz: 512 new samples per call (32 ms), with the previous call's last 64 as context.
SILERO_FRAME = 512
SILERO_CONTEXT = 64


class VoiceActivity(Protocol):
    """Speech probability of consecutive frames of one stream (16 kHz mono float32)."""

    @property
    def frame_samples(self) -> int:
        """Samples per frame."""

    def probability(self, frame: np.ndarray) -> float:
        """P(speech) for the next frame of the stream (exactly ``frame_samples`` samples)."""


def silero_model_path() -> Path:
    """faster-whisper's packaged Silero VAD v6 model (located without importing faster-whisper)."""
    spec = importlib.util.find_spec("faster_whisper")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "assets" / "silero_vad_v6.onnx"
        if path.is_file():
            return path
    raise NotConfigured("Silero VAD model not found: faster-whisper's assets/silero_vad_v6.onnx is missing")


@functools.cache
def silero_session() -> Any:
    """The shared onnxruntime session of the Silero model (loaded on first use; blocking)."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(silero_model_path()), sess_options=options,
                                providers=["CPUExecutionProvider"])


class SileroVad:
    """Silero VAD v6 over one stream: keeps the network's state and the 64-sample context."""

    frame_samples = SILERO_FRAME

    def __init__(self, session: Any | None = None) -> None:
        self._session = session if session is not None else silero_session()
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(SILERO_CONTEXT, dtype=np.float32)

    def probability(self, frame: np.ndarray) -> float:
        window = np.concatenate([self._context, np.asarray(frame, dtype=np.float32)])[None, :]
        out, self._h, self._c = self._session.run(None, {"input": window, "h": self._h, "c": self._c})
        self._context = window[0, -SILERO_CONTEXT:]
        return float(np.asarray(out).reshape(-1)[0])


class EnergyVad:
    """RMS threshold on 20 ms frames: 1.0 above ``threshold``, else 0.0 (the fallback detector)."""

    frame_samples = 320

    def __init__(self, threshold: float = 0.015) -> None:
        self._threshold = threshold

    def probability(self, frame: np.ndarray) -> float:
        x = np.asarray(frame, dtype=np.float32)
        return 1.0 if float(np.sqrt(np.mean(x * x))) > self._threshold else 0.0
