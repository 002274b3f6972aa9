"""``actionray data synth|list|extract-frames|check|preview``: make, list, convert, validate and look at data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_EPILOG_LIST = """\
sources:
  folder   ROOT/<class>/<video> (or ROOT/<class>/<frame folder>/); classes sorted alphabetically
  ucf101   SPLIT_DIR with classInd.txt, trainlist0K.txt, testlist0K.txt; videos under --videos
  hmdb51   SPLIT_DIR with <class>_test_splitK.txt (flag 1 train, 2 test, 0 unused); videos under --videos
  ssv1     SPLIT_DIR with something-something-v1-{labels,train,validation}.csv; frame folders under --videos
  diving48 SPLIT_DIR with Diving48_V2_{train,test}.json (lists of {vid_name, label, start_frame, end_frame})
           and optionally Diving48_vocab.json (class names); videos <vid_name>.mp4 under --videos
Every list line is 'path num_frames label' (0-based labels), paths relative to --out; classInd.txt is
written next to the lists. Files that cannot be read are printed and left out; the exit code is 1 unless
--allow-missing is given."""


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 128x96") from None
    return w, h


def _synth(args: argparse.Namespace) -> int:
    import time

    from actionray.synthetic.videos import generate_dataset, temporal_classes

    start = time.perf_counter()
    try:
        data = generate_dataset(args.out, classes=args.classes, videos_per_class=args.videos_per_class,
                                frames=args.frames, size=args.size, seed=args.seed, format=args.format,
                                val_fraction=args.val_fraction, workers=args.workers)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    temporal = set(temporal_classes(data.class_names))
    print(f"wrote {data.num_classes} classes x {args.videos_per_class} videos ({args.format}) to {data.root} "
          f"in {time.perf_counter() - start:.1f}s")
    for label, name in enumerate(data.class_names):
        print(f"  {label}: {name} ({'temporal order' if label in temporal else 'appearance'})")
    print(f"train list: {data.train_list}\nval list:   {data.val_list}\nclasses:    {data.class_index}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from actionray.platform.data import lists

    fmt = args.format
    try:
        if args.source == "folder":
            splits, names = lists.from_folder(args.path, fmt=fmt, val_fraction=args.val_fraction, seed=args.seed)
            list_names = None
        elif args.source == "ucf101":
            splits, names = lists.from_ucf101(args.path, _videos(args), split=args.split, fmt=fmt)
            list_names = {s: f"ucf101_{s}_split_{args.split}.txt" for s in splits}
        elif args.source == "hmdb51":
            splits, names = lists.from_hmdb51(args.path, _videos(args), split=args.split, fmt=fmt)
            list_names = {s: f"hmdb51_{s}_split_{args.split}.txt" for s in splits}
        elif args.source == "diving48":
            splits, names = lists.from_diving48(args.path, _videos(args), fmt=fmt)
            list_names = {s: f"diving48_{s}.txt" for s in splits}
        else:
            splits, names = lists.from_something_v1(args.path, _videos(args))
            list_names = {s: f"ssv1_{s}.txt" for s in splits}
            fmt = "frames"
    except lists.ListBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    template = args.frame_template or ("{:05d}.jpg" if args.source == "ssv1" else "img_{:05d}.jpg")
    result = lists.write_lists(splits, names, args.out, fmt=fmt, frame_template=template, list_names=list_names,
                               workers=args.workers, absolute=args.absolute, progress=not args.quiet)
    for source, path, reason in result.failures:
        print(f"{source}: {path}: {reason}")
    for split, path in result.lists.items():
        print(f"{split}: {result.counts[split]} entries -> {path}")
    print(f"classes: {len(names)} -> {result.class_index}")
    if result.failures:
        print(f"{len(result.failures)} file(s) could not be read and were left out", file=sys.stderr)
        return 0 if args.allow_missing else 1
    return 0


def _videos(args: argparse.Namespace) -> str:
    if args.videos is None:
        raise SystemExit(f"error: actionray data list {args.source} needs --videos (the video / frame root)")
    return args.videos


def _extract(args: argparse.Namespace) -> int:
    from actionray.platform.data.frames import extract_frames

    short_side = args.short_side if args.short_side > 0 else None
    result = extract_frames(args.src, args.out, short_side=short_side, template=args.frame_template,
                            workers=args.workers, progress=not args.quiet)
    for path, reason in result.failures:
        print(f"{path}: {reason}")
    print(f"extracted {result.extracted} video(s) -> {args.out}; list: {result.list_file}")
    if result.failures:
        print(f"{len(result.failures)} video(s) failed and were left out of the list", file=sys.stderr)
        return 0 if args.allow_missing else 1
    return 0


def _check_features(args: argparse.Namespace) -> int:
    from actionray.platform.data.features import check_feature_set

    problems = check_feature_set(args.list, feature_dim=args.feature_dim)
    for problem in problems:
        print(problem)
    print(f"{args.list}: feature set, {len(problems) or 'no'} problem(s)")
    return 1 if problems else 0


def _synth_features(args: argparse.Namespace) -> int:
    from actionray.synthetic import write_synthetic_feature_set

    try:
        data = write_synthetic_feature_set(args.out, num_classes=args.classes, train_videos=args.train_videos,
                                           test_videos=args.test_videos, feature_dim=args.feature_dim, seed=args.seed)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(data.train_videos)} train and {len(data.test_videos)} test videos "
          f"({data.feature_dim}-d snippet features, {len(data.classes)} classes) to {data.root}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from actionray.platform.data.features import is_feature_set

    if is_feature_set(args.list):  # a snippet-feature folder (gt.json + split lists) instead of a list file
        return _check_features(args)
    from actionray.platform.data.check import check_list, format_report

    report = check_list(args.list, root=args.root, num_classes=args.num_classes, fmt=args.format,
                        frame_template=args.frame_template, tail_frames=args.tail_frames, workers=args.workers,
                        progress=not args.quiet)
    print(format_report(report))
    return 0 if report.ok else 1


def _preview(args: argparse.Namespace) -> int:
    from actionray.config import load_config
    from actionray.platform.data.preview import preview

    source = Path(args.source)
    if source.suffix in (".yaml", ".yml"):
        cfg, list_file = load_config(source, args.overrides), None
    else:  # a list file: embedded defaults, the list standing in for the chosen split
        overrides = [f"data.train_list={source}", f"data.val_list={source}", *args.overrides]
        cfg, list_file = load_config(None, overrides), str(source)
    path, clips = preview(cfg, args.out, split=args.split, num_clips=args.num_clips, epoch=args.epoch,
                          list_file=list_file)
    for clip in clips:
        print(f"#{clip.index} {clip.name}{' (flipped)' if clip.flipped else ''}: frames {clip.frame_indices.tolist()}")
    print(f"wrote {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``actionray data ...`` and its sub-commands."""
    data = subparsers.add_parser("data", help="generate, list, convert, check and preview video data",
                                 description="Generate demo videos, build list files, extract frames, validate "
                                             "lists and preview model inputs.")
    data.set_defaults(handler=lambda args: (data.print_help(), 2)[1])
    commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")

    synth = commands.add_parser(
        "synth", help="write a generated demo data set (temporal-order and appearance classes)",
        description="Write H.264 .mp4 videos (or JPEG frame folders), train.txt / val.txt (TSN lists) and "
                    "classInd.txt. Order classes (moving_left/right, growing/shrinking, appearing/disappearing, "
                    "rotating_cw/ccw) differ only in frame order; appearance classes (striped, checkered) are "
                    "separable from a single frame.")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                       help="built-in classes to generate (default: the 8-class demo set)")
    synth.add_argument("--videos-per-class", type=int, default=24, help="videos per class (default 24)")
    synth.add_argument("--frames", type=int, default=48, help="frames per video (default 48)")
    synth.add_argument("--size", type=_size, default=(128, 96), help="WIDTHxHEIGHT, even numbers (default 128x96)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same videos (default 0)")
    synth.add_argument("--format", choices=("mp4", "frames"), default="mp4", help="mp4 files or JPEG folders")
    synth.add_argument("--val-fraction", type=float, default=0.25, help="share of each class in val.txt")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    synth.set_defaults(handler=_synth)

    lst = commands.add_parser("list", help="build TSN list files from a folder tree or an official split",
                              description="Build 'path num_frames label' lists, counting frames in parallel.",
                              epilog=_EPILOG_LIST, formatter_class=argparse.RawDescriptionHelpFormatter)
    lst.add_argument("source", choices=("folder", "ucf101", "hmdb51", "ssv1", "diving48"), help="layout of PATH")
    lst.add_argument("path", help="data folder (folder) or folder with the official split/annotation files")
    lst.add_argument("--videos", help="video (or frame-folder) root for ucf101 / hmdb51 / ssv1 / diving48")
    lst.add_argument("--out", required=True, help="folder for the lists and classInd.txt")
    lst.add_argument("--split", type=int, default=1, choices=(1, 2, 3), help="official split number (default 1)")
    lst.add_argument("--format", choices=("video", "frames"), default="video",
                     help="entries are video files or frame folders (ssv1 is always frames)")
    lst.add_argument("--frame-template", default=None,
                     help="frame file names, 1-based (default img_{:05d}.jpg; ssv1 {:05d}.jpg)")
    lst.add_argument("--val-fraction", type=float, default=0.0,
                     help="folder: put this share of each class in val.txt (default 0: one all.txt)")
    lst.add_argument("--seed", type=int, default=0, help="folder: seed of the train/val split")
    lst.add_argument("--absolute", action="store_true", help="write absolute paths instead of relative ones")
    lst.add_argument("--workers", type=int, default=None, help="processes counting frames (default: CPUs, max 8)")
    lst.add_argument("--allow-missing", action="store_true", help="exit 0 even if some files could not be read")
    lst.add_argument("--quiet", action="store_true", help="no progress bar")
    lst.set_defaults(handler=_list)

    ext = commands.add_parser(
        "extract-frames", help="decode videos into JPEG frame folders and write a new list",
        description="Decode every video of SRC (a list file, or a ROOT/<class>/<video> folder) into "
                    "OUT/<relative path without extension>/img_00001.jpg ... and write a list of the folders "
                    "(named like the source list, or all.txt plus classInd.txt for a folder).")
    ext.add_argument("src", help="list file or folder-per-class tree of videos")
    ext.add_argument("--out", required=True, help="output folder")
    ext.add_argument("--short-side", type=int, default=256, help="resize so the short side is this (0 = keep)")
    ext.add_argument("--frame-template", default="img_{:05d}.jpg", help="frame file names, 1-based")
    ext.add_argument("--workers", type=int, default=None, help="processes (default: CPUs, max 8)")
    ext.add_argument("--allow-missing", action="store_true", help="exit 0 even if some videos failed")
    ext.add_argument("--quiet", action="store_true", help="no progress bar")
    ext.set_defaults(handler=_extract)

    chk = commands.add_parser(
        "check", help="validate a list file and every file it names, or a snippet-feature folder",
        description="Report malformed lines, labels out of range, duplicates, missing / empty / undecodable / "
                    "truncated videos, num_frames that disagree with the file, and missing frame images, one "
                    "line per problem (LIST:LINE: path: problem), then a summary. Exit 1 on any problem.")
    chk.add_argument("list", help="TSN list file (path num_frames label), or a snippet-feature folder "
                                  "(gt.json, split_*.txt, train/ test/ *.npy)")
    chk.add_argument("--feature-dim", type=int, default=2048, help="feature folder: expected array width")
    chk.add_argument("--root", default=None, help="prefix for relative paths (default: the list's folder)")
    chk.add_argument("--num-classes", type=int, default=None, help="labels must be in 0..N-1")
    chk.add_argument("--format", choices=("video", "frames"), default=None,
                     help="entry kind (default: folders are frames, files are videos)")
    chk.add_argument("--frame-template", default="img_{:05d}.jpg", help="frame file names, 1-based")
    chk.add_argument("--tail-frames", type=int, default=3,
                     help="decode this many frames at the end of each video (0 = every frame; slow)")
    chk.add_argument("--workers", type=int, default=None, help="processes (default: CPUs, max 8)")
    chk.add_argument("--quiet", action="store_true", help="no progress bar")
    chk.set_defaults(handler=_check)

    sfe = commands.add_parser(
        "synth-features", help="write a generated snippet-feature set (ACM-Net THUMOS14 layout)",
        description="Write gt.json, split_train.txt, split_test.txt and train/ test/ <video>.npy (L, D) arrays "
                    "with planted action segments (class prototypes plus noise over a background prototype).")
    sfe.add_argument("--out", required=True, help="output folder")
    sfe.add_argument("--classes", type=int, default=4, help="action classes (default 4)")
    sfe.add_argument("--train-videos", type=int, default=32, help="training videos (default 32)")
    sfe.add_argument("--test-videos", type=int, default=16, help="test videos (default 16)")
    sfe.add_argument("--feature-dim", type=int, default=2048, help="snippet feature width (default 2048)")
    sfe.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sfe.set_defaults(handler=_synth_features)

    prv = commands.add_parser(
        "preview", help="contact sheet of clips exactly as the model receives them",
        description="Sample, decode, augment and normalise clips with the training pipeline's functions, "
                    "de-normalise them and draw one row per clip (label name) and one column per frame.")
    prv.add_argument("source", metavar="CONFIG|LIST", help="experiment YAML, or a list file (embedded defaults)")
    prv.add_argument("--out", required=True, help="PNG file to write")
    prv.add_argument("--split", choices=("train", "val"), default="train", help="augmentation of this split")
    prv.add_argument("--num-clips", type=int, default=4, help="rows: clips spread evenly over the list")
    prv.add_argument("--epoch", type=int, default=0, help="epoch whose random draws to show (train)")
    prv.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="config override, e.g. data.input_size=112 (repeatable)")
    prv.set_defaults(handler=_preview)
