"""Every public sampler of nde.interpolants, nde.distill and nde.metrics that takes a ``generator`` refuses a seed
(an int) with the shared check's TypeError naming ``generator``; several failed inside torch.rand/randn/multinomial
with a list of overloads. The samplers that take a sample count ``n`` return an empty sample for n = 0 and refuse a
negative n by name."""
import pytest
import torch

from nde.distill import DiffusionTeacher, FDistill
from nde.interpolants import (checkerboard, log_likelihood, ring_mixture, sample_sde, sample_times,
                              standard_normal, two_moons)
from nde.metrics import sliced_wasserstein


def _half(t, x):
    return 0.5 * x


def _fdistill_sample(generator):
    mix = standard_normal(1)
    task = FDistill(DiffusionTeacher.from_mixture(mix), mix.sample, 1, hidden=4, depth=1)
    return task.sample(3, generator=generator)


_X = torch.zeros(4, 2)
SAMPLERS = {
    "checkerboard": lambda g: checkerboard(3, generator=g),
    "two_moons": lambda g: two_moons(3, generator=g),
    "GaussianMixture.sample": lambda g: ring_mixture().sample(3, generator=g),
    "sample_times": lambda g: sample_times(3, generator=g),
    "sample_sde": lambda g: sample_sde(_half, _half, _X, 0.5, steps=2, generator=g),
    "log_likelihood": lambda g: log_likelihood(_half, _X, lambda x: x.sum(1), divergence="hutchinson", generator=g),
    "DiffusionTeacher.sample": lambda g: DiffusionTeacher(lambda x, s: x).sample(3, 2, steps=2, generator=g),
    "FDistill.sample": _fdistill_sample,
    "sliced_wasserstein": lambda g: sliced_wasserstein(_X + torch.arange(4.0)[:, None], _X, generator=g),
}


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_seed_for_a_generator_is_refused_by_name(name):
    call = SAMPLERS[name]
    call(torch.Generator().manual_seed(0))  # a generator is accepted
    with pytest.raises(TypeError, match="`generator` must be a torch.Generator or None, got int"):
        call(0)


def _fdistill(dim):
    mix = standard_normal(dim)
    return FDistill(DiffusionTeacher.from_mixture(mix), mix.sample, dim, hidden=4, depth=1)


COUNTED = {  # name: (call with n, the shape of one sample)
    "checkerboard": (checkerboard, (2,)),
    "two_moons": (two_moons, (2,)),
    "GaussianMixture.sample": (ring_mixture().sample, (2,)),
    "sample_times": (sample_times, ()),
    "DiffusionTeacher.sample": (lambda n: DiffusionTeacher(lambda x, s: x).sample(n, 3, steps=2), (3,)),
    "FDistill.sample": (lambda n: _fdistill(3).sample(n), (3,)),
}


@pytest.mark.parametrize("name", COUNTED)
def test_n_zero_is_an_empty_sample_and_a_negative_n_is_refused_by_name(name):
    """GaussianMixture.sample(0) failed inside torch.multinomial while the others returned an empty sample; a
    negative n failed inside torch with 'negative dimension'."""
    call, shape = COUNTED[name]
    assert call(2).shape == (2, *shape)
    assert call(0).shape == (0, *shape)
    with pytest.raises(ValueError, match="n must be a non-negative int, got -1"):
        call(-1)
