#!/usr/bin/env bash
# Regenerates the checked-in Python stubs from protos/ (run from anywhere, in the project venv):
#   bash scripts/gen_protos.sh          # write services/common/voxline/v1/*_pb2*.py(i)
#   bash scripts/gen_protos.sh --check  # fail if the checked-in stubs differ from the .proto files
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
out="$root/services/common"
if [[ "${1:-}" == "--check" ]]; then
  out="$(mktemp -d)"; trap 'rm -rf "$out"' EXIT
  mkdir -p "$out/voxline/v1"
fi
bindir="$(dirname "$py")"
PATH="$bindir:$PATH" "$py" -m grpc_tools.protoc -I "$root/protos" \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="quiet:$out" --mypy_grpc_out="quiet:$out" \
  "$root"/protos/voxline/v1/*.proto
if [[ "${1:-}" == "--check" ]]; then
  status=0
  for f in "$out"/voxline/v1/*_pb2*; do
    name="$(basename "$f")"
    if ! cmp -s "$f" "$root/services/common/voxline/v1/$name"; then
      echo "stale generated stub: services/common/voxline/v1/$name (run: bash scripts/gen_protos.sh)" >&2
      status=1
    fi
  done
  exit $status
fi
echo "generated stubs in services/common/voxline/v1/"
