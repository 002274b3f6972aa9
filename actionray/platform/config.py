"""One validated experiment config: YAML file + ``--set a.b=c`` overrides -> ``ExperimentConfig``.

The platform owns the method-agnostic sections (data, optim, schedule, train, scaling, tracking, eval); the
``method`` section belongs to the method named by ``method.name``: its pydantic class comes from the method's own
module, found through a ``MethodCatalog`` that the caller passes in (``actionray.config`` binds the project's
catalog, ``actionray.trainables.METHODS``), so this module names no method.

Every section is a pydantic model that forbids unknown keys, so a typo fails at load time with its key path
(``model.dropuot: unknown key; allowed: ...``) instead of being silently ignored in a multi-hour run.
Relative paths in the data section are resolved against the config file's folder (or the working directory
for embedded defaults): Ray workers run inside Ray's temp folder, where relative paths point elsewhere.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, SerializeAsAny, ValidationError, field_validator,
                      model_validator)

from actionray.errors import NoRetryError, UserError


if TYPE_CHECKING:
    from actionray.platform.method import Method


class ConfigError(UserError, NoRetryError, ValueError):
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
    # val/test frames before the centre (or three-crop) squares: "short_side" resizes the short side to scale_size
    # (eval.scale_size for test; TSN/TDN/MMAction2), "none" crops the decoded frames as they are (VideoMoCo repo,
    # eval.py: CenterCropVideo(112) on the decoded frames; the DCLR downstream configs, docs/models.md)
    eval_resize: Literal["short_side", "none"] = "short_side"
    flip: bool = True
    flip_label_map: dict[int, int] = Field(default_factory=dict)  # e.g. Something-Something 86<->87
    batch_size: int = Field(8, ge=1)  # per training worker
    # Training clips per video per epoch, each its own row (sharded, shuffled and batched like any row), drawn
    # independently (dense: distinct windows); an epoch has clips_per_video x videos rows (VideoMoCo eval.py /
    # DCLR -cpv 10, torchvision RandomClipSampler). Val/test views stay eval.clips.
    clips_per_video: int = Field(1, ge=1)
    # Ray Data decode pool of a split (CPU tasks, any node). "auto": Ray Data grows the pool into the CPUs the
    # cluster has beyond the training workers' (nodes the autoscaler adds included), up to decode_tasks_max; a
    # number pins the pool to that many tasks (docs/cluster.md).
    decode_tasks: int | Literal["auto"] = "auto"
    decode_tasks_max: int = Field(64, ge=1)
    # any: decode tasks run on any node with a free CPU. cpu_only: only on nodes that declare the custom resource
    # actionray_decode (cluster.yaml sets it on its CPU decode nodes), so the GPU nodes' CPUs feed their workers.
    decode_nodes: Literal["any", "cpu_only"] = "any"
    decode_batch_size: int = Field(4, ge=1)  # clips per decode task call (4 measured best, docs/performance.md)
    prefetch_batches: int = Field(2, ge=0)
    object_store_limit_mb: int | None = Field(1024, ge=64)  # Ray Data pipeline budget (backpressure)
    on_error_train: Literal["raise", "skip"] = "skip"
    on_error_eval: Literal["raise", "skip"] = "raise"
    max_skip_fraction: float = Field(0.01, ge=0.0, le=1.0)
    synth: SynthConfig | None = None

    @field_validator("decode_tasks")
    @classmethod
    def _positive_pool(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be 'auto' or a number of tasks >= 1")
        return value

    def decode_pool(self, world: int = 1) -> int:
        """The most decode tasks one of ``world`` shards of a split runs at once (at least 1)."""
        total = self.decode_tasks_max if self.decode_tasks == "auto" else self.decode_tasks
        return max(1, total // world)

    @property
    def decode_cpus_reserved(self) -> int:
        """CPUs a run must find beyond its training workers: the pinned pool, or one task for ``auto``."""
        return 1 if self.decode_tasks == "auto" else self.decode_tasks


class OptimConfig(Section):
    # sgd: every reference recipe and the demo configs. adamw: an option for short from-scratch runs;
    # weight_decay is then decoupled (AdamW) and momentum/nesterov are unused. adam: Adam with coupled L2 weight
    # decay (torch.optim.Adam's weight_decay adds wd * w to the gradient), the FTCL/ACM-Net recipe.
    name: Literal["sgd", "adamw", "adam"] = "sgd"
    lr: float = Field(0.01, gt=0.0)  # total over all workers' batch (no automatic scaling)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    betas: tuple[float, float] = (0.9, 0.999)  # adam/adamw only
    weight_decay: float = Field(5e-4, ge=0.0)
    nesterov: bool = False
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
    checkpoint_metric: str | None = None  # None = the method's primary metric (e.g. val_top1)
    checkpoint_mode: Literal["max", "min"] | None = None  # None = the method's direction for that metric
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)  # iterations between per-step metrics
    storage_path: str = "runs"  # Ray Train storage; shared storage (NFS/S3) on a multi-node cluster
    run_name: str | None = None  # the resume key; default derives from config name


class ScalingConfig(Section):
    """Train workers. ``num_workers: N`` is a fixed group; ``num_workers: [min, max]`` is an elastic one (Ray
    Train V2's elastic scaling policy): it starts with as many workers as the cluster fits (at least ``min``),
    keeps training with fewer when a worker's node goes away and grows back to ``max`` when nodes return, each
    time restarting from the newest checkpoint. Stored as ``num_workers = max`` and ``min_workers = min``."""

    num_workers: int = Field(1, ge=1)  # the full size; elastic: the maximum
    min_workers: int | None = Field(None, ge=1)  # elastic only: the fewest workers the run continues with
    # Elastic only: seconds between checks whether a running group can grow (Ray's
    # ScalingConfig.elastic_resize_monitor_interval_s); a grown group restarts from the newest checkpoint.
    resize_interval_s: float = Field(60.0, ge=0.0)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)
    gpus_per_worker: float = Field(1.0, ge=0.0)
    # torch intra-op threads per training worker. None: Ray's default (OMP_NUM_THREADS = cpus_per_worker).
    # 0: the node's cores shared among its local workers, for CPU runs where decode tasks are light and
    # reserving cores for them would leave the model's matmuls on one core (the 2-core demo).
    torch_threads: int | None = Field(None, ge=0)
    max_failures: int = Field(2, ge=-1)
    # Extra Ray resources per training worker, e.g. {"accelerator_type:H100": 0.001} or a custom resource that
    # cluster.yaml gives the nodes meant for training.
    worker_resources: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _elastic_range(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not isinstance(value.get("num_workers"), (list, tuple)):
            return value
        pair = value["num_workers"]
        if len(pair) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) for n in pair):
            raise ValueError(f"num_workers: a number or a list [min, max] of two whole numbers, got {list(pair)}")
        if pair[0] < 1:
            raise ValueError(f"num_workers: [min, max] needs min >= 1, got {list(pair)}")
        if value.get("min_workers") not in (None, pair[0]):
            raise ValueError("num_workers: [min, max] already sets min_workers; give one of them")
        return {**value, "num_workers": pair[1], "min_workers": pair[0]}

    @model_validator(mode="after")
    def _min_le_max(self) -> "ScalingConfig":
        if self.min_workers is not None and self.min_workers > self.num_workers:
            raise ValueError(f"num_workers: [min, max] needs min <= max, got [{self.min_workers}, "
                             f"{self.num_workers}]")
        return self

    @property
    def elastic(self) -> bool:
        """True when the worker group may run with fewer than ``num_workers`` workers."""
        return self.min_workers is not None and self.min_workers < self.num_workers

    @property
    def fewest_workers(self) -> int:
        """The smallest group the run trains with: ``min_workers`` when elastic, else ``num_workers``."""
        return self.min_workers if self.elastic else self.num_workers

    @field_validator("worker_resources")
    @classmethod
    def _custom_only(cls, value: dict[str, float]) -> dict[str, float]:
        for key, amount in value.items():
            if key in ("CPU", "GPU"):
                raise ValueError(f"{key}: set scaling.cpus_per_worker / gpus_per_worker instead")
            if amount <= 0:
                raise ValueError(f"{key}: must be > 0, got {amount}")
        return value


class TrackingConfig(Section):
    enabled: bool = True
    uri: str | None = None  # None = sqlite:///<cwd>/mlflow.db (absolute); or http://host:5000
    experiment: str = "actionray"
    artifact_location: str | None = None  # None = <cwd>/mlartifacts
    # per-node CPU/memory/disk/network/GPU samples into the run (platform/system_metrics.py); None = off
    system_metrics_interval_s: float | None = Field(10.0, gt=0)


class EvalConfig(Section):
    clips: int = Field(1, ge=1)
    crops: Literal[1, 3] = 1
    scale_size: int | None = Field(None, ge=16)  # short side before test crops; None = data.scale_size
    combine: Literal["mean_prob", "max", "mean_logit"] = "mean_prob"  # mean_logit: VideoMoCo repo, eval.py
    batch_size: int = Field(8, ge=1)
    output_dir: str = "runs/eval"


class ReferenceConfig(Section):
    """The published number a reference recipe is expected to reproduce (docs/reproduce.md).

    ``metric``: a metric the method reports (``val_*``) or the test metric ``actionray eval`` reports for it
    (``test_top1``, ``test_map_avg`` ...). ``value``: a **fraction**, like every metric the platform reports
    (a paper's 83.03 % is 0.8303); ``source``: paper + table/row or repository + file; ``setting``: what the
    number was measured with (frames, clips x crops, pre-training data). A config without a published number
    says ``reference: null``."""

    metric: str = Field(min_length=1)
    value: float
    source: str = Field(min_length=1)
    setting: str = Field(min_length=1)


class MethodConfig(Section):
    """Base of every method's config section; ``name`` selects the method (a discriminated union by name).

    A method subclasses this with its own knobs (``gtm``, ``ccl``, ``queue_size`` ...), each validated with its
    key path like every platform section. ``path_fields`` names the fields holding file paths, which the platform
    resolves like the data paths."""

    name: str
    path_fields: ClassVar[tuple[str, ...]] = ()


class MethodCatalog:
    """Method name -> the module that defines it (``METHOD``, a :class:`actionray.platform.method.Method`), or the
    method object itself (e.g. a method defined in a notebook or a test).

    Modules are imported on first use, so loading a TSN config never imports Mamba or DCLR code. The catalog is
    a plain value passed to whoever needs it (and kept by every config it built), not a process-wide registry."""

    def __init__(self, modules: Mapping[str, "str | Method"]) -> None:
        self.modules = dict(modules)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.modules)

    def get(self, name: str) -> "Method":
        """The method registered under ``name``; raises ConfigError naming the known methods."""
        if name not in self.modules:
            raise ConfigError(f"method.name: {name!r} is not a known method; known: {', '.join(self.names)}")
        entry = self.modules[name]
        return importlib.import_module(entry).METHOD if isinstance(entry, str) else entry

    def with_method(self, method: "Method") -> "MethodCatalog":
        """This catalog plus ``method`` (registered under ``method.name``)."""
        return MethodCatalog({**self.modules, method.name: method})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MethodCatalog) and other.modules == self.modules


class ExperimentConfig(Section):
    """The whole experiment: every key validated, every path resolved. Build it with :func:`build_config`."""

    name: str = "experiment"
    method: SerializeAsAny[MethodConfig]
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    reference: ReferenceConfig | None = None  # the published number of a reference recipe (ReferenceConfig)
    _catalog: MethodCatalog | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_cross_section(self) -> "ExperimentConfig":
        for key, value in self.data.flip_label_map.items():
            if not (0 <= key < self.data.num_classes and 0 <= value < self.data.num_classes):
                raise ValueError(f"data.flip_label_map: {key}->{value} outside 0..{self.data.num_classes - 1}")
        return self

    @property
    def catalog(self) -> MethodCatalog:
        if self._catalog is None:
            raise ConfigError("this config was not built by build_config (it knows no method catalog)")
        return self._catalog

    @property
    def recipe(self) -> "Method":
        """The method object of ``method.name`` (its model, data, training step, evaluation and metrics)."""
        return self.catalog.get(self.method.name)

    @property
    def checkpoint_metric(self) -> tuple[str, str]:
        """(metric, "max"|"min") that selects the best checkpoint: ``train.checkpoint_*`` or the method's."""
        spec = self.recipe.metrics(self)
        metric = self.train.checkpoint_metric or spec.primary
        # another metric than the primary one: losses and errors are minimised, everything else maximised
        lower = any(word in metric for word in ("loss", "mse", "error"))
        mode = self.train.checkpoint_mode or (spec.mode if metric == spec.primary else "min" if lower else "max")
        return metric, mode

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values (``optim.lr``), the stable names used for MLflow params and Tune spaces."""
        return flatten(self.to_dict())

    def with_overrides(self, overrides: list[str] | dict[str, Any] | None = None) -> "ExperimentConfig":
        """This config with ``a.b=c`` overrides (or a {dotted key: value} dict) applied, validated again."""
        tree = self.to_dict()
        if isinstance(overrides, dict):
            tree = apply_dotted_values(tree, overrides)
            overrides = None
        return build_config(tree, overrides, methods=self.catalog, source="<overrides>", resolve=False)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _set_dotted(tree: dict[str, Any], parts: list[str], value: Any, what: str) -> None:
    """Set ``tree[p0][p1]...`` to ``value`` in place, creating sections; ``what`` names the change in errors."""
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{what}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def apply_dotted_values(tree: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``tree`` with each dotted key set to its value (sections created as needed)."""
    tree = copy.deepcopy(tree)
    for key, value in values.items():
        _set_dotted(tree, key.split("."), value, key)
    return tree


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


def _format_errors(error: ValidationError, source: str, root: type[BaseModel] = None, prefix: str = "") -> str:
    lines = [f"invalid config {source}:"]
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        key = prefix + (".".join(loc) or "<root>")
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(root or ExperimentConfig, loc[:-1])
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
        _set_dotted(tree, parts, value, f"override {text!r}")
    return tree


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set (e.g. for a cluster job via --runtime-env-json), else ./mlflow.db (SQLite)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


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
    for field in type(cfg.method).path_fields:
        setattr(cfg.method, field, absolute(getattr(cfg.method, field)))
    cfg.train.storage_path = absolute(cfg.train.storage_path)
    cfg.eval.output_dir = absolute(cfg.eval.output_dir)
    if cfg.eval.scale_size is None:
        cfg.eval.scale_size = data.scale_size
    if cfg.tracking.uri is None:
        cfg.tracking.uri = default_tracking_uri()
    # A tracking server picks its own (proxied) artifact store; a local folder would be per node on a cluster.
    if cfg.tracking.artifact_location is None and not cfg.tracking.uri.startswith(("http://", "https://")):
        cfg.tracking.artifact_location = str(Path.cwd().resolve() / "mlartifacts")
    return cfg


def _method_section(tree: dict[str, Any], methods: MethodCatalog, source: str) -> MethodConfig:
    """Validate the ``method`` section with the class of the method it names."""
    raw = tree.get("method")
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"invalid config {source}:\n  method.name: missing; every config names its method "
                          f"(one of: {', '.join(methods.names)})")
    try:
        cls = methods.get(raw["name"]).config_class
    except ConfigError as error:
        raise ConfigError(f"invalid config {source}:\n  {error}") from None
    try:
        return cls.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source, cls, "method.")) from None


