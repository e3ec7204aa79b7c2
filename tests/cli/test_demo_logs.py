"""`voxline demo` keeps no temporary directory behind, unless a failure left logs worth reading."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from voxline.cli import demo


def demo_args() -> argparse.Namespace:
    return argparse.Namespace(turns=1, stage_deadline=30.0, log_dir=None)


@pytest.mark.parametrize(("code", "kept"), [(0, False), (1, True)])
def test_the_temporary_log_directory_goes_unless_the_demo_failed(
        code: int, kept: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    seen: list[Path] = []

    def fake_run(ns: argparse.Namespace, out: object, err: object) -> int:
        (ns.log_dir / "stt.log").write_text("loading...\n")  # what the services write
        seen.append(ns.log_dir)
        return code

    monkeypatch.setattr(demo, "_run_demo", fake_run)
    monkeypatch.setattr(demo.tempfile, "tempdir", None)  # TMPDIR is read again
    err = io.StringIO()
    monkeypatch.setattr(demo.sys, "stderr", err)
    assert demo.run_demo(demo_args()) == code
    (log_dir,) = seen
    assert log_dir.parent == tmp_path and log_dir.name.startswith("voxline-demo-")
    assert log_dir.exists() is kept
    assert (f"logs are kept in {log_dir}" in err.getvalue()) is kept


def test_a_log_directory_the_user_chose_is_left_alone(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "_run_demo", lambda ns, out, err: 0)
    ns = demo_args()
    ns.log_dir = tmp_path / "logs"
    ns.log_dir.mkdir()
    assert demo.run_demo(ns) == 0 and ns.log_dir.exists()
