"""Tools: what the assistant can do besides talk.

- ``settings``: the operator's knobs (rounds, timeouts, result size, filler phrases, MCP config).
- ``mcp_servers``: the operator's MCP servers (stdio or streamable HTTP), supervised.
- ``client_tools``: tools a Converse client runs itself (a tool-call event out, a result in).
- ``toolbox``: one session's tools: validation against the schema, timeouts, spans, metrics.
- ``loop``: the tool loop of one reply (call the LLM, run its calls, feed results back, again).
"""
