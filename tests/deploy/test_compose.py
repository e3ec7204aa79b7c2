"""docker-compose.yml, the GPU override and deploy/*.Dockerfile, checked without a Docker engine."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from common.tls_certs import Certs, make_certs
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
PORTS = {"orchestrator": 50050, "stt": 50051, "llm": 50052, "tts": 50053}
CHECKER = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which(
    "check-jsonschema")


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load("docker-compose.yml")


def published(stage: str, port: int) -> str:
    """A published port as docker-compose.yml writes it: host address and port from the environment
    (a .env file), the container port fixed."""
    return f"${{VOXLINE_COMPOSE_BIND:-127.0.0.1}}:${{VOXLINE_COMPOSE_{stage.upper()}_PORT:-{port}}}:{port}"


def test_services_phoenix_viewer_and_optional_jaeger(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"phoenix", "jaeger", "edge", *PORTS}
    phoenix = services["phoenix"]
    assert phoenix["build"]["dockerfile"] == "deploy/phoenix.Dockerfile"
    assert phoenix["ports"] == [published("phoenix", 6006), published("otlp", 4317)]
    assert "/healthz" in " ".join(phoenix["healthcheck"]["test"])
    assert phoenix["volumes"] == ["phoenix-data:/var/lib/phoenix"]
    jaeger = services["jaeger"]
    assert jaeger["profiles"] == ["jaeger"]  # only with --profile jaeger: its image needs a registry
    assert jaeger["image"].startswith("jaegertracing/all-in-one:")
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert jaeger["ports"] == [published("jaeger", 16686)]
    assert "profiles" not in phoenix and all("profiles" not in services[s] for s in [*PORTS, "edge"])


def test_the_edge_joins_the_stack_behind_the_orchestrator(compose: dict[str, Any]) -> None:
    edge = compose["services"]["edge"]
    assert edge["build"]["dockerfile"] == "deploy/edge.Dockerfile"
    assert edge["image"] == "voxline-edge:latest"
    assert edge["ports"] == [published("edge", 8780)]
    env = edge["environment"]
    assert (env["VOXLINE_EDGE_HOST"], env["VOXLINE_EDGE_PORT"]) == ("0.0.0.0", "8780")
    assert env["VOXLINE_EDGE_ORCHESTRATOR"] == f"orchestrator:{PORTS['orchestrator']}"
    assert edge["depends_on"] == {"orchestrator": {"condition": "service_healthy"}}
    probe = " ".join(edge["healthcheck"]["test"])
    assert "127.0.0.1:8780/health" in probe and "VOXLINE_TLS_CERT" in probe  # HTTPS when TLS is on
    assert edge["restart"] == "unless-stopped"


@pytest.mark.parametrize("stage", list(PORTS))
def test_each_voxline_service(compose: dict[str, Any], stage: str) -> None:
    service = compose["services"][stage]
    port = PORTS[stage]
    assert service["build"] == {"context": ".", "dockerfile": f"deploy/{stage}.Dockerfile",
                                "args": {"BASE_IMAGE": "${BASE_IMAGE:-python:3.11-slim}"}}
    assert (ROOT / service["build"]["dockerfile"]).is_file()
    assert service["image"] == f"voxline-{stage}:latest"  # what `make images` tags
    assert service["ports"] == [published(stage, port)]
    env = service["environment"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://${VOXLINE_COMPOSE_TRACES_TO:-phoenix}:4317"
    assert env["OTEL_SERVICE_NAME"] == f"voxline-{stage}"
    assert env[f"VOXLINE_{stage.upper()}_HOST"] == "0.0.0.0"
    assert env[f"VOXLINE_{stage.upper()}_PORT"] == str(port)
    test = service["healthcheck"]["test"]
    assert test == ["CMD", "python", "-m", "voxline.common.health_probe", str(port), stage]
    assert re.fullmatch(r"\d+s", service["healthcheck"]["start_period"])
    # A crashed process comes back (scripts/compose_test.sh crashes STT and checks it).
    assert service["restart"] == "unless-stopped"
    # Model caches survive restarts and rebuilds: one named volume where each image keeps them.
    volumes = service.get("volumes", [])
    if stage == "orchestrator":
        assert volumes == []
    else:
        assert volumes == ["model-cache:/var/cache/voxline"]
        assert "model-cache" in compose["volumes"]
        assert service["depends_on"] == {"phoenix": {"condition": "service_started"}}


def test_keys_from_the_environment_and_the_orchestrator_wiring(compose: dict[str, Any]) -> None:
    llm = compose["services"]["llm"]["environment"]
    assert llm["GROQ_API_KEY"] == "${GROQ_API_KEY:-}"
    assert llm["CEREBRAS_API_KEY"] == "${CEREBRAS_API_KEY:-}"
    orchestrator = compose["services"]["orchestrator"]
    for stage in ("stt", "llm", "tts"):
        address = orchestrator["environment"][f"VOXLINE_ORCHESTRATOR_{stage.upper()}"]
        assert address == f"{stage}:{PORTS[stage]}"
        assert orchestrator["depends_on"][stage] == {"condition": "service_healthy"}
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"(gsk_|csk-)[A-Za-z0-9]{8,}", text), "an API key is committed"


def test_gpu_override_gives_the_gpu_to_the_model_services_only() -> None:
    services = load("docker-compose.gpu.yml")["services"]
    assert set(services) == {"stt", "llm", "tts"}  # not the orchestrator: it runs no model
    for service in services.values():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert services["stt"]["environment"]["VOXLINE_STT_DEVICE"] == "cuda"
    assert services["tts"]["environment"]["VOXLINE_TTS_VITS_DEVICE"] == "cuda"
    # The local LLM: a CUDA torch build and the cuda device, which VOXLINE_LLM_LOCAL_DEVICE=cpu undoes.
    assert services["llm"]["environment"]["VOXLINE_LLM_LOCAL_DEVICE"] == "${VOXLINE_LLM_LOCAL_DEVICE:-cuda}"
    for stage in ("llm", "tts"):
        assert services[stage]["build"]["args"]["TORCH_INDEX_URL"].startswith("${TORCH_CUDA_INDEX_URL:-")


def test_env_names_used_are_real_service_options() -> None:
    """The env vars compose sets exist in each service's --help (else they would be silently ignored)."""
    names = {
        "orchestrator": ["VOXLINE_ORCHESTRATOR_STT", "VOXLINE_ORCHESTRATOR_LLM", "VOXLINE_ORCHESTRATOR_TTS",
                         "VOXLINE_ORCHESTRATOR_HOST", "VOXLINE_ORCHESTRATOR_PORT"],
        "stt": ["VOXLINE_STT_DEVICE", "VOXLINE_STT_HOST", "VOXLINE_CACHE_DIR"],
        "llm": ["VOXLINE_LLM_LOCAL_DEVICE", "VOXLINE_LLM_LOCAL_CACHE_DIR", "VOXLINE_LLM_HOST"],
        "tts": ["VOXLINE_TTS_VITS_DEVICE", "VOXLINE_TTS_VITS_MODELS", "VOXLINE_TTS_ALLOW_DOWNLOADS"],
        "edge": ["VOXLINE_EDGE_HOST", "VOXLINE_EDGE_PORT", "VOXLINE_EDGE_ORCHESTRATOR",
                 "VOXLINE_EDGE_ICE_SERVERS", "VOXLINE_TLS_CERT"],
    }
    built = {stage: names for stage, names in names.items()
             if (ROOT / "services" / stage / "voxline" / stage / "__main__.py").exists()}
    helps = {stage: subprocess.Popen([sys.executable, "-m", f"voxline.{stage}", "--help"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for stage in built}  # in parallel: each imports its service's libraries
    for stage, proc in helps.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        text = " ".join(out.split())  # argparse wraps lines
        for name in built[stage]:
            assert f"env {name};" in text, f"{name} is not an option of voxline.{stage}"


def dockerfile_stages(name: str) -> list[list[str]]:
    """deploy/<name>.Dockerfile's instructions (comments dropped, continuation lines joined), split
    into stages; the lines before the first FROM (global ARGs) are the first "stage"."""
    text = (ROOT / "deploy" / f"{name}.Dockerfile").read_text().replace("\\\n", " ")
    lines = [" ".join(line.split()) for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    starts = [0, *(i for i, line in enumerate(lines) if line.startswith("FROM"))]
    return [lines[a:b] for a, b in zip(starts, [*starts[1:], len(lines)], strict=True)]


def pip_installs(lines: list[str]) -> list[str]:
    return [f"pip install{command}".split(" && ")[0].split("; fi")[0]
            for line in lines for command in line.split("pip install")[1:]]


@pytest.mark.parametrize("stage", [*PORTS, "edge", "phoenix"])
def test_dockerfiles_build_from_the_wheelhouse_into_a_small_image(stage: str) -> None:
    """Every wheel from the wheelhouse image (no index, no network), within constraints.txt, in a
    build stage; the image itself only copies the virtual environment and runs as a non-root user."""
    header, wheelhouse, *builders, image = dockerfile_stages(stage)
    assert header == ["ARG BASE_IMAGE=python:3.11-slim", "ARG WHEELHOUSE=voxline-wheelhouse:latest"]
    assert wheelhouse == ["FROM ${WHEELHOUSE} AS wheelhouse"]
    assert image[0] == "FROM ${BASE_IMAGE}"
    assert [b[0] for b in builders][-1] == "FROM ${BASE_IMAGE} AS build"
    for builder in builders:
        assert builder[0].startswith("FROM ${BASE_IMAGE} AS ")
        runs = [line for line in builder if line.startswith("RUN")]
        assert runs and all(line.startswith(
            "RUN --mount=type=bind,from=wheelhouse,source=/wheels,target=/wheels python -m venv /opt/venv")
            for line in runs)
        for command in pip_installs(builder):
            # Only the GPU variants fetch from an index (docker-compose.gpu.yml's build args).
            if "$TORCH_INDEX_URL" in command or "$CUDA_LIBS" in command:
                continue
            wheelhouse_only = "pip install --no-index --find-links /wheels -c constraints.txt "
            assert command.startswith(wheelhouse_only), command
    # The image: no pip run, no wheelhouse, no build stage's leftovers; a non-root user.
    assert pip_installs(image) == [] and not any("--mount" in line for line in image)
    assert "COPY --from=build /opt/venv /opt/venv" in image
    assert "USER voxline" in image and image.index("USER voxline") > image.index(
        "COPY --from=build /opt/venv /opt/venv")
    assert any(line.startswith("ENV") and "PATH=/opt/venv/bin:$PATH" in line for line in image)
    text = (ROOT / "deploy" / f"{stage}.Dockerfile").read_text()
    assert "build/wheelhouse" not in text and "pip.conf" not in text and "ca-certificates" not in text


@pytest.mark.parametrize("stage", [*PORTS, "edge"])
def test_dockerfiles_install_only_their_own_service(stage: str) -> None:
    _, _, *builders, image = dockerfile_stages(stage)
    for builder in builders:
        copies = [line.split()[1:] for line in builder if line.startswith("COPY")]
        assert copies == [["constraints.txt", "./"], ["services/common/", "common/"],
                          [f"services/{stage}/", f"{stage}/"]]
    [build] = [b for b in builders if b[0].endswith(" AS build")]
    assert any(f"-c constraints.txt ./common ./{stage}" in c for c in pip_installs(build))
    text = (ROOT / "deploy" / f"{stage}.Dockerfile").read_text()
    for other in {*PORTS, "edge"} - {stage}:
        assert f"./{other}" not in text and f" {other}/" not in text
    # The build context is the repository root: the Dockerfile's own ignore file sends only these.
    ignore = (ROOT / "deploy" / f"{stage}.Dockerfile.dockerignore").read_text().split("\n")
    patterns = [line for line in ignore if line and not line.startswith("#")]
    assert patterns[0] == "*"
    assert [p for p in patterns if p.startswith("!")] == [
        "!constraints.txt", "!services/common", f"!services/{stage}"]
    body = "\n".join(image)
    assert f'CMD ["python", "-m", "voxline.{stage}"]' in body
    assert f"EXPOSE {PORTS.get(stage, 8780)}" in body
    assert f"VOXLINE_{stage.upper()}_HOST=0.0.0.0" in body
    installs = " ".join(pip_installs(build))
    if stage in ("llm", "tts"):
        assert 'pip install --no-deps --index-url "$TORCH_INDEX_URL" torch==2.13.0' in installs
        assert 'ARG TORCH_INDEX_URL=""' in build  # empty: the wheelhouse's CPU torch
    else:
        assert "torch" not in installs and "TORCH" not in text, f"the {stage} image must not install torch"
    if stage == "stt":
        # torch only converts the text end-of-turn model, in a stage the image copies it from
        [text_model] = [b for b in builders if b[0].endswith(" AS text-model")]
        assert any("python -m voxline.stt.text_model build --out /opt/text-model" in line
                   for line in text_model)
        assert "COPY --from=text-model /opt/text-model /opt/voxline/text-model" in image
        assert "VOXLINE_STT_TEXT_MODEL=/opt/voxline/text-model" in body
    else:
        assert len(builders) == 1


def test_the_phoenix_image_is_the_viewer() -> None:
    *_, image = dockerfile_stages("phoenix")
    body = "\n".join(image)
    assert 'CMD ["python", "-m", "phoenix.server.main", "serve"]' in body
    for setting in ("PHOENIX_HOST=0.0.0.0", "PHOENIX_PORT=6006", "PHOENIX_GRPC_PORT=4317",
                    "PHOENIX_WORKING_DIR=/var/lib/phoenix"):
        assert setting in body
    # Quiet and offline, as `voxline up --viewer` starts it.
    from voxline.cli.viewer import QUIET_ENV

    for name, value in QUIET_ENV.items():
        assert f"{name}={value}" in body
    ignore = (ROOT / "deploy" / "phoenix.Dockerfile.dockerignore").read_text().split("\n")
    assert [line for line in ignore if line and not line.startswith("#")] == ["*", "!constraints.txt"]


@pytest.fixture
async def health_server() -> AsyncIterator[tuple[int, health.aio.HealthServicer]]:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port, servicer
    await server.stop(0)


async def probe(compose: dict[str, Any], port: int, env: dict[str, str] | None = None,
                name: str = "") -> int:
    """Run the compose health check command of the orchestrator, aimed at ``port`` (and ``name``)."""
    test = compose["services"]["orchestrator"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    args = [*test[2:-2], str(port), name or test[-1]]
    proc = await asyncio.create_subprocess_exec(sys.executable, *args, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL,
                                                env={**os.environ, **(env or {})})
    return await asyncio.wait_for(proc.wait(), 60)


async def test_the_health_probe_follows_grpc_health(
        compose: dict[str, Any], health_server: tuple[int, health.aio.HealthServicer]) -> None:
    port, servicer = health_server
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert await probe(compose, port) == 1
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert await probe(compose, port) == 0


@pytest.fixture
async def tls_health_server(tmp_path: Path) -> AsyncIterator[tuple[int, Certs]]:
    """A SERVING health service on TLS that requires client certificates (mutual TLS)."""
    certs = make_certs(tmp_path)
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(certs.server_key.read_bytes(), certs.server_cert.read_bytes())],
        root_certificates=certs.ca.read_bytes(), require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    yield port, certs
    await server.stop(0)


async def test_the_health_probe_keeps_working_with_tls_on(
        compose: dict[str, Any], tls_health_server: tuple[int, Certs]) -> None:
    port, certs = tls_health_server
    # What the service itself is given to turn TLS on (mutual: a client CA), plus the probe's own
    # client certificate (the server certificate here is for serverAuth only).
    env = {"VOXLINE_TLS_CERT": str(certs.server_cert), "VOXLINE_TLS_KEY": str(certs.server_key),
           "VOXLINE_TLS_CLIENT_CA": str(certs.ca),
           "VOXLINE_HEALTH_PROBE_TLS_CERT": str(certs.client_cert),
           "VOXLINE_HEALTH_PROBE_TLS_KEY": str(certs.client_key)}
    assert await probe(compose, port, env, name="localhost") == 0
    assert await probe(compose, port) == 1  # a plaintext probe cannot talk to it
    assert await probe(compose, port, env, name="not-in-the-certificate") == 1
    no_client_cert = {k: v for k, v in env.items() if "PROBE" not in k}  # serverAuth-only cert shown
    assert await probe(compose, port, no_client_cert, name="localhost") == 1


async def test_the_health_probe_fails_when_nothing_listens(compose: dict[str, Any]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert await probe(compose, port) == 1


@pytest.mark.skipif(CHECKER is None, reason="check-jsonschema is not installed")
def test_check_compose_script_passes() -> None:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "check_compose.sh")], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "check_compose: OK" in done.stdout
    compose_v2 = shutil.which("docker") is not None and subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    if compose_v2 or shutil.which("docker-compose") is not None:
        assert "config -q" in done.stdout
    else:
        assert "SKIPPED 'docker-compose config'" in done.stdout


@pytest.mark.skipif(CHECKER is None, reason="check-jsonschema is not installed")
def test_the_vendored_schema_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    text = (ROOT / "docker-compose.yml").read_text().replace("condition: service_healthy",
                                                            "condition: when_ready", 1)
    broken.write_text(text)
    assert CHECKER is not None
    done = subprocess.run([CHECKER, "--schemafile", str(ROOT / "deploy" / "compose-spec.json"), str(broken)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "when_ready" in done.stdout + done.stderr


def test_the_end_to_end_check_flags_secrets_in_image_history() -> None:
    """compose_check.py (make compose-test) greps every image's `docker history` and config: what a
    leaked key or the host's pip/CA configuration would look like there is caught, and the
    instructions of our own Dockerfiles are not."""
    from compose_check import SECRET

    leaked = ["/bin/sh -c #(nop)  ENV GROQ_API_KEY=gsk_0123456789abcdefgh",
              "RUN /bin/sh -c echo csk-abcdefgh12345678 > /key",
              "COPY pip.conf /etc/pip.conf # buildkit",
              "ARG PIP_INDEX_URL=https://user:secret@proxy.example/simple",
              "COPY /etc/ssl/certs/ca-certificates.crt /usr/local/share/ca.crt",
              '["AUTH_TOKEN=abc"]']
    assert all(SECRET.search(line) for line in leaked)
    for name in [*PORTS, "edge", "phoenix", "wheelhouse"]:
        text = (ROOT / "deploy" / f"{name}.Dockerfile").read_text()
        assert SECRET.search(text) is None, name
