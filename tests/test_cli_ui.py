"""``actionray ui`` refuses a busy port with one ``error:`` line and exit code 2 (issue 12)."""

from __future__ import annotations

import argparse
import socket

from actionray.cli import train as train_cli


def _run_ui(argv: list[str]) -> int:
    """Parse and run ``actionray ui ...`` through the command's own parser and handler."""
    parser = argparse.ArgumentParser(prog="actionray")
    train_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_ui_on_a_busy_port_fails_with_one_error_line_and_exit_2(workdir, capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = _run_ui(["ui", "--port", str(port)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (captured.out, captured.err)
    assert len(lines) == 1 and lines[0].startswith("error:"), captured.err
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]
    assert captured.out == "" and not (workdir / "mlflow.db").exists()  # nothing was started
