"""Helpers for sections whose core lives in another bench module, and section 6 (bench/gpu.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from bench.suite.core import ROOT, Context, SectionResult

STT_TITLE = "2. STT in memory vs through a temp file"
LLM_TITLE = "3. LLM tail: single provider vs fallback vs hedged; cache hit"
OVERHEAD_TITLE = "4. Orchestrator overhead per turn"
GPU_TITLE = "6. GPU: STT and TTS on CUDA (bench/gpu.py)"


def find_core(module_name: str, candidates: tuple[str, ...]) -> tuple[Callable[..., Any] | None, str]:
    """The module's core function (first candidate name present), or None and why not."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return None, f"{module_name} cannot be imported ({exc})"
    for name in candidates:
        fn = getattr(module, name, None)
        if callable(fn):
            return fn, ""
    return None, f"{module_name} has none of the expected core functions {', '.join(candidates)}"


def run_gpu(ctx: Context) -> SectionResult:
    """Section 6: run bench/gpu.py here; on a machine without CUDA it says so and exits 0."""
    result = SectionResult("gpu", GPU_TITLE)
    cmd = [sys.executable, str(ROOT / "bench" / "gpu.py"), "--runs", str(ctx.mode.gpu_runs)]
    result.setup = [f"machine: {ctx.machine_line}",
                    f"command: python3 bench/gpu.py --runs {ctx.mode.gpu_runs} (standalone: torch + "
                    "transformers only; faster-whisper tiny/base on cuda float16 when ctranslate2 with "
                    "CUDA loads, else a random-weight Whisper of the same size; MMS-TTS fra config VITS "
                    "with random weights)"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    except subprocess.TimeoutExpired:
        result.status = "failed: bench/gpu.py ran over 900 s"
        result.body = [result.status]
        return result
    output = proc.stdout.strip()
    skipped = output.startswith("skipped:")
    result.figures = {"returncode": proc.returncode, "skipped": skipped, "output": output}
    if proc.returncode != 0:
        result.status = f"failed: bench/gpu.py exited {proc.returncode}"
        output += "\n" + proc.stderr.strip()[-2000:]
    result.body = [
        "No CUDA GPU on this machine: the script skipped itself (exit 0). Run `python3 bench/gpu.py` on a "
        "GPU machine for STT/TTS figures comparable to the baseline's (25 ms STT, 115 ms TTS on an RTX 4090)."
        if skipped else "Output of bench/gpu.py:", "", "```", output, "```"]
    ctx.echo(output)
    return result
