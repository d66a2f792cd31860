"""Run every benchmark on one device: ``python -m benchmarks.run_all [--device cpu|cuda] [--quick]``.

Each area's module writes ``benchmarks/results/<area>_<device>.{md,json}``; a failing area is reported
and the others still run. ``profile_core`` (a profiler that prints) is not an area; each area runs with its
default settings (``diffusion`` without ``--stochastic``), not the tagged or ``--large`` runs some results
files came from (their commands are in the files).
"""
from __future__ import annotations

import importlib
import sys
import time
import traceback

from benchmarks._common import parse_args

AREAS = ["core", "controllers", "events", "regularization", "regularization_timeseries", "regularization_sde", "sde",
         "brownian", "models", "diffusion", "transport", "sim_engine", "sim_envs"]


def main(argv=None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    forwarded = (["--device", args.device] + (["--quick"] if args.quick else [])
                 + (["--repeats", str(args.repeats)] if args.repeats else []))
    failed = []
    for area in AREAS:
        started = time.time()
        print(f"=== {area}", flush=True)
        try:
            importlib.import_module(f"benchmarks.{area}").main(forwarded)
        except ModuleNotFoundError as err:
            print(f"skipped {area}: {err}")
        except Exception:  # report and go on with the other areas
            traceback.print_exc()
            failed.append(area)
        print(f"=== {area} done in {time.time() - started:.0f} s", flush=True)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
