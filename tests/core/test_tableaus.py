"""Butcher tableaus: order conditions, dense-output consistency, stability sizes."""
import numpy as np
import pytest

from nde.tableaus import TABLEAUS, get_tableau


def _matrix(tab):
    s = tab.stages
    A = np.zeros((s, s))
    for i, row in enumerate(tab.a):
        A[i + 1, : i + 1] = row
    return A


@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_order_conditions_up_to_three(name):
    tab = TABLEAUS[name]
    b, c, A = np.array(tab.b), np.array(tab.c), _matrix(tab)
    assert np.allclose(A.sum(1), c, atol=1e-12)  # row-sum condition
    assert b.sum() == pytest.approx(1.0, abs=1e-12)
    if tab.order >= 2:
        assert b @ c == pytest.approx(0.5, abs=1e-12)
    if tab.order >= 3:
        assert b @ c**2 == pytest.approx(1 / 3, abs=1e-12)
        assert b @ A @ c == pytest.approx(1 / 6, abs=1e-12)
    if tab.b_error is not None:
        assert sum(tab.b_error) == pytest.approx(0.0, abs=1e-12)  # b̂ is consistent too


@pytest.mark.parametrize("name", ["dopri5", "tsit5"])
def test_dense_output_ends_at_solution_weights(name):
    tab = TABLEAUS[name]
    at_one = np.array(tab.dense).sum(1)
    assert np.allclose(at_one, tab.b, atol=1e-12)


@pytest.mark.parametrize("name,expected", [("euler", 2.0), ("rk4", 2.7853), ("dopri5", 3.3066), ("tsit5", 3.5068)])
def test_stability_size_matches_literature(name, expected):
    assert TABLEAUS[name].stability_size == pytest.approx(expected, abs=2e-3)


@pytest.mark.parametrize("name", ["fehlberg2", "fehlberg2_fsal"])
def test_fehlberg2_is_fehlbergs_pair_propagating_the_second_order_solution(name):
    """RK1(2) (Fehlberg 1969): the second-order b is propagated and b - b_error is the first-order embedded
    solution. "fehlberg2" (torchdiffeq's) carries its third stage, evaluated at the first-order solution,
    into the next step; "fehlberg2_fsal" appends a stage at y1 (its a-row is b) instead."""
    tab = TABLEAUS[name]
    b, b_hat = np.array(tab.b), np.array(tab.b) - np.array(tab.b_error)
    assert b @ np.array(tab.c) == pytest.approx(0.5, abs=1e-15) and b_hat.sum() == pytest.approx(1.0)
    assert b_hat @ np.array(tab.c) != pytest.approx(0.5)       # only first order
    assert tab.c[-1] == 1.0 and tab.carries_last_stage and tab.new_evals_per_step == (2 if name == "fehlberg2" else 3)
    if name == "fehlberg2":
        assert tab.reuses_last_stage and not tab.fsal and np.allclose(tab.a[-1], b_hat[:-1])
    else:
        assert tab.fsal and np.allclose(tab.a[-1], b[:-1])


def test_adaptive_heun_is_heun_euler_with_the_predictor_stage_carried():
    """torchdiffeq's adaptive_heun: Heun's trapezoid propagated, Euler embedded, the predictor's evaluation
    f(t + dt, y + dt·k1) reused as the next first stage (one evaluation per step; heun2: two)."""
    tab, fsal = TABLEAUS["adaptive_heun"], TABLEAUS["heun2"]
    assert tab.b == (0.5, 0.5) and np.allclose(np.array(tab.b) - np.array(tab.b_error), [1.0, 0.0])
    assert tab.reuses_last_stage and tab.new_evals_per_step == 1 and fsal.new_evals_per_step == 2


def test_fsal_and_stage_reuse_exclude_each_other():
    from nde.tableaus import ButcherTableau
    with pytest.raises(ValueError, match="reuses_last_stage"):
        ButcherTableau("x", c=(0.0, 1.0), a=((1.0,),), b=(0.5, 0.5), b_error=(-0.5, 0.5), order=2,
                       error_order=1, fsal=True, reuses_last_stage=True)


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown `method`"):
        get_tableau("rk45")
    with pytest.raises(TypeError, match="`method`"):
        get_tableau(5)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "rk4"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_stage_sums_by_terms_equal_the_stacked_product(method, per_sample, monkeypatch):
    """Steps on the CPU sum stages one nonzero coefficient at a time (per-sample steps: scaled by each row's
    step at the end); on accelerators one stacked matrix product per stage. Both give the same solve, dense
    output (shared steps), gradient and evaluations."""
    import torch

    import nde
    from nde import _rk

    if per_sample and method == "rk4":
        pytest.skip("per-sample steps need an adaptive method")

    def solve():
        w = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64, requires_grad=True)
        y0 = torch.tensor([[1.0, 1.0], [0.5, -1.0], [2.0, 0.3]], dtype=torch.float64)
        sol = nde.solve_ode(lambda t, y: torch.tanh(y @ w), y0, torch.tensor([0.0, 0.7, 1.5], dtype=torch.float64),
                            method=method, rtol=1e-8, atol=1e-8, step_size=0.1 if method == "rk4" else None,
                            dense=not per_sample, per_sample=per_sample)
        out = sol.ys[-1].sum()
        dense = sol.evaluate(torch.tensor([0.33, 1.2], dtype=torch.float64)) if not per_sample else sol.ys[1]
        grad, = torch.autograd.grad(out + dense.sum(), w)
        return sol.ys, dense, grad, sol.stats["nfe"].tolist()

    by_terms = solve()
    monkeypatch.setattr(_rk, "_by_terms", lambda y: False)
    stacked = solve()
    assert by_terms[3] == stacked[3]
    for a, b in zip(by_terms[:3], stacked[:3]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_rooted_trees_are_counted_as_in_the_literature():
    """Rooted trees with n vertices: 1, 1, 2, 4, 9, 20, 48 (OEIS A000081; Butcher's order conditions)."""
    from nde.tableaus import _rooted_trees, _tree_density
    assert [len(_rooted_trees(n)) for n in range(1, 8)] == [1, 1, 2, 4, 9, 20, 48]
    assert _tree_density(((),)) == 2 and _tree_density(((), ())) == 3 and _tree_density((((),),)) == 6


def test_dopri5_has_a_continuous_extension_of_order_four_but_not_five():
    """Known for DOPRI5 (Hairer, Norsett & Wanner I, §II.6): its 7 stages give a dense output of order 4;
    order 5 needs extra stages. The derivation finds the first and refuses the second."""
    from nde.tableaus import _continuous_extension
    tab = TABLEAUS["dopri5"]
    dense = np.array(_continuous_extension(tab.c, tab.a, tab.b, 4))
    assert np.allclose(dense.sum(1), tab.b, atol=1e-12)               # ends on y1
    with pytest.raises(ValueError, match="order 5"):
        _continuous_extension(tab.c, tab.a, tab.b, 5)
