"""The claims rule and record (actionray/demos/claims.py): decided before any result, applied as written."""

from __future__ import annotations

import json

import pytest

from actionray.demos.claims import Arm, ClaimResult, exceeds_by_larger_std


def arm(name: str, values: list[float]) -> Arm:
    a = Arm(name, "top-1")
    for seed, value in enumerate(values):
        a.add(seed, value)
    return a


def test_the_claim_holds_only_when_the_margin_beats_the_larger_std_against_every_other_arm():
    winner = arm("new", [0.60, 0.62, 0.64])  # mean 0.62, std 0.02
    assert exceeds_by_larger_std(winner, [arm("old", [0.50, 0.50, 0.50])])[0]
    # margin 0.05 < the other arm's std 0.1
    holds, rows = exceeds_by_larger_std(winner, [arm("noisy", [0.47, 0.57, 0.67])])
    assert not holds and rows[0]["needed"] == pytest.approx(0.1) and rows[0]["margin"] == pytest.approx(0.05)
    # beating one arm is not enough
    assert not exceeds_by_larger_std(winner, [arm("old", [0.5] * 3), arm("close", [0.61, 0.62, 0.63])])[0]
    assert not exceeds_by_larger_std(winner, [])[0]


def test_a_claim_record_names_the_claim_the_rule_every_seed_and_the_verdict(tmp_path):
    result = ClaimResult.decide("toy", "new beats old", [arm("old", [0.4, 0.5]), arm("new", [0.8, 0.9])], "new")
    record = json.loads(result.write(tmp_path / "r.json").read_text())
    assert record["holds"] is True and record["winner"] == "new" and "old" in record["rule"]
    assert [a["values"] for a in record["arms"]] == [[0.4, 0.5], [0.8, 0.9]]
    assert record["arms"][1]["std"] == pytest.approx(0.0707, abs=1e-4)
    assert "| new | top-1 (%) | 85.0 ± 7.1 | 0: 80.0, 1: 90.0 |" in result.table()
    assert "HOLDS" in result.verdict()
