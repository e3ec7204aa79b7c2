"""bench/replicas.py (section 9) at smoke size: both stacks serve every turn, figures are numbers."""

from __future__ import annotations

import math
from pathlib import Path

from bench.replicas import SIZES, markdown, measure


def test_one_and_two_tts_processes_serve_every_turn(tmp_path: Path) -> None:
    figures = measure(SIZES["smoke"], tmp_path)
    for side in ("1", "2"):
        d = figures["sides"][side]
        assert d["completed"] == d["expected"] > 0
        assert d["turns_per_s"] > 0 and d["p95_ttfa_ms"] > 0
    assert {r["tts_processes"] for r in figures["runs"]["2"]} == {2}
    assert math.isfinite(figures["throughput_ratio"])
    assert markdown(figures)[0].startswith("**2 TTS processes vs 1:")
    assert (tmp_path / "tts2" / "tts-2.log").exists()
