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


def detach_in_another_context() -> None:
    """What OpenTelemetry does when gRPC closes a streaming handler's generator outside its task."""
    import contextvars

    from opentelemetry import context

    token = context.attach(context.set_value("k", "v"))
    contextvars.copy_context().run(context.detach, token)  # logs "Failed to detach context"
    context.detach(token)


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_opentelemetrys_spurious_detach_error_is_one_debug_line(stderr: Callable[[], str],
                                                                level: str) -> None:
    setup_logging(level)
    detach_in_another_context()
    logging.getLogger("opentelemetry.context").error("a real context error")
    text = stderr()
    assert "Traceback" not in text and "ERROR   opentelemetry.context: Failed" not in text
    assert "a real context error" in text
    assert ("DEBUG   opentelemetry.context: context of a span around a stream" in text) == (level == "DEBUG")
