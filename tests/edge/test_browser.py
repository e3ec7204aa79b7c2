"""A real browser talks to voxline: headless Chromium (Debian's package, driven by Playwright with
``executable_path``) with a fake microphone playing spoken questions, the page served by the edge,
the offline stack behind it. ``browser_session.py`` runs the session inside ``unshare -n`` (its own
network namespace, loopback only: Chromium would otherwise offer the machine's own address as an
ICE candidate); this test checks what the page received and heard.

One session, everything a person would notice:
- turn 1's final transcript holds the question's words, its reply text arrived, its audio was heard;
- the second question, spoken while that reply still plays, stops the page's audio (the edge
  flushes the queued reply) and is a turn of its own: transcript, reply text, reply heard.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from browser_session import chromium
from speech import PHRASE, PHRASE_2, word_errors

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent


def _why_not() -> str | None:
    if chromium() is None:
        return "Debian's chromium is not installed (apt-get install chromium; .ci/run does it)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (scripts/setup.sh installs it)"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a network namespace (unshare -n: {probe.stderr.strip()}); CI runs as root"
    return None


def _of(events: list[dict[str, Any]], kind: str, turn: int | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind and (turn is None or e.get("turn") == turn)]


def _heard_ms_between(events: list[dict[str, Any]], start: float, end: float) -> float:
    """Milliseconds of reply audio the page heard between two page times (audio_on/off entries)."""
    total, on_at = 0.0, None
    for e in events:
        if e["type"] == "audio_on":
            on_at = e["at"]
        elif e["type"] == "audio_off" and on_at is not None:
            total += max(0.0, min(e["at"], end) - max(on_at, start))
            on_at = None
    if on_at is not None:
        total += max(0.0, end - max(on_at, start))
    return total


@pytest.mark.timeout(480)  # the stack starts inside the session (its models load there)
def test_a_spoken_session_in_chromium(tmp_path: Path) -> None:
    reason = _why_not()
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path / "session"
    run = subprocess.run(["unshare", "-n", sys.executable, str(HERE / "browser_session.py"), str(out)],
                         capture_output=True, text=True, timeout=450)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    events: list[dict[str, Any]] = result["events"]
    logs = "\n".join(f"--- {name}\n{text}" for name, text in result["logs"].items())
    seen = [(e["type"], e.get("turn")) for e in events if e["type"] != "reply_text"]
    context = f"page events: {seen}\n{logs[-6000:]}"

    # turn 1: the question's words, a reply in text and in sound
    finals = _of(events, "transcript", 1)
    # the question's words (one recognition slip allowed: Whisper base's, not the edge's)
    assert finals and word_errors(finals[0]["text"], PHRASE) <= 1, context
    assert "".join(e["delta"] for e in _of(events, "reply_text", 1)).strip(), context
    heard_1 = _of(events, "audio_heard", 1)
    assert heard_1 and heard_1[0]["level"] > 0.01, context

    # the second question came while that reply played: the page's audio stopped
    flushes = _of(events, "playback_flushed", 1)
    listening = next(e["received_at"] for e in events if e.get("state") == "listening")
    q2_at = listening + result["layout"]["q2_start_s"] * 1000  # the microphone starts with the peer
    assert heard_1[0]["at"] < q2_at, (f"turn 1's reply was heard {heard_1[0]['at'] - q2_at:.0f} ms after the "
                                      f"second question began: the stack is too slow here for the barge-in")
    assert flushes, f"no flush of turn 1's reply; {context}"
    flush = flushes[0]
    assert flush["received_at"] > heard_1[0]["at"] and flush["flushed_ms"] > 1000, context
    heard_2 = _of(events, "audio_heard", 2)
    assert heard_2, f"turn 2's reply was not heard; {context}"
    offs = [e for e in _of(events, "audio_off") if flush["received_at"] <= e["at"] <= heard_2[0]["at"]]
    assert offs, f"the reply kept playing after the flush; {context}"
    after = _heard_ms_between(events, flush["received_at"], heard_2[0]["at"])
    assert after < flush["flushed_ms"] / 4, f"{after:.0f} ms heard of {flush['flushed_ms']} ms flushed"

    # turn 2: a turn of its own in the same session
    finals_2 = _of(events, "transcript", 2)
    assert finals_2 and word_errors(finals_2[0]["text"], PHRASE_2) <= 1, context
    assert "".join(e["delta"] for e in _of(events, "reply_text", 2)).strip(), context
    assert heard_2[0]["level"] > 0.01
    assert len({e["turn"] for e in _of(events, "turn_metrics")}) >= 2, context
