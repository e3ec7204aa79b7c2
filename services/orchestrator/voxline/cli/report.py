"""``voxline report``: the latency table of every turn in a span file, and a waterfall of one turn."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from voxline.cli.spans import NotASpanFile, read_span_file, render_tree, tree, turns_table
from voxline.cli.waterfall import draw_waterfall, first_clause_wait_ms, layout


def add_report_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("span_file", type=Path, metavar="SPANFILE",
                        help="JSON-lines span file (written by services run with VOXLINE_SPAN_FILE)")
    parser.add_argument("--png", type=Path, default=None,
                        help="draw the chosen turn's spans from every service as a waterfall PNG")
    parser.add_argument("--turn", type=int, default=None,
                        help="which turn (the table's run number) to show as a waterfall; default: the last")
    parser.add_argument("--target-ms", type=float, default=500.0,
                        help="pass mark for time to first audio (default: %(default)s)")


def run_report(ns: argparse.Namespace) -> int:
    out, err = sys.stdout, sys.stderr
    try:
        spans = read_span_file(ns.span_file)
    except FileNotFoundError:
        err.write(f"voxline report: no such file: {ns.span_file}\n")
        return 2
    except IsADirectoryError:
        err.write(f"voxline report: {ns.span_file} is a directory; give the span file\n")
        return 2
    except OSError as exc:
        err.write(f"voxline report: cannot read {ns.span_file}: {exc.strerror}\n")
        return 2
    except NotASpanFile as exc:
        err.write(f"voxline report: {exc}; give the JSON-lines file that services run with "
                  "VOXLINE_SPAN_FILE write (`voxline talk` is the command that takes audio)\n")
        return 2
    if spans.bad_lines:
        err.write(f"voxline report: skipped {spans.bad_lines} unreadable line(s)\n")
    turns = spans.turns()
    if not turns:
        err.write(f"voxline report: {ns.span_file} holds {len(spans.spans)} span(s) but no voxline.turn span "
                  "(was the orchestrator run with VOXLINE_SPAN_FILE?)\n")
        return 1
    table = turns_table(turns, ns.target_ms)
    out.write(table.render(f"{len(turns)} turn(s) in {ns.span_file}; a run passes when its time to "
                           f"first audio is under {ns.target_ms:g} ms") + "\n")
    chosen = len(turns) if ns.turn is None else ns.turn
    if not 1 <= chosen <= len(turns):
        err.write(f"voxline report: --turn must be 1..{len(turns)}, got {chosen}\n")
        return 2
    turn = turns[chosen - 1]
    nodes = tree(spans.trace(turn.trace_id))
    services = sorted({n.span.service for n in nodes})
    out.write(f"\nturn {chosen}: trace {turn.trace_id}, {len(nodes)} spans from {', '.join(services)}\n")
    out.write(render_tree(nodes) + "\n")
    milestones = layout(nodes, turn).marks
    if milestones:
        wait = first_clause_wait_ms(milestones)
        out.write("milestones: " + ", ".join(f"{m.name} at {m.at_ms:.0f} ms" for m in milestones)
                  + (f"; first-clause wait {wait:.0f} ms" if wait is not None else "") + "\n")
    if ns.png is not None:
        status = turn.attributes.get("voxline.turn.status", "")
        try:
            draw_waterfall(nodes, turn, ns.png,
                           title=f"voxline turn {chosen} ({status}) — trace {turn.trace_id}")
        except ModuleNotFoundError as exc:
            err.write(f"voxline report: --png needs matplotlib ({exc}); "
                      "pip install 'voxline-orchestrator[cli]'\n")
            return 1
        out.write(f"waterfall: {ns.png}\n")
    return 0
