"""benchmarks.run_all: what it passes on to each benchmark, and which benchmarks it runs."""
import sys
import types
from pathlib import Path

from benchmarks import run_all


def _record_areas(monkeypatch, names):
    """Stand-in modules ``benchmarks.<name>`` whose ``main`` records the arguments it was given."""
    calls = {}
    for name in names:
        module = types.ModuleType(f"benchmarks.{name}")
        module.main = lambda argv, name=name: calls.setdefault(name, list(argv))
        monkeypatch.setitem(sys.modules, f"benchmarks.{name}", module)
    monkeypatch.setattr(run_all, "AREAS", list(names))
    return calls


def test_every_option_reaches_every_area(monkeypatch):
    calls = _record_areas(monkeypatch, ["fake_a", "fake_b"])
    assert run_all.main(["--device", "cpu", "--quick", "--repeats", "4"]) == 0
    for argv in calls.values():
        assert argv == ["--device", "cpu", "--quick", "--repeats", "4"]


def test_every_benchmark_module_is_an_area():
    """A benchmark module left out of AREAS is silently not run by "the one command that runs every benchmark"."""
    folder = Path(run_all.__file__).parent
    modules = {p.stem for p in folder.glob("*.py")} - {"__init__", "_common", "run_all", "profile_core"}
    assert modules == set(run_all.AREAS)
