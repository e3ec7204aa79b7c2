"""Spoken questions for ``voxline demo``, made offline by the running TTS service itself.

The TTS service ships a natural US English Piper voice ("piper:joe", 22050 Hz) that Whisper
transcribes reliably; asking the service for it keeps the CLI free of another model dependency. When
the service has no Piper voice, an English espeak-ng voice is used (robotic, Whisper may mishear a word).
"""

from __future__ import annotations

import grpc

from voxline.v1 import audio_pb2, tts_pb2, tts_pb2_grpc

#: Short questions a small local model answers in a sentence or two.
QUESTIONS = (
    "What is the capital of France?",
    "How many days are there in a week?",
    "What color is the sky on a clear day?",
    "Can you name a fruit that is yellow?",
    "What is the boiling point of water?",
    "How many legs does a spider have?",
    "What is the largest planet in our solar system?",
    "Which animal is known as the king of the jungle?",
    "What do bees make?",
    "How many hours are there in a day?",
)

#: Voices tried for the user's speech, most natural first.
PREFERRED_VOICES = ("piper:joe", "espeak:en-us", "espeak:en")

#: Silence around the question, as a microphone recording would have, seconds.
PAD_SECONDS = 0.3


def pick_voice(available: list[str]) -> str:
    """The most natural English voice among ``available`` ("" → the server's default)."""
    for name in PREFERRED_VOICES:
        if name in available:
            return name
    return ""


class QuestionSpeaker:
    """Synthesises questions as WAV bytes with the TTS service at ``address``."""

    def __init__(self, address: str) -> None:
        self._address = address
        self.voice = ""

    async def choose_voice(self) -> str:
        """Ask the server for its voices and keep the most natural English one."""
        async with grpc.aio.insecure_channel(self._address) as channel:
            stub = tts_pb2_grpc.TextToSpeechStub(channel)
            reply = await stub.ListVoices(tts_pb2.ListVoicesRequest(), timeout=10)
        self.voice = pick_voice([v.name for v in reply.voices])
        return self.voice or "the server's default"

    async def speak(self, text: str) -> bytes:
        """A WAV file's bytes of ``text`` spoken, with a little silence on both sides."""
        from voxline.common.audio import wav_header  # imports scipy (~2 s): only when used

        request = tts_pb2.SynthesizeRequest(
            text=text, voice=self.voice,
            output_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE))
        rate = 0
        parts: list[bytes] = []
        async with grpc.aio.insecure_channel(self._address) as channel:
            stub = tts_pb2_grpc.TextToSpeechStub(channel)
            async for response in stub.Synthesize(request, timeout=60):
                if response.WhichOneof("event") == "format":
                    rate = response.format.sample_rate_hz
                else:
                    parts.append(response.audio.data)
        if not rate or not parts:
            raise RuntimeError(f"the TTS service returned no audio for {text!r}")
        pad = b"\x00\x00" * int(rate * PAD_SECONDS)
        pcm = pad + b"".join(parts) + pad
        return wav_header(rate, 1, len(pcm)) + pcm
