"""What a turn's spans say, beyond timing: OpenInference attributes (read by Arize Phoenix) next to
the GenAI semantic conventions, the user's words only when asked for, and the turn's milestones.

- Kinds: the turn is a CHAIN, ``llm`` an LLM span, ``stt`` and ``tts`` TOOL spans
  (``openinference.span.kind``); the gRPC hops get theirs from ``voxline.common.telemetry``.
- Conversation: every turn carries ``session.id`` (Phoenix groups a conversation's traces by it)
  and ``gen_ai.conversation.id``; the Converse stream itself is not traced.
- Content (the transcript, the reply, the messages sent to the LLM, each sentence spoken) is user
  data: recorded only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is true, the
  variable the OpenTelemetry GenAI instrumentations use for the same choice.
- Milestones are span events (``voxline.common.turn_events``): the first token and the first clause
  handed to TTS on ``llm``, the first audio sent on the turn.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

from voxline.orchestrator.domain import ChatMessage, LlmSummary

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
KIND = "openinference.span.kind"

TURN_ATTRIBUTES = {KIND: "CHAIN"}
STT_ATTRIBUTES = {KIND: "TOOL", "tool.name": "speech_to_text"}
TTS_ATTRIBUTES = {KIND: "TOOL", "tool.name": "text_to_speech"}
LLM_ATTRIBUTES = {KIND: "LLM", "gen_ai.operation.name": "chat"}

Attributes = dict[str, str | bool | int | float | list[str]]


def capture_content(environ: Mapping[str, str] | None = None) -> bool:
    """Whether spans may hold the user's words (opt-in)."""
    env = os.environ if environ is None else environ
    return env.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def session_attributes(session_id: str) -> Attributes:
    return {"session.id": session_id, "gen_ai.conversation.id": session_id} if session_id else {}


def text_io(input_text: str | None = None, output_text: str | None = None) -> Attributes:
    """OpenInference ``input.value`` / ``output.value`` (plain text)."""
    out: Attributes = {}
    if input_text is not None:
        out.update({"input.value": input_text, "input.mime_type": "text/plain"})
    if output_text is not None:
        out.update({"output.value": output_text, "output.mime_type": "text/plain"})
    return out


def llm_input(messages: Sequence[ChatMessage]) -> Attributes:
    """The messages sent to the LLM, as OpenInference flattens them; input.value is the last one."""
    out: Attributes = {}
    for index, message in enumerate(messages):
        out[f"llm.input_messages.{index}.message.role"] = message.role
        out[f"llm.input_messages.{index}.message.content"] = message.content
    if messages:
        out.update(text_io(input_text=messages[-1].content))
    return out


def llm_output(text: str) -> Attributes:
    return {"llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": text, **text_io(output_text=text)}


def llm_summary(summary: LlmSummary) -> Attributes:
    """The reply's provider, model and tokens under both conventions."""
    return {
        "gen_ai.system": summary.provider,
        "gen_ai.provider.name": summary.provider,
        "gen_ai.request.model": summary.model,
        "gen_ai.response.model": summary.model,
        "gen_ai.usage.input_tokens": summary.input_tokens,
        "gen_ai.usage.output_tokens": summary.output_tokens,
        "gen_ai.response.finish_reasons": [summary.finish_reason or "stop"],
        "llm.provider": summary.provider,
        "llm.system": summary.provider,
        "llm.model_name": summary.model,
        "llm.token_count.prompt": summary.input_tokens,
        "llm.token_count.completion": summary.output_tokens,
        "llm.token_count.total": summary.input_tokens + summary.output_tokens,
        "voxline.llm.cache_hit": summary.cache_hit,
    }


def epoch_ns(perf_counter_at: float) -> int:
    """A ``time.perf_counter()`` instant as the wall-clock ns a span event takes."""
    return time.time_ns() - int((time.perf_counter() - perf_counter_at) * 1e9)
