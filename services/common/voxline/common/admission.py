"""Bounded concurrency: N requests run, M more wait, the rest get RESOURCE_EXHAUSTED."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from voxline.common.errors import LimitExceeded


class AdmissionGate:
    """Admit at most ``max_active`` concurrent jobs and queue at most ``max_queued`` more."""

    def __init__(self, max_active: int, max_queued: int, what: str = "requests") -> None:
        if max_active < 1 or max_queued < 0:
            raise ValueError("max_active must be >= 1 and max_queued >= 0")
        self._slots = asyncio.Semaphore(max_active)
        self._max_active = max_active
        self._max_queued = max_queued
        self._waiting = 0
        self._what = what

    @property
    def waiting(self) -> int:
        return self._waiting

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold a slot for the body; raise LimitExceeded when the queue is full."""
        if self._slots.locked() and self._waiting >= self._max_queued:
            raise LimitExceeded(
                f"server busy: {self._max_active} {self._what} running and {self._waiting} queued; "
                "retry later"
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()
