"""Ablations: grid -> cells, the papers' table (mean ± std, best bold, delta vs baseline), and a real 2x2 grid
with one seed on the demo TSN config, checked against its MLflow child runs."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import pandas as pd
import pytest

from actionray.cli import main
from actionray.config import METHODS, ConfigError, load_config
from actionray.platform.ablation import (baseline_cell, build_axes, build_cells, load_preset, parse_grid_item,
                                         validate_cells)
from actionray.platform.report import ablation_cells_text, ablation_table, render_ablation

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "demo_tsn.yaml")
PRESETS = REPO / "actionray" / "ablation_presets"
CLASSIFIER = {"metrics": ("val_top1", "val_top5", "val_mean_class_acc"), "primary": "val_top1",
              "percent": ("val_top1", "val_top5", "val_mean_class_acc")}


def cells_of(*items: str) -> list[dict]:
    return build_cells(build_axes(dict(parse_grid_item(i) for i in items), catalog=METHODS))


def test_cells_are_the_full_product_in_grid_order_with_short_variant_names():
    cells = cells_of("method.gtm=true,false", "method.ccl.enabled=false,true")
    assert [c["variant"] for c in cells] == ["gtm1-ccl0", "gtm1-ccl1", "gtm0-ccl0", "gtm0-ccl1"]
    assert cells[1]["overrides"] == {"method.gtm": True, "method.ccl.enabled": True}
    assert cells[1]["axes"] == {"gtm": "on", "ccl": "on"}


def test_baseline_is_the_all_off_cell_when_there_is_one():
    assert baseline_cell(cells_of("method.gtm=true,false", "method.ccl.enabled=true,false"))["variant"] == "gtm0-ccl0"


def test_baseline_is_the_first_cell_without_an_all_off_cell():
    assert baseline_cell(cells_of("optim.lr=0.01,0.1"))["variant"] == "lr0.01"


def test_a_named_preset_axis_value_sets_several_keys():
    preset = load_preset(PRESETS / "tcp_head.yaml")
    cells = build_cells(build_axes({"method": ["tsn", "tcp"]}, preset, catalog=METHODS))
    assert [c["variant"] for c in cells] == ["tsn", "tcp"]
    assert cells[1]["overrides"] == {"method.name": "tcp"}
    validate_cells(load_config(DEMO), cells, "test")


def test_a_cell_whose_method_lacks_a_key_is_rejected_before_running():
    cells = cells_of("method.name=gcnet,tsn")
    base = load_config(DEMO).with_overrides(["method.name=gcnet", "method.gtm=false"])
    with pytest.raises(ConfigError, match="cell methodtsn .*method.gtm: unknown key"):
        validate_cells(base, cells, "--grid")


def test_unknown_grid_key_is_rejected_with_close_matches():
    with pytest.raises(ConfigError, match="did you mean: method.gtm"):
        build_axes({"method.gtn": [True, False]}, catalog=METHODS)


def test_gcnet_preset_is_the_gtm_by_ccl_grid_with_the_paper_numbers():
    preset = load_preset(PRESETS / "gcnet_ablation.yaml")
    cells = build_cells(build_axes(preset.grid, preset, catalog=METHODS))
    assert [c["variant"] for c in cells] == ["gtm0-ccl0", "gtm0-ccl1", "gtm1-ccl0", "gtm1-ccl1"]
    assert preset.reference["rows"]["gtm1-ccl1"] == [59.9, 88.6] and preset.requires == {"method.name": "gcnet"}


def test_preset_with_an_unknown_field_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("grid: {method.gtm: [true]}\nseed: 3\n")
    with pytest.raises(ConfigError, match="unknown preset field"):
        load_preset(path)


def test_table_has_mean_and_sample_std_over_seeds_and_delta_against_baseline():
    cells = cells_of("method.gtm=false,true")
    runs = pd.DataFrame({"variant": ["gtm0", "gtm0", "gtm1", "gtm1"], "seed": [0, 1, 0, 1],
                         "val_top1": [0.50, 0.60, 0.70, 0.80], "val_top5": [0.9] * 4, "val_mean_class_acc": [0.5] * 4})
    table = ablation_table(runs, cells, baseline="gtm0", **CLASSIFIER)
    row = table.set_index("variant").loc["gtm1"]
    assert row["val_top1_mean"] == pytest.approx(75.0) and row["val_top1_std"] == pytest.approx(math.sqrt(50.0))
    assert row["delta"] == pytest.approx(20.0) and row["seeds"] == 2


def test_rendered_table_bolds_the_best_value_and_marks_the_baseline():
    cells = cells_of("method.gtm=false,true")
    runs = pd.DataFrame({"variant": ["gtm0", "gtm1"], "seed": [0, 0], "val_top1": [0.5, 0.75],
                         "val_top5": [0.9, 0.8], "val_mean_class_acc": [0.5, 0.5]})
    rows = ablation_cells_text(ablation_table(runs, cells, baseline="gtm0", **CLASSIFIER))
    assert rows[1]["val_top1"] == "**75.00**" and rows[0]["val_top5"] == "**90.00**"
    assert rows[0]["Δ val_top1"] == "baseline" and rows[1]["Δ val_top1"] == "+25.00"
    assert "<b>75.00</b>" in render_ablation(ablation_table(runs, cells, baseline="gtm0", **CLASSIFIER), "t", "html")


# --- a real 2x2 ablation, one seed ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ablation(ray_local, synth_videos, tmp_path_factory):
    """``actionray ablate`` over method.label_smoothing (0.1, then the all-off 0.0) on the shrunk demo config, both
    cells at once. Two cells, not a 2 x 2 grid: the product and the variant names are checked without Ray above,
    and each Ray cell costs about 45 CPU-seconds of the suite's budget."""
    from mlflow.tracking import MlflowClient

    from test_tune import tiny_overrides

    root = tmp_path_factory.mktemp("ablation")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    sets = [arg for o in tiny_overrides(synth_videos, root, uri) for arg in ("--set", o)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["ablate", DEMO, "--grid", "method.label_smoothing=0.1,0.0",
                     "--seeds", "1", "--name", "ls", "--max-concurrent", "2", *sets,
                     "--set", "scaling.cpus_per_worker=0.5"])
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("actionray")
    parent = client.search_runs([exp.experiment_id], "tags.`actionray.kind` = 'ablation'")[0]
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return {"code": code, "out": out.getvalue(), "client": client, "parent": parent, "children": children,
            "uri": uri, "root": root}


