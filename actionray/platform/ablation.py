"""Ablation grids: axes -> cells (the full product) x seeds, run as one Tune grid search, summarised as the
papers' table (one row per cell, mean ± std over seeds, best value bold, delta against the baseline row).

An axis is a config key with values (``method.gtm=false,true``) or a named axis from a preset whose values each
set several keys (``method=tsn,tcp`` -> ``{method.name: tcp}``). The baseline row is the cell
whose every value is off (false/0/none) when there is one, else the first cell.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from actionray.platform.config import ConfigError, ExperimentConfig, MethodCatalog, parse_override
from actionray.search_spaces import check_key

# The shipped presets are package data (actionray/ablation_presets/*.yaml): found by name from any folder,
# including a Ray job's working directory; a user's own preset is given by path.
PRESET_DIR = Path(__file__).resolve().parents[1] / "ablation_presets"
OFF_VALUES = (False, 0, None, "off", "none")
GENERIC_LEAVES = ("enabled", "name")  # method.ccl.enabled -> "ccl", method.name -> "model"


@dataclass
class Axis:
    """One ablated factor: ``name`` (config key or preset axis), short tag name, and (label, overrides) values."""

    name: str
    short: str
    values: list[tuple[str, Any, dict[str, Any]]]  # (label, raw value, dotted overrides)
    named: bool = False  # values come from a preset mapping (label alone identifies them)


@dataclass
class Preset:
    """An ablation preset file: grid, named axes, seeds, base overrides and the paper's reference numbers."""

    name: str
    description: str = ""
    grid: dict[str, list[Any]] = field(default_factory=dict)
    axes: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    short: dict[str, str] = field(default_factory=dict)
    seeds: int = 1
    overrides: list[str] = field(default_factory=list)
    requires: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    source: str = "<dict>"


def short_name(key: str) -> str:
    """``method.gtm`` -> ``gtm``, ``method.ccl.enabled`` -> ``ccl`` (tag and variant names)."""
    parts = key.split(".")
    if len(parts) > 1 and parts[-1] in GENERIC_LEAVES:
        return parts[-2]
    return parts[-1]


def value_label(value: Any) -> str:
    """Text of a grid value in tables and tags (booleans as on/off)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def is_off(value: Any) -> bool:
    return any(value is off or (not isinstance(value, bool) and value == off) for off in OFF_VALUES)


def load_preset(name_or_path: str | Path) -> Preset:
    """A preset by name (``actionray/ablation_presets/<name>.yaml``) or path; unknown fields raise ConfigError."""
    path = Path(name_or_path)
    presets = PRESET_DIR
    if not str(name_or_path).endswith((".yaml", ".yml")):
        path = presets / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in presets.glob("*.yaml")) if presets.is_dir() else []
        raise ConfigError(f"ablation preset not found: {path} (known in {presets}: {', '.join(known) or 'none'})")
    tree = yaml.safe_load(path.read_text()) or {}
    allowed = set(Preset.__dataclass_fields__) - {"name", "source"}
    unknown = set(tree) - allowed
    if unknown:
        raise ConfigError(f"{path}: unknown preset field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return Preset(name=path.stem, source=str(path), **tree)


def parse_grid_item(text: str) -> tuple[str, list[Any]]:
    """``method.gtm=true,false`` -> ('method.gtm', [True, False]); values parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--grid {text!r}: expected KEY=V1,V2 (e.g. method.gtm=false,true)")
    key, raw = text.split("=", 1)
    values = [parse_override(f"x={part.strip()}")[1] for part in raw.split(",") if part.strip()]
    if len(values) < 1:
        raise ConfigError(f"--grid {text!r}: no values after '='")
    return key.strip(), values


