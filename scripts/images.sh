#!/usr/bin/env bash
# `make images`: the stack's images, built from a wheelhouse made on the host.
#
#   1. scripts/wheelhouse.sh: every pinned wheel into build/wheelhouse (the host's pip config, proxy
#      and CA; constraints.txt as .venv);
#   2. the wheelhouse as an image (voxline-wheelhouse:latest), which the builds mount read-only;
#   3. voxline-{stt,llm,tts,orchestrator,phoenix}:latest from deploy/<name>.Dockerfile, each
#      installing with `pip install --no-index --find-links`: no network and no CA in the builds.
#
# Knobs (environment or make variables):
#   BASE_IMAGE   the Python base (default python:3.11-slim, pulled if absent; when no registry
#                answers, scripts/base_image.sh builds voxline/python:3.11-slim from the Debian
#                archive and that is used). Set it to use a base of your own (a mirror's copy).
#   IMAGES       which images (default: "stt llm tts orchestrator phoenix", plus edge when
#                deploy/edge.Dockerfile exists)
#   DOCKER       the docker CLI; BuildKit is needed (a CLI with buildx, or Docker 20.10's own
#                DOCKER_BUILDKIT=1 build). Default: /usr/bin/docker (Debian's docker.io) if present.
# Prints each image's size and the time taken.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [[ -z "${DOCKER:-}" ]]; then
  if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
export DOCKER DOCKER_BUILDKIT=1
start=$(date +%s)
"$DOCKER" info >/dev/null 2>&1 || { echo "images: no Docker engine answers ($DOCKER info failed)" >&2; exit 1; }

images=(${IMAGES:-stt llm tts orchestrator phoenix})
if [[ -z "${IMAGES:-}" && -f deploy/edge.Dockerfile ]]; then images+=(edge); fi

base="${BASE_IMAGE:-}"
if [[ -z $base ]]; then
  base=python:3.11-slim
  if ! "$DOCKER" image inspect "$base" >/dev/null 2>&1 \
      && ! timeout 300 "$DOCKER" pull -q "$base" >/dev/null 2>&1; then
    echo "images: $base cannot be pulled (no registry reachable); building a stand-in from the Debian archive"
    base=voxline/python:3.11-slim
    BASE_IMAGE="$base" DOCKER="$DOCKER" bash scripts/base_image.sh
  fi
fi
echo "images: base $base"

bash scripts/wheelhouse.sh
key=$(cat build/wheelhouse/.inputs)
if [[ "$("$DOCKER" image inspect -f '{{index .Config.Labels "voxline.wheelhouse"}}' voxline-wheelhouse:latest 2>/dev/null)" != "$key" ]]; then
  echo "images: voxline-wheelhouse:latest (the wheels as an image, mounted by the builds)"
  "$DOCKER" build -q -f deploy/wheelhouse.Dockerfile --label "voxline.wheelhouse=$key" \
    -t voxline-wheelhouse:latest build/wheelhouse >/dev/null
fi

log=build/images.log
: >"$log"
for name in "${images[@]}"; do
  t0=$(date +%s)
  # --network=none: the build proves it needs nothing but the wheelhouse (the GPU variants, which
  # fetch CUDA wheels, are built by docker compose -f ... -f docker-compose.gpu.yml build).
  if ! nice -n 19 ionice -c3 "$DOCKER" build --progress=plain --network=none \
        -f "deploy/$name.Dockerfile" --build-arg "BASE_IMAGE=$base" \
        -t "voxline-$name:latest" . >>"$log" 2>&1; then
    echo "images: building voxline-$name failed; the end of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  size=$("$DOCKER" image inspect -f '{{.Size}}' "voxline-$name:latest")
  printf 'images: voxline-%-13s %5d MB  (%d s)\n' "$name:latest" $(( size / 1000000 )) $(( $(date +%s) - t0 ))
done
echo "images: done in $(( $(date +%s) - start )) s (build log: $log)"
