"""Small torchsde-style SDEs with closed-form solutions, shared by the SDE tests."""
import torch


class GBM(torch.nn.Module):
    """Geometric Brownian motion ``dy = mu y dt + sigma y dW`` (diagonal noise).

    Exact solution on the path ``W``: Itô ``y0 exp((mu - sigma^2/2) t + sigma W_t)``,
    Stratonovich ``y0 exp(mu t + sigma W_t)``.
    """
    noise_type = "diagonal"

    def __init__(self, sde_type="ito", mu=0.5, sigma=0.8, noise_type="diagonal"):
        super().__init__()
        self.sde_type, self.noise_type = sde_type, noise_type
        self.mu = torch.nn.Parameter(torch.tensor(mu, dtype=torch.float64))
        self.sigma = torch.nn.Parameter(torch.tensor(sigma, dtype=torch.float64))

    def f(self, t, y):
        return self.mu * y

    def g(self, t, y):
        g = self.sigma * y
        return g if self.noise_type == "diagonal" else g.unsqueeze(-1)

    def exact(self, y0, t, w):
        drift = self.mu - (0.5 * self.sigma ** 2 if self.sde_type == "ito" else 0.0)
        return y0 * torch.exp(drift * t + self.sigma * w)


class OU(torch.nn.Module):
    """Ornstein–Uhlenbeck ``dy = theta (m - y) dt + sigma dW`` (additive noise, Itô = Stratonovich)."""

    def __init__(self, sde_type="ito", theta=1.5, m=0.3, sigma=0.6):
        super().__init__()
        self.sde_type, self.noise_type = sde_type, "additive"
        self.theta, self.m, self.sigma = theta, m, sigma

    def f(self, t, y):
        return self.theta * (self.m - y)

    def g(self, t, y):
        return torch.full((*y.shape, 1), self.sigma, dtype=y.dtype)


class NeuralSDE(torch.nn.Module):
    """Small MLP drift and diffusion; ``noise_type`` diagonal or general (m = 3)."""

    def __init__(self, sde_type="stratonovich", noise_type="diagonal", d=3, hidden=8):
        super().__init__()
        self.sde_type, self.noise_type, self.d = sde_type, noise_type, d
        m = d if noise_type == "diagonal" else 3
        self.m = m
        self.drift = torch.nn.Sequential(torch.nn.Linear(d + 1, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, d))
        out = d if noise_type == "diagonal" else d * m
        self.diffusion = torch.nn.Sequential(torch.nn.Linear(d + 1, hidden), torch.nn.Tanh(),
                                             torch.nn.Linear(hidden, out), torch.nn.Sigmoid())
        self.double()

    def _in(self, t, y):
        return torch.cat([y, t.expand(y.shape[0], 1)], dim=1)

    def f(self, t, y):
        return self.drift(self._in(t, y))

    def g(self, t, y):
        g = self.diffusion(self._in(t, y))
        return g if self.noise_type == "diagonal" else g.view(-1, self.d, self.m)
