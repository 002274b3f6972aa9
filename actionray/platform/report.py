"""Tables of finished sweeps and ablations: rendering (Markdown, HTML, CSV, bar chart) and rebuilding them from
MLflow child runs, so any finished group can be re-rendered (``actionray report``) without the stored table.

Accuracy metrics are shown in percent (the loop reports fractions); losses as reported.
"""

from __future__ import annotations

import html
import json
import math
import re
from typing import TYPE_CHECKING, Any

from actionray.platform.config import ConfigError

if TYPE_CHECKING:
    import pandas as pd

# Tables made before the metric tags existed (and reports of such runs) fall back to the classifier metrics.
LEGACY_METRICS = ("val_top1", "val_top5", "val_mean_class_acc")
LEGACY_PERCENT = ("val_top1", "val_top5", "val_mean_class_acc", "train_top1")
KIND_TAG, GROUP_TAG = "actionray.kind", "actionray.group"


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN for a single seed)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std


def mean_std_text(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` of ``values`` x ``scale`` (sample std; 0 shown for a single value), e.g. for seeds' accuracies."""
    mean, std = _mean_std([scale * v for v in values])
    return f"{mean:.{digits}f} ± {0.0 if math.isnan(std) else std:.{digits}f}"


def ablation_table(runs: "pd.DataFrame", cells: list[dict[str, Any]], *, metrics: tuple[str, ...],
                   primary: str, baseline: str, percent: tuple[str, ...] = ()) -> "pd.DataFrame":
    """One row per cell (grid order) from per-run rows (columns ``variant``, ``seed`` and the metrics).

    Columns: ``variant``, one per axis, ``seeds``, ``<metric>_mean`` / ``<metric>_std`` (metrics in ``percent``
    are fractions shown x100) and ``delta`` (primary mean minus the baseline row's, in the same units).
    """
    import pandas as pd

    rows = []
    for cell in cells:
        group = runs[runs["variant"] == cell["variant"]]
        row: dict[str, Any] = {"variant": cell["variant"], **cell["axes"], "seeds": int(len(group))}
        for metric in metrics:
            scale = 100.0 if metric in percent else 1.0
            values = [float(v) * scale for v in group[metric].dropna()] if metric in group else []
            mean, std = _mean_std(values) if values else (float("nan"), float("nan"))
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
        rows.append(row)
    table = pd.DataFrame(rows)
    base = table.loc[table["variant"] == baseline, f"{primary}_mean"]
    table["delta"] = table[f"{primary}_mean"] - (float(base.iloc[0]) if len(base) else float("nan"))
    table.attrs.update(baseline=baseline, primary=primary, metrics=list(metrics), percent=list(percent),
                       axes=[k for k in cells[0]["axes"]] if cells else [])
    return table


def _number(value: float, digits: int = 2) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def ablation_cells_text(table, bold: str = "**") -> list[dict[str, str]]:
    """Table rows as display strings: ``mean ± std``, the best mean per metric wrapped in ``bold``."""
    metrics = table.attrs.get("metrics", list(LEGACY_METRICS))
    axes = table.attrs.get("axes", [])
    baseline = table.attrs.get("baseline")
    primary = table.attrs.get("primary", "val_top1")
    best = {m: table[f"{m}_mean"].max(skipna=True) for m in metrics}
    close, rows = "</b>" if bold == "<b>" else bold, []
    for _, row in table.iterrows():
        text = {"variant": str(row["variant"]), **{a: str(row[a]) for a in axes}, "seeds": str(row["seeds"])}
        for m in metrics:
            mean, std = row[f"{m}_mean"], row[f"{m}_std"]
            cell = _number(mean) + (f" ± {_number(std)}" if not math.isnan(std) else "")
            text[m] = f"{bold}{cell}{close}" if cell and not math.isnan(best[m]) and mean == best[m] else cell
        text[f"Δ {primary}"] = "baseline" if row["variant"] == baseline else (
            f"{row['delta']:+.2f}" if not math.isnan(row["delta"]) else "")
        for column in table.attrs.get("reference_columns", []):
            text[column] = _number(row.get(column, float("nan")), 1)
        rows.append(text)
    return rows


def markdown_table(rows: list[dict[str, str]]) -> str:
    """A GitHub-style Markdown table from rows of strings (columns from the first row)."""
    if not rows:
        return "(no rows)\n"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row.get(c, "") for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def html_table(rows: list[dict[str, str]], title: str = "", note: str = "") -> str:
    """A standalone HTML page with one table (cells may already contain <b> for the best values)."""
    columns = list(rows[0]) if rows else []

    def keep_bold(text: str) -> str:  # escape everything except the <b> we put there
        return html.escape(text).replace("&lt;b&gt;", "<b>").replace("&lt;/b&gt;", "</b>")

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{keep_bold(row.get(c, ''))}</td>" for c in columns) + "</tr>"
                   for row in rows)
    style = ("table{border-collapse:collapse;font-family:sans-serif}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}th{background:#f3f3f3}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h2>{html.escape(title)}</h2><p>{html.escape(note)}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>\n")


def add_reference(table, reference: dict[str, Any]) -> None:
    """Append a preset's paper numbers as ``paper <column>`` columns (rows keyed by variant)."""
    columns = [f"paper {c}" for c in reference.get("columns", [])]
    for i, column in enumerate(columns):
        table[column] = [float(reference.get("rows", {}).get(v, [math.nan] * len(columns))[i])
                         for v in table["variant"]]
    table.attrs["reference_columns"] = columns


def bar_chart(table, title: str = ""):
    """Bar chart of the primary metric per cell with ± std error bars and the baseline as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary = table.attrs.get("primary", "val_top1")
    means, stds = table[f"{primary}_mean"], table[f"{primary}_std"].fillna(0.0)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(table)), 3.5))
    ax.bar(table["variant"], means, yerr=stds, capsize=4, color="#4c72b0")
    base = table.loc[table["variant"] == table.attrs.get("baseline"), f"{primary}_mean"]
    if len(base):
        ax.axhline(float(base.iloc[0]), color="gray", linestyle="--", linewidth=1, label="baseline")
        ax.legend(loc="lower right")
    ax.set_ylabel(f"{primary} (%)" if primary in table.attrs.get("percent", LEGACY_PERCENT) else primary)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def sweep_table(rows: list[dict[str, Any]], keys: list[str], metric: str, mode: str,
                metrics: tuple[str, ...] | None = None, percent: tuple[str, ...] = LEGACY_PERCENT):
    """One row per trial (``run``, ``status``, sampled ``keys``, ``metrics``), best first; ``percent`` metrics
    (fractions) x100."""
    import pandas as pd

    metrics = tuple(metrics or (*LEGACY_METRICS, "val_loss", "train_loss", "epoch"))
    table = pd.DataFrame(rows)
    for column in list(keys) + list(metrics):
        if column not in table:
            table[column] = math.nan
    for column in percent:
        if column in table:
            table[column] = pd.to_numeric(table[column], errors="coerce") * 100.0
    table = table.sort_values([metric, "run"], ascending=[mode == "min", True], na_position="last")
    table = table.reset_index(drop=True)
    table = table[["run", "status", *keys, *metrics]]
    table.attrs.update(metric=metric, mode=mode, keys=list(keys), percent=list(percent))
    return table


def sweep_rows_text(table) -> list[dict[str, str]]:
    """Display strings for a sweep table (numbers to 4 significant digits, the best row's metric bold)."""
    rows = []
    for i, row in table.iterrows():
        text = {}
        for column, value in row.items():
            if isinstance(value, float):
                text[column] = "" if math.isnan(value) else f"{value:.4g}"
            else:
                text[column] = str(value)
        if i == 0 and text.get(table.attrs["metric"]):
            text[table.attrs["metric"]] = f"**{text[table.attrs['metric']]}**"
        rows.append(text)
    return rows


# --- MLflow side: find a group's parent run, read its children --------------------------------------------


def mlflow_client(tracking_uri: str):
    """An MlflowClient with the short HTTP retry defaults (a dead server fails in seconds)."""
    from mlflow.tracking import MlflowClient

    from actionray.platform.tracking import configure_http_env

    configure_http_env()
    return MlflowClient(tracking_uri=tracking_uri)


def find_parent(tracking_uri: str, experiment: str, run_id_or_name: str, kind: str):
    """The parent run of a sweep/ablation by run id, or the newest parent with that run name."""
    client = mlflow_client(tracking_uri)
    if re.fullmatch(r"[0-9a-f]{32}", run_id_or_name):
        run = client.get_run(run_id_or_name)
    else:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise ConfigError(f"MLflow experiment {experiment!r} not found at {tracking_uri}")
        escaped = run_id_or_name.replace("'", "\\'")
        found = client.search_runs([exp.experiment_id], f"attributes.run_name = '{escaped}' and "
                                   f"tags.`{KIND_TAG}` = '{kind}'", order_by=["attributes.start_time DESC"],
                                   max_results=1)
        if not found:
            raise ConfigError(f"no {kind} run named {run_id_or_name!r} in experiment {experiment!r} at {tracking_uri}")
        run = found[0]
    if run.data.tags.get(KIND_TAG) != kind:
        raise ConfigError(f"run {run.info.run_id} is not a {kind} (tag {KIND_TAG}={run.data.tags.get(KIND_TAG)!r})")
    return run


def child_runs(tracking_uri: str, parent) -> list:
    """Every child run of ``parent`` (all pages), oldest first."""
    client = mlflow_client(tracking_uri)
    runs, token = [], None
    while True:
        page = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                  order_by=["attributes.start_time ASC"], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def ablation_from_mlflow(tracking_uri: str, parent, *, finished_only: bool = True):
    """Rebuild the ablation table from the parent's child runs (tags ``variant``, ``seed``, ``axis.*``)."""
    import pandas as pd

    tags = parent.data.tags
    axes = json.loads(tags.get("actionray.axes", "[]"))
    metrics = tuple(json.loads(tags.get("actionray.metrics", json.dumps(list(LEGACY_METRICS)))))
    percent = tuple(json.loads(tags.get("actionray.percent", json.dumps(list(LEGACY_PERCENT)))))
    cells: dict[str, dict[str, Any]] = {}
    rows = []
    for run in child_runs(tracking_uri, parent):
        t = run.data.tags
        if finished_only and run.info.status != "FINISHED":
            continue
        variant = t["variant"]
        cells.setdefault(variant, {"index": int(t.get("actionray.cell", len(cells))), "variant": variant,
                                   "axes": {a: t.get(f"axis.{a}", "") for a in axes}})
        rows.append({"variant": variant, "seed": int(t.get("seed", 0)),
                     **{m: run.data.metrics.get(m, math.nan) for m in metrics}})
    if not rows:
        raise ConfigError(f"ablation {parent.info.run_id}: no finished child runs")
    ordered = sorted(cells.values(), key=lambda c: c["index"])
    table = ablation_table(pd.DataFrame(rows), ordered, metrics=metrics, primary=tags.get("actionray.primary",
                           metrics[0]), baseline=tags.get("actionray.baseline", ordered[0]["variant"]), percent=percent)
    if tags.get("actionray.reference"):
        add_reference(table, json.loads(tags["actionray.reference"]))
    return table


def sweep_from_mlflow(tracking_uri: str, parent):
    """Rebuild the sweep table (all trials, best first) from the parent's child runs."""
    tags = parent.data.tags
    keys = json.loads(tags.get("actionray.sweep_keys", "[]"))
    metrics = tuple(json.loads(tags.get("actionray.metrics", json.dumps([*LEGACY_METRICS, "val_loss", "train_loss",
                                                                         "epoch"]))))
    percent = tuple(json.loads(tags.get("actionray.percent", json.dumps(list(LEGACY_PERCENT)))))
    rows = []
    for run in child_runs(tracking_uri, parent):
        rows.append({"run": run.info.run_name, "status": run.info.status,
                     **{k: run.data.params.get(k) for k in keys},
                     **{m: run.data.metrics.get(m, math.nan) for m in metrics}})
    if not rows:
        raise ConfigError(f"sweep {parent.info.run_id}: no child runs")
    return sweep_table(rows, keys, tags.get("actionray.metric", "val_top1"), tags.get("actionray.mode", "max"),
                       metrics, percent)


def data_inputs_of(run) -> tuple[tuple[str, str, str], ...]:
    """(context, name, digest) of each MLflow dataset input of a run (``Tracker.log_data_inputs``), sorted."""
    inputs = run.inputs.dataset_inputs if run.inputs is not None else []
    return tuple(sorted((next((t.value for t in d.tags if t.key == "mlflow.data.context"), ""), d.dataset.name,
                         d.dataset.digest) for d in inputs))


def data_note(rows: list[tuple[str, Any]]) -> str | None:
    """A warning when the runs behind a table's rows (``[(row label, MLflow run), ...]``) read different data
    (other dataset-input digests), naming the rows of each data set; None when they agree or none was recorded."""
    groups: dict[tuple, list[str]] = {}
    for label, run in rows:
        groups.setdefault(data_inputs_of(run), []).append(label)
    if len(groups) <= 1:
        return None
    lines = ["WARNING: the rows of this table used different data (MLflow dataset inputs differ):"]
    for inputs, labels in groups.items():
        what = "; ".join(f"{context} {name} digest {digest}" for context, name, digest in inputs)
        lines.append(f"- {what or 'no dataset inputs recorded'}: {', '.join(labels)}")
    return "\n".join(lines)


def render_ablation(table, title: str, fmt: str = "markdown") -> str:
    """``markdown`` (terminal and README) or ``html`` text of an ablation table."""
    note = (f"mean ± std over seeds (sample std), fractions in %; bold = best per column; "
            f"Δ against {table.attrs.get('baseline')}")
    if fmt == "html":
        return html_table(ablation_cells_text(table, bold="<b>"), title, note)
    return f"{title}\n\n{markdown_table(ablation_cells_text(table))}\n{note}\n"


def render_sweep(table, title: str, fmt: str = "markdown") -> str:
    """``markdown`` or ``html`` text of a sweep table (best trial first)."""
    rows = sweep_rows_text(table)
    note = f"sorted by {table.attrs['metric']} ({table.attrs['mode']}); fractions in %"
    if fmt == "html":
        return html_table([{k: v.replace("**", "") for k, v in r.items()} for r in rows], title, note)
    return f"{title}\n\n{markdown_table(rows)}\n{note}\n"


def report(kind: str, run_id_or_name: str, *, tracking_uri: str, experiment: str, fmt: str = "markdown") -> str:
    """Re-render a finished sweep (``kind="sweep"``) or ablation from its MLflow child runs."""
    parent = find_parent(tracking_uri, experiment, run_id_or_name, kind)
    title = f"{kind} {parent.info.run_name} ({parent.info.run_id})"
    if kind == "ablation":
        text = render_ablation(ablation_from_mlflow(tracking_uri, parent), title, fmt)
        runs = [(f"{r.data.tags.get('variant')} seed {r.data.tags.get('seed', 0)}", r)
                for r in child_runs(tracking_uri, parent) if r.info.status == "FINISHED"]
    else:
        text = render_sweep(sweep_from_mlflow(tracking_uri, parent), title, fmt)
        runs = [(r.info.run_name, r) for r in child_runs(tracking_uri, parent)]
    note = data_note(runs)
    if note is None:
        return text
    return text + (f"<pre>{html.escape(note)}</pre>\n" if fmt == "html" else f"\n{note}\n")


__all__ = ["ablation_table", "mlflow_client", "ablation_cells_text", "markdown_table", "html_table", "add_reference", "bar_chart", "sweep_table",
           "find_parent", "child_runs", "ablation_from_mlflow", "sweep_from_mlflow", "render_ablation",
           "render_sweep", "report", "data_inputs_of", "data_note"]
