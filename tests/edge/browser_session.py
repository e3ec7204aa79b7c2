"""One spoken session in headless Chromium, for ``test_browser.py`` (which runs this under
``unshare -n``: a network namespace with loopback only, so neither side offers another address).

    python tests/edge/browser_session.py OUT_DIR

Starts the offline stack (Whisper base, SmolLM2, espeak-ng) and the edge on 127.0.0.1, writes a
fake-microphone WAV (a question, a long pause in which the reply plays, a second question spoken
over that reply, then silence), opens the page in Chromium (Debian's, driven by Playwright with
``executable_path``) with that WAV as the microphone, calls ``window.voxline.start()`` and waits
until the second turn's reply was heard. Writes OUT_DIR/result.json: the page's
``window.voxline.events``, the clip's layout and the services' log tails.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from voxline.cli.service_process import ServiceProcess
from voxline.cli.stack import STAGES, Stack, StackConfig
from voxline.common.audio import float_to_pcm16, resample, wav_header
from voxline.edge.loopback import bring_loopback_up
from voxline.testing.speech import PHRASE, PHRASE_2, english_speech

RATE = 48_000
#: The pause after the first question: long enough for its reply to start (end of speech → first
#: audio is 1-15 s on a busy 2-core machine), short enough that the reply (120 tokens, ~30 s of
#: speech) still plays when the second question comes.
GAP_S = 16.0
SYSTEM_PROMPT = "You are a storyteller. Answer every message with a long, detailed story."
FLAGS = ["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
         "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run"]


def chromium() -> str | None:
    """Debian's chromium binary, or None."""
    for path in ("/usr/lib/chromium/chromium", "/usr/bin/chromium"):
        if os.path.exists(path):
            return path
    return shutil.which("chromium")


def microphone_wav(path: Path) -> dict[str, float]:
    """Write the fake microphone's clip; the seconds where each question starts and ends."""
    def speech(text: str) -> np.ndarray:
        samples, rate = english_speech(text)
        return resample(np.asarray(samples, dtype=np.float32), rate, RATE)

    parts = [np.zeros(int(0.3 * RATE), np.float32)]
    layout = {"q1_start_s": 0.3}
    parts.append(speech(PHRASE))
    layout["q1_end_s"] = sum(len(p) for p in parts) / RATE
    parts.append(np.zeros(int(GAP_S * RATE), np.float32))
    layout["q2_start_s"] = sum(len(p) for p in parts) / RATE
    parts.append(speech(PHRASE_2))
    layout["q2_end_s"] = sum(len(p) for p in parts) / RATE
    parts.append(np.zeros(int(25 * RATE), np.float32))
    pcm = float_to_pcm16(np.concatenate(parts))
    path.write_bytes(wav_header(RATE, 1, len(pcm)) + pcm)
    return layout


def wait_http(url: str, within_s: float, proc: ServiceProcess) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise proc.failure()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)  # polling a server that signals nothing else
    raise TimeoutError(f"{url} not healthy within {within_s:g} s:\n{proc.logs}")


def drive_page(url: str, wav: Path, within_s: float) -> list[dict[str, object]]:
    """The page's events once the second turn's reply was heard (or the time ran out)."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    assert executable is not None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True,
                                    args=[*FLAGS, f"--use-file-for-fake-audio-capture={wav}%noloop"])
        try:
            page = browser.new_page()
            page.goto(url)
            page.evaluate("window.voxline.start()")
            deadline = time.monotonic() + within_s
            events: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                events = page.evaluate("window.voxline.events")
                later = [e["type"] for e in events if int(str(e.get("turn") or 0)) >= 2]
                if "audio_heard" in later and "turn_metrics" in later:
                    page.wait_for_timeout(1500)  # let the reply play on a little (its audio_off)
                    return list(page.evaluate("window.voxline.events"))
                page.wait_for_timeout(250)
            return events
        finally:
            browser.close()


def main(out_dir: Path) -> int:
    bring_loopback_up()
    out_dir.mkdir(parents=True, exist_ok=True)
    logs = out_dir / "logs"
    env = {"GROQ_API_KEY": "", "CEREBRAS_API_KEY": "", "OTEL_TRACES_EXPORTER": "none"}
    config = StackConfig(log_dir=logs, ports=dict.fromkeys(STAGES, 0), host="127.0.0.1", env=env,
                         stage_args={"llm": ["--providers", "local"]}, restart=None)
    result: dict[str, object] = {}
    stack = Stack(config)
    edge: ServiceProcess | None = None
    try:
        stack.start()
        edge = ServiceProcess("edge", [
            sys.executable, "-m", "voxline.edge", "--port", "0",
            "--orchestrator", stack.address("orchestrator"),
            "--ice-host-addresses", "127.0.0.1", "--language", "en", "--system-prompt", SYSTEM_PROMPT,
            "--max-reply-tokens", "120"], env, log_path=logs / "edge.log")
        url = f"http://127.0.0.1:{edge.wait_port(60)}"
        wait_http(f"{url}/health", 60, edge)
        wav = out_dir / "microphone.wav"
        result["layout"] = microphone_wav(wav)
        started = time.monotonic()
        result["events"] = drive_page(f"{url}/?raw=1", wav, 150)
        result["session_s"] = time.monotonic() - started
    finally:
        if edge is not None:
            edge.stop()
        stack.stop()
        result["logs"] = {p.name: p.read_text(errors="replace")[-3000:] for p in sorted(logs.glob("*.log"))}
        (out_dir / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
