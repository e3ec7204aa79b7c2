"""The conversation so far, kept per Converse stream and given to every turn's LLM call."""

from __future__ import annotations

import collections

from voxline.orchestrator.domain import ChatMessage


class History:
    """The conversation so far (user/assistant pairs), bounded, kept per Converse stream.

    Bounded in turns and in characters: the oldest turns are dropped first, so a long
    conversation stays under the LLM's input limit and lives on (it once failed every turn for
    good once past 32,000 characters)."""

    def __init__(self, max_turns: int, max_chars: int = 0) -> None:
        self._turns: collections.deque[tuple[str, str]] = collections.deque(maxlen=max_turns)
        self._max_chars = max_chars

    def messages(self, system_prompt: str, user_text: str) -> list[ChatMessage]:
        """System prompt, previous turns (the newest that fit ``max_chars``), the new message."""
        if self._max_chars:
            size = sum(len(u) + len(a) for u, a in self._turns)
            while self._turns and size > self._max_chars:
                user, assistant = self._turns.popleft()
                size -= len(user) + len(assistant)
        out = [ChatMessage("system", system_prompt)] if system_prompt else []
        for user, assistant in self._turns:
            out += [ChatMessage("user", user), ChatMessage("assistant", assistant)]
        out.append(ChatMessage("user", user_text))
        return out

    def add(self, user_text: str, reply: str) -> None:
        if self._turns.maxlen:
            self._turns.append((user_text, reply))

    def __len__(self) -> int:
        return len(self._turns)
