"""``voxline up``: run the four services locally until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from voxline.cli.progress import StartupDisplay
from voxline.cli.stack import (
    BACKENDS,
    EDGE,
    EDGE_PORT,
    STAGES,
    ServiceFailed,
    Stack,
    StackConfig,
    StackError,
    StartCancelled,
)
from voxline.cli.viewer import Viewer, ViewerError, stack_env
from voxline.common.config import DEFAULT_PORTS

DEFAULT_LOG_DIR = Path(".voxline") / "logs"
DEFAULT_VIEWER_DIR = Path(".voxline") / "phoenix"

#: Where each pass-through option goes: (stage, flag). Flags, so a renamed option fails loudly.
VOICE_FLAG = ("tts", "--default-voice")
LANGUAGE_FLAG = ("orchestrator", "--language")
PROVIDERS_FLAG = ("llm", "--providers")


def add_stack_options(parser: argparse.ArgumentParser, *, ports: bool) -> None:
    """Options shared by ``up`` and ``demo``."""
    if ports:
        group = parser.add_argument_group("ports (0 picks a free port)")
        group.add_argument("--host", default="127.0.0.1",
                           help="address every service binds (default: %(default)s)")
        group.add_argument("--base-port", type=int, default=DEFAULT_PORTS["orchestrator"],
                           help="orchestrator port; stt, llm, tts take the next three "
                                "(default: %(default)s; 0: all free ports)")
        for stage in STAGES:
            group.add_argument(f"--{stage}-port", type=int, default=None, metavar="N",
                               help=f"{stage} port (overrides --base-port)")
        edge = parser.add_argument_group("edge (the browser page and the phone line; docs/edge.md)")
        edge.add_argument("--edge-port", type=int, default=None, metavar="N",
                          help=f"the edge's HTTP port: the page at /, the Twilio WebSocket at /phone "
                               f"(default: {EDGE_PORT}; a free one with --base-port 0)")
        edge.add_argument("--no-edge", action="store_true", help="do not start the edge")
    parser.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR if ports else None,
                        help="one log file per service goes here (default: "
                             + (f"{DEFAULT_LOG_DIR})" if ports else "a new temporary directory)"))
    parser.add_argument("--llm-providers", default="",
                        help="LLM provider order, e.g. groq,cerebras,local (keys come from GROQ_API_KEY, "
                             "CEREBRAS_API_KEY; default: the gateway's own chain)")
    parser.add_argument("--mcp-config", type=Path, default=None, metavar="FILE",
                        help="MCP servers for the assistant's tools, in the standard mcpServers JSON "
                             "(e.g. examples/mcp.json); passed to the orchestrator's --mcp-config")
    parser.add_argument("--voice", default="", help="TTS default voice, e.g. espeak:en, piper:joe")
    parser.add_argument("--language", default="", help="speech language, e.g. en, fr (default: detect)")
    parser.add_argument("--span-file", type=Path, default=None,
                        help="every service appends its spans to this JSON-lines file "
                             "(VOXLINE_SPAN_FILE; read it with `voxline report`)")
    parser.add_argument("--start-timeout", type=float, default=600.0,
                        help="seconds to wait for every service to be SERVING (default: %(default)s)")
    parser.add_argument("--replicas", type=parse_replicas, default={}, metavar="STAGE=N,...",
                        help="run several processes of a stage, e.g. stt=2,tts=2; the orchestrator "
                             "balances calls over them (round_robin) and retries a call that failed "
                             "before any output on another one (default: one of each)")
    if ports:
        add_metrics_options(parser)
        viewer = parser.add_argument_group("trace viewer (Arize Phoenix, no Docker)")
        viewer.add_argument("--viewer", action="store_true",
                            help="start Arize Phoenix too and send every service's traces to it "
                                 "(records the transcript and reply text unless "
                                 "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT says otherwise)")
        viewer.add_argument("--viewer-port", type=int, default=6006,
                            help="Phoenix UI port (default: %(default)s)")
        viewer.add_argument("--viewer-otlp-port", type=int, default=4317,
                            help="Phoenix OTLP/gRPC port the services export to (default: %(default)s)")
        viewer.add_argument("--viewer-dir", type=Path, default=DEFAULT_VIEWER_DIR,
                            help="Phoenix's data, kept across restarts (default: %(default)s)")


def add_metrics_options(parser: argparse.ArgumentParser) -> None:
    """``voxline up``'s Prometheus options."""
    metrics = parser.add_argument_group("metrics (Prometheus scrape endpoints)")
    metrics.add_argument("--metrics", action="store_true",
                         help="every service serves Prometheus metrics on a free port; the URLs are "
                              "printed once the stack is up")
    metrics.add_argument("--metrics-base-port", type=int, default=None, metavar="N",
                         help="metrics on fixed ports: orchestrator N, stt N+1, llm N+2, tts N+3 "
                              "(replicas: free ports). VOXLINE_METRICS_PORT in the environment of "
                              "`voxline up` counts as this option (each service needs its own port)")


