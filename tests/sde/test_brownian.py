"""BrownianPath, BrownianGrid and BrownianTree: exact Brownian statistics, consistency of increments, replay,
space-time area."""
import pytest
import torch

from nde.sde import BrownianGrid, BrownianPath, BrownianTree


def test_increments_are_additive_and_replayed_in_any_order():
    bm = BrownianPath(0.0, 1.0, (5, 3), dtype=torch.float64, entropy=3)
    points = [0.0, 0.13, 0.5, 0.51, 0.9, 1.0]
    forward = [bm(a, b) for a, b in zip(points[:-1], points[1:])]
    backward = [bm(a, b) for a, b in reversed(list(zip(points[:-1], points[1:])))][::-1]
    for f, b in zip(forward, backward):
        assert torch.equal(f, b)
    torch.testing.assert_close(bm(0.0, 1.0), sum(forward), rtol=0, atol=1e-14)
    torch.testing.assert_close(bm(0.13, 0.9), bm(0.13, 0.5) + bm(0.5, 0.9), rtol=0, atol=1e-14)


@pytest.mark.parametrize("size", [(64, 16), (8, 3)])
@pytest.mark.parametrize("area", ["none", "space-time"])
def test_same_entropy_same_path_and_grid_draw_matches_single_queries(size, area):
    """A grid drawn at once equals the same intervals queried one by one, for any state size (a
    size that is not a multiple of 16 used to differ: CPU's normal fill works in blocks of 16)."""
    grid = [0.0, 0.25, 0.5, 0.75, 1.0]
    a, b, c = (BrownianPath(0.0, 1.0, size, dtype=torch.float64, entropy=e, levy_area_approximation=area)
               for e in (11, 11, 12))
    pairs = list(zip(grid[:-1], grid[1:]))
    if area == "none":
        grid_draw, single = a.increments(grid), torch.stack([b(s, t) for s, t in pairs])
    else:
        grid_draw = torch.cat(a.increments(grid, return_U=True))
        single = torch.cat([torch.stack(q) for q in zip(*[b(s, t, return_U=True) for s, t in pairs])])
    torch.testing.assert_close(grid_draw, single, rtol=0, atol=1e-14)
    assert not torch.equal(a(0.0, 1.0), c(0.0, 1.0))


def test_increment_and_bridge_variances():
    """Var W(t) = t for points drawn forward and for points bridged in between afterwards."""
    bm = BrownianPath(0.0, 2.0, (200_000,), dtype=torch.float64, entropy=0)
    w2 = bm(0.0, 2.0)
    w_half = bm(0.0, 0.5)                      # bridged between stored 0 and 2
    assert abs(w2.var().item() - 2.0) < 0.03
    assert abs(w_half.var().item() - 0.5) < 0.01
    # Bridge: W(0.5) - W(2)/4 is independent of W(2) with variance 0.5 * 1.5 / 2.
    resid = w_half - 0.25 * w2
    assert abs(resid.var().item() - 0.375) < 0.008
    assert abs(torch.corrcoef(torch.stack([resid, w2]))[0, 1].item()) < 0.01


def test_space_time_area_statistics_after_bridging():
    """U = int_a^b (W_s - W_a) ds: Var U = h^3/3, Cov(dW, U) = h^2/2, also on bridged sub-intervals."""
    bm = BrownianPath(0.0, 1.0, (100_000,), dtype=torch.float64, entropy=1, levy_area_approximation="space-time")
    dw, u = bm(0.0, 1.0, return_U=True)
    for (a, b) in ((0.0, 0.3), (0.3, 1.0), (0.1, 0.2)):
        dw_s, u_s = bm(a, b, return_U=True)
        h = b - a
        assert abs(u_s.var().item() / (h ** 3 / 3) - 1) < 0.04
        assert abs((dw_s * u_s).mean().item() / (h ** 2 / 2) - 1) < 0.04
    # Composition: U over [0, 1] from the pieces 0-0.3-1.0.
    dw1, u1 = bm(0.0, 0.3, return_U=True)
    dw2, u2 = bm(0.3, 1.0, return_U=True)
    torch.testing.assert_close(u, u1 + u2 + 0.7 * dw1, rtol=0, atol=1e-12)
    torch.testing.assert_close(dw, dw1 + dw2, rtol=0, atol=1e-12)


