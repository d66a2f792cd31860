"""benchmarks.events on a tiny batch: the three ways of stopping every ball at its impact agree."""
import pytest

torchdiffeq = pytest.importorskip("torchdiffeq")


def test_per_sample_events_agree_with_the_torchdiffeq_loop():
    from benchmarks.events import rows_for
    rows = {row["case"]: row for row in rows_for(4, "cpu", repeats=1)}
    assert set(rows) == {"nde solve_ode per-sample", "nde odeint_event loop", "torchdiffeq odeint_event loop"}
    for row in rows.values():
        assert row["max_dt_vs_reference"] < 1e-4 and row["max_grad_diff_vs_torchdiffeq"] < 1e-2