def build_axes(grid: dict[str, list[Any]], preset: Preset | None = None, *, catalog: MethodCatalog) -> list[Axis]:
    """Axes in the given order; keys must be config keys or named axes of the preset."""
    named = preset.axes if preset else {}
    shorts = preset.short if preset else {}
    source = preset.source if preset else "--grid"
    axes = []
    for key, values in grid.items():
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{source}: axis {key!r} repeats a value: {values}")
        if key in named:
            options = named[key]
            missing = [v for v in values if str(v) not in options]
            if missing:
                raise ConfigError(f"{source}: axis {key!r} has no value(s) {missing}; defined: {sorted(options)}")
            for label, overrides in options.items():
                for dotted in overrides:
                    check_key(dotted, f"{source}: axes.{key}.{label}", catalog)
            axes.append(Axis(key, shorts.get(key, key), [(str(v), str(v), dict(options[str(v)])) for v in values],
                             named=True))
        else:
            check_key(key, source, catalog)
            axes.append(Axis(key, shorts.get(key, short_name(key)),
                             [(value_label(v), v, {key: v}) for v in values]))
    if not axes:
        raise ConfigError("an ablation needs at least one --grid axis (or a preset with a grid)")
    return axes


def variant_name(axes: list[Axis], picks: tuple[tuple[str, Any, dict[str, Any]], ...]) -> str:
    """``gtm1-ccl0`` style id: booleans as short+0/1, named axes by label, other values as short+value."""
    parts = []
    for axis, (label, raw, _) in zip(axes, picks):
        if isinstance(raw, bool):
            parts.append(f"{axis.short}{int(raw)}")
        elif axis.named:
            parts.append(label)
        else:
            parts.append(f"{axis.short}{label}")
    return "-".join(parts)


def build_cells(axes: list[Axis]) -> list[dict[str, Any]]:
    """Every combination of axis values, in grid order: index, variant, axis labels, dotted overrides."""
    cells = []
    for index, picks in enumerate(itertools.product(*(axis.values for axis in axes))):
        overrides: dict[str, Any] = {}
        for _, _, values in picks:
            overrides.update(values)
        cells.append({"index": index, "variant": variant_name(axes, picks),
                      "axes": {axis.short: label for axis, (label, _, _) in zip(axes, picks)},
                      "off": all(is_off(raw) for _, raw, _ in picks),
                      "overrides": overrides})
    return cells


