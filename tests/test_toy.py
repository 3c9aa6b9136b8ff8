import math

import pytest
import torch

from edrepro import toy
from edrepro.toy import GaussianMixture


def _grid(lo: float, hi: float, n: int, dim: int) -> tuple[torch.Tensor, float]:
    h = (hi - lo) / n
    axis = lo + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    pts = torch.cartesian_prod(*([axis] * dim)) if dim > 1 else axis[:, None]
    return pts, h**dim


# --------------------------------------------------------------------------- 1-D mixture


@pytest.mark.parametrize("rho", [0.2, 0.7])
def test_mixture_log_prob_integrates_to_one(rho):
    gm = GaussianMixture(rho)
    x, h = _grid(-15.0, 15.0, 6000, 1)
    assert gm.log_prob(x).exp().sum().item() * h == pytest.approx(1.0, abs=1e-9)


def test_mixture_log_prob_matches_formula():
    gm = GaussianMixture(0.3, means=(-1.0, 2.0), std=0.5)
    x = torch.tensor([[-1.0], [0.4], [2.0]], dtype=torch.float64)
    n = lambda m: torch.exp(-0.5 * ((x[:, 0] - m) / 0.5) ** 2) / (0.5 * math.sqrt(2 * math.pi))
    torch.testing.assert_close(gm.log_prob(x), torch.log(0.3 * n(-1.0) + 0.7 * n(2.0)))
    torch.testing.assert_close(gm.energy(x), -gm.log_prob(x))


@pytest.mark.parametrize("gm", [GaussianMixture(0.2), GaussianMixture(0.3, means=(-1.0, 2.0), std=0.5)])
def test_mixture_score_matches_autograd(gm):
    x = torch.linspace(-9, 9, 101, dtype=torch.float64)[:, None].requires_grad_(True)
    (auto,) = torch.autograd.grad(gm.log_prob(x).sum(), x)
    torch.testing.assert_close(gm.score(x), auto)
    assert gm.score(x).shape == (101, 1)


def test_mixture_rho_tensor_is_differentiable():
    rho = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    gm = GaussianMixture(rho)
    x = torch.tensor([[-5.0], [0.0], [5.0]], dtype=torch.float64)
    (g,) = torch.autograd.grad(gm.log_prob(x).sum(), rho)
    # d/dρ log(ρ N₁ + (1−ρ) N₂) = (N₁ − N₂)/p
    n1 = torch.exp(-0.5 * (x[:, 0] + 5) ** 2)
    n2 = torch.exp(-0.5 * (x[:, 0] - 5) ** 2)
    expected = ((n1 - n2) / (0.2 * n1 + 0.8 * n2)).sum()
    torch.testing.assert_close(g, expected)


@pytest.mark.parametrize("rho, m1, m2, std", [(0.2, -5.0, 5.0, 1.0), (0.6, -1.0, 3.0, 0.5)])
def test_mixture_sample_moments(rho, m1, m2, std):
    x = GaussianMixture(rho, means=(m1, m2), std=std).sample(200_000, torch.Generator().manual_seed(0)).double()
    assert x.shape == (200_000, 1)
    mean = rho * m1 + (1 - rho) * m2
    var = std**2 + rho * (1 - rho) * (m1 - m2) ** 2
    assert x.mean().item() == pytest.approx(mean, abs=0.03)  # se ≤ 0.009
    assert x.var().item() == pytest.approx(var, rel=0.01)  # se ≤ 0.4%
    assert (x < (m1 + m2) / 2).double().mean().item() == pytest.approx(rho, abs=0.006)


def test_mixture_sample_deterministic():
    gm = GaussianMixture(0.4)
    a = gm.sample(100, torch.Generator().manual_seed(3))
    b = gm.sample(100, torch.Generator().manual_seed(3))
    c = gm.sample(100, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"rho": 1.5}, "rho"),
        ({"rho": torch.tensor([0.2, 0.3])}, "rho"),
        ({"rho": 0.2, "std": 0.0}, "std"),
        ({"rho": 0.2, "means": (1.0,)}, "means"),
        ({"rho": 0.2, "means": (1.0, math.nan)}, "means"),
    ],
)
def test_mixture_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        GaussianMixture(**kwargs)


def test_mixture_bad_inputs():
    gm = GaussianMixture(0.2)
    with pytest.raises(ValueError, match="x"):
        gm.log_prob(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="x"):
        gm.score(torch.zeros(4))
    with pytest.raises(ValueError, match="n"):
        gm.sample(0)


# --------------------------------------------------------------------------- 2-D sets


@pytest.fixture(scope="module")
def samples():
    g = torch.Generator().manual_seed(1)
    return {name: toy.get(name).sample(100_000, g).double() for name in toy.NAMES}


