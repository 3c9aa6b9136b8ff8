import math

import pytest
import torch
from torch import nn

from edrepro import metrics, toy
from edrepro.toy import GaussianMixture


class StdGaussian2D:
    """N(0, I) in 2-D with log_prob only (exercises the autograd score path)."""

    name = "gauss2d"
    has_log_prob = True

    def sample(self, n, generator=None):
        return torch.randn(n, 2, generator=generator, dtype=torch.float64)

    def log_prob(self, x):
        return -0.5 * (x**2).sum(1) - math.log(2 * math.pi)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- MSE of log-density


def test_mse_of_true_energy_is_zero_and_normaliser_invariant():
    ds = toy.get("25gaussians")
    assert metrics.mse_log_density(ds.energy, ds, n=2000, generator=gen()) < 1e-10
    shifted = lambda x: ds.energy(x) + 7.3
    assert metrics.mse_log_density(shifted, ds, n=2000, generator=gen()) < 1e-10


def test_mse_of_wrong_mixture_weight_matches_closed_form():
    # Model ρ = 0.5 against data ρ = 0.2: log q − log p = log(0.5/0.2) on the left mode and
    # log(0.5/0.8) on the right (overlap ~e^-12.5), so MSE → 0.2·log²2.5 + 0.8·log²0.625 = 0.3446.
    data, model = GaussianMixture(0.2), GaussianMixture(0.5)
    value = metrics.mse_log_density(model.energy, data, n=5000, generator=gen(1))
    assert value == pytest.approx(0.2 * math.log(2.5) ** 2 + 0.8 * math.log(0.625) ** 2, abs=0.03)


def test_mse_of_wrong_energy_is_large():
    ds = toy.get("25gaussians")
    gaussian_fit = lambda x: 0.5 * (x**2).sum(1) / 2.0
    assert metrics.mse_log_density(gaussian_fit, ds, n=2000, generator=gen()) > 1.0


