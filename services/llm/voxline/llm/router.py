"""Routing one request over an ordered provider chain: fallback, hedging and circuit breakers.

Rules, in the order they apply:

- Providers are tried in chain order. One whose circuit is open is skipped (attempt "skipped"), and
  so is one that cannot call tools when the request uses tools.
- **First token.** An attempt "produces" when its first non-empty text delta or its first tool-call
  delta arrives. Each attempt
  has its own first-token timeout; an attempt that errors or times out before producing has failed,
  and the next provider starts at once (**fallback**).
- **Hedging.** While exactly one attempt is running and has not produced within the hedge delay of
  its provider (fixed, or a percentile of that provider's recent times to first token, clamped to
  [floor, ceiling]), the next provider starts as well. At most two attempts run at once.
- **Winner.** The first attempt to produce wins; every other running attempt is cancelled at once
  (its HTTP stream closed / its local generation stopped) and its outcome is "cancelled". Only the
  winner's deltas reach the caller, so with hedging a tool call is asked for once, never twice.
- **After the first token** nothing is switched: text already reached the caller, and splicing
  another model's reply onto it would produce a garbled sentence. A winner that fails mid-reply
  fails the call with UNAVAILABLE naming the provider and how much text had been sent.
- **Stall.** Once an attempt has produced, each further gap between tokens has its own limit (the
  provider's stall timeout): a provider that goes quiet mid-reply fails the call promptly instead of
  at the HTTP read timeout.
- **Circuit breaker.** A failure (error, first-token timeout, stall, mid-reply failure) counts
  against the provider; a completed reply resets it; a cancelled attempt counts neither way, and
  neither does an attempt that only waited in this gateway's own queue (outcome "busy": the
  provider is saturated by us, not broken).
- The caller going away (generator closed or cancelled) cancels and awaits every running attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from voxline.common.errors import DependencyUnavailable
from voxline.llm.breaker import CircuitBreaker, TtftStats
from voxline.llm.chat import AttemptRecord, ChatRequest, Finish, ToolCallDelta, Usage
from voxline.llm.provider import (
    AttemptProgress,
    ChatProvider,
    ProviderError,
    current_attempt,
    supports_tools,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HedgePolicy:
    """When to start a hedge request. ``fixed_ms`` None means automatic (from recent TTFTs)."""

    enabled: bool = True
    fixed_ms: float | None = None
    percentile: float = 90.0
    floor_ms: float = 50.0
    ceiling_ms: float = 1000.0
    #: Fewer samples than this: use the ceiling.
    min_samples: int = 5

    def delay_ms(self, stats: TtftStats) -> float | None:
        """The hedge delay for a provider with these recent TTFTs (None: never hedge)."""
        if not self.enabled:
            return None
        if self.fixed_ms is not None:
            return self.fixed_ms
        value = stats.percentile(self.percentile) if len(stats) >= self.min_samples else None
        if value is None:
            return self.ceiling_ms
        return min(self.ceiling_ms, max(self.floor_ms, value))


@dataclass
class RouteResult:
    """What the router reports after the last delta."""

    provider: str
    model: str
    finish: Finish
    time_to_first_token_ms: float
    hedged: bool
    attempts: tuple[AttemptRecord, ...]


@dataclass(eq=False)
class _Attempt:
    provider: ChatProvider
    started: float
    hedge: bool
    task: asyncio.Task[None] | None = None
    outcome: str = "running"
    reason: str = ""
    produced: bool = False

    def record(self) -> AttemptRecord:
        return AttemptRecord(self.provider.name, self.outcome, self.reason)


@dataclass
class _Event:
    attempt: _Attempt
    item: str | ToolCallDelta | Finish | None = None
    error: str = ""
    #: False when the failure is our own saturation, not the provider's (breaker not charged).
    counts: bool = True


@dataclass
class ProviderState:
    """The router's per-provider bookkeeping."""

    breaker: CircuitBreaker
    ttft: TtftStats = field(default_factory=TtftStats)
    first_token_timeout_s: float = 5.0
    stall_timeout_s: float = 30.0


