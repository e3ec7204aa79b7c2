"""``python -m voxline.stt`` as a process: --help, bad configuration, a model that cannot load, and
SIGTERM while a Transcribe is running (the call still completes OK, then the process exits 0)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from speech import PHRASE, english_speech_wav, words
from support import ROOT, start_service

from voxline.v1 import stt_pb2, stt_pb2_grpc


def run_stt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voxline.stt", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_help_lists_every_option_without_loading_anything() -> None:
    started = time.monotonic()
    done = run_stt("--help")
    assert done.returncode == 0
    for flag in ("--model", "--cache-dir", "--device", "--compute-type", "--beam-size", "--language",
                 "--cpu-threads", "--num-workers", "--vad-filter", "--max-queued", "--max-audio-seconds",
                 "--max-stream-bytes", "--partial-interval-s", "--encoder-window-s", "--turn-detector",
                 "--complete-silence-ms", "--incomplete-silence-ms", "--pause-ms", "--early-pause-ms",
                 "--text-veto", "--pause-heard-ms", "VOXLINE_STT_MODEL", "VOXLINE_CACHE_DIR",
                 "VOXLINE_STT_TEXT_VETO", "--listen-min-rate-hz", "VOXLINE_STT_LISTEN_MIN_RATE_HZ",
                 "--listen-min-chunk-ms", "--listen-max-speed", "--listen-burst-s",
                 "--listen-recognition-budget", "--listen-recognition-burst-s"):
        assert flag in done.stdout
    assert time.monotonic() - started < 10  # no model, no faster-whisper import


@pytest.mark.parametrize("args,message", [
    (["--beam-size", "0"], "--beam-size must be 1..10"),
    (["--num-workers", "0"], "--num-workers must be >= 1"),
    (["--max-audio-seconds", "-1"], "--max-audio-seconds must be positive"),
    (["--pause-heard-ms", "-2"], "--pause-heard-ms must be -1..10000"),
    (["--listen-min-rate-hz", "500"], "--listen-min-rate-hz must be 1000..48000"),
])
def test_bad_configuration_exits_2_with_the_reason(args: list[str], message: str) -> None:
    done = run_stt(*args)
    assert done.returncode == 2
    assert message in done.stderr


def test_a_model_that_cannot_load_ends_the_process_with_the_reason(tmp_path: Path) -> None:
    done = run_stt("--port", "0", "--model", str(tmp_path / "missing-model"))
    assert done.returncode == 1
    assert "does not exist" in done.stderr


#: faster-whisper logs this line when a transcription starts (the warm-up logs it once too).
STARTED = "Processing audio with duration"


@pytest.mark.slow
def test_sigterm_lets_the_in_flight_transcription_finish_then_exits_0(stt_cache_dir: Path) -> None:
    wav = english_speech_wav(PHRASE)
    # DEBUG: faster-whisper's per-request line (STARTED), quiet at INFO, marks the call under way
    with start_service("stt", ["--cache-dir", str(stt_cache_dir), "--grace-seconds", "60",
                               "--log-level", "DEBUG"]) as process:
        process.wait_serving()
        warm_ups = process.logs.count(STARTED)
        with grpc.insecure_channel(process.address) as channel:
            stub = stt_pb2_grpc.SpeechToTextStub(channel)
            call = stub.Transcribe.future(
                stt_pb2.TranscribeRequest(audio=wav, config=stt_pb2.RecognitionConfig(language="en")),
                timeout=120)
            deadline = time.monotonic() + 60
            while process.logs.count(STARTED) == warm_ups:  # until this transcription has started
                assert not call.done() and time.monotonic() < deadline, process.logs
                time.sleep(0.02)  # polling the log, not timing the server
            process.proc.send_signal(signal.SIGTERM)
            reply = call.result()
            assert words(reply.text) == words(PHRASE)
        assert process.proc.wait(60) == 0
    logs = process.logs
    assert "stopping" in logs and "stopped" in logs
    assert logs.index("stopping") < logs.index("stopped")
