"""LLM latency tail: one provider vs fallback-only vs hedged, and the reply cache, side by side.

Two in-process fake providers sit behind the gateway's provider Protocol and replay the baseline's
time to first token (Groq llama-3.1-8b-instant: 165 to 800 ms, mean 442 ms). The distribution is a
seeded **triangular(min=165, mode=361, max=800)**: the simplest bounded law whose minimum, maximum and
mean (165 + 361 + 800) / 3 = 442 ms match the baseline exactly (the baseline gave no percentiles).
Each provider also fails fast (a 429 after 20-80 ms) with probability ``--error-rate`` and hangs
(until the router's first-token timeout) with probability ``--hang-rate``, because fallback only
matters when something fails.

The real engine and router run every request (validation, breaker, hedging, cancellation), with
``--scale`` shrinking every delay and timeout (0.1: ten times faster); reported figures are divided
by the scale, i.e. in baseline milliseconds. Asyncio timer granularity (~1 ms real) is magnified by
1/scale, so small scales add a few ms of noise. Each routed scenario starts with 20 untimed requests
so automatic hedge delays have recent TTFTs to work from.

    .venv/bin/python bench/llm_tail.py --requests 300 --scale 0.1

``run_tail_bench()`` returns the figures (for ``voxline bench``); ``format_table()`` prints them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import random
import statistics
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from voxline.common.errors import VoxlineError
from voxline.llm.cache import ReplyCache
from voxline.llm.chat import ChatRequest, Finish, Message, Summary, Usage
from voxline.llm.config import LlmConfig
from voxline.llm.engine import LanguageModelEngine
from voxline.llm.provider import ProviderError

TTFT_MIN_MS, TTFT_MODE_MS, TTFT_MAX_MS = 165.0, 361.0, 800.0
FIRST_TOKEN_TIMEOUT_MS = 1000.0
_WARM_UP_REQUESTS = 20
_TOKENS = ("Bien", " sûr", " !", " Voici", " la", " réponse", ".")


class ReplayProvider:
    """A fake provider replaying the baseline's TTFT distribution, with seeded failures."""

    def __init__(self, name: str, seed: int, scale: float, error_rate: float, hang_rate: float) -> None:
        self.name = name
        self.model = f"{name}-replay"
        self._rng = random.Random(seed)
        self._scale = scale
        self._error_rate = error_rate
        self._hang_rate = hang_rate

    @property
    def available(self) -> bool:
        return True

    @property
    def unavailable_reason(self) -> str:
        return ""

    async def warm_up(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str | Finish, None]:
        draw = self._rng.random()
        ttft_ms = self._rng.triangular(TTFT_MIN_MS, TTFT_MAX_MS, TTFT_MODE_MS)
        if draw < self._error_rate:
            await asyncio.sleep(self._rng.uniform(20.0, 80.0) / 1000.0 * self._scale)
            raise ProviderError("HTTP 429 (replayed)")
        if draw < self._error_rate + self._hang_rate:
            await asyncio.Event().wait()  # until the router gives up on it
        await asyncio.sleep(ttft_ms / 1000.0 * self._scale)
        for token in _TOKENS:
            yield token
        yield Finish("stop", Usage(10, len(_TOKENS)), self.model)


@dataclass(frozen=True)
class Row:
    """One scenario's figures, in baseline (unscaled) milliseconds."""

    scenario: str
    requests: int
    ok_pct: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    hedged_pct: float


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100.0 * len(ordered) + 0.5) - 1))]


_REQUEST = ChatRequest(messages=(Message("user", "Peux-tu m'expliquer la photosynthèse ?"),),
                       no_cache=True)


async def _one(engine: LanguageModelEngine) -> Summary | None:
    try:
        async with contextlib.aclosing(engine.generate(_REQUEST)) as stream:
            async for item in stream:
                if isinstance(item, Summary):
                    return item
    except VoxlineError:
        return None
    return None


