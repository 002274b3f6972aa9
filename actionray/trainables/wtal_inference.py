"""Per-video temporal action proposals from ACM-Net outputs, as the FTCL repo's test loop builds them.

FTCL repo, test_thu.py and utils/net_evaluation.py (``upgrade_resolution``, ``get_proposal_oic``, ``nms``):
select classes whose video score is > 0.25 (else the argmax), interpolate the instance CAS and the instance
attention x20 (the last 19 points extrapolated from the last two samples), threshold the CAS at {0.15, 0.20} and
the attention at {0.15, ..., 0.95}, turn runs of >= 2 positions into segments scored by outer-inner contrast,
and keep per class the survivors of hard NMS at IoU 0.55 computed with the '+1' convention on seconds.

Tie rule: where the reference sorts by ``argsort()[::-1]`` (order among equal scores set by the numpy build),
NMS here visits equal scores in proposal order (CAS pass before attention pass, thresholds ascending, runs in
time order). Pure numpy; no torch needed.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

__all__ = ["CAS_THRESHOLDS", "ATTENTION_THRESHOLDS", "upsample", "oic_proposals", "nms", "video_proposals",
           "snippet_seconds"]

# Float aranges as in the reference: exactly [0.15, 0.2] and 17 values 0.15..0.9500000000000003.
CAS_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.arange(0.15, 0.25, 0.05))
ATTENTION_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.arange(0.15, 1.0, 0.05))
FRAMES_PER_SNIPPET, FPS = 16, 25  # one snippet = 16 frames at 25 fps = 0.64 s


def snippet_seconds() -> float:
    """Duration of one feature snippet in seconds (16 frames at 25 fps)."""
    return FRAMES_PER_SNIPPET / FPS


def upsample(x: np.ndarray, scale: int = 20) -> np.ndarray:
    """Linear interpolation of (T, ...) at positions arange(0, T, 1/scale), extrapolating past T - 1.

    Same arithmetic as scipy ``interp1d(kind='linear', fill_value='extrapolate')`` (searchsorted-left
    brackets clipped to [1, T-1], slope from the bracketing pair), so the tail continues the last segment.
    """
    x = np.asarray(x, dtype=np.float64)
    t = x.shape[0]
    pos = np.arange(0, t, 1 / scale)
    if t == 1:
        return np.repeat(x, len(pos), axis=0)
    grid = np.arange(t, dtype=np.float64)
    hi = np.clip(np.searchsorted(grid, pos), 1, t - 1)
    lo = hi - 1
    shape = (-1,) + (1,) * (x.ndim - 1)
    slope = (x[hi] - x[lo]) / (grid[hi] - grid[lo]).reshape(shape)
    return slope * (pos - grid[lo]).reshape(shape) + x[lo]


def _runs(positions: np.ndarray) -> list[np.ndarray]:
    """Split sorted indices into runs of consecutive values."""
    return np.split(positions, np.nonzero(np.diff(positions) != 1)[0] + 1) if positions.size else []


def oic_proposals(mask_source: np.ndarray, threshold: float, score_source: np.ndarray, tau: float,
                  outer_ratio: float = 0.2) -> list[tuple[float, float, float]]:
    """Outer-inner-contrast proposals of one class: 1-D sequences (N,) -> [(score, start_s, end_s)].

    Runs of ``mask_source >= threshold`` of length >= 2 become [s * tau, (e + 1) * tau]; score = mean of
    ``score_source`` inside minus its mean over the outer windows of 0.2 x the run length on both sides (0 when
    empty). The video-class term of ``get_proposal_oic`` has weight 0 in the reference call and is left out.
    """
    n = len(score_source)
    out = []
    for run in _runs(np.nonzero(mask_source >= threshold)[0]):
        if len(run) < 2:
            continue
        s, e = int(run[0]), int(run[-1])
        inner = float(np.mean(score_source[run]))
        length = len(run)
        outer_s = max(0, int(s - outer_ratio * length))  # int() truncates toward zero, as the reference
        outer_e = min(n - 1, int(e + outer_ratio * length))
        outer_idx = list(range(outer_s, s)) + list(range(e + 1, outer_e + 1))
        outer = float(np.mean(score_source[outer_idx])) if outer_idx else 0.0
        out.append((inner - outer, s * tau, (e + 1) * tau))
    return out


def nms(segments: np.ndarray, scores: np.ndarray, threshold: float = 0.55) -> list[int]:
    """Hard NMS of (N, 2) second-valued segments by (N,) scores with the '+1' IoU; returns kept indices.

    inter = max(0, min(e1, e2) - max(s1, s2) + 1), area = e - s + 1 (FTCL repo, utils/net_evaluation.py);
    a segment is dropped when its IoU with a kept one is >= threshold. Equal scores keep input order.
    """
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    start, end = segments[:, 0], segments[:, 1]
    area = end - start + 1
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        inter = np.maximum(0.0, np.minimum(end[i], end[rest]) - np.maximum(start[i], start[rest]) + 1)
        iou = inter / (area[i] + area[rest] - inter)
        order = rest[iou < threshold]
    return keep


def video_proposals(cas: np.ndarray, attention: np.ndarray, video_scores: np.ndarray, duration_or_length: float,
                    *, class_names: Sequence[str], unit: Literal["snippets", "seconds"] = "snippets",
                    cls_threshold: float = 0.25, scale: int = 20,
                    cas_thresholds: Sequence[float] = CAS_THRESHOLDS,
                    attention_thresholds: Sequence[float] = ATTENTION_THRESHOLDS,
                    outer_ratio: float = 0.2, nms_threshold: float = 0.55, attention_mix: float = 0.0,
                    video_score_weights: tuple[float, float] = (0.0, 0.0)) -> list[dict]:
    """Scored segments of one test video: ``[{"label", "score", "segment": [start_s, end_s]}, ...]``.

    ``cas`` (T_in, C[+1]) instance-CAS probabilities, ``attention`` (T_in,) instance attention (or (T_in, 3),
    channel 0 used), ``video_scores`` (C[+1],) instance-branch video probabilities; background columns past
    ``len(class_names)`` are ignored. ``duration_or_length`` is the video's full snippet count L_v (``unit=
    "snippets"``, the reference: one interpolated step = 0.64 L_v / (20 T_in) s) or its duration in seconds
    (``unit="seconds"``: step = duration / (20 T_in)). Times are not clipped to the duration, as in the reference.

    ``attention_mix`` a and ``video_score_weights`` (w_cas, w_att) give the ACM-Net repo's ActivityNet rules
    (main_act.py: a = 0.3, outer ratio 0.15, weights (0, 0.25)): the CAS pass scores on (1 - a) x thresholded CAS +
    a x attention, the attention pass on (1 - a) x CAS + a x thresholded attention, and a pass adds its weight x
    the class's video score to every proposal. The defaults (0, (0, 0)) are the FTCL repo's THUMOS14 rules above.
    """
    num_classes = len(class_names)
    cas = np.asarray(cas, dtype=np.float64)
    attention = np.asarray(attention, dtype=np.float64)
    if attention.ndim == 2:
        attention = attention[:, 0]
    video_scores = np.asarray(video_scores, dtype=np.float64).reshape(-1)[:num_classes]
    t_in = cas.shape[0]
    if cas.ndim != 2 or cas.shape[1] < num_classes or attention.shape != (t_in,) or video_scores.size < num_classes:
        raise ValueError(f"video_proposals: cas {cas.shape}, attention {attention.shape} and video_scores "
                         f"{video_scores.shape} do not fit (T_in, {num_classes}[+1]), (T_in,), ({num_classes}[+1],)")
    if unit == "snippets":
        tau = snippet_seconds() * duration_or_length / (scale * t_in)
    elif unit == "seconds":
        tau = duration_or_length / (scale * t_in)
    else:
        raise ValueError(f"unit {unit!r}: expected 'snippets' or 'seconds'")
    selected = np.nonzero(video_scores > cls_threshold)[0]  # strict '>' as the reference
    if selected.size == 0:
        selected = np.array([int(np.argmax(video_scores))])
    up_cas = upsample(cas[:, :num_classes], scale)
    up_att = upsample(attention, scale)
    pooled: dict[int, list[tuple[float, float, float]]] = {int(c): [] for c in selected}
    mix = float(attention_mix)
    w_cas, w_att = (float(w) for w in video_score_weights)

    def add(c: int, props: list[tuple[float, float, float]], weight: float) -> None:
        bonus = weight * float(video_scores[c])
        pooled[c] += [(score + bonus, start, end) for score, start, end in props] if bonus else props

    for thr in cas_thresholds:
        for c in selected:
            cut = np.where(up_cas[:, c] < thr, 0.0, up_cas[:, c])  # scored on the thresholded CAS
            source = cut if mix == 0.0 else (1 - mix) * cut + mix * up_att
            add(int(c), oic_proposals(cut, thr, source, tau, outer_ratio), w_cas)
    for thr in attention_thresholds:
        cut_att = np.where(up_att < thr, 0.0, up_att)
        for c in selected:  # same runs for every class, scored on the raw CAS
            source = up_cas[:, c] if mix == 0.0 else (1 - mix) * up_cas[:, c] + mix * cut_att
            add(int(c), oic_proposals(up_att, thr, source, tau, outer_ratio), w_att)
    results = []
    for c, props in pooled.items():
        if not props:
            continue
        arr = np.asarray(props)
        for i in nms(arr[:, 1:], arr[:, 0], nms_threshold):
            results.append({"label": class_names[c], "score": float(arr[i, 0]),
                            "segment": [float(arr[i, 1]), float(arr[i, 2])]})
    return results
