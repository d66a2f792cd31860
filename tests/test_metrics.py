"""Metrics against closed forms and known orderings."""
import math

import pytest
import torch

from nde.interpolants import GaussianMixture, checkerboard, ring_mixture
from nde.metrics import (UniformBoxes, dropped_modes, energy_distance_exact, energy_mmd, grid_mass_tv, mode_mass_tv,
                         mode_masses, near_mode_fraction, negative_log_likelihood, sliced_wasserstein,
                         support_fraction)


def test_energy_mmd_gaussian_shift_closed_form():
    """1-D N(0,1) vs N(mu,1): energy distance = 2 E|Z sqrt2 + mu| - 2 E|Z sqrt2| (closed form)."""
    gen = torch.Generator().manual_seed(0)
    mu, n = 1.0, 4000
    x = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    y = mu + torch.randn(n, 1, generator=gen, dtype=torch.float64)
    s = math.sqrt(2.0)

    def folded_mean(m):  # E|N(m, s^2)|
        return s * math.sqrt(2 / math.pi) * math.exp(-m ** 2 / (2 * s ** 2)) + m * math.erf(m / (s * math.sqrt(2)))

    exact = 2 * folded_mean(mu) - 2 * folded_mean(0.0)
    assert abs(energy_mmd(x, y) - exact) < 0.03
    assert abs(energy_mmd(x, torch.randn(n, 1, generator=gen, dtype=torch.float64))) < 0.01


def test_sliced_wasserstein_of_translation():
    """Translating by v gives SW_2^2 = E_theta (theta . v)^2 = |v|^2 / d for equal samples."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1000, 2, generator=gen, dtype=torch.float64)
    v = torch.tensor([3.0, 4.0], dtype=torch.float64)
    sw = sliced_wasserstein(x, x + v, n_projections=1000, generator=gen)
    assert abs(sw - 5.0 / math.sqrt(2)) < 0.1
    assert sliced_wasserstein(x, x, generator=gen) == 0.0


def test_mode_statistics():
    mix = ring_mixture(4, radius=5.0, variance=0.01, weights=torch.tensor([0.4, 0.4, 0.15, 0.05]),
                       dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    x = mix.sample(20000, gen)
    torch.testing.assert_close(mode_masses(x, mix.means), mix.weights, atol=0.01, rtol=0)
    assert mode_mass_tv(x, mix.means, mix.weights) < 0.01
    assert dropped_modes(x, mix.means, mix.weights) == 0
    collapsed = x[torch.cdist(x, mix.means).argmin(1) == 0]
    assert dropped_modes(collapsed, mix.means, mix.weights) == 3
    assert near_mode_fraction(x, mix.means, std=0.1) > 0.98


def test_negative_log_likelihood_is_entropy_for_true_samples():
    """For N(0, I_2) the cross-entropy of true samples is the entropy 1 + log(2 pi)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(20000, 2, generator=gen, dtype=torch.float64)
    nll = negative_log_likelihood(x, lambda y: -0.5 * y.square().sum(1) - math.log(2 * math.pi))
    assert abs(nll - (1 + math.log(2 * math.pi))) < 0.03


def test_metric_argument_errors():
    with pytest.raises(ValueError, match="x"):
        energy_mmd(torch.zeros(3), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="equal shapes"):
        sliced_wasserstein(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="threshold"):
        dropped_modes(torch.zeros(3, 2), torch.zeros(1, 2), torch.ones(1), threshold=2.0)


def test_toy_datasets_have_expected_support():
    """Checkerboard: uniform on the 8 black 2x2 squares of [-4, 4]^2; moons: two arcs, samplers take (n, generator)."""
    from nde.interpolants import checkerboard, two_moons
    gen = torch.Generator().manual_seed(4)
    x = checkerboard(4000, gen)
    assert x.abs().max() <= 4.0
    cell = torch.floor(x / 2).long()
    assert bool(((cell[:, 0] + cell[:, 1]) % 2 == 0).all())  # only one colour of squares
    assert len(set(map(tuple, cell.tolist()))) == 8
    m = two_moons(2000, gen, noise=0.0)
    centres = torch.tensor([[-1.0, -0.5], [1.0, 0.5]])  # upper and lower arcs, radius 2 after scaling
    assert float((torch.cdist(m, centres) - 2).abs().min(1).values.max()) < 1e-5
    assert m.shape == (2000, 2) and torch.equal(two_moons(5, torch.Generator().manual_seed(1)),
                                                two_moons(5, torch.Generator().manual_seed(1)))


