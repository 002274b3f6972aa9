"""Temporal detection mAP at tIoU thresholds, with the semantics of ActivityNet's ``ANETDetection``.

As used by the FTCL repo (utils/net_evaluation.py, adapted from the ActivityNet evaluation code): ground truth is
every annotation of every video of ``subset`` in an ActivityNet-style gt.json; per class and threshold,
predictions are visited by descending score and each is a true positive when its best still-unmatched GT of that
class in the same video has tIoU >= threshold (GT visited by descending tIoU; the first GT below the threshold
ends the search); AP is the all-point interpolated AP; mAP is the mean over the GT classes.

Tie rule (documented and stable, unlike the reference's ``argsort()[::-1]`` whose order among equal values
depends on the numpy build): predictions with equal scores keep their input order (videos in the order of the
predictions file, segments in list order); GT with equal tIoU are visited in gt.json order. Without ties the
results equal the reference's exactly.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["DEFAULT_TIOU_THRESHOLDS", "evaluate_detection", "format_detection_table", "interpolated_ap",
           "segment_tiou"]

# np.arange as in the reference: two of the values are 0.30000000000000004 and 0.7000000000000001.
DEFAULT_TIOU_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.arange(0.1, 1.0, 0.1))
_AVERAGE_UP_TO = 0.7  # headline "Average-mAP" over 0.1-0.7 (THUMOS14 convention)


def segment_tiou(segment: np.ndarray, others: np.ndarray) -> np.ndarray:
    """tIoU of one segment (2,) with segments (N, 2), in seconds, without the '+1' of NMS."""
    inter = (np.minimum(segment[1], others[:, 1]) - np.maximum(segment[0], others[:, 0])).clip(0)
    union = (others[:, 1] - others[:, 0]) + (segment[1] - segment[0]) - inter
    return inter / union


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """All-point interpolated AP (VOC 2011 / ActivityNet) from cumulative precision and recall (N,)."""
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _load(source: str | Path | Mapping[str, Any], what: str) -> tuple[Mapping[str, Any], str]:
    if isinstance(source, Mapping):
        return source, f"<{what} dict>"
    path = Path(source)
    try:
        return json.loads(path.read_text()), str(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: {what} is not valid JSON ({error})") from None


def _ground_truth(gt: Mapping[str, Any], name: str, subset: str) -> tuple[list[str], dict[str, dict[str, list]]]:
    """Classes in order of first appearance and {label: {video: [(start, end), ...]}} for ``subset``."""
    database = gt.get("database")
    if not isinstance(database, Mapping):
        raise ValueError(f"{name}: no 'database' mapping (expected an ActivityNet-style gt.json)")
    classes: list[str] = []
    by_class: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for video, entry in database.items():
        if entry.get("subset") != subset:
            continue
        for k, ann in enumerate(entry.get("annotations", [])):
            try:
                label, (start, end) = ann["label"], ann["segment"]
                start, end = float(start), float(end)
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{name}: {video} annotation {k}: needs 'label' and 'segment': [start, end]") from None
            if label not in by_class:
                classes.append(label)
            by_class[label][video].append((start, end))
    if not classes:
        raise ValueError(f"{name}: no annotations with subset {subset!r}")
    return classes, by_class


def _predictions(pred: Mapping[str, Any], name: str, classes: list[str]) -> dict[str, list]:
    """{label: [(video, start, end, score), ...]} in input order; an unknown label raises."""
    results = pred.get("results")
    if not isinstance(results, Mapping):
        raise ValueError(f"{name}: no 'results' mapping (expected ActivityNet-style predictions)")
    known = set(classes)
    by_class: dict[str, list] = defaultdict(list)
    for video, segments in results.items():
        for k, seg in enumerate(segments):
            try:
                label, (start, end), score = seg["label"], seg["segment"], float(seg["score"])
                start, end = float(start), float(end)
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{name}: {video} prediction {k}: needs 'label', 'score' and 'segment': "
                                 "[start, end]") from None
            if label not in known:
                raise ValueError(f"{name}: {video} prediction {k}: label {label!r} does not occur in the "
                                 f"ground truth (known: {', '.join(classes)})")
            by_class[label].append((video, start, end, score))
    return by_class


def _class_ap(gt: dict[str, list], preds: list, thresholds: np.ndarray) -> np.ndarray:
    """AP of one class at every threshold (ANETDetection ``compute_average_precision_detection``)."""
    npos = sum(len(v) for v in gt.values())
    if not preds or npos == 0:
        return np.zeros(len(thresholds))
    scores = np.array([p[3] for p in preds])
    order = np.argsort(-scores, kind="stable")  # descending, ties in input order
    gt_arrays = {v: np.asarray(s, dtype=np.float64) for v, s in gt.items()}
    locked = {v: np.zeros((len(thresholds), len(s)), dtype=bool) for v, s in gt.items()}
    tp = np.zeros((len(thresholds), len(preds)))
    for rank, idx in enumerate(order):
        video, start, end, _ = preds[idx]
        if video not in gt_arrays:
            continue  # false positive
        tiou = segment_tiou(np.array([start, end]), gt_arrays[video])
        visit = np.argsort(-tiou, kind="stable")
        for t, thr in enumerate(thresholds):
            for j in visit:
                if tiou[j] < thr:
                    break
                if locked[video][t, j]:
                    continue
                tp[t, rank] = 1
                locked[video][t, j] = True
                break
    tp_cum = np.cumsum(tp, axis=1)
    fp_cum = np.cumsum(1 - tp, axis=1)
    recall = tp_cum / npos
    precision = tp_cum / (tp_cum + fp_cum)
    return np.array([interpolated_ap(precision[t], recall[t]) for t in range(len(thresholds))])


def evaluate_detection(gt_path_or_dict: str | Path | Mapping[str, Any],
                       predictions_path_or_dict: str | Path | Mapping[str, Any], subset: str = "test",
                       tiou_thresholds: tuple[float, ...] | list[float] = DEFAULT_TIOU_THRESHOLDS,
                       average_up_to: float | None = _AVERAGE_UP_TO) -> dict[str, Any]:
    """mAP per tIoU threshold and the average over 0.1-0.7 (percent) of ActivityNet-style predictions.

    Returns ``tiou_thresholds``, ``map`` (fractions, one per threshold), ``average_map`` (100 x mean of the
    thresholds <= ``average_up_to``: 0.7 is the THUMOS14 headline; None averages every threshold, the
    ActivityNet headline over 0.5:0.05:0.95), ``average_over``, ``ap_per_class`` ({label: [AP per threshold]}),
    ``classes``, ``num_ground_truth``, ``num_predictions``.
    """
    gt, gt_name = _load(gt_path_or_dict, "ground truth")
    pred, pred_name = _load(predictions_path_or_dict, "predictions")
    classes, gt_by_class = _ground_truth(gt, gt_name, subset)
    pred_by_class = _predictions(pred, pred_name, classes)
    thresholds = np.asarray([float(t) for t in tiou_thresholds], dtype=np.float64)
    if thresholds.size == 0 or ((thresholds <= 0) | (thresholds > 1)).any():
        raise ValueError(f"tiou_thresholds {list(tiou_thresholds)}: need one or more values in (0, 1]")
    ap = np.stack([_class_ap(gt_by_class[c], pred_by_class.get(c, []), thresholds) for c in classes])
    mean_ap = ap.mean(axis=0)
    head = (thresholds <= average_up_to + 1e-6 if average_up_to is not None  # 0.7000000000000001 is in 0.1-0.7
            else np.ones(thresholds.shape, dtype=bool))
    if not head.any():
        head = np.ones_like(head)
    return {
        "tiou_thresholds": thresholds.tolist(),
        "map": mean_ap.tolist(),
        "average_map": float(100.0 * mean_ap[head].mean()),
        "average_over": thresholds[head].tolist(),
        "ap_per_class": {c: ap[i].tolist() for i, c in enumerate(classes)},
        "classes": classes,
        "num_ground_truth": int(sum(len(s) for g in gt_by_class.values() for s in g.values())),
        "num_predictions": int(sum(len(p) for p in pred_by_class.values())),
    }


def format_detection_table(result: Mapping[str, Any]) -> str:
    """The mAP table: one header row of tIoU thresholds, one row of mAP in percent, then the average."""
    thresholds, maps = result["tiou_thresholds"], result["map"]
    over = result["average_over"]
    def show(t: float) -> str:
        return f"{round(t, 2):g}"  # 0.1, 0.55 (a threshold list of 0.05 steps stays readable)

    avg_name = f"avg({show(over[0])}-{show(over[-1])})"
    header = "tIoU   " + " ".join(f"{show(t):>6}" for t in thresholds) + f"  {avg_name:>13}"
    row = "mAP(%) " + " ".join(f"{100 * m:>6.2f}" for m in maps) + f"  {result['average_map']:>13.2f}"
    return (f"{header}\n{row}\n"
            f"{result['num_predictions']} predictions, {result['num_ground_truth']} ground-truth segments, "
            f"{len(result['classes'])} classes")
