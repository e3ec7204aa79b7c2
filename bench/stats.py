"""The benchmark's statistics: pure functions of numbers (no I/O, no timing), unit tested exactly.

Mean, percentile and the PassRate record are ``voxline.cli.table``'s (linear interpolation between
closest ranks, numpy's default), so figures in the bench report and in ``voxline report`` agree;
here they also drop infinities, not only NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from voxline.cli import table
from voxline.cli.table import PassRate

__all__ = ["PassRate"]  # re-exported: ``pass_rate`` returns it


def finite(values: Iterable[float]) -> list[float]:
    """The values that are numbers (NaN and infinities dropped)."""
    return [float(v) for v in values if math.isfinite(v)]


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean of the finite values; NaN when there are none."""
    return table.mean(finite(values))


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) of the finite values, linear interpolation; NaN when empty."""
    return table.percentile(finite(values), q)


def summary(values: Iterable[float]) -> dict[str, float]:
    """n, avg, min, max, p50, p95, p99 of the finite values (NaN figures when there are none)."""
    kept = finite(values)
    return {
        "n": float(len(kept)),
        "avg": mean(kept),
        "min": min(kept) if kept else math.nan,
        "max": max(kept) if kept else math.nan,
        "p50": percentile(kept, 50.0),
        "p95": percentile(kept, 95.0),
        "p99": percentile(kept, 99.0),
    }


def pass_rate(values: Sequence[float], target: float) -> PassRate:
    """How many of ``values`` are strictly below ``target`` (the baseline's "< 500 ms")."""
    passed = sum(1 for v in values if math.isfinite(v) and v < target)
    return PassRate(passed, len(values))


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; NaN when either is not finite or the denominator is 0."""
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator == 0:
        return math.nan
    return numerator / denominator


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Run-by-run ratios of two equally long series (NaN where a ratio is undefined)."""
    if len(numerators) != len(denominators):
        raise ValueError(f"series differ in length: {len(numerators)} vs {len(denominators)}")
    return [ratio(a, b) for a, b in zip(numerators, denominators, strict=True)]


def scaling_efficiency(levels: Sequence[int], throughput: Sequence[float]) -> list[float]:
    """Throughput relative to perfect linear scaling from the first level: 1.0 = linear."""
    if len(levels) != len(throughput) or not levels:
        raise ValueError("levels and throughput must be equally long and non-empty")
    base = throughput[0] / levels[0]
    return [ratio(t, base * n) for n, t in zip(levels, throughput, strict=True)]


def find_bend(levels: Sequence[int], throughput: Sequence[float], gain: float = 0.5) -> int | None:
    """The concurrency level where the throughput curve bends, or None if it never does.

    Going from level a to level b (b > a) should multiply throughput by b/a if nothing saturates.
    The curve bends at the last level a before the first step whose relative throughput gain is
    less than ``gain`` times the relative growth in concurrency:
    ``(t_b - t_a) / t_a < gain * (b - a) / a``. Past that level, adding sessions mostly adds waiting.
    """
    if len(levels) != len(throughput):
        raise ValueError("levels and throughput must be equally long")
    for i in range(1, len(levels)):
        a, b = levels[i - 1], levels[i]
        t_a, t_b = throughput[i - 1], throughput[i]
        if b <= a:
            raise ValueError("levels must increase")
        if t_a <= 0 or not math.isfinite(t_a) or not math.isfinite(t_b):
            return a
        if (t_b - t_a) / t_a < gain * (b - a) / a:
            return a
    return None


def parse_proc_stat_ticks(stat_line: str) -> int:
    """utime + stime (clock ticks, all threads) from the text of ``/proc/<pid>/stat``.

    The command name (field 2) is in parentheses and may contain spaces, so fields are counted from
    the last ')': utime and stime are fields 14 and 15 of the whole line.
    """
    rest = stat_line[stat_line.rindex(")") + 2:].split()
    # rest[0] is field 3 (state), so field k is rest[k - 3].
    return int(rest[14 - 3]) + int(rest[15 - 3])


def parse_vm_hwm_kib(status_text: str) -> int:
    """Peak resident set size (VmHWM, KiB) from the text of ``/proc/<pid>/status``."""
    for line in status_text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise ValueError("no VmHWM line in /proc/<pid>/status text")


def cores_used(ticks_before: int, ticks_after: int, wall_s: float, ticks_per_s: int) -> float:
    """CPU time a process used between two readings, in cores (1.0 = one core busy all along)."""
    if wall_s <= 0:
        return math.nan
    return (ticks_after - ticks_before) / ticks_per_s / wall_s


def saturated_resource(cpu: dict[str, float], cores: int, busy_threshold: float = 0.85,
                       one_core_threshold: float = 0.85, stage_share: float = 0.6) -> tuple[str, str]:
    """Name what limited a concurrency level, from the CPU readings of its window.

    ``cpu`` maps the measured processes to cores used, plus "machine_busy_fraction" (0..1, every
    process on the machine). Returns (kind, busiest measured process), kind being (checked in this
    order: one_core on a machine with room, stage, machine_cpu, one_core, other_load, waiting)
    - "machine_cpu": the machine was at least ``busy_threshold`` busy and the measured processes
      used at least half of its cores: they are queueing for CPU;
    - "one_core": one process used about a whole core (its event loop / GIL-bound thread is full)
      while the machine still had room;
    - "stage": one process did most (``stage_share``) of the measured work, at least half a core,
      while the others idled: that stage is the bottleneck (it serves one request at a time, on as
      many threads as it was given), whatever else loads the machine;
    - "other_load": the machine was busy, but mostly with processes that were not measured;
    - "waiting": nothing is saturated: the limit is fixed waits or a stage that serialises requests.
    """
    procs = sorted(((v, k) for k, v in cpu.items() if k != "machine_busy_fraction"), reverse=True)
    top = procs[0][1] if procs else "?"
    top_cores = procs[0][0] if procs else 0.0
    ours = sum(v for v, _ in procs)
    busy = cpu.get("machine_busy_fraction", math.nan)
    machine_busy = math.isfinite(busy) and busy >= busy_threshold
    if top_cores >= one_core_threshold and not machine_busy:
        return ("one_core", top)
    if top_cores >= 0.5 and top_cores >= stage_share * ours:
        return ("stage", top)
    if machine_busy and ours >= 0.5 * cores:
        return ("machine_cpu", top)
    if top_cores >= one_core_threshold:
        return ("one_core", top)
    if machine_busy:
        return ("other_load", top)
    return ("waiting", top)
