"""Resolving ``--model``: the packaged Whisper base is assembled once, verified, repaired, and safe
to assemble from several processes at once; directories and names pass through."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path

import pytest

from voxline.common.errors import NotConfigured
from voxline.stt.models import (
    PACKAGED_DIRNAME,
    ensure_packaged_model,
    resolve_model,
    verify_packaged_model,
)

FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.json", "manifest.json")


def test_cached_model_is_complete_and_matches_the_package_parts(stt_cache_dir: Path) -> None:
    directory = stt_cache_dir / PACKAGED_DIRNAME
    assert all((directory / name).is_file() for name in FILES)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert [p["name"] for p in manifest["parts"]] == ["model.bin.part1", "model.bin.part2"]
    assert (directory / "model.bin").stat().st_size == sum(p["size"] for p in manifest["parts"])
    assert verify_packaged_model(directory)
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_a_later_start_reuses_the_model_without_rejoining(stt_cache_dir: Path) -> None:
    directory = stt_cache_dir / PACKAGED_DIRNAME
    before = {name: (directory / name).stat().st_mtime_ns for name in FILES}
    resolved = resolve_model("base", stt_cache_dir)
    assert resolved.source == "packaged" and Path(resolved.location) == directory
    assert {name: (directory / name).stat().st_mtime_ns for name in FILES} == before


def _assemble(directory: str) -> bool:
    return verify_packaged_model(ensure_packaged_model(Path(directory)))


def test_corrupt_model_is_reassembled_and_concurrent_starts_agree(
        tmp_path: Path, stt_cache_dir: Path) -> None:
    directory = tmp_path / PACKAGED_DIRNAME
    shutil.copytree(stt_cache_dir / PACKAGED_DIRNAME, directory)
    with open(directory / "model.bin", "r+b") as handle:  # a crash left it short
        handle.truncate(1000)
    assert not verify_packaged_model(directory)
    # two processes start at once on the broken cache: the lock makes one repair it, both use it
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert pool.map(_assemble, [str(directory)] * 2) == [True, True]
    assert verify_packaged_model(directory)


def test_a_local_ctranslate2_directory_is_used_as_is(stt_cache_dir: Path) -> None:
    directory = stt_cache_dir / PACKAGED_DIRNAME
    resolved = resolve_model(str(directory), Path("/nonexistent"))
    assert resolved == type(resolved)(str(directory), "directory")


def test_other_names_go_to_faster_whisper(tmp_path: Path) -> None:
    assert resolve_model("tiny.en", tmp_path).source == "faster-whisper"
    assert resolve_model("Systran/faster-whisper-small", tmp_path).location == "Systran/faster-whisper-small"
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("spec", ["/no/such/model", "./missing", "~/missing/model"])
def test_missing_directories_are_a_clear_error(tmp_path: Path, spec: str) -> None:
    with pytest.raises(NotConfigured, match="does not exist"):
        resolve_model(spec, tmp_path)


def test_a_directory_without_model_bin_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(NotConfigured, match=r"no model\.bin"):
        resolve_model(str(tmp_path), tmp_path)
