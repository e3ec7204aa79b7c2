"""GPU figures comparable to the baseline's table: STT ms for a ~3 s clip, TTS ms per sentence.

Standalone on purpose: it needs only torch and transformers (numpy optional), not voxline, so it runs
on a bare GPU machine with ``python3 bench/gpu.py``. Without a CUDA GPU it prints
"skipped: no CUDA GPU" and exits 0.

- STT: faster-whisper tiny and base on cuda float16 when ctranslate2 with CUDA loads (and the models
  are in the local cache); otherwise a same-architecture stand-in: transformers
  ``WhisperForConditionalGeneration`` built from the Whisper tiny/base configuration with RANDOM
  weights, decoding a fixed number of tokens (what a short sentence's transcript takes).
- TTS: ``VitsModel`` built from the facebook/mms-tts-fra configuration (the values are written out
  below) with RANDOM weights, synthesising a French sentence's worth of input tokens.

Weights are random because nothing can be downloaded there: the latency of a same-size model doing
the same amount of work is the point, not what it says. (VITS output length depends on its duration
predictor, so with random weights the audio length is reported next to each figure.)
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

#: The baseline's own figures (RTX 4090, faster-whisper tiny, MMS-TTS fra), milliseconds.
BASELINE = {"stt_ms": 25.0, "tts_ms": 115.0, "tts_min_ms": 86.0, "tts_max_ms": 277.0}

#: Whisper sizes (openai/whisper-tiny and openai/whisper-base config.json values).
WHISPER_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"d_model": 384, "encoder_layers": 4, "decoder_layers": 4, "encoder_attention_heads": 6,
             "decoder_attention_heads": 6, "encoder_ffn_dim": 1536, "decoder_ffn_dim": 1536},
    "base": {"d_model": 512, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 8,
             "decoder_attention_heads": 8, "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048},
}
WHISPER_COMMON: dict[str, Any] = {"vocab_size": 51865, "num_mel_bins": 80, "max_source_positions": 1500,
                  "max_target_positions": 448}

#: facebook/mms-tts-fra config.json (VITS); they equal transformers' VitsConfig defaults except
#: vocab_size, which is the size of the French character vocabulary (only a small embedding table).
MMS_TTS_FRA: dict[str, Any] = {
    "vocab_size": 40, "hidden_size": 192, "num_hidden_layers": 6, "num_attention_heads": 2,
    "window_size": 4, "use_bias": True, "ffn_dim": 768, "layerdrop": 0.1, "ffn_kernel_size": 3,
    "flow_size": 192, "spectrogram_bins": 513, "hidden_act": "relu", "hidden_dropout": 0.1,
    "attention_dropout": 0.1, "activation_dropout": 0.1, "initializer_range": 0.02,
    "layer_norm_eps": 1e-5, "use_stochastic_duration_prediction": True, "num_speakers": 1,
    "speaker_embedding_size": 0, "upsample_initial_channel": 512, "upsample_rates": [8, 8, 2, 2],
    "upsample_kernel_sizes": [16, 16, 4, 4], "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "leaky_relu_slope": 0.1,
    "depth_separable_channels": 2, "depth_separable_num_layers": 3, "duration_predictor_flow_bins": 10,
    "duration_predictor_tail_bound": 5.0, "duration_predictor_kernel_size": 3,
    "duration_predictor_dropout": 0.5, "duration_predictor_num_flows": 4,
    "duration_predictor_filter_channels": 256, "prior_encoder_num_flows": 4,
    "prior_encoder_num_wavenet_layers": 4, "posterior_encoder_num_wavenet_layers": 16,
    "wavenet_kernel_size": 5, "wavenet_dilation_rate": 1, "wavenet_dropout": 0.0,
    "speaking_rate": 1.0, "noise_scale": 0.667, "noise_scale_duration": 0.8, "sampling_rate": 16000,
}

#: A French sentence like the baseline's replies; MMS-TTS reads characters, interleaved with a blank
#: token (add_blank), so the model sees about 2 × len(text) + 1 ids.
FRENCH_SENTENCE = "Bonjour, je peux vous aider à réserver une table pour ce soir."
CLIP_SECONDS = 3.0
SAMPLE_RATE = 16000


def summarise(times_ms: list[float]) -> dict[str, float]:
    """avg / min / max / n of a list of milliseconds."""
    return {"n": len(times_ms), "avg_ms": statistics.fmean(times_ms), "min_ms": min(times_ms),
            "max_ms": max(times_ms)}


def timed_runs(fn: Callable[[], Any], runs: int, warmup: int, sync: Callable[[], None]) -> list[float]:
    """Milliseconds of ``runs`` calls of ``fn`` after ``warmup`` untimed ones (GPU synchronised)."""
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def speech_like_clip(seconds: float) -> Any:
    """A deterministic voiced-sounding float32 clip (harmonics with a syllable envelope), as numpy."""
    import numpy as np

    t = np.arange(int(seconds * SAMPLE_RATE), dtype=np.float32) / SAMPLE_RATE
    pitch = 140.0 + 20.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * t))
    return (0.2 * voice * envelope).astype(np.float32)


def faster_whisper_figures(size: str, runs: int, warmup: int) -> dict[str, Any]:
    """faster-whisper on cuda float16; raises when it (or the model) cannot be loaded."""
    from faster_whisper import WhisperModel  # only inside: absent on the GPU machine

    model = WhisperModel(size, device="cuda", compute_type="float16", local_files_only=True)
    clip = speech_like_clip(CLIP_SECONDS)

    def transcribe() -> None:
        segments, _ = model.transcribe(clip, beam_size=1, language="fr", vad_filter=False)
        list(segments)

    times = timed_runs(transcribe, runs, warmup, lambda: None)
    return {"engine": f"faster-whisper {size} cuda float16 (real weights)", **summarise(times)}


def whisper_standin_figures(size: str, device: str, dtype: Any, runs: int, warmup: int,
                            decode_tokens: int) -> dict[str, Any]:
    """A random-weight Whisper of the same size: encoder on 30 s of mel frames (as Whisper always
    pads), then greedy decoding of exactly ``decode_tokens`` tokens with the KV cache."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(**WHISPER_COMMON, **WHISPER_SIZES[size])
    torch.manual_seed(0)
    # Through Any: transformers types ``to`` as a decorated method that mypy cannot call.
    model: Any = WhisperForConditionalGeneration(config)
    model = model.to(device=device, dtype=dtype).eval()
    features = torch.randn(1, config.num_mel_bins, 2 * config.max_source_positions, device=device,
                           dtype=dtype)
    # Transcribe in French: <|startoftranscript|><|fr|><|transcribe|><|notimestamps|>.
    prompt = torch.tensor([[50258, 50265, 50359, 50363]], device=device)

    # transformers 5.x renamed the KV-cache argument from past_key_values to cache; take either.
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @torch.inference_mode()
    def transcribe() -> None:
        encoded = model.model.encoder(features).last_hidden_state
        past = None
        ids = prompt
        for _ in range(decode_tokens):
            out = model(encoder_outputs=(encoded,), decoder_input_ids=ids, use_cache=True,
                        **{cache_arg: past})
            past = out.get(cache_arg)
            ids = out.logits[:, -1:].argmax(-1)

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = timed_runs(transcribe, runs, warmup, sync)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {"engine": f"transformers Whisper {size} config ({params:.0f}M params, RANDOM weights), "
                      f"{device} {str(dtype).removeprefix('torch.')}, {decode_tokens} decoded tokens",
            **summarise(times)}


