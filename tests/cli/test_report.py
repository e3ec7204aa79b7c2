"""`voxline report` on a synthetic span file shaped like the orchestrator's (tracing contract)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from voxline.cli.main import main

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


class TraceWriter:
    """Spans as voxline.common.telemetry.span_to_dict writes them."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._next = 1

    def span(self, trace: str, name: str, service: str, start_ms: float, end_ms: float,
             parent: str | None, kind: str = "INTERNAL", **attributes: object) -> str:
        span_id = format(self._next, "016x")
        self._next += 1
        self.lines.append(json.dumps({
            "name": name, "trace_id": trace, "span_id": span_id, "parent_span_id": parent,
            "service": service, "kind": kind, "start_ns": T0 + int(start_ms * MS),
            "end_ns": T0 + int(end_ms * MS), "status": "UNSET", "attributes": attributes,
        }))
        return span_id

    def turn(self, trace: str, offset: float, number: int, ttfa: float, total: float,
             status: str = "completed") -> None:
        o = offset
        root = self.span(trace, "voxline.turn", "voxline-orchestrator", o, o + total, None, **{
            "voxline.turn.number": number, "voxline.turn.status": status, "voxline.stt_ms": 30.0,
            "voxline.llm.ttft_ms": 120.0, "voxline.llm.total_ms": 400.0,
            "voxline.tts.first_audio_ms": 60.0, "voxline.time_to_first_audio_ms": ttfa,
            "voxline.total_ms": total, "voxline.llm.provider": "local", "voxline.llm.cache_hit": False,
            "voxline.sentences": 2})
        stt = self.span(trace, "stt", "voxline-orchestrator", o, o + 30, root,
                        **{"voxline.audio_seconds": 1.7})
        client = self.span(trace, "/voxline.v1.SpeechToText/Transcribe", "voxline-orchestrator", o + 1,
                           o + 29, stt, kind="CLIENT")
        self.span(trace, "/voxline.v1.SpeechToText/Transcribe", "voxline-stt", o + 2, o + 28, client,
                  kind="SERVER")
        llm = self.span(trace, "llm", "voxline-orchestrator", o + 30, o + 430, root, **{
            "gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 20})
        client = self.span(trace, "/voxline.v1.LanguageModel/Generate", "voxline-orchestrator", o + 31,
                           o + 429, llm, kind="CLIENT")
        self.span(trace, "/voxline.v1.LanguageModel/Generate", "voxline-llm", o + 32, o + 428, client,
                  kind="SERVER")
        for index, start in enumerate((o + 150, o + 430)):
            tts = self.span(trace, "tts", "voxline-orchestrator", start, start + 100, root,
                            **{"voxline.sentence.index": index})
            client = self.span(trace, "/voxline.v1.TextToSpeech/Synthesize", "voxline-orchestrator",
                               start + 1, start + 99, tts, kind="CLIENT")
            self.span(trace, "/voxline.v1.TextToSpeech/Synthesize", "voxline-tts", start + 2, start + 98,
                      client, kind="SERVER")

    def write(self, path: Path) -> Path:
        path.write_text("\n".join(self.lines) + "\n")
        return path


TRACE_1 = "a" * 32
TRACE_2 = "b" * 32


@pytest.fixture
def span_file(tmp_path: Path) -> Path:
    writer = TraceWriter()
    writer.turn(TRACE_1, 0, 1, ttfa=240.0, total=530.0)
    writer.turn(TRACE_2, 2000, 2, ttfa=610.0, total=980.0, status="interrupted")
    writer.span("c" * 32, "/grpc.health.v1.Health/Check", "voxline-stt", 5, 6, None, kind="SERVER")
    writer.lines.append('{"name": "half a line')  # a process killed mid-write
    return writer.write(tmp_path / "spans.jsonl")


def test_prints_the_table_per_turn_and_the_span_tree(span_file: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(span_file)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert "skipped 1 unreadable line" in err
    rows = {line.split()[0]: line.split() for line in lines if line[:1].isdigit() or line[:3].isupper()}
    assert rows["1"] == ["1", "30", "120", "400", "60", "240", "530"]
    assert rows["2"][:2] == ["2", "(interrupted)"]
    assert rows["AVG"] == ["AVG", "30", "120", "400", "60", "425", "755"]
    assert rows["MAX"][-2:] == ["610", "980"]
    assert "time to first audio < 500 ms: 1/2 (50%)" in out
    assert "total turn      < 500 ms: 0/2 (0%)" in out
    # The waterfall text of the last turn: its 13 spans from all four services, children indented.
    services = "voxline-llm, voxline-orchestrator, voxline-stt, voxline-tts"
    assert f"turn 2: trace {TRACE_2}, 13 spans from {services}" in out
    tree = out[out.index("turn 2: trace"):].splitlines()[1:]
    assert tree[0].endswith("voxline.turn  [voxline-orchestrator]")
    assert "      /voxline.v1.SpeechToText/Transcribe  [voxline-stt]" in tree[3]
    assert "2000.0" not in tree[0]  # offsets are relative to the turn's own start


def test_draws_a_png_waterfall_of_the_chosen_turn(span_file: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "out" / "turn1.png"
    assert main(["report", str(span_file), "--turn", "1", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert f"turn 1: trace {TRACE_1}" in out
    assert f"waterfall: {png}" in out
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 800 and height > 300  # 13 rows of bars, not an empty canvas
    assert len(data) > 20_000


def test_errors_are_clear(span_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["report", str(span_file), "--turn", "3"]) == 2
    assert "--turn must be 1..2" in capsys.readouterr().err
    other = tmp_path / "health.jsonl"
    other.write_text(json.dumps({"name": "x", "trace_id": "1" * 32, "span_id": "1" * 16,
                                 "parent_span_id": None, "service": "s", "kind": "SERVER",
                                 "start_ns": 1, "end_ns": 2, "status": "UNSET", "attributes": {}}) + "\n")
    assert main(["report", str(other)]) == 1
    assert "no voxline.turn span" in capsys.readouterr().err