VARIANTS = {"label_smoothing0.1", "label_smoothing0.0"}


@pytest.mark.slow
def test_ablation_logs_one_child_per_cell_tagged_for_filtering(ablation):
    assert ablation["code"] == 0, ablation["out"]
    children = ablation["children"]
    assert {c.data.tags["variant"] for c in children} == VARIANTS
    for child in children:
        tags, params = child.data.tags, child.data.params
        assert tags["axis.label_smoothing"] == params["method.label_smoothing"]
        assert tags["seed"] == "0" and child.info.status == "FINISHED"
    assert ablation["parent"].data.tags["actionray.baseline"] == "label_smoothing0.0"


@pytest.mark.slow
def test_ablation_table_artifact_matches_the_child_runs(ablation):
    client, parent = ablation["client"], ablation["parent"]
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "ablation/table.csv", str(ablation["root"])))
    metric = {c.data.tags["variant"]: c.data.metrics for c in ablation["children"]}
    assert list(table["variant"]) == ["label_smoothing0.1", "label_smoothing0.0"]  # grid order kept
    base = 100 * metric["label_smoothing0.0"]["val_top1"]
    for _, row in table.iterrows():
        for name in ("val_top1", "val_top5", "val_mean_class_acc"):
            assert row[f"{name}_mean"] == pytest.approx(100 * metric[row["variant"]][name])
        assert row["delta"] == pytest.approx(100 * metric[row["variant"]]["val_top1"] - base)


@pytest.mark.slow
def test_ablation_parent_holds_markdown_html_csv_and_a_bar_chart(ablation):
    paths = {a.path for a in ablation["client"].list_artifacts(ablation["parent"].info.run_id, "ablation")}
    assert paths >= {"ablation/table.md", "ablation/table.html", "ablation/table.csv", "ablation/runs.json",
                     "ablation/val_top1.png"}


@pytest.mark.slow
def test_report_rerenders_the_same_table_from_child_runs(ablation, tmp_path):
    client, parent = ablation["client"], ablation["parent"]
    stored = Path(client.download_artifacts(parent.info.run_id, "ablation/table.md", str(tmp_path))).read_text()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", "--ablation", "ls", "--tracking-uri", ablation["uri"]]) == 0
    table_lines = lambda text: [row for row in text.splitlines() if row.startswith("|")]  # noqa: E731
    assert table_lines(out.getvalue()) == table_lines(stored) and len(table_lines(stored)) == 4
    html = tmp_path / "t.html"
    assert main(["report", "--ablation", parent.info.run_id, "--html", str(html), "--tracking-uri", ablation["uri"]]) == 0
    assert "<table>" in html.read_text() and all(v in html.read_text() for v in VARIANTS)


def test_preset_name_resolves_outside_the_repository_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the shipped presets are package data, found from any folder
    assert load_preset("gcnet_ablation").grid == {"method.gtm": [False, True], "method.ccl.enabled": [False, True]}
