"""``actionray demo dclr``: DCLR against plain MoCo and a random encoder on a background-biased motion task.

The claim is DCLR's own motivation (Ding et al., ACM MM 2022): two clips of one video share the background but
differ in motion, so pulling them together (plain MoCo on two clips) teaches the background; DCLR's static
and dynamic contrasts (vs/sv against one frame repeated, vd/dv against frame differences, DCLR repo
main_view.py and moco/builder.py) push the encoder towards the motion. The task
(``actionray.synthetic.motion_videos``): the class is only a foreground disc's motion, and every video has its
own strong static background, so instance discrimination is solved from the background alone.

Arms, per seed (configs/demo_dclr_claim.yaml, Ray Train fits tracked in MLflow):
- ``DCLR``: the config as is;
- ``MoCo (vv only)``: the same pre-training with ``method.loss_weights=[1, 0, 0]`` and
  ``method.mine_positives=false`` (the ablation preset ``dclr_terms``'s vv-only cell);
- ``random encoder``: the same network, randomly initialised with the seed.
Each frozen encoder (eval mode) is probed linearly on the motion labels: pooled layer4 features of 4 uniformly
spaced 8-frame clips per video (full 32 px frames, ImageNet normalisation), a multinomial logistic regression
on the training videos' clips whose L2 weight is chosen per arm and seed on the validation videos, logits
averaged over a video's clips, top-1 on the held-out test videos.

Rule (fixed before any result was seen, ``claims.exceeds_by_larger_std``): DCLR's mean test top-1 exceeds both
other arms' means by more than the larger of the two arms' standard deviations.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actionray.demos.claims import Arm, ClaimResult

CLAIM = ("On videos whose class is only a foreground motion and whose strong static background identifies each "
         "video, DCLR pre-training (vv + static vs/sv + dynamic vd/dv contrasts) yields an encoder whose frozen "
         "features classify the motion better (linear probe, test top-1) than plain MoCo on two clips of a video "
         "(vv only) and than a random encoder")
DEFAULT_SEEDS = 3
PROBE_CLIPS = 4
PROBE_WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1)
# --tiny: a smoke-test size (tests/test_demo.py): 2 videos per class and split, 2 epochs, K = 16
TINY = ["data.train_list=demo_dclr_motion_tiny/train.txt", "data.val_list=demo_dclr_motion_tiny/val.txt",
        "method.queue_size=16", "data.batch_size=4", "train.epochs=2", "method.warmup_iters=1",
        "train.val_every=1", "train.log_every=50"]
TINY_COUNTS = {"train": 2, "val": 1, "test": 1}
MOCO = ["method.loss_weights=[1, 0, 0]", "method.mine_positives=false"]


def _log(message: str) -> None:
    print(f"[dclr] {message}", flush=True)


def run(args: argparse.Namespace) -> ClaimResult:
    """Generate the motion set (once), then per seed: pre-train DCLR and MoCo, probe them and a random encoder."""
    from actionray.config import load_config
    from actionray.demos.order import _config_dir
    from actionray.synthetic.motion_videos import generate_motion_set

    config_dir = _config_dir(args.configs)
    out = Path(args.out or "runs/demo_dclr").resolve()
    out.mkdir(parents=True, exist_ok=True)
    overrides = [*(TINY if args.tiny else []), *args.overrides]
    base = load_config(config_dir / "demo_dclr_claim.yaml", overrides)  # bad keys fail here, before any work
    data_dir = Path(base.data.train_list).parent
    if not (data_dir / "test.txt").is_file():
        start = time.perf_counter()
        # 64 px sources: decord2 3.4.0 fails on some tiny widths (32 and 48 px H.264: a frame-size mismatch)
        generate_motion_set(data_dir, videos_per_class=TINY_COUNTS if args.tiny else None, frames=32, size=64)
        _log(f"generated the motion set in {data_dir} in {time.perf_counter() - start:.1f}s")
    else:
        _log(f"using the motion set in {data_dir}")
    lists = {split: data_dir / f"{split}.txt" for split in ("train", "val", "test")}
    clips = {split: load_clips(path, base.method.clip_len, base.method.stride, base.method.crop_size)
             for split, path in lists.items()}
    _log("probe clips: " + ", ".join(f"{s} {c[0].shape[0]} videos" for s, c in clips.items()))

    seeds = list(range(args.seeds or DEFAULT_SEEDS))
    stamp, started = time.strftime("%Y%m%d-%H%M%S"), time.perf_counter()
    arms = {name: Arm(name, "linear-probe test top-1") for name in ("DCLR", "MoCo (vv only)", "random encoder")}
    for seed in seeds:
        for name, extra in (("DCLR", []), ("MoCo (vv only)", MOCO)):
            tag = "dclr" if name == "DCLR" else "moco"
            cfg = base.with_overrides([*extra, f"train.seed={seed}",
                                       f"train.run_name={base.name}-{tag}-s{seed}-{stamp}"])
            _log(f"seed {seed}: pre-training {name} ({cfg.train.epochs} epochs on Ray Train)")
            start = time.perf_counter()
            summary = fit_quietly(cfg)
            history = summary.get("history", [])
            encoder = pretrained_backbone(summary["latest_checkpoint"], cfg)
            probe = linear_probe(encoder, clips, seed)
            final = summary.get("final", {})
            arms[name].add(seed, probe["test_top1"], val_top1=probe["val_top1"], weight_decay=probe["weight_decay"],
                           pretrain_s=round(time.perf_counter() - start, 1),
                           train_acc_vv=[h.get("train_acc_vv") for h in history],
                           train_loss_vv=[h.get("train_loss_vv") for h in history],
                           train_loss_vs_sv=[h.get("train_loss_vs_sv") for h in history],
                           train_loss_vd_dv=[h.get("train_loss_vd_dv") for h in history],
                           val_acc_vv=final.get("val_acc_vv"), mlflow_run=summary.get("mlflow_run_id"))
            _log(f"seed {seed}: {name}: probe val {100 * probe['val_top1']:.1f}% test {100 * probe['test_top1']:.1f}% "
                 f"(weight decay {probe['weight_decay']:g}); pre-training vv accuracy "
                 f"{100 * (history[-1].get('train_acc_vv') or 0) if history else float('nan'):.1f}% "
                 f"in {time.perf_counter() - start:.0f}s")
        torch.manual_seed(seed)
        from actionray.models.r2plus1d import R2Plus1D

        probe = linear_probe(R2Plus1D(base.method.layers, base.method.backbone_width), clips, seed)
        arms["random encoder"].add(seed, probe["test_top1"], val_top1=probe["val_top1"],
                                   weight_decay=probe["weight_decay"])
        _log(f"seed {seed}: random encoder: probe val {100 * probe['val_top1']:.1f}% "
             f"test {100 * probe['test_top1']:.1f}%")
        if args.json and seed != seeds[-1]:  # a stopped run keeps the seeds it finished
            partial = ClaimResult.decide("dclr", CLAIM, list(arms.values()), "DCLR", complete=False,
                                         wall_s=time.perf_counter() - started)
            partial.write(args.json)
    settings = {"config": str(config_dir / "demo_dclr_claim.yaml"), "overrides": overrides, "seeds": seeds,
                "data": str(data_dir), "probe": {"clips_per_video": PROBE_CLIPS,
                                                 "weight_decays": list(PROBE_WEIGHT_DECAYS),
                                                 "selection": "val top-1", "reported": "test top-1"},
                "chance": 1.0 / base.data.num_classes}
    return ClaimResult.decide("dclr", CLAIM, list(arms.values()), "DCLR", settings=settings)


def fit_quietly(cfg) -> dict[str, Any]:
    """``platform.train.fit`` (the demo's pre-training runs are ordinary tracked runs)."""
    from actionray.platform.train import fit

    return fit(cfg)


# --- the linear probe ---------------------------------------------------------------------------------------

def load_clips(list_file: Path, clip_len: int, stride: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every video of a TSN list -> (clips (V, PROBE_CLIPS, 3, T, size, size) normalised float, labels (V,)):
    whole frames resized to ``size`` (area), as the pre-training crops see them at scale 1."""
    from actionray.platform.data.annotations import read_list
    from actionray.platform.data.decode import open_video
    from actionray.platform.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    videos, labels = [], []
    for record in read_list(str(list_file)):
        with open_video(record.path) as reader:
            n = len(reader)
            window = clip_len * stride
            starts = np.linspace(0, max(0, n - window), PROBE_CLIPS).round().astype(int)
            index = np.concatenate([s + np.arange(0, window, stride) for s in starts]).clip(0, n - 1)
            frames = torch.from_numpy(reader.get(index))  # (PROBE_CLIPS * T, H, W, 3) uint8
        frames = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2).float(), size=(size, size),
                                                 mode="area")  # (PROBE_CLIPS * T, 3, size, size)
        clip = frames.view(PROBE_CLIPS, clip_len, 3, size, size).transpose(1, 2)
        videos.append((clip - mean) / std)
        labels.append(record.label)
    return torch.stack(videos), torch.tensor(labels)


def pretrained_backbone(checkpoint: str, cfg) -> torch.nn.Module:
    """The query encoder's R(2+1)D backbone of a DCLR pre-training checkpoint."""
    from actionray.models.dclr import backbone_state_from_pretraining
    from actionray.models.r2plus1d import R2Plus1D
    from actionray.platform.checkpoint import model_state_from_checkpoint

    backbone = R2Plus1D(cfg.method.layers, cfg.method.backbone_width)
    state = model_state_from_checkpoint(checkpoint)
    backbone.load_state_dict(backbone_state_from_pretraining(state, backbone.layers))
    return backbone


@torch.no_grad()
def features(backbone: torch.nn.Module, clips: torch.Tensor) -> torch.Tensor:
    """(V, N, 3, T, H, W) -> pooled layer4 features (V, N, C) of the frozen backbone in eval mode."""
    backbone.eval()
    flat = clips.flatten(0, 1)
    pooled = torch.cat([backbone(chunk).mean(dim=(2, 3, 4)) for chunk in flat.split(64)])
    return pooled.view(*clips.shape[:2], -1)


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, weight_decay: float, seed: int) -> torch.nn.Linear:
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y) + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head


