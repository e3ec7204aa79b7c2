"""What the benchmark ran on, and per-process readings from /proc (CPU ticks, peak memory)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import cores_used, parse_proc_stat_ticks, parse_vm_hwm_kib

TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_machine() -> dict[str, Any]:
    """Cores, CPU model, memory, python and torch threads (torch only if it is already importable)."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    try:
        with open("/proc/meminfo") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = "not installed"
    return info


def machine_line(info: Mapping[str, Any]) -> str:
    """One line for a section's setup."""
    return (f"{info.get('cores')} cores ({info.get('cpu_model')}), {info.get('memory_gib', '?')} GiB, "
            f"Python {info.get('python')}, torch {info.get('torch')} with {info.get('torch_threads', '?')} "
            "threads, no GPU used")


def read_ticks(pid: int) -> int | None:
    """utime + stime of a process, clock ticks; None when it is gone."""
    try:
        return parse_proc_stat_ticks(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def read_peak_rss_mib(pid: int) -> float | None:
    """VmHWM (peak resident memory since the process started), MiB; None when it is gone."""
    try:
        return parse_vm_hwm_kib(Path(f"/proc/{pid}/status").read_text()) / 1024.0
    except (OSError, ValueError):
        return None


def read_machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat (busy = total - idle - iowait)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return (0, 0)
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (total - idle, total)


@dataclass
class CpuWindow:
    """CPU used by given processes (and the whole machine) between ``start()`` and ``stop()``."""

    pids: Mapping[str, int]
    _t0: float = 0.0
    _ticks0: dict[str, int | None] | None = None
    _machine0: tuple[int, int] = (0, 0)

    def start(self) -> CpuWindow:
        self._ticks0 = {name: read_ticks(pid) for name, pid in self.pids.items()}
        self._machine0 = read_machine_busy_ticks()
        self._t0 = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        """Cores used per process name, plus "machine_busy_fraction" (0..1, every process on it)."""
        wall = time.monotonic() - self._t0
        assert self._ticks0 is not None, "start() first"
        out: dict[str, float] = {}
        for name, pid in self.pids.items():
            before, after = self._ticks0.get(name), read_ticks(pid)
            if before is not None and after is not None:
                out[name] = cores_used(before, after, wall, TICKS_PER_S)
        busy1, total1 = read_machine_busy_ticks()
        busy0, total0 = self._machine0
        if total1 > total0:
            out["machine_busy_fraction"] = (busy1 - busy0) / (total1 - total0)
        return out
