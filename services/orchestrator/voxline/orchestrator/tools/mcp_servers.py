"""The operator's MCP servers, through the official ``mcp`` SDK (2.x ``mcp.client.Client``).

Configured only by the operator, in the ``mcpServers`` JSON file MCP clients share::

    {"mcpServers": {
        "weather": {"command": "python", "args": ["weather_server.py"], "env": {"UNITS": "C"}},
        "crm": {"url": "http://127.0.0.1:9000/mcp", "headers": {"Authorization": "Bearer ..."}}}}

``command``/``args``/``env`` start a stdio server (its working directory is the config file's
directory; ``python``/``python3`` mean this interpreter; the SDK passes only a safe subset of the
environment, plus ``env``); ``url`` reaches a streamable HTTP server. A client can never add one.

Each server has one supervisor task, started and stopped with the service: it connects, lists the
tools, refreshes them on ``notifications/tools/list_changed``, pings the server, and reconnects
(restarting a stdio process) with a growing back-off when it dies; meanwhile its tools are not
offered. A cancelled call (barge-in, timeout) is cancelled at the server too: the SDK sends
``notifications/cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from voxline.common.config import ConfigError
from voxline.orchestrator.domain import ToolCall, ToolSpec
from voxline.orchestrator.tools.toolbox import TOOL_NAME, CallContext, ToolFailure, ToolOutcome

log = logging.getLogger(__name__)

#: Seconds between pings of an idle server, and how long a ping or a listing may take.
PING_INTERVAL_S = 5.0
CONTROL_TIMEOUT_S = 10.0
#: At start, how long the service waits for each server's first tool list (a slow machine starting
#: a Python server takes seconds); one that is not ready by then keeps trying in the background.
START_WAIT_S = 30.0
#: Reconnection back-off, seconds.
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 30.0


def load_mcp_config(path: str) -> dict[str, dict[str, Any]]:
    """The servers of an ``mcpServers`` file, checked; ConfigError naming the problem."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--mcp-config {path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(f"--mcp-config {path}: not JSON ({exc})") from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise ConfigError(f"--mcp-config {path}: expected {{\"mcpServers\": {{name: {{...}}}}}}")
    for name, entry in servers.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"--mcp-config {path}: server {name!r} must be an object")
        has_command, has_url = isinstance(entry.get("command"), str), isinstance(entry.get("url"), str)
        if has_command == has_url:
            raise ConfigError(f"--mcp-config {path}: server {name!r} needs either \"command\" "
                              "(stdio) or \"url\" (streamable HTTP)")
        for key, kind in (("args", list), ("env", dict), ("headers", dict)):
            if key in entry and not isinstance(entry[key], kind):
                raise ConfigError(f"--mcp-config {path}: server {name!r}: {key!r} must be a "
                                  f"{kind.__name__}")
    return servers


def _text_of(result: Any) -> str:
    """A CallToolResult as text for the model: its text blocks, else its structured content."""
    parts: list[str] = []
    for block in getattr(result, "content", None) or []:
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(block, 'type', 'content')}]")
    if not any(p.strip() for p in parts) and getattr(result, "structured_content", None) is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    return "\n".join(parts)


