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


# --------------------------------------------------------------------------- quadrature over a region
# holding the model's mass (the box-only NLL and the IS-normalised MSE cannot see mass off the data)


def _normal_cdf(z):
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _gaussian_energy(mu, s):
    mu = torch.as_tensor(mu, dtype=torch.float64)
    return lambda x: ((x.double() - mu) ** 2).sum(1) / (2 * s * s)


def _two_component_log_q(x, far=(10.0, -9.0), s=0.5):
    # q = ½ N(0, s²I) + ½ N(far, s²I): half the mass far outside [−4, 4]²
    far = torch.tensor(far, dtype=torch.float64)
    x = x.double()
    comps = torch.stack([-(x**2).sum(1), -((x - far) ** 2).sum(1)], dim=1) / (2 * s * s)
    return torch.logsumexp(comps, dim=1) - math.log(2 * 2 * math.pi * s * s)


def test_region_log_normaliser_of_normalised_densities_is_zero():
    ds = toy.get("25gaussians")
    q = metrics.region_log_normaliser(lambda x: -ds.log_prob(x))
    assert abs(q.log_z) < 1e-3
    assert q.mass_outside_box < 1e-6 and q.mass_in_edge_band < 1e-12
    assert q.n_points == 200**2 + 128**2 - 32**2  # fine box + coarse region minus the box's coarse cells
    std = metrics.region_log_normaliser(lambda x: 0.5 * (x**2).sum(1) + math.log(2 * math.pi))
    assert abs(std.log_z) < 1e-3


def test_region_quadrature_and_nll_of_wide_gaussian_match_closed_form():
    # E = |x − μ|²/(2s²): Z = 2πs², mass in [−4, 4]² = Π_j [Φ((4 − μ_j)/s) − Φ((−4 − μ_j)/s)] ≈ 0.644
    mu, s = (1.0, -0.5), 3.0
    energy = _gaussian_energy(mu, s)
    inside = math.prod(_normal_cdf((4 - m) / s) - _normal_cdf((-4 - m) / s) for m in mu)
    q = metrics.region_log_normaliser(energy)
    assert q.log_z == pytest.approx(math.log(2 * math.pi * s * s), abs=1e-3)
    assert q.mass_outside_box == pytest.approx(1 - inside, abs=5e-4)
    assert q.mass_in_edge_band < metrics.EDGE_BAND_TOLERANCE
    x = torch.randn(2000, 2, generator=gen(5), dtype=torch.float64)
    exact = float(energy(x).mean()) + math.log(2 * math.pi * s * s)  # cross-entropy −(1/B)Σ log q(xᵢ)
    honest = metrics.region_nll(energy, x)
    assert honest.nll == pytest.approx(exact, abs=1e-3)
    assert honest.log_z == q.log_z and honest.mass_outside_box == q.mass_outside_box
    # the flaw: the box-only NLL is lower, by −log(1 − mass outside)
    box_only = metrics.grid_nll(energy, x, (-4.0, 4.0), 200)
    assert box_only < honest.nll - 0.4
    assert honest.nll - box_only == pytest.approx(-math.log(inside), abs=1e-3)


def test_region_nll_of_model_with_a_component_far_outside_the_box():
    energy = lambda x: -_two_component_log_q(x)
    x = 0.5 * torch.randn(2000, 2, generator=gen(6), dtype=torch.float64)  # data from the near component
    r = metrics.region_nll(energy, x, (-4.0, 4.0))
    assert abs(r.log_z) < 1e-3
    assert r.mass_outside_box == pytest.approx(0.5, abs=1e-4)
    assert r.mass_in_edge_band < 1e-12
    exact = float(-_two_component_log_q(x).mean())
    assert r.nll == pytest.approx(exact, abs=1e-3)
    assert metrics.grid_nll(energy, x, (-4.0, 4.0), 200) == pytest.approx(exact - math.log(2), abs=1e-3)


