"""``actionray`` command line: one sub-command module per area, discovered from this package.

Each module in ``actionray/cli/`` defines ``register(subparsers)`` adding its commands; handlers import
their heavy dependencies (torch, ray, mlflow) lazily so ``actionray --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from actionray import __version__
from actionray.platform.config import ConfigError
from actionray.platform.tune import SweepInterrupted  # light: tune.py imports ray lazily


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actionray", description="Ray-based video action recognition experiments.")
    parser.add_argument("--version", action="version", version=f"actionray {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SweepInterrupted as error:
        print(f"{error}", file=sys.stderr)
        return 130  # the shell's code for Ctrl+C
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
