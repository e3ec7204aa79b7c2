"""The report: DIR/report.md (Markdown, plots linked) and DIR/results.json (every figure)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.suite.core import Mode, SectionResult, fmt_ms
from bench.suite.sections import SECTIONS


def json_safe(value: Any) -> Any:
    """NaN/inf → None (strict JSON), tuples → lists, dataclass-free plain data."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, str | int | bool) or value is None:
        return value
    return str(value)


def key_findings(results: Mapping[str, SectionResult]) -> list[str]:
    """The four answers the report must give, from whichever sections ran."""
    out: list[str] = []
    base = results.get("baseline")
    if base is not None and base.status == "ok":
        f = base.figures
        first = fmt_ms(f["streamed"]["time_to_first_audio_ms"]["avg"])
        out.append(f"- First audio comes **{f['first_audio_sooner_x']:.2f}× sooner** than the sequential "
                   f"total (streamed time to first audio {first} ms vs sequential total "
                   f"{fmt_ms(f['sequential']['total_ms']['avg'])} ms, averages).")
    for key in ("llm", "overhead"):
        section = results.get(key)
        if section is not None:
            headline = [line for line in section.body if line.startswith("**")]
            out += [f"- {line}" for line in headline[:1]] or [f"- {section.title}: {section.status}"]
    scaling = results.get("scaling")
    if scaling is not None and scaling.status == "ok":
        for kind, data in scaling.figures.items():
            out.append(f"- Scaling, {kind} engines: {data.get('explanation', '')}")
    return out


def render_markdown(mode: Mode, machine: Mapping[str, Any], command: str, started: str, elapsed_s: float,
                    results: Mapping[str, SectionResult]) -> str:
    lines = [f"# voxline benchmark report ({mode.name})", ""]
    if mode.name == "smoke":
        lines += ["> **SMOKE RUN**: tiny N and fake engines in place of the real models. It shows that "
                  "every section runs; its figures say nothing about voxline's speed.", ""]
    lines += [f"- started {started}, took {elapsed_s:.0f} s: `{command}`",
              f"- machine: {machine.get('cores')} cores, {machine.get('cpu_model')}, "
              f"{machine.get('memory_gib', '?')} GiB, Python {machine.get('python')}, torch "
              f"{machine.get('torch')} ({machine.get('torch_threads', '?')} threads), "
              f"{machine.get('platform')}",
              "- absolute times on a shared machine are noisy; ratios measured side by side in one run are "
              "the stable figures", ""]
    findings = key_findings(results)
    if findings:
        lines += ["## Key figures", "", *findings, ""]
    for section in SECTIONS:
        result = results.get(section.key)
        lines += [f"## {section.title}", ""]
        if result is None:
            lines += ["not run (not selected with --sections)", ""]
            continue
        if result.status != "ok":
            lines += [f"**{result.status}**", ""]
        if result.setup:
            lines += ["Setup:", "", *[f"- {s}" for s in result.setup], ""]
        lines += [*result.body, ""]
        lines += [f"![{p}]({p})" for p in result.plots]
        lines += ["", f"_section time: {result.seconds:.1f} s_", ""]
    return "\n".join(lines)


def write_report(out_dir: Path, mode: Mode, machine: Mapping[str, Any], command: str, started: str,
                 elapsed_s: float, results: Mapping[str, SectionResult]) -> tuple[Path, Path]:
    """Write report.md and results.json into ``out_dir``; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "report.md"
    md.write_text(render_markdown(mode, machine, command, started, elapsed_s, results), encoding="utf-8")
    data = {
        "mode": mode.name, "smoke": mode.name == "smoke", "command": command, "started": started,
        "elapsed_s": elapsed_s, "machine": machine,
        "sections": {k: {"title": r.title, "status": r.status, "setup": r.setup, "figures": r.figures,
                         "plots": r.plots, "seconds": r.seconds} for k, r in results.items()},
    }
    js = out_dir / "results.json"
    js.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False), encoding="utf-8")
    return md, js

