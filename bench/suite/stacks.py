"""The stacks the sections run against, started with ``voxline.cli.stack.Stack``.

- "real": the four real services on their offline defaults (whisper base int8 cpu, local SmolLM2,
  espeak-ng), exactly as ``voxline up`` starts them.
- "fake": the real orchestrator wired to ``voxline.testing.fake_stage`` stt/llm/tts processes with
  fixed costs.
Both on free ports (port 0), each service its own process, so its pid gives its CPU and memory.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Fixed costs of the fake engines (voxline.testing.fake_stage flags), milliseconds.
FAKE_COSTS = {"stt_ms": 25.0, "llm_ttft_ms": 100.0, "llm_token_ms": 10.0, "tts_ms": 30.0}


def _fake_command(stage: str) -> list[str]:
    from voxline.cli.stack import default_command

    if stage == "orchestrator":
        return default_command(stage)
    costs = {"stt": ["--stt-ms", str(FAKE_COSTS["stt_ms"])],
             "llm": ["--llm-ttft-ms", str(FAKE_COSTS["llm_ttft_ms"]),
                     "--llm-token-ms", str(FAKE_COSTS["llm_token_ms"])],
             "tts": ["--tts-ms", str(FAKE_COSTS["tts_ms"])]}[stage]
    return [sys.executable, "-m", "voxline.testing.fake_stage", stage, *costs]


#: Configuration keys that say which engine a backend runs.
_ENGINE_KEYS = {"stt": ("model", "device", "compute_type", "cpu_threads"),
                "llm": ("providers", "local_model", "local_device", "local_threads", "max_tokens"),
                "tts": ("default_voice", "vits_device")}
_CONFIG_LINE = re.compile(r"\bconfig\b")  # the one "config" event every service logs at start


@dataclass
class BenchStack:
    """A started stack: addresses, service pids, what each service said its configuration was."""

    kind: str
    stack: Any  # voxline.cli.stack.Stack

    def address(self, stage: str) -> str:
        return str(self.stack.address(stage))

    @property
    def pids(self) -> dict[str, int]:
        return {stage: service.proc.pid for stage, service in self.stack.services.items()}

    def configuration(self) -> dict[str, str]:
        """Each service's logged configuration line (models, devices), for the section's setup."""
        out: dict[str, str] = {}
        for stage, service in self.stack.services.items():
            try:
                lines = Path(service.log_path).read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                if _CONFIG_LINE.search(line):
                    out[stage] = line.split(": ", 1)[-1]
                    break
        return out

    def engines(self) -> str:
        """The engines the backends run, from their logged configuration (model, device, voice)."""
        parts = []
        for stage, line in self.configuration().items():
            if stage == "orchestrator":
                continue
            found = [f"{key}={m.group(1)}" for key in _ENGINE_KEYS.get(stage, ())
                     if (m := re.search(rf"\b{key}=('[^']*'|\([^)]*\)|[^\s}}]+)", line))]
            parts.append(f"{stage}: {' '.join(found) or line[:120]}")
        return "; ".join(parts)

    def stop(self) -> None:
        self.stack.stop()


def start_stack(kind: str, log_dir: Path) -> BenchStack:
    """Start the "real" or "fake" stack on free ports and wait until every service is SERVING."""
    from voxline.cli.stack import STAGES, Stack, StackConfig, default_command

    config = StackConfig(
        log_dir=log_dir, ports=dict.fromkeys(STAGES, 0),
        command=_fake_command if kind == "fake" else default_command,
        start_timeout_s=600.0,
    )
    stack = Stack(config)
    stack.start()
    return BenchStack(kind, stack)
