"""The data-throughput benchmark's accounting helpers (the benchmark itself is a script, not a test)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "data_throughput.py"
    spec = importlib.util.spec_from_file_location("data_throughput", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pass(clips: int, wall: float, workers: float = 0.0, consumer: float = 1.0):
    return clips, wall, {"workers": workers, "consumer": consumer, "Ray's own processes": 0.0}


def test_steady_passes_leave_out_the_first_and_the_last(bench):
    passes = [_pass(10, float(i + 1)) for i in range(5)]
    assert bench.steady(passes) == passes[1:4]
    assert bench.steady(passes[:2]) == passes[1:2]  # too few to drop the last
    assert bench.steady(passes[:1]) == passes[:1]


def test_rates_pool_passes_and_cpu_per_clip_splits_roles(bench):
    passes = [_pass(10, 2.0, workers=1.0, consumer=0.5), _pass(30, 2.0, workers=3.0, consumer=0.5)]
    wall, per_cpu = bench.rates(passes)
    assert wall == pytest.approx(10.0) and per_cpu == pytest.approx(8.0)
    assert bench.cpu_per_clip(passes) == "workers 100.0, consumer 25.0"


def test_process_cpu_counts_this_process_as_consumer_and_its_children(bench):
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:  # the child lives until its stdin closes
        roles = bench.process_cpu()
        assert roles[child.pid][0] == "Ray's own processes"  # neither this process nor a worker
        assert roles[os.getpid()][0] == "consumer"
    finally:
        child.communicate()


def test_cpu_ms_summary_compares_b_with_a_and_c_against_the_target(bench, capsys):
    # steady = passes 1..2 of 4; (b) 1.0 CPU-s per 10 clips = 100 ms, (a) 96 ms, (c) 90 ms per clip
    a = [_pass(10, 1.0, consumer=0.96)] * 4
    b = [_pass(10, 1.0, workers=3.0, consumer=1.0)] + [_pass(10, 1.0, workers=0.9, consumer=0.1)] * 3
    c = [_pass(10, 1.0, workers=0.8, consumer=0.1)] * 4
    results = {"a": [a], "b": [b], "c": [c]}
    per_cpu = {key: bench.rates(bench.steady(passes))[1] for key, (passes,) in results.items()}
    bench.print_cpu_ms_summary(results, per_cpu)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("CPU ms per clip, all processes: steady a 96.0, b 100.0, c 90.0; "
                        "whole run a 96.0, b 175.0, c 90.0")
    assert lines[1].startswith("CPU ms per clip b/a = 1.042 steady (met: target <= 1.05), 1.823 whole run")
    assert lines[2].startswith("CPU ms per clip b/c = 1.111 steady (NOT met: target <= 1.05), 1.944 whole run")
