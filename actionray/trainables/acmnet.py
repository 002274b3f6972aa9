"""ACM-Net on snippet features (weakly-supervised temporal action localization), stage 1 of the FTCL recipe.

Recipe (FTCL repo, main_thu.py, config/model_config.py; docs/models.md): features (B, 750, 2048)
"random"-sampled per epoch, video-level multi-hot labels, Adam lr 1e-4 with coupled L2 weight decay 5e-5
(``optim.name: adam``), batch 16, no schedule, no gradient clipping. Loss (``method.loss``):
- ``clean`` (default): ACM-Net's own loss, branch classification + 2e-3 guide + 5e-5 feature norm (margin 50) +
  2e-4 sparsity. Default because it is ACM-Net as published: the FTCL stage and its "+FSD / +LCS" ablation then
  start from a baseline that has no pair terms (docs/models.md).
- ``repository``: the FTCL repo's baseline criterion ``ACMLoss`` (utils/net_utils.py), which adds in-batch
  0.1 LCS' + 0.8 FSD' terms; what the README's baseline command trains.

Validation and test (``wtal_inference.video_proposals``, ``platform.detection``): per video, uniform sampling,
proposals from the instance CAS and attention, per-class NMS, then detection mAP at tIoU 0.1..0.9 and the average
over 0.1-0.7 (``val_map_avg``, the primary metric, max). ``method.selection`` says on which videos: "holdout"
(default, clean: a seeded split of the training videos) or "test" (the reference's best-test-mAP protocol,
optimistic); it is logged as the ``method.selection`` param and in ``val_detection.json``.

NaN losses: the FTCL repo skips the optimizer step of a batch whose loss is NaN. Here the platform's loop fails
the run with its "loss is nan" error instead: the step has already been applied when the loop sees the loss, and
under DDP one worker skipping would desynchronise the gradient all-reduce. A run that needs it can lower the lr.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
import random
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Iterable, Literal

import numpy as np
import torch
from pydantic import Field

from actionray.platform.config import ConfigError, ExperimentConfig, MethodConfig, Section
from actionray.platform.method import Batch, Evaluation, MetricSpec, StepOutput

__all__ = ["SynthFeaturesConfig", "WTALConfig", "ACMNetConfig", "WTALMethod", "ACMNetMethod", "THRESHOLD_NAMES",
           "threshold_names", "prepare_features", "METHOD"]

THRESHOLD_NAMES = tuple(f"{t:.1f}" for t in np.arange(0.1, 1.0, 0.1))  # detection tIoU 0.1 .. 0.9 (THUMOS)


def threshold_names(thresholds: Iterable[float]) -> tuple[str, ...]:
    """Metric-name suffixes of tIoU thresholds: 0.1 -> "0.1", 0.55 -> "0.55" (``val_map_0.55``)."""
    return tuple(f"{round(float(t), 2):g}" for t in thresholds)


class SynthFeaturesConfig(Section):
    """A generated feature set written to ``method.feature_root`` when its gt.json is missing (demo configs);
    ``actionray.synthetic.features.write_synthetic_feature_set`` options, width = ``method.feature_dim``."""

    num_classes: int = Field(4, ge=2)
    train_videos: int = Field(32, ge=4)
    test_videos: int = Field(16, ge=2)
    min_snippets: int = Field(80, ge=3)
    max_snippets: int = Field(240, ge=3)
    instance_snippets: tuple[int, int] = (6, 20)
    instances: tuple[int, int] = (2, 4)  # instances per class per video
    noise: float = Field(0.5, ge=0.0)
    multi_label_fraction: float = Field(0.3, ge=0.0, le=1.0)
    seed: int = 0
    # Ordered sub-phases (0 = one prototype per class; ``synthetic.features`` module docstring).
    phases: int = Field(0, ge=0)
    phases_per_class: tuple[int, int] = (2, 4)
    class_signal: float = Field(0.5, ge=0.0)
    decoys: float = Field(0.0, ge=0.0, le=1.0)  # chance of a wrong-order hard negative next to an instance
    decoy_snippets: tuple[int, int] = (4, 12)


class WTALConfig(MethodConfig):
    """What ACM-Net and FTCL share: the feature set, sampling, validation protocol, network and ACM loss weights."""

    feature_root: str = "data/thumos14_features"  # ACM-Net release layout (platform/data/features.py)
    feature_dim: int = Field(2048, ge=2)
    num_segments: int = Field(750, ge=2)  # training length T (``sample_segments_num``)
    resample: Literal["epoch", "frozen"] = "epoch"  # per-epoch re-draw, or drawn once (FTCL pair dataset)
    selection: Literal["holdout", "test"] = "holdout"  # validation videos (module docstring)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)  # holdout only
    split_seed: int = 0
    dropout: float = Field(0.7, ge=0.0, lt=1.0)
    inst_topk_div: int = Field(8, ge=1)
    cont_topk_div: int = Field(3, ge=1)
    back_topk_div: int = Field(3, ge=1)
    fc_dim: int = Field(1024, ge=2)  # feature_trans width, split in two halves by FSD
    guide_weight: float = Field(2e-3, ge=0.0)
    feat_weight: float = Field(5e-5, ge=0.0)
    sparse_weight: float = Field(2e-4, ge=0.0)
    lcs_weight: float = Field(0.1, ge=0.0)
    fsd_weight: float = Field(0.8, ge=0.0)
    gamma: float = Field(0.1, ge=0.0)  # smooth-max temperature of FSD
    lcs_threshold: float = 0.92
    cls_threshold: float = Field(0.25, ge=0.0, le=1.0)  # classes proposed per test video
    nms_threshold: float = Field(0.55, gt=0.0, le=1.0)
    # Proposal rules (trainables/wtal_inference.py): the defaults are the FTCL repo's THUMOS14 ones (test_thu.py);
    # the ActivityNet recipes set the ACM-Net repo's main_act.py values (thresholds 0.005-0.02 on both passes,
    # outer ratio 0.15, attention mix 0.3, video-score weights 0 / 0.25).
    cas_thresholds: list[float] = Field(default_factory=lambda: [float(t) for t in np.arange(0.15, 0.25, 0.05)],
                                        min_length=1)
    attention_thresholds: list[float] = Field(
        default_factory=lambda: [float(t) for t in np.arange(0.15, 1.0, 0.05)], min_length=1)
    outer_ratio: float = Field(0.2, ge=0.0)
    attention_mix: float = Field(0.0, ge=0.0, le=1.0)
    video_score_weights: tuple[float, float] = (0.0, 0.0)  # added x video score: (CAS pass, attention pass)
    # ActivityNet network and loss of the ACM-Net repo: dropout also before the embedding and the attention branch
    # (model/ACMNet.py), instance-branch classification loss x5 (utils/net_utils.py); THUMOS: off and 1.0.
    input_dropout: bool = False
    inst_loss_weight: float = Field(1.0, ge=0.0)
    # Detection mAP thresholds and the headline average: THUMOS14 (default) is np.arange(0.1, 1.0, 0.1) with the
    # average over 0.1-0.7 (FTCL repo, main_thu.py / utils/net_evaluation.py); ActivityNet is 0.5:0.05:0.95 with
    # the average over all ten (ACM-Net repo, config/model_config.py "ActivityNet" tiou_thresholds).
    tiou_thresholds: list[float] = Field(default_factory=lambda: [float(t) for t in np.arange(0.1, 1.0, 0.1)],
                                         min_length=1)
    average_up_to: float | None = Field(0.7, gt=0.0, le=1.0)  # None = the mean over every threshold
    reference_checkpoint: str | None = None  # an FTCL-repo checkpoint {'epoch', 'model_state_dict'} for eval
    synth_features: SynthFeaturesConfig | None = None
    path_fields: ClassVar[tuple[str, ...]] = ("feature_root", "reference_checkpoint")


class ACMNetConfig(WTALConfig):
    """ACM-Net: the shared options plus the loss variant."""

    name: Literal["acmnet"] = "acmnet"
    loss: Literal["clean", "repository"] = "clean"


def prepare_features(cfg: ExperimentConfig) -> None:
    """Write the generated feature set of ``method.synth_features`` when ``method.feature_root`` has no gt.json,
    or (ordered-phase sets, which record their settings in gt.json) when it was written with other settings."""
    synth = getattr(cfg.method, "synth_features", None)
    gt_path = Path(cfg.method.feature_root) / "gt.json"
    if synth is None:
        return
    options = dict(num_classes=synth.num_classes, train_videos=synth.train_videos, test_videos=synth.test_videos,
                   feature_dim=cfg.method.feature_dim, min_snippets=synth.min_snippets,
                   max_snippets=synth.max_snippets, instances=tuple(synth.instances),
                   instance_snippets=tuple(synth.instance_snippets), noise=synth.noise,
                   multi_label_fraction=synth.multi_label_fraction, seed=synth.seed, phases=synth.phases,
                   phases_per_class=tuple(synth.phases_per_class), class_signal=synth.class_signal,
                   decoys=synth.decoys, decoy_snippets=tuple(synth.decoy_snippets))
    if gt_path.is_file():
        stored = json.loads(gt_path.read_text()).get("synthetic")
        wanted = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
        if stored is None or all(stored.get(k) == v for k, v in wanted.items()):
            return  # written by these settings (or a set without recorded settings: kept as it is)
    from actionray.synthetic.features import write_synthetic_feature_set

    write_synthetic_feature_set(cfg.method.feature_root, **options)


@lru_cache(maxsize=8)
def _gt(root: str) -> dict:
    return json.loads((Path(root) / "gt.json").read_text())


def _proposals(model, features: torch.Tensor, length: int) -> list[dict]:
    """One video (1, T_in, D) -> its scored segments (``wtal_inference.video_proposals``)."""
    from actionray.trainables.wtal_inference import video_proposals

    out = model(features)
    opts = model.proposal_options
    return video_proposals(out.inst_cas[0].float().cpu().numpy(), out.attention[0].float().cpu().numpy(),
                           out.inst_scores[0].float().cpu().numpy(), float(length), class_names=opts["classes"],
                           cls_threshold=opts["cls_threshold"], nms_threshold=opts["nms_threshold"],
                           **{k: opts[k] for k in ("cas_thresholds", "attention_thresholds", "outer_ratio",
                                                   "attention_mix", "video_score_weights") if k in opts})


def touch_outputs(out) -> torch.Tensor:
    """0 x every output a loss may leave out (FSD's feature_trans when FSD is off): DDP without unused-parameter
    search needs a gradient (here exactly 0) for every parameter in every step."""
    return 0.0 * (out.fsd_act.sum() + out.fsd_bak.sum() + out.lcs_candidates.sum())


class WTALMethod(ABC):
    """The shared contract of the two stages; a subclass supplies ``loss_terms`` and ``train_step``."""

    find_unused_parameters = False  # every parameter gets a gradient (``touch_outputs``)
    config_class: type[WTALConfig] = WTALConfig

    def __init__(self, name: str, config_class: type[WTALConfig]) -> None:
        self.name, self.config_class = name, config_class

    def prepare_inputs(self, cfg: ExperimentConfig) -> None:
        """The generated feature set of the demo configs (``prepare_features``)."""
        prepare_features(cfg)

    def check_inputs(self, cfg: ExperimentConfig) -> None:
        """Before Ray starts: ``method.feature_root`` holds a feature set whose files all pass ``data check``
        (missing, truncated, wrong-shape or NaN arrays; skipped when the same files passed before)."""
        root = cfg.method.feature_root
        if "://" not in str(root) and not (Path(root) / "gt.json").is_file():
            raise ConfigError(f"method.feature_root: {root}: no gt.json there (a feature set in the ACM-Net release "
                              f"layout: features/, gt.json, split lists; `actionray data synth-features` writes one)")
        if "://" in str(root):
            return
        from actionray.platform.data.features import check_feature_set_once

        problems = check_feature_set_once(root, cfg.method.feature_dim)
        if problems:
            shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            raise ConfigError(f"method.feature_root: {len(problems)} problem(s) in the feature set: {shown} "
                              f"(`actionray data check {root} --feature-dim {cfg.method.feature_dim}` lists them)")
        from actionray.platform.data.feature_source import feature_splits

        feature_splits(cfg)  # the class count, the held-out split and FTCL's pairs, before MLflow and Ray start

    # -- what the method reports ------------------------------------------------------------------------------
    @abstractmethod
    def loss_terms(self, cfg: ExperimentConfig) -> tuple[str, ...]:
        """Defined by ACM-Net and FTCL."""

    def metrics(self, cfg: ExperimentConfig) -> MetricSpec:
        """val_map_avg (mAP averaged over tIoU 0.1-0.7, max) selects checkpoints; mAP per tIoU 0.1 .. 0.9."""
        names = threshold_names(cfg.method.tiou_thresholds)
        maps = tuple(f"val_map_{t}" for t in names)
        reported = ("train_loss", *(f"train_{t}" for t in self.loss_terms(cfg)), "val_map_avg", *maps)
        shown = "val_map_0.5" if "0.5" in names else maps[0]
        return MetricSpec(primary="val_map_avg", mode="max", reported=reported,
                          progress=("val_map_avg", shown), percent=frozenset(("val_map_avg", *maps)))

    # -- model, data, optimizer ---------------------------------------------------------------------------------
    def build_model(self, cfg: ExperimentConfig) -> torch.nn.Module:
        """ACM-Net at ``method.feature_dim`` x ``data.num_classes``; ``proposal_options`` (class names and
        thresholds) rides on the model so ``score_batch``, which gets no config, can build proposals."""
        from actionray.models.acmnet import build_acmnet
        from actionray.platform.data.features import feature_set_classes

        m = cfg.method
        model = build_acmnet(m.feature_dim, cfg.data.num_classes, dropout=m.dropout, inst_topk_div=m.inst_topk_div,
                             cont_topk_div=m.cont_topk_div, back_topk_div=m.back_topk_div, fc_dim=m.fc_dim,
                             input_dropout=m.input_dropout)
        model.proposal_options = {"classes": feature_set_classes(_gt(str(m.feature_root))),
                                  "cls_threshold": m.cls_threshold, "nms_threshold": m.nms_threshold,
                                  "cas_thresholds": tuple(m.cas_thresholds),
                                  "attention_thresholds": tuple(m.attention_thresholds),
                                  "outer_ratio": m.outer_ratio, "attention_mix": m.attention_mix,
                                  "video_score_weights": tuple(m.video_score_weights)}
        return model

    def data(self, cfg: ExperimentConfig):
        """Snippet features (``platform.data.feature_source.FeatureSource``)."""
        from actionray.platform.data.feature_source import FeatureSource

        return FeatureSource(cfg)

    @abstractmethod
    def uses_fsd(self, cfg: ExperimentConfig) -> bool:
        """Defined by ACM-Net and FTCL."""

    def param_groups(self, model: torch.nn.Module, cfg: ExperimentConfig) -> list[dict[str, Any]]:
        """One group (the reference's Adam over all parameters); when no FSD term is trained, ``feature_trans``
        sits in a group without weight decay so its exactly-zero gradient leaves it untouched, as the reference's
        Adam skips parameters without a gradient."""
        params = [p for p in model.parameters() if p.requires_grad]
        if self.uses_fsd(cfg):
            return [{"params": params, "name": "all"}]
        frozen = {id(p) for p in model.feature_trans.parameters()}
        return [{"params": [p for p in params if id(p) not in frozen], "name": "all"},
                {"params": [p for p in params if id(p) in frozen], "name": "feature_trans", "weight_decay": 0.0}]

    def acm_weights(self, cfg: ExperimentConfig) -> dict[str, float]:
        m = cfg.method
        return {"inst": m.inst_loss_weight, "guide": m.guide_weight, "feat": m.feat_weight, "sparse": m.sparse_weight}

    @abstractmethod
    def train_step(self, model: torch.nn.Module, batch: Batch, cfg: ExperimentConfig) -> StepOutput:
        """Defined by ACM-Net and FTCL."""

    # -- validation and test ------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, model: torch.nn.Module, batches: Iterable[Batch], cfg: ExperimentConfig) -> Evaluation:
        """Proposals on every validation video, detection mAP against their ground truth (``method.selection``)."""
        from actionray.platform.data.feature_source import feature_splits
        from actionray.platform.detection import evaluate_detection, format_detection_table

        model.eval()
        fs = feature_splits(cfg).val_set
        results: dict[str, list[dict]] = {}
        for batch in batches:
            video = fs.videos[int(batch["index"][0])]
            results[video] = _proposals(model, batch["features"], int(batch["length"][0]))
        if not results:
            raise RuntimeError(f"validation produced no videos (feature set {cfg.method.feature_root})")
        # Ground truth of exactly these videos under one subset name. Classes that no validation video contains
        # have no AP to add to; their predictions are dropped (the evaluator refuses labels absent from its GT).
        gt = {"database": {v: {**fs.gt["database"][v], "subset": "validation-run"} for v in results}}
        present = {a["label"] for v in results for a in gt["database"][v].get("annotations", [])}
        pred = {"results": {v: [p for p in ps if p["label"] in present] for v, ps in results.items()}}
        m = cfg.method
        result = evaluate_detection(gt, pred, subset="validation-run", tiou_thresholds=m.tiou_thresholds,
                                    average_up_to=m.average_up_to)
        metrics = {"val_map_avg": result["average_map"] / 100.0}
        metrics.update({f"val_map_{name}": value
                        for name, value in zip(threshold_names(m.tiou_thresholds), result["map"])})
        protocol = ("holdout: a seeded split of the training videos (clean)" if cfg.method.selection == "holdout"
                    else "test: the test videos, the FTCL repo's best-test-mAP selection (optimistic)")
        return Evaluation(metrics, {"val_detection.json": {"protocol": protocol, "videos": len(results),
                                                           "table": format_detection_table(result),
                                                           "ap_per_class": result["ap_per_class"]}})

    def score_batch(self, model: torch.nn.Module, batch: dict[str, np.ndarray],
                    device: torch.device) -> dict[str, np.ndarray]:
        """Test videos (one per row, uniform-sampled, varying T_in) -> their proposals as JSON strings."""
        out = []
        for k in range(len(batch["index"])):
            feats = torch.from_numpy(np.asarray(batch["features"][k], dtype=np.float32)).to(device)
            out.append(json.dumps(_proposals(model, feats[None], int(batch["length"][k]))))
        return {"index": np.asarray(batch["index"], dtype=np.int64), "proposals": np.asarray(out, dtype=object)}

    def test(self, cfg: ExperimentConfig, *, checkpoint: str | None, reference_layout: str | None,
             output: str | None = None) -> Evaluation:
        """Every test video (split_test.txt) through batch inference, an ActivityNet-style predictions JSON in
        ``eval.output_dir`` (or ``output``), and the mAP table against every test video of gt.json (212 on
        THUMOS14 while the split lists 210: the ceiling of the standard protocol is 98.87 average mAP)."""
        from actionray.platform.data.feature_source import FeatureSource
        from actionray.platform.data.features import load_feature_set
        from actionray.platform.detection import evaluate_detection, format_detection_table
        from actionray.platform.evaluate import batch_inference

        WTALMethod.check_inputs(self, cfg)  # the feature set (not FTCL's init checkpoint): bad files named here
        fs = load_feature_set(cfg.method.feature_root, "test")
        columns = batch_inference(cfg, FeatureSource(cfg).test_dataset(), checkpoint=checkpoint,
                                  reference_layout=reference_layout, batch_size=1)
        order = np.argsort(columns["index"], kind="stable")
        results = {fs.videos[int(columns["index"][i])]: json.loads(str(columns["proposals"][i])) for i in order}
        predictions = {"version": fs.gt.get("version", ""), "results": results,
                       "external_data": {"used": False, "details": f"actionray {self.name} {cfg.name}"}}
        path = Path(output) if output else Path(cfg.eval.output_dir) / f"{cfg.name}_predictions.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(predictions))
        subset = fs.gt["database"][fs.videos[0]].get("subset", "test")
        m = cfg.method
        result = evaluate_detection(Path(m.feature_root) / "gt.json", predictions, subset=subset,
                                    tiou_thresholds=m.tiou_thresholds, average_up_to=m.average_up_to)
        table = format_detection_table(result)
        table_path = path.with_name(path.stem.removesuffix("_predictions") + "_map.txt")
        table_path.write_text(table + "\n")
        metrics = {"test_map_avg": result["average_map"] / 100.0}
        metrics.update({f"test_map_{name}": value
                        for name, value in zip(threshold_names(m.tiou_thresholds), result["map"])})
        report = {"predictions": str(path), "map_table": str(table_path), "table": table,
                  "videos": len(results), "gt_subset": subset, "ap_per_class": result["ap_per_class"]}
        return Evaluation(metrics, {"report": report, "files": [str(path), str(table_path)]})


class ACMNetMethod(WTALMethod):
    """ACM-Net, trained per video with the ``clean`` or ``repository`` ACM loss."""

    def loss_terms(self, cfg: ExperimentConfig) -> tuple[str, ...]:
        terms = ("inst", "cont", "back", "guide", "feat", "sparse")
        return terms + (("lcs", "fsd") if cfg.method.loss == "repository" else ())

    def uses_fsd(self, cfg: ExperimentConfig) -> bool:
        return cfg.method.loss == "repository" and cfg.method.fsd_weight > 0

    def train_step(self, model: torch.nn.Module, batch: Batch, cfg: ExperimentConfig) -> StepOutput:
        """ACM loss of a batch of videos (B, T, D) with multi-hot labels (B, C)."""
        from actionray.trainables.ftcl_losses import acm_loss

        m = cfg.method
        out = model(batch["features"])
        # In-batch pair subsampling (repository variant) from the loop's per-epoch seeded Python generator.
        rng = random.Random(random.getrandbits(64))
        loss, terms = acm_loss(out, batch["label"], variant=m.loss, weights=self.acm_weights(cfg),
                               lcs_weight=m.lcs_weight, fsd_weight=m.fsd_weight, gamma=m.gamma,
                               lcs_threshold=m.lcs_threshold, rng=rng)
        metrics = {k: terms[k].detach() for k in self.loss_terms(cfg)}
        return StepOutput(loss + touch_outputs(out), metrics, batch_size=int(batch["features"].shape[0]))


METHOD = ACMNetMethod("acmnet", ACMNetConfig)
