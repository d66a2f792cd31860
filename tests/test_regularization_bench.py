"""The digits regularisation benchmark: a quick interleaved run and the summary arithmetic."""
import json

import pytest

from benchmarks import regularization as B


def test_summary_ratios_against_hand_computed_values():
    rows = [{"variant": v, "seed": s, "lam_scale": 1.0, "test_acc": acc, "testing_nfe": nfe,
             "predict_ms": ms, "train_s": ts}
            for v, s, acc, nfe, ms, ts in [("vanilla", 0, 90.0, 80, 10.0, 4.0), ("vanilla", 1, 92.0, 100, 14.0, 6.0),
                                           ("ernode", 0, 89.0, 40, 6.0, 3.0), ("ernode", 1, 90.0, 50, 6.0, 3.0)]]
    rows.append(dict(rows[-1], lam_scale=3.0, testing_nfe=10))  # a sweep run: not in the summary
    vanilla, ernode = B.summarise(rows)
    assert vanilla["testing_nfe"] == 90 and vanilla["nfe_ratio"] == 1
    assert ernode["nfe_ratio"] == pytest.approx(45 / 90)
    assert ernode["acc_change_pts"] == pytest.approx(89.5 - 91.0)
    assert ernode["predict_speedup"] == pytest.approx(12.0 / 6.0)
    assert ernode["train_time_ratio"] == pytest.approx(3.0 / 5.0)


def test_quick_interleaved_run_writes_results(results_dir):
    B.main(["--quick", "--device", "cpu", "--variants", "vanilla", "local_biased", "nde_local_density"])
    rows = json.loads((results_dir / "regularization_cpu_runs.json").read_text())
    assert [r["variant"] for r in rows] == ["vanilla", "local_biased", "nde_local_density"]
    assert all(r["testing_nfe"] > 0 and 0 <= r["test_acc"] <= 100 for r in rows)
    assert (results_dir / "regularization_cpu.md").read_text().count("| vanilla |") == 1
