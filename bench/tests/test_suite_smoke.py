"""``python -m bench --smoke`` end to end: every section runs (fake engines, tiny N) and the report,
results.json and plots are written. Sections whose core module is absent may say "not available";
the ones this suite owns must produce real figures."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.suite.report import json_safe
from bench.suite.sections import SECTIONS

ROOT = Path(__file__).resolve().parents[2]
#: Section key → the module holding its core (absent module: the section may be "not available").
BORROWED = {"stt": "stt_decode.py", "tts": "tts_stream.py", "llm": "llm_tail.py",
            "overhead": "orchestrator_overhead.py"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench-smoke")
    proc = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--no-progress", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=280)
    return proc, out


def test_smoke_run_writes_every_section(smoke_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = smoke_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "SMOKE RUN" in report
    for section in SECTIONS:
        assert f"## {section.title}" in report
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "smoke" and results["smoke"] is True
    assert set(results["sections"]) == {s.key for s in SECTIONS}
    for key, section in results["sections"].items():
        module = BORROWED.get(key)
        if module is not None and not (ROOT / "bench" / module).exists():
            assert section["status"].startswith("not available:"), (key, section["status"])
        else:
            assert section["status"] == "ok", (key, section["status"])
        for plot in section["plots"]:
            assert (out / plot).stat().st_size > 1000, plot
            assert f"]({plot})" in report


def test_smoke_figures_are_real_numbers(smoke_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = smoke_run
    sections = json.loads((out / "results.json").read_text())["sections"]
    baseline = sections["baseline"]["figures"]
    assert baseline["failed_turns"] == 0
    assert len(baseline["runs"]) == 2
    # the fake LLM writes three sentences, so the streamed first audio beats the sequential total
    assert baseline["first_audio_sooner_x"] > 1.0
    assert baseline["streamed"]["time_to_first_audio_ms"]["n"] == 2
    fake = sections["scaling"]["figures"]["fake"]
    assert [lv["sessions"] for lv in fake["levels"]] == [1, 2]
    for level in fake["levels"]:
        assert level["completed"] == level["turns"] == level["sessions"]
        assert level["turns_per_s"] > 0
        assert level["first_audio_ms"]["p95"] > 0
        assert all(level["peak_rss_mib"][s] > 10 for s in ("orchestrator", "stt", "llm", "tts"))
        assert level["cpu_cores"]["orchestrator"] >= 0
    gpu = sections["gpu"]["figures"]
    assert gpu["returncode"] == 0
    assert gpu["output"].startswith("skipped: no CUDA GPU") or "STT" in gpu["output"]


def test_json_safe_turns_nan_into_null() -> None:
    data = json_safe({"a": math.nan, "b": (1.0, math.inf), "c": {"d": 2}})
    assert data == {"a": None, "b": [1.0, None], "c": {"d": 2}}
    json.dumps(data, allow_nan=False)
