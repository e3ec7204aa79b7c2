"""Services as child processes on 127.0.0.1:0, their memory, and a stage restarted on its port."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from voxline.cli.service_process import ServiceProcess


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid``, MB."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 1e6


def start(stage: str, args: Sequence[str], log_dir: Path, name: str = "",
          module: str = "", port: int = 0, timeout_s: float = 600.0) -> ServiceProcess:
    """``python -m <module or voxline.stage> --host 127.0.0.1 --port PORT *args``, SERVING."""
    # a module other than the stage's takes its positional arguments first (fake_stage STAGE)
    head, tail = (list(args[:1]), list(args[1:])) if module else ([], list(args))
    argv = [sys.executable, "-m", module or f"voxline.{stage}", *head,
            "--host", "127.0.0.1", "--port", str(port), *tail]
    log_dir.mkdir(parents=True, exist_ok=True)
    # VOXLINE_PARENT_PID: the service exits with this process, however it ends
    process = ServiceProcess(stage, argv, {"VOXLINE_PARENT_PID": str(os.getpid())},
                             log_path=log_dir / f"{name or stage}.log")
    try:
        process.wait_serving(timeout_s)
    except BaseException:
        process.stop(timeout=5)
        raise
    return process


def fake_stage(stage: str, log_dir: Path, port: int = 0, name: str = "") -> ServiceProcess:
    """A ``voxline.testing.fake_stage`` process (the bench's fixed costs)."""
    from bench.suite.stacks import FAKE_COSTS

    costs = {"stt": ["--stt-ms", str(FAKE_COSTS["stt_ms"])],
             "llm": ["--llm-ttft-ms", str(FAKE_COSTS["llm_ttft_ms"]),
                     "--llm-token-ms", str(FAKE_COSTS["llm_token_ms"])],
             "tts": ["--tts-ms", str(FAKE_COSTS["tts_ms"])]}[stage]
    return start(stage, [stage, *costs], log_dir, name or f"fake-{stage}",
                 module="voxline.testing.fake_stage", port=port)
