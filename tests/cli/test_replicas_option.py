"""``voxline up/demo --replicas stt=2,tts=2``: parsing, and the names and wiring a stack gets."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from voxline.cli.stack import StackConfig
from voxline.cli.up import MAX_REPLICAS, parse_replicas


def test_replicas_parse_per_stage() -> None:
    assert parse_replicas("stt=2,tts=3") == {"stt": 2, "tts": 3}
    assert parse_replicas(" llm=1 , ") == {"llm": 1}
    assert parse_replicas("") == {}


@pytest.mark.parametrize(("text", "message"), [
    ("orchestrator=2", "STAGE one of stt, llm, tts"),
    ("stt", "expected STAGE=N"),
    ("stt=two", "expected STAGE=N"),
    ("stt=0", f"1 to {MAX_REPLICAS}"),
    (f"tts={MAX_REPLICAS + 1}", f"1 to {MAX_REPLICAS}"),
])
def test_unusable_replicas_are_refused(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_replicas(text)


def test_replica_process_names() -> None:
    config = StackConfig(log_dir=Path("logs"), replicas={"stt": 3, "tts": 2})
    assert config.instances("stt") == ["stt", "stt-2", "stt-3"]
    assert config.instances("tts") == ["tts", "tts-2"]
    assert config.instances("llm") == ["llm"]
    assert config.instances("orchestrator") == ["orchestrator"]  # one public endpoint


def test_up_and_demo_take_the_option() -> None:
    from voxline.cli.main import build_parser

    parser = build_parser()
    for command in ("up", "demo"):
        ns = parser.parse_args([command, "--replicas", "stt=2,tts=2"])
        assert ns.replicas == {"stt": 2, "tts": 2}
