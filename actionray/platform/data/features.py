"""Snippet-feature sets in the ACM-Net release layout: reading, fixed-length sampling, FTCL pairs and checks.

Layout (the THUMOS14 feature release used by the FTCL repo): ``gt.json`` (ActivityNet style: ``database[video]
= {duration, subset, annotations: [{segment: [s, e], label}]}``), ``split_train.txt`` / ``split_test.txt`` (one
video id per line), ``train/<video>.npy`` and ``test/<video>.npy``, one float (L, D) array per video. Class order
is the gt.json's top-level ``classes`` list when present (generated sets), else the THUMOS14 order of the FTCL
repo, config/model_config.py. Pure numpy/json: the Ray Data source builds on these functions.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np

from actionray.errors import NoRetryError, UserError

__all__ = ["THUMOS14_CLASSES", "SNIPPET_SECONDS", "FeatureSet", "load_feature_set", "feature_set_classes",
           "video_labels", "sample_indices", "epoch_rng", "ftcl_pairs", "check_feature_set", "is_feature_set",
           "check_feature_set_once", "feature_set_digest", "feature_file_problem", "FeatureFileError"]

THUMOS14_CLASSES: tuple[str, ...] = (
    "BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk", "CliffDiving", "CricketBowling", "CricketShot",
    "Diving", "FrisbeeCatch", "GolfSwing", "HammerThrow", "HighJump", "JavelinThrow", "LongJump", "PoleVault",
    "Shotput", "SoccerPenalty", "TennisSwing", "ThrowDiscus", "VolleyballSpiking")
SNIPPET_SECONDS = 16 / 25  # 16 frames at 25 fps per snippet
_SPLITS = {"train": "split_train.txt", "test": "split_test.txt"}
CHECK_STAMP = ".actionray_checked.json"  # in the feature set's folder: the digest of the last set that passed


class FeatureFileError(UserError, NoRetryError, ValueError):
    """A snippet-feature file a run reads is missing, unreadable, of the wrong shape or holds NaN/inf (the message
    names the file). Deterministic: a retry reads the same file, so Ray Train does not retry it (NoRetryError)."""


def feature_set_classes(gt: Mapping[str, Any]) -> list[str]:
    """Class names in index order: gt.json's ``classes`` list if present, else THUMOS14's."""
    classes = gt.get("classes")
    return list(classes) if classes else list(THUMOS14_CLASSES)


def video_labels(gt: Mapping[str, Any], videos: list[str], classes: list[str]) -> np.ndarray:
    """Video-level multi-hot labels (N, C) float32 from the annotations; unknown labels raise naming the video."""
    index = {c: i for i, c in enumerate(classes)}
    labels = np.zeros((len(videos), len(classes)), dtype=np.float32)
    for row, video in enumerate(videos):
        for ann in gt["database"][video].get("annotations", []):
            if ann["label"] not in index:
                raise ValueError(f"gt.json: {video}: label {ann['label']!r} is not in the class list")
            labels[row, index[ann["label"]]] = 1.0
    return labels


def epoch_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """A generator determined by (seed, epoch, index) alone, so any worker redraws the same sample."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index]))


