#!/usr/bin/env bash
# Static checks of docker-compose.yml (+ docker-compose.gpu.yml) without a Docker engine:
#   1. check-jsonschema against the compose-spec JSON schema vendored in deploy/compose-spec.json
#      (the copy check-jsonschema itself ships as `--builtin-schema vendor.compose-spec`);
#   2. `docker compose config -q` (Compose v2) or Debian's `docker-compose config -q` when installed
#      (`apt-get install -y docker-compose`), which resolves anchors, merges and the override file;
#      skipped with a message otherwise.
# Exit status 0 when every check that could run passed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bindir="$root/.venv/bin"
checker="$(command -v "$bindir/check-jsonschema" || command -v check-jsonschema || true)"
if [[ -z "$checker" ]]; then
  echo "check_compose: check-jsonschema not found (pip install check-jsonschema)" >&2
  exit 1
fi

echo "check_compose: compose-spec schema (deploy/compose-spec.json)"
"$checker" --schemafile deploy/compose-spec.json docker-compose.yml docker-compose.gpu.yml

for stage in stt llm tts orchestrator phoenix; do
  test -f "deploy/$stage.Dockerfile" || { echo "check_compose: deploy/$stage.Dockerfile missing" >&2; exit 1; }
done

# Compose needs the interpolated variables to exist; give it harmless values, never real keys.
export GROQ_API_KEY="${GROQ_API_KEY:-}" CEREBRAS_API_KEY="${CEREBRAS_API_KEY:-}"
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
fi
if [[ ${#compose[@]} -eq 0 ]]; then
  echo "check_compose: SKIPPED 'docker-compose config' (neither 'docker compose' nor docker-compose" \
       "is installed; apt-get install -y docker-compose)"
else
  echo "check_compose: ${compose[*]} config -q (CPU, then with the GPU override)"
  "${compose[@]}" -f docker-compose.yml config -q
  "${compose[@]}" -f docker-compose.yml -f docker-compose.gpu.yml config -q
fi
echo "check_compose: OK"
