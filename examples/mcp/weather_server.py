"""An example MCP server for voxline: the time and the weather in a few cities, from a fixed table.

Written with the official ``mcp`` SDK (2.x: ``MCPServer``, formerly FastMCP). voxline's orchestrator
starts it over stdio when pointed at ``examples/mcp.json``::

    voxline up --mcp-config examples/mcp.json

Run it over streamable HTTP instead (then list it as ``{"url": "http://127.0.0.1:8765/mcp"}``)::

    python examples/mcp/weather_server.py --http 8765
"""

from __future__ import annotations

import argparse
import datetime
from zoneinfo import ZoneInfo

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

#: city -> (time zone, weather). A fixed table: the example needs no network and no key.
CITIES: dict[str, tuple[str, dict[str, object]]] = {
    "paris": ("Europe/Paris", {"condition": "light rain", "temp_c": 14, "wind_kmh": 18}),
    "london": ("Europe/London", {"condition": "overcast", "temp_c": 12, "wind_kmh": 22}),
    "new york": ("America/New_York", {"condition": "sunny", "temp_c": 21, "wind_kmh": 9}),
    "tokyo": ("Asia/Tokyo", {"condition": "clear", "temp_c": 24, "wind_kmh": 6}),
    "sydney": ("Australia/Sydney", {"condition": "windy", "temp_c": 19, "wind_kmh": 35}),
}

server = MCPServer("voxline-example-weather", log_level="WARNING",
                   instructions="Time and weather in Paris, London, New York, Tokyo and Sydney.")


def _city(name: str) -> tuple[str, tuple[str, dict[str, object]]]:
    key = name.strip().lower()
    if key not in CITIES:
        known = ", ".join(c.title() for c in CITIES)
        raise ToolError(f"unknown city {name!r}; I know {known}")  # shown to the model
    return key, CITIES[key]


@server.tool()
def get_weather(city: str) -> dict[str, object]:
    """Current weather in a city: condition, temperature (Celsius) and wind (km/h)."""
    key, (_zone, weather) = _city(city)
    return {"city": key.title(), **weather}


@server.tool()
def get_time(city: str) -> str:
    """Local time in a city, as HH:MM with the weekday."""
    key, (zone, _weather) = _city(city)
    now = datetime.datetime.now(ZoneInfo(zone))
    return f"{now:%A %H:%M} in {key.title()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT",
                        help="serve streamable HTTP on 127.0.0.1:PORT (/mcp) instead of stdio")
    args = parser.parse_args()
    if args.http is None:
        server.run()
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.http)


if __name__ == "__main__":
    main()
