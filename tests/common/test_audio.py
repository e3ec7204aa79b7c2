"""voxline.common.audio.decode: every container and sample format to mono float32 at 16 kHz, in
memory, and a clear InvalidInput/LimitExceeded for every bad input."""

from __future__ import annotations

import io
import random
import struct

import av
import numpy as np
import pytest

from voxline.common.audio import decode, pcm16_view, wav_header
from voxline.common.errors import InvalidInput, LimitExceeded, VoxlineError

RATE = 16_000


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float64)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def wav_file(frames: np.ndarray, rate: int, bits: int, *, floating: bool = False) -> bytes:
    """A WAV file from float frames in [-1, 1], shaped (n,) or (n, channels)."""
    frames = frames.reshape(len(frames), -1)
    channels = frames.shape[1]
    if floating:
        payload = frames.astype("<f4").tobytes()
    elif bits == 8:
        payload = np.round(frames * 127 + 128).astype(np.uint8).tobytes()
    elif bits == 24:
        ints = np.round(frames * (2**23 - 1)).astype("<i4")
        payload = ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        payload = np.round(frames * (2 ** (bits - 1) - 1)).astype(f"<i{bits // 8}").tobytes()
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 3 if floating else 1, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload))
    return b"RIFF" + struct.pack("<I", len(body) + len(payload)) + body + payload


def av_file(container: str, codec: str, frames: np.ndarray, rate: int) -> bytes:
    """Encode mono float frames with PyAV into an in-memory file."""
    out = io.BytesIO()
    pcm = np.round(frames * 32767).astype(np.int16).reshape(1, -1)
    with av.open(out, "w", format=container) as handle:
        stream = handle.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            handle.mux(packet)
        for packet in stream.encode(None):
            handle.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize("bits,floating", [(8, False), (16, False), (24, False), (32, False), (32, True)])
@pytest.mark.parametrize("channels", [1, 2])
def test_wav_sample_formats_mono_and_stereo(bits: int, floating: bool, channels: int) -> None:
    signal = tone(440, 1.0, RATE)
    # stereo: the tone on the left, silence on the right, so the mono mix has half the amplitude
    frames = signal if channels == 1 else np.stack([signal, np.zeros_like(signal)], axis=1)
    decoded = decode(wav_file(frames, RATE, bits, floating=floating))
    assert decoded.encoding == "wav" and decoded.source_channels == channels
    assert decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
    assert len(decoded.samples) == RATE
    assert dominant_hz(decoded.samples, RATE) == pytest.approx(440, abs=2)
    expected_rms = 0.5 / np.sqrt(2) / channels
    assert rms(decoded.samples) == pytest.approx(expected_rms, rel=0.03 if bits == 8 else 0.005)


def test_wav_44100_is_resampled_to_16k_keeping_duration_and_pitch() -> None:
    decoded = decode(wav_file(tone(1000, 1.5, 44_100), 44_100, 16))
    assert decoded.source_rate == 44_100 and decoded.sample_rate == RATE
    assert decoded.duration_s == pytest.approx(1.5, abs=1e-3)
    assert dominant_hz(decoded.samples, RATE) == pytest.approx(1000, abs=2)
    assert rms(decoded.samples[1000:-1000]) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_streamed_wav_header_of_unknown_length_reads_all_frames() -> None:
    pcm = np.round(tone(300, 0.5, RATE) * 32767).astype("<i2").tobytes()
    decoded = decode(wav_header(RATE) + pcm)
    assert len(decoded.samples) == RATE // 2


@pytest.mark.parametrize("container,codec,encoding", [("flac", "flac", "flac"),
                                                      ("aiff", "pcm_s16be", "aiff")])
def test_flac_and_aiff_through_pyav(container: str, codec: str, encoding: str) -> None:
    data = av_file(container, codec, tone(440, 1.0, 44_100), 44_100)
    for declared in (None, encoding):  # sniffed and declared
        decoded = decode(data, declared)
        assert decoded.encoding == encoding and decoded.source_rate == 44_100
        assert decoded.duration_s == pytest.approx(1.0, abs=0.01)
        assert dominant_hz(decoded.samples, RATE) == pytest.approx(440, abs=2)
        assert rms(decoded.samples[1000:-1000]) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_ogg_opus_through_pyav() -> None:
    data = av_file("ogg", "libopus", tone(440, 1.0, 48_000), 48_000)
    decoded = decode(data)
    assert decoded.encoding == "ogg_opus"
    assert decoded.duration_s == pytest.approx(1.0, abs=0.05)
    assert dominant_hz(decoded.samples, RATE) == pytest.approx(440, abs=3)


