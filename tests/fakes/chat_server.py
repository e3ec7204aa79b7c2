"""A scriptable fake of Groq's and Cerebras's streaming chat-completions endpoints.

A plain asyncio HTTP/1.1 server running its own event loop in a background thread, so any test (sync
or async, any event loop) and any benchmark can point the real ``groq`` / ``cerebras-cloud-sdk``
clients at it. It speaks the OpenAI-style SSE wire format both SDKs parse:

- ``POST /openai/v1/chat/completions`` (Groq's path): chunks with ``x_groq`` (id, and usage on the
  last chunk);
- ``POST /v1/chat/completions`` (Cerebras's path): chunks with ``system_fingerprint``, and ``usage``
  plus ``time_info`` on the last chunk;

each ``data: {...}`` chunk carrying id, object ``chat.completion.chunk``, created, model and
``choices[{index, delta{role, content}, finish_reason}]``, then ``data: [DONE]``.

Each request takes the next scripted :class:`Behaviour` (``server.script(...)``), else what
``server.responder(body)`` returns when a responder is set (a reply that depends on the request, for
example one that reads a tool result), else the default (``server.default``). A behaviour with
``tool_calls`` streams them after its text in OpenAI's format: a call's first delta carries
``index``, ``id``, ``type`` and ``function.name`` (arguments ""), the next ones further pieces of
``function.arguments``; the final chunk's finish reason is then ``tool_calls``.

Behaviours: delay before the first token, delay between tokens, an HTTP error
status, hanging until the client gives up, or dropping the connection after N tokens. Every request
is recorded (:class:`RequestRecord`): path, headers (the Authorization header included, to test key
handling), JSON body, and events for "arrived", "first token sent", "client disconnected" and
"finished".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

GROQ_PATH = "/openai/v1/chat/completions"
CEREBRAS_PATH = "/v1/chat/completions"

DEFAULT_TOKENS: tuple[str, ...] = ("Bonjour", " !", " Comment", " puis", "-je", " aider", " ?")


@dataclass
class Behaviour:
    """How the fake answers one request."""

    #: Text pieces streamed as deltas (one SSE chunk each).
    tokens: Sequence[str] = DEFAULT_TOKENS
    #: Seconds before the first content chunk (the role chunk goes out first, right away).
    first_token_delay: float = 0.0
    #: Seconds between content chunks.
    token_delay: float = 0.0
    #: HTTP status; anything but 200 answers with an OpenAI-style JSON error body.
    status: int = 200
    #: Error message for a non-200 status; "{auth}" is replaced by the request's Authorization
    #: header, as some real APIs echo the key they rejected.
    error_message: str = "fake error"
    #: Never answer (not even headers): the client must time out or give up.
    hang: bool = False
    #: Close the connection abruptly after this many content chunks (no final chunk, no [DONE]).
    disconnect_after: int | None = None
    #: Finish reason of the final chunk.
    finish_reason: str = "stop"
    #: Send the role-only chunk before the first content chunk (as both real APIs do).
    role_chunk: bool = True
    #: Tool calls streamed after the text: (id, name, arguments JSON) each.
    tool_calls: Sequence[tuple[str, str, str]] = ()
    #: Characters of arguments per tool-call delta.
    argument_piece: int = 7


def tool_call(name: str, arguments: dict[str, Any], call_id: str = "", text: Sequence[str] = (),
              **kwargs: Any) -> Behaviour:
    """A reply that (after ``text``) calls one tool."""
    return Behaviour(tokens=tuple(text), tool_calls=((call_id or f"call_{name}", name,
                                                      json.dumps(arguments)),), **kwargs)


@dataclass
class RequestRecord:
    """One request the fake received, and what happened to it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    behaviour: Behaviour
    arrived: threading.Event = field(default_factory=threading.Event)
    first_token_sent: threading.Event = field(default_factory=threading.Event)
    #: Set when the client closed the connection before the response was complete.
    disconnected: threading.Event = field(default_factory=threading.Event)
    #: Set when the handler is done with this request (whatever the outcome).
    finished: threading.Event = field(default_factory=threading.Event)
    tokens_sent: int = 0
    #: True when the fake itself dropped the connection (``disconnect_after``).
    aborted: bool = False

    @property
    def authorization(self) -> str:
        return self.headers.get("authorization", "")

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))


class _ClientGone(Exception):
    pass


