"""Classification metrics with MMAction2 semantics (mmaction/evaluation/functional/accuracy.py).

Scores are ``(N, C)`` arrays (logits or probabilities; only their ranking matters), labels ``(N,)`` ints.
Results are fractions in [0, 1], not percentages.
"""

from __future__ import annotations

import numpy as np


def _as_arrays(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {scores.shape}")
    if scores.shape[0] != labels.shape[0]:
        raise ValueError(f"scores have {scores.shape[0]} rows but labels {labels.shape[0]}")
    if scores.shape[0] == 0:
        raise ValueError("no samples: metrics need at least one score row")
    return scores, labels


def top_k_accuracy(scores, labels, topk: int | tuple[int, ...] = (1, 5)) -> float | list[float]:
    """Fraction of samples whose label is among the k highest scores, for each k in ``topk``.

    Ranking uses ``argsort`` (stable on the reversed array) as MMAction2 does, so ties go to the lower class
    index; k larger than C counts every sample as a hit. An int ``topk`` returns a float, a tuple a list.
    """
    scores, labels = _as_arrays(scores, labels)
    single = isinstance(topk, int)
    ks = (topk,) if single else tuple(topk)
    if any(k < 1 for k in ks):
        raise ValueError(f"topk values must be >= 1, got {ks}")
    # MMAction2: np.argsort(score)[-k:][::-1] per sample.
    order = np.argsort(scores, axis=1)[:, ::-1]
    out = []
    for k in ks:
        hits = (order[:, :k] == labels[:, None]).any(axis=1)
        out.append(float(hits.mean()))
    return out[0] if single else out


def confusion_matrix(predictions, labels, num_classes: int | None = None) -> np.ndarray:
    """Counts ``(C, C)``: rows = true label, columns = prediction (all classes ``0..C-1``)."""
    predictions = np.asarray(predictions, dtype=np.int64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    size = num_classes or int(max(predictions.max(initial=-1), labels.max(initial=-1)) + 1)
    matrix = np.zeros((size, size), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def mean_class_accuracy(scores, labels) -> float:
    """Mean over classes of per-class recall, over the classes seen in labels OR predictions (MMAction2).

    A class that is predicted but never the true label contributes 0 (its row is empty), lowering the mean;
    a class absent from both labels and predictions is ignored.
    """
    scores, labels = _as_arrays(scores, labels)
    predictions = scores.argmax(axis=1)
    present = np.union1d(predictions, labels)
    remap = {c: i for i, c in enumerate(present)}
    compact = confusion_matrix([remap[p] for p in predictions], [remap[t] for t in labels], len(present))
    counts = compact.sum(axis=1)
    hits = np.diag(compact)
    per_class = np.divide(hits, counts, out=np.zeros(len(present), dtype=np.float64), where=counts > 0)
    return float(per_class.mean())
