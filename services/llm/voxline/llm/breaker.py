"""Per-provider circuit breaker (shared: ``voxline.common.breaker``) and time-to-first-token
statistics (for automatic hedge delays)."""

from __future__ import annotations

import math
from collections import deque

from voxline.common.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, Clock

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker", "Clock", "TtftStats"]


class TtftStats:
    """Recent times to first token of one provider, in ms (a bounded window)."""

    def __init__(self, window: int = 200) -> None:
        self._samples: deque[float] = deque(maxlen=window)

    def add(self, ms: float) -> None:
        self._samples.append(ms)

    def __len__(self) -> int:
        return len(self._samples)

    def percentile(self, pct: float) -> float | None:
        """Nearest-rank percentile of the window, None when empty."""
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
        return ordered[rank - 1]
