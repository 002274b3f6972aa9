"""Temporal detection mAP (ANETDetection semantics) and ``actionray eval-detection``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest

from actionray.cli import detection as detection_cli
from actionray.platform.detection import (DEFAULT_TIOU_THRESHOLDS, evaluate_detection, format_detection_table,
                                          interpolated_ap)

def main(argv: list[str]) -> int:
    """Run ``actionray eval-detection`` through its own register(), independent of other command modules."""
    parser = argparse.ArgumentParser(prog="actionray")
    detection_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.handler(args))


# The real THUMOS14 gt.json (tests/data/thumos14, or where ACTIONRAY_THUMOS14_GT says).
REAL_GT = Path(os.environ.get("ACTIONRAY_THUMOS14_GT", Path(__file__).resolve().parent / "data" / "thumos14" / "gt.json"))


def _gt() -> dict:
    db = {
        "v1": {"duration": 60.0, "subset": "test", "annotations": [
            {"segment": [10.0, 20.0], "label": "Jump"}, {"segment": [30.0, 35.0], "label": "Jump"}]},
        "v2": {"duration": 40.0, "subset": "test", "annotations": [
            {"segment": [5.0, 9.0], "label": "Throw"}, {"segment": [12.0, 20.0], "label": "Jump"}]},
        "v3": {"duration": 40.0, "subset": "validation", "annotations": [{"segment": [1.0, 2.0], "label": "Swim"}]},
    }
    return {"version": "test", "database": db}


def _perfect(gt: dict, shift: float = 0.0) -> dict:
    results = {}
    n = 0
    for video, entry in sorted(gt["database"].items()):
        if entry["subset"] != "test":
            continue
        for ann in entry["annotations"]:
            s, e = ann["segment"]
            results.setdefault(video, []).append({"label": ann["label"], "score": 1 - n * 1e-3,
                                                  "segment": [s + shift, e + shift]})
            n += 1
    return {"version": "test", "results": results}


def test_perfect_predictions_score_one_at_every_threshold():
    result = evaluate_detection(_gt(), _perfect(_gt()))
    assert result["map"] == pytest.approx([1.0] * 9)
    assert result["average_map"] == pytest.approx(100.0)
    assert result["classes"] == ["Jump", "Throw"]  # order of first appearance; validation videos ignored


def test_shifted_predictions_score_lower_at_high_thresholds():
    result = evaluate_detection(_gt(), _perfect(_gt(), shift=2.0))
    # Jump [10,20] shifted by 2: tIoU 8/12; [30,35]: 3/7; [12,20]: 6/10; Throw [5,9]: 2/6.
    assert result["map"][0] == pytest.approx(1.0)
    assert result["ap_per_class"]["Throw"][3] == 0.0  # tIoU 1/3 < 0.4
    assert result["average_map"] < 100.0


def test_hand_computed_ap_with_a_false_positive_first():
    gt = {"database": {"a": {"subset": "test", "annotations": [{"segment": [0.0, 10.0], "label": "X"},
                                                               {"segment": [20.0, 30.0], "label": "X"}]}}}
    pred = {"results": {"a": [{"label": "X", "score": 0.9, "segment": [40.0, 50.0]},
                              {"label": "X", "score": 0.8, "segment": [0.0, 10.0]},
                              {"label": "X", "score": 0.7, "segment": [0.0, 10.0]}]}}
    result = evaluate_detection(gt, pred, tiou_thresholds=[0.5])
    # FP, TP (recall 0.5, precision 1/2), duplicate = FP: AP = 0.5 * 0.5.
    assert result["map"] == pytest.approx([0.25])


def test_label_absent_from_ground_truth_raises():
    pred = _perfect(_gt())
    pred["results"]["v1"].append({"label": "Swim", "score": 0.5, "segment": [0.0, 1.0]})
    with pytest.raises(ValueError, match="'Swim' does not occur in the ground truth"):
        evaluate_detection(_gt(), pred)


def test_equal_scores_keep_input_order():
    gt = {"database": {"a": {"subset": "test", "annotations": [{"segment": [0.0, 10.0], "label": "X"}]}}}
    hit = {"label": "X", "score": 0.5, "segment": [0.0, 10.0]}
    miss = {"label": "X", "score": 0.5, "segment": [50.0, 60.0]}
    first = evaluate_detection(gt, {"results": {"a": [hit, miss]}}, tiou_thresholds=[0.5])
    second = evaluate_detection(gt, {"results": {"a": [miss, hit]}}, tiou_thresholds=[0.5])
    assert first["map"] == [1.0] and second["map"] == [0.5]


def test_interpolated_ap_makes_precision_monotone():
    assert interpolated_ap(np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_default_thresholds_carry_the_reference_float_values():
    assert DEFAULT_TIOU_THRESHOLDS[2] == 0.30000000000000004 and DEFAULT_TIOU_THRESHOLDS[6] == 0.7000000000000001


def test_table_lists_every_threshold_and_the_average():
    table = format_detection_table(evaluate_detection(_gt(), _perfect(_gt(), shift=2.0)))
    assert "avg(0.1-0.7)" in table and "0.9" in table and "100.00" in table


@pytest.mark.skipif(not REAL_GT.exists(), reason="THUMOS14 gt.json not present")
def test_real_thumos14_regressions():
    gt = json.loads(REAL_GT.read_text())
    split = set((REAL_GT.parent / "split_test.txt").read_text().split())
    test_videos = [v for v, e in gt["database"].items() if e["subset"] == "test"]

    def shifted(delta: float, videos) -> dict:
        results, n = {}, 0
        for video in sorted(videos):
            for ann in gt["database"][video]["annotations"]:
                s, e = ann["segment"]
                results.setdefault(video, []).append({"label": ann["label"], "score": 1 - n * 1e-4,
                                                      "segment": [s + delta, e + delta]})
                n += 1
        return {"results": results}

    assert evaluate_detection(gt, shifted(0.0, split))["average_map"] == pytest.approx(98.8714, abs=1e-4)
    result = evaluate_detection(gt, shifted(1.0, test_videos))
    assert result["map"] == pytest.approx([0.824412, 0.768985, 0.678088, 0.557220, 0.439465, 0.312154, 0.182659,
                                           0.038178, 0.003078], abs=1e-6)
    assert result["average_map"] == pytest.approx(53.7569, abs=1e-4)
    assert evaluate_detection(gt, shifted(0.5, test_videos))["average_map"] == pytest.approx(78.7297, abs=1e-4)


def test_eval_detection_command_prints_the_table(tmp_path, capsys):
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text(json.dumps(_gt()))
    pred.write_text(json.dumps(_perfect(_gt())))
    assert main(["eval-detection", "--gt", str(gt), "--pred", str(pred)]) == 0
    out = capsys.readouterr().out
    assert "mAP(%)" in out and "100.00" in out


def test_eval_detection_command_bad_input_is_one_error_line(tmp_path, capsys):
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text(json.dumps(_gt()))
    pred.write_text("{not json")
    assert main(["eval-detection", "--gt", str(gt), "--pred", str(pred)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "pred.json" in err[0]
