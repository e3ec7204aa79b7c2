#!/usr/bin/env bash
# `make compose-test`: the docker-compose stack, really built and run.
#
#   1. starts dockerd if none answers (root; Debian's docker.io, no systemd needed);
#   2. `make images` (scripts/images.sh: wheelhouse on the host, builds with no network);
#   3. brings the stack up as its own compose project on free host ports (an env file, so it runs
#      beside `voxline up` or another stack), and waits for every health check;
#   4. tests/deploy/compose_check.py: a spoken question through the orchestrator's published port,
#      the reply audio, the turn's trace in Phoenix with all four service names, a crash of the STT
#      container mid-conversation, its restart by the restart policy, the next turn; no secret in
#      any image's history;
#   5. tears everything down (containers, network, volumes), also on failure or Ctrl-C.
#
# Quiet: one line per step; everything else goes to build/compose-test.log, whose tail (and the
# services' logs) is printed on failure. Knobs: BASE_IMAGE (see scripts/images.sh), DOCKER (the
# docker CLI), COMPOSE (the compose command, default `docker compose` if it works, else
# docker-compose), VOXLINE_COMPOSE_TEST_KEEP=1 (leave the stack up for a look; `down -v` yourself).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mkdir -p build
log="$root/build/compose-test.log"
: >"$log"
start=$(date +%s)
py="$root/.venv/bin/python"
[[ -x $py ]] || { echo "compose-test: needs .venv (make setup)" >&2; exit 1; }
if [[ -z "${DOCKER:-}" ]]; then
  if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
export DOCKER
say() { echo "compose-test: $*"; echo "compose-test: $*" >>"$log"; }
fail() {
  echo "compose-test: FAILED: $*" >&2
  echo "compose-test: the end of $log:" >&2
  tail -n 60 "$log" >&2
  exit 1
}

# 1. A Docker engine.
if ! "$DOCKER" info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || fail "no Docker engine and no dockerd (apt-get install -y docker.io)"
  say "starting dockerd (log: build/dockerd.log)"
  nohup dockerd >"$root/build/dockerd.log" 2>&1 &
  for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
  "$DOCKER" info >/dev/null 2>&1 || fail "dockerd did not answer within 60 s (build/dockerd.log)"
fi
if [[ -z "${COMPOSE:-}" ]]; then
  if "$DOCKER" compose version >/dev/null 2>&1; then COMPOSE="$DOCKER compose"
  elif command -v docker-compose >/dev/null; then COMPOSE=docker-compose
  else fail "neither 'docker compose' nor docker-compose (apt-get install -y docker-compose)"; fi
fi

# 2. Images.
t0=$(date +%s)
say "make images (a first build takes about 15 minutes on 2 cores; log: build/compose-test.log)"
bash scripts/images.sh >>"$log" 2>&1 || fail "make images"
grep '^images: voxline-' "$log" | sed 's/^images:/compose-test: image/'
build_s=$(( $(date +%s) - t0 ))
say "images ready in ${build_s} s"

# 3. The stack, on free host ports, as its own project.
project=voxline-compose-test
envfile="$root/build/compose-test.env"
"$py" - "$envfile" <<'EOF'
import socket, sys
names = ["ORCHESTRATOR", "STT", "LLM", "TTS", "PHOENIX", "OTLP", "JAEGER", "EDGE"]
socks = [socket.socket() for _ in names]
for s in socks:
    s.bind(("127.0.0.1", 0))
with open(sys.argv[1], "w") as f:
    f.write("VOXLINE_COMPOSE_BIND=127.0.0.1\n")
    for name, s in zip(names, socks):
        f.write(f"VOXLINE_COMPOSE_{name}_PORT={s.getsockname()[1]}\n")
for s in socks:
    s.close()
EOF
port() { grep "^VOXLINE_COMPOSE_$1_PORT=" "$envfile" | cut -d= -f2; }
compose=($COMPOSE -p "$project" --env-file "$envfile" -f docker-compose.yml)
# Never a real key into the test stack (it talks to the local model only).
export GROQ_API_KEY="" CEREBRAS_API_KEY=""
teardown() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    "${compose[@]}" ps >>"$log" 2>&1 || true
    "${compose[@]}" logs --no-color --tail 40 >>"$log" 2>&1 || true
  fi
  if [[ -n "${VOXLINE_COMPOSE_TEST_KEEP:-}" ]]; then
    echo "compose-test: left up (VOXLINE_COMPOSE_TEST_KEEP): ${compose[*]} down -v"
  else
    "${compose[@]}" down -v --remove-orphans >>"$log" 2>&1 || true
  fi
  return $rc
}
trap teardown EXIT
trap 'exit 130' INT TERM
"${compose[@]}" down -v --remove-orphans >>"$log" 2>&1 || true  # leftovers of an interrupted run
t0=$(date +%s)
say "up: orchestrator on 127.0.0.1:$(port ORCHESTRATOR), Phoenix on http://127.0.0.1:$(port PHOENIX)"
"${compose[@]}" up -d --no-build >>"$log" 2>&1 || fail "compose up (a health check failed?)"

# 4. The checks, as a user would.
edge_url=""
if grep -q '^  edge:' docker-compose.yml; then edge_url="http://127.0.0.1:$(port EDGE)"; fi
say "compose up returned after $(( $(date +%s) - t0 )) s (stt, llm, tts healthy; orchestrator started)"
set +e
"$py" tests/deploy/compose_check.py --project "$project" --docker "$DOCKER" \
  --orchestrator "127.0.0.1:$(port ORCHESTRATOR)" --phoenix "http://127.0.0.1:$(port PHOENIX)" \
  --edge "$edge_url" 2>&1 | tee -a "$log" | grep --line-buffered -E '^compose-check: '
status=("${PIPESTATUS[@]}")
set -e
[[ ${status[0]} -eq 0 ]] || fail "the end-to-end check"
say "stack up and checked in $(( $(date +%s) - t0 )) s"
say "OK in $(( $(date +%s) - start )) s (images ${build_s} s)"
