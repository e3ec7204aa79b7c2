"""Stand-ins for the turn-taking tests that need no model: a VAD that hears a tone, and the tone."""

from __future__ import annotations

import numpy as np

RATE = 16_000


class ScriptedVad:
    """Says speech for the frames whose first sample is not zero (no model)."""

    frame_samples = 320

    def probability(self, frame: np.ndarray) -> float:
        return 1.0 if frame[0] != 0 else 0.0


def tone(seconds: float) -> np.ndarray:
    """``seconds`` of a constant signal: speech, to ``ScriptedVad``."""
    return np.full(int(seconds * RATE), 0.5, dtype=np.float32)
