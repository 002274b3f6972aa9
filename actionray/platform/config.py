"""One validated experiment config: YAML file + ``--set a.b=c`` overrides -> ``ExperimentConfig``.

Every section is a pydantic model that forbids unknown keys, so a typo fails at load time with its key path
(``model.dropuot: unknown key; allowed: ...``) instead of being silently ignored in a multi-hour run.
Relative paths in the data section are resolved against the config file's folder (or the working directory
for embedded defaults): Ray workers run inside Ray's temp folder, where relative paths point elsewhere.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file and key path."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SynthConfig(Section):
    """Generated demo videos (``actionray data synth``); written when the lists do not exist yet."""

    out_dir: str = "demo_data"
    videos_per_class: int = Field(24, ge=2)
    frames: int = Field(48, ge=8)
    width: int = Field(128, ge=32)
    height: int = Field(96, ge=32)
    seed: int = 0
    format: Literal["mp4", "frames"] = "mp4"
    classes: list[str] | None = None  # None = every built-in class


class DataConfig(Section):
    """Where clips come from and how they are sampled, decoded and augmented."""

    root: str | None = None  # prefix joined to relative paths inside the list files
    train_list: str = "demo_data/train.txt"
    val_list: str = "demo_data/val.txt"
    test_list: str | None = None  # defaults to val_list
    num_classes: int = Field(8, ge=2)
    class_names: str | None = None  # optional classInd-style file (one name per line, or "id name")
    format: Literal["video", "frames"] = "video"
    frame_template: str = "img_{:05d}.jpg"  # frame folders are 1-based
    num_segments: int = Field(8, ge=1)
    frames_per_segment: int = Field(1, ge=1)  # TDN/GCNet new_length = 5
    sampling: Literal["segment", "dense"] = "segment"
    dense_window: int = Field(64, ge=1)
    decode_short_side: int | None = Field(None, ge=16)  # decoder-side resize; None = stored resolution
    train_crop: Literal["multiscale", "random_resized"] = "multiscale"
    multiscale_offsets: Literal[5, 13] = 13
    input_size: int = Field(224, ge=16)
    scale_size: int = Field(256, ge=16)  # short side for val/test crops
    flip: bool = True
    flip_label_map: dict[int, int] = Field(default_factory=dict)  # e.g. Something-Something 86<->87
    batch_size: int = Field(8, ge=1)  # per training worker
    decode_tasks: int = Field(2, ge=1)  # Ray Data decode pool size (CPU tasks)
    decode_batch_size: int = Field(4, ge=1)  # clips per decode task call (4 measured best, docs/performance.md)
    prefetch_batches: int = Field(2, ge=0)
    object_store_limit_mb: int | None = Field(1024, ge=64)  # Ray Data pipeline budget (backpressure)
    on_error_train: Literal["raise", "skip"] = "skip"
    on_error_eval: Literal["raise", "skip"] = "raise"
    max_skip_fraction: float = Field(0.01, ge=0.0, le=1.0)
    synth: SynthConfig | None = None


class ModelConfig(Section):
    """Which network; method switches live here (``gtm`` for GCNet, ``tcp_*`` for TCPNet)."""

    name: Literal["tsn", "tdn", "gcnet", "tcp"] = "tsn"
    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"] = "resnet50"
    pretrained: str | None = None  # local ImageNet weights (torchvision layout), never downloaded
    reference_checkpoint: str | None = None  # a published checkpoint in the reference repo's key layout
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    partial_bn: bool = False
    consensus: Literal["feature", "logit"] = "logit"  # MMAction2 feature averaging vs TDN logit averaging
    fc_init_std: float = Field(0.001, gt=0.0)
    gtm: bool = True  # GCNet: Global-local Temporal Modeling on/off (off = TDN)
    gtm_group: int | None = Field(None, ge=1)  # GCNet: segments per Mamba scan (reference: 8); None = all T
    tcp_reduced_dim: int = Field(128, ge=8)
    tcp_iterations: int = Field(3, ge=1)


class CCLConfig(Section):
    """Category-supervised Contrastive Learning (GCNet)."""

    enabled: bool = False
    variant: Literal["supcon", "released", "instance"] = "supcon"
    temperature: float = Field(0.1, gt=0.0)
    weight: float = Field(1.0, ge=0.0)


class LossConfig(Section):
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    ccl: CCLConfig = Field(default_factory=CCLConfig)


class OptimConfig(Section):
    # sgd: every reference recipe and the demo configs. adamw: an option for short from-scratch runs;
    # weight_decay is then decoupled (AdamW) and momentum/nesterov are unused.
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0.0)  # total over all workers' batch (no automatic scaling)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    betas: tuple[float, float] = (0.9, 0.999)  # adamw only
    weight_decay: float = Field(5e-4, ge=0.0)
    nesterov: bool = False
    mamba_lr: float | None = Field(None, gt=0.0)  # GCNet: fixed lr group for the Mamba parameters (0.03)
    clip_grad_norm: float | None = Field(20.0, gt=0.0)


class ScheduleConfig(Section):
    name: Literal["step", "cosine", "constant"] = "step"
    milestones: list[int] = Field(default_factory=list)  # in epochs, applied per iteration
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    warmup_epochs: float = Field(0.0, ge=0.0)
    warmup_start_factor: float = Field(0.01, gt=0.0, le=1.0)
    eta_min: float = Field(1e-5, ge=0.0)


class TrainConfig(Section):
    epochs: int = Field(10, ge=1)
    seed: int = 0
    # Repeat a 1-worker run exactly: the train stream keeps the seeded shuffle's order (a slow decode task then
    # holds back the clips behind it) and torch uses deterministic kernels. Off: same clips per epoch, batch
    # composition depends on which decode task finishes first. Multi-worker splits stay dynamic either way.
    deterministic: bool = False
    val_every: int = Field(1, ge=1)
    amp: Literal["none", "bf16", "fp16"] = "none"  # GPU only; ignored on CPU
    channels_last: bool = False  # GPU only
    checkpoint_metric: str = "val_top1"
    checkpoint_mode: Literal["max", "min"] = "max"
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)  # iterations between per-step metrics
    storage_path: str = "runs"  # Ray Train storage; shared storage (NFS/S3) on a multi-node cluster
    run_name: str | None = None  # the resume key; default derives from config name


class ScalingConfig(Section):
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)
    gpus_per_worker: float = Field(1.0, ge=0.0)
    # torch intra-op threads per training worker. None: Ray's default (OMP_NUM_THREADS = cpus_per_worker).
    # 0: the node's cores shared among its local workers, for CPU runs where decode tasks are light and
    # reserving cores for them would leave the model's matmuls on one core (the 2-core demo).
    torch_threads: int | None = Field(None, ge=0)
    max_failures: int = Field(2, ge=-1)


class TrackingConfig(Section):
    enabled: bool = True
    uri: str | None = None  # None = sqlite:///<cwd>/mlflow.db (absolute); or http://host:5000
    experiment: str = "actionray"
    artifact_location: str | None = None  # None = <cwd>/mlartifacts


class EvalConfig(Section):
    clips: int = Field(1, ge=1)
    crops: Literal[1, 3] = 1
    scale_size: int | None = Field(None, ge=16)  # short side before test crops; None = data.scale_size
    combine: Literal["mean_prob", "max"] = "mean_prob"
    batch_size: int = Field(8, ge=1)
    output_dir: str = "runs/eval"


class ExperimentConfig(Section):
    """The whole experiment: every key validated, every path resolved."""

    name: str = "experiment"
    trainable: Literal["tsn", "tdn", "gcnet", "tcp"] = "tsn"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _check_cross_section(self) -> "ExperimentConfig":
        if self.model.name != self.trainable:
            raise ValueError(f"model.name ({self.model.name!r}) must equal trainable ({self.trainable!r})")
        for key, value in self.data.flip_label_map.items():
            if not (0 <= key < self.data.num_classes and 0 <= value < self.data.num_classes):
                raise ValueError(f"data.flip_label_map: {key}->{value} outside 0..{self.data.num_classes - 1}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values (``optim.lr``), the stable names used for MLflow params and Tune spaces."""
        return flatten(self.to_dict())


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _allowed_keys(model: type[BaseModel], path: list[str]) -> list[str]:
    """The field names valid at a dotted path (for 'unknown key' messages)."""
    current: Any = model
    for part in path:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}))


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        key = ".".join(loc) or "<root>"
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(ExperimentConfig, loc[:-1])
            lines.append(f"  {key}: unknown key; allowed keys here: {', '.join(allowed)}")
        else:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=c`` -> (['a', 'b'], value parsed as YAML so numbers, booleans, lists and null work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. optim.lr=0.01")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty key segment in {key!r}")
    return parts, yaml.safe_load(raw) if raw.strip() else None


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    tree = copy.deepcopy(tree)
    for text in overrides:
        parts, value = parse_override(text)
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return tree


