"""The conversation so far, kept per Converse stream and given to every turn's LLM call."""

from __future__ import annotations

import collections
from collections.abc import Sequence

from voxline.orchestrator.domain import ChatMessage

_Turn = tuple[str, str, tuple[ChatMessage, ...]]


def _size(turn: _Turn) -> int:
    user, assistant, exchange = turn
    return len(user) + len(assistant) + sum(
        len(m.content) + sum(len(c.arguments_json) + len(c.name) for c in m.tool_calls)
        for m in exchange)


class History:
    """The conversation so far (user/assistant pairs), bounded, kept per Converse stream.

    Bounded in turns and in characters: the oldest turns are dropped first, so a long
    conversation stays under the LLM's input limit and lives on (it once failed every turn for
    good once past 32,000 characters)."""

    def __init__(self, max_turns: int, max_chars: int = 0) -> None:
        self._turns: collections.deque[_Turn] = collections.deque(maxlen=max_turns)
        self._max_chars = max_chars

    def messages(self, system_prompt: str, user_text: str) -> list[ChatMessage]:
        """System prompt, previous turns (the newest that fit ``max_chars``), the new message."""
        if self._max_chars:
            size = sum(_size(t) for t in self._turns)
            while self._turns and size > self._max_chars:
                size -= _size(self._turns.popleft())
        out = [ChatMessage("system", system_prompt)] if system_prompt else []
        for user, assistant, exchange in self._turns:
            out += [ChatMessage("user", user), *exchange]
            if assistant:  # a turn cut during its tool calls has no reply text
                out.append(ChatMessage("assistant", assistant))
        out.append(ChatMessage("user", user_text))
        return out

    def add(self, user_text: str, reply: str, exchange: Sequence[ChatMessage] = ()) -> None:
        """One turn: what the user said, the reply, and between them the turn's tool calls and
        their results (assistant messages with ``tool_calls``, then "tool" messages)."""
        if self._turns.maxlen:
            self._turns.append((user_text, reply, tuple(exchange)))

    def __len__(self) -> int:
        return len(self._turns)