def baseline_cell(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The all-off cell when the grid has one (the papers' "baseline" row), else the first cell."""
    return next((cell for cell in cells if cell.get("off")), cells[0])


def validate_cells(cfg: ExperimentConfig, cells: list[dict[str, Any]], source: str) -> None:
    """Build every cell's config now, so a bad value fails before any trial starts."""
    for cell in cells:
        try:
            cfg.with_overrides(cell["overrides"])
        except ConfigError as error:
            problems = str(error).replace("invalid config <overrides>:", "").replace("\n", " ").strip()
            raise ConfigError(f"{source}: cell {cell['variant']} is not a valid config: {problems}") from None


def check_requires(cfg: ExperimentConfig, preset: Preset) -> None:
    """A preset's ``requires`` (e.g. method.name: gcnet) must hold for the config it runs on."""
    flat = cfg.flat()
    for key, wanted in preset.requires.items():
        if flat.get(key) != wanted:
            raise ConfigError(f"{preset.source}: requires {key}={wanted!r}, but the config has {flat.get(key)!r} "
                              f"(use a config for that method or --set {key}=...)")


def run_ablation(cfg: ExperimentConfig, axes: list[Axis], *, seeds: int = 1, preset: Preset | None = None,
                 name: str | None = None, max_concurrent: int | None = None, resume: bool = False,
                 metrics: tuple[str, ...] | None = None, echo=print) -> dict[str, Any]:
    """Run every cell x seed as one Tune grid search; log the table (md/csv/html), chart and rows to MLflow.
    ``metrics`` (default: the method's table metrics, its primary first) are the table's columns."""
    import pandas as pd
    from ray import tune

    from actionray.platform import report
    from actionray.platform.tune import (close_running_children, ensure_ray_for_trials, finalize_children,
                                         group_name, open_parent, plan_concurrency, run_trials,
                                         stop_if_interrupted)

    cells = build_cells(axes)
    validate_cells(cfg, cells, preset.source if preset else "--grid")
    spec = cfg.recipe.metrics(cfg)
    metrics = tuple(metrics or spec.table)
    base = baseline_cell(cells)
    cluster = ensure_ray_for_trials(cfg, max_concurrent)
    need, concurrent = plan_concurrency(cfg, cluster, max_concurrent)
    label = preset.name if preset else "-".join(axis.short for axis in axes)
    group = group_name(name or f"{cfg.name}-ablation-{label}", cfg.train.storage_path, resume)
    reference = (preset.reference if preset else {}) or {}
    seed_values = [cfg.train.seed + i for i in range(seeds)]
    parent = open_parent(cfg, group, "ablation", {
        "actionray.axes": json.dumps([axis.short for axis in axes]),
        "actionray.grid": json.dumps({axis.name: [v[0] for v in axis.values] for axis in axes}),
        "actionray.baseline": base["variant"], "actionray.primary": metrics[0],
        "actionray.metrics": json.dumps(list(metrics)), "actionray.seeds": json.dumps(seed_values),
        "actionray.percent": json.dumps(sorted(spec.percent)),
        "actionray.preset": label, "actionray.reference": json.dumps(reference) if reference else None,
        **{f"axis.{axis.short}": ",".join(v[0] for v in axis.values) for axis in axes}}, resume)
    echo(f"ablation {group}: {len(cells)} cells x {seeds} seed(s) = {len(cells) * seeds} trials, "
         f"{concurrent} at once (one needs {need.cpu:g} CPU, {need.gpu:g} GPU), baseline {base['variant']}, "
         f"MLflow parent {parent.run_id}")
    try:
        results = run_trials(cfg, {"cell": tune.grid_search(cells), "seed": tune.grid_search(seed_values)},
                             group=group, parent_run_id=parent.run_id, num_samples=1,
                             max_concurrent=concurrent, need=need, resume=resume)
    except BaseException:
        close_running_children(parent, "FAILED")
        parent.end("FAILED")
        raise
    finalize_children(parent, results, cfg.train.epochs)
    stop_if_interrupted(cfg, group, len(cells) * len(seed_values), parent, "ablation")
    rows, errors = [], []
    for result in results:
        cell, seed = result.config["cell"], result.config["seed"]
        if result.error:
            errors.append(f"{cell['variant']} seed {seed}: {type(result.error).__name__}: {result.error}"[:300])
            continue
        rows.append({"variant": cell["variant"], "seed": seed, **{m: (result.metrics or {}).get(m) for m in metrics}})
    runs = pd.DataFrame(rows, columns=["variant", "seed", *metrics])
    table = report.ablation_table(runs, cells, metrics=metrics, primary=metrics[0], baseline=base["variant"],
                                  percent=tuple(spec.percent))
    if reference:
        report.add_reference(table, reference)
    title = f"ablation {group}" + (f" ({preset.description})" if preset and preset.description else "")
    text = report.render_ablation(table, title)
    if parent.active:
        parent.log_text(text, "ablation/table.md")
        parent.log_text(report.render_ablation(table, title, "html"), "ablation/table.html")
        parent.log_text(table.to_csv(index=False), "ablation/table.csv")
        parent.log_table(runs, "ablation/runs.json")
        parent.log_figure(report.bar_chart(table, group), f"ablation/{metrics[0]}.png")
    parent.end("FAILED" if errors else "FINISHED")
    for line in errors:
        echo(f"trial failed: {line}")
    echo(text)
    return {"group": group, "table": table, "runs": runs, "errors": errors, "parent_run_id": parent.run_id,
            "text": text}


__all__ = ["Axis", "Preset", "load_preset", "parse_grid_item", "build_axes", "build_cells",
           "baseline_cell", "validate_cells", "check_requires", "short_name", "run_ablation"]
