"""benchmarks.sim_envs merges a partial run into the results file it writes, in the results folder in use."""
import json

import pytest

pytest.importorskip("warp")
from benchmarks.sim_envs import _merge  # noqa: E402  (imported before the results folder is redirected)


def test_partial_run_merges_with_the_file_in_the_redirected_results_folder(results_dir):
    kept = {"section": "smoke", "case": "N=8 B=1 T=2 jacobi=1", "fwd_ms": 1.0}
    replaced = {"section": "task", "case": "mixing", "adam_ratio": 0.5}
    (results_dir / "sim_envs_cpu.json").write_text(json.dumps({"meta": {}, "notes": "", "rows": [kept, replaced]}))
    new = {"section": "task", "case": "mixing", "adam_ratio": 0.1}
    assert _merge("cpu", [new]) == [kept, new]
