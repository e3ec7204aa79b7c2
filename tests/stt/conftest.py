"""Fixtures shared by the STT tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxline.stt.models import PACKAGED_DIRNAME, ensure_packaged_model
from voxline.stt.text_model import TextTurnModel, build, default_dir


@pytest.fixture(scope="session")
def stt_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory (``--cache-dir``) with the packaged Whisper base already assembled."""
    cache = tmp_path_factory.mktemp("voxline-cache")
    ensure_packaged_model(cache / PACKAGED_DIRNAME)
    return cache


@pytest.fixture(scope="session")
def text_model() -> TextTurnModel:
    """The text end-of-turn model `make setup` builds (built here if it is not there yet)."""
    return TextTurnModel(build(default_dir()))
