"""The edge's audio pieces without any network: μ-law, resampling, and the playback queue that a
barge-in empties."""

from __future__ import annotations

import numpy as np

from voxline.edge.audio import Playback, Resampler, pcm16_to_ulaw, ulaw_to_pcm16


def _tone(seconds: float, rate: int, amplitude: float = 10_000.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * amplitude).astype(np.int16).tobytes()


def test_ulaw_round_trip_within_its_quantisation() -> None:
    pcm = _tone(0.1, 8000)
    ulaw = pcm16_to_ulaw(pcm)
    assert len(ulaw) == len(pcm) // 2
    back = np.frombuffer(ulaw_to_pcm16(ulaw), np.int16).astype(int)
    original = np.frombuffer(pcm, np.int16).astype(int)
    # μ-law keeps ~4 % relative precision; silence is 0xff
    assert np.all(np.abs(back - original) <= np.maximum(40, np.abs(original) // 16))
    assert pcm16_to_ulaw(bytes(4)) == b"\xff\xff"


def test_resampling_keeps_duration_and_pitch_across_chunks() -> None:
    resampler = Resampler(22_050, 48_000)
    pcm = _tone(1.0, 22_050)
    out = b"".join(resampler.convert(pcm[i:i + 4410]) for i in range(0, len(pcm), 4410))
    samples = np.frombuffer(out, np.int16).astype(np.float64)
    assert abs(len(samples) - 48_000) < 480  # within 10 ms (the filter's delay)
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * 48_000 / len(samples) - 440) < 5


def test_playback_frames_flush_and_first_frame_timing() -> None:
    firsts: list[tuple[int, float]] = []
    dropped: list[int] = []
    playback = Playback(48_000, 20, max_seconds=1.0, on_first_frame=lambda t, s: firsts.append((t, s)),
                        on_dropped=dropped.append)
    playback.push(1, bytes(1920 * 3 + 100))  # three frames and a partial one
    assert len(playback) == 3 and playback.queued_turns() == {1}
    playback.end_turn(1)  # the partial frame goes out padded
    assert len(playback) == 4
    assert playback.next_frame() == bytes(1920)
    assert [t for t, _ in firsts] == [1] and firsts[0][1] >= 0
    playback.push(2, bytes(1920 * 10))
    flushed = playback.flush()
    assert (flushed.turn, flushed.frames) == (2, 13) and flushed.milliseconds(20) == 260
    assert playback.next_frame() is None and playback.queued_turns() == set()
    playback.push(3, bytes(1920 * 60))  # past the 1 s bound: the oldest frames are dropped, counted
    assert len(playback) == 50 and sum(dropped) == 10 and playback.dropped == 10
