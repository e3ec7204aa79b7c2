"""`voxline report` on a synthetic span file shaped like the orchestrator's (tracing contract)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from voxline.cli.main import main
from voxline.cli.spans import Node, Span, read_span_file, tree
from voxline.cli.waterfall import first_clause_wait_ms, layout

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


class TraceWriter:
    """Spans as voxline.common.telemetry.span_to_dict writes them."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._next = 1

    def span(self, trace: str, name: str, service: str, start_ms: float, end_ms: float,
             parent: str | None, kind: str = "INTERNAL", events: dict[str, float] | None = None,
             **attributes: object) -> str:
        span_id = format(self._next, "016x")
        self._next += 1
        self.lines.append(json.dumps({
            "name": name, "trace_id": trace, "span_id": span_id, "parent_span_id": parent,
            "service": service, "kind": kind, "start_ns": T0 + int(start_ms * MS),
            "end_ns": T0 + int(end_ms * MS), "status": "UNSET", "attributes": attributes,
            "events": [{"name": event, "time_ns": T0 + int(at * MS), "attributes": {}}
                       for event, at in (events or {}).items()],
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
            "gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 20,
            "voxline.llm.ttft_ms": 120.0})
        client = self.span(trace, "/voxline.v1.LanguageModel/Generate", "voxline-orchestrator", o + 31,
                           o + 429, llm, kind="CLIENT")
        self.span(trace, "/voxline.v1.LanguageModel/Generate", "voxline-llm", o + 32, o + 428, client,
                  kind="SERVER")
        for index, start in enumerate((o + 170, o + 430)):
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


def test_report_names_the_milestones_and_the_first_clause_wait(
        span_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(span_file), "--turn", "1"]) == 0
    out = capsys.readouterr().out
    # llm starts at 30 ms with a 120 ms first token; the first tts span starts at 170 ms.
    assert ("milestones: first token at 150 ms, first clause to TTS at 170 ms, first audio at 240 ms;"
            " first-clause wait 20 ms") in out


def _turn_nodes(path: Path, trace_id: str) -> tuple[list[Node], Span]:
    spans = read_span_file(path)
    turn = next(t for t in spans.turns() if t.trace_id == trace_id)
    return tree(spans.trace(trace_id)), turn


def test_waterfall_draws_a_grpc_hop_as_one_row_with_the_servers_share(span_file: Path) -> None:
    nodes, turn = _turn_nodes(span_file, TRACE_1)
    plan = layout(nodes, turn)
    labels = [row.label.strip() for row in plan.rows]
    assert labels == [
        "orchestrator · voxline.turn",
        "orchestrator · stt", "orchestrator > stt · SpeechToText/Transcribe",
        "orchestrator · llm", "orchestrator > llm · LanguageModel/Generate",
        "orchestrator · tts sentence 1", "orchestrator > tts · TextToSpeech/Synthesize",
        "orchestrator · tts sentence 2", "orchestrator > tts · TextToSpeech/Synthesize",
    ]  # 13 spans, 4 hops of two spans each: 9 rows
    hop = plan.rows[2]
    assert hop.merged and hop.server_service == "voxline-stt"
    assert (hop.start_ms, hop.duration_ms, hop.server_start_ms, hop.server_duration_ms) == (1, 28, 2, 26)
    assert hop.caption == "28.0 ms, server 26.0 ms (93%)"
    assert [row.depth for row in plan.rows] == [0, 1, 2, 1, 2, 1, 2, 1, 2]
    assert [(m.name, m.at_ms) for m in plan.marks] == [
        ("first token", 150.0), ("first clause to TTS", 170.0), ("first audio", 240.0)]
    assert first_clause_wait_ms(plan.marks) == 20.0


def test_span_events_place_the_milestones_when_present(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    writer = TraceWriter()
    trace = "d" * 32
    root = writer.span(trace, "voxline.turn", "voxline-orchestrator", 0, 500, None,
                       events={"first_audio_sent": 301.5}, **{"voxline.time_to_first_audio_ms": 999.0})
    writer.span(trace, "llm", "voxline-orchestrator", 10, 400, root,
                events={"first_token": 90.0, "first_clause_to_tts": 160.0}, **{"voxline.llm.ttft_ms": 5.0})
    writer.span(trace, "tts", "voxline-orchestrator", 170, 260, root)
    path = writer.write(tmp_path / "events.jsonl")
    nodes, turn = _turn_nodes(path, trace)
    marks = layout(nodes, turn).marks
    assert [(m.name, m.at_ms) for m in marks] == [
        ("first token", 90.0), ("first clause to TTS", 160.0), ("first audio", 301.5)]
    assert main(["report", str(path), "--png", str(tmp_path / "w.png")]) == 0
    out = capsys.readouterr().out
    assert "  * first_token" in out  # events are listed under their span in the text tree
    assert "first-clause wait 70 ms" in out
    assert (tmp_path / "w.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(("content", "message"), [
    (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40), "is a WAV audio file, not a span file"),
    (b"fLaC" + bytes(100), "is a FLAC audio file"),
    (bytes(range(256)) * 4, "holds binary data, not a span file"),
    (b"hello\nworld\n", "holds no span: none of its 2 line(s) is a JSON span"),
])
def test_a_file_that_is_not_a_span_file_is_a_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str) -> None:
    path = tmp_path / "question.wav"
    path.write_bytes(content)
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert "`voxline talk` is the command that takes audio" in err
    assert main(["report", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_a_reader_that_leaves_early_ends_the_report_quietly(span_file: Path) -> None:
    # `voxline report spans.jsonl | head -1`: the pipe closes after one line.
    proc = subprocess.Popen([sys.executable, "-m", "voxline.cli", "report", str(span_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) in (0, 141)
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
