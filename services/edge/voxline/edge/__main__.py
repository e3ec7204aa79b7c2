"""``python -m voxline.edge``: parse the configuration, dial the orchestrator, serve HTTP(S).

SIGTERM/SIGINT: stop accepting, close every session (each page is told why), exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys
from collections.abc import Sequence

from voxline.common.config import ConfigError, describe, read_config_file, refuse
from voxline.edge.config import EdgeConfig, parse

PROG = "python -m voxline.edge"
log = logging.getLogger("voxline.edge")


def _channel(config: EdgeConfig):  # type: ignore[no-untyped-def]
    import grpc

    options = [("grpc.max_receive_message_length", 32 * 1024 * 1024)]
    if config.orchestrator_ca:
        creds = grpc.ssl_channel_credentials(read_config_file(config.orchestrator_ca, "--orchestrator-ca"))
        return grpc.aio.secure_channel(config.orchestrator, creds, options=options)
    return grpc.aio.insecure_channel(config.orchestrator, options=options)


async def serve(config: EdgeConfig) -> None:
    """Serve until SIGTERM/SIGINT."""
    from aiohttp import web

    from voxline.common.server import write_port_file
    from voxline.common.telemetry import shutdown_telemetry
    from voxline.edge.app import Edge, build_app

    channel = _channel(config)
    edge = Edge(config, channel)
    runner = web.AppRunner(build_app(edge), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    context = None
    if config.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(config.tls_cert, config.tls_key)
    site = web.TCPSite(runner, config.host, config.port, ssl_context=context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from exc
    port = int(runner.addresses[0][1])
    metrics_port = port
    if config.metrics_port is not None:
        from prometheus_client import start_http_server

        scrape, _ = start_http_server(config.metrics_port, addr=config.host, registry=edge.metrics.registry)
        metrics_port = int(scrape.server_port)
    if config.metrics_port_file:  # first: a supervisor reads it once the port file exists
        write_port_file(config.metrics_port_file, metrics_port)
    if config.port_file:
        write_port_file(config.port_file, port)
    host = "127.0.0.1" if config.host in ("0.0.0.0", "", "::") else config.host
    ws = "wss" if config.tls_cert else "ws"
    log.info("serving", extra={"page": f"{config.scheme}://{host}:{port}/",
                               "phone": f"{ws}://{host}:{port}/phone",
                               "orchestrator": config.orchestrator})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    _exit_if_stuck(SHUTDOWN_GRACE_S + 5.0)
    try:
        # closing the peers may hang in aiortc when a peer is closing itself at the same moment
        # (seen about 1 stop in 8 in tests): the stop is bounded, what is left is cancelled
        async with asyncio.timeout(SHUTDOWN_GRACE_S):
            await runner.cleanup()
    except TimeoutError:
        log.warning("the sessions did not close within %g s; stopping anyway", SHUTDOWN_GRACE_S)
    await channel.close()
    shutdown_telemetry()


#: Longest wait for the sessions to close at a stop, seconds.
SHUTDOWN_GRACE_S = 10.0


def _exit_if_stuck(after_s: float) -> None:
    """A stop that has not ended ``after_s`` from now writes every thread's stack to the log and
    exits the process: about 1 test stop in 8 hung after "stopping" with the event loop blocked
    (the cause is not found yet; the stacks are for finding it), until the supervisor's SIGKILL."""
    import faulthandler
    import os
    import threading

    def stuck() -> None:
        log.error("the stop hung for %g s; exiting (thread stacks follow on stderr)", after_s)
        faulthandler.dump_traceback(all_threads=True)
        os._exit(0)

    timer = threading.Timer(after_s, stuck)
    timer.daemon = True
    timer.start()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the edge until SIGTERM/SIGINT; return the process exit status."""
    try:
        config = parse(argv)
    except ConfigError as exc:
        return refuse(PROG, exc)
    from voxline.common.logs import setup_logging
    from voxline.common.server import exit_with_parent
    from voxline.common.telemetry import setup_telemetry

    setup_logging(config.log_level, config.log_format)
    # aioice logs every candidate pair check at INFO
    for name in ("aioice", "aiortc"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    log.info("config", extra={"config": describe(config)})
    exit_with_parent()
    setup_telemetry("voxline-edge")
    try:
        asyncio.run(serve(config))
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        return 2
    except Exception:
        log.exception("edge failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