def test_region_too_small_shows_in_the_edge_band_and_growth_holds_the_mass():
    energy = _gaussian_energy((0.0, 0.0), 10.0)  # ~1/3 of the mass lies beyond [−16, 16]²
    base = metrics.region_log_normaliser(energy, max_growth=1)  # the base region alone
    assert base.mass_in_edge_band > 100 * metrics.EDGE_BAND_TOLERANCE and not base.exact and base.n_shells == 0
    assert base.log_z < math.log(2 * math.pi * 100.0) - 0.1  # an underestimate, flagged
    assert base.unheld_mass == 1.0
    big = metrics.region_log_normaliser(energy, region=(-68.0, 68.0), n_region=272, max_growth=1)  # box on cells 128…144
    assert big.mass_in_edge_band < metrics.EDGE_BAND_TOLERANCE and big.exact
    assert big.log_z == pytest.approx(math.log(2 * math.pi * 100.0), abs=1e-3)
    grown = metrics.region_log_normaliser(energy)  # shells out to |x|_∞ = 128 hold it
    assert grown.exact and grown.half_width == 128.0 and grown.n_shells == 3
    assert grown.log_z == pytest.approx(math.log(2 * math.pi * 100.0), abs=2e-4)
    assert grown.mass_in_shells == pytest.approx(1 - math.erf(16 / (10 * math.sqrt(2))) ** 2, abs=1e-4)
    assert grown.mass_in_edge_band < 1e-12 and grown.unheld_mass == grown.mass_in_edge_band


def _far_mixture_energy(ds, far=(40.0, 40.0)):
    # q = ½·p₂₅ + ½·N(far, I), normalised: E = −log q
    far = torch.tensor(far, dtype=torch.float64)
    far_log = lambda x: -((x.double() - far) ** 2).sum(1) / 2 - math.log(2 * math.pi)
    return lambda x: math.log(2) - torch.logaddexp(ds.log_prob(x).double(), far_log(x))


def test_region_finds_a_component_far_beyond_the_base_region():
    # The reviewer's model: half the mass at (40, 40), beyond the base region [−16, 16]². Without
    # growth it scores NLL H(p) (as if q = p), MSE 0 and no mass outside; its true NLL is H(p) + log 2.
    ds = toy.get("25gaussians")
    energy = _far_mixture_energy(ds)
    x = ds.sample(2000, gen(8)).double()
    exact = float(energy(x).mean())  # cross-entropy −(1/B) Σ log q(xᵢ): q is normalised
    blind = metrics.region_nll(energy, x, ds.bounds, max_growth=1)
    assert blind.nll == pytest.approx(exact - math.log(2), abs=1e-3) and blind.mass_outside_box < 1e-12
    r = metrics.region_nll(energy, x, ds.bounds)
    assert r.nll == pytest.approx(exact, abs=1e-3) and r.exact and r.bound == "exact"
    assert r.log_z == pytest.approx(0.0, abs=1e-4) and r.mass_outside_box == pytest.approx(0.5, abs=1e-4)
    q = metrics.region_log_normaliser(energy, ds.bounds)
    assert q.mass_in_shells == pytest.approx(0.5, abs=1e-4) and q.half_width >= 64 and q.tail_bound < metrics.GROWTH_TOLERANCE
    mse = metrics.region_mse_log_density(energy, ds, n=2000, generator=gen(), quadrature=q)
    assert mse.mse == pytest.approx(math.log(2) ** 2, abs=1e-3) and mse.exact  # 0.480
    assert metrics.region_mse_log_density(energy, ds, n=2000, generator=gen(), max_growth=1).mse < 1e-6


def _clipped_energy(ds, radius=20.0):
    # −log p₂₅ out to |x| = radius, then constant along every ray: exp(−E) is not normalisable
    def energy(x):
        x = x.double()
        return -ds.log_prob(x * torch.clamp(radius / x.norm(dim=1, keepdim=True), max=1.0)).double()
    return energy


