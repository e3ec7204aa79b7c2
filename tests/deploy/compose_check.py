"""The end-to-end check of the docker-compose stack, run by scripts/compose_test.sh (`make compose-test`)
once the stack is up; not a pytest module (it needs a Docker engine and built images).

As a user would, from the host: waits until every container is healthy, speaks a question (real
speech, Piper) through the orchestrator's published port, checks the transcript and the reply audio,
checks that the turn's trace reached Phoenix with all four service names, then crashes the STT
container mid-conversation (SIGKILL of its process, as an OOM kill or a segfault would), waits for
Docker's restart policy to bring it back healthy, and checks that the next turn of the same
conversation completes. It also checks that no image carries a secret in its history or config.

    python tests/deploy/compose_check.py --project voxline-ct --orchestrator 127.0.0.1:50050 \\
        --phoenix http://127.0.0.1:6006 [--edge http://127.0.0.1:8780] [--docker /usr/bin/docker]

Prints one line per step and exits 0 when every check holds, 1 with the reason otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any

from voxline.cli.client import Conversation, TurnResult, session_config
from voxline.testing.speech import PHRASE, english_speech_wav, word_errors

QUESTION = "What is the capital of France?"
SERVICES = ("orchestrator", "stt", "llm", "tts")
SERVICE_NAMES = {f"voxline-{s}" for s in SERVICES}
#: Secrets and host configuration that must never be baked into an image.
SECRET = re.compile(r"(API_KEY|TOKEN|PASSWORD|SECRET)=\S|gsk_[A-Za-z0-9]{8}|csk-[A-Za-z0-9]{8}|"
                    r"pip\.conf|ca-certificates\.crt|PIP_CERT|PIP_INDEX_URL|REQUESTS_CA_BUNDLE",
                    re.IGNORECASE)


class CheckFailed(Exception):
    pass


def step(message: str) -> None:
    print(f"compose-check: {message}", flush=True)


def docker(args: list[str], docker_cli: str) -> str:
    done = subprocess.run([docker_cli, *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise CheckFailed(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def containers(project: str, docker_cli: str) -> dict[str, str]:
    """Compose service name -> container id, for the project's containers."""
    out = docker(["ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
                  "--format", '{{.ID}} {{.Label "com.docker.compose.service"}}'], docker_cli)
    return {name: cid for cid, name in (line.split() for line in out.splitlines() if line.strip())}


def state(cid: str, docker_cli: str) -> dict[str, Any]:
    data = json.loads(docker(["inspect", cid], docker_cli))[0]["State"]
    assert isinstance(data, dict)
    return data


def wait_healthy(project: str, names: Iterable[str], docker_cli: str, timeout_s: float) -> float:
    """Seconds until every named service's container is running and healthy; CheckFailed after
    ``timeout_s`` (with the states) or as soon as one has exited for good."""
    start = time.monotonic()
    names = list(names)
    while True:
        ids = containers(project, docker_cli)
        missing = [n for n in names if n not in ids]
        if missing:
            raise CheckFailed(f"no container for {missing}")
        states = {n: state(ids[n], docker_cli) for n in names}
        health = {n: (s.get("Health") or {}).get("Status", "none") if s["Running"] else s["Status"]
                  for n, s in states.items()}
        if all(h == "healthy" for h in health.values()):
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise CheckFailed(f"not healthy within {timeout_s:.0f} s: {health}")
        time.sleep(2)  # polling Docker's view of the health checks: nothing to wait on


def check_reply(result: TurnResult, question: str, label: str) -> None:
    if result.status != "COMPLETED":
        raise CheckFailed(f"{label}: turn status {result.status}: {result.metrics.get('error')}")
    errors = word_errors(result.transcript, question)
    if errors > 2:
        raise CheckFailed(f"{label}: heard {result.transcript!r} for {question!r} ({errors} word errors)")
    if not result.reply_text.strip():
        raise CheckFailed(f"{label}: no reply text")
    if result.sample_rate <= 0 or result.audio_seconds < 0.5:
        raise CheckFailed(f"{label}: reply audio too short ({result.audio_seconds:.2f} s at "
                          f"{result.sample_rate} Hz)")
    samples = memoryview(result.pcm).cast("h")
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    if rms < 100:  # PCM16: silence or near-silence is not a spoken reply
        raise CheckFailed(f"{label}: reply audio is silent (RMS {rms:.0f})")
    step(f"{label}: heard {result.transcript!r}; replied {result.reply_text.strip()!r} "
         f"({result.audio_seconds:.1f} s of audio at {result.sample_rate} Hz, RMS {rms:.0f}; "
         f"turn {float(str(result.metrics.get('total_ms', 0))):.0f} ms)")


def trace_services(phoenix: str, trace_id: str, timeout_s: float) -> set[str]:
    """The service.name values of the trace's spans in Phoenix's "voxline" project, once all four
    are there (spans are batched: they arrive within seconds); what arrived, after ``timeout_s``."""
    query = urllib.parse.urlencode({"trace_id": trace_id, "limit": 1000})
    url = f"{phoenix}/v1/projects/voxline/spans?{query}"
    deadline = time.monotonic() + timeout_s
    found: set[str] = set()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                spans = json.load(response).get("data", [])
        except OSError as exc:  # the project appears with the first span: 404 until then
            spans, last_error = [], str(exc)
        else:
            last_error = ""
        for span in spans:
            attributes = span.get("attributes", {})
            name = attributes.get("service.name") or (attributes.get("service") or {}).get("name")
            if name:
                found.add(str(name))
        if SERVICE_NAMES <= found or time.monotonic() > deadline:
            if last_error and not found:
                step(f"Phoenix: {last_error}")
            return found
        time.sleep(2)  # polling Phoenix's API for batched spans


