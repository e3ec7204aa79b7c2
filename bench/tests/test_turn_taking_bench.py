"""bench/turn_taking.py (section 7): ``ReplayedWhisper`` (``--stt baseline``) records and replays
real transcripts, and the control group (complete-prefix pauses) stays out of the main figures."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from bench.turn_taking import BASELINE_STT_S, CONTROL_NOTE, PATHS, ReplayedWhisper, measure, render
from voxline.stt.engine import AudioInput, RecognitionOptions, Transcript

EN = RecognitionOptions(language="en")
HELLO = AudioInput(b"\x01\x00" * 1600, "pcm_s16le", 16_000, 1)
OTHER = AudioInput(b"\x02\x00" * 1600, "pcm_s16le", 16_000, 1)


class SlowWhisper:
    """Stands for Whisper on a CPU: each call waits until the test releases it, and is counted."""

    max_audio_seconds = 30.0

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.idle = True
        self.closed = False

    async def warm_up(self) -> None:
        return None

    def check_options(self, options: RecognitionOptions) -> None:
        return None

    async def transcribe(self, audio: AudioInput, options: RecognitionOptions) -> Transcript:
        self.calls.append(audio.data)
        self.started.set()
        await self.release.wait()
        return Transcript(text=f"words of call {len(self.calls)}", language="en", language_probability=0.9,
                          segments=(), audio_seconds=0.1, processing_ms=900.0, decode_ms=1.0)

    async def transcribe_if_idle(self, audio: AudioInput, options: RecognitionOptions
                                 ) -> Transcript | None:
        return await self.transcribe(audio, options) if self.idle else None

    async def close(self) -> None:
        self.closed = True


async def test_recording_keeps_a_transcript_whose_caller_cancelled() -> None:
    whisper = SlowWhisper()
    replayed = ReplayedWhisper(whisper)
    caller = asyncio.create_task(replayed.transcribe(HELLO, EN))
    await whisper.started.wait()
    caller.cancel()  # as Listen cancels an older pause's transcript
    with pytest.raises(asyncio.CancelledError):
        await caller
    whisper.release.set()
    await replayed.settle()
    assert replayed.recorded == 1

    replayed.replay()
    started = time.perf_counter()
    heard = await replayed.transcribe(HELLO, EN)
    took = time.perf_counter() - started
    assert heard.text == "words of call 1"
    assert heard.processing_ms == pytest.approx(BASELINE_STT_S * 1000)
    assert BASELINE_STT_S * 0.9 <= took < 0.5
    assert len(whisper.calls) == 1  # the replay did not run Whisper again
    assert replayed.misses == 0


async def test_replay_miss_runs_whisper_counts_it_and_keeps_it() -> None:
    whisper = SlowWhisper()
    whisper.release.set()
    replayed = ReplayedWhisper(whisper)
    await replayed.transcribe(HELLO, EN)
    replayed.replay()

    assert (await replayed.transcribe(OTHER, EN)).text == "words of call 2"
    assert (replayed.misses, len(whisper.calls)) == (1, 2)
    # the same audio in another language is another transcript: a miss too
    assert (await replayed.transcribe(HELLO, RecognitionOptions(language="de"))).text == "words of call 3"
    assert replayed.misses == 2
    # a miss is kept: heard again, it is a hit
    assert (await replayed.transcribe_if_idle(OTHER, EN)) is not None
    assert (replayed.misses, len(whisper.calls)) == (2, 3)
    await replayed.close()
    assert whisper.closed


async def test_a_skipped_interim_is_not_kept() -> None:
    whisper = SlowWhisper()
    whisper.release.set()
    whisper.idle = False
    replayed = ReplayedWhisper(whisper)
    assert await replayed.transcribe_if_idle(HELLO, EN) is None
    assert replayed.recorded == 0


def _figures(mean: float, runs: int) -> dict[str, Any]:
    return {"path": "", "runs": runs, "mean_ms": mean, "p95_ms": mean, "min_ms": mean, "max_ms": mean,
            "no_reply": 0, "split_turns": 0, "early_replies": 0, "speculative_starts": 0,
            "speculative_hits": 0, "speculative_misses": 0, "hit_rate": None, "tokens_wasted": 0}


def test_render_prints_the_control_table_after_the_goals_and_the_replay_misses() -> None:
    result = {"paths": {p: _figures(1000.0 + i, 16) for i, p in enumerate(PATHS)},
              "control": {p: _figures(7000.0 + i, 3) for i, p in enumerate(PATHS)},
              "c_over_a": 0.81, "c_minus_d_ms": 120.0, "replay_misses": 4}
    lines = render(result)
    goals = next(i for i, line in enumerate(lines) if line.startswith("(c)/(a) = 0.81"))
    note = lines.index(CONTROL_NOTE)
    assert all("| 700" not in line for line in lines[:goals])
    assert all("| 100" not in line for line in lines[note:])
    assert any(line.startswith("| turn-taking+speculation | 7002 |") for line in lines[note:])
    assert any("Replay misses in the timed runs kept: 4" in line for line in lines)
    result["replay_misses"] = 0
    assert not any("Replay misses" in line for line in render(result))


@pytest.fixture(scope="module")
def smoke() -> dict[str, Any]:
    return asyncio.run(measure(smoke=True, echo=lambda line: None))


def test_smoke_keeps_the_control_clip_out_of_the_headline(smoke: dict[str, Any]) -> None:
    assert {p: (smoke["paths"][p]["runs"], smoke["control"][p]["runs"]) for p in PATHS} == {
        p: (1, 1) for p in PATHS}
    main = {line["path"]: line["e2fa_ms"] for line in smoke["clips"] if line["group"] == "main"}
    assert math.isclose(smoke["c_over_a"], main["turn-taking+speculation"] / main["energy-600"])
    assert math.isclose(smoke["c_minus_d_ms"], main["turn-taking+speculation"] - main["oracle"])
    assert {(line["clip"], line["group"]) for line in smoke["clips"]} == {("s1-pause", "main"),
                                                                         ("c1-pause", "control")}
    assert all(line["transcripts"] and line["turns"] >= 1 for line in smoke["clips"])
    assert smoke["replay_misses"] is None
    assert CONTROL_NOTE in render(smoke)