@pytest.mark.parametrize("case", ["stops growing", "flat", "log tail", "falls far out"])
def test_energy_without_an_integrable_tail_is_only_a_lower_bound(case):
    ds = toy.get("25gaussians")
    energy = {
        "stops growing": _clipped_energy(ds),
        "flat": lambda x: torch.zeros(x.shape[0], dtype=torch.float64),
        "log tail": lambda x: torch.log1p((x.double() ** 2).sum(1)),  # exp(−E) ~ r⁻²: ∫ r⁻²·r dr diverges
        "falls far out": lambda x: (x.double() ** 2).sum(1).clamp(max=900.0) - 1e-3 * (x.double() ** 2).sum(1).sqrt(),
    }[case]
    x = ds.sample(500, gen(9)).double()
    r = metrics.region_nll(energy, x, ds.bounds)
    assert not r.exact and r.bound == "lower" and math.isfinite(r.nll)
    q = metrics.region_log_normaliser(energy, ds.bounds)
    assert not q.exact and q.unheld_mass == 1.0 and q.tail_bound == math.inf
    assert q.n_shells == 0 and q.log_z == metrics.region_log_normaliser(energy, ds.bounds, max_growth=1).log_z  # R's value, as before
    assert not metrics.region_mse_log_density(energy, ds, n=100, generator=gen(), quadrature=q).exact
    if case == "flat":
        assert q.log_z == pytest.approx(math.log(32.0**2))


def test_power_law_tail_is_integrated_exactly():
    # exp(−E) = (1 + |x|²)⁻³: Z = π/2, 2e-3 of it beyond |x| = 16; E rises like 6·log r, faster than 3·log r
    energy = lambda x: 3 * torch.log1p((x.double() ** 2).sum(1))
    q = metrics.region_log_normaliser(energy)
    assert q.exact and q.n_shells >= 1 and q.tail_bound <= metrics.GROWTH_TOLERANCE
    assert q.log_z == pytest.approx(math.log(math.pi / 2), abs=1e-4)
    base = metrics.region_log_normaliser(energy, max_growth=1)  # R alone: its tail bound is too large to vouch for it
    assert not base.exact and base.tail_bound > metrics.GROWTH_TOLERANCE and base.log_z < q.log_z


def test_model_inside_the_base_region_is_unchanged_and_exact():
    # All of today's trained models: one shell of negligible mass, the base region's values up to it.
    ds = toy.get("25gaussians")
    for energy in (lambda x: -ds.log_prob(x), _gaussian_energy((1.0, -0.5), 3.0)):
        q, base = metrics.region_log_normaliser(energy), metrics.region_log_normaliser(energy, max_growth=1)
        assert q.exact and q.n_shells == 1 and q.half_width == 32.0
        assert q.n_points == base.n_points == 200**2 + 128**2 - 32**2 and q.n_shell_points == 128**2 - 64**2  # [−32, 32]² \\ [−16, 16]² at spacing 0.5
        assert abs(q.log_z - base.log_z) < 1e-6 and abs(q.mass_outside_box - base.mass_outside_box) < 1e-6
        assert q.mass_in_shells < metrics.GROWTH_TOLERANCE and q.tail_bound < metrics.GROWTH_TOLERANCE
    gm = GaussianMixture(0.2)  # 1-D: two rays, shells are intervals
    q = metrics.region_log_normaliser(gm.energy, gm.bounds, dim=1)
    assert q.exact and q.n_shells == 1 and q.n_probe_points > 0 and q.n_probe_points % 2 == 0 and abs(q.log_z) < 1e-6


def test_region_mse_of_true_energy_plus_constant_is_zero():
    ds = toy.get("25gaussians")
    r = metrics.region_mse_log_density(lambda x: ds.energy(x) + 3.7, ds, n=2000, generator=gen())
    assert r.mse < 1e-8 and r.log_z == pytest.approx(-3.7, abs=1e-4)
    gm = GaussianMixture(0.2)  # 1-D, box = its bounds
    assert metrics.region_mse_log_density(gm.energy, gm, n=1000, generator=gen()).mse < 1e-8


