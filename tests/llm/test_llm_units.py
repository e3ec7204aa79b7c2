"""Pure units of the gateway: configuration parsing, hedge delays, the circuit breaker, the bench."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

from voxline.common.config import ConfigError
from voxline.llm.breaker import CircuitBreaker, TtftStats
from voxline.llm.config import LlmConfig, parse_provider_list, parse_timeouts
from voxline.llm.provider import scrub
from voxline.llm.router import HedgePolicy

ROOT = Path(__file__).resolve().parents[2]


def test_first_token_timeouts_parse_per_provider() -> None:
    table = parse_timeouts("1500, local=20000")
    config = LlmConfig(ttft_timeout_ms=table)
    assert config.first_token_timeout_s("groq") == 1.5 and config.first_token_timeout_s("local") == 20.0
    with pytest.raises(ConfigError, match="unknown provider 'openai'"):
        parse_timeouts("openai=100")
    with pytest.raises(ConfigError, match="positive"):
        parse_timeouts("0")


def test_provider_list_is_validated() -> None:
    assert parse_provider_list("Groq, local") == ("groq", "local")
    with pytest.raises(ConfigError, match="listed twice"):
        parse_provider_list("groq,groq")


def test_auto_hedge_delay_is_a_clamped_percentile() -> None:
    policy = HedgePolicy(percentile=90, floor_ms=50, ceiling_ms=1000, min_samples=5)
    stats = TtftStats()
    assert policy.delay_ms(stats) == 1000  # nothing known yet: the ceiling
    for ms in (100, 200, 300, 400, 500, 600, 700, 800, 900, 5000):
        stats.add(ms)
    assert policy.delay_ms(stats) == 900
    fast = TtftStats()
    for _ in range(10):
        fast.add(5)
    assert policy.delay_ms(fast) == 50  # the floor
    assert HedgePolicy(enabled=False).delay_ms(stats) is None
    assert HedgePolicy(fixed_ms=250).delay_ms(stats) == 250


def test_breaker_half_open_allows_one_trial_and_release_frees_it() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=10, clock=lambda: now[0])
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_success()  # success resets the count
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.try_acquire()
    now[0] = 10.5
    assert breaker.state == "half_open"
    assert breaker.try_acquire() and not breaker.try_acquire()  # one trial at a time
    breaker.release()  # the trial was cancelled (lost a hedge race)
    assert breaker.try_acquire()
    breaker.record_success()
    assert breaker.state == "closed"


def test_scrub_removes_known_and_key_shaped_secrets() -> None:
    text = "bad key gsk_abcdefgh12345678 / Authorization: Bearer xyz.123 / mine=s3cr3t-value"
    cleaned = scrub(text, ["s3cr3t-value"])
    assert "gsk_abcdefgh" not in cleaned and "xyz.123" not in cleaned and "s3cr3t" not in cleaned


def test_tail_bench_reports_every_scenario_side_by_side() -> None:
    spec = importlib.util.spec_from_file_location("llm_tail", ROOT / "bench" / "llm_tail.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["llm_tail"] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    rows = asyncio.run(bench.run_tail_bench(requests=40, scale=0.02, concurrency=40))
    names = [r.scenario for r in rows]
    assert names[:2] == ["single provider", "fallback only"] and names[-1].startswith("cache hit")
    assert any(n.startswith("hedged") for n in names)
    by_name = {r.scenario: r for r in rows}
    assert by_name["fallback only"].ok_pct >= by_name["single provider"].ok_pct
    assert by_name["cache hit (service time)"].p50_ms < 1.0
    assert "p99 ms" in bench.format_table(rows)


def test_phrasebook_loads_from_yaml_and_rejects_bad_files(tmp_path: Path) -> None:
    from voxline.llm.cache import ReplyCache, load_phrasebook

    book = tmp_path / "phrases.yaml"
    book.write_text("salut: Salut !\n\"ça va ?\": Très bien.\n", encoding="utf-8")
    cache = ReplyCache(phrasebook=load_phrasebook(str(book)))
    hit = cache.get("Ça va", "any system prompt", "any chain")
    assert hit is not None and hit.text == "Très bien." and hit.model == "phrasebook"
    bad = tmp_path / "bad.json"
    bad.write_text('["salut"]', encoding="utf-8")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_phrasebook(str(bad))