def check_trace(phoenix: str, result: TurnResult, label: str) -> None:
    trace_id = str(result.metrics.get("trace_id") or "")
    if not trace_id:
        raise CheckFailed(f"{label}: the turn has no trace id")
    found = trace_services(phoenix, trace_id, 90)
    if not SERVICE_NAMES <= found:
        raise CheckFailed(f"{label}: trace {trace_id} in Phoenix has service names {sorted(found)}, "
                          f"expected {sorted(SERVICE_NAMES)}")
    step(f"{label}: trace {trace_id} is in Phoenix with {', '.join(sorted(found))}")


def check_no_secrets(project: str, docker_cli: str) -> None:
    images = sorted({docker(["inspect", "-f", "{{.Config.Image}}", cid], docker_cli).strip()
                     for cid in containers(project, docker_cli).values()})
    for image in images:
        history = docker(["history", "--no-trunc", "--format", "{{.CreatedBy}}", image], docker_cli)
        config = docker(["image", "inspect", "-f", "{{json .Config.Env}} {{json .Config.Labels}}",
                         image], docker_cli)
        hits = sorted({m.group(0) for m in SECRET.finditer(history + config)})
        if hits:
            raise CheckFailed(f"{image}: its history or config holds {hits}")
        user = docker(["image", "inspect", "-f", "{{.Config.User}}", image], docker_cli).strip()
        if user in ("", "root", "0"):
            raise CheckFailed(f"{image} runs as root")
    step(f"no secret in the history or config of {len(images)} images; all run as a non-root user")


async def conversation(args: argparse.Namespace) -> None:
    question = english_speech_wav(QUESTION)
    follow_up = english_speech_wav(PHRASE)
    async with Conversation(args.orchestrator, session_config(language="en"),
                            read_timeout_s=args.turn_timeout) as conv:
        async with asyncio.timeout(args.turn_timeout):
            first = await conv.turn(audio=question)
        check_reply(first, QUESTION, "turn 1")
        check_trace(args.phoenix, first, "turn 1")

        ids = containers(args.project, args.docker)
        before = state(ids["stt"], args.docker)
        # A crash, not `docker kill`: Docker treats `docker kill`/`docker stop` as the operator's
        # decision and its restart policies deliberately leave such a container stopped.
        os.kill(int(before["Pid"]), signal.SIGKILL)
        step(f"crashed the stt container (SIGKILL to its process {before['Pid']}) mid-conversation")
        start = time.monotonic()
        while state(ids["stt"], args.docker).get("StartedAt") == before["StartedAt"]:
            if time.monotonic() - start > 60:
                raise CheckFailed("stt was not restarted within 60 s (restart policy)")
            await asyncio.sleep(0.5)  # polling Docker for the restart
        restarts = json.loads(docker(["inspect", ids["stt"]], args.docker))[0]["RestartCount"]
        waited = await asyncio.to_thread(wait_healthy, args.project, ["stt"], args.docker,
                                         args.health_timeout)
        step(f"stt restarted by its restart policy (RestartCount {restarts}) and healthy again "
             f"{time.monotonic() - start:.0f} s after the crash ({waited:.0f} s from its restart)")

        async with asyncio.timeout(args.turn_timeout):
            second = await conv.turn(audio=follow_up)
        check_reply(second, PHRASE, "turn 2 (same conversation, after the crash)")
        check_trace(args.phoenix, second, "turn 2")


def check_edge(edge: str) -> None:
    """The edge's page and health, through its published port."""
    with urllib.request.urlopen(f"{edge}/health", timeout=10) as response:
        health = json.load(response)
    with urllib.request.urlopen(f"{edge}/", timeout=10) as response:
        page = response.read().decode()
    if health.get("status") != "SERVING" or "<html" not in page.lower():
        raise CheckFailed(f"edge: /health said {health!r}, / gave {len(page)} characters")
    step(f"edge: /health SERVING (it reaches the orchestrator), the page is served ({len(page)} bytes)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", required=True, help="the compose project name")
    parser.add_argument("--orchestrator", required=True, help="host:port of the published Converse")
    parser.add_argument("--phoenix", required=True, help="Phoenix's URL, e.g. http://127.0.0.1:6006")
    parser.add_argument("--edge", default="", help="the edge's URL (empty: no edge in the stack)")
    parser.add_argument("--docker", default="docker", help="the docker CLI")
    parser.add_argument("--health-timeout", type=float, default=600.0,
                        help="seconds for every container to be healthy (default: %(default)s)")
    parser.add_argument("--turn-timeout", type=float, default=180.0,
                        help="seconds for one turn (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        names = ["phoenix", *SERVICES, *(["edge"] if args.edge else [])]
        waited = wait_healthy(args.project, names, args.docker, args.health_timeout)
        step(f"all {len(names)} containers healthy ({waited:.0f} s more after `up`)")
        check_no_secrets(args.project, args.docker)
        if args.edge:
            check_edge(args.edge)
        asyncio.run(conversation(args))
    except (CheckFailed, TimeoutError, OSError) as exc:
        print(f"compose-check: FAILED: {exc or 'timed out'}", file=sys.stderr)
        return 1
    step("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