def sample_indices(length: int, num_segments: int = 750, mode: Literal["random", "uniform"] = "random",
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """Snippet indices of a video of ``length`` snippets (FTCL repo, dataset/dataset_class.py).

    random (train, always ``num_segments`` indices): L < T draws T with replacement and sorts; L > T draws
    index i uniformly in [floor(i L/T), floor((i+1) L/T)] (ends inclusive) for i < T-1 and the last in
    [previous, L-1]; L == T is the identity. uniform (test): 1 < L <= T keeps all L; otherwise floor(k L/T)
    for k < T; L = 1 gives [0, 0].
    """
    if length < 1:
        raise ValueError(f"sample_indices: length {length} must be >= 1")
    if mode == "uniform":
        if 1 < length <= num_segments:
            return np.arange(length)
        if length == 1:
            return np.zeros(2, dtype=np.int64)
        return np.floor(np.arange(num_segments) * length / num_segments).astype(np.int64)
    if mode != "random":
        raise ValueError(f"sample_indices: mode {mode!r}: expected 'random' or 'uniform'")
    rng = rng if rng is not None else np.random.default_rng()
    if length == num_segments:
        return np.arange(length)
    if length < num_segments:
        return np.sort(rng.integers(0, length, size=num_segments))
    bounds = np.floor(np.arange(num_segments) * length / num_segments).astype(np.int64)
    picks = np.empty(num_segments, dtype=np.int64)
    picks[:-1] = rng.integers(bounds[:-1], bounds[1:] + 1)  # both ends inclusive
    picks[-1] = rng.integers(picks[-2], length)
    return picks


@dataclass
class FeatureSet:
    """One split of a feature set: video ids, (N, C) labels, class names and where the arrays live."""

    root: Path
    split: str
    videos: list[str]
    labels: np.ndarray
    classes: list[str]
    gt: dict

    def path(self, index: int) -> Path:
        """The .npy file of video ``index``."""
        return self.root / self.split / f"{self.videos[index]}.npy"

    def features(self, index: int) -> np.ndarray:
        """The full (L, D) float32 features of video ``index``."""
        return np.asarray(np.load(self.path(index)), dtype=np.float32)

    def sample(self, index: int, num_segments: int = 750, mode: Literal["random", "uniform"] = "random",
               seed: int = 0, epoch: int = 0) -> dict[str, Any]:
        """Fixed-length item: ``features`` (T, D), ``label`` (C,), ``video``, ``length`` L (re-drawn per epoch)."""
        feats = self.features(index)
        idx = sample_indices(len(feats), num_segments, mode, epoch_rng(seed, epoch, index))
        return {"features": feats[idx], "label": self.labels[index], "video": self.videos[index],
                "length": len(feats)}

    def frozen_samples(self, num_segments: int = 750, seed: int = 0) -> list[np.ndarray]:
        """Every video sampled once ("random" mode, epoch 0), reused for all epochs as FTCL's pair dataset does."""
        return [self.sample(i, num_segments, "random", seed, 0)["features"] for i in range(len(self.videos))]


def load_feature_set(root: str | Path, split: Literal["train", "test"]) -> FeatureSet:
    """Read gt.json and the split list of ``root``; errors name the file and what is wrong."""
    root = Path(root)
    if split not in _SPLITS:
        raise ValueError(f"split {split!r}: expected 'train' or 'test'")
    gt_path, split_path = root / "gt.json", root / _SPLITS[split]
    try:
        gt = json.loads(gt_path.read_text())
        videos = [v for v in split_path.read_text().split() if v]
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error.filename}: missing from the feature set") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{gt_path}: not valid JSON ({error})") from None
    missing = [v for v in videos if v not in gt.get("database", {})]
    if missing:
        raise ValueError(f"{split_path}: {len(missing)} video(s) not in gt.json, e.g. {missing[0]}")
    classes = feature_set_classes(gt)
    return FeatureSet(root, split, videos, video_labels(gt, videos, classes), classes, gt)


def ftcl_pairs(labels: np.ndarray, seed: int = 0) -> list[tuple[int, int, int]]:
    """FTCL's training pairs (i, j, pair_label) over i < j (FTCL repo, dataset/dataset_class.py ``FTCLDataset``).

    Positive (1): identical multi-hot labels; negative (0): no shared class; partial overlaps are dropped.
    Negatives are subsampled once to the number of positives with ``random.Random(seed).sample``; the
    reference draws from Python's global generator seeded with 0, so its subset may differ from this one.
    """
    labels = np.asarray(labels) > 0
    pos, neg = [], []
    for i in range(len(labels) - 1):
        for j in range(i + 1, len(labels)):
            if np.array_equal(labels[i], labels[j]):
                pos.append((i, j, 1))
            elif not (labels[i] & labels[j]).any():
                neg.append((i, j, 0))
    return pos + random.Random(seed).sample(neg, min(len(pos), len(neg)))


def is_feature_set(path: str | Path) -> bool:
    """True for a folder holding gt.json and a split list (what ``data check`` treats as a feature set)."""
    path = Path(path)
    return path.is_dir() and (path / "gt.json").is_file() and any((path / f).is_file() for f in _SPLITS.values())


