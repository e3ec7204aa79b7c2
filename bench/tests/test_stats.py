"""The benchmark's statistics on fixed inputs with exact expected values (no timing involved)."""

from __future__ import annotations

import math

import pytest

from bench import stats


def test_percentile_interpolates_linearly_like_numpy() -> None:
    values = [15.0, 20.0, 35.0, 40.0, 50.0]
    assert stats.percentile(values, 0) == 15.0
    assert stats.percentile(values, 100) == 50.0
    assert stats.percentile(values, 50) == 35.0
    # rank (5 - 1) * 0.4 = 1.6 → 20 + 0.6 * (35 - 20) = 29
    assert stats.percentile(values, 40) == pytest.approx(29.0)
    # rank 4 * 0.95 = 3.8 → 40 + 0.8 * 10 = 48
    assert stats.percentile(values, 95) == pytest.approx(48.0)
    # unsorted input and NaN are handled
    assert stats.percentile([50.0, math.nan, 15.0, 40.0, 20.0, 35.0], 95) == pytest.approx(48.0)


def test_percentile_edge_cases() -> None:
    assert math.isnan(stats.percentile([], 50))
    assert math.isnan(stats.percentile([math.nan], 50))
    assert stats.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


def test_p99_of_1_to_100() -> None:
    values = [float(v) for v in range(1, 101)]
    # rank 99 * 0.99 = 98.01 → 99 + 0.01 * (100 - 99)
    assert stats.percentile(values, 99) == pytest.approx(99.01)
    assert stats.percentile(values, 50) == pytest.approx(50.5)


def test_mean_and_summary() -> None:
    assert stats.mean([1.0, 2.0, 6.0]) == 3.0
    assert stats.mean([1.0, math.nan, 5.0]) == 3.0
    assert math.isnan(stats.mean([]))
    s = stats.summary([10.0, 30.0, 20.0, math.nan])
    assert s == {"n": 3.0, "avg": 20.0, "min": 10.0, "max": 30.0, "p50": 20.0,
                 "p95": pytest.approx(29.0), "p99": pytest.approx(29.8)}


def test_pass_rate_is_strictly_below_target_and_nan_fails() -> None:
    rate = stats.pass_rate([400.0, 500.0, 499.9, math.nan, 658.0], 500.0)
    assert (rate.passed, rate.runs) == (2, 5)
    assert rate.fraction == pytest.approx(0.4)
    assert str(rate) == "2/5 (40%)"
    assert str(stats.pass_rate([], 500.0)) == "0/0"


def test_ratios() -> None:
    assert stats.ratio(658.0, 329.0) == 2.0
    assert math.isnan(stats.ratio(1.0, 0.0))
    assert math.isnan(stats.ratio(math.nan, 2.0))
    assert stats.paired_ratios([600.0, 900.0], [200.0, 450.0]) == [3.0, 2.0]
    with pytest.raises(ValueError):
        stats.paired_ratios([1.0], [1.0, 2.0])


def test_scaling_efficiency() -> None:
    assert stats.scaling_efficiency([1, 2, 4], [2.0, 4.0, 6.0]) == [1.0, 1.0, 0.75]


def test_find_bend() -> None:
    levels = [1, 2, 4, 8, 16]
    # linear to 4, then +10 % for twice the sessions: bends at 4
    assert stats.find_bend(levels, [1.0, 2.0, 4.0, 4.4, 4.5]) == 4
    # 1 → 2 gains 40 % for +100 % sessions: below half of proportional, bends at 1
    assert stats.find_bend(levels[:3], [10.0, 14.0, 15.0]) == 1
    # exactly half the proportional gain is not a bend (strictly less)
    assert stats.find_bend([1, 2], [10.0, 15.0]) is None
    # linear all along: no bend
    assert stats.find_bend(levels, [1.0, 2.0, 4.0, 8.0, 16.0]) is None
    # throughput falling counts as a bend
    assert stats.find_bend([1, 2, 4], [3.0, 5.9, 5.0]) == 2
    with pytest.raises(ValueError):
        stats.find_bend([2, 1], [1.0, 1.0])


def test_proc_parsing() -> None:
    # comm with spaces and a ')' inside: fields are counted from the last ')'
    line = ("1234 (python -m (x)) S 1 1234 1234 0 -1 4194304 100 0 0 0 "
            "250 75 0 0 20 0 3 0 5000 100000 2000 18446744073709551615")
    assert stats.parse_proc_stat_ticks(line) == 325
    status = "Name:\tpython\nVmPeak:\t  900 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  1000 kB\n"
    assert stats.parse_vm_hwm_kib(status) == 204800
    with pytest.raises(ValueError):
        stats.parse_vm_hwm_kib("Name:\tx\n")
    assert stats.cores_used(1000, 1300, 2.0, 100) == 1.5
    assert math.isnan(stats.cores_used(0, 1, 0.0, 100))


def test_saturated_resource() -> None:
    # the machine busy and our processes using most of it: machine CPU, busiest named
    assert stats.saturated_resource({"stt": 0.9, "llm": 0.8, "machine_busy_fraction": 0.95}, 2) == \
        ("machine_cpu", "stt")
    # one process at a full core while the machine has room
    assert stats.saturated_resource({"orchestrator": 0.97, "client": 0.3, "machine_busy_fraction": 0.6}, 4) \
        == ("one_core", "orchestrator")
    # one stage does most of the stack's work, under a core because others load the machine
    assert stats.saturated_resource({"llm": 0.70, "stt": 0.25, "orchestrator": 0.01,
                                     "machine_busy_fraction": 0.95}, 2) == ("stage", "llm")
    # a whole core in one process on a busy machine where it dominates: the stage
    assert stats.saturated_resource({"orchestrator": 0.95, "client": 0.2, "machine_busy_fraction": 0.97}, 2) \
        == ("stage", "orchestrator")
    # busy machine, but not because of us
    assert stats.saturated_resource({"orchestrator": 0.2, "machine_busy_fraction": 0.99}, 2) == \
        ("other_load", "orchestrator")
    # nothing busy: waiting
    assert stats.saturated_resource({"llm": 0.1, "machine_busy_fraction": 0.2}, 2) == ("waiting", "llm")