def test_raw_pcm_is_a_zero_copy_view_and_decodes() -> None:
    stereo = np.stack([tone(440, 1.0, 8000), tone(440, 1.0, 8000)], axis=1)
    data = np.round(stereo * 32767).astype("<i2").tobytes()
    view = pcm16_view(data, 2)
    assert view.shape == (8000, 2)
    assert np.shares_memory(view, np.frombuffer(data, dtype=np.uint8))
    decoded = decode(data, "pcm_s16le", sample_rate=8000, channels=2)
    assert decoded.source_rate == 8000 and decoded.source_channels == 2
    assert len(decoded.samples) == RATE
    assert dominant_hz(decoded.samples, RATE) == pytest.approx(440, abs=2)


def _pcm(seconds: float, rate: int = RATE) -> bytes:
    return bytes(int(seconds * rate) * 2)


GOOD_WAV = wav_file(tone(440, 0.5, RATE), RATE, 16)


PCM = "pcm_s16le"
BAD_INPUTS = {
    "empty": (b"", {}, InvalidInput, "empty"),
    "not-audio": (b"this is not audio at all" * 10, {}, InvalidInput, "unrecognised audio"),
    "truncated-wav": (GOOD_WAV[:-1000], {}, InvalidInput, "truncated WAV"),
    "wav-header-cut": (GOOD_WAV[:30], {}, InvalidInput, "WAV"),
    "wav-header-only": (GOOD_WAV[:44], {}, InvalidInput, "truncated WAV"),
    "wav-streamed-empty": (wav_header(RATE, data_bytes=0), {}, InvalidInput, "no samples"),
    "ogg-junk": (b"OggS" + bytes(200), {"encoding": "ogg_opus"}, InvalidInput, "ogg_opus"),
    "flac-junk": (b"\x01\x02\x03" * 100, {"encoding": "flac"}, InvalidInput, "flac"),
    "wav-declared-flac": (GOOD_WAV, {"encoding": "flac"}, InvalidInput, "looks like wav"),
    "unknown-encoding": (GOOD_WAV, {"encoding": "speex"}, InvalidInput, "unsupported audio encoding"),
    "pcm-no-rate": (_pcm(1), {"encoding": PCM}, InvalidInput, "sample_rate_hz"),
    "pcm-odd-length": (_pcm(1) + b"\x00", {"encoding": PCM, "sample_rate": RATE}, InvalidInput,
                       "whole number"),
    "pcm-rate-100": (_pcm(1), {"encoding": PCM, "sample_rate": 100}, InvalidInput, "outside"),
    "pcm-9-channels": (_pcm(1), {"encoding": PCM, "sample_rate": RATE, "channels": 9}, InvalidInput,
                       "channels"),
    "wav-nan": (wav_file(np.full(800, np.nan), RATE, 32, floating=True), {}, InvalidInput, "NaN"),
    "pcm-too-long": (_pcm(3), {"encoding": PCM, "sample_rate": RATE, "max_seconds": 2.0}, LimitExceeded,
                     "limit"),
    "wav-too-long": (GOOD_WAV, {"max_seconds": 0.25}, LimitExceeded, "limit"),
}


@pytest.mark.parametrize("data,kwargs,error,words", list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_input_raises_a_domain_error_naming_the_problem(
        data: bytes, kwargs: dict[str, object], error: type[VoxlineError], words: str) -> None:
    options = dict(kwargs)
    encoding = options.pop("encoding", None)
    with pytest.raises(error, match=words):
        decode(data, encoding, **options)  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore::scipy.io.wavfile.WavFileWarning")
def test_corrupted_wav_headers_never_escape_as_other_exceptions() -> None:
    # scipy raises UnboundLocalError, ZeroDivisionError, ... on some corrupt headers
    rng = random.Random(7)
    stereo = wav_file(np.stack([tone(440, 0.1, RATE)] * 2, axis=1), RATE, 16)
    outcomes = set()
    for _ in range(400):
        data = bytearray(stereo)
        for _ in range(rng.randint(1, 3)):
            data[rng.randint(4, 43)] = rng.randint(0, 255)
        try:
            decode(bytes(data), max_seconds=120)
            outcomes.add("ok")
        except (InvalidInput, LimitExceeded) as exc:
            outcomes.add(type(exc).__name__)
    assert "InvalidInput" in outcomes
