"""A generated snippet-feature set in the ACM-Net release layout, with planted, learnable action segments.

Each class has a prototype vector; an action snippet is its class prototype plus Gaussian noise, every other
snippet is a shared background prototype plus noise, all passed through ReLU like I3D features. Videos carry
several instances of one or two classes, so the video-level labels are multi-hot and the segments are
recoverable from the features alone. Segments are written in seconds (one snippet = 0.64 s), durations imply
the array lengths, and gt.json lists its own ``classes``.

``phases > 0`` (the FTCL claims demo, ``actionray demo ftcl``) makes classes out of *ordered sub-phases*: a pool of
``phases`` shared phase prototypes, each class a fixed sequence of 2-4 of them, built in pairs that use the same
phases in reverse order (so only the order tells such two classes apart), plus a weak class-specific component
(``class_signal``). An instance is cut into consecutive sub-spans, one per phase. With probability ``decoys`` an
instance gets a *hard negative* next to it: background snippets that show some class's phases in an order that no
class uses (``decoy_snippets`` long, no class component, not annotated). Backgrounds carry Gaussian noise around the
shared background prototype in both modes. The settings are stored in gt.json (``synthetic``), so a feature folder
written with other settings is recognised (``actionray.trainables.acmnet.prepare_features`` rewrites it).
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


def phase_sequences(num_classes: int, phases: int, per_class: tuple[int, int],
                    rng: np.random.Generator) -> list[list[int]]:
    """Each class's fixed phase order: classes 2k and 2k+1 use the same 2-4 distinct phases, the second in
    reverse order (an odd last class gets its own draw)."""
    lo, hi = per_class
    if not 2 <= lo <= hi or hi > phases:
        raise ValueError(f"synthetic feature set: phases_per_class {per_class} must be 2 <= lo <= hi <= phases "
                         f"({phases})")
    sequences: list[list[int]] = []
    while len(sequences) < num_classes:
        order = [int(p) for p in rng.choice(phases, size=int(rng.integers(lo, hi + 1)), replace=False)]
        if order in sequences or order[::-1] in sequences:
            continue
        sequences.append(order)
        if len(sequences) < num_classes:
            sequences.append(order[::-1])
    return sequences


def _wrong_order(sequences: list[list[int]], c: int, rng: np.random.Generator) -> list[int]:
    """Phases of class ``c`` in an order no class uses (a permutation when one exists, else one phase short)."""
    own = sequences[c]
    for _ in range(20):
        order = [int(p) for p in rng.permutation(own)]
        if order not in sequences:
            return order
    drop = int(rng.integers(len(own)))
    return own[:drop] + own[drop + 1:]


def _split(total: int, parts: int, rng: np.random.Generator) -> list[int]:
    """``total`` snippets cut into ``parts`` consecutive pieces of at least one snippet (roughly equal)."""
    weights = rng.uniform(0.7, 1.3, size=parts)
    sizes = np.maximum(1, np.floor(total * weights / weights.sum()).astype(int))
    sizes[-1] = max(1, total - int(sizes[:-1].sum()))
    return [int(x) for x in sizes]


def write_synthetic_feature_set(out_dir: str | Path, *, num_classes: int = 4, train_videos: int = 32,
                                test_videos: int = 16, feature_dim: int = 2048, min_snippets: int = 80,
                                max_snippets: int = 240, instances: tuple[int, int] = (2, 4),
                                instance_snippets: tuple[int, int] = (6, 20), noise: float = 0.5,
                                multi_label_fraction: float = 0.3, seed: int = 0, phases: int = 0,
                                phases_per_class: tuple[int, int] = (2, 4), class_signal: float = 0.5,
                                decoys: float = 0.0, decoy_snippets: tuple[int, int] = (4, 12)
                                ) -> SyntheticFeatureSet:
    """Write gt.json, split_train.txt, split_test.txt, train/*.npy, test/*.npy (float32 (L, feature_dim)).

    ``phases`` = 0: one prototype per class (the original set). ``phases`` > 0: ordered sub-phases, weak class
    component ``class_signal`` and hard-negative ``decoys`` (module docstring)."""
    if num_classes < 2 or feature_dim < 2 or min_snippets < 3 * instance_snippets[1] or max_snippets < min_snippets:
        raise ValueError(f"synthetic feature set: need num_classes >= 2, feature_dim >= 2 and "
                         f"max_snippets >= min_snippets >= 3 x the longest instance ({instance_snippets[1]}); got "
                         f"{num_classes}, {feature_dim}, {min_snippets}..{max_snippets}")
    settings = {"num_classes": num_classes, "train_videos": train_videos, "test_videos": test_videos,
                "feature_dim": feature_dim, "min_snippets": min_snippets, "max_snippets": max_snippets,
                "instances": list(instances), "instance_snippets": list(instance_snippets), "noise": noise,
                "multi_label_fraction": multi_label_fraction, "seed": seed, "phases": phases,
                "phases_per_class": list(phases_per_class), "class_signal": class_signal, "decoys": decoys,
                "decoy_snippets": list(decoy_snippets)}
    root = Path(out_dir)
    rng = np.random.default_rng(seed)
    classes = [f"action_{c:02d}" for c in range(num_classes)]
    prototypes = rng.normal(0.0, 1.0, size=(num_classes, feature_dim)).astype(np.float32)
    background = rng.normal(0.0, 1.0, size=feature_dim).astype(np.float32)
    sequences: list[list[int]] = []
    if phases:
        # Drawn after the original prototypes, so phases = 0 keeps the original sets bit for bit.
        phase_protos = rng.normal(0.0, 1.0, size=(phases, feature_dim)).astype(np.float32)
        sequences = phase_sequences(num_classes, phases, phases_per_class, rng)
        if instance_snippets[0] < len(max(sequences, key=len)):
            raise ValueError(f"synthetic feature set: instance_snippets {instance_snippets} shorter than a class's "
                             f"phase count")

    def action(c: int, size: int) -> np.ndarray:
        if not phases:
            return prototypes[c] + noise * rng.normal(size=(size, feature_dim))
        # An instance cut short by the video's end may hold fewer snippets than phases: the first ones then.
        parts = [phase_protos[p] for p, n in zip(sequences[c], _split(max(size, len(sequences[c])),
                                                                       len(sequences[c]), rng))
                 for _ in range(n)][:size]
        return np.stack(parts) + class_signal * prototypes[c] + noise * rng.normal(size=(size, feature_dim))

    def decoy(c: int, size: int) -> np.ndarray:
        order = _wrong_order(sequences, c, rng)
        parts = [phase_protos[p] for p, n in zip(order, _split(max(size, len(order)), len(order), rng))
                 for _ in range(n)]
        return np.stack(parts) + noise * rng.normal(size=(len(parts), feature_dim))
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
                    feats[start:end] = action(c, end - start)
                    annotations.append({"segment": [round(start * _SNIPPET_SECONDS, 2),
                                                    round(end * _SNIPPET_SECONDS, 2)], "label": classes[c]})
            if phases and decoys > 0:
                # Hard negatives right next to actions (one snippet of background between): some class's phases
                # in an order no class uses, without the class component; background in the annotations.
                for a in list(annotations):
                    if rng.random() >= decoys:
                        continue
                    start, end = (int(round(t / _SNIPPET_SECONDS)) for t in a["segment"])
                    size = int(rng.integers(decoy_snippets[0], decoy_snippets[1] + 1))
                    after = rng.random() < 0.5
                    lo = end + 1 if after else start - 1 - size
                    hi = lo + size
                    if lo < 1 or hi > length - 1 or taken[lo - 1:hi + 1].any():
                        continue
                    block = decoy(int(rng.integers(num_classes)), size)[:size]
                    taken[lo:lo + len(block)] = True
                    feats[lo:lo + len(block)] = block
            annotations.sort(key=lambda a: a["segment"][0])
            np.save(root / split / f"{video}.npy", np.maximum(feats, 0.0).astype(np.float32))
            database[video] = {"duration": round(length * _SNIPPET_SECONDS, 3), "frames": length * 16,
                               "subset": "validation" if split == "train" else "test", "annotations": annotations}
            ids[split].append(video)
    gt = {"taxonomy": [], "version": "synthetic", "classes": classes, "database": database}
    if phases:
        gt["synthetic"] = {**settings, "phase_sequences": sequences}
    (root / "gt.json").write_text(json.dumps(gt))
    (root / "split_train.txt").write_text("".join(f"{v}\n" for v in ids["train"]))
    (root / "split_test.txt").write_text("".join(f"{v}\n" for v in ids["test"]))
    return SyntheticFeatureSet(root, classes, ids["train"], ids["test"], feature_dim)
