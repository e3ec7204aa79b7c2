"""TTS streaming benchmark: time to first audio vs total time for a three-sentence reply, and the
real-time factor, per voice, side by side in one run.

    python -m bench.tts_stream [--runs 5] [--vits-models ID_OR_DIR,...] [--vits-device cpu] [--no-piper]

Each voice speaks the same three-sentence reply (French for French voices, English otherwise)
through a real in-process TTS server (gRPC on 127.0.0.1, the production servicer), as PCM at its
native rate. Time to first audio and total time are measured by the client from the call's start;
synthesis time is the server's time inside the voice. RTF = synthesis time / audio seconds (< 1 is
faster than real time). Voices: espeak en and fr, a tiny random VITS model built in a temp dir
(noise, but the real VitsModel code path: a floor for VITS overhead, not MMS quality), Piper joe
when installed, and any real VITS model given with --vits-models. ``measure_stream`` is the
reusable core (``voxline bench`` calls it); it returns ``StreamFigures``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import grpc

from voxline.common.config import ServerConfig
from voxline.common.server import start_server
from voxline.tts.config import TtsConfig
from voxline.tts.engine import SynthesisOutcome
from voxline.tts.loader import warm_up
from voxline.tts.voices import Voice, VoiceBook
from voxline.tts.wiring import build_spec
from voxline.v1 import audio_pb2, tts_pb2, tts_pb2_grpc

#: The reply each voice speaks: three sentences, as an assistant would answer.
THREE_SENTENCES = {
    "en": ("Sure, I can help with that. The next train leaves at half past nine from platform two. "
           "Would you like me to book a seat for you?"),
    "fr": ("Bien sûr, je peux vous aider. Le prochain train part à neuf heures et demie du quai deux. "
           "Voulez-vous que je vous réserve une place ?"),
}


@dataclass(frozen=True)
class StreamFigures:
    """Medians over ``runs`` calls of one voice."""

    voice: str
    runs: int
    #: Call start → first audio chunk at the client.
    first_audio_ms: float
    #: Call start → end of the stream at the client.
    total_ms: float
    #: Server time inside the voice, all three sentences.
    synthesis_ms: float
    #: Length of the reply's audio.
    audio_s: float
    #: synthesis time / audio time.
    rtf: float

    @property
    def first_share(self) -> float:
        """Time to first audio as a fraction of the total: ~1/3 when streaming by sentence."""
        return self.first_audio_ms / self.total_ms if self.total_ms else float("nan")


def text_for(voice: Voice, texts: dict[str, str] = THREE_SENTENCES) -> str:
    """The reply in the voice's language (French voices: fr; anything else: en)."""
    return texts["fr"] if voice.language.lower().startswith("fr") else texts["en"]


async def measure_stream(voices: Sequence[Voice], *, runs: int = 5, warmup_runs: int = 1,
                         texts: dict[str, str] = THREE_SENTENCES) -> list[StreamFigures]:
    """Serve ``voices`` from an in-process TTS server and time ``runs`` calls of each (medians)."""
    outcomes: asyncio.Queue[SynthesisOutcome] = asyncio.Queue()
    spec = build_spec(TtsConfig(), load=lambda _config: VoiceBook(voices),
                            on_finished=outcomes.put_nowait)
    server = await start_server(spec, ServerConfig(port=0))
    results: list[StreamFigures] = []
    try:
        await server.warm_up()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = tts_pb2_grpc.TextToSpeechStub(channel)
            for voice in voices:
                request = tts_pb2.SynthesizeRequest(
                    text=text_for(voice, texts), voice=voice.name,
                    output_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE))
                first, total, synth, audio = [], [], [], []
                for run in range(warmup_runs + runs):
                    started = time.perf_counter()
                    first_at: float | None = None
                    rate = 0
                    pcm_bytes = 0
                    async for reply in stub.Synthesize(request, timeout=300):
                        if reply.HasField("format"):
                            rate = reply.format.sample_rate_hz
                        elif first_at is None:
                            first_at = time.perf_counter()
                        pcm_bytes += len(reply.audio.data)
                    ended = time.perf_counter()
                    outcome = await outcomes.get()
                    if run < warmup_runs:
                        continue
                    first.append(((first_at or ended) - started) * 1000)
                    total.append((ended - started) * 1000)
                    synth.append(outcome.synthesis_seconds * 1000)
                    audio.append(pcm_bytes / 2 / rate)
                audio_s = statistics.median(audio)
                synthesis_ms = statistics.median(synth)
                results.append(StreamFigures(
                    voice=voice.name, runs=runs, first_audio_ms=statistics.median(first),
                    total_ms=statistics.median(total), synthesis_ms=synthesis_ms, audio_s=audio_s,
                    rtf=synthesis_ms / 1000 / audio_s if audio_s else float("nan")))
    finally:
        await server.stop(0)
    return results


