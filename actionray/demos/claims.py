"""Claims as experiments: arms measured over seeds, a rule fixed before the run, a verdict, a JSON record.

Every ``actionray demo NAME`` ends in a ``ClaimResult``: the claim in words, the rule that decides it (written in
the demo's module before any result was seen), per arm the metric and the value of each seed, and whether the
claim holds. ``exceeds_by_larger_std`` is the rule all three demos use: the claimed arm's mean beats every
baseline arm's mean by more than the larger of the two arms' sample standard deviations over seeds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Any

__all__ = ["Arm", "ClaimResult", "exceeds_by_larger_std", "RULE_TEXT"]

RULE_TEXT = ("{winner}'s mean {metric} exceeds the mean of each of {others} by more than the larger of the two "
             "arms' sample standard deviations over seeds")


@dataclasses.dataclass
class Arm:
    """One arm of a demo: a metric measured once per seed (fractions; shown x100 when ``percent``)."""

    name: str
    metric: str
    seeds: list[int] = dataclasses.field(default_factory=list)
    values: list[float] = dataclasses.field(default_factory=list)
    percent: bool = True
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # per-seed diagnostics (curves, terms)

    def add(self, seed: int, value: float, **extra: Any) -> None:
        """Record ``value`` of ``seed`` (and any per-seed diagnostics under the same seed)."""
        self.seeds.append(int(seed))
        self.values.append(float(value))
        for key, item in extra.items():
            self.extra.setdefault(key, []).append(item)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof 1); 0 for a single seed."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def text(self) -> str:
        scale = 100.0 if self.percent else 1.0
        return f"{scale * self.mean:.1f} ± {scale * self.std:.1f}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "metric": self.metric, "percent": self.percent, "seeds": self.seeds,
                "values": self.values, "mean": self.mean, "std": self.std, **({"extra": self.extra} if self.extra else {})}


def exceeds_by_larger_std(winner: Arm, others: list[Arm]) -> tuple[bool, list[dict[str, float]]]:
    """The rule: ``winner.mean - other.mean > max(winner.std, other.std)`` for every other arm.

    Returns the verdict and, per other arm, the margin measured and the margin needed."""
    rows = []
    for other in others:
        margin, needed = winner.mean - other.mean, max(winner.std, other.std)
        rows.append({"arm": other.name, "margin": margin, "needed": needed, "holds": bool(margin > needed)})
    return bool(rows) and all(r["holds"] for r in rows), rows


@dataclasses.dataclass
class ClaimResult:
    """What a demo found: written to ``--json`` and printed as a table plus one verdict line."""

    demo: str
    claim: str
    rule: str
    arms: list[Arm]
    winner: str
    holds: bool
    comparisons: list[dict[str, float]]
    wall_s: float = 0.0
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    complete: bool = True  # False in the record a demo writes after each seed (a stopped run keeps its seeds)

    @classmethod
    def decide(cls, demo: str, claim: str, arms: list[Arm], winner: str, **kwargs: Any) -> "ClaimResult":
        """Apply ``exceeds_by_larger_std`` with ``winner`` against every other arm."""
        by_name = {a.name: a for a in arms}
        others = [a for a in arms if a.name != winner]
        holds, comparisons = exceeds_by_larger_std(by_name[winner], others)
        rule = RULE_TEXT.format(winner=winner, metric=by_name[winner].metric,
                                others=", ".join(a.name for a in others))
        return cls(demo=demo, claim=claim, rule=rule, arms=arms, winner=winner, holds=holds,
                   comparisons=comparisons, **kwargs)

    def table(self) -> str:
        """Markdown: one row per arm, mean ± std and the value of each seed."""
        lines = ["| arm | metric | mean ± std | per seed |", "|---|---|---|---|"]
        for arm in self.arms:
            scale = 100.0 if arm.percent else 1.0
            seeds = ", ".join(f"{s}: {scale * v:.1f}" for s, v in zip(arm.seeds, arm.values))
            unit = " (%)" if arm.percent else ""
            lines.append(f"| {arm.name} | {arm.metric}{unit} | {arm.text()} | {seeds} |")
        return "\n".join(lines)

    def verdict(self) -> str:
        """One line: the claim holds or not, with the margins."""
        parts = []
        for c in self.comparisons:
            scale = 100.0 if next(a for a in self.arms if a.name == self.winner).percent else 1.0
            parts.append(f"vs {c['arm']}: {scale * c['margin']:+.1f} (needs > {scale * c['needed']:.1f})")
        return (f"[verdict] {self.demo}: the claim {'HOLDS' if self.holds else 'does NOT hold'} "
                f"({'; '.join(parts)}) in {self.wall_s / 60:.1f} min")

    def to_json(self) -> dict[str, Any]:
        return {"demo": self.demo, "claim": self.claim, "rule": self.rule, "winner": self.winner,
                "holds": self.holds, "complete": self.complete, "comparisons": self.comparisons, "wall_s": self.wall_s,
                "arms": [a.to_json() for a in self.arms], "settings": self.settings, "notes": self.notes}

    def write(self, path: str | Path) -> Path:
        """Write the JSON record (parents created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path