def ports_from_args(ns: argparse.Namespace) -> dict[str, int]:
    """Per-service ports: --<stage>-port, else --base-port + offset (0 stays 0: free ports)."""
    offsets = {"orchestrator": 0, "stt": 1, "llm": 2, "tts": 3}
    ports = {}
    for stage in STAGES:
        explicit = getattr(ns, f"{stage}_port")
        port = explicit if explicit is not None else (ns.base_port + offsets[stage] if ns.base_port else 0)
        if not 0 <= port <= 65535:
            raise StackError(f"port for {stage} out of range: {port}")
        ports[stage] = port
    if hasattr(ns, "edge_port"):
        port = ns.edge_port if ns.edge_port is not None else (EDGE_PORT if ns.base_port else 0)
        if not 0 <= port <= 65535:
            raise StackError(f"port for edge out of range: {port}")
        if not ns.no_edge:
            ports[EDGE] = port
    return ports


#: Most processes of one stage ``--replicas`` starts on one machine.
MAX_REPLICAS = 8


def parse_replicas(text: str) -> dict[str, int]:
    """``stt=2,tts=2`` as {"stt": 2, "tts": 2}; the stages are stt, llm and tts."""
    replicas: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        stage, sep, count = item.partition("=")
        stage = stage.strip()
        if not sep or stage not in BACKENDS or not count.strip().isdigit():
            raise argparse.ArgumentTypeError(
                f"expected STAGE=N with STAGE one of {', '.join(BACKENDS)}, got {item!r}")
        if not 1 <= int(count) <= MAX_REPLICAS:
            raise argparse.ArgumentTypeError(f"{stage}: 1 to {MAX_REPLICAS} replicas, got {count.strip()}")
        replicas[stage] = int(count)
    return replicas


def busy_ports(host: str, ports: dict[str, int]) -> list[tuple[str, int]]:
    """The (stage, port) pairs that cannot be bound on ``host`` now (0 means a free port: never busy)."""
    busy = []
    for stage, port in ports.items():
        if not port:
            continue
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            try:
                sock.bind((host, port))
            except OSError:
                busy.append((stage, port))
    return busy


def stack_config_from_args(ns: argparse.Namespace, ports: dict[str, int], host: str,
                           extra_args: dict[str, list[str]] | None = None) -> StackConfig:
    """The StackConfig for ``up``/``demo`` options (plus ``extra_args`` per stage)."""
    env: dict[str, str] = {}
    if ns.span_file is not None:
        env["VOXLINE_SPAN_FILE"] = str(ns.span_file.resolve())
    stage_args: dict[str, list[str]] = {stage: list(args) for stage, args in (extra_args or {}).items()}
    for value, (stage, flag) in ((ns.voice, VOICE_FLAG), (ns.language, LANGUAGE_FLAG),
                                 (ns.llm_providers, PROVIDERS_FLAG)):
        if value:
            stage_args.setdefault(stage, []).extend([flag, value])
    if getattr(ns, "mcp_config", None) is not None:
        stage_args.setdefault("orchestrator", []).extend(["--mcp-config", str(ns.mcp_config.resolve())])
    return StackConfig(log_dir=ns.log_dir.resolve(), ports=ports, host=host, env=env,
                       stage_args=stage_args, start_timeout_s=ns.start_timeout,
                       replicas=getattr(ns, "replicas", {}), metrics_ports=metrics_ports_from_args(ns),
                       edge=EDGE in ports)


def metrics_ports_from_args(ns: argparse.Namespace,
                            environ: Mapping[str, str] | None = None) -> dict[str, int] | None:
    """Each stage's metrics port from --metrics / --metrics-base-port / VOXLINE_METRICS_PORT (the
    base of four ports: a service's own variable would give all four the same one); None: off."""
    base = getattr(ns, "metrics_base_port", None)
    inherited = (os.environ if environ is None else environ).get("VOXLINE_METRICS_PORT", "").strip()
    if base is None and inherited:
        if not inherited.isdigit():
            raise StackError(f"VOXLINE_METRICS_PORT must be a port number, got {inherited!r}")
        base = int(inherited)
    if base is None:
        return {stage: 0 for stage in STAGES} if getattr(ns, "metrics", False) else None
    offsets = {"orchestrator": 0, "stt": 1, "llm": 2, "tts": 3}
    if base and not 1 <= base <= 65535 - 3:
        raise StackError(f"metrics base port out of range: {base}")
    return {stage: base + offsets[stage] if base else 0 for stage in STAGES}


def print_failure(failure: ServiceFailed, out: TextIO) -> None:
    """A service's death, with its last log lines."""
    out.write(f"\nvoxline: {failure}\n--- last lines of {failure.stage}'s log ---\n")
    for line in failure.tail[-20:]:
        out.write(f"  {line}\n")
    out.flush()


class StopRequest(threading.Event):
    """Set by SIGINT/SIGTERM; ``on_set`` callbacks run in the signal handler (keep them tiny, e.g.
    ``loop.call_soon_threadsafe``)."""

    def __init__(self) -> None:
        super().__init__()
        self._callbacks: list[Callable[[], None]] = []

    def on_set(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)
        if self.is_set():
            callback()

    def remove(self, callback: Callable[[], None]) -> None:
        self._callbacks.remove(callback)

    def set(self) -> None:
        super().set()
        for callback in list(self._callbacks):
            callback()