@pytest.mark.parametrize("path", [BrownianPath, BrownianTree])
def test_bad_queries_raise_clear_errors(path):
    with pytest.raises(ValueError, match=f"{path.__name__} needs t0 < t1"):
        path(1.0, 1.0, (2,))
    with pytest.raises(ValueError, match="levy_area_approximation"):
        path(0.0, 1.0, (2,), levy_area_approximation="davie")
    bm = path(0.0, 1.0, (2,))
    with pytest.raises(ValueError, match="outside"):
        bm(0.5, 1.5)
    with pytest.raises(ValueError, match="ta <= tb"):
        bm(0.6, 0.5)
    with pytest.raises(ValueError, match="space-time"):
        bm(0.0, 0.5, return_U=True)
    with pytest.raises(ValueError, match="return_A"):
        bm(0.0, 0.5, return_A=True)
    with pytest.raises(TypeError, match="ta"):
        bm("0", 0.5)


# ----------------------------------------------------------------------------- BrownianGrid
GRID = [0.0, 0.1, 0.25, 0.5, 0.55, 1.0]


def test_grid_path_increments_have_the_exact_joint_law():
    """dW_k ~ N(0, h_k) independent across cells; U_k has Var h^3/3 and Cov(dW_k, U_k) = h^2/2."""
    bm = BrownianGrid(GRID, (200_000,), dtype=torch.float64, entropy=4, levy_area_approximation="space-time")
    cells = [bm.increment(k, return_U=True) for k in range(len(GRID) - 1)]
    for (dw, u), a, b in zip(cells, GRID[:-1], GRID[1:]):
        h = b - a
        assert abs(dw.mean().item()) < 4 * (h / 200_000) ** 0.5
        assert abs(dw.var().item() / h - 1) < 0.015
        assert abs(u.var().item() / (h ** 3 / 3) - 1) < 0.02
        assert abs((dw * u).mean().item() / (h ** 2 / 2) - 1) < 0.02
    dws = torch.stack([dw / dw.std() for dw, _ in cells])
    off_diagonal = torch.corrcoef(dws) - torch.eye(len(cells), dtype=torch.float64)
    assert off_diagonal.abs().max() < 0.01


def test_grid_path_replays_in_any_order_and_composes():
    bm = BrownianGrid(GRID, (6, 3), dtype=torch.float64, entropy=3, levy_area_approximation="space-time")
    forward = [bm(a, b, return_U=True) for a, b in zip(GRID[:-1], GRID[1:])]
    backward = [bm.increment(k, return_U=True) for k in reversed(range(len(GRID) - 1))][::-1]
    for (dw_f, u_f), (dw_b, u_b) in zip(forward, backward):
        assert torch.equal(dw_f, dw_b) and torch.equal(u_f, u_b)
    # Over [0.1, 0.5]: dW adds up; U = U_1 + U_2 + h_2 dW_1 (U is relative to the start of the interval).
    dw, u = bm(0.1, 0.5, return_U=True)
    (dw1, u1), (dw2, u2) = forward[1], forward[2]
    torch.testing.assert_close(dw, dw1 + dw2, rtol=0, atol=1e-14)
    torch.testing.assert_close(u, u1 + u2 + 0.25 * dw1, rtol=0, atol=1e-14)
    torch.testing.assert_close(bm(1.0), sum(dw for dw, _ in forward), rtol=0, atol=1e-14)
    same = BrownianGrid(GRID, (6, 3), dtype=torch.float64, entropy=3)
    other = BrownianGrid(GRID, (6, 3), dtype=torch.float64, entropy=4)
    assert torch.equal(same.increment(2), dw2) and not torch.equal(other.increment(2), dw2)
    assert not torch.equal(bm.increment(0) / 0.1 ** 0.5, bm.increment(1) / 0.15 ** 0.5)


def test_grid_path_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="strictly increasing"):
        BrownianGrid([0.0, 0.5, 0.5], (2,))
    with pytest.raises(ValueError, match="levy_area_approximation"):
        BrownianGrid(GRID, (2,), levy_area_approximation="davie")
    bm = BrownianGrid(GRID, (2,))
    with pytest.raises(ValueError, match="grid times only"):
        bm(0.0, 0.3)
    with pytest.raises(ValueError, match="ta <= tb"):
        bm(0.5, 0.25)
    with pytest.raises(ValueError, match="space-time"):
        bm.increment(0, return_U=True)
    with pytest.raises(IndexError, match="cells 0..4"):
        bm.increment(5)


