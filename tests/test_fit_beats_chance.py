"""Every method learns through the whole platform: one short ``fit`` beats chance (issue #11).

The clip classifiers are below; DCLR pre-training (no labels) at the end of this module; FTCL and ACM-Net in
``tests/test_ftcl_method.py`` (``test_a_short_fit_beats_the_untrained_model_on_test_map``).

``tests/test_methods_learn.py`` overfits a fixed batch with each method's own training step (no Ray). Here each
of TSN, TDN, GCNet (with CCL) and TCPNet runs a real ``actionray.platform.train.fit``: Ray Train worker, Ray Data
decoding the mp4 files with decord, sampling, augmentation, normalisation, the training loop, validation on the
held-out videos and MLflow on a temporary SQLite store. Nothing is mocked, so labels that drift from their
clips, a pipeline that feeds the wrong frames, a loop that never steps or a validation that scores the wrong
model all keep val top-1 at chance and fail the test.

Why these data and this recipe (an earlier attempt on the built-in demo classes stayed at chance at CI size):
the demo classes are hard on purpose (temporal-order pairs, textures on random backgrounds), and 6 epochs of
TSN on 24 such videos were not enough. The videos below are easy instead: 4 classes told apart by colour, the
class colour filling the background with a brightness field that varies over the frame, and a disc of a random
colour moving in a random direction as a distractor. The brightness field matters for TCPNet: its covariance
pooling centres the features, so a flat class colour (a mean) reaches its classifier only weakly, while the
field puts the class colour into the covariance. Recipe: ResNet-18 from scratch at the smallest sizes the
models take (TDN and GCNet need 64 px, TSN and TCPNet run at 32 px), 2 segments, one epoch of 192 training
videos (24 steps of 8 clips; one epoch because every epoch adds a validation pass, a checkpoint and a report),
AdamW lr 1e-3 with a cosine decay to ~0 (the decay also lets BatchNorm's running statistics settle before
validation). Tried and rejected: SGD at lr 0.01 reaches the threshold for TSN, TDN and GCNet but leaves TCPNet,
whose covariance head starts slowly, at 0.3-0.4; 16 steps instead of 24 leave TCPNet at 0.72 for one of three
seeds. Measured with this recipe outside Ray (the method's own steps on the same clips) for torch seeds 0-6:
val top-1 0.88-1.0 for every method; through ``fit`` (seed 0): TSN, TDN and GCNet 1.0, TCPNet 0.94.

The margin: 32 validation videos, 8 per class, so a model that ignores its input (a constant prediction) scores
exactly 0.25, guessing at random reaches the 0.75 threshold (24 of 32) with probability 4e-9, and each method's
untrained network, seeded as the fit's worker seeds it, stays under the threshold on the same clips
(0.09-0.25; ``test_a_model_that_has_not_learned_stays_under_the_threshold``): only learning passes. The fits are
deterministic (``train.deterministic``, one worker, fixed seed), so the test is not flaky.

Cost: one Ray Train run is ~25-30 s of wall time on 2 idle cores, of which the 24 training steps are 4-6 s; the
rest is the run's own processes (train controller, worker, dataset manager, monitors, decode workers: ~30 CPU-s
per run) and its start and end, which the test cannot shorten.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from actionray.config import build_config

NUM_CLASSES = 4
TRAIN_PER_CLASS = 48  # one epoch = 192 clips = 24 steps of 8
VAL_PER_CLASS = 8  # 32 validation videos
FRAMES, SIZE = 16, 64  # 64x64 px videos of 16 frames (TDN/GCNet: 2 segments x 5 frames)
THRESHOLD = 0.75  # 3x chance (0.25)
# The class colours (RGB); the background is colour x a brightness field in 0.35..1 (8x8 px blocks).
COLOURS = ((220, 40, 40), (40, 190, 40), (40, 60, 220), (220, 200, 30))

# method section, frames per segment, input size (TDN/GCNet's long-term module needs 64 px, see test_methods_learn)
METHODS = {
    "tsn": ({"name": "tsn"}, 1, 32),
    "tdn": ({"name": "tdn"}, 5, 64),
    "gcnet_ccl": ({"name": "gcnet", "ccl": {"enabled": True, "weight": 0.1}}, 5, 64),
    "tcp": ({"name": "tcp", "tcp_reduced_dim": 16}, 1, 32),
}


def render(label: int, index: int, seed: int = 0) -> np.ndarray:
    """One video of class ``label``: uint8 (FRAMES, SIZE, SIZE, 3)."""
    rng = np.random.default_rng([seed, label, index])
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    field = rng.uniform(0.35, 1.0, size=(SIZE // 8, SIZE // 8, 1)).repeat(8, axis=0).repeat(8, axis=1)
    background = np.asarray(COLOURS[label], np.float32) * field.astype(np.float32)
    colour = rng.uniform(0, 255, size=3).astype(np.float32)  # the distractor carries no label
    r = rng.uniform(0.15, 0.25) * SIZE
    cy, cx = rng.uniform(r, SIZE - r, size=2)
    vy, vx = rng.uniform(-1.0, 1.0, size=2)
    video = np.empty((FRAMES, SIZE, SIZE, 3), np.uint8)
    for t in range(FRAMES):
        disc = np.clip(r - np.sqrt((yy - cy - vy * t) ** 2 + (xx - cx - vx * t) ** 2) + 0.5, 0.0, 1.0)[..., None]
        frame = background * (1.0 - disc) + colour * disc + rng.normal(0.0, 3.0, size=(SIZE, SIZE, 1))
        video[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return video


@pytest.fixture(scope="module")
def colour_videos(tmp_path_factory) -> Path:
    """The easy set as H.264 mp4 files (the project's writer) with TSN list files; returns its folder."""
    from actionray.synthetic.videos import write_mp4

    root = tmp_path_factory.mktemp("colour_videos")
    train, val = [], []
    for label in range(NUM_CLASSES):
        for i in range(TRAIN_PER_CLASS + VAL_PER_CLASS):
            rel = f"videos/c{label}_{i:03d}.mp4"
            write_mp4(root / rel, render(label, i))
            (train if i < TRAIN_PER_CLASS else val).append(f"{rel} {FRAMES} {label}")
    (root / "train.txt").write_text("\n".join(train) + "\n")
    (root / "val.txt").write_text("\n".join(val) + "\n")
    return root


def fit_config(key: str, data: Path, workdir: Path):
    """The method at its smallest size: ResNet-18 from scratch, 2 segments, 1 epoch, AdamW + cosine."""
    method, frames_per_segment, size = METHODS[key]
    return build_config({
        "name": f"beats-chance-{key}",
        "method": {**method, "backbone": "resnet18", "dropout": 0.0, "fc_init_std": 0.01},
        "data": {"train_list": str(data / "train.txt"), "val_list": str(data / "val.txt"),
                 "num_classes": NUM_CLASSES, "num_segments": 2, "frames_per_segment": frames_per_segment,
                 "input_size": size, "scale_size": size, "batch_size": 8, "decode_tasks": 2,
                 "decode_batch_size": 2, "flip": False},
        "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0},
        "schedule": {"name": "cosine", "eta_min": 1e-6},
        "train": {"epochs": 1, "seed": 0, "deterministic": True, "log_every": 24,
                  "run_name": f"beats-chance-{key}", "storage_path": str(workdir / "runs")},
        "scaling": {"num_workers": 1, "max_failures": 0, "torch_threads": 0},
        "tracking": {"uri": f"sqlite:///{workdir / 'mlflow.db'}", "artifact_location": str(workdir / "mlartifacts")},
    })


def test_the_threshold_is_out_of_reach_of_chance():
    """A constant prediction scores 1/4 on the balanced validation set; random guessing passes with p < 1e-8."""
    n, k = NUM_CLASSES * VAL_PER_CLASS, math.ceil(THRESHOLD * NUM_CLASSES * VAL_PER_CLASS)
    p = 1 / NUM_CLASSES
    tail = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
    assert VAL_PER_CLASS / n < THRESHOLD and tail < 1e-8, tail


@pytest.mark.parametrize("key", list(METHODS))
def test_a_model_that_has_not_learned_stays_under_the_threshold(key, colour_videos, tmp_path):
    """The untrained network, seeded as the fit's worker seeds it, scored on the clips the fit validates on
    (1 clip, centre crop, decoded with the project's decord reader): below the threshold, so the data do not
    let an untrained network pass and the fits below must learn."""
    import torch

    from actionray.platform.data.annotations import read_list
    from actionray.platform.data.decode import VideoClipReader
    from actionray.platform.data.sampling import SamplingSpec, sample_clip
    from actionray.platform.data.transforms import build_clip_transform, normalize
    from actionray.platform.loop import seed_everything

    cfg = fit_config(key, colour_videos, tmp_path)
    seed_everything(cfg.train.seed, 0)
    model = cfg.recipe.build_model(cfg).eval()
    spec, transform = SamplingSpec.from_config(cfg.data), build_clip_transform(cfg.data, "val")
    clips, labels = [], []
    for index, record in enumerate(read_list(cfg.data.val_list, root=cfg.data.root)):
        with VideoClipReader(record.path) as reader:
            frames = reader.get(sample_clip(spec, record.num_frames, "val", cfg.train.seed, 0, index))
        clips.append(transform(frames)[0])
        labels.append(record.label)
    with torch.no_grad():
        scores = model(normalize(torch.from_numpy(np.stack(clips))))
    top1 = float((scores.argmax(1) == torch.tensor(labels)).float().mean())
    assert len(labels) == NUM_CLASSES * VAL_PER_CLASS
    assert top1 < THRESHOLD, top1


@pytest.fixture(scope="module")
def fit_workdir(tmp_path_factory) -> Path:
    """One folder for the four fits: one MLflow store (creating a SQLite store costs ~1.5 s) and run storage."""
    return tmp_path_factory.mktemp("fits")


@pytest.mark.slow
@pytest.mark.parametrize("key", list(METHODS))
def test_one_short_fit_beats_chance(key, ray_local, colour_videos, fit_workdir):
    from actionray.platform.train import fit

    summary = fit(fit_config(key, colour_videos, fit_workdir))
    final = summary["final"]
    assert final["epoch"] == 1
    assert final["val_top1"] >= THRESHOLD, (f"{key}: val top-1 {final['val_top1']:.3f} (chance "
                                            f"{1 / NUM_CLASSES:.2f}); train loss {final['train_loss']:.3f}")


# --- DCLR pre-training: no labels, so no accuracy to beat; its held-out loss must beat chance and a control --

DCLR_K = NUM_CLASSES * TRAIN_PER_CLASS  # 192: the warm-up epoch fills the queue exactly once
DCLR_STEPS_PER_EPOCH = DCLR_K // 8
DCLR_TOPK = 1


def dclr_fit_config(data: Path, workdir: Path):
    """DCLR at its smallest size on the same videos: epoch 1 all warm-up (the control), then 3 training epochs."""
    return build_config({
        "name": "beats-chance-dclr",
        "method": {"name": "dclr", "queue_size": DCLR_K, "topk": DCLR_TOPK, "clip_len": 4, "stride": 2,
                   "crop_size": 16, "temperature": 0.1, "momentum": 0.99, "warmup_iters": DCLR_STEPS_PER_EPOCH},
        "data": {"train_list": str(data / "train.txt"), "val_list": str(data / "val.txt"),
                 "num_classes": NUM_CLASSES, "input_size": 16, "scale_size": 18, "batch_size": 8, "decode_tasks": 2,
                 "decode_batch_size": 4},
        "optim": {"lr": 0.05, "weight_decay": 1e-4, "clip_grad_norm": 1.0},
        "schedule": {"name": "constant"},
        "train": {"epochs": 4, "seed": 0, "deterministic": True, "log_every": DCLR_STEPS_PER_EPOCH,
                  "run_name": "beats-chance-dclr", "storage_path": str(workdir / "runs"), "keep_checkpoints": 1},
        "scaling": {"num_workers": 1, "max_failures": 0, "torch_threads": 0},
        "tracking": {"uri": f"sqlite:///{workdir / 'mlflow.db'}", "artifact_location": str(workdir / "mlartifacts")},
    })


@pytest.mark.slow
def test_a_short_dclr_pretraining_beats_chance_and_its_own_untrained_encoder_on_held_out_videos(
        ray_local, colour_videos, fit_workdir):
    """DCLR's validation loss (the five NCE terms on the 32 held-out videos, fixed views, the run's queue) after
    3 epochs (72 steps) of pre-training through ``fit``, against two references:

    - chance: logits that do not depend on the input (a collapsed encoder, a constant embedding) give each term
      ``log((K + 1) / (topk + 1))``, 5 x log(193 / 2) = 22.85 here;
    - the control, measured by the same run: epoch 1 is all warm-up (``warmup_iters`` = its 24 steps), which
      fills the queue with the keys of every training video but leaves the query encoder untrained (tested in
      ``test_dclr_method.py``), so epoch 1's validation scores the untrained network with a full queue.

    Measured through ``fit`` (seed 0, 5 epochs): val_loss per epoch 22.9 (the control), 21.5, 17.2, 16.3, 14.3; outside
    Ray (``train_step`` on the same views) 23.3, then 16.4 after 72 steps and 14.5 after 96. Every epoch costs a
    validation, a checkpoint (two 14M-parameter encoders) and a report, so the test stops at 4. Per term, the
    untrained network with a full queue scores the views of one video about as chance does (vv 4.52 against 4.57)
    and its cross-view terms worse than chance (9.3 and 9.1 against 9.14: different random heads); the trained
    encoder is below chance in every term (after 5 epochs 2.7, 5.9, 5.7; after 4 3.2, 6.6, 6.6), and its vv accuracy
    after 5 epochs is 0.16 (control 0.03, chance 1/193). Why these settings: the released lr and momentum (0.01,
    0.999) move the key encoder too little in 100 steps; without the warm-up, the first steps against the random
    queue collapse the embedding (every logit equal, the loss stuck at chance); gradient clipping at 1 keeps the
    first updates (gradient norm ~100) from doing the same.
    """
    from actionray.platform.train import fit

    summary = fit(dclr_fit_config(colour_videos, fit_workdir))
    history = summary["history"]
    chance = 5 * math.log((DCLR_K + 1) / (DCLR_TOPK + 1))
    control, final = history[0], history[-1]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert control["train_warmup"] == 1.0  # every step of epoch 1 (the epoch mean of a 0/1 flag)
    assert final["train_warmup"] == 0.0 and final["train_queue_fill"] == 1.0
    assert final["val_loss"] < min(chance, control["val_loss"]) - 4.0, (
        f"val loss {final['val_loss']:.2f}; control {control['val_loss']:.2f}, chance {chance:.2f}; "
        f"history {[round(h['val_loss'], 2) for h in history]}")
    for term in ("val_loss_vv", "val_loss_vs_sv", "val_loss_vd_dv"):
        per_term = 1 if term == "val_loss_vv" else 2
        assert final[term] < per_term * chance / 5, (term, final[term])
