"""A stream's recognition passes, latest first, within a budget of recognition time.

Every Listen stream asks the shared recogniser for passes over its turn: at pauses, at the end of
the turn, and (best effort) while the user speaks. Only the newest one is ever worth having, so a
stream has at most one pass waiting for or holding a worker:

- a new pass supersedes the stream's older one: cancelled, it leaves the queue at once if it has not
  started, and a running one stops at its next segment (``WhisperTranscriber``; a clip of one
  30 s window costs as much to stop as to finish: it finishes, and its transcript still counts);
- when speech resumes (a new epoch), the pass for the older epoch is stale: dropped if it has not
  started (it leaves the queue); one already running finishes (or is stopped by the next pass),
  and its transcript goes out as a plain interim (an interim of the turn so far is never stale:
  speech going on is what it is for);
- an interim never supersedes: it starts only when the stream has no pass live, on an idle
  worker, and is not superseded either (it is already running; its transcript still goes out).

So end-of-turn spam, or a flood of pauses, queues one pass per stream, never one per request, and a
stream that ends leaves no work behind it.

Optional passes (pause and interim transcripts) also spend a budget: ``budget`` seconds of
recognition per second of the stream's audio, saved up to ``burst_s``. A turn whose passes have
spent it is transcribed once, at its end: no stream's work grows with the square of its turn. The
pass that ends a turn is never refused (no turn is lost); it is charged like the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from voxline.stt.engine import SUPERSEDED

T = TypeVar("T")


class StreamPasses:
    """One stream's recognition passes: latest first, one at a time, within a time budget."""

    def __init__(self, budget: float = 1.0, burst_s: float = 10.0) -> None:
        self._budget, self._burst_s = budget, burst_s
        self._tokens = burst_s  # seconds of recognition the stream may still spend
        # (pass, its epoch, does resumed speech make it stale)
        self._current: tuple[asyncio.Task[Any], int, bool] | None = None
        #: Passes started, superseded or dropped as stale, and optional ones refused (budget spent).
        self.started = self.superseded = self.refused = 0

    @property
    def live(self) -> bool:
        """A pass of the stream waits for or holds a worker."""
        return self._current is not None and not self._current[0].done()

    def submit(self, work: Coroutine[Any, Any, T], epoch: int, *, interim: bool = False
               ) -> asyncio.Task[T]:
        """Start a pass for ``epoch``; the stream's previous one, if still live, is cancelled.
        ``interim``: a transcript of the turn so far, which speech going on does not make stale
        (the caller starts one only when no pass is ``live``)."""
        if self._current is not None and not self._current[2]:
            self._current = None  # a running interim finishes (one worker at most, idle-only)
        self._cancel_current()
        task: asyncio.Task[T] = asyncio.ensure_future(work)
        self._current = (task, epoch, not interim)
        self.started += 1
        return task

    def drop_stale(self, epoch: int, started: Callable[[asyncio.Task[Any]], bool] | None = None
                   ) -> None:
        """Speech resumed (``epoch`` is the current one): a pass for an older epoch that has not
        ``started`` (holds no worker yet; None: the recogniser cannot tell) is dropped."""
        if self._current is None or not self._current[2] or self._current[1] >= epoch:
            return
        if started is not None and started(self._current[0]):
            return
        self._cancel_current()

    def _cancel_current(self) -> None:
        if self._current is not None and not self._current[0].done():
            self._current[0].cancel(SUPERSEDED)
            self.superseded += 1
        self._current = None

    def earn(self, audio_s: float) -> None:
        """The stream sent ``audio_s`` more seconds of audio."""
        self._tokens = min(self._burst_s, self._tokens + self._budget * audio_s)

    def spend(self, processing_s: float) -> None:
        """A pass of the stream took ``processing_s`` of recognition."""
        self._tokens -= processing_s

    def affordable(self) -> bool:
        """May the stream start an optional pass now? (counts a refusal when not)"""
        if self._tokens > 0:
            return True
        self.refused += 1
        return False
