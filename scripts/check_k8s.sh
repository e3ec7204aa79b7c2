#!/usr/bin/env bash
# Renders every Kustomize overlay under deploy/k8s/overlays (kubectl kustomize, from the kubectl
# wheel) and validates each rendered manifest offline against the Kubernetes schemas
# (kubernetes-validate --strict: unknown fields fail too). The only kind without a schema there is
# KEDA's ScaledObject (a CRD); tests/deploy/test_k8s.py checks its shape.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bin="${VOXLINE_BIN:-.venv/bin}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for overlay in deploy/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  "$bin/kubectl" kustomize "$overlay" >"$out/$name.yaml"
  if ! report="$("$bin/kubernetes-validate" --strict --quiet "$out/$name.yaml" 2>&1)"; then
    echo "$report" >&2
    echo "deploy/k8s/overlays/$name: invalid" >&2
    exit 1
  fi
  unknown="$(grep -v 'kind ScaledObject with api version keda.sh/v1alpha1' <<<"$report" || true)"
  if [[ -n "$unknown" ]]; then
    echo "$unknown" >&2
    echo "deploy/k8s/overlays/$name: resources without a schema" >&2
    exit 1
  fi
  echo "deploy/k8s/overlays/$name: $(grep -c '^kind:' "$out/$name.yaml") resources valid"
done