def load_bench_voices(tiny_vits_dir: str, *, piper: bool = True, vits_models: Sequence[str] = (),
                      vits_device: str = "cpu") -> list[Voice]:
    """espeak en + fr, the tiny VITS in ``tiny_vits_dir``, Piper joe (if wanted and installed),
    and ``vits_models``; each warmed up."""
    from voxline.tts.espeak import EspeakVoice
    from voxline.tts.vits import VitsVoice

    voices: list[Voice] = [EspeakVoice("en"), EspeakVoice("fr")]
    voices.append(VitsVoice.load(tiny_vits_dir, device=vits_device))
    voices += [VitsVoice.load(m, device=vits_device) for m in vits_models]
    if piper:
        from voxline.tts.piper_voice import PiperVoice

        try:
            voices.append(PiperVoice.load("joe"))
        except ValueError as exc:
            print(f"(piper skipped: {exc})", file=sys.stderr)
    for voice in voices:
        warm_up(voice)
    return voices


def format_table(figures: Sequence[StreamFigures]) -> str:
    """The figures as an aligned text table, one voice a row."""
    header = (f"{'voice':<34} {'first audio ms':>14} {'total ms':>9} {'first/total':>11} "
              f"{'synth ms':>9} {'audio s':>8} {'RTF':>7}")
    rows = [header, "-" * len(header)]
    for f in figures:
        name = f.voice if len(f.voice) <= 34 else "…" + f.voice[-33:]
        rows.append(f"{name:<34} {f.first_audio_ms:>14.1f} {f.total_ms:>9.1f} {f.first_share:>11.2f} "
                    f"{f.synthesis_ms:>9.1f} {f.audio_s:>8.2f} {f.rtf:>7.3f}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tts_stream", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed calls per voice [default: 5]")
    parser.add_argument("--vits-models", default="",
                        help="comma-separated real VITS models (hub id in the local cache, or a directory)")
    parser.add_argument("--vits-device", default="cpu", help="cpu or cuda [default: cpu]")
    parser.add_argument("--no-piper", action="store_true", help="leave the Piper voice out")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead")
    ns = parser.parse_args(argv)
    from voxline.tts.tiny_vits import build_tiny_vits

    with tempfile.TemporaryDirectory(prefix="tiny-vits-") as tiny:
        build_tiny_vits(tiny)
        voices = load_bench_voices(
            tiny, piper=not ns.no_piper, vits_device=ns.vits_device,
            vits_models=[m.strip() for m in ns.vits_models.split(",") if m.strip()])
        figures = asyncio.run(measure_stream(voices, runs=ns.runs))
    if ns.json:
        print(json.dumps([{**asdict(f), "first_share": f.first_share} for f in figures], indent=2))
    else:
        print(f"Three-sentence reply, PCM at the native rate, medians of {ns.runs} runs "
              "(client-side first audio and total; RTF = synthesis s / audio s)")
        print(format_table(figures))
        print("tiny VITS = random weights (noise): the VitsModel code path's floor, not MMS quality.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
