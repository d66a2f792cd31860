"""Benchmark helpers: every results file records a command a reader can run; round-robin timing varies
the order of the cases."""
import sys

import pytest

from benchmarks._common import environment, time_calls


@pytest.mark.parametrize("argv, expected", [
    (["/home/someone/clone/benchmarks/sde.py", "--device", "cpu"], "python -m benchmarks.sde --device cpu"),
    (["benchmarks/core.py", "--quick"], "python -m benchmarks.core --quick"),
    (["/tmp/elsewhere/run.py", "-x"], "/tmp/elsewhere/run.py -x"),
])
def test_command_names_the_module_not_this_machines_path(monkeypatch, argv, expected):
    monkeypatch.setattr(sys, "argv", argv)
    command = environment()["command"]
    assert command.endswith(expected)
    assert "/home/someone" not in command


def test_time_calls_varies_which_case_runs_before_which():
    """A case timed always right after the same (cache-filling) case is systematically slower, so over the
    repeats every case must follow several different cases, and the orders must repeat from run to run."""
    calls: list[str] = []
    names = ["a", "b", "c", "d"]

    def run_once():
        calls.clear()
        time_calls({n: (lambda n=n: calls.append(n)) for n in names}, "cpu", repeats=40, warmup=0)
        return list(calls)

    first = run_once()
    assert sorted(first) == sorted(names * 40)
    for name in names:
        before = {first[i - 1] for i in range(1, len(first)) if first[i] == name}
        assert before == set(names) - {name} or before == set(names)
    assert run_once() == first
