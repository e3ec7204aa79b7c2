"""``voxline demo``'s like-with-like comparison: each question is also asked the sequential way
(STT, whole LLM reply, TTS of all of it) over the same services, with the benchmark's client
(voxline.cli.sequential). Fake stages with fixed costs behind the real orchestrator."""

from __future__ import annotations

import argparse
import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from voxline.cli.demo import build_sequential_table, comparison_line, play_turns
from voxline.cli.stack import STAGES, Stack, StackConfig
from voxline.testing.fake_stage import REPLY, stack_command


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(StackConfig(log_dir=tmp_path / "logs", ports=dict.fromkeys(STAGES, 0),
                                command=stack_command, start_timeout_s=120,
                                env={"OTEL_TRACES_EXPORTER": "none"}))
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_each_question_is_also_timed_the_sequential_way(stack: Stack) -> None:
    ns = argparse.Namespace(turns=2, language="", voice="", llm_providers="", cache=False)
    out = io.StringIO()
    stages = {s: stack.address(s) for s in ("stt", "llm", "tts")}
    turns = asyncio.run(asyncio.wait_for(
        play_turns(stack.address("orchestrator"), stack.address("tts"), ns, out, stages), 120))
    assert [t.result.status for t in turns] == ["COMPLETED"] * 2
    for turn in turns:
        seq = turn.sequential
        # Nothing is audible before the whole reply is synthesised: first audio is the total, which
        # holds the whole reply (the fake LLM's three sentences) and its synthesis.
        assert seq["time_to_first_audio_ms"] == seq["total_ms"]
        assert seq["llm_total_ms"] > seq["llm_ttft_ms"] > 0
        assert seq["total_ms"] > seq["stt_ms"] + seq["llm_total_ms"]
        assert turn.result.reply_text.strip() == REPLY
    assert out.getvalue().count("sequential: first audio") == 2
    table = build_sequential_table(turns, 500.0)
    assert table is not None and len(table.rows) == 2
    line = comparison_line(turns)
    assert line.startswith("first audio, mean of 2 turns on this machine and these engines: streamed ")
    # The fake LLM takes ~250 ms for its whole reply and ~150 ms to its first sentence: streaming
    # speaks first.
    assert float(line.split("sequential / streamed = ")[1].split()[0]) > 1.0, line


def test_without_stages_nothing_is_compared() -> None:
    assert build_sequential_table([], 500.0) is None
    assert comparison_line([]) == "streamed vs sequential: no turn completed both ways"
