"""The orchestrator's former energy VAD (bench/legacy_vad.py, the turn-taking benchmark's path (a))
on synthetic PCM."""

from __future__ import annotations

import pytest

from bench.legacy_vad import EnergyVad
from voxline.testing.fake_servers import silence_pcm, tone_pcm


def _feed(vad: EnergyVad, pcm: bytes, chunk: int = 480) -> tuple[int, list[bytes]]:
    starts, utterances = 0, list[bytes]()
    for i in range(0, len(pcm), chunk):  # odd-sized chunks: frames straddle chunk boundaries
        step = vad.feed(pcm[i:i + chunk])
        starts += step.speech_started
        utterances += step.utterances
    return starts, utterances


def test_vad_cuts_tone_and_silence_into_utterances() -> None:
    vad = EnergyVad(16000, silence_ms=300, frame_ms=20, preroll_ms=100)
    tone_a, tone_b = tone_pcm(0.5), tone_pcm(0.8, freq=220)
    pcm = silence_pcm(1.0) + tone_a + silence_pcm(0.5) + tone_b + silence_pcm(0.5)
    starts, utterances = _feed(vad, pcm)
    assert starts == 2 and len(utterances) == 2
    first, second = utterances
    assert tone_a in first and tone_b in second
    # 100 ms pre-roll + speech + 300 ms of silence (to the frame), not the leading second
    assert len(first) == pytest.approx(len(tone_a) + 0.4 * 32000, abs=640)
    assert not vad.in_speech and vad.flush() is None


def test_vad_pauses_shorter_than_the_silence_keep_one_utterance() -> None:
    vad = EnergyVad(16000, silence_ms=400)
    pcm = tone_pcm(0.3) + silence_pcm(0.2) + tone_pcm(0.3)
    starts, utterances = _feed(vad, pcm)
    assert starts == 1 and utterances == []
    assert vad.in_speech
    audio = vad.flush()  # the client's end_of_utterance ends it
    assert audio is not None and len(audio) >= len(pcm) - 640


def test_vad_ignores_quiet_noise_and_clicks() -> None:
    vad = EnergyVad(16000, threshold=0.02, silence_ms=300)
    quiet = tone_pcm(1.0, amplitude=0.005)  # RMS ~0.0035
    click = tone_pcm(0.02, amplitude=0.9)  # one 20 ms frame: shorter than min speech
    starts, utterances = _feed(vad, quiet + click + quiet)
    assert starts == 0 and utterances == [] and vad.buffered_bytes == 0


def test_vad_stereo_frames() -> None:
    mono = tone_pcm(0.4)
    stereo = b"".join(mono[i:i + 2] * 2 for i in range(0, len(mono), 2))
    vad = EnergyVad(16000, channels=2, silence_ms=200)
    starts, utterances = _feed(vad, stereo + bytes(4 * 16000 // 2))
    assert starts == 1 and len(utterances) == 1 and len(utterances[0]) % 4 == 0
