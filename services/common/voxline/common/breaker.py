"""A circuit breaker for a remote dependency (an LLM provider, a cloud recogniser): the same rules
in every service that falls back from one."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """``failure_threshold`` consecutive failures open the circuit for ``cooldown_s``.

    After the cool-down the circuit is half-open: exactly one request may try the provider. Its
    success closes the circuit, its failure re-opens it for another cool-down; if it is cancelled
    (lost a hedge race, the caller hung up) the trial slot is released for the next request.
    """

    def __init__(self, failure_threshold: int = 3, cooldown_s: float = 30.0,
                 clock: Clock = time.monotonic) -> None:
        if failure_threshold < 1 or cooldown_s < 0:
            raise ValueError("failure_threshold must be >= 1 and cooldown_s >= 0")
        self._threshold = failure_threshold
        self._cooldown = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if self._clock() - self._opened_at < self._cooldown:
            return OPEN
        return HALF_OPEN

    def retry_in_s(self) -> float:
        """Seconds until an open circuit turns half-open (0 otherwise)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._cooldown - (self._clock() - self._opened_at))

    def try_acquire(self) -> bool:
        """May a request use the provider now? In half-open state this takes the one trial slot."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._trial_running or self._failures >= self._threshold:
            self._opened_at = self._clock()
        self._trial_running = False

    def release(self) -> None:
        """The request ended without a verdict (cancelled): free the half-open trial slot."""
        self._trial_running = False