@pytest.mark.parametrize("name", toy.NAMES)
def test_sample_moments_match_documentation(name, samples):
    ds, x = toy.get(name), samples[name]
    assert ds.name == name and ds.dim == 2 and x.shape == (100_000, 2)
    # per-coordinate std ≤ 2.5 → se of the mean ≤ 0.008; se of E|x|² ≤ 0.03
    torch.testing.assert_close(x.mean(0), torch.tensor(ds.mean, dtype=torch.float64), atol=0.04, rtol=0)
    assert (x**2).sum(1).mean().item() == pytest.approx(ds.mean_sq_norm, rel=0.02)
    lo, hi = ds.bounds
    assert ((x >= lo) & (x <= hi)).all(1).double().mean().item() > 0.999


@pytest.mark.parametrize("name", [n for n in toy.NAMES if toy.get(n).has_log_prob])
def test_log_prob_integrates_to_one_and_matches_moments(name, samples):
    ds = toy.get(name)
    pts, area = _grid(-5.5, 5.5, 880, 2)  # h = 0.0125: ≥ 6 points per component std
    p = torch.cat([ds.log_prob(pts[i : i + 300_000]).exp() for i in range(0, len(pts), 300_000)])
    assert p.sum().item() * area == pytest.approx(1.0, abs=1e-3)
    # The density and the sampler describe the same distribution: E|x|² agrees.
    assert ((pts**2).sum(1) * p).sum().item() * area == pytest.approx(ds.mean_sq_norm, rel=1e-3)
    inside = ((pts >= ds.bounds[0]) & (pts <= ds.bounds[1])).all(1)
    assert p[inside].sum().item() * area > 0.999
    assert torch.isfinite(ds.log_prob(samples[name][:5000])).all()


def test_25gaussians_uses_the_authors_parameters():
    ds = toy.get("25gaussians")
    s = 1.414
    std = 0.2 / s
    centre = torch.tensor([[2.0, -4.0]], dtype=torch.float64) / s
    # at a centre the other components (≥ 10 std away) are negligible
    peak = -math.log(25) - math.log(2 * math.pi * std**2)
    assert ds.log_prob(centre).item() == pytest.approx(peak, abs=1e-9)
    assert ds.log_prob(torch.zeros(1, 2, dtype=torch.float64)).item() == pytest.approx(peak, abs=1e-9)
    off = centre + torch.tensor([[std, 0.0]], dtype=torch.float64)
    assert ds.log_prob(off).item() == pytest.approx(peak - 0.5, abs=1e-9)
    assert ds.bounds == (-4.0, 4.0)


def test_checkerboard_support_and_cross_moment(samples):
    ds = toy.get("checkerboard")
    x = samples["checkerboard"]
    assert (x[:, 0] * x[:, 1]).mean().item() == pytest.approx(1.0, abs=0.05)  # se ≈ 0.02
    on = torch.tensor([[-3.0, -3.0], [-1.0, -1.0], [3.0, 3.0], [-2.0, -2.0]])  # last: a shared corner
    off = torch.tensor([[-3.0, -1.0], [1.0, 3.0], [4.5, 0.0]])
    torch.testing.assert_close(ds.log_prob(on), torch.full((4,), -math.log(32.0)))
    assert torch.isneginf(ds.log_prob(off)).all()


def test_moons_and_swissroll_coordinate_moments(samples):
    x = samples["moons"]
    # E(2(cos φ − ½))² + 0.01 and E(2(sin φ − ¼))² + 0.01, E[x₁x₂] = 4(0.125 − 1/π)
    assert (x[:, 0] ** 2).mean().item() == pytest.approx(3.01, abs=0.03)
    assert (x[:, 1] ** 2).mean().item() == pytest.approx(4 * (9 / 16 - 1 / math.pi) + 0.01, abs=0.02)
    assert (x[:, 0] * x[:, 1]).mean().item() == pytest.approx(4 * (0.125 - 1 / math.pi), abs=0.02)
    y = samples["swissroll"]
    assert y[:, 0].mean().item() == pytest.approx(0.4, abs=0.02)


@pytest.mark.parametrize("name", toy.NAMES)
def test_sample_deterministic_with_seed(name):
    ds = toy.get(name)
    a = ds.sample(64, torch.Generator().manual_seed(7))
    b = ds.sample(64, torch.Generator().manual_seed(7))
    c = ds.sample(64, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.get_default_dtype()


def test_get_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="25gaussians") as info:
        toy.get("26gaussians")
    assert "26gaussians" in str(info.value) and all(n in str(info.value) for n in toy.NAMES)
    assert toy.NAMES == ("25gaussians", "8gaussians", "rings", "checkerboard", "pinwheel", "2spirals", "moons", "swissroll")


def test_non_analytic_sets_raise_not_implemented():
    for name in ("pinwheel", "2spirals", "moons", "swissroll"):
        ds = toy.get(name)
        assert not ds.has_log_prob
        with pytest.raises(NotImplementedError, match=name):
            ds.log_prob(torch.zeros(3, 2))


def test_2d_bad_inputs():
    ds = toy.get("rings")
    with pytest.raises(ValueError, match="n"):
        ds.sample(-1)
    with pytest.raises(ValueError, match="x"):
        ds.log_prob(torch.zeros(3, 3))
