"""``actionray`` command line: one sub-command module per area, discovered from this package.

Each module in ``actionray/cli/`` defines ``register(subparsers)`` adding its commands; handlers import
their heavy dependencies (torch, ray, mlflow) lazily so ``actionray --help`` stays instant.

Error policy (docs/training.md): a failing command prints one ``error:`` line and exits 2 for bad input (config,
list file, checkpoint, a worker error no retry can fix) and 1 for anything else; ``--debug`` adds the traceback.
SIGINT and SIGTERM end a command with 130.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys
import traceback

from actionray import __version__
from actionray.errors import UserError
from actionray.platform.tune import SweepInterrupted  # light: tune.py imports ray lazily


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actionray", description="Ray-based video action recognition experiments.")
    parser.add_argument("--version", action="version", version=f"actionray {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(subparsers)
    return parser


# Root errors that mean bad input (exit 2), wherever they were raised (driver or Ray worker).
BAD_INPUT: tuple[type[BaseException], ...] = (UserError, FileNotFoundError)


def is_bad_input(error: BaseException) -> bool:
    """Whether ``error``'s root cause (:func:`root_error`) is bad input: the command exits 2."""
    return isinstance(root_error(error), BAD_INPUT)


def root_error(error: BaseException) -> BaseException:
    """The error behind Ray's wrappers: a Train run's first worker failure or controller failure, a task's cause."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        failures = getattr(error, "worker_failures", None)
        if failures:
            error = failures[min(failures)]
            continue
        for attr in ("controller_failure", "cause"):
            inner = getattr(error, attr, None)
            if isinstance(inner, BaseException):
                error = inner
                break
        else:
            return error
    return error


def error_line(error: BaseException) -> str:
    """``error: <message>`` on one line: the whole message of the root error (its lines joined)."""
    root = root_error(error)
    text = " ".join(line.strip() for line in str(root).splitlines() if line.strip()) or type(root).__name__
    prefix = "" if isinstance(root, BAD_INPUT) else f"{type(root).__name__}: "  # bad input names its file or key
    return f"error: {prefix}{text}"


def _terminate(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    # train and eval end on SIGTERM as on Ctrl+C (Tune's sweeps keep Tune's own signal handling).
    previous = signal.signal(signal.SIGTERM, _terminate) if args.command in ("train", "eval") and _main_thread() \
        else None
    try:
        return int(args.handler(args) or 0)
    except SweepInterrupted as error:
        print(f"{error}", file=sys.stderr)
        return 130  # the shell's code for Ctrl+C
    except KeyboardInterrupt as stop:
        print(f"interrupted ({stop.args[0] if stop.args else 'SIGINT'}) during `actionray {args.command}`",
              file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 -- the CLI boundary: one line, the traceback only on request
        if args.debug:
            traceback.print_exc()
        bad_input = is_bad_input(error)
        hint = "" if args.debug or bad_input else "  (--debug shows the traceback)"
        print(error_line(error) + hint, file=sys.stderr)
        return 2 if bad_input else 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