def test_energy_mmd_in_blocks_equals_one_block():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(300, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(200, 2, generator=gen, dtype=torch.float64)
    assert abs(energy_mmd(x, y, block=7) - energy_mmd(x, y, block=4096)) < 1e-9
    with pytest.raises(ValueError, match="block"):
        energy_mmd(x, y, block=0)


def test_support_fraction_and_grid_tv_on_the_checkerboard():
    """Uniform points on [-4, 4]^2 fall on the black half (support fraction 1/2, binomial noise); their
    4x4 square masses are 1/16 each, so the TV to the checkerboard's (1/8 on black squares) is exactly 1/2
    up to sampling noise; points outside the cube count as outside mass."""
    from nde.interpolants import checkerboard, checkerboard_cell_masses, checkerboard_log_prob
    gen = torch.Generator().manual_seed(6)
    n = 40000
    uniform = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 8 - 4
    assert abs(support_fraction(uniform, checkerboard_log_prob) - 0.5) < 4 * (0.25 / n) ** 0.5
    assert abs(grid_mass_tv(uniform, checkerboard_cell_masses(4), -4, 4) - 0.5) < 0.01
    x = checkerboard(n, gen, dtype=torch.float64)
    assert support_fraction(x, checkerboard_log_prob) == 1.0
    torch.testing.assert_close(checkerboard_log_prob(x), torch.full((n,), -math.log(32.0), dtype=torch.float64))
    assert grid_mass_tv(x, checkerboard_cell_masses(8), -4, 4) < 0.02
    assert grid_mass_tv(x + 10.0, checkerboard_cell_masses(4), -4, 4) == 1.0  # all mass moved outside
    masses = checkerboard_cell_masses(16)
    assert masses.shape == (16, 16) and abs(float(masses.sum()) - 1) < 1e-12 and int((masses > 0).sum()) == 128


def test_grid_metric_argument_errors():
    from nde.interpolants import checkerboard_cell_masses, checkerboard_log_prob
    with pytest.raises(ValueError, match="cell_masses"):
        grid_mass_tv(torch.zeros(3, 2), torch.ones(4), -1, 1)
    with pytest.raises(ValueError, match="low < high"):
        grid_mass_tv(torch.zeros(3, 2), torch.ones(2, 2) / 4, 1, -1)
    with pytest.raises(ValueError, match="bins"):
        checkerboard_cell_masses(6)
    with pytest.raises(ValueError, match="x"):
        checkerboard_log_prob(torch.zeros(3, 3))


def test_counting_metrics_refuse_nan_and_bad_weights():
    """NaN rows used to count as mode 0 (argmin of NaN distances), so half-NaN samples read as perfect."""
    import nde.metrics as M
    means = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    weights = torch.tensor([0.5, 0.5])
    samples = torch.cat([torch.randn(50, 2) * 0.1, torch.randn(50, 2) * 0.1 + 5])
    assert M.mode_mass_tv(samples, means, weights) < 0.05
    bad = samples.clone()
    bad[:50] = float("nan")
    for metric in (lambda: M.mode_masses(bad, means), lambda: M.mode_mass_tv(bad, means, weights),
                   lambda: M.dropped_modes(bad, means, weights), lambda: M.near_mode_fraction(bad, means, 0.1)):
        with pytest.raises(ValueError, match="samples contains 50 non-finite row"):
            metric()
    with pytest.raises(ValueError, match="weights must be a"):
        M.mode_mass_tv(samples, means, weights[:, None])
    with pytest.raises(ValueError, match="sum to 1"):
        M.dropped_modes(samples, means, weights * 10)
    with pytest.raises(ValueError, match="n_projections"):
        M.sliced_wasserstein(samples, samples, n_projections=0)
    with pytest.raises(ValueError, match="must return shape"):
        M.negative_log_likelihood(samples, lambda x: -0.5 * x ** 2)          # (n, d): a missing sum
    with pytest.raises(ValueError, match="cell_masses"):
        M.grid_mass_tv(samples, -torch.ones(4, 4) / 16, -1.0, 1.0)


def _rectangle_self_distance(a: float, b: float) -> float:
    """Mean distance between two uniform points of an a x b rectangle (closed form, e.g. Mathai, Moschopoulos &
    Pederzoli 1999): (1/15) [a^3/b^2 + b^3/a^2 + d (3 - a^2/b^2 - b^2/a^2)
    + (5/2) (b^2/a ln((a + d)/b) + a^2/b ln((b + d)/a))], d = sqrt(a^2 + b^2)."""
    d = math.hypot(a, b)
    return (a ** 3 / b ** 2 + b ** 3 / a ** 2 + d * (3 - a ** 2 / b ** 2 - b ** 2 / a ** 2)
            + 2.5 * (b ** 2 / a * math.log((a + d) / b) + a ** 2 / b * math.log((b + d) / a))) / 15


def test_uniform_boxes_distances_against_closed_forms():
    """Unit square: E|Y - Y'| = (2 + sqrt2 + 5 asinh 1) / 15, E|c - Y| from the centre = (sqrt2 + asinh 1) / 6; two
    adjacent unit squares with equal weights are the 2 x 1 rectangle (cross terms with corners of both signs)."""
    square = UniformBoxes([[0.0, 0.0]], [[1.0, 1.0]])
    assert square.self_distance() == pytest.approx((2 + math.sqrt(2) + 5 * math.asinh(1)) / 15, abs=1e-12)
    centre = torch.tensor([[0.5, 0.5]])
    assert float(square.mean_distance(centre)) == pytest.approx((math.sqrt(2) + math.asinh(1)) / 6, abs=1e-12)
    pair = UniformBoxes([[0.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [2.0, 1.0]])
    rectangle = UniformBoxes([[0.0, 0.0]], [[2.0, 1.0]])
    assert pair.self_distance() == pytest.approx(_rectangle_self_distance(2.0, 1.0), abs=1e-12)
    points = torch.tensor([[0.3, 0.7], [1.0, 0.5], [-2.0, 3.0], [5.0, -1.0], [2.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(pair.mean_distance(points), rectangle.mean_distance(points), atol=1e-12, rtol=0)
    far = torch.tensor([[300.0, -200.0]], dtype=torch.float64)   # far away: |x - centroid| to O(1/|x|)
    assert float(rectangle.mean_distance(far)) == pytest.approx(math.hypot(299.0, -200.5), abs=1e-3)


def test_checkerboard_distances_against_monte_carlo():
    """The checkerboard's E|x - Y| at fixed points and E|Y - Y'| (as the mean of E|y - Y'| over true samples)."""
    boxes = UniformBoxes.checkerboard()
    y = checkerboard(400_000, torch.Generator().manual_seed(0), torch.float64)
    points = torch.tensor([[0.5, 0.5], [-4.0, -4.0], [3.0, -1.0], [10.0, 7.0]], dtype=torch.float64)
    torch.testing.assert_close(boxes.mean_distance(points), torch.cdist(points, y).mean(1), atol=0.01, rtol=0)
    per_point = boxes.mean_distance(y)
    assert abs(float(per_point.mean()) - boxes.self_distance()) < 4 * float(per_point.std()) / 400_000 ** 0.5


def test_gaussian_mixture_distances_against_closed_form_and_monte_carlo():
    """Rice mean: E|Z| = s sqrt(pi/2) for Z ~ N(0, s^2 I_2) (Rayleigh), -> |nu| far away; mixture terms by sampling."""
    single = GaussianMixture(torch.ones(1), torch.zeros(1, 2, dtype=torch.float64), 0.3 ** 2)
    origin = torch.zeros(1, 2)
    assert float(single.mean_distance(origin)) == pytest.approx(0.3 * math.sqrt(math.pi / 2), rel=1e-10)
    assert float(single.mean_distance(torch.tensor([[400.0, 300.0]]))) == pytest.approx(500.0, rel=1e-6)
    mix = ring_mixture(8, radius=3.0, variance=0.05, weights=torch.tensor([0.23, 0.02] * 4), dtype=torch.float64)
    y = mix.sample(400_000, torch.Generator().manual_seed(1))
    points = torch.tensor([[0.0, 0.0], [3.0, 0.1], [-1.0, 5.0]], dtype=torch.float64)
    torch.testing.assert_close(mix.mean_distance(points), torch.cdist(points, y).mean(1), atol=0.01, rtol=0)
    per_point = mix.mean_distance(y)
    assert abs(float(per_point.mean()) - mix.self_distance()) < 4 * float(per_point.std()) / 400_000 ** 0.5
    with pytest.raises(ValueError, match="2-D"):
        mix.mean_distance(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="2-D"):
        GaussianMixture(torch.ones(1), torch.zeros(1, 3), 1.0).self_distance()


def test_energy_distance_exact_matches_two_sample_estimates():
    """N(mu, I) samples against the exact N(0, I): closed form 2 E|W + mu| - 2 E|W|, W ~ N(0, 2 I) (Rice means);
    true samples score ~0; and the checkerboard value agrees with the two-sample energy MMD."""
    gen = torch.Generator().manual_seed(2)
    target = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64), 1.0)
    shift = 0.5
    x = torch.randn(8000, 2, generator=gen, dtype=torch.float64) + torch.tensor([shift, 0.0], dtype=torch.float64)
    rice = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64), 2.0)
    exact = 2 * float(rice.mean_distance(torch.tensor([[shift, 0.0]]))) - 2 * float(rice.mean_distance(torch.zeros(1, 2)))
    assert energy_distance_exact(x, target) == pytest.approx(exact, abs=0.005)
    assert abs(energy_distance_exact(torch.randn(8000, 2, generator=gen), target)) < 0.002
    boxes = UniformBoxes.checkerboard()
    z = 1.5 * torch.randn(4000, 2, generator=gen, dtype=torch.float64)
    two_sample = energy_mmd(z, checkerboard(8000, gen, torch.float64))
    assert energy_distance_exact(z, boxes) == pytest.approx(two_sample, abs=0.01)


def test_energy_distance_exact_pairs_once_and_checks_arguments():
    """The self term, each unordered pair computed once in row blocks, equals the full pairwise mean."""
    from nde.metrics import _self_mean_distance
    x = torch.randn(203, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    full = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist").sum() / (203 * 202)
    for block in (1, 37, 64, 203, 500):
        torch.testing.assert_close(_self_mean_distance(x, block), full, atol=0, rtol=1e-9)
    boxes = UniformBoxes.checkerboard()
    with pytest.raises(ValueError, match="samples"):
        energy_distance_exact(torch.randn(10), boxes)
    with pytest.raises(ValueError, match="non-finite"):
        energy_distance_exact(torch.tensor([[0.0, 0.0], [float("nan"), 1.0]]), boxes)
    with pytest.raises(ValueError, match="block"):
        energy_distance_exact(x, boxes, block=0)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        energy_distance_exact(torch.randn(5, 3), boxes)
    with pytest.raises(ValueError, match="highs > lows"):
        UniformBoxes([[0.0, 0.0]], [[0.0, 1.0]])
    with pytest.raises(ValueError, match="weights"):
        UniformBoxes([[0.0, 0.0]], [[1.0, 1.0]], weights=[-1.0])


def test_distances_and_likelihoods_refuse_non_finite_samples_instead_of_returning_nan():
    good = torch.randn(20, 2, dtype=torch.float64)
    bad = good.clone()
    bad[3, 1] = float("nan")
    bad[7, 0] = float("inf")
    with pytest.raises(ValueError, match="x contains 2 non-finite row"):
        energy_mmd(bad, good)
    with pytest.raises(ValueError, match="y contains 2 non-finite row"):
        sliced_wasserstein(good, bad)
    with pytest.raises(ValueError, match="samples contains 2 non-finite row"):
        negative_log_likelihood(bad, lambda x: -0.5 * (x ** 2).sum(-1))


def test_ring_mixture_needs_a_positive_number_of_modes():
    from nde.diffusion import ring_mixture as diffusion_ring
    for build in (ring_mixture, diffusion_ring):
        with pytest.raises(ValueError, match="n_modes must be a positive int, got 0"):
            build(0)


def test_energy_mmd_checks_the_dimension_and_promotes_the_dtype():
    """Samples of different d failed inside torch.cdist; float32 model samples against a float64 target sample
    failed with a dtype error. Reference: the direct O(n^2) formula in float64."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(40, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(30, 2, generator=gen, dtype=torch.float64) + 0.5
    x32 = x.float()
    xx, yy = torch.cdist(x32.double(), x32.double()), torch.cdist(y, y)
    direct = 2 * torch.cdist(x32.double(), y).mean() - xx.sum() / (40 * 39) - yy.sum() / (30 * 29)
    assert abs(energy_mmd(x32, y) - float(direct)) < 1e-12
    assert abs(energy_mmd(y, x32) - float(direct)) < 1e-12
    with pytest.raises(ValueError, match=r"x and y must have the same dimension d"):
        energy_mmd(x, torch.randn(30, 3, generator=gen, dtype=torch.float64))


def test_mode_and_grid_metrics_refuse_non_finite_weights():
    """A NaN weight passed the non-negative / sum checks (comparisons with NaN are False): mode_mass_tv returned
    NaN and dropped_modes counted no mode as dropped although the samples miss one; NaN cell masses gave a NaN TV,
    NaN box weights NaN distances."""
    import nde.metrics as M
    means = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    samples = torch.randn(50, 2, generator=torch.Generator().manual_seed(8)) * 0.1  # all at mode 0
    assert M.dropped_modes(samples, means, torch.tensor([0.5, 0.5])) == 1
    for weights in (torch.tensor([float("nan"), 1.0]), torch.tensor([0.0, float("inf")])):
        for metric in (M.mode_mass_tv, M.dropped_modes):
            with pytest.raises(ValueError, match="weights contains 1 non-finite"):
                metric(samples, means, weights)
    masses = torch.full((4, 4), 1 / 16)
    masses[0, 0] = float("nan")
    with pytest.raises(ValueError, match="cell_masses must be floating-point, finite"):
        M.grid_mass_tv(samples, masses, -1.0, 1.0)
    with pytest.raises(ValueError, match="weights must be a finite"):
        M.UniformBoxes([[0.0, 0.0], [2.0, 0.0]], [[1.0, 1.0], [3.0, 1.0]], weights=[float("nan"), 1.0])