async def _scenario(name: str, chain: tuple[str, ...], hedge_delay: str, percentile: float,
                    requests: int, scale: float, seed: int, concurrency: int, error_rate: float,
                    hang_rate: float) -> Row:
    providers = [ReplayProvider(n, seed + i, scale, error_rate, hang_rate) for i, n in enumerate(chain)]
    config = LlmConfig(
        providers=chain, local_model="none", hedge_delay=hedge_delay, hedge_percentile=percentile,
        hedge_floor_ms=50.0 * scale, hedge_ceiling_ms=1000.0 * scale,
        ttft_timeout_ms=(("*", FIRST_TOKEN_TIMEOUT_MS * scale),),
        # a bench of the tail, not of the breaker: keep circuits closed
        breaker_failures=10**6, max_concurrent=concurrency, max_queued=requests)
    if hedge_delay not in ("auto", "off"):
        config = dataclasses.replace(config, hedge_delay=str(float(hedge_delay) * scale))
    engine = LanguageModelEngine(providers, config)
    gate = asyncio.Semaphore(concurrency)

    async def limited() -> Summary | None:
        async with gate:
            return await _one(engine)

    for _ in range(_WARM_UP_REQUESTS):
        await _one(engine)
    summaries = await asyncio.gather(*(limited() for _ in range(requests)))
    done = [s for s in summaries if s is not None]
    ttfts = [s.time_to_first_token_ms / scale for s in done]
    return Row(scenario=name, requests=requests, ok_pct=100.0 * len(done) / requests,
               p50_ms=_pct(ttfts, 50), p95_ms=_pct(ttfts, 95), p99_ms=_pct(ttfts, 99),
               hedged_pct=100.0 * sum(s.hedged for s in done) / max(1, len(done)))


async def _cache_row(requests: int) -> Row:
    """Service time of a cache hit (not scaled: no provider is involved)."""
    config = LlmConfig(providers=("a",), local_model="none")
    cache = ReplyCache(phrasebook={"salut": "Salut ! Comment puis-je t'aider ?"})
    engine = LanguageModelEngine([ReplayProvider("a", 0, 1.0, 0.0, 0.0)], config, cache)
    request = ChatRequest(messages=(Message("user", "Salut !"),))
    totals = []
    for _ in range(max(requests, 1000)):
        async for item in engine.generate(request):
            if isinstance(item, Summary):
                assert item.cache_hit
                totals.append(item.total_ms)
    return Row("cache hit (service time)", len(totals), 100.0, _pct(totals, 50), _pct(totals, 95),
               _pct(totals, 99), 0.0)


async def run_tail_bench(requests: int = 300, scale: float = 1.0, seed: int = 7, concurrency: int = 32,
                         error_rate: float = 0.03, hang_rate: float = 0.02) -> list[Row]:
    """Run every scenario one after the other on this event loop; return one Row each."""
    async def scenario(name: str, chain: tuple[str, ...], hedge_delay: str, percentile: float) -> Row:
        return await _scenario(name, chain, hedge_delay, percentile, requests, scale, seed,
                               concurrency, error_rate, hang_rate)

    rows = [
        await scenario("single provider", ("a",), "off", 90.0),
        await scenario("fallback only", ("a", "b"), "off", 90.0),
        await scenario("hedged, auto p90", ("a", "b"), "auto", 90.0),
        await scenario("hedged, auto p50", ("a", "b"), "auto", 50.0),
        await scenario("hedged, fixed 300 ms", ("a", "b"), "300", 90.0),
    ]
    rows.append(await _cache_row(requests))
    return rows


def format_table(rows: list[Row]) -> str:
    """The rows as an aligned text table (TTFT in baseline ms; the cache row: total service ms)."""
    lines = [f"{'scenario':<26} {'n':>5} {'ok %':>6} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} "
             f"{'hedged %':>9}"]
    for r in rows:
        number = "{:>9.3f}" if r.p99_ms < 10 else "{:>9.0f}"
        lines.append(f"{r.scenario:<26} {r.requests:>5} {r.ok_pct:>6.1f} "
                     + " ".join(number.format(v) for v in (r.p50_ms, r.p95_ms, r.p99_ms))
                     + f" {r.hedged_pct:>9.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=300, help="timed requests per scenario")
    parser.add_argument("--scale", type=float, default=1.0, help="time scale (0.1 runs 10x faster)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--error-rate", type=float, default=0.03, help="fast 429s per provider call")
    parser.add_argument("--hang-rate", type=float, default=0.02, help="hangs per provider call")
    args = parser.parse_args()
    if not 0 < args.scale <= 10 or args.requests < 1:
        parser.error("--scale must be in (0, 10] and --requests >= 1")
    started = time.perf_counter()
    rows = asyncio.run(run_tail_bench(args.requests, args.scale, args.seed, args.concurrency,
                                      args.error_rate, args.hang_rate))
    print(f"LLM time to first token, baseline distribution triangular({TTFT_MIN_MS:.0f}, "
          f"{TTFT_MODE_MS:.0f}, {TTFT_MAX_MS:.0f}) ms (mean 442), error rate {args.error_rate:.0%}, "
          f"hang rate {args.hang_rate:.0%}, first-token timeout {FIRST_TOKEN_TIMEOUT_MS:.0f} ms, "
          f"scale {args.scale}")
    print(format_table(rows))
    print(f"(ok % counts replies; percentiles are over successful replies; "
          f"mean single-provider TTFT {statistics.fmean([TTFT_MIN_MS, TTFT_MODE_MS, TTFT_MAX_MS]):.0f} "
          f"ms by construction; ran in {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
