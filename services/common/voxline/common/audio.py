"""Audio codecs in memory (never through temp files).

Decoding: raw PCM s16le is viewed with ``np.frombuffer`` (zero copy); WAV goes through
``scipy.io.wavfile``; FLAC, OGG/Opus, MP3 and AIFF through PyAV. Everything comes out as mono
float32 at the requested rate (16 kHz for Whisper). Encoding: float32 → PCM s16le and a streaming
WAV header, plus a polyphase resampler.

Encodings are plain strings here ("pcm_s16le", "wav", ...) so engines need no protobuf import.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from voxline.common.errors import InvalidInput, LimitExceeded

WHISPER_RATE = 16_000
#: Sample rates accepted on input (below: not speech; above: not audio hardware).
MIN_RATE, MAX_RATE = 1_000, 768_000
ENCODINGS = ("pcm_s16le", "wav", "flac", "ogg_opus", "mp3", "aiff")
CONTAINERS = ("wav", "flac", "ogg_opus", "mp3", "aiff")


@dataclass(frozen=True)
class DecodedAudio:
    """Mono float32 samples in [-1, 1] at ``sample_rate``, and what they came from."""

    samples: np.ndarray
    sample_rate: int
    source_rate: int
    source_channels: int
    encoding: str

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0


def sniff_encoding(data: bytes) -> str | None:
    """Guess a container from its magic bytes; None when unknown."""
    head = data[:12]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg_opus"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0):
        return "mp3"
    return None


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Polyphase resampling of a 1-D float32 signal; returns the input when rates match."""
    if src_rate == dst_rate or len(samples) == 0:
        return samples.astype(np.float32, copy=False)
    ratio = Fraction(dst_rate, src_rate).limit_denominator(1000)
    from scipy import signal  # imported on first use: scipy.signal costs ~1-2 s to import

    out = signal.resample_poly(samples, ratio.numerator, ratio.denominator)
    return np.asarray(out, dtype=np.float32)


def _to_mono(frames: np.ndarray) -> np.ndarray:
    if frames.ndim == 1:
        return frames
    mono: np.ndarray = frames.mean(axis=1, dtype=np.float32)
    return mono


def _int_to_float(data: np.ndarray) -> np.ndarray:
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if data.dtype == np.int16:
        return data.astype(np.float32) / 32768.0
    if data.dtype == np.int32:  # 24-bit WAV is read left-justified into int32
        return data.astype(np.float32) / 2147483648.0
    if data.dtype == np.int64:
        return (data / 9223372036854775808.0).astype(np.float32)
    return data.astype(np.float32, copy=False)


def pcm16_view(data: bytes, channels: int) -> np.ndarray:
    """A zero-copy int16 view of raw little-endian PCM, shaped (frames, channels)."""
    frame = 2 * channels
    if len(data) % frame:
        raise InvalidInput(
            f"raw PCM length {len(data)} bytes is not a whole number of {channels}-channel "
            "16-bit frames"
        )
    view = np.frombuffer(data, dtype="<i2")
    return view.reshape(-1, channels) if channels > 1 else view


def _decode_pcm(data: bytes, rate: int, channels: int) -> tuple[np.ndarray, int, int]:
    if rate <= 0:
        raise InvalidInput("raw PCM (PCM_S16LE) needs sample_rate_hz > 0 in the audio format")
    channels = channels or 1
    if not 1 <= channels <= 8:
        raise InvalidInput(f"raw PCM channels must be 1..8, got {channels}")
    frames = pcm16_view(data, channels)
    return _to_mono(_int_to_float(frames)), rate, channels


