"""Shared helpers for the benchmark scripts: warm timing, memory, result files.

Every benchmark module ``benchmarks/<area>.py`` is runnable as
``python -m benchmarks.<area> [--device cpu|cuda] [--quick]`` and writes
``benchmarks/results/<area>_<device>.json`` and ``.md`` through :func:`write_results`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_args(description: str, argv: Sequence[str] | None = None,
               extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """Common command line: ``--device`` (default: cuda if available) and ``--quick``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default=default_device(), choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes (smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per case (median reported)")
    if extra is not None:
        extra(parser)
    return parser.parse_args(argv)


def timing_setup(description: str, argv: Sequence[str] | None, quick_repeats: int,
                 repeats: int) -> tuple[argparse.Namespace, int]:
    """:func:`parse_args`, one torch thread on the CPU (timings comparable across machines), and the
    number of repeats: ``--repeats``, else ``quick_repeats`` with ``--quick``, else ``repeats``."""
    args = parse_args(description, argv)
    if args.device == "cpu":
        torch.set_num_threads(1)
    return args, args.repeats or (quick_repeats if args.quick else repeats)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_calls(fns: dict[str, Callable[[], object]], device: str, repeats: int = 10,
               warmup: int = 3, seed: int = 0) -> dict[str, dict[str, float]]:
    """Time several callables round-robin so that machine noise hits all of them alike.

    Each repeat runs the callables in a fresh random order (seeded: the same orders on every run), so
    that no case always runs right after the same one. A call is slower after one that has filled the
    caches with its own code and data: on the 2-core CPU, ``nde.odeint`` timed right after torchdiffeq's
    solve took 70 µs (3.5%) longer than the same call timed right after another ``nde.odeint``; rotating a
    fixed order (as this function did before) keeps every case's predecessor fixed.
    Returns ``{name: {"median_ms", "min_ms", "max_ms"}}`` over ``repeats`` warm calls.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order, rng = list(fns.items()), random.Random(seed)
    for _ in range(repeats):
        rng.shuffle(order)
        for name, fn in order:
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append(1e3 * (time.perf_counter() - start))
    return {name: {"median_ms": statistics.median(s), "min_ms": min(s), "max_ms": max(s)}
            for name, s in samples.items()}


def saved_tensor_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of distinct tensor storages that autograd saves for backward while ``fn()`` runs.

    This is the memory a gradient mode keeps alive between forward and backward; it is
    meaningful on every device (on CPU, process RSS is too coarse to compare modes).
    """
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        try:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        except RuntimeError:
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def cuda_peak_bytes(fn: Callable[[], object], device: str) -> int | None:
    """Peak CUDA memory allocated during ``fn()`` above what was allocated before, or None on CPU."""
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def cpu_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak CPU tensor memory allocated during ``fn()`` above what was allocated before.

    The profiler's raw memory events (an allocation or a free each, with its size) summed in time
    order; tensor storage only. The raw events are read directly because turning them into
    ``FunctionEvent``s costs about 0.5 ms per operator."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    changes = sorted((event.start_ns(), event.nbytes()) for event in prof.profiler.kineto_results.events()
                     if event.name() == "[memory]")
    live = peak = 0
    for _, change in changes:
        live += change
        peak = max(peak, live)
    return peak


def peak_bytes(fn: Callable[[], object], device: str) -> int:
    """Peak tensor memory allocated during ``fn()`` above the memory allocated before, on ``device``."""
    if device.startswith("cuda"):
        return cuda_peak_bytes(fn, device)
    return cpu_peak_bytes(fn)


def _command() -> str:
    """The command line as a reader would type it: ``python -m benchmarks.<name> ...`` for a harness of this
    package (run with ``-m``, ``sys.argv[0]`` is the file's absolute path, which names only this machine)."""
    script = Path(sys.argv[0])
    if script.suffix == ".py" and script.parent.name == "benchmarks":
        program = ["python", "-m", f"benchmarks.{script.stem}"]
    else:
        program = [Path(sys.executable).name, sys.argv[0]]
    return " ".join([*program, *sys.argv[1:]])


def environment() -> dict[str, str]:
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "threads": str(torch.get_num_threads()),
        "command": _command(),
    }
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name()
    return env


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def results_path(name: str) -> Path:
    """``results/<name>``, the folder created if needed (read at call time, so tests can redirect it)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return RESULTS_DIR / name


def write_results(area: str, device: str, rows: list[dict], notes: str = "") -> Path:
    """Write ``rows`` (list of flat dicts) to ``results/<area>_<device>.json`` and ``.md``."""
    meta = environment()
    stem = results_path(f"{area}_{device}")
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "notes": notes, "rows": rows}, indent=1))
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    lines = [f"# {area} ({device})", "", notes, "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    lines += ["", "Environment: " + ", ".join(f"{k}={v}" for k, v in meta.items())]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return stem.with_suffix(".md")


def summarise_variants(rows: list[dict], variants: Sequence[str], metrics: Sequence[str],
                       compare: Callable[[dict, dict], dict], lam_scale: float = 1.0) -> list[dict]:
    """Per variant (in ``variants`` order), mean and std over seeds of ``metrics`` for the runs at
    ``lam_scale``, plus ``compare(agg, base)``: the columns relating it to the ``"vanilla"`` means."""
    out, base = [], None
    for variant in variants:
        sel = [r for r in rows if r["variant"] == variant and r["lam_scale"] == lam_scale]
        if not sel:
            continue
        agg = {"variant": variant, "seeds": len(sel)}
        for key in metrics:
            values = [r[key] for r in sel]
            agg[key] = statistics.mean(values)
            agg[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        base = agg if variant == "vanilla" else base
        if base is not None:
            agg.update(compare(agg, base))
        out.append(agg)
    return out


def scatter_variants(rows: list[dict], variants: Sequence[str], y: str, path: Path, ylabel: str, title: str,
                     log_y: bool = False) -> None:
    """Testing NFE vs ``y``, one point per run (seeds and λ scales), one marker and colour per variant."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for i, variant in enumerate(variants):
        sel = [r for r in rows if r["variant"] == variant]
        if sel:
            ax.scatter([r["testing_nfe"] for r in sel], [r[y] for r in sel], label=variant, s=22,
                       color=plt.cm.tab20(i / 20), marker="osD^v<>ph*X"[i % 11], alpha=0.8)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("testing NFE (lower is cheaper)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
