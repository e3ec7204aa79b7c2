"""Section: the fault, fuzz and load suite's matrix (``python -m bench --sections reliability``)."""

from __future__ import annotations

import asyncio
import dataclasses
import json

from bench.reliability.run import FULL, TINY, Sizes, run_suite
from bench.suite.core import Context, SectionResult

TITLE = "8. Reliability: fuzz, resources, faults, load (issue 10)"
#: The quick mode: the full suite's shape at a fraction of its size.
QUICK = dataclasses.replace(FULL, fuzz_per_rpc=60, sessions=8, turns=20, abandoned=5,
                            provider_repeats=2, bomb_repeats=1, flac_minutes=30.0, vad_mib=32)


def sizes_for(mode: str) -> Sizes:
    return {"smoke": TINY, "quick": QUICK}.get(mode, FULL)


def run(ctx: Context) -> SectionResult:
    result = SectionResult("reliability", TITLE)
    sizes = sizes_for(ctx.mode.name)
    log_dir = ctx.out_dir / "reliability-logs"
    matrix = asyncio.run(run_suite(sizes, log_dir, ctx.echo))
    fuzz_tried, fuzz_passed, _ = matrix.totals("fuzz")
    tried, passed, lost = matrix.totals()
    kills = [r for r in matrix.rows if r.case.startswith("kill ")]
    growth = [r.memory_growth_mb for r in matrix.rows
              if r.area == "resources" and r.memory_growth_mb is not None]
    headline = (f"**{passed}/{tried} cases passed; fuzzing {fuzz_passed}/{fuzz_tried} with "
                f"{matrix.bad_codes()} UNKNOWN/INTERNAL; {lost} turns lost in all "
                f"({sum(r.turns_lost for r in kills)} across stage kills); largest memory growth "
                f"after a bomb class {max(growth, default=0.0):+.1f} MB.**")
    result.setup = [f"machine: {ctx.machine_line}",
                    f"sizes: {dataclasses.asdict(sizes)}",
                    "services on 127.0.0.1: real STT and TTS processes, the real LLM gateway over "
                    "scripted providers (in process), the real orchestrator over the fake stages"]
    result.body = [headline, "", *matrix.markdown()]
    result.figures = {"sizes": dataclasses.asdict(sizes), "rows": matrix.as_dict(),
                      "fuzz_bad_codes": matrix.bad_codes(), "turns_lost": lost}
    (ctx.out_dir / "reliability-matrix.md").write_text("\n".join(result.body) + "\n")
    (ctx.out_dir / "reliability-matrix.json").write_text(json.dumps(result.figures, indent=1))
    ctx.echo(headline)
    return result
