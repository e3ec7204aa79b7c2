"""Test support: run a voxline service as a real subprocess on a free port.

The process is the same ``ServiceProcess`` that ``voxline up`` supervises (its port comes from the
service's ``--port-file``); here every line of its output is kept for the test's assertions.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from voxline.cli.service_process import ServiceProcess

ROOT = Path(__file__).resolve().parent.parent


def start_service(stage: str, args: Sequence[str] = (), env: Mapping[str, str] | None = None
                  ) -> ServiceProcess:
    """``python -m voxline.<stage> --port 0 *args``, started (not yet SERVING: ``wait_serving()``)."""
    return ServiceProcess(stage, [sys.executable, "-m", f"voxline.{stage}", "--port", "0", *args], env,
                          keep_lines=None, cwd=ROOT)
