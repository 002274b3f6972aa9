"""``actionray demo [NAME]`` end to end on tiny settings: generated data, real fits, the table, the verdict and the
JSON record of the claim (the claims themselves are decided by running the demos at full size, not here)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from actionray.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["train.epochs=1", "data.synth.videos_per_class=3", "data.synth.frames=16", "data.synth.width=64",
        "data.synth.height=48", "data.num_segments=2", "data.input_size=32", "data.scale_size=36",
        "data.batch_size=4", "data.decode_tasks=1", "train.log_every=50"]


@pytest.mark.slow
def test_demo_generates_data_trains_and_prints_the_comparison_table(ray_local, workdir):
    sets = [arg for o in TINY for arg in ("--set", o)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["demo", "--configs", str(REPO / "configs"), "--methods", "tsn", "--json", "r.json", *sets])
    text = out.getvalue()
    assert code == 0, text
    assert (workdir / "demo_data" / "train.txt").is_file() and (workdir / "runs" / "demo" / "preview.png").is_file()
    header = "| method | top-1 temporal-order classes (%) | top-1 appearance classes (%) | top-1 all (%) |"
    assert header in text
    row = re.search(r"^\| tsn \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", text, re.M)
    assert row, text
    temporal, appearance, overall = (float(v) for v in row.groups())
    assert all(0.0 <= v <= 100.0 for v in (temporal, appearance, overall))
    evaluated = re.search(r"\[eval\] tsn: top-1 ([\d.]+)% on (\d+) val videos", text)
    assert evaluated and float(evaluated.group(1)) == overall  # the table's "all" is the evaluation's top-1
    # 8 classes x 1 validation video each (3 per class: the split keeps one for validation).
    groups = 6 * temporal / 100 + 2 * appearance / 100
    assert groups == pytest.approx(int(evaluated.group(2)) * overall / 100, abs=0.06)
    assert (workdir / "runs" / "demo" / "comparison.md").read_text().strip() in text
    record = assert_claim_record(workdir / "r.json", "order", ["tsn"])
    assert record["arms"][0]["values"] == [pytest.approx(temporal / 100, abs=1e-3)]
    assert "[verdict] order: the claim" in text


def assert_claim_record(path: Path, demo: str, arms: list[str]) -> dict:
    """A well-formed claim record: claim and rule in words, one value per seed per arm, mean, std, holds."""
    record = json.loads(path.read_text())
    assert record["demo"] == demo and record["claim"] and record["rule"] and isinstance(record["holds"], bool)
    assert [arm["name"] for arm in record["arms"]] == arms
    for arm in record["arms"]:
        assert arm["seeds"] == [0] and len(arm["values"]) == 1 and 0.0 <= arm["values"][0] <= 1.0
        assert arm["mean"] == pytest.approx(arm["values"][0]) and arm["std"] == 0.0
    assert record["wall_s"] > 0
    return record


@pytest.mark.slow
def test_dclr_demo_pretrains_both_arms_probes_three_encoders_and_writes_its_claim(ray_local, workdir):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["demo", "dclr", "--tiny", "--seeds", "1", "--json", "r.json", "--configs", str(REPO / "configs")])
    text = out.getvalue()
    assert code == 0, text
    assert (workdir / "demo_dclr_motion_tiny" / "test.txt").is_file()
    record = assert_claim_record(workdir / "r.json", "dclr", ["DCLR", "MoCo (vv only)", "random encoder"])
    dclr, moco = record["arms"][0]["extra"], record["arms"][1]["extra"]
    # the ablation really removed the static and dynamic terms: MoCo's vs/sv and vd/dv are logged, not trained
    assert len(dclr["train_acc_vv"][0]) == len(moco["train_acc_vv"][0]) == 2  # one entry per epoch
    assert "[verdict] dclr: the claim" in text