def linear_probe(backbone: torch.nn.Module, clips: dict[str, tuple[torch.Tensor, torch.Tensor]], seed: int
                 ) -> dict[str, float]:
    """Logistic regression on the train clips' standardised features; L2 weight chosen on val top-1."""
    feats = {split: features(backbone, c) for split, (c, _) in clips.items()}
    train = feats["train"].flatten(0, 1)
    mean, std = train.mean(0), train.std(0) + 1e-6
    labels = {split: y for split, (_, y) in clips.items()}
    classes = int(max(int(y.max()) for y in labels.values())) + 1
    x = (train - mean) / std
    y = labels["train"].repeat_interleave(clips["train"][0].shape[1])

    def top1(head: torch.nn.Linear, split: str) -> float:
        with torch.no_grad():
            logits = head((feats[split] - mean) / std).mean(dim=1)  # average over a video's clips
        return float((logits.argmax(1) == labels[split]).float().mean())

    best = None
    for wd in PROBE_WEIGHT_DECAYS:
        head = _fit_logistic(x, y, classes, wd, seed)
        val = top1(head, "val")
        if best is None or val > best[0]:
            best = (val, wd, head)
    val, wd, head = best
    return {"val_top1": val, "test_top1": top1(head, "test"), "weight_decay": wd}
