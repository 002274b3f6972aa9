"""``actionray demo [NAME]``: the claims demos on generated data (local Ray, MLflow in ./mlflow.db).

NAME is ``order`` (default: the README's main job, GCNet vs TSN on temporal-order classes), ``dclr`` (DCLR vs
plain MoCo vs a random encoder on a background-biased motion task) or ``ftcl`` (FTCL vs ACM-Net on snippet
features of ordered sub-phases). Each prints its table, one verdict line and the wall time; ``--json FILE``
writes the claim, its rule, every seed's value and ``holds``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from actionray.demos import DEMOS, demo_module


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run a claims demo on generated data (default: the main job, GCNet vs TSN on order classes)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", default="order", choices=sorted(DEMOS),
                        help="which demo (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="number of seeds, 0..N-1 (default: order 1, dclr and ftcl 3)")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the claim, rule, arms and verdict here")
    parser.add_argument("--out", default=None, help="folder for tables, previews and predictions "
                                                     "(default: runs/demo, runs/demo_dclr, runs/demo_ftcl)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override applied to every config the demo trains, e.g. train.epochs=2")
    parser.add_argument("--configs", default=None,
                        help="folder holding the demo configs (default: the repository's configs/)")
    parser.add_argument("--tiny", action="store_true",
                        help="a smoke-test size (minutes on 2 cores): shows the path runs, decides nothing")
    order = parser.add_argument_group("order only")
    order.add_argument("--methods", nargs="+", default=None,
                       help="clip classifiers to train and compare (default: tsn gcnet)")
    order.add_argument("--data-only", action="store_true", help="stop after the data stage (no training)")
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Run demo ``args.name``; print its table, verdict and wall time; write ``--json``."""
    module = demo_module(args.name)
    if args.seeds is not None and args.seeds < 1:
        raise SystemExit("error: --seeds must be >= 1")
    start = time.perf_counter()
    result = module.run(args)
    if result is None:  # order --data-only
        return 0
    result.wall_s = time.perf_counter() - start
    print("\n" + result.table() + "\n")
    print(result.verdict())
    if args.json:
        print(f"[done] claim, rule and every seed's value: {Path(args.json).resolve()}")
        result.write(args.json)
    print(f"[done] wall time {result.wall_s / 60:.1f} min; open the runs with:  actionray ui   "
          f"(MLflow UI on http://127.0.0.1:5000)")
    return 0
