"""The MCP server supervisor on its own: a server that dies is restarted, its tools unavailable
meanwhile; a bad config file is refused at start with the reason."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from tools_harness import events_of, stdio_config

from voxline.common.config import ConfigError
from voxline.orchestrator.domain import ToolCall
from voxline.orchestrator.tools.mcp_servers import McpServers, load_mcp_config
from voxline.orchestrator.tools.toolbox import CallContext, ToolFailure

CONTEXT = CallContext(turn=1, emit=lambda event: None)


async def test_a_server_that_dies_is_restarted(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    servers = McpServers(str(stdio_config(tmp_path / "mcp.json", events)))
    await servers.start()
    try:
        (server,) = servers.servers
        assert "lookup_order" in [s.name for s in servers.specs()]
        with pytest.raises(Exception):  # noqa: B017 - the transport's own error, whatever it is
            await servers.call(ToolCall("c1", "crash", "{}"), {}, CONTEXT, timeout_s=10)
        async with asyncio.timeout(30):
            await server.wait_connections(2)
        assert events_of(events).count("boot") == 2  # a new process
        outcome = await servers.call(ToolCall("c2", "lookup_order", ""), {"order_id": "B2"},
                                     CONTEXT, timeout_s=10)
        assert json.loads(outcome.content)["status"] == "being packed" and not outcome.is_error
    finally:
        await servers.stop()
    assert not servers.specs()  # stopped: nothing offered
    with pytest.raises(ToolFailure):
        await servers.call(ToolCall("c3", "lookup_order", ""), {"order_id": "A1"}, CONTEXT, 1.0)


async def test_tools_are_refreshed_on_list_changed(tmp_path: Path) -> None:
    servers = McpServers(str(stdio_config(tmp_path / "mcp.json", tmp_path / "events.log")))
    await servers.start()
    try:
        (server,) = servers.servers
        assert "extra" not in [s.name for s in servers.specs()]
        listed = server.listings
        outcome = await servers.call(ToolCall("c1", "unlock_extra", "{}"), {}, CONTEXT, 10)
        assert outcome.content == "unlocked"
        async with asyncio.timeout(10):
            await server.wait_listings(listed + 1)
        assert "extra" in [s.name for s in servers.specs()]
        assert (await servers.call(ToolCall("c2", "extra", "{}"), {}, CONTEXT, 10)).content == "extra!"
    finally:
        await servers.stop()


@pytest.mark.parametrize(("text", "expected"), [
    ("{not json", "not JSON"),
    ('{"servers": {}}', "mcpServers"),
    ('{"mcpServers": {"a": {}}}', 'either "command"'),
    ('{"mcpServers": {"a": {"command": "x", "url": "http://h"}}}', "either"),
    ('{"mcpServers": {"a": {"command": "x", "args": "y"}}}', "'args' must be a list"),
])
def test_bad_config_files_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_mcp_config(str(path))
    assert expected in str(error.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load_mcp_config(str(tmp_path / "nope.json"))

