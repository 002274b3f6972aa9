"""The clip-classifier shape of method (TSN, TDN, GCNet, TCPNet): clips in, class scores out, cross-entropy.

``ClassifierConfig`` is the config section every clip classifier shares (backbone, initialisation, head and
label smoothing); a method subclasses it with its own knobs and a ``Literal`` name. ``ClipClassifier`` implements
the whole :class:`~actionray.platform.method.Method` contract on the decoded-clip source; a method subclasses
it only where its recipe differs (GCNet: the CCL term and the Mamba parameter group; TCPNet: head options).
Validation is 1 clip x centre crop (top-1, top-5, mean class accuracy, loss, confusion matrix); the test
protocol is multi-view batch inference with the configured view fusion (``eval.combine``).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, Iterable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from actionray.platform.config import ExperimentConfig, MethodConfig
from actionray.platform.data.source import ClipSource
from actionray.platform.method import Batch, Evaluation, MetricSpec, StepOutput, all_parameters
from actionray.platform.metrics import confusion_matrix, mean_class_accuracy, top_k_accuracy

__all__ = ["ClassifierConfig", "ClipClassifier", "cross_entropy", "CLASSIFIER_METRICS"]

Backbone = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


class ClassifierConfig(MethodConfig):
    """Options every clip classifier takes (``actionray.models.build_model``'s shared keywords)."""

    backbone: Backbone = "resnet50"
    pretrained: str | None = None  # local ImageNet weights (torchvision layout), never downloaded
    reference_checkpoint: str | None = None  # a published checkpoint in the reference repo's key layout
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    partial_bn: bool = False
    consensus: Literal["feature", "logit"] = "logit"  # MMAction2 feature averaging vs TDN logit averaging
    fc_init_std: float = Field(0.001, gt=0.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    path_fields: ClassVar[tuple[str, ...]] = ("pretrained", "reference_checkpoint")


CLASSIFIER_METRICS = ("train_loss", "train_top1", "train_ce", "val_top1", "val_top5", "val_mean_class_acc",
                      "val_loss")


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, cfg: ExperimentConfig) -> torch.Tensor:
    """Video-level cross-entropy with the configured label smoothing. logits (B, C), labels (B,)."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=cfg.method.label_smoothing)


class ClipClassifier:
    """Cross-entropy on the video score of the network ``actionray.models.build_model(name)``."""

    config_class: type[ClassifierConfig] = ClassifierConfig
    find_unused_parameters = False

    def __init__(self, name: str, config_class: type[ClassifierConfig], find_unused_parameters: bool = False) -> None:
        self.name = name
        self.config_class = config_class
        self.find_unused_parameters = find_unused_parameters

    # -- what the method reports ------------------------------------------------------------------------------
    def loss_terms(self, cfg: ExperimentConfig) -> tuple[str, ...]:
        """Names of the loss terms ``compute_loss`` returns (logged as ``train_<term>``)."""
        return ("ce",)

    def metrics(self, cfg: ExperimentConfig) -> MetricSpec:
        """val_top1 (max) selects checkpoints; accuracies read as percentages."""
        reported = ("train_loss", "train_top1", *(f"train_{t}" for t in self.loss_terms(cfg)), "val_top1",
                    "val_top5", "val_mean_class_acc", "val_loss")
        return MetricSpec(primary="val_top1", mode="max", reported=tuple(dict.fromkeys(reported)),
                          progress=("train_top1", "val_top1", "val_top5"),
                          percent=frozenset({"train_top1", "val_top1", "val_top5", "val_mean_class_acc"}))

    # -- model, data, optimizer ---------------------------------------------------------------------------------
    def model_options(self, cfg: ExperimentConfig) -> dict[str, Any]:
        """Method-specific keywords for the model builder (none here)."""
        return {}

    def build_model(self, cfg: ExperimentConfig) -> torch.nn.Module:
        """The network named by ``method.name`` with the shared options plus ``model_options``."""
        from actionray.models import build_model

        m, d = cfg.method, cfg.data
        return build_model(
            self.name, num_classes=d.num_classes, num_segments=d.num_segments, backbone=m.backbone,
            pretrained=m.pretrained, dropout=m.dropout, partial_bn=m.partial_bn, consensus=m.consensus,
            fc_init_std=m.fc_init_std, input_size=d.input_size, **self.model_options(cfg))

    def data(self, cfg: ExperimentConfig) -> ClipSource:
        """Decoded, sampled, augmented clips (one per video and row)."""
        return ClipSource(cfg)

    def param_groups(self, model: torch.nn.Module, cfg: ExperimentConfig) -> list[dict[str, Any]]:
        """A single group (the reference recipes' effective behaviour)."""
        return all_parameters(model)

    # -- training and validation --------------------------------------------------------------------------------
    def compute_loss(self, model: torch.nn.Module, batch: Batch,
                     cfg: ExperimentConfig) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, logits (B, C), {term: value}) for the video batch (B, N, 3, H, W)."""
        logits = model(batch["video"])
        ce = cross_entropy(logits, batch["label"], cfg)
        return ce, logits, {"ce": ce.detach()}

    def train_step(self, model: torch.nn.Module, batch: Batch, cfg: ExperimentConfig) -> StepOutput:
        """Loss, batch top-1 and the loss terms of one batch."""
        loss, logits, terms = self.compute_loss(model, batch, cfg)
        label = batch["label"]
        top1 = (logits.detach().argmax(1) == label).float().mean()
        return StepOutput(loss=loss, metrics={"top1": top1, **terms}, batch_size=int(label.shape[0]))

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, batches: Iterable[Batch], cfg: ExperimentConfig) -> Evaluation:
        """1 clip, centre crop over the whole validation set: accuracies, loss, per-class recall, confusion plot."""
        model.eval()
        scores, labels = [], []
        for batch in batches:
            scores.append(model(batch["video"]).float().cpu())
            labels.append(batch["label"].cpu())
        if not scores:
            raise RuntimeError(f"validation produced no batches; check data.val_list ({cfg.data.val_list})")
        logits, label = torch.cat(scores), torch.cat(labels)
        top1, top5 = top_k_accuracy(logits.numpy(), label.numpy(), (1, 5))
        metrics = {"val_loss": float(F.cross_entropy(logits, label)), "val_top1": top1, "val_top5": top5,
                   "val_mean_class_acc": mean_class_accuracy(logits.numpy(), label.numpy())}
        matrix = confusion_matrix(logits.argmax(1).numpy(), label.numpy(), cfg.data.num_classes)
        # The figure is drawn only for the validation the run ends with (artifacts may be callables).
        return Evaluation(metrics, {"val_per_class_acc.json": per_class_recall(matrix),
                                    "plots/confusion_matrix.png": functools.partial(_confusion_plot, matrix, cfg)})

    # -- test protocol ------------------------------------------------------------------------------------------
    def score_batch(self, model: torch.nn.Module, batch: dict[str, np.ndarray],
                    device: torch.device) -> dict[str, np.ndarray]:
        """uint8 views (B, N, H, W, 3) -> raw class scores (B, C) with index/view/label (batch inference)."""
        from actionray.platform.data.transforms import normalize

        video = normalize(torch.from_numpy(np.ascontiguousarray(batch["video"])).to(device))
        scores = model(video).float().cpu().numpy()
        return {"index": batch["index"], "view": batch["view"], "label": batch["label"], "scores": scores}

    def test(self, cfg: ExperimentConfig, *, checkpoint: str | None, reference_layout: str | None,
             output: str | None = None) -> Evaluation:
        """Every test view (``eval.clips`` x ``eval.crops``) scored by batch inference, written to a Parquet score
        file, fused per video by ``eval.combine``: test top-1, top-5, mean class accuracy."""
        from pathlib import Path

        from actionray.platform.evaluate import accuracy_report, batch_inference, combine_views, write_scores

        views = self.data(cfg).test_dataset().select_columns(["video", "label", "index", "view"])
        columns = batch_inference(cfg, views, checkpoint=checkpoint, reference_layout=reference_layout)
        name = f"{cfg.name}_{cfg.eval.clips}x{cfg.eval.crops}.parquet"
        path = write_scores(output or Path(cfg.eval.output_dir) / name, columns["index"], columns["view"],
                            columns["label"], columns["scores"])
        fused, labels, _ = combine_views(columns["index"], columns["label"], columns["scores"], cfg.eval.combine)
        report = accuracy_report(fused, labels)
        metrics = {f"test_{k}": report[k] for k in ("top1", "top5", "mean_class_acc")}
        return Evaluation(metrics, {"report": {**report, "views": f"{cfg.eval.clips}x{cfg.eval.crops}",
                                               "combine": cfg.eval.combine, "scores": str(path)},
                                    "files": [str(path)]})


def per_class_recall(matrix: np.ndarray) -> list[float | None]:
    """Recall per class from a confusion matrix (None for classes without videos)."""
    counts = matrix.sum(axis=1)
    return [float(matrix[c, c] / counts[c]) if counts[c] else None for c in range(len(matrix))]


def _confusion_plot(matrix: np.ndarray, cfg: ExperimentConfig):
    from actionray.platform.data.preview import load_class_names
    from actionray.platform.tracking import confusion_figure

    return confusion_figure(matrix, load_class_names(cfg.data.class_names, cfg.data.num_classes))
