#!/usr/bin/env bash
# Every static check, in the order a reviewer would want them: lint, types, contract drift, compose.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bin=.venv/bin
echo "== ruff"
"$bin/ruff" check services tests bench scripts
echo "== mypy (strict, services and bench)"
"$bin/mypy" services/common/voxline/common services/stt/voxline services/llm/voxline \
  services/tts/voxline services/orchestrator/voxline services/testing/voxline services/edge/voxline bench
echo "== generated stubs match protos/"
PYTHON="$bin/python" bash scripts/gen_protos.sh --check
if [[ -f scripts/check_compose.sh ]]; then
  echo "== docker-compose.yml"
  PATH="$root/$bin:$PATH" bash scripts/check_compose.sh
fi
if [[ -f scripts/check_k8s.sh ]]; then
  echo "== deploy/k8s (kustomize render + Kubernetes schemas)"
  VOXLINE_BIN="$bin" bash scripts/check_k8s.sh
fi
echo "checks passed"