def _wav_reader(data: bytes) -> io.BytesIO:
    """A file for scipy, after rejecting a truncated WAV (scipy would only warn and return the
    frames it found). A streamed WAV (data size 0 or 0xFFFFFFFF: unknown) or a wrong RIFF size
    gets the real sizes patched into a copy, so scipy reads it without warnings."""
    offset, size = 12, len(data)
    while offset + 8 <= size:
        chunk_id, chunk_size = struct.unpack_from("<4sI", data, offset)
        available = size - offset - 8
        if chunk_id == b"data":
            streamed = chunk_size in (0, 0xFFFFFFFF)
            if not streamed and chunk_size > available:
                raise InvalidInput(
                    f"truncated WAV: the header announces {chunk_size} bytes of audio, "
                    f"only {available} are present"
                )
            if not streamed and struct.unpack_from("<I", data, 4)[0] == size - 8:
                return io.BytesIO(data)
            patched = bytearray(data)
            struct.pack_into("<I", patched, 4, size - 8)
            if streamed:
                struct.pack_into("<I", patched, offset + 4, available)
            return io.BytesIO(patched)
        offset += 8 + chunk_size + (chunk_size & 1)
    raise InvalidInput("truncated WAV: no complete 'data' chunk")


def _decode_wav(data: bytes) -> tuple[np.ndarray, int, int]:
    reader = _wav_reader(data)
    try:
        from scipy.io import wavfile

        rate, frames = wavfile.read(reader)
    except Exception as exc:  # scipy fails on corrupt headers in many ways (even UnboundLocalError)
        raise InvalidInput(f"cannot read WAV data: {exc}") from exc
    channels = 1 if frames.ndim == 1 else frames.shape[1]
    return _to_mono(_int_to_float(frames)), int(rate), channels


#: The one FFmpeg demuxer allowed to open each container encoding. Naming it stops FFmpeg from
#: probing: a probe can pick a demuxer that follows file names or URLs inside the "audio" (concat,
#: HLS playlists, DASH manifests, image sequences...), which would let a client read server files.
DEMUXERS = {"flac": "flac", "ogg_opus": "ogg", "mp3": "mp3", "aiff": "aiff"}