def build_config(tree: dict[str, Any], overrides: list[str] | None = None, *, methods: MethodCatalog,
                 source: str = "<dict>", base_dir: Path | None = None, resolve: bool = True) -> ExperimentConfig:
    """Validate a config tree plus overrides; relative paths resolve against ``base_dir`` (default: cwd).

    ``train.checkpoint_metric`` must be a metric the method reports."""
    tree = apply_overrides(tree, overrides or [])
    method = _method_section(tree, methods, source)
    try:
        cfg = ExperimentConfig.model_validate({**tree, "method": method})
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None
    cfg._catalog = methods
    reported = cfg.recipe.metrics(cfg).reported
    if cfg.train.checkpoint_metric is not None and cfg.train.checkpoint_metric not in reported:
        raise ConfigError(f"invalid config {source}:\n  train.checkpoint_metric: {cfg.train.checkpoint_metric!r} "
                          f"is not a metric {method.name} reports; choose one of {', '.join(reported)}")
    if cfg.reference is not None:
        problem = reference_problem(cfg.reference, cfg.recipe.metrics(cfg))
        if problem:
            raise ConfigError(f"invalid config {source}:\n  {problem}")
    # Optional method hook for checks across sections (e.g. a queue length against the global batch);
    # it raises ValueError with a one-line message naming the keys.
    check = getattr(cfg.recipe, "check_config", None)
    if check is not None:
        try:
            check(cfg)
        except ValueError as error:
            raise ConfigError(f"invalid config {source}:\n  {error}") from None
    return _resolve_paths(cfg, base_dir or Path.cwd()) if resolve else cfg


