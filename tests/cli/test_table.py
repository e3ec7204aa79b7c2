"""LatencyTable statistics on fixed numbers (the benchmarks reuse them)."""

from __future__ import annotations

import math

import pytest

from voxline.cli.table import LatencyRow, LatencyTable, PassRate, mean, percentile, render_baseline

NAN = math.nan


def row(label: str, stt: float, ttfa: float, total: float) -> LatencyRow:
    return LatencyRow(label, stt_ms=stt, llm_ttft_ms=100.0, llm_total_ms=400.0, tts_ms=50.0,
                      time_to_first_audio_ms=ttfa, total_ms=total)


@pytest.fixture
def table() -> LatencyTable:
    return LatencyTable(
        rows=[
            row("1", 20.0, 300.0, 600.0),
            row("2", 30.0, 450.0, 480.0),
            row("3", NAN, 500.0, 900.0),  # a text turn: no STT
            row("4", 40.0, 700.0, 1200.0),
            row("5", 30.0, 1000.0, 2000.0),
        ],
        target_ms=500.0,
    )


def test_avg_min_max_ignore_missing_figures(table: LatencyTable) -> None:
    assert table.avg("time_to_first_audio_ms") == pytest.approx(590.0)
    assert table.min("time_to_first_audio_ms") == 300.0
    assert table.max("time_to_first_audio_ms") == 1000.0
    assert table.avg("stt_ms") == pytest.approx(30.0)  # (20 + 30 + 40 + 30) / 4
    assert table.min("stt_ms") == 20.0
    assert table.max("stt_ms") == 40.0


def test_p95_interpolates_between_closest_ranks(table: LatencyTable) -> None:
    # sorted 300 450 500 700 1000; rank (5 - 1) * 0.95 = 3.8 → 700 + 0.8 * 300
    assert table.p95("time_to_first_audio_ms") == pytest.approx(940.0)
    assert table.p95("total_ms") == pytest.approx(1200.0 + 0.8 * 800.0)


def test_pass_rate_is_strictly_under_the_target(table: LatencyTable) -> None:
    # 500 ms exactly does not pass ("< 500 ms", as the baseline counted).
    assert table.pass_rate("time_to_first_audio_ms") == PassRate(2, 5)
    assert table.pass_rate("total_ms") == PassRate(1, 5)
    assert str(table.pass_rate()) == "2/5 (40%)"
    assert table.pass_rate().fraction == pytest.approx(0.4)


def test_a_run_without_the_figure_fails_the_target() -> None:
    table = LatencyTable([row("1", 10.0, NAN, 300.0), row("2", 10.0, 200.0, 300.0)], target_ms=250.0)
    assert table.pass_rate("time_to_first_audio_ms") == PassRate(1, 2)


def test_pure_helpers_on_edge_cases() -> None:
    assert percentile([42.0], 95) == 42.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0], 0) == 1.0 and percentile([1.0, 2.0], 100) == 2.0
    assert math.isnan(percentile([], 95))
    assert math.isnan(mean([NAN]))
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)
    empty = LatencyTable()
    assert math.isnan(empty.avg("total_ms")) and math.isnan(empty.max("total_ms"))
    assert str(empty.pass_rate()) == "0/0"
    with pytest.raises(KeyError):
        empty.column("latency")


def test_rows_from_turn_metrics_and_from_turn_span_attributes() -> None:
    from_metrics = LatencyRow.from_metrics("1", {
        "stt_ms": 21.5, "llm_ttft_ms": 80.0, "llm_total_ms": 300.0, "tts_first_audio_ms": 40.0,
        "time_to_first_audio_ms": 160.0, "total_ms": 700.0, "trace_id": "ab", "cache_hit": False})
    from_span = LatencyRow.from_metrics("1", {
        "voxline.stt_ms": 21.5, "voxline.llm.ttft_ms": 80.0, "voxline.llm.total_ms": 300.0,
        "voxline.tts.first_audio_ms": 40.0, "voxline.time_to_first_audio_ms": 160.0,
        "voxline.total_ms": 700.0, "voxline.llm.cache_hit": True})
    assert from_metrics == from_span
    assert from_span.tts_ms == 40.0
    assert math.isnan(LatencyRow.from_metrics("x", {"stt_ms": True}).stt_ms)  # a bool is no figure
    # A failed turn's metrics leave the audio figures unset (0): they count as missing, not as 0 ms.
    failed = LatencyRow.from_metrics("x", {"stt_ms": 20.0, "time_to_first_audio_ms": 0.0, "total_ms": 900.0})
    assert math.isnan(failed.time_to_first_audio_ms)
    assert LatencyTable([failed]).pass_rate().passed == 0


def test_render_shows_rows_statistics_and_both_pass_rates(table: LatencyTable) -> None:
    text = table.render("demo")
    lines = text.splitlines()
    assert lines[0] == "demo"
    header = next(line for line in lines if line.startswith("run"))
    for heading in ("STT", "LLM 1st tok", "LLM total", "TTS 1st aud", "1st audio", "total"):
        assert heading in header
    avg = next(line for line in lines if line.startswith("AVG")).split()
    assert avg == ["AVG", "30", "100", "400", "50", "590", "1036"]
    assert next(line for line in lines if line.startswith("3 ")).split()[1] == "-"  # no STT figure
    assert "time to first audio < 500 ms: 2/5 (40%)" in text
    assert "total turn      < 500 ms: 1/5 (20%)" in text
    for label in ("MIN", "MAX", "P95"):
        assert any(line.startswith(label) for line in lines)


def test_baseline_figures() -> None:
    text = render_baseline()
    for figure in ("STT 25 ms", "LLM 442 ms", "TTS 115 ms", "total 658 ms", "4/10 (40%)"):
        assert figure in text


def test_a_turn_that_did_not_complete_never_passes() -> None:
    failed = LatencyRow.from_metrics("2 (failed)", {"voxline.turn.status": "failed", "voxline.total_ms": 5.0})
    assert not failed.completed and failed.total_ms == 5.0
    assert LatencyRow.from_metrics("1", {"status": 1, "total_ms": 400.0}).completed  # TurnMetrics
    assert not LatencyRow.from_metrics("3", {"status": 3, "total_ms": 1.0}).completed
    table = LatencyTable(rows=[row("1", 20.0, 300.0, 450.0), failed], target_ms=500.0)
    assert str(table.pass_rate("total_ms")) == "1/2 (50%)"  # the 5 ms failure does not pass
