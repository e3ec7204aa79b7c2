"""Client helpers for the TTS tests: call Synthesize and check what comes back."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from voxline.common.audio import decode, read_streamed_wav
from voxline.v1 import audio_pb2, tts_pb2, tts_pb2_grpc

#: Largest audio payload the server may put in one message.
MAX_CHUNK_BYTES = 32 * 1024


@dataclass
class Synthesis:
    """Everything one Synthesize call returned."""

    format: audio_pb2.AudioFormat
    chunks: list[tts_pb2.AudioChunk] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        return b"".join(c.data for c in self.chunks)

    def samples(self) -> np.ndarray:
        """The audio as int16 samples (WAV header checked and removed for WAV)."""
        if self.format.encoding == audio_pb2.WAV:
            check_streaming_wav_header(self.data, self.format.sample_rate_hz)
            rate, samples = read_streamed_wav(self.data)
            assert rate == self.format.sample_rate_hz
            # The general decoder (scipy's WAV reader) accepts the streamed header too.
            decoded = decode(self.data, target_rate=rate)
            assert (decoded.encoding, len(decoded.samples)) == ("wav", len(samples))
            return samples
        assert self.format.encoding == audio_pb2.PCM_S16LE
        assert len(self.data) % 2 == 0, "raw PCM16 must be a whole number of samples"
        return np.frombuffer(self.data, dtype="<i2")

    def seconds(self) -> float:
        return len(self.samples()) / self.format.sample_rate_hz


def synthesize(stub: tts_pb2_grpc.TextToSpeechStub, text: str, voice: str = "",
               encoding: int = audio_pb2.WAV, sample_rate: int = 0) -> Synthesis:
    """One Synthesize call; asserts the stream's shape (format first, then bounded audio chunks)."""
    request = tts_pb2.SynthesizeRequest(text=text, voice=voice, output_format=audio_pb2.AudioFormat(
        encoding=encoding, sample_rate_hz=sample_rate))
    replies = list(stub.Synthesize(request, timeout=60))
    assert replies and replies[0].WhichOneof("event") == "format", "the format must come first"
    result = Synthesis(replies[0].format)
    for reply in replies[1:]:
        assert reply.WhichOneof("event") == "audio", "only audio after the format"
        assert 0 < len(reply.audio.data) <= MAX_CHUNK_BYTES
        result.chunks.append(reply.audio)
    indexes = [c.sentence_index for c in result.chunks]
    assert indexes == sorted(indexes), "sentences arrive in order"
    return result


def check_streaming_wav_header(data: bytes, rate: int) -> None:
    """The first 44 bytes are a mono PCM16 WAV header at ``rate`` with streaming (unknown) sizes."""
    riff, riff_size, wave, fmt, _, pcm, channels, sample_rate, _, _, bits, data_tag, data_size = \
        struct.unpack_from("<4sI4s4sIHHIIHH4sI", data)
    assert (riff, wave, fmt, data_tag) == (b"RIFF", b"WAVE", b"fmt ", b"data")
    assert (pcm, channels, sample_rate, bits) == (1, 1, rate, 16)
    assert riff_size == data_size == 0xFFFFFFFF
