"""``actionray demo`` end to end on a tiny setting: generated data, one epoch of TSN, the comparison table."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from actionray.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["train.epochs=1", "data.synth.videos_per_class=3", "data.synth.frames=16", "data.synth.width=64",
        "data.synth.height=48", "data.num_segments=2", "data.input_size=32", "data.scale_size=36",
        "data.batch_size=4", "data.decode_tasks=1", "train.log_every=50"]


@pytest.mark.slow
def test_demo_generates_data_trains_and_prints_the_comparison_table(ray_local, workdir):
    sets = [arg for o in TINY for arg in ("--set", o)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["demo", "--configs", str(REPO / "configs"), "--methods", "tsn", *sets])
    text = out.getvalue()
    assert code == 0, text
    assert (workdir / "demo_data" / "train.txt").is_file() and (workdir / "runs" / "demo" / "preview.png").is_file()
    header = "| method | top-1 temporal-order classes (%) | top-1 appearance classes (%) | top-1 all (%) |"
    assert header in text
    row = re.search(r"^\| tsn \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", text, re.M)
    assert row, text
    temporal, appearance, overall = (float(v) for v in row.groups())
    assert all(0.0 <= v <= 100.0 for v in (temporal, appearance, overall))
    evaluated = re.search(r"\[eval\] tsn: top-1 ([\d.]+)% on (\d+) val videos", text)
    assert evaluated and float(evaluated.group(1)) == overall  # the table's "all" is the evaluation's top-1
    # 8 classes x 1 validation video each (3 per class: the split keeps one for validation).
    groups = 6 * temporal / 100 + 2 * appearance / 100
    assert groups == pytest.approx(int(evaluated.group(2)) * overall / 100, abs=0.06)
    assert (workdir / "runs" / "demo" / "comparison.md").read_text().strip() in text
