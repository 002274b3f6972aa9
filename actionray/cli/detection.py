"""``actionray eval-detection --gt GT.json --pred PRED.json``: score temporal detections by mAP at tIoU thresholds."""

from __future__ import annotations

import argparse
import json
import sys


def _thresholds(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tiou {text!r}: expected comma-separated numbers, e.g. 0.3,0.5") from None


def _eval_detection(args: argparse.Namespace) -> int:
    from actionray.platform.detection import DEFAULT_TIOU_THRESHOLDS, evaluate_detection, format_detection_table

    try:
        result = evaluate_detection(args.gt, args.pred, subset=args.subset,
                                    tiou_thresholds=args.tiou or DEFAULT_TIOU_THRESHOLDS)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_detection_table(result))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json_out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``actionray eval-detection``."""
    cmd = subparsers.add_parser(
        "eval-detection", help="temporal detection mAP of a predictions JSON against a gt.json",
        description="mAP per tIoU threshold (default 0.1..0.9) and the average over 0.1-0.7 with ActivityNet "
                    "ANETDetection semantics (all GT videos of --subset count; equal scores keep file order). "
                    "Exit 2 with one 'error:' line on unreadable or inconsistent input.")
    cmd.add_argument("--gt", required=True, help="ActivityNet-style ground truth (gt.json with 'database')")
    cmd.add_argument("--pred", required=True, help="ActivityNet-style predictions JSON (with 'results')")
    cmd.add_argument("--subset", default="test", help="GT subset to score against (default test)")
    cmd.add_argument("--tiou", type=_thresholds, default=None, help="comma-separated tIoU thresholds")
    cmd.add_argument("--json-out", default=None, help="also write the full result (per-class AP) to this file")
    cmd.set_defaults(handler=_eval_detection)
