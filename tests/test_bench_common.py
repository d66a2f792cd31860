"""The environment line of every results file records a command a reader can run."""
import sys

import pytest

from benchmarks._common import environment


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
