"""Memory a session freed goes back to the operating system, not only to the allocator.

A session's audio passes through many short-lived buffers (gRPC messages, chunks held for a replay).
Python frees them when the session ends, but glibc's allocator keeps freed heap pages for reuse:
after 50 sessions at 16 kHz ended, the orchestrator's RSS stayed ~40 MB above its start (and a pod's
memory limit counts RSS). ``session_ended`` asks glibc to return free pages (``malloc_trim``) once
the sessions ending around the same time are gone: one call at most every ``DELAY_S``, on the event
loop (it takes a few milliseconds on a heap of a few hundred MB). Elsewhere than glibc, a no-op.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Sessions ending within this long of each other share one trim, seconds.
DELAY_S = 1.0


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


_TRIM = _load_trim()
#: The trim scheduled, and the loop it is scheduled on (a loop that closed never runs it).
_pending: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None


def _trim_now() -> None:
    global _pending
    _pending = None
    if _TRIM is not None:
        _TRIM(0)


def session_ended() -> None:
    """A session ended: give free heap pages back to the OS shortly (one trim for a burst)."""
    global _pending
    if _TRIM is None:
        return
    loop = asyncio.get_running_loop()
    if _pending is not None and _pending[0] is loop and not _pending[1].cancelled():
        return
    _pending = (loop, loop.call_later(DELAY_S, _trim_now))