def _resolve_paths(cfg: ExperimentConfig, base: Path) -> ExperimentConfig:
    def absolute(path: str | None) -> str | None:
        if path is None or "://" in path:
            return path
        return str((base / path).resolve()) if not Path(path).is_absolute() else path

    data = cfg.data
    data.root = absolute(data.root)
    data.train_list = absolute(data.train_list)
    data.val_list = absolute(data.val_list)
    data.test_list = absolute(data.test_list)
    data.class_names = absolute(data.class_names)
    if data.synth is not None:
        data.synth.out_dir = absolute(data.synth.out_dir)
    cfg.model.pretrained = absolute(cfg.model.pretrained)
    cfg.model.reference_checkpoint = absolute(cfg.model.reference_checkpoint)
    cfg.train.storage_path = absolute(cfg.train.storage_path)
    cfg.eval.output_dir = absolute(cfg.eval.output_dir)
    if cfg.eval.scale_size is None:
        cfg.eval.scale_size = data.scale_size
    if cfg.tracking.uri is None:
        # MLFLOW_TRACKING_URI (e.g. set for a cluster job via --runtime-env-json) beats the embedded default.
        cfg.tracking.uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"
    # A tracking server picks its own (proxied) artifact store; a local folder would be per node on a cluster.
    if cfg.tracking.artifact_location is None and not cfg.tracking.uri.startswith(("http://", "https://")):
        cfg.tracking.artifact_location = str(Path.cwd().resolve() / "mlartifacts")
    return cfg


