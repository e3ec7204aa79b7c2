"""A real MCP server for the tool tests, written with the official SDK (2.x ``MCPServer``).

Tools: ``lookup_order`` (a fixed table), ``slow_search`` (waits; says when it starts, finishes or
is cancelled), ``broken`` (always fails). Every call is appended, one line each, to the file named
by ``VOXLINE_TEST_MCP_EVENTS`` ("call lookup_order A1", "started slow_search", "cancelled
slow_search", ...), so a test sees what the server saw.

Stdio by default; ``--http`` serves streamable HTTP on 127.0.0.1 at a free port and prints
``PORT <n>`` on stdout once listening.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

ORDERS = {"A1": {"status": "shipped", "eta": "tomorrow"}, "B2": {"status": "being packed"}}

server = MCPServer("voxline-test-tools", log_level="WARNING")


def _event(line: str) -> None:
    path = os.environ.get("VOXLINE_TEST_MCP_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")


@server.tool()
def lookup_order(order_id: str) -> dict[str, str]:
    """The status of an order, by its id (like A1)."""
    _event(f"call lookup_order {order_id}")
    if order_id not in ORDERS:
        raise ToolError(f"no order {order_id}")
    return {"order_id": order_id, **ORDERS[order_id]}


@server.tool()
async def slow_search(query: str, seconds: float = 30.0) -> str:
    """Searches slowly."""
    _event("started slow_search")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        _event("cancelled slow_search")
        raise
    _event("finished slow_search")
    return f"found 3 results for {query}"


@server.tool()
def crash() -> str:
    """Kills the server process (a server that dies mid-call)."""
    _event("crash")
    os._exit(3)


def extra() -> str:
    """A tool that appears once unlocked."""
    return "extra!"


@server.tool()
async def unlock_extra(ctx: Context) -> str:
    """Adds the tool ``extra`` and tells the client its tool list changed."""
    server.add_tool(extra)
    await ctx.session.send_tool_list_changed()
    return "unlocked"


@server.tool()
def broken() -> str:
    """Always fails."""
    _event("call broken")
    raise ToolError("the database is down")


async def _serve_http() -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    app = server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
    config = uvicorn.Config(app, log_level="warning")
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


def main() -> None:
    _event("boot")
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", action="store_true")
    if parser.parse_args().http:
        anyio.run(_serve_http)
    else:
        server.run()


if __name__ == "__main__":
    sys.exit(main())
