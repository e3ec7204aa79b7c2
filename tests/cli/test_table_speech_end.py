"""The latency table's end-of-speech column: shown when turns carry the figure (server VAD)."""

from __future__ import annotations

from voxline.cli.table import LatencyRow, LatencyTable


def test_server_vad_turns_show_end_of_speech_to_first_audio() -> None:
    spans = [{"voxline.stt_ms": 20.0, "voxline.time_to_first_audio_ms": 300.0, "voxline.total_ms": 900.0,
              "voxline.end_of_speech_to_first_audio_ms": felt} for felt in (450.0, 650.0)]
    table = LatencyTable([LatencyRow.from_metrics(str(i + 1), s) for i, s in enumerate(spans)])
    text = table.render()
    header = next(line for line in text.splitlines() if line.startswith("run"))
    assert header.split()[-1] == "end→audio" and "speech end→audio" in header
    avg = next(line for line in text.splitlines() if line.startswith("AVG")).split()
    assert avg[-1] == "550"
    assert "end of speech -> first audio < 500 ms: 1/2 (50%)" in text


def test_without_the_figure_the_table_is_unchanged() -> None:
    row = LatencyRow.from_metrics("1", {"stt_ms": 20.0, "time_to_first_audio_ms": 300.0, "total_ms": 900.0})
    text = LatencyTable([row]).render()
    assert "speech end" not in text and "end of speech" not in text
    assert len(next(line for line in text.splitlines() if line.startswith("AVG")).split()) == 7
