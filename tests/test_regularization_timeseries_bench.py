"""Smoke and correctness checks of the time-series regularisation benchmark (fast)."""
import json
import random

import pytest
import torch

import nde
from benchmarks import regularization_timeseries as B


def test_windows_follow_the_true_spiral():
    """The noise-free test windows (scipy DOP853) agree with nde's solve of A z³ from their first point."""
    data = B.spiral_windows(n_train=4, n_test=8, length=6, span=2.0, noise=0.0)
    assert data.tau[0] == 0 and bool((data.tau[1:] > data.tau[:-1]).all()) and float(data.tau[-1]) <= 2.0
    x = data.test.double()
    sol = nde.solve_ode(B.TrueSpiral().double(), x[:, 0], data.tau.double(), method="dopri8", rtol=1e-10,
                        atol=1e-10)
    assert torch.allclose(sol.ys.movedim(0, 1), x, atol=1e-5)


def test_steer_times_stay_ordered_and_within_half_gaps():
    t = torch.tensor([0.0, 0.1, 0.5, 0.6, 2.0], dtype=torch.float64)
    rng = random.Random(0)
    for _ in range(200):
        s = B.steer_times(t, rng)
        assert s[0] == 0 and bool((s[1:] > s[:-1]).all())
        assert bool(((s - t).abs()[1:] <= torch.tensor([0.05, 0.05, 0.05, 0.7], dtype=t.dtype) + 1e-12).all())


def test_summarise_ratios_against_vanilla():
    rows = [dict(variant="vanilla", seed=s, lam_scale=1.0, test_mse=m, testing_nfe=n, predict_ms=p, train_s=1.0)
            for s, m, n, p in ((0, 1.0, 100, 10.0), (1, 3.0, 200, 30.0))]
    rows += [dict(variant="ernode", seed=0, lam_scale=1.0, test_mse=3.0, testing_nfe=75, predict_ms=10.0, train_s=2.0),
             dict(variant="ernode", seed=0, lam_scale=10.0, test_mse=9.0, testing_nfe=1, predict_ms=1.0, train_s=9.0)]
    vanilla, ernode = B.summarise(rows)
    assert vanilla["testing_nfe"] == 150 and vanilla["nfe_ratio"] == 1
    assert ernode["seeds"] == 1 and ernode["nfe_ratio"] == pytest.approx(0.5)
    assert ernode["mse_change_pct"] == pytest.approx(50.0) and ernode["predict_speedup"] == pytest.approx(2.0)
    assert ernode["train_time_ratio"] == pytest.approx(2.0)


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="variant"):
        B.regularizer_spec("ernode2", "spiral")


@pytest.mark.parametrize("task", ["spiral", "latent"])
def test_quick_run_writes_results(results_dir, task):
    rows = B.main(["--quick", "--device", "cpu", "--task", task, "--variants", "vanilla", "steer", "local_unbiased",
                   "nde_adaptive"])
    assert [r["variant"] for r in rows] == ["vanilla", "steer", "local_unbiased", "nde_adaptive"]
    for r in rows:
        assert r["testing_nfe"] >= 8 and r["predict_ms"] > 0 and 0 < r["test_mse"] < 10
    area = "regularization_timeseries" + ("" if task == "spiral" else "_latent")
    summary = json.loads((results_dir / f"{area}_cpu.json").read_text())["rows"]
    assert summary[0]["variant"] == "vanilla" and summary[2]["nfe_ratio"] > 0
    assert len(json.loads((results_dir / f"{area}_cpu_runs.json").read_text())) == 4
