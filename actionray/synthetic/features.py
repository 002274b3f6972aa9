"""A generated snippet-feature set in the ACM-Net release layout, with planted, learnable action segments.

Each class has a prototype vector; an action snippet is its class prototype plus Gaussian noise, every other
snippet is a shared background prototype plus noise, all passed through ReLU like I3D features. Videos carry
several instances of one or two classes, so the video-level labels are multi-hot and the segments are
recoverable from the features alone. Segments are written in seconds (one snippet = 0.64 s), durations imply
the array lengths, and gt.json lists its own ``classes``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SyntheticFeatureSet", "write_synthetic_feature_set"]

_SNIPPET_SECONDS = 16 / 25


@dataclass(frozen=True)
class SyntheticFeatureSet:
    """Where a generated set was written and what it holds."""

    root: Path
    classes: list[str]
    train_videos: list[str]
    test_videos: list[str]
    feature_dim: int


def _plant(length: int, num_instances: int, rng: np.random.Generator, min_len: int, max_len: int,
           taken: np.ndarray) -> list[tuple[int, int]]:
    """Up to ``num_instances`` non-overlapping [start, end) snippet ranges, each at least one snippet apart."""
    spans = []
    for _ in range(num_instances * 10):
        if len(spans) == num_instances:
            break
        size = int(rng.integers(min_len, max_len + 1))
        start = int(rng.integers(1, max(2, length - size - 1)))
        end = min(start + size, length - 1)
        if end - start >= 2 and not taken[max(0, start - 1):end + 1].any():
            taken[start:end] = True
            spans.append((start, end))
    return sorted(spans)


def write_synthetic_feature_set(out_dir: str | Path, *, num_classes: int = 4, train_videos: int = 32,
                                test_videos: int = 16, feature_dim: int = 2048, min_snippets: int = 80,
                                max_snippets: int = 240, instances: tuple[int, int] = (2, 4),
                                instance_snippets: tuple[int, int] = (6, 20), noise: float = 0.5,
                                multi_label_fraction: float = 0.3, seed: int = 0) -> SyntheticFeatureSet:
    """Write gt.json, split_train.txt, split_test.txt, train/*.npy, test/*.npy (float32 (L, feature_dim))."""
    if num_classes < 2 or feature_dim < 2 or min_snippets < 3 * instance_snippets[1] or max_snippets < min_snippets:
        raise ValueError(f"synthetic feature set: need num_classes >= 2, feature_dim >= 2 and "
                         f"max_snippets >= min_snippets >= 3 x the longest instance ({instance_snippets[1]}); got "
                         f"{num_classes}, {feature_dim}, {min_snippets}..{max_snippets}")
    root = Path(out_dir)
    rng = np.random.default_rng(seed)
    classes = [f"action_{c:02d}" for c in range(num_classes)]
    prototypes = rng.normal(0.0, 1.0, size=(num_classes, feature_dim)).astype(np.float32)
    background = rng.normal(0.0, 1.0, size=feature_dim).astype(np.float32)
    database: dict[str, dict] = {}
    ids: dict[str, list[str]] = {"train": [], "test": []}
    for split, count in (("train", train_videos), ("test", test_videos)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for n in range(count):
            video = f"synth_{'validation' if split == 'train' else 'test'}_{n:05d}"
            length = int(rng.integers(min_snippets, max_snippets + 1))
            chosen = [n % num_classes]  # every class appears in every split
            if rng.random() < multi_label_fraction:
                chosen.append(int(rng.choice([c for c in range(num_classes) if c != chosen[0]])))
            feats = background + noise * rng.normal(size=(length, feature_dim)).astype(np.float32)
            taken = np.zeros(length, dtype=bool)
            annotations = []
            for c in chosen:
                for start, end in _plant(length, int(rng.integers(instances[0], instances[1] + 1)), rng,
                                         *instance_snippets, taken):
                    feats[start:end] = prototypes[c] + noise * rng.normal(size=(end - start, feature_dim))
                    annotations.append({"segment": [round(start * _SNIPPET_SECONDS, 2),
                                                    round(end * _SNIPPET_SECONDS, 2)], "label": classes[c]})
            annotations.sort(key=lambda a: a["segment"][0])
            np.save(root / split / f"{video}.npy", np.maximum(feats, 0.0).astype(np.float32))
            database[video] = {"duration": round(length * _SNIPPET_SECONDS, 3), "frames": length * 16,
                               "subset": "validation" if split == "train" else "test", "annotations": annotations}
            ids[split].append(video)
    gt = {"taxonomy": [], "version": "synthetic", "classes": classes, "database": database}
    (root / "gt.json").write_text(json.dumps(gt))
    (root / "split_train.txt").write_text("".join(f"{v}\n" for v in ids["train"]))
    (root / "split_test.txt").write_text("".join(f"{v}\n" for v in ids["test"]))
    return SyntheticFeatureSet(root, classes, ids["train"], ids["test"], feature_dim)