# ----------------------------------------------------------------------------- BrownianTree
def test_tree_increments_have_the_brownian_law_at_every_scale():
    """Var of increments = h on intervals from 0.4 down to a few leaves (2^-20 ~ 9.5e-7): ends in
    different leaves are conditionally independent bridges, so the law is exact; disjoint increments
    uncorrelated; with Lévy area Var U = h^3/3 and Cov(dW, U) = h^2/2."""
    n = 200_000
    bm = BrownianTree(0.0, 1.0, (n,), dtype=torch.float64, entropy=3, tol=1e-6,
                      levy_area_approximation="space-time")
    se = 4 * (2 / n) ** 0.5                            # 4 standard errors of a sample variance ratio
    for a, b in ((0.0, 0.3), (0.3, 0.7), (0.4123, 0.4133), (0.31, 0.310003)):
        h = b - a
        dw, u = bm(a, b, return_U=True)
        assert abs(dw.var().item() / h - 1) < se
        assert abs(u.var().item() / (h ** 3 / 3) - 1) < 2 * se
        assert abs((dw * u).mean().item() / (h ** 2 / 2) - 1) < 2 * se
    first, second = bm(0.0, 0.3), bm(0.3, 0.7)
    assert abs(torch.corrcoef(torch.stack([first, second]))[0, 1].item()) < 4 / n ** 0.5


def test_tree_is_a_function_of_the_seed_whatever_the_query_order():
    times = torch.rand(60, generator=torch.Generator().manual_seed(0), dtype=torch.float64).tolist()
    a, b, c = (BrownianTree(0.0, 1.0, (4, 3), dtype=torch.float64, entropy=e, levy_area_approximation="space-time")
               for e in (9, 9, 10))
    shuffled = {t: a(0.0, t, return_U=True) for t in times}     # (W(t), int_0^t W du)
    for t in sorted(times, reverse=True):
        w, i = b(0.0, t, return_U=True)
        assert torch.equal(w, shuffled[t][0]) and torch.equal(i, shuffled[t][1])
    assert not torch.equal(c(times[0]), shuffled[times[0]][0])
    # Increments compose exactly (they are differences of one function of t), area included.
    dw, u = a(0.1, 0.5, return_U=True)
    (dw1, u1), (dw2, u2) = a(0.1, 0.25, return_U=True), a(0.25, 0.5, return_U=True)
    torch.testing.assert_close(dw, dw1 + dw2, rtol=0, atol=1e-14)
    torch.testing.assert_close(u, u1 + u2 + 0.25 * dw1, rtol=0, atol=1e-14)


def test_tree_keeps_one_root_to_leaf_path_only():
    bm = BrownianTree(0.0, 2.0, (8,), tol=1e-3)
    assert bm.depth == 11                              # 2 / 2^11 <= 1e-3 < 2 / 2^10
    for k in range(500):
        bm(k / 250, (k + 1) / 250)
        assert len(bm._path) == bm.depth + 1


def test_tree_tolerance_must_be_positive():
    with pytest.raises(ValueError, match="tol > 0"):
        BrownianTree(0.0, 1.0, (2,), tol=0.0)


def test_path_arguments_and_queries_are_checked():
    """A NaN query used to be stored and poison every later answer; an infinite interval snapped every query
    to t0 (all-zero noise); tol, size, dtype and entropy were not checked."""
    bm = BrownianPath(0.0, 1.0, (2,), entropy=0)
    before = bm(0.0, 0.5).clone()
    with pytest.raises(ValueError, match="tb must be finite"):
        bm(0.0, float("nan"))
    with pytest.raises(ValueError, match="must be finite"):
        bm.increments([0.0, 0.5, float("nan")])
    assert torch.equal(bm(0.0, 0.5), before)
    for make, match in [(lambda: BrownianPath(0.0, float("inf"), (2,)), "t1 must be finite"),
                        (lambda: BrownianTree(float("-inf"), 0.0, (2,)), "t0 must be finite"),
                        (lambda: BrownianGrid([0.0, float("nan"), 1.0], (2,)), "must be finite"),
                        (lambda: BrownianPath(0.0, 1.0, (2,), tol=-1.0), "tol"),
                        (lambda: BrownianPath(0.0, 1.0, (2,), tol=1e-2), "tol"),
                        (lambda: BrownianPath(0.0, 1.0, (2,), dtype=torch.int64), "floating-point"),
                        (lambda: BrownianPath(0.0, 1.0, (2, -1)), "size"),
                        (lambda: BrownianPath(0.0, 1.0, (2,), entropy=2 ** 70), "entropy"),
                        (lambda: BrownianPath(0.0, 1.0, (2,)).increments([]), "at least two")]:
        with pytest.raises((ValueError, TypeError), match=match):
            make()
    assert BrownianPath(0.0, 1.0, 3, entropy=1)(0.0, 1.0).shape == (3,)   # an int size, as torch.Size takes