class Router:
    """Runs requests over provider chains; holds the breakers and TTFT statistics."""

    def __init__(self, providers: Sequence[ChatProvider], states: dict[str, ProviderState],
                 hedge: HedgePolicy) -> None:
        self.providers = {p.name: p for p in providers}
        self.states = states
        self.hedge = hedge

    async def route(self, request: ChatRequest, chain: Sequence[ChatProvider],
                    started: float | None = None
                    ) -> AsyncGenerator[str | ToolCallDelta | RouteResult, None]:
        """Text and tool-call deltas from the winning provider, then one RouteResult. Raises
        DependencyUnavailable.

        ``started`` (a ``time.perf_counter()`` value) is when the request arrived; time to first
        token is measured from it.
        """
        run = _Run(self, request, chain, started)
        try:
            async with contextlib.aclosing(run.events()) as events:
                async for item in events:
                    yield item
        finally:
            await run.shutdown()


class _Run:
    """One request's race over the chain."""

    def __init__(self, router: Router, request: ChatRequest, chain: Sequence[ChatProvider],
                 started: float | None) -> None:
        self.router = router
        self.request = request
        self.pending = list(chain)
        self.attempts: list[_Attempt] = []
        self.running: list[_Attempt] = []
        self.queue: asyncio.Queue[_Event] = asyncio.Queue()
        self.winner: _Attempt | None = None
        self.hedged = False
        self.started = time.perf_counter() if started is None else started

    def _launch_next(self, hedge: bool) -> bool:
        """Start the next provider whose circuit allows it; False when none is left."""
        while self.pending:
            provider = self.pending.pop(0)
            state = self.router.states[provider.name]
            if not provider.available:
                self.attempts.append(_Attempt(provider, time.perf_counter(), hedge, outcome="skipped",
                                              reason=provider.unavailable_reason))
                continue
            if self.request.uses_tools and not supports_tools(provider):
                self.attempts.append(_Attempt(provider, time.perf_counter(), hedge, outcome="skipped",
                                              reason="does not support tools"))
                continue
            if not state.breaker.try_acquire():
                attempt = _Attempt(provider, time.perf_counter(), hedge, outcome="skipped",
                                   reason=f"circuit open, retry in {state.breaker.retry_in_s():.1f} s")
                self.attempts.append(attempt)
                continue
            attempt = _Attempt(provider, time.perf_counter(), hedge)
            attempt.task = asyncio.create_task(
                self._drive(attempt, state.first_token_timeout_s, state.stall_timeout_s),
                name=f"llm-attempt-{provider.name}")
            self.attempts.append(attempt)
            self.running.append(attempt)
            self.hedged = self.hedged or hedge
            return True
        return False

    def _hedge_timeout(self) -> float | None:
        """Seconds until the hedge should start, or None when no hedge is due."""
        if self.winner is not None or len(self.running) != 1 or not self.pending:
            return None
        primary = self.running[0]
        delay_ms = self.router.hedge.delay_ms(self.router.states[primary.provider.name].ttft)
        if delay_ms is None:
            return None
        return max(0.0, primary.started + delay_ms / 1000.0 - time.perf_counter())

    async def _drive(self, attempt: _Attempt, first_token_timeout_s: float,
                     stall_timeout_s: float) -> None:
        """Run one provider, turning everything it does into events on the queue."""
        put = self.queue.put_nowait
        loop = asyncio.get_running_loop()
        progress = AttemptProgress()
        current_attempt.set(progress)  # this task's own context: seen by the provider's stream
        deadline = asyncio.timeout(first_token_timeout_s)
        try:
            async with deadline, contextlib.aclosing(attempt.provider.stream(self.request)) as stream:
                async for item in stream:
                    if isinstance(item, ToolCallDelta):
                        attempt.produced = True
                        deadline.reschedule(loop.time() + stall_timeout_s)
                    elif isinstance(item, str):
                        if not item:
                            continue
                        attempt.produced = True
                        deadline.reschedule(loop.time() + stall_timeout_s)
                    put(_Event(attempt, item))
                    if isinstance(item, Finish):
                        return
            put(_Event(attempt, error="stream ended without a finish"))
        except TimeoutError:
            if not deadline.expired():
                put(_Event(attempt, error="timed out"))
            elif attempt.produced:
                put(_Event(attempt, error=f"stalled: no token for {stall_timeout_s * 1000:.0f} ms"))
            elif progress.waiting_for_capacity:
                put(_Event(attempt, counts=False, error=(
                    f"busy: still queued for the model after {first_token_timeout_s * 1000:.0f} ms")))
            else:
                put(_Event(attempt, error=f"no first token within {first_token_timeout_s * 1000:.0f} ms"))
        except ProviderError as exc:
            put(_Event(attempt, error=exc.reason, counts=exc.counts_against_provider))
        except Exception as exc:  # a provider bug must not take the request down silently
            log.warning("provider raised unexpectedly", exc_info=exc,
                        extra={"provider": attempt.provider.name})
            put(_Event(attempt, error=f"unexpected {type(exc).__name__}"))

    def _cancel(self, attempt: _Attempt, reason: str) -> None:
        if attempt.task is not None and not attempt.task.done():
            attempt.task.cancel()
        attempt.outcome, attempt.reason = "cancelled", reason
        self.router.states[attempt.provider.name].breaker.release()
        if attempt in self.running:
            self.running.remove(attempt)

    def _fail(self, attempt: _Attempt, reason: str, counts: bool = True) -> None:
        breaker = self.router.states[attempt.provider.name].breaker
        if counts:
            attempt.outcome, attempt.reason = "failed", reason
            breaker.record_failure()
        else:
            attempt.outcome, attempt.reason = "busy", reason
            breaker.release()
        if attempt in self.running:
            self.running.remove(attempt)
        log.info("provider attempt failed", extra={"provider": attempt.provider.name, "reason": reason})

    def _all_failed(self) -> DependencyUnavailable:
        reasons = "; ".join(f"{a.provider.name}: {a.outcome} ({a.reason})" for a in self.attempts)
        return DependencyUnavailable(f"every LLM provider failed: {reasons}")

    async def events(self) -> AsyncGenerator[str | ToolCallDelta | RouteResult, None]:
        if not self._launch_next(hedge=False):
            raise self._all_failed()
        sent_chars = 0
        first_token_ms = 0.0
        while True:
            try:
                async with asyncio.timeout(self._hedge_timeout()):
                    event = await self.queue.get()
            except TimeoutError:
                self._launch_next(hedge=True)
                continue
            attempt = event.attempt
            if attempt.outcome != "running":
                continue  # a late event from a cancelled loser
            if event.error:
                if attempt is self.winner:
                    self._fail(attempt, event.error)
                    raise DependencyUnavailable(
                        f"{attempt.provider.name} failed mid-reply after sending {sent_chars} "
                        f"characters ({event.error}); the reply is incomplete")
                self._fail(attempt, event.error, event.counts)
                if not self.running and not self._launch_next(hedge=False):
                    raise self._all_failed()
                continue
            if self.winner is None:
                if isinstance(event.item, Finish):
                    # Finished without a single character: useless to a voice turn.
                    self._fail(attempt, f"empty reply (finish_reason={event.item.finish_reason})")
                    if not self.running and not self._launch_next(hedge=False):
                        raise self._all_failed()
                    continue
                self.winner = attempt
                now = time.perf_counter()
                first_token_ms = (now - self.started) * 1000.0
                state = self.router.states[attempt.provider.name]
                state.ttft.add((now - attempt.started) * 1000.0)
                for other in list(self.running):
                    if other is not attempt:
                        self._cancel(other, f"lost the race to {attempt.provider.name}")
            if isinstance(event.item, str):
                sent_chars += len(event.item)
                yield event.item
                continue
            if isinstance(event.item, ToolCallDelta):
                yield event.item
                continue
            finish = event.item if isinstance(event.item, Finish) else Finish(usage=Usage())
            attempt.outcome = "won"
            self.running.remove(attempt)
            self.router.states[attempt.provider.name].breaker.record_success()
            yield RouteResult(provider=attempt.provider.name,
                              model=finish.model or attempt.provider.model, finish=finish,
                              time_to_first_token_ms=first_token_ms, hedged=self.hedged,
                              attempts=tuple(a.record() for a in self.attempts))
            return

    async def shutdown(self) -> None:
        """Cancel whatever still runs (caller gone, error) and wait for it to stop."""
        for attempt in list(self.running):
            self._cancel(attempt, "the call ended")
        tasks = [a.task for a in self.attempts if a.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
