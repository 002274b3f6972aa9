"""``actionray demo [NAME]`` end to end on tiny settings: generated data, real fits, the table, the verdict and the
JSON record of the claim (the claims themselves are decided by running the demos at full size, not here)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
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


# -- actionray demo ftcl -----------------------------------------------------------------------------------------
FTCL_ARMS = ["ACM-Net (stage 1)", "ACM-Net (cell: fsd0-lcs0)", "+FSD (fsd1-lcs0)", "+LCS (fsd0-lcs1)",
             "FTCL (fsd1-lcs1)"]
TIOUS = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]


def test_ftcl_demo_phase_feature_set_has_ordered_phases_reversed_pairs_and_unannotated_decoys(tmp_path):
    from actionray.synthetic.features import write_synthetic_feature_set

    data = write_synthetic_feature_set(tmp_path, num_classes=4, train_videos=8, test_videos=4, feature_dim=16,
                                       min_snippets=60, max_snippets=80, instance_snippets=(6, 12), phases=5,
                                       phases_per_class=(2, 3), class_signal=0.0, noise=0.0, decoys=1.0, seed=3)
    gt = json.loads((data.root / "gt.json").read_text())
    sequences = gt["synthetic"]["phase_sequences"]
    assert sequences[1] == sequences[0][::-1] and sequences[3] == sequences[2][::-1]  # same phases, reverse order
    # noise 0 and no class component: every action snippet is exactly one phase prototype (after ReLU)
    video = data.train_videos[0]
    feats = np.load(data.root / "train" / f"{video}.npy")
    snippets = {tuple(np.round(row, 5)) for row in feats}
    annotated = np.zeros(len(feats), dtype=bool)
    for a in gt["database"][video]["annotations"]:
        start, end = (int(round(t / 0.64)) for t in a["segment"])
        annotated[start:end] = True
        runs = [tuple(np.round(feats[start], 5))]
        for row in feats[start + 1:end]:
            if tuple(np.round(row, 5)) != runs[-1]:
                runs.append(tuple(np.round(row, 5)))
        assert len(runs) == len(sequences[data.classes.index(a["label"])])  # one run per phase, in order
    background = tuple(np.round(feats[0], 5))
    decoy_rows = [i for i in range(len(feats)) if not annotated[i] and tuple(np.round(feats[i], 5)) != background]
    assert decoy_rows, "decoys=1.0 put no hard negative next to any action"
    assert len(snippets) <= 1 + 5  # background + the 5 phase prototypes: decoys reuse the phases


@pytest.mark.slow
def test_ftcl_demo_runs_stage1_and_the_four_cells_and_writes_its_claim(ray_local, workdir):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["demo", "ftcl", "--tiny", "--seeds", "1", "--json", "r.json", "--configs", str(REPO / "configs")])
    text = out.getvalue()
    assert code == 0, text
    gt = json.loads((workdir / "demo_features_ftcl_tiny" / "gt.json").read_text())
    assert gt["synthetic"]["phases"] > 0 and gt["synthetic"]["decoys"] > 0
    record = assert_claim_record(workdir / "r.json", "ftcl", FTCL_ARMS)
    assert record["winner"] == "FTCL (fsd1-lcs1)"
    # the rule compares FTCL with the all-off cell only; the other arms are reported
    assert [c["arm"] for c in record["comparisons"]] == ["ACM-Net (cell: fsd0-lcs0)"]
    assert "ACM-Net (cell: fsd0-lcs0)" in record["rule"] and "+FSD" not in record["rule"]
    for arm in record["arms"]:
        per_tiou = arm["extra"]["test_map"][0]
        assert sorted(per_tiou) == TIOUS
        assert arm["values"][0] == pytest.approx(np.mean([per_tiou[t] for t in TIOUS]), abs=1e-9)  # avg 0.1-0.7
    terms = {arm["name"]: arm["extra"]["terms"][0] for arm in record["arms"][1:]}
    # the switches reached the loss: a term switched off is exactly 0, FSD switched on is not (LCS may be 0 when
    # no snippet cosine passes its 0.92 threshold, so only "off = 0" is asserted for it)
    for name, (fsd, lcs) in {"ACM-Net (cell: fsd0-lcs0)": (False, False), "+FSD (fsd1-lcs0)": (True, False),
                             "+LCS (fsd0-lcs1)": (False, True), "FTCL (fsd1-lcs1)": (True, True)}.items():
        assert (terms[name]["train_fsd"][0] != 0.0) == fsd, name
        assert lcs or terms[name]["train_lcs"][0] == 0.0, name
    assert "| arm | mAP@0.1 |" in text and "[verdict] ftcl: the claim" in text
    assert (workdir / "runs" / "demo_ftcl" / "per_tiou.md").is_file()