def mms_tts_figures(device: str, dtype: Any, runs: int, warmup: int) -> dict[str, Any]:
    """A random-weight VitsModel with the mms-tts-fra configuration synthesising one French sentence."""
    import torch
    from transformers import VitsConfig, VitsModel

    config = VitsConfig(**MMS_TTS_FRA)
    torch.manual_seed(0)
    model: Any = VitsModel(config)
    model = model.to(device=device, dtype=dtype).eval()
    n_ids = 2 * len(FRENCH_SENTENCE) + 1
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, config.vocab_size, (1, n_ids), generator=generator)
    ids[0, ::2] = 0  # the blank token between characters, as the MMS tokenizer inserts
    ids = ids.to(device)
    audio_seconds: list[float] = []

    @torch.inference_mode()
    def synthesise() -> None:
        waveform = model(input_ids=ids).waveform
        audio_seconds.append(waveform.shape[-1] / config.sampling_rate)

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = timed_runs(synthesise, runs, warmup, sync)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {"engine": f"transformers VitsModel mms-tts-fra config ({params:.0f}M params, RANDOM weights), "
                      f"{device} {str(dtype).removeprefix('torch.')}, {n_ids} input ids",
            "audio_seconds_avg": statistics.fmean(audio_seconds), **summarise(times)}


def line(name: str, fig: dict[str, Any]) -> str:
    extra = f"  (audio {fig['audio_seconds_avg']:.2f} s)" if "audio_seconds_avg" in fig else ""
    return (f"  {name:<12} avg {fig['avg_ms']:7.1f} ms   min {fig['min_ms']:7.1f}   max {fig['max_ms']:7.1f}"
            f"   n={fig['n']}{extra}\n      {fig['engine']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu only to test this script (float32) [default: cuda]")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per figure [default: 10]")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first [default: 2]")
    parser.add_argument("--decode-tokens", type=int, default=24,
                        help="tokens the Whisper stand-in decodes [default: 24]")
    parser.add_argument("--sizes", default="tiny,base", help="Whisper sizes [default: tiny,base]")
    args = parser.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA GPU (torch.cuda.is_available() is False)")
        return 0
    device = args.device
    dtype = torch.float16 if device == "cuda" else torch.float32
    warmup = args.warmup if device == "cuda" else min(args.warmup, 1)
    where = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (test mode, float32)"
    print(f"voxline GPU bench: {where}; torch {torch.__version__}; runs={args.runs} warmup={warmup}")
    print(f"STT: a {CLIP_SECONDS:.0f} s clip; TTS: one French sentence ({len(FRENCH_SENTENCE)} chars)")
    results: dict[str, Any] = {}
    for size in [s for s in args.sizes.split(",") if s]:
        figure: dict[str, Any] | None = None
        if device == "cuda":
            try:
                figure = faster_whisper_figures(size, args.runs, warmup)
            except Exception as exc:  # ImportError, CUDA-less ctranslate2, model not cached, ...
                print(f"  faster-whisper {size} on cuda float16 not usable here ({type(exc).__name__}: "
                      f"{exc}); using a same-architecture stand-in with random weights")
        if figure is None:
            figure = whisper_standin_figures(size, device, dtype, args.runs, warmup, args.decode_tokens)
        results[f"stt_{size}"] = figure
        print(line(f"STT {size}", figure))
    results["tts_mms_fra"] = mms_tts_figures(device, dtype, args.runs, warmup)
    print(line("TTS MMS fra", results["tts_mms_fra"]))
    print("Random weights: nothing can be downloaded there; the latency of a same-size model is the point.")
    print(f"baseline (RTX 4090): STT {BASELINE['stt_ms']:.0f} ms (faster-whisper tiny)   TTS "
          f"{BASELINE['tts_ms']:.0f} ms per reply "
          f"({BASELINE['tts_min_ms']:.0f}–{BASELINE['tts_max_ms']:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