def build_config(tree: dict[str, Any], overrides: list[str] | None = None, *, source: str = "<dict>",
                 base_dir: Path | None = None) -> ExperimentConfig:
    """Validate a config tree plus overrides; relative paths resolve against ``base_dir`` (default: cwd)."""
    tree = apply_overrides(tree, overrides or [])
    try:
        cfg = ExperimentConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None
    return _resolve_paths(cfg, base_dir or Path.cwd())


# What ``actionray train`` runs without a CONFIG: the TSN demo (configs/demo_tsn.yaml) on generated videos,
# written to ./demo_data on first use. Small enough for a laptop CPU; the field defaults above stay the
# paper-scale values (ResNet-50, 224 px) that the reference configs build on.
EMBEDDED_DEFAULTS: dict[str, Any] = {  # = configs/demo_tsn.yaml (see docs/performance.md for why these values)
    "name": "demo",
    "model": {"backbone": "resnet18", "dropout": 0.2, "fc_init_std": 0.01},
    "data": {"train_list": "demo_data/train.txt", "val_list": "demo_data/val.txt", "num_classes": 8,
             "input_size": 64, "scale_size": 72, "multiscale_offsets": 5, "flip": False,
             "synth": {"out_dir": "demo_data", "videos_per_class": 80}},
    "optim": {"lr": 0.005, "weight_decay": 1e-4},
    "schedule": {"name": "cosine", "warmup_epochs": 1, "eta_min": 1e-4},
    "train": {"epochs": 7},
    "scaling": {"torch_threads": 0},
}


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML experiment config (None = embedded demo defaults) and apply ``a.b=c`` overrides."""
    if path is None:
        return build_config(copy.deepcopy(EMBEDDED_DEFAULTS), overrides, source="<embedded defaults>")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(tree).__name__}")
    # Relative data paths are relative to the working directory (where users run commands), not the
    # config folder: configs/ files name data like "demo_data/train.txt" from the repository root.
    return build_config(tree, overrides, source=str(path), base_dir=Path.cwd())


def config_from_dict(tree: dict[str, Any]) -> ExperimentConfig:
    """Rebuild a config already resolved (e.g. from a checkpoint or a Ray worker's config dict)."""
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, "<resolved config>")) from None


def dumps(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False)