def test_mse_moves_samples_to_a_modules_dtype():
    ds = toy.get("8gaussians")

    class TrueEnergy(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Parameter(torch.zeros((), dtype=torch.float64))

        def forward(self, x):
            assert x.dtype == torch.float64
            return ds.energy(x) + self.c

    assert metrics.mse_log_density(TrueEnergy(), ds, n=500, generator=gen()) < 1e-10


def test_mse_bad_inputs():
    ds = toy.get("25gaussians")
    with pytest.raises(ValueError, match="dataset"):
        metrics.mse_log_density(ds.energy, toy.get("moons"))
    with pytest.raises(ValueError, match="n"):
        metrics.mse_log_density(ds.energy, ds, n=0)
    with pytest.raises(ValueError, match="energy"):
        metrics.mse_log_density(3.0, ds)
    with pytest.raises(ValueError, match="energy"):
        metrics.mse_log_density(lambda x: x, ds, n=10)  # (B, 2) output is not an energy


# --------------------------------------------------------------------------- grid quadrature


def test_grid_log_normaliser_of_standard_gaussian():
    quad = lambda x: 0.5 * (x**2).sum(1, keepdim=True)  # (B, 1) output is accepted
    assert metrics.grid_log_normaliser(quad, (-8.0, 8.0), 200) == pytest.approx(math.log(2 * math.pi), abs=1e-6)
    assert metrics.grid_log_normaliser(quad, (-8.0, 8.0), 400, dim=1) == pytest.approx(0.5 * math.log(2 * math.pi), abs=1e-6)
    # a scaled Gaussian: Z = 2π·σ²
    wide = lambda x: 0.5 * (x**2).sum(1) / 0.25
    assert metrics.grid_log_normaliser(wide, (-5.0, 5.0), 400) == pytest.approx(math.log(2 * math.pi * 0.25), abs=1e-6)


def test_grid_nll_of_true_energy_matches_analytic_nll():
    ds = toy.get("25gaussians")
    x = ds.sample(3000, gen(2)).double()
    analytic = -ds.log_prob(x).mean().item()
    assert metrics.grid_nll(ds.energy, x, ds.bounds, 400) == pytest.approx(analytic, abs=1e-3)
    plus_const = lambda y: ds.energy(y) - 4.0
    assert metrics.grid_nll(plus_const, x, ds.bounds, 400) == pytest.approx(analytic, abs=1e-3)


def test_grid_log_density_is_normalised():
    ds = toy.get("rings")
    axis, log_q = metrics.grid_log_density(ds.energy, (-4.0, 4.0), 400)
    assert axis.shape == (400,) and log_q.shape == (400, 400)
    h = 8.0 / 400
    assert log_q.exp().sum().item() * h * h == pytest.approx(1.0, abs=1e-9)
    # indexed [i_x1, i_x2]: an asymmetric energy tells the axes apart
    _, lq = metrics.grid_log_density(lambda x: -x[:, 0], (-1.0, 1.0), 10)
    assert lq[-1, 0] > lq[0, -1]


def test_grid_bad_inputs():
    quad = lambda x: 0.5 * (x**2).sum(1)
    with pytest.raises(ValueError, match="bounds"):
        metrics.grid_log_normaliser(quad, (1.0, -1.0), 10)
    with pytest.raises(ValueError, match="bounds"):
        metrics.grid_log_normaliser(quad, (0.0,), 10)
    with pytest.raises(ValueError, match="n"):
        metrics.grid_log_normaliser(quad, (-1.0, 1.0), 0)
    with pytest.raises(ValueError, match="x"):
        metrics.grid_nll(quad, torch.zeros(5), (-1.0, 1.0), 10)


# --------------------------------------------------------------------------- MMD


def test_mmd_same_vs_shifted_distribution():
    g = gen(3)
    x, y = torch.randn(600, 2, generator=g), torch.randn(600, 2, generator=g)
    same = metrics.mmd(x, y)
    shifted = metrics.mmd(x, y + torch.tensor([1.5, 0.0]))
    assert abs(same) < 0.01
    assert shifted > 0.1
    assert metrics.mmd(y, x) == pytest.approx(same, abs=1e-12)


def test_mmd_matches_brute_force_unbiased_formula():
    g = gen(4)
    x, y = torch.randn(5, 2, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64) + 1
    ell = 0.7
    k = lambda a, b: math.exp(-float(((a - b) ** 2).sum()) / (2 * ell**2))
    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    assert metrics.mmd(x, y, bandwidth=ell) == pytest.approx(kxx + kyy - 2 * kxy, abs=1e-12)
    # the median heuristic: ℓ = median pairwise distance of the pooled sample
    pool = torch.cat([x, y])
    d = torch.cdist(pool, pool)[~torch.eye(9, dtype=torch.bool)]
    assert metrics.mmd(x, y) == pytest.approx(metrics.mmd(x, y, bandwidth=float(d.median())), abs=1e-12)


def test_mmd_bad_inputs():
    with pytest.raises(ValueError, match="y"):
        metrics.mmd(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="bandwidth"):
        metrics.mmd(torch.randn(5, 2), torch.randn(5, 2), bandwidth=-1.0)


# --------------------------------------------------------------------------- Fisher divergence


def test_fisher_divergence_of_true_energy_is_zero():
    gm = GaussianMixture(0.2)
    assert metrics.fisher_divergence(gm.energy, gm, n=2000, generator=gen()) < 1e-12
    ds = toy.get("8gaussians")
    assert metrics.fisher_divergence(ds.energy, ds, n=2000, generator=gen()) < 1e-8


def test_fisher_divergence_of_shifted_gaussian_is_closed_form():
    # E(x) = ½|x − a|² against N(0, I): ∇E + ∇log p = −a everywhere, so F = ½|a|².
    a1 = 0.7
    data1 = GaussianMixture(1.0, means=(0.0, 0.0))
    value = metrics.fisher_divergence(lambda x: 0.5 * ((x - a1) ** 2).sum(1), data1, n=500, generator=gen())
    assert value == pytest.approx(0.5 * a1**2, abs=1e-6)
    a2 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    value = metrics.fisher_divergence(lambda x: 0.5 * ((x - a2) ** 2).sum(1), StdGaussian2D(), n=500, generator=gen())
    assert value == pytest.approx(0.5 * 5.0, abs=1e-9)


def test_fisher_divergence_leaves_parameter_grads_alone():
    net = nn.Sequential(nn.Linear(2, 8), nn.Softplus(), nn.Linear(8, 1))
    value = metrics.fisher_divergence(net, toy.get("25gaussians"), n=100, generator=gen())
    assert value > 0 and all(p.grad is None for p in net.parameters())


def test_fisher_divergence_needs_a_density():
    with pytest.raises(ValueError, match="dataset"):
        metrics.fisher_divergence(lambda x: (x**2).sum(1), toy.get("pinwheel"), n=10)
