"""The reliability matrix: one row per case class — cases tried, passed, turns lost, memory growth."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Row:
    """One class of cases (e.g. "fuzz stt.Transcribe descriptor", "bomb tts piper 中×400")."""

    area: str
    case: str
    tried: int = 0
    passed: int = 0
    turns_lost: int = 0
    #: RSS growth of the service under test, MB (None: not measured for this row).
    memory_growth_mb: float | None = None
    #: Status codes seen, for the report.
    codes: Counter[str] = field(default_factory=Counter)
    #: Why cases failed (first few, short).
    failures: list[str] = field(default_factory=list)
    notes: str = ""

    def record(self, ok: bool, code: str = "", why: str = "") -> None:
        self.tried += 1
        self.passed += int(ok)
        if code:
            self.codes[code] += 1
        if not ok and len(self.failures) < 5:
            self.failures.append(why[:200])

    @property
    def ok(self) -> bool:
        return self.tried > 0 and self.passed == self.tried and self.turns_lost == 0


@dataclass
class Matrix:
    """All rows of one run."""

    rows: list[Row] = field(default_factory=list)

    def row(self, area: str, case: str) -> Row:
        for row in self.rows:
            if (row.area, row.case) == (area, case):
                return row
        row = Row(area, case)
        self.rows.append(row)
        return row

    def totals(self, area: str | None = None) -> tuple[int, int, int]:
        rows = [r for r in self.rows if area is None or r.area == area]
        return (sum(r.tried for r in rows), sum(r.passed for r in rows),
                sum(r.turns_lost for r in rows))

    def bad_codes(self, area: str = "fuzz") -> int:
        """UNKNOWN or INTERNAL statuses seen in ``area``."""
        return sum(r.codes.get("UNKNOWN", 0) + r.codes.get("INTERNAL", 0)
                   for r in self.rows if r.area == area)

    def markdown(self) -> list[str]:
        lines = ["| area | case | tried | passed | turns lost | memory growth MB | codes / notes |",
                 "|---|---|---:|---:|---:|---:|---|"]
        for r in self.rows:
            growth = "" if r.memory_growth_mb is None else f"{r.memory_growth_mb:+.1f}"
            codes = ", ".join(f"{c} {n}" for c, n in r.codes.most_common(6))
            extra = "; ".join(x for x in (codes, r.notes, *r.failures[:2]) if x)
            lines.append(f"| {r.area} | {r.case} | {r.tried} | {r.passed} | {r.turns_lost} | "
                         f"{growth} | {extra.replace('|', '/')} |")
        return lines

    def as_dict(self) -> list[dict[str, object]]:
        return [{"area": r.area, "case": r.case, "tried": r.tried, "passed": r.passed,
                 "turns_lost": r.turns_lost, "memory_growth_mb": r.memory_growth_mb,
                 "codes": dict(r.codes), "failures": r.failures, "notes": r.notes}
                for r in self.rows]