def check_feature_set(root: str | Path, feature_dim: int = 2048, length_tolerance: float = 0.2,
                      min_length_slack: int = 8) -> list[str]:
    """Every problem of a feature set, one string per problem naming the file; empty when all is well.

    Checks gt.json and the split lists, then each array: missing, unreadable, not (L, feature_dim), NaN/inf,
    and L far from floor(duration * 25 / 16) (off by more than ``length_tolerance`` of it and
    ``min_length_slack`` snippets), and annotation labels absent from the class list.
    """
    root = Path(root)
    gt_path = root / "gt.json"
    try:
        gt = json.loads(gt_path.read_text())
    except FileNotFoundError:
        return [f"{gt_path}: missing"]
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return [f"{gt_path}: not valid JSON ({error})"]
    database = gt.get("database")
    if not isinstance(database, dict):
        return [f"{gt_path}: no 'database' mapping"]
    problems: list[str] = []
    classes = set(feature_set_classes(gt))
    for video, entry in database.items():
        for k, ann in enumerate(entry.get("annotations", [])):
            if ann.get("label") not in classes:
                problems.append(f"{gt_path}: {video} annotation {k}: label {ann.get('label')!r} not in the class list")
    for split, name in _SPLITS.items():
        split_path = root / name
        if not split_path.is_file():
            problems.append(f"{split_path}: missing")
            continue
        for line_no, video in enumerate(split_path.read_text().splitlines(), 1):
            video = video.strip()
            if not video:
                continue
            npy = root / split / f"{video}.npy"
            if video not in database:
                problems.append(f"{split_path}:{line_no}: {video} is not in gt.json")
            problems += [f"{npy}: {p}" for p in _check_array(npy, feature_dim, database.get(video),
                                                               length_tolerance, min_length_slack)]
    return problems


def _check_array(npy: Path, feature_dim: int, entry: Mapping[str, Any] | None, tolerance: float,
                 slack: int) -> list[str]:
    if not npy.is_file():
        return ["missing"]
    try:
        arr = np.load(npy, allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - truncated or not an .npy at all
        return [f"unreadable ({type(error).__name__}: {error})"]
    if arr.ndim != 2 or arr.shape[1] != feature_dim or arr.shape[0] == 0:
        return [f"shape {arr.shape}, expected (L, {feature_dim}) with L >= 1"]
    problems = []
    if not np.issubdtype(arr.dtype, np.floating):
        problems.append(f"dtype {arr.dtype}, expected floating point")
    elif not np.isfinite(arr).all():
        problems.append(f"{int((~np.isfinite(arr)).sum())} NaN/inf value(s)")
    if entry is not None and "duration" in entry:
        expected = int(float(entry["duration"]) / SNIPPET_SECONDS)
        if abs(arr.shape[0] - expected) > max(tolerance * expected, slack):
            problems.append(f"{arr.shape[0]} snippets, but duration {float(entry['duration']):.1f}s implies "
                            f"about {expected}")
    return problems


def feature_file_problem(npy: str | Path, feature_dim: int) -> str | None:
    """What is wrong with one feature file (missing, unreadable, shape, NaN/inf), or None."""
    problems = _check_array(Path(npy), feature_dim, None, 0.0, 0)
    return "; ".join(problems) if problems else None


def feature_set_digest(root: str | Path, feature_dim: int) -> str:
    """A digest of what ``check_feature_set`` reads: gt.json, the split lists and every listed array's name, size
    and mtime (stat only, no array is opened), and ``feature_dim``."""
    root = Path(root)
    h = hashlib.sha256(f"{root.resolve()}|{feature_dim}".encode())
    for name in ("gt.json", *_SPLITS.values()):
        path = root / name
        h.update(path.read_bytes() if path.is_file() else b"<missing>")
    for split, name in _SPLITS.items():
        path = root / name
        if not path.is_file():
            continue
        for video in path.read_text().split():
            npy = root / split / f"{video}.npy"
            try:
                st = npy.stat()
                h.update(f"{split}/{video}:{st.st_size}:{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{split}/{video}:missing\n".encode())
    return h.hexdigest()


def check_feature_set_once(root: str | Path, feature_dim: int) -> list[str]:
    """``check_feature_set`` (without its length-vs-duration check) unless this very set (same
    ``feature_set_digest``) passed before: a set that passes
    leaves a stamp file (``.actionray_checked.json``) in its folder when the folder is writable, so a second run
    on unchanged files costs a few ``stat`` calls instead of reading every array."""
    root = Path(root)
    digest = feature_set_digest(root, feature_dim)
    stamp = root / CHECK_STAMP
    try:
        if json.loads(stamp.read_text()).get("digest") == digest:
            return []
    except (OSError, ValueError, AttributeError):
        pass
    # Lengths against durations are left to `data check`: sets resampled to a fixed length (ActivityNet releases)
    # differ from 25 fps / 16-frame snippets by design and still train.
    problems = check_feature_set(root, feature_dim=feature_dim, length_tolerance=float("inf"))
    if not problems:
        try:
            stamp.write_text(json.dumps({"digest": digest, "feature_dim": feature_dim}))
        except OSError:  # a read-only set is checked again next time
            pass
    return problems
