"""FTCL demo: ACM-Net (stage 1) and FTCL on ACM-Net (stage 2, initialised from stage 1's best checkpoint) on the
generated snippet features, test detection mAP of both, mean ± std over seeds (configs/demo_acmnet.yaml,
configs/demo_ftcl.yaml).

    python scripts/demo_ftcl.py [--seeds 0 1 2] [--set KEY=VALUE ...]

Per seed: train ACM-Net (Ray Train), test its best checkpoint (Ray Data batch inference, proposals, mAP), train
FTCL from it, test that. Both stages select checkpoints on a validation split carved from the training videos
(``method.selection: holdout``), so the test numbers are clean. Every run is tracked in MLflow (``actionray ui``).
Prints one line per stage and the comparison table; writes it to runs/demo_ftcl/comparison.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from actionray.config import load_config
from actionray.platform.report import mean_std_text
from actionray.platform.train import fit

ROOT = Path(__file__).resolve().parents[1]


def stage(config: str, seed: int, stamp: str, overrides: list[str]) -> tuple[dict, str]:
    """Train one stage and test its best checkpoint; returns (test metrics, best checkpoint)."""
    name = f"{Path(config).stem}-s{seed}-{stamp}"
    cfg = load_config(ROOT / "configs" / config, [f"train.seed={seed}", f"train.run_name={name}", *overrides])
    cfg.recipe.prepare_inputs(cfg)  # the generated feature set, on first use
    summary = fit(cfg)
    best = summary["best_checkpoint"] or summary["latest_checkpoint"]
    evaluation = cfg.recipe.test(cfg, checkpoint=best, reference_layout=None,
                                 output=str(ROOT / "runs/demo_ftcl" / f"{name}_predictions.json"))
    metrics = evaluation.metrics
    print(f"[demo_ftcl] seed {seed} {cfg.method.name}: test mAP@0.5 {100 * metrics['test_map_0.5']:.1f} | "
          f"avg mAP (0.1-0.7) {100 * metrics['test_map_avg']:.1f} (best val_map_avg checkpoint) | last epoch's "
          f"val_map_avg {100 * summary['final'].get('val_map_avg', float('nan')):.1f}", flush=True)
    return metrics, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override for both stages (e.g. train.epochs=2)")
    args = parser.parse_args()
    os.chdir(ROOT)  # the demo configs' paths (demo_features/, runs/) are relative to the repository
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    rows = []
    for seed in args.seeds:
        acm, best = stage("demo_acmnet.yaml", seed, stamp, args.overrides)
        ftcl, _ = stage("demo_ftcl.yaml", seed, stamp, [*args.overrides, f"method.init_checkpoint={best}"])
        rows.append({"seed": seed, "acmnet": acm, "ftcl": ftcl})

    def stats(method: str, key: str) -> str:
        return mean_std_text([r[method][key] for r in rows])

    print(f"\n| method | test mAP@0.5 (%) | test avg mAP 0.1-0.7 (%) |   mean ± std over seeds {args.seeds}")
    print("|---|---|---|")
    for method, label in (("acmnet", "ACM-Net"), ("ftcl", "FTCL on ACM-Net")):
        print(f"| {label} | {stats(method, 'test_map_0.5')} | {stats(method, 'test_map_avg')} |")
    out = ROOT / "runs/demo_ftcl"
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
