"""A newcomer's LLM log (issue 13 #11): records, not tqdm progress bars, when the local model loads
(converted copy or GGUF conversion); and no WARNING on the offline defaults, where the cloud
providers simply have no key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from voxline.cli.service_process import ServiceProcess


def test_gguf_conversion_bar_is_switched_off() -> None:
    from voxline.llm.local import _quiet_progress_bars

    _quiet_progress_bars()
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    assert gguf_utils.tqdm(range(3)).disable  # type: ignore[attr-defined]
    assert not hf_logging.is_progress_bar_enabled()  # type: ignore[no-untyped-call]


@pytest.mark.slow
def test_the_offline_defaults_start_without_bars_or_warnings(tmp_path: Path) -> None:
    log = tmp_path / "llm.log"
    argv = [sys.executable, "-m", "voxline.llm", "--host", "127.0.0.1", "--port", "0"]
    env = {"OTEL_TRACES_EXPORTER": "none", "GROQ_API_KEY": "", "CEREBRAS_API_KEY": ""}
    with ServiceProcess("llm", argv, env, log_path=log) as llm:
        llm.wait_serving(timeout=400)
    text = log.read_text()
    assert "local model ready" in text
    assert "it/s]" not in text and "%|" not in text, text[-2000:]
    assert "INFO    voxline.llm.engine: provider unavailable provider=groq reason=no API key" in text
    assert "WARNING" not in text, text[-2000:]
