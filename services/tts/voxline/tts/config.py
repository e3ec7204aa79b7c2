"""Configuration of the TTS service: flags, with defaults from ``VOXLINE_TTS_*`` env vars."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence

from voxline.common.config import (
    ConfigError,
    ServerConfig,
    add_server_options,
    option,
    server_config_from_args,
)

#: The offline default: espeak-ng's English voice (native 22050 Hz). French is "espeak:fr".
DEFAULT_VOICE = "espeak:en"


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclasses.dataclass(frozen=True)
class TtsConfig:
    """Everything the TTS service needs to start."""

    server: ServerConfig = dataclasses.field(default_factory=ServerConfig)
    #: Voice used when a request names none; must be one of the configured voices.
    default_voice: str = DEFAULT_VOICE
    #: espeak-ng voice names, served as "espeak:<name>".
    espeak_voices: tuple[str, ...] = ("en", "en-us", "fr", "de", "es")
    #: VITS models (hub ids or local directories), served as "vits:<id or dir>".
    vits_models: tuple[str, ...] = ()
    #: "cpu" or "cuda" (float16 on cuda).
    vits_device: str = "cpu"
    #: Let transformers download VITS weights from the hub (off: local cache or directories only).
    allow_downloads: bool = False
    #: Packaged Piper voices, served as "piper:<name>".
    piper_voices: tuple[str, ...] = ("joe",)
    #: Longest text accepted in one request (RESOURCE_EXHAUSTED beyond).
    max_text_chars: int = 5000
    #: Largest audio payload in one response message.
    chunk_bytes: int = 32 * 1024
    #: Streams synthesising at once, and streams allowed to wait for a slot.
    max_active: int = 2
    max_queued: int = 16
    #: Longest sentence synthesised in one piece (longer ones are cut at a space), characters.
    max_sentence_chars: int = 200
    #: Most audio one request may produce, seconds (RESOURCE_EXHAUSTED beyond).
    max_audio_seconds: float = 180.0
    #: Piper: phonemes per sentence (RESOURCE_EXHAUSTED beyond) and per model call.
    max_sentence_phonemes: int = 1200
    max_phonemes_per_call: int = 120

    def voice_names(self) -> list[str]:
        """The names of every configured voice, in load order."""
        return ([f"espeak:{v}" for v in self.espeak_voices] + [f"vits:{m}" for m in self.vits_models]
                + [f"piper:{p}" for p in self.piper_voices])

    def __post_init__(self) -> None:
        names = self.voice_names()
        if not names:
            raise ConfigError("no voice configured: set --espeak-voices, --vits-models or --piper-voices")
        if self.default_voice not in names:
            raise ConfigError(
                f"--default-voice {self.default_voice!r} is not among the configured voices: "
                f"{', '.join(names)}"
            )
        if not (self.vits_device == "cpu" or self.vits_device.startswith("cuda")):
            raise ConfigError(f"--vits-device must be cpu or cuda[:N], got {self.vits_device!r}")
        for model in self.vits_models:
            # A path (a hub id is "namespace/name"): say so now, not after loading every other voice.
            if model.startswith(("/", "./", "../", "~")) and not os.path.isdir(os.path.expanduser(model)):
                raise ConfigError(f"--vits-models {model!r}: directory not found (give a model "
                                  "directory, or a hub id such as facebook/mms-tts-fra)")
        if self.max_text_chars < 1:
            raise ConfigError("--max-text-chars must be >= 1")
        too_big = self.chunk_bytes > self.server.max_message_bytes // 2
        if self.chunk_bytes < 1024 or self.chunk_bytes % 2 or too_big:
            raise ConfigError("--chunk-bytes must be even, >= 1024 and well under the message size limit")
        if self.max_sentence_chars < 20 or self.max_audio_seconds <= 0:
            raise ConfigError("--max-sentence-chars must be >= 20 and --max-audio-seconds > 0")
        if not 16 <= self.max_phonemes_per_call <= self.max_sentence_phonemes:
            raise ConfigError("--max-phonemes-per-call must be >= 16 and <= --max-sentence-phonemes")
        if self.max_active < 1 or self.max_queued < 0:
            raise ConfigError("--max-active must be >= 1 and --max-queued >= 0")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m voxline.tts``."""
    parser = argparse.ArgumentParser(
        prog="python -m voxline.tts",
        description="voxline text-to-speech service: text in, sentence-streamed audio out.",
    )
    add_server_options(parser, "tts")
    group = parser.add_argument_group("voices")
    option(group, "--default-voice", env="VOXLINE_TTS_DEFAULT_VOICE", default=DEFAULT_VOICE,
           help="voice used when a request names none")
    option(group, "--espeak-voices", env="VOXLINE_TTS_ESPEAK_VOICES", default="en,en-us,fr,de,es",
           help="comma-separated espeak-ng voices, served as espeak:<name> ('' for none)")
    option(group, "--vits-models", env="VOXLINE_TTS_VITS_MODELS", default="",
           help="comma-separated VITS models (hub id like facebook/mms-tts-fra, or a local directory), "
                "served as vits:<id or dir>")
    option(group, "--vits-device", env="VOXLINE_TTS_VITS_DEVICE", default="cpu",
           help="device for VITS models: cpu or cuda (float16 on cuda)")
    option(group, "--allow-downloads", env="VOXLINE_TTS_ALLOW_DOWNLOADS", default=False, type=bool,
           help="let transformers fetch VITS weights from the hub (else local files only)")
    option(group, "--piper-voices", env="VOXLINE_TTS_PIPER_VOICES", default="joe",
           help="comma-separated packaged Piper voices, served as piper:<name> ('' for none)")
    limits = parser.add_argument_group("limits")
    option(limits, "--max-text-chars", env="VOXLINE_TTS_MAX_TEXT_CHARS", default=5000, type=int,
           help="longest text accepted in one request")
    option(limits, "--chunk-bytes", env="VOXLINE_TTS_CHUNK_BYTES", default=32 * 1024, type=int,
           help="largest audio payload in one response message")
    option(limits, "--max-active", env="VOXLINE_TTS_MAX_ACTIVE", default=2, type=int,
           help="streams synthesising at once")
    option(limits, "--max-queued", env="VOXLINE_TTS_MAX_QUEUED", default=16, type=int,
           help="streams waiting for a slot before RESOURCE_EXHAUSTED")
    option(limits, "--max-sentence-chars", env="VOXLINE_TTS_MAX_SENTENCE_CHARS", default=200, type=int,
           help="longest sentence synthesised in one piece; longer ones are cut at a space")
    option(limits, "--max-audio-seconds", env="VOXLINE_TTS_MAX_AUDIO_SECONDS", default=180.0,
           type=float, help="most audio one request may produce (RESOURCE_EXHAUSTED beyond)")
    option(limits, "--max-sentence-phonemes", env="VOXLINE_TTS_MAX_SENTENCE_PHONEMES", default=1200,
           type=int, help="Piper: phonemes in one sentence (RESOURCE_EXHAUSTED beyond)")
    option(limits, "--max-phonemes-per-call", env="VOXLINE_TTS_MAX_PHONEMES_PER_CALL", default=120,
           type=int, help="Piper: phonemes per model call (bounds its memory)")
    return parser


def parse(argv: Sequence[str] | None = None) -> TtsConfig:
    """Parse ``argv`` (flags > env vars > defaults); ConfigError for an unusable value."""
    ns = build_parser().parse_args(argv)
    return TtsConfig(
        server=server_config_from_args(ns),
        default_voice=ns.default_voice,
        espeak_voices=_names(ns.espeak_voices),
        vits_models=_names(ns.vits_models),
        vits_device=ns.vits_device,
        allow_downloads=ns.allow_downloads,
        piper_voices=_names(ns.piper_voices),
        max_text_chars=ns.max_text_chars,
        chunk_bytes=ns.chunk_bytes,
        max_active=ns.max_active,
        max_queued=ns.max_queued,
        max_sentence_chars=ns.max_sentence_chars,
        max_audio_seconds=ns.max_audio_seconds,
        max_sentence_phonemes=ns.max_sentence_phonemes,
        max_phonemes_per_call=ns.max_phonemes_per_call,
    )