def reference_problem(reference: ReferenceConfig, spec: Any) -> str | None:
    """What is wrong with a ``reference`` block for a method's MetricSpec (one line naming the key), or None.

    The metric must be one the method reports or the ``test_`` twin of a reported ``val_`` metric (what
    ``actionray eval`` reports); a percent metric's value must be a fraction in [0, 1]."""
    metric = reference.metric
    twin = "val_" + metric.removeprefix("test_") if metric.startswith("test_") else metric
    if metric not in spec.reported and twin not in spec.reported:
        tests = [f"test_{m.removeprefix('val_')}" for m in spec.reported if m.startswith("val_")]
        return (f"reference.metric: {metric!r} is not a metric this method reports; choose one of "
                f"{', '.join([*tests, *spec.reported])}")
    if twin in spec.percent and not 0.0 <= reference.value <= 1.0:
        return (f"reference.value: {reference.value} is not a fraction in [0, 1]; {metric} is reported as a "
                f"fraction (write {reference.value / 100:g} for {reference.value:g} %)")
    return None


def load_config(path: str | Path, overrides: list[str] | None = None, *, methods: MethodCatalog) -> ExperimentConfig:
    """Load a YAML experiment config and apply ``a.b=c`` overrides; an empty file is an error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if tree is None:
        raise ConfigError(f"{path}: the file is empty (or only comments); a config needs at least a method "
                          f"section, e.g. configs/demo_tsn.yaml")
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(tree).__name__}")
    # Relative data paths are relative to the working directory (where users run commands), not the
    # config folder: configs/ files name data like "demo_data/train.txt" from the repository root.
    return build_config(tree, overrides, methods=methods, source=str(path), base_dir=Path.cwd())


def dumps(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False)