def _decode_av(data: bytes, encoding: str, max_seconds: float | None) -> tuple[np.ndarray, int, int]:
    """Decode a compressed container with PyAV, counting samples as they come: decoding stops as
    soon as the audio passes ``max_seconds``, so a small file that expands to an hour of audio (a
    decompression bomb) never holds more than the limit in memory."""
    import av

    demuxer = DEMUXERS[encoding]
    chunks: list[np.ndarray] = []
    try:
        # No options, no protocols: the bytes are read from memory by the one named demuxer.
        with av.open(io.BytesIO(data), mode="r", format=demuxer) as container:
            if not container.streams.audio:
                raise InvalidInput(f"no audio stream found in the {encoding} data")
            stream = container.streams.audio[0]
            rate = int(stream.rate or stream.codec_context.sample_rate or 0)
            if not MIN_RATE <= rate <= MAX_RATE:
                raise InvalidInput(f"sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")
            channels = int(stream.codec_context.channels or 1)
            limit = None if max_seconds is None else int(max_seconds * rate) + 1
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            count = 0

            def take(frames: list[av.AudioFrame]) -> None:
                nonlocal count
                for out in frames:
                    chunk = out.to_ndarray().reshape(-1)
                    count += len(chunk)
                    if limit is not None and count > limit:
                        chunks.clear()  # release what was decoded before raising
                        raise LimitExceeded(
                            f"audio is longer than the limit of {max_seconds:g} s "
                            f"(decoding stopped at {count / rate:.1f} s)"
                        )
                    chunks.append(chunk)

            for frame in container.decode(stream):
                take(resampler.resample(frame))
            take(resampler.resample(None))
    except (InvalidInput, LimitExceeded):
        raise
    except (av.error.FFmpegError, ValueError, OSError) as exc:  # type: ignore[attr-defined]
        raise InvalidInput(f"cannot decode {encoding} audio: {_first_line(exc)}") from exc
    if not chunks:
        raise InvalidInput(f"the {encoding} data holds no audio frames")
    return np.concatenate(chunks).astype(np.float32, copy=False), rate, channels


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """A library error's message, short enough to return to a client."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:limit]


def decode(
    data: bytes,
    encoding: str | None = None,
    *,
    sample_rate: int = 0,
    channels: int = 0,
    target_rate: int = WHISPER_RATE,
    max_seconds: float | None = None,
) -> DecodedAudio:
    """Decode ``data`` to mono float32 at ``target_rate``.

    ``encoding`` None (or "") sniffs the container; raw PCM must be named and needs
    ``sample_rate`` (and ``channels``, default 1). Raises InvalidInput for anything unreadable and
    LimitExceeded when the audio is longer than ``max_seconds``.
    """
    if not data:
        raise InvalidInput("the audio is empty (0 bytes)")
    if not encoding:
        encoding = sniff_encoding(data)
        if encoding is None:
            raise InvalidInput(
                "unrecognised audio: not WAV, FLAC, OGG, MP3 or AIFF; for raw PCM set the "
                "encoding to PCM_S16LE with sample_rate_hz and channels"
            )
    if encoding not in ENCODINGS:
        raise InvalidInput(f"unsupported audio encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    if encoding in CONTAINERS:
        # A container must start with its own magic bytes: anything else (a playlist, a concat
        # script, another container) is refused before any demuxer sees it.
        found = sniff_encoding(data)
        if found != encoding:
            looks = f"looks like {found}" if found else "does not start like any supported container"
            raise InvalidInput(f"the data {looks}, not {encoding} as its format says")
    if encoding == "pcm_s16le":
        mono, rate, source_channels = _decode_pcm(data, sample_rate, channels)
    elif encoding == "wav":
        mono, rate, source_channels = _decode_wav(data)
    else:
        mono, rate, source_channels = _decode_av(data, encoding, max_seconds)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InvalidInput(f"sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")
    seconds = len(mono) / rate
    if max_seconds is not None and seconds > max_seconds:
        raise LimitExceeded(f"audio is {seconds:.1f} s long; the limit is {max_seconds:g} s")
    if len(mono) == 0:
        raise InvalidInput("the audio holds no samples")
    if not np.all(np.isfinite(mono)):
        raise InvalidInput("the audio holds NaN or infinite samples")
    out = resample(np.ascontiguousarray(mono, dtype=np.float32), rate, target_rate)
    return DecodedAudio(out, target_rate, rate, source_channels, encoding)


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] → little-endian int16 bytes (clipped)."""
    clipped = np.clip(samples, -1.0, 1.0)
    data: bytes = (clipped * 32767.0).astype("<i2").tobytes()
    return data


def wav_header(sample_rate: int, channels: int = 1, data_bytes: int | None = None) -> bytes:
    """A 44-byte PCM16 WAV header; ``data_bytes`` None writes 0xFFFFFFFF (streaming, length unknown)."""
    block = 2 * channels
    if data_bytes is None:
        riff_size = data_size = 0xFFFFFFFF
    else:
        data_size = data_bytes
        riff_size = 36 + data_bytes
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", riff_size, b"WAVE", b"fmt ", 16, 1, channels,
        sample_rate, sample_rate * block, block, 16, b"data", data_size,
    )


def to_wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """Mono float32 samples → a complete in-memory PCM16 WAV file."""
    pcm = float_to_pcm16(samples)
    return wav_header(sample_rate, 1, len(pcm)) + pcm


def read_streamed_wav(data: bytes) -> tuple[int, np.ndarray]:
    """Read a WAV whose header may carry 0xFFFFFFFF sizes (as voxline streams it): (rate, int16)."""
    if len(data) < 44 or data[:4] != b"RIFF":
        raise InvalidInput("not a WAV stream")
    rate = struct.unpack_from("<I", data, 24)[0]
    return int(rate), np.frombuffer(data[44:len(data) - (len(data) - 44) % 2], dtype="<i2")


def seconds_of_pcm16(num_bytes: int, sample_rate: int, channels: int = 1) -> float:
    """Duration of ``num_bytes`` of PCM16 audio."""
    return num_bytes / (2 * channels * sample_rate) if sample_rate else math.nan