def test_region_mse_sees_mass_that_importance_sampling_misses():
    # q = ½p + ½r with r far from the data: log q − log p ≈ −log 2 on every data point, so the
    # IS-normalised MSE is ≈ 0 while the quadrature one is (log 2)².
    ds = toy.get("25gaussians")
    far = torch.tensor([10.0, -9.0], dtype=torch.float64)
    r_log = lambda x: -((x.double() - far) ** 2).sum(1) / (2 * 0.25) - math.log(2 * math.pi * 0.25)
    energy = lambda x: -torch.logaddexp(ds.log_prob(x).double(), r_log(x)) + math.log(2)
    assert metrics.mse_log_density(energy, ds, n=2000, generator=gen()) < 1e-10
    r = metrics.region_mse_log_density(energy, ds, n=2000, generator=gen())
    assert r.mse == pytest.approx(math.log(2) ** 2, abs=1e-3)
    assert r.mass_outside_box == pytest.approx(0.5, abs=1e-4)
    # deterministic given the generator's seed
    assert metrics.region_mse_log_density(energy, ds, n=2000, generator=gen()) == r


def test_region_metrics_on_a_network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.Softplus(), nn.Linear(16, 1))
    ds = toy.get("25gaussians")
    x = ds.sample(200, gen(7))
    r = metrics.region_nll(net, x, ds.bounds)
    assert all(math.isfinite(v) for v in (r.nll, r.log_z)) and 0 <= r.mass_outside_box <= 1
    assert r.nll >= metrics.grid_nll(net, x, ds.bounds, 200) - 1e-9
    assert metrics.region_nll(net, x, ds.bounds) == r  # no randomness in the quadrature


def test_region_bad_inputs():
    quad = lambda x: 0.5 * (x**2).sum(1)
    x = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="box"):
        metrics.region_log_normaliser(quad, box=(1.0, -1.0))
    with pytest.raises(ValueError, match="box"):
        metrics.region_nll(quad, x, box=(0.0,))
    with pytest.raises(ValueError, match="region"):
        metrics.region_log_normaliser(quad, region=(-3.0, 16.0))  # does not contain the box
    with pytest.raises(ValueError, match="region"):
        metrics.region_log_normaliser(quad, region=(float("nan"), 1.0))
    with pytest.raises(ValueError, match="n_box"):
        metrics.region_nll(quad, x, n_box=0)
    with pytest.raises(ValueError, match="n_region"):
        metrics.region_log_normaliser(quad, n_region=0)
    with pytest.raises(ValueError, match="n_region"):
        metrics.region_log_normaliser(quad, n_region=100)  # box edges at cells 37.5, 62.5
    with pytest.raises(ValueError, match="x"):
        metrics.region_nll(quad, torch.zeros(5))
    with pytest.raises(ValueError, match="energy"):
        metrics.region_log_normaliser(3.0)
    with pytest.raises(ValueError, match="dataset"):
        metrics.region_mse_log_density(quad, toy.get("moons"))
    with pytest.raises(ValueError, match="box"):
        metrics.region_mse_log_density(quad, StdGaussian2D(), n=10)  # no bounds to default to
    for bad in (0, 3, 96, 1.5, True, "64"):
        with pytest.raises(ValueError, match="max_growth"):
            metrics.region_log_normaliser(quad, max_growth=bad)
    with pytest.raises(ValueError, match="max_growth"):
        metrics.region_nll(quad, x, max_growth=-2)
    with pytest.raises(ValueError, match="max_growth"):
        metrics.region_mse_log_density(quad, toy.get("25gaussians"), n=10, max_growth=5)


def test_the_mse_floor_is_a_lower_bound_whatever_log_z_is():
    # A model with half its mass far outside every region: the floor still bounds the true MSE from below.
    ds = toy.get("25gaussians")
    gen = torch.Generator().manual_seed(0)
    tilted = lambda x: -ds.log_prob(x) + 0.3 * x[:, 0]  # noqa: E731  (a wrong model: the floor is positive)
    small = metrics.region_mse_log_density(tilted, ds, 2000, gen, max_growth=1)
    assert 0 < small.floor <= small.mse + 1e-12
    exact = metrics.region_mse_log_density(lambda x: -ds.log_prob(x) + 7.0, ds, 2000, torch.Generator().manual_seed(0))
    assert exact.floor < 1e-12 and exact.mse < 1e-6  # the true density up to a constant: no error at all
