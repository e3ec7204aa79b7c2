"""``python -m bench [--quick|--smoke] [--out DIR] [--sections a,b,...]``: the voxline benchmark suite.

Runs the sections (see bench/suite/sections.py), prints each one's setup and figures, and writes
DIR/report.md, DIR/results.json and PNG plots. A section that fails is reported as failed and the
others still run; the exit status is 1 when any section failed.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
import traceback
from pathlib import Path

from tqdm import tqdm

from bench.suite.core import MODES, Context, SectionResult, timed
from bench.suite.report import write_report
from bench.suite.sections import BY_KEY, SECTIONS, execution_order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="smaller N and fewer levels: under 10 minutes on 2 cores without a GPU")
    size.add_argument("--smoke", action="store_true",
                      help="seconds-long run of every section on fake engines (CI); figures are meaningless")
    parser.add_argument("--out", type=Path, default=Path("bench-report"),
                        help="folder for report.md, results.json and the plots [default: bench-report]")
    parser.add_argument("--sections", default=",".join(s.key for s in SECTIONS),
                        help="comma-separated subset of: "
                             f"{', '.join(s.key for s in SECTIONS)} [default: all]")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    keys = [k.strip() for k in ns.sections.split(",") if k.strip()]
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown or not keys:
        parser.error(f"unknown section(s) {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(BY_KEY)}")
    mode = MODES["smoke" if ns.smoke else "quick" if ns.quick else "full"]
    out_dir: Path = ns.out
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    order = execution_order(keys)
    t0 = time.monotonic()
    results: dict[str, SectionResult] = {}
    failed = False
    bar = tqdm(total=len(order), desc="voxline bench", unit="section", file=sys.stderr,
               disable=ns.no_progress)
    ctx = Context(mode, out_dir, bar)
    ctx.echo(f"voxline bench ({mode.name}) on {ctx.machine_line}; report in {out_dir}/")
    try:
        for i, section in enumerate(order):
            bar.set_description(section.key)
            ctx.echo(f"\n== {section.title} ==")
            try:
                result = timed(lambda s=section: s.run(ctx))  # type: ignore[misc]
            except Exception as exc:  # one broken section must not lose the others' figures
                failed = True
                result = SectionResult(section.key, section.title,
                                       status=f"failed: {type(exc).__name__}: {exc}",
                                       body=["```", traceback.format_exc()[-3000:], "```"])
                ctx.echo(f"{section.title}: {result.status}")
            results[section.key] = result
            for kind in {k for s in order[:i + 1] for k in s.stacks}:
                if not any(kind in later.stacks for later in order[i + 1:]):
                    ctx.release(kind)
            bar.update(1)
    finally:
        ctx.close()
        bar.close()
    md, js = write_report(out_dir, mode, ctx.machine, command, started, time.monotonic() - t0, results)
    print(f"\nreport: {md}\nfigures: {js}\ntook {time.monotonic() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
