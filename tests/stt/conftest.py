"""Fixtures shared by the STT tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxline.stt.models import PACKAGED_DIRNAME, ensure_packaged_model


@pytest.fixture(scope="session")
def stt_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory (``--cache-dir``) with the packaged Whisper base already assembled."""
    cache = tmp_path_factory.mktemp("voxline-cache")
    ensure_packaged_model(cache / PACKAGED_DIRNAME)
    return cache
