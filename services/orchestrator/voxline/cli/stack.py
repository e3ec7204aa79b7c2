"""Supervises the four voxline services as local subprocesses (``voxline up``, ``voxline demo``, tests).

Start order: stt, llm and tts at once; as soon as each has written its bound port to its
``--port-file`` (so port 0 works), the orchestrator starts wired to their addresses while the models
are still loading. A stage may run as several replicas (``StackConfig.replicas``; ``stt``, ``stt-2``,
...): the orchestrator gets their addresses as one comma list and balances over them.
``start()`` returns once every service's gRPC health check says SERVING. ``wait()`` then
supervises: a service that exits on its own is started again on the same port and with the same
arguments, after a backoff that doubles while it keeps dying soon after starting
(``RestartPolicy``); clients' channels reconnect, so an orchestrator stream's next turn works once
the stage is back. ``stop()`` sends SIGTERM to every service (each drains its calls and exits 0),
waits, then kills stragglers.

Each child runs in its own process group, so a Ctrl-C in the terminal reaches only the supervisor,
which then stops the children in order instead of every process racing to die at once. On Linux each
child also gets SIGTERM from the kernel if the supervisor dies without stopping it (SIGKILL, a crash),
so no model server is left orphaned; that signal is tied to the thread that spawned the child, so
call ``start()`` from a thread that lives as long as the stack (the main thread, as the CLI does).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from voxline.cli.service_process import EXITED, LOADING, SERVING, STARTING, ServiceProcess
from voxline.cli.service_process import ServiceFailed as ServiceFailed
from voxline.cli.service_process import StackError as StackError
from voxline.common.config import DEFAULT_PORTS

#: Backends first, the orchestrator last (it needs their addresses).
BACKENDS = ("stt", "llm", "tts")
STAGES = (*BACKENDS, "orchestrator")

#: The edge (browser page and phone line, HTTP), started in front of the orchestrator when
#: ``StackConfig.edge`` is set; its health is its HTTP ``/health``.
EDGE = "edge"
#: The edge's default port (voxline.edge.config.DEFAULT_PORT).
EDGE_PORT = 8780

#: Orchestrator flags naming each backend's address (voxline.orchestrator.config; a flag, not an env
#: var, so a renamed option fails loudly instead of silently dialling the default port).
ADDRESS_FLAGS = {stage: f"--{stage}" for stage in BACKENDS}


def default_command(stage: str) -> list[str]:
    """``python -m voxline.<stage>`` with this interpreter."""
    return [sys.executable, "-m", f"voxline.{stage}"]


class StartCancelled(StackError):
    """A stop was requested (Ctrl-C / SIGTERM) while the stack was starting."""


@dataclass(frozen=True)
class RestartPolicy:
    """How ``Stack.wait`` restarts a service that exited on its own."""

    #: Wait before the first restart; doubled for each further quick death, up to ``max_delay_s``.
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    #: A service that ran this long before dying counts as having worked: its backoff starts over.
    stable_s: float = 60.0
    #: Quick deaths in a row (each within ``stable_s`` of its start) after which the stack gives up.
    max_quick_deaths: int = 5

    def delay(self, deaths: int) -> float:
        """The wait before restarting after the ``deaths``-th quick death in a row (1, 2, ...)."""
        return min(self.first_delay_s * 2.0 ** max(0, deaths - 1), self.max_delay_s)


@dataclass(frozen=True)
class StackConfig:
    """How to run the stack. Port 0 lets a service pick a free port (read back from its port file)."""

    log_dir: Path
    ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    host: str = "127.0.0.1"
    #: Extra environment for every service (e.g. VOXLINE_SPAN_FILE, provider keys).
    env: Mapping[str, str] = field(default_factory=dict)
    #: Extra environment per stage.
    stage_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: Extra command-line arguments per stage.
    stage_args: Mapping[str, Sequence[str]] = field(default_factory=dict)
    start_timeout_s: float = 600.0
    #: How long stop() waits after SIGTERM before killing (services drain for up to 10 s by default).
    stop_timeout_s: float = 20.0
    #: The command that runs a stage (tests swap in a fake service).
    command: Callable[[str], list[str]] = default_command
    #: Processes per backend stage (default 1); the first takes the stage's port, the others free ones.
    replicas: Mapping[str, int] = field(default_factory=dict)
    #: Restart a service that exits while the stack runs (None: ``wait`` returns its failure).
    restart: RestartPolicy | None = field(default_factory=RestartPolicy)
    #: Prometheus endpoints: each stage's metrics port (0: a free one; replicas always take free
    #: ones); None: no endpoint. Passed as ``--metrics-port``, which wins over an inherited
    #: VOXLINE_METRICS_PORT (one port for every service would make all but one fail to start).
    metrics_ports: Mapping[str, int] | None = None
    #: Also start the edge (``python -m voxline.edge``) in front of the orchestrator, on
    #: ``ports["edge"]`` (0: a free port).
    edge: bool = False

    def instances(self, stage: str) -> list[str]:
        """The process names of ``stage``: ``stt``, then ``stt-2``, ``stt-3``... for replicas."""
        count = self.replicas.get(stage, 1) if stage in BACKENDS else 1
        return [stage, *(f"{stage}-{i}" for i in range(2, count + 1))]


@dataclass(frozen=True)
class Progress:
    """A snapshot for progress displays: each stage's state and seconds in it, and the total."""

    elapsed_s: float
    states: Mapping[str, str]
    since_s: Mapping[str, float]


