"""Service logs: a library's per-request INFO chatter stays out unless the service logs at DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from voxline.common.logs import setup_logging


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """What the services' log handler (set up inside the test, on the captured stderr) wrote."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    chatty = logging.getLogger("faster_whisper")
    chatty_level = chatty.level
    try:
        yield lambda: capsys.readouterr().err
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        chatty.setLevel(chatty_level)


def test_faster_whisper_info_per_request_is_not_logged(stderr: Callable[[], str]) -> None:
    setup_logging("INFO")
    logging.getLogger("faster_whisper").info("Processing audio with duration 00:01.000")
    logging.getLogger("faster_whisper").warning("something is wrong")
    logging.getLogger("voxline.stt.engine").info("model loaded")
    text = stderr()
    assert "Processing audio" not in text
    assert "something is wrong" in text and "model loaded" in text


def test_at_debug_the_library_lines_come_back(stderr: Callable[[], str]) -> None:
    setup_logging("DEBUG")
    logging.getLogger("faster_whisper").info("Processing audio with duration 00:01.000")
    assert "Processing audio" in stderr()