class FakeChatServer:
    """The fake, on 127.0.0.1 and a free port, in its own thread. Use as a context manager."""

    def __init__(self, default: Behaviour | None = None) -> None:
        self.default = default or Behaviour()
        self.requests: list[RequestRecord] = []
        self._scripted: deque[Behaviour] = deque()
        #: Chooses the behaviour of a request from its JSON body (after scripted ones).
        self.responder: Callable[[dict[str, Any]], Behaviour] | None = None
        self._lock = threading.Lock()
        self._arrivals = threading.Condition(self._lock)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-chat-server",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> FakeChatServer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FakeChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to give an SDK (it appends its own path)."""
        return f"http://127.0.0.1:{self.port}"

    # -- scripting ----------------------------------------------------------------------------
    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next requests, in order; later ones get ``default``."""
        with self._lock:
            self._scripted.extend(behaviours)

    def reset(self, default: Behaviour | None = None) -> None:
        """Forget scripted behaviours and recorded requests; set a new default."""
        with self._lock:
            self._scripted.clear()
            self.requests.clear()
            self.default = default or Behaviour()
            self.responder = None

    def wait_requests(self, count: int, timeout: float = 10.0) -> list[RequestRecord]:
        """Block until at least ``count`` requests have arrived (thread-safe; use to_thread)."""
        with self._arrivals:
            if not self._arrivals.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(f"{len(self.requests)} requests arrived, expected {count}")
            return list(self.requests)

    # -- HTTP ---------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve_one(reader, writer)
        except (_ClientGone, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        _method, path, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        raw = await reader.readexactly(length) if length else b""
        body = json.loads(raw) if raw else {}
        with self._arrivals:
            if self._scripted:
                behaviour = self._scripted.popleft()
            elif self.responder is not None:
                behaviour = self.responder(body)
            else:
                behaviour = self.default
            record = RequestRecord(path=path, headers=headers, body=body, behaviour=behaviour)
            self.requests.append(record)
            self._arrivals.notify_all()
        record.arrived.set()
        try:
            await self._respond(record, reader, writer)
        except (_ClientGone, ConnectionError):
            record.disconnected.set()
        finally:
            record.finished.set()

    async def _pause(self, seconds: float, reader: asyncio.StreamReader) -> None:
        """Wait ``seconds`` (forever if None), noticing a client that hangs up meanwhile."""
        try:
            data = await asyncio.wait_for(reader.read(1), seconds)
        except TimeoutError:
            return
        if not data:
            raise _ClientGone

    async def _respond(self, record: RequestRecord, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        behaviour = record.behaviour
        if record.path not in (GROQ_PATH, CEREBRAS_PATH):
            await self._send_json(writer, 404, {"error": {"message": f"no route {record.path}"}})
            return
        if behaviour.hang:
            await self._pause(3600.0, reader)  # raises _ClientGone when the client gives up
            return
        if behaviour.status != 200:
            message = behaviour.error_message.replace("{auth}", record.authorization)
            await self._send_json(writer, behaviour.status, {
                "error": {"message": message, "type": "fake_error", "code": str(behaviour.status)}})
            return
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        chunks = _ChunkMaker(record)
        if behaviour.role_chunk:
            await self._send_event(writer, chunks.delta({"role": "assistant", "content": ""}))
        for index, token in enumerate(behaviour.tokens):
            await self._pause(behaviour.first_token_delay if index == 0 else behaviour.token_delay,
                              reader)
            if behaviour.disconnect_after is not None and index >= behaviour.disconnect_after:
                record.aborted = True
                writer.transport.abort()  # no terminating chunk: the client sees a broken body
                return
            await self._send_event(writer, chunks.delta({"content": token}))
            record.tokens_sent += 1
            record.first_token_sent.set()
        for index, (call_id, name, arguments) in enumerate(behaviour.tool_calls):
            if not behaviour.tokens:
                await self._pause(behaviour.first_token_delay if index == 0 else behaviour.token_delay,
                                  reader)
            await self._send_event(writer, chunks.delta({"tool_calls": [{
                "index": index, "id": call_id, "type": "function",
                "function": {"name": name, "arguments": ""}}]}))
            record.first_token_sent.set()
            step = max(1, behaviour.argument_piece)
            for start in range(0, len(arguments), step):
                piece: dict[str, Any] = {"index": index,
                                         "function": {"arguments": arguments[start:start + step]}}
                if not chunks.groq:
                    # Cerebras's chunk schema requires "type" on every tool-call delta (its SDK
                    # reads a chunk without it as another response type); OpenAI and Groq send
                    # it on a call's first delta only.
                    piece["type"] = "function"
                await self._send_event(writer, chunks.delta({"tool_calls": [piece]}))
        finish = "tool_calls" if behaviour.tool_calls and behaviour.finish_reason == "stop" \
            else behaviour.finish_reason
        await self._send_event(writer, chunks.final(finish, len(behaviour.tokens)))
        await self._send_event(writer, "[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _send_event(self, writer: asyncio.StreamWriter, data: str) -> None:
        payload = f"data: {data}\n\n".encode()
        writer.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        await writer.drain()

    async def _send_json(self, writer: asyncio.StreamWriter, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        writer.write(f"HTTP/1.1 {status} Fake\r\ncontent-type: application/json\r\n"
                     f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n".encode() + payload)
        await writer.drain()


class _ChunkMaker:
    """Builds the JSON of each SSE chunk in the flavour the request's path implies."""

    def __init__(self, record: RequestRecord) -> None:
        self.groq = record.path == GROQ_PATH
        self.model = record.model or "fake-model"
        self.id = f"chatcmpl-fake{id(record):x}"
        self.created = int(time.time())
        messages = record.body.get("messages", [])
        self.prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)

    def _base(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk",
                                 "created": self.created, "model": self.model,
                                 "system_fingerprint": "fp_fake", "choices": choices}
        if self.groq:
            chunk["x_groq"] = {"id": "req_fake"}
        return chunk

    def delta(self, delta: dict[str, Any]) -> str:
        return json.dumps(self._base([{"index": 0, "delta": delta, "logprobs": None,
                                       "finish_reason": None}]))

    def final(self, finish_reason: str, completion_tokens: int) -> str:
        usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": self.prompt_tokens + completion_tokens}
        chunk = self._base([{"index": 0, "delta": {}, "logprobs": None,
                             "finish_reason": finish_reason}])
        if self.groq:
            chunk["x_groq"] = {"id": "req_fake", "usage": usage}
        else:
            chunk["usage"] = usage
            chunk["time_info"] = {"queue_time": 0.0001, "prompt_time": 0.001,
                                  "completion_time": 0.01, "total_time": 0.012,
                                  "created": float(self.created)}
        return json.dumps(chunk)