class McpServer:
    """One configured server and its supervisor."""

    def __init__(self, name: str, entry: dict[str, Any], base_dir: Path) -> None:
        self.name = name
        self._entry = entry
        self._base_dir = base_dir
        self.tools: dict[str, ToolSpec] = {}
        self._client: Any = None
        self._refresh = asyncio.Event()
        #: Set each time the server is connected and its tools are listed.
        self.ready = asyncio.Event()
        #: Connections made (1 at start; more after restarts).
        self.connections = 0
        self._connected = asyncio.Event()  # replaced after each connection (see wait_connections)
        #: Tool listings made (at each connection, and on each list_changed).
        self.listings = 0
        self._listed = asyncio.Event()

    def _target(self) -> Any:
        from mcp.client.stdio import StdioServerParameters

        entry = self._entry
        if "url" in entry:
            if entry.get("headers"):
                import httpx2
                from mcp.client.streamable_http import streamable_http_client

                http = httpx2.AsyncClient(headers={str(k): str(v) for k, v in entry["headers"].items()},
                                          timeout=httpx2.Timeout(30.0, read=300.0))
                return streamable_http_client(entry["url"], http_client=http)
            return entry["url"]
        command = entry["command"]
        if command in ("python", "python3"):
            command = sys.executable  # the interpreter (and environment) voxline runs in
        return StdioServerParameters(command=command, args=[str(a) for a in entry.get("args", [])],
                                     env={str(k): str(v) for k, v in entry.get("env", {}).items()},
                                     cwd=str(self._base_dir))

    async def _on_message(self, message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            self._refresh.set()

    async def _list(self, client: Any) -> None:
        async with asyncio.timeout(CONTROL_TIMEOUT_S):
            listing = await client.list_tools(cache_mode="refresh")
        tools: dict[str, ToolSpec] = {}
        for tool in listing.tools:
            if not TOOL_NAME.match(tool.name):
                log.warning("MCP tool skipped: its name is not [A-Za-z0-9_-]{1,64}",
                            extra={"server": self.name, "tool": tool.name[:80]})
                continue
            schema = getattr(tool, "input_schema", None) or {"type": "object"}
            tools[tool.name] = ToolSpec(tool.name, tool.description or "",
                                        json.dumps(schema, separators=(",", ":")))
        self.tools = tools
        self.listings += 1
        self._listed.set()
        self._listed = asyncio.Event()
        log.info("MCP tools listed", extra={"server": self.name, "tools": sorted(tools)})

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, list, watch; reconnect with back-off until ``stop``."""
        from mcp.client import Client

        backoff = BACKOFF_FIRST_S
        while not stop.is_set():
            try:
                async with Client(self._target(), mode="legacy", cache=None,
                                  message_handler=self._on_message) as client:
                    await self._list(client)
                    self._client = client
                    self.connections += 1
                    self.ready.set()
                    self._connected.set()
                    self._connected = asyncio.Event()
                    backoff = BACKOFF_FIRST_S
                    await self._watch(client, stop)
            except Exception as exc:  # the server died, refused, or hung: restart it
                log.warning("MCP server down; its tools are unavailable until it is back",
                            extra={"server": self.name, "error": f"{type(exc).__name__}: {exc}"[:300]})
            finally:
                self._client = None
                self.tools = {}
                self.ready.clear()
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await stop.wait()
            backoff = min(backoff * 2.0, BACKOFF_MAX_S)

    async def wait_connections(self, count: int) -> None:
        """Until this server has been connected ``count`` times (restarts included)."""
        while self.connections < count:
            await self._connected.wait()

    async def wait_listings(self, count: int) -> None:
        """Until this server's tools have been listed ``count`` times."""
        while self.listings < count:
            await self._listed.wait()

    async def _watch(self, client: Any, stop: asyncio.Event) -> None:
        """Until ``stop``: refresh the tools when told to, and ping when idle (raises when the
        server is gone)."""
        from mcp.shared.exceptions import MCPDeprecationWarning

        while not stop.is_set():
            stopping = asyncio.ensure_future(stop.wait())
            refreshing = asyncio.ensure_future(self._refresh.wait())
            try:
                await asyncio.wait({stopping, refreshing}, timeout=PING_INTERVAL_S,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in (stopping, refreshing):
                    waiter.cancel()
                await asyncio.gather(stopping, refreshing, return_exceptions=True)
            if stop.is_set():
                return
            if self._refresh.is_set():
                self._refresh.clear()
                await self._list(client)
                continue
            with warnings.catch_warnings():
                # ping is "removed as of 2026-07-28": these connections use the handshake-era
                # protocol (mode="legacy"), where it is the liveness check
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                async with asyncio.timeout(CONTROL_TIMEOUT_S):
                    await client.send_ping()

    async def call(self, name: str, arguments: dict[str, Any], timeout_s: float) -> ToolOutcome:
        client = self._client
        if client is None:
            raise ToolFailure(f"the MCP server {self.name!r} is not connected")
        from mcp.shared.exceptions import MCPError

        try:
            async with asyncio.timeout(timeout_s):
                result = await client.call_tool(name, arguments)
        except MCPError as exc:
            raise ToolFailure(str(exc.error.message)[:500]) from None
        return ToolOutcome(_text_of(result), is_error=bool(getattr(result, "is_error", False)))


class McpServers:
    """Every configured MCP server: a tool source for every session."""

    kind = "mcp"

    def __init__(self, config_path: str) -> None:
        entries = load_mcp_config(config_path)
        base_dir = Path(config_path).resolve().parent
        self.servers = [McpServer(name, entry, base_dir) for name, entry in entries.items()]
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, wait_s: float = START_WAIT_S) -> None:
        """Start the supervisors and wait (bounded) for each server's first listing."""
        self._stop.clear()
        self._tasks = [asyncio.create_task(s.run(self._stop), name=f"mcp-{s.name}")
                       for s in self.servers]
        if not self.servers:
            return
        waiters = [asyncio.ensure_future(s.ready.wait()) for s in self.servers]
        _done, pending = await asyncio.wait(waiters, timeout=wait_s)
        for waiter in pending:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        for server in self.servers:
            if not server.ready.is_set():
                log.warning("MCP server not ready at start; retrying in the background",
                            extra={"server": server.name})

    async def stop(self) -> None:
        """Stop every server (stdio processes end) and wait for the supervisors."""
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def specs(self) -> Sequence[ToolSpec]:
        """The tools of the servers connected now (a name two servers offer: the first's)."""
        seen: dict[str, ToolSpec] = {}
        for server in self.servers:
            for name, spec in server.tools.items():
                seen.setdefault(name, spec)
        return list(seen.values())

    def _owner(self, name: str) -> McpServer | None:
        return next((s for s in self.servers if name in s.tools), None)

    async def call(self, call: ToolCall, arguments: dict[str, Any], context: CallContext,
                   timeout_s: float) -> ToolOutcome:
        server = self._owner(call.name)
        if server is None:
            raise ToolFailure(f"{call.name} is unavailable right now (its MCP server is down)")
        return await server.call(call.name, arguments, timeout_s)