class Stack:
    """The four services as subprocesses; use as a context manager or call start()/stop()."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.services: dict[str, ServiceProcess] = {}
        self._channels: dict[str, grpc.Channel] = {}
        self._started_at = time.monotonic()
        #: Per process name: (stage, extra arguments), to start it again the same way.
        self._spawned: dict[str, tuple[str, tuple[str, ...]]] = {}
        #: Per process name: quick deaths in a row, and when a pending restart is due.
        self._deaths: dict[str, int] = {}
        self._restart_at: dict[str, float] = {}
        #: How many times each process was restarted.
        self.restarts: dict[str, int] = {}

    # -- addresses ---------------------------------------------------------------------------
    def address(self, stage: str) -> str:
        """host:port a client on this machine dials for ``stage``."""
        port = self.services[stage].port
        if port is None:
            raise StackError(f"{stage} has not reported its port yet")
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"{host}:{port}"

    def stage_address(self, stage: str) -> str:
        """What the orchestrator dials for ``stage``: one address, or its replicas' as a list."""
        return ",".join(self.address(name) for name in self.config.instances(stage))

    def metrics_endpoints(self) -> dict[str, str]:
        """Every process's Prometheus scrape URL (those that serve one), stage by stage."""
        host = self.config.host if self.config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return {name: f"http://{host}:{port}/metrics"
                for stage in STAGES for name in self.config.instances(stage)
                if name in self.services and (port := self.services[name].metrics_port) is not None}

    def endpoints(self) -> dict[str, str]:
        """Every process's address, replicas included (``stt``, ``stt-2``, ...), stage by stage."""
        return {name: self.address(name) for stage in STAGES for name in self.config.instances(stage)
                if name in self.services}

    # -- start -----------------------------------------------------------------------------
    def _spawn(self, stage: str, extra_args: Sequence[str] = (), name: str = "",
               port: int | None = None) -> None:
        cfg = self.config
        name = name or stage
        restart = port is not None
        if port is None:
            port = cfg.ports.get(stage, 0) if name == stage else 0  # replicas: free ports
        self._spawned[name] = (stage, tuple(extra_args))
        # VOXLINE_PARENT_PID: the service asks Linux to SIGTERM it if this supervisor dies (see
        # voxline.common.server.exit_with_parent). Done in the child after exec, not in a
        # preexec_fn: Python code between fork and exec in a process running gRPC threads made
        # children abort in gRPC's poller ("epoll_wait error: Bad file descriptor").
        env = {"VOXLINE_PARENT_PID": str(os.getpid()), **cfg.env, **cfg.stage_env.get(stage, {})}
        metrics: list[str] = []
        if cfg.metrics_ports is not None:
            metrics = ["--metrics-port", str(cfg.metrics_ports.get(stage, 0) if name == stage else 0)]
        argv = [*cfg.command(stage), "--host", cfg.host, "--port", str(port), *metrics,
                *extra_args, *cfg.stage_args.get(stage, ())]
        self.services[name] = ServiceProcess(name, argv, env, log_path=cfg.log_dir / f"{name}.log",
                                             append_log=restart)

    def progress(self) -> Progress:
        now = time.monotonic()
        return Progress(
            elapsed_s=now - self._started_at,
            states={s: p.state for s, p in self.services.items()},
            since_s={s: now - p.state_since for s, p in self.services.items()},
        )

    def _check_exits(self) -> None:
        for service in self.services.values():
            if not service.alive():
                service.set_state(EXITED)
                raise service.failure()

    def _wait_ports(self, stages: Sequence[str], deadline: float, cancel: threading.Event,
                    tick: Callable[[], None]) -> None:
        while True:
            self._check_exits()
            pending = [s for s in stages if self.services[s].port is None]
            for stage in stages:
                if self.services[stage].port is not None and self.services[stage].state == STARTING:
                    self.services[stage].set_state(LOADING)
            if not pending:
                return
            tick()
            if time.monotonic() > deadline:
                raise StackError(f"{', '.join(pending)} did not report a port in time")
            if cancel.wait(0.1):
                raise StartCancelled("stopped while starting")

    def _health(self, stage: str) -> int:
        if stage == EDGE:
            return self._edge_health()
        channel = self._channels.get(stage)
        if channel is None:
            channel = self._channels[stage] = grpc.insecure_channel(self.address(stage))
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status)

    def _edge_health(self) -> int:
        """SERVING when the edge's GET /health answers 200 (it does once the orchestrator serves)."""
        try:
            with urllib.request.urlopen(f"http://{self.address(EDGE)}/health", timeout=2) as response:
                serving = response.status == 200
        except (urllib.error.URLError, OSError):
            serving = False
        return int(health_pb2.HealthCheckResponse.SERVING if serving
                   else health_pb2.HealthCheckResponse.NOT_SERVING)

    def edge_urls(self) -> tuple[str, str] | None:
        """The edge's page URL and phone WebSocket URL, when the stack runs one."""
        if EDGE not in self.services:
            return None
        address = self.address(EDGE)
        return f"http://{address}/", f"ws://{address}/phone"

    def start(self, on_progress: Callable[[Progress], None] | None = None,
              cancel: threading.Event | None = None) -> None:
        """Start all four (and the edge, with ``config.edge``) and wait until every one is SERVING.

        Raises ServiceFailed (a service exited; the others are stopped), StartCancelled when
        ``cancel`` is set, or StackError on timeout. On any failure every child is stopped.
        """
        cancel = cancel or threading.Event()
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        self._started_at = time.monotonic()
        deadline = self._started_at + self.config.start_timeout_s

        def tick() -> None:
            if on_progress is not None:
                on_progress(self.progress())

        try:
            backends = [name for stage in BACKENDS for name in self.config.instances(stage)]
            for stage in BACKENDS:
                for name in self.config.instances(stage):
                    self._spawn(stage, name=name)
            # No gRPC channel exists before the last spawn: forking next to gRPC threads is avoided.
            self._wait_ports(backends, deadline, cancel, tick)
            wiring = [arg for s in BACKENDS for arg in (ADDRESS_FLAGS[s], self.stage_address(s))]
            self._spawn("orchestrator", wiring)
            self._wait_ports([*backends, "orchestrator"], deadline, cancel, tick)
            if self.config.edge:
                self._spawn(EDGE, ["--orchestrator", self.address("orchestrator")])
                self._wait_ports([*backends, "orchestrator", EDGE], deadline, cancel, tick)
            while True:
                self._check_exits()
                for stage, service in self.services.items():
                    if service.state == SERVING:
                        continue
                    try:
                        if self._health(stage) == health_pb2.HealthCheckResponse.SERVING:
                            service.set_state(SERVING)
                    except grpc.RpcError:
                        pass  # not accepting calls yet: still loading
                tick()
                if all(s.state == SERVING for s in self.services.values()):
                    return
                if time.monotonic() > deadline:
                    loading = [s for s, p in self.services.items() if p.state != SERVING]
                    raise StackError(f"not SERVING after {self.config.start_timeout_s:g} s: "
                                     f"{', '.join(loading)} (logs in {self.config.log_dir})")
                if cancel.wait(0.25):
                    raise StartCancelled("stopped while starting")
        except BaseException:
            self.stop()
            raise

    # -- running ---------------------------------------------------------------------------
    def exited(self) -> ServiceFailed | None:
        """The first service found to have exited, or None while all run."""
        for service in self.services.values():
            if not service.alive():
                service.set_state(EXITED)
                return service.failure()
        return None

    def wait(self, cancel: threading.Event, poll_s: float = 0.5,
             on_event: Callable[[str], None] | None = None) -> ServiceFailed | None:
        """Supervise until ``cancel`` is set (None).

        A service that exits is restarted per ``config.restart``, each step told to ``on_event``
        as one line; the failure is returned when there is no policy or the service keeps dying.
        """
        say = on_event or (lambda line: None)
        while not cancel.wait(self._next_wake(poll_s)):
            if self.config.restart is None:
                failed = self.exited()
                if failed is not None:
                    return failed
                continue
            failed = self._supervise(self.config.restart, say)
            if failed is not None:
                return failed
        return None

    def _next_wake(self, poll_s: float) -> float:
        due = [at - time.monotonic() for at in self._restart_at.values()]
        return max(0.01, min([poll_s, *due]))

    def _supervise(self, policy: RestartPolicy, say: Callable[[str], None]) -> ServiceFailed | None:
        now = time.monotonic()
        for name, service in list(self.services.items()):
            if name in self._restart_at:
                if now >= self._restart_at[name]:
                    del self._restart_at[name]
                    self._restart(name, service)
                continue
            if not service.alive():
                service.set_state(EXITED)
                failure = service.failure()
                ran_s = now - service.started_at
                deaths = 1 if ran_s >= policy.stable_s else self._deaths.get(name, 0) + 1
                self._deaths[name] = deaths
                if deaths > policy.max_quick_deaths:
                    say(f"{name} exited with status {failure.returncode} {deaths} times in a row "
                        f"within {policy.stable_s:g} s of starting: giving up")
                    return failure
                delay = policy.delay(deaths)
                say(f"{name} exited with status {failure.returncode} after {ran_s:.1f} s; restarting "
                    f"it in {delay:g} s on the same port (log: {service.log_path})")
                self._restart_at[name] = now + delay
            elif service.state != SERVING:
                try:
                    if self._health(name) == health_pb2.HealthCheckResponse.SERVING:
                        service.set_state(SERVING)
                        say(f"{name} is back: SERVING at {self.address(name)}")
                except grpc.RpcError:
                    pass  # still loading
        return None

    def _restart(self, name: str, old: ServiceProcess) -> None:
        old.join_reader()
        stage, extra_args = self._spawned[name]
        try:
            self._spawn(stage, extra_args, name=name, port=old.port or 0)
        except StackError:
            self.services[name] = old  # could not even start: counts as another quick death
            old.started_at = time.monotonic()
            return
        self.services[name].set_state(LOADING)
        self.restarts[name] = self.restarts.get(name, 0) + 1

    # -- stop ------------------------------------------------------------------------------
    def stop(self) -> dict[str, int]:
        """SIGTERM every service (orchestrator first), wait, kill stragglers; the exit codes."""
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        ordered = [self.services[name] for s in (EDGE, *reversed(STAGES)) for name in self.config.instances(s)
                   if name in self.services]
        for service in ordered:
            service.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_timeout_s
        for service in ordered:
            try:
                service.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                service.proc.kill()
                service.proc.wait()
        codes = {}
        for service in ordered:
            service.join_reader()
            service.set_state(EXITED)
            codes[service.stage] = service.proc.returncode
        return codes

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
