"""FTCL (Gao, Chen, Xu, CVPR 2022): ACM-Net fine-tuned on video pairs with FSD and LCS contrasting, stage 2.

Recipe (FTCL repo, main_thu.py with ``--ftcl``, dataset/dataset_class.py ``FTCLDataset``, utils/ftcl_criterion.py
``FTCLLoss``): training items are pairs of training videos, positives with identical multi-hot labels and as many
disjoint-label negatives (``features.ftcl_pairs``); each video's 750 snippets are drawn once and reused every
epoch (``method.resample: frozen``, the default here). Loss = mean of the two videos' ACM losses + 0.1 L_LCS +
0.8 L_FSD (``method.lcs_weight`` / ``fsd_weight``; ``use_lcs`` / ``use_fsd`` False are the repo's
``--without_lcs`` / ``--without_fsd`` ablations). The network starts from an ACM-Net checkpoint
(``method.init_checkpoint``): one of ours (a run's checkpoint folder or its state.pt) or the FTCL repo's
``{'epoch', 'model_state_dict'}`` file; the names are the same, the load is strict. Optimizer, validation, test
protocol and NaN handling are ACM-Net's (``actionray.trainables.acmnet``).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import torch

from actionray.platform.config import ConfigError, ExperimentConfig
from actionray.platform.method import Batch, StepOutput
from actionray.trainables.acmnet import WTALConfig, WTALMethod, touch_outputs

__all__ = ["FTCLConfig", "FTCLMethod", "load_init_checkpoint", "METHOD"]


class FTCLConfig(WTALConfig):
    """FTCL: the shared options, the FSD/LCS switches and the stage-1 checkpoint."""

    name: Literal["ftcl"] = "ftcl"
    resample: Literal["epoch", "frozen"] = "frozen"  # the pair dataset draws each video's snippets once
    use_fsd: bool = True
    use_lcs: bool = True
    init_checkpoint: str | None = None  # the ACM-Net stage (required unless from_scratch)
    # True: train FTCL from a random initialisation without init_checkpoint (demos, tests, ablations); not the
    # reference recipe, which starts from the ACM-Net stage (FTCL repo README).
    from_scratch: bool = False
    init_layout: Literal["auto", "ours", "ftcl"] = "auto"
    pairs: ClassVar[bool] = True  # the feature source yields pair rows
    path_fields: ClassVar[tuple[str, ...]] = WTALConfig.path_fields + ("init_checkpoint",)


def load_init_checkpoint(model: torch.nn.Module, path: str, layout: str = "auto") -> str:
    """Load ACM-Net weights strictly from our checkpoint (folder or state.pt) or an FTCL-repo file; returns the
    layout used. ``auto``: a folder or a file holding our state (a ``model`` entry) is ours, else FTCL's."""
    from actionray.models.acmnet import load_ftcl_checkpoint
    from actionray.platform.checkpoint import model_state_from_checkpoint

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"method.init_checkpoint: {path}: no such file or folder")
    if layout == "auto":
        layout = "ours"
        if p.is_file():
            try:
                blob = torch.load(p, map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 -- not weights-only readable: load_ftcl_checkpoint names the problem
                blob = None
            layout = "ours" if isinstance(blob, dict) and "model" in blob else "ftcl"
    if layout == "ftcl":
        load_ftcl_checkpoint(model, p)
    else:
        model.load_state_dict(model_state_from_checkpoint(p))
    return layout


class FTCLMethod(WTALMethod):
    """ACM-Net on FTCL pairs with the FSD and LCS contrastive terms."""

    def check_inputs(self, cfg: ExperimentConfig) -> None:
        """Before Ray starts: the feature set, and an ``init_checkpoint`` that is a checkpoint folder or file;
        without one the run refuses to start unless ``method.from_scratch`` is true. (A start-time check, not
        ``check_config``: configs without a checkpoint still load, and ``actionray eval`` needs none.)"""
        super().check_inputs(cfg)
        path = cfg.method.init_checkpoint
        if path is None and not cfg.method.from_scratch:
            raise ConfigError("method.init_checkpoint: not set; FTCL starts from an ACM-Net checkpoint: train "
                              "`actionray train configs/acmnet_thumos14.yaml` and pass --set "
                              "method.init_checkpoint=<its checkpoint_* folder> (or set method.from_scratch: true)")
        if path is None or "://" in path:
            return
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"method.init_checkpoint: {path}: no such file or folder")
        if p.is_dir() and not (p / "state.pt").is_file():
            raise ConfigError(f"method.init_checkpoint: {path}: a folder without state.pt (pass a checkpoint_* "
                              f"folder of the ACM-Net run, not the run folder)")
        if p.suffix == ".json":
            raise ConfigError(f"method.init_checkpoint: {path}: a JSON file, not a checkpoint (pass a checkpoint_* "
                              f"folder of the ACM-Net run)")

    def loss_terms(self, cfg: ExperimentConfig) -> tuple[str, ...]:
        return ("acm", "lcs", "fsd")

    def uses_fsd(self, cfg: ExperimentConfig) -> bool:
        return cfg.method.use_fsd and cfg.method.fsd_weight > 0

    def build_model(self, cfg: ExperimentConfig) -> torch.nn.Module:
        """ACM-Net, initialised from ``method.init_checkpoint`` when set (a resumed run then loads its own state)."""
        model = super().build_model(cfg)
        if cfg.method.init_checkpoint is not None:
            load_init_checkpoint(model, cfg.method.init_checkpoint, cfg.method.init_layout)
        return model

    def train_step(self, model: torch.nn.Module, batch: Batch, cfg: ExperimentConfig) -> StepOutput:
        """FTCL loss of a batch of pairs: both videos in one forward of 2B rows (dropout masks are per row, so
        this equals the reference's two passes with shared weights, and DDP sees one forward per step)."""
        from actionray.models.acmnet import ACMNetOutput
        from actionray.trainables.ftcl_losses import ftcl_loss

        m = cfg.method
        b = int(batch["features"].shape[0])
        out = model(torch.cat([batch["features"], batch["features_2"]]))
        first = ACMNetOutput(*(t[:b] for t in out.as_tuple()))
        second = ACMNetOutput(*(t[b:] for t in out.as_tuple()))
        loss, terms = ftcl_loss(first, second, batch["label"], batch["label_2"], lcs_weight=m.lcs_weight,
                                fsd_weight=m.fsd_weight, use_lcs=m.use_lcs, use_fsd=m.use_fsd, gamma=m.gamma,
                                lcs_threshold=m.lcs_threshold, acm_weights=self.acm_weights(cfg))
        metrics = {k: terms[k].detach() for k in self.loss_terms(cfg)}
        return StepOutput(loss + touch_outputs(out), metrics, batch_size=b)


METHOD = FTCLMethod("ftcl", FTCLConfig)