@contextmanager
def stop_signals() -> Iterator[StopRequest]:
    """A StopRequest set by SIGINT or SIGTERM while inside the block (previous handlers restored)."""
    event = StopRequest()
    previous = {}

    def handler(signum: int, frame: object) -> None:
        event.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield event
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def start_stack(stack: Stack, cancel: threading.Event, err: TextIO) -> int | None:
    """Start with a progress display; None when SERVING, else the exit code to return."""
    display = StartupDisplay(err)
    try:
        stack.start(on_progress=display, cancel=cancel)
    except StartCancelled:
        display.done()
        err.write("voxline: stopped while starting\n")
        return 0
    except ServiceFailed as failure:
        display.done()
        print_failure(failure, err)
        return 1
    except StackError as exc:
        display.done()
        err.write(f"voxline: {exc}\n")
        return 1
    display.done()
    return None


def run_up(ns: argparse.Namespace) -> int:
    """Start the stack, print endpoints, wait for a signal or a death, stop everything."""
    out, err = sys.stdout, sys.stderr
    try:
        ports = ports_from_args(ns)
        metrics_ports = metrics_ports_from_args(ns)
    except StackError as exc:
        err.write(f"voxline up: {exc}\n")
        return 2
    busy = busy_ports(ns.host, {**ports, **{f"{s} metrics": p for s, p in (metrics_ports or {}).items()}})
    if busy:
        # Say so before starting anything, rather than let one service die and stop the others.
        stage, port = busy[0]
        taken = ", ".join(f"{p} ({s})" for s, p in busy)
        err.write(f"voxline up: already in use on {ns.host}: port {taken}; is another `voxline up` "
                  f"running? Stop it, or choose ports: --base-port N, --{stage}-port {port + 10}, or "
                  f"--base-port 0 for free ones\n")
        return 2
    config = stack_config_from_args(ns, ports, ns.host)
    viewer: Viewer | None = None
    if ns.viewer:
        try:
            viewer = Viewer(data_dir=ns.viewer_dir.resolve(), log_path=config.log_dir / "viewer.log",
                            ui_port=ns.viewer_port, otlp_port=ns.viewer_otlp_port)
            err.write(f"voxline: starting the trace viewer (Arize Phoenix); log in {viewer.log_path}\n")
            viewer.start()
        except ViewerError as exc:
            err.write(f"voxline up: {exc}\n")
            return 2
        config = dataclasses.replace(config, env={**config.env, **stack_env(viewer.otlp_port)})
    try:
        return _run_stack(config, ns, viewer, out, err)
    finally:
        if viewer is not None:
            viewer.stop()


def _run_stack(config: StackConfig, ns: argparse.Namespace, viewer: Viewer | None, out: TextIO,
               err: TextIO) -> int:
    started = "stt, llm, tts, orchestrator" + (", edge" if config.edge else "")
    err.write(f"voxline: starting {started}; logs in {config.log_dir}\n")
    if ns.span_file is not None:
        err.write(f"voxline: spans go to {config.env['VOXLINE_SPAN_FILE']}\n")
    stack = Stack(config)
    with stop_signals() as cancel:
        code = start_stack(stack, cancel, err)
        if code is not None:
            return code
        out.write("voxline is up:\n")
        for stage, address in stack.endpoints().items():
            out.write(f"  {stage:<13} {address}\n")
        urls = stack.edge_urls()
        if urls is not None:
            out.write(f"browser:      {urls[0]} (the microphone needs localhost or HTTPS; docs/edge.md)\n")
            out.write(f"phone line:   {urls[1]} (Twilio Media Streams)\n")
        out.write(f"a question:   voxline sample -o question.wav --address {stack.address('tts')}\n")
        out.write(f"talk to it:   voxline talk question.wav -o reply.wav "
                  f"--address {stack.address('orchestrator')}\n")
        if viewer is not None:
            out.write(f"traces:       {viewer.url} (Arize Phoenix; one trace per turn)\n")
        for name, url in stack.metrics_endpoints().items():
            out.write(f"metrics:      {name:<13} {url}\n")
        out.write(f"stop:         Ctrl-C or kill -TERM {os.getpid()}\n")
        out.flush()
        def say(line: str) -> None:
            err.write(f"voxline: {line}\n")
            err.flush()

        # A service that dies is started again (backoff, one line each); only one that keeps
        # dying right after its start stops the stack.
        failure = stack.wait(cancel, on_event=say)
        if failure is not None:
            print_failure(failure, err)
        err.write("voxline: stopping...\n")
        codes = stack.stop()
    bad = {stage: rc for stage, rc in codes.items() if rc != 0}
    if failure is not None:
        return 1
    if bad:
        err.write("voxline: not every service stopped cleanly: "
                  + ", ".join(f"{s} exit {rc}" for s, rc in bad.items()) + "\n")
        return 1
    err.write("voxline: all services stopped\n")
    return 0
