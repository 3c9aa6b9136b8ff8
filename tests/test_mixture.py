"""Loss curves over the mixture weight (edrepro.mixture) against the package's per-ρ losses."""

import math

import pytest
import torch

from edrepro import losses, mixture
from edrepro.toy import GaussianMixture

F64 = torch.float64
OTHER = dict(means=(-1.0, 2.0), std=0.5)  # overlapping components: every curve is far from flat


def _model(rho: float, **family) -> GaussianMixture:
    # A float64 0-d tensor keeps ρ exact in the float64 log-weights.
    return GaussianMixture(torch.tensor(rho, dtype=F64), **family)


def _data(n: int = 300, seed: int = 0, rho: float = 0.3, **family) -> torch.Tensor:
    return GaussianMixture(rho, **family).sample(n, generator=torch.Generator().manual_seed(seed)).to(F64)


def test_rho_grid_is_the_papers_grid():
    rhos = mixture.rho_grid()
    assert rhos.dtype == F64 and rhos.shape == (98,)
    assert rhos[0].item() == 0.01 and rhos[-1].item() == 0.98 and rhos[19].item() == 0.2
    torch.testing.assert_close(rhos.diff(), torch.full((97,), 0.01, dtype=F64))
    assert mixture.rho_grid(0.1, 0.9, 0.2).tolist() == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])


@pytest.mark.parametrize("kwargs", [dict(start=0.0), dict(stop=1.0), dict(start=0.5, stop=0.4), dict(step=-0.1), dict(start=0.015, step=0.01, stop=0.02)])
def test_rho_grid_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        mixture.rho_grid(**kwargs)


@pytest.mark.parametrize("family", [{}, OTHER])
def test_nll_curve_matches_log_prob(family):
    x, rhos = _data(**family), mixture.rho_grid(0.05, 0.95, 0.15)
    curve = mixture.nll_curve(x, rhos, **family)
    expected = torch.stack([-_model(float(r), **family).log_prob(x).mean() for r in rhos])
    torch.testing.assert_close(curve, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("family", [{}, OTHER])
def test_fisher_curve_matches_scores(family):
    x, rhos = _data(**family), mixture.rho_grid(0.05, 0.95, 0.15)
    curve = mixture.fisher_curve(x, rhos, rho_true=0.35, **family)
    true = _model(0.35, **family).score(x)
    expected = torch.stack([0.5 * ((_model(float(r), **family).score(x) - true) ** 2).mean() for r in rhos])
    torch.testing.assert_close(curve, expected, rtol=1e-10, atol=1e-15)
    assert (curve >= 0).all()
    assert mixture.fisher_curve(x, torch.tensor([0.35], dtype=F64), rho_true=0.35, **family).item() == 0.0


def test_fisher_curve_is_tiny_for_separated_modes():
    x = _data(4096, rho=0.2)
    curve = mixture.fisher_curve(x, mixture.rho_grid())
    assert curve.max() < 1e-6 and curve[19] == 0.0


def test_fisher_population_is_the_expectation_of_fisher_curve():
    rhos = mixture.rho_grid(0.1, 0.6, 0.1)
    pop = mixture.fisher_population(rhos, rho_true=0.35, **OTHER)
    sample = mixture.fisher_curve(_data(400_000, seed=5, rho=0.35, **OTHER), rhos, rho_true=0.35, **OTHER)
    torch.testing.assert_close(sample, pop, rtol=0.06, atol=1e-6)  # Monte Carlo error ≈ 2 %
    assert mixture.fisher_population(torch.tensor([0.35], dtype=F64), rho_true=0.35, **OTHER).item() == 0.0
    # Separated modes: of order e^{-12.5}, far from zero but far below the likelihood's scale.
    sep = mixture.fisher_population(mixture.rho_grid())
    assert 1e-7 < sep.max() < 1e-3 and sep[19] == 0.0


@pytest.mark.parametrize("family", [{}, OTHER])
def test_hyvarinen_curve_matches_score_matching(family):
    x, rhos = _data(**family), mixture.rho_grid(0.05, 0.95, 0.15)
    curve = mixture.hyvarinen_curve(x, rhos, **family)
    expected = torch.stack([losses.score_matching(_model(float(r), **family).energy, x) for r in rhos])
    torch.testing.assert_close(curve, expected, rtol=0, atol=1e-12)


def test_hyvarinen_equals_fisher_up_to_a_constant_in_expectation():
    # E_p[½s_ρ² + s_ρ'] = Fisher(ρ) − ½E_p|s_*|²: on a large sample the differences between ρ agree.
    x, rhos = _data(200_000, seed=3, rho=0.35, **OTHER), mixture.rho_grid(0.1, 0.6, 0.1)
    hyv = mixture.hyvarinen_curve(x, rhos, **OTHER)
    fis = mixture.fisher_curve(x, rhos, rho_true=0.35, **OTHER)
    torch.testing.assert_close(hyv - hyv[0], fis - fis[0], rtol=0, atol=0.02)


@pytest.mark.parametrize("w", [0.0, 1.0, 3.5])
@pytest.mark.parametrize("family", [{}, OTHER])
def test_ed_curve_is_energy_discrepancy_with_common_random_numbers(w, family):
    x, rhos = _data(**family), mixture.rho_grid(0.05, 0.95, 0.15)
    curve = mixture.ed_curve(x, rhos, t=2.5, m_particles=3, w=w, generator=torch.Generator().manual_seed(7), **family)
    expected = [
        losses.energy_discrepancy(_model(float(r), **family).energy, x, 2.5, 3, w, generator=torch.Generator().manual_seed(7))
        for r in rhos
    ]
    torch.testing.assert_close(curve, torch.stack(expected), rtol=0, atol=1e-12)


def test_ed_curve_is_seeded_and_chunking_is_exact(monkeypatch):
    x, rhos = _data(), mixture.rho_grid()
    a = mixture.ed_curve(x, rhos, 4.0, generator=torch.Generator().manual_seed(1))
    b = mixture.ed_curve(x, rhos, 4.0, generator=torch.Generator().manual_seed(1))
    c = mixture.ed_curve(x, rhos, 4.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    monkeypatch.setattr(mixture, "_CHUNK", 7 * x.shape[0] * 5)  # blocks of 7 ρ values
    torch.testing.assert_close(mixture.ed_curve(x, rhos, 4.0, generator=torch.Generator().manual_seed(1)), a, rtol=0, atol=1e-14)


def test_ed_curve_bounded_below_by_log_w_over_m():
    x = _data()
    curve = mixture.ed_curve(x, mixture.rho_grid(), 1.0, m_particles=4, w=0.5, generator=torch.Generator().manual_seed(0))
    assert (curve > math.log(0.5 / 4)).all()


@pytest.mark.parametrize(
    "call",
    [
        lambda x, r: mixture.ed_curve(x, r, t=0.0),
        lambda x, r: mixture.ed_curve(x, r, t=1.0, m_particles=0),
        lambda x, r: mixture.ed_curve(x, r, t=1.0, w=-1.0),
        lambda x, r: mixture.nll_curve(x[:, [0, 0]], r),
        lambda x, r: mixture.nll_curve(x, torch.tensor([0.0, 0.5], dtype=F64)),
        lambda x, r: mixture.nll_curve(x, torch.tensor([[0.5]], dtype=F64)),
        lambda x, r: mixture.fisher_curve(x, r, rho_true=1.0),
        lambda x, r: mixture.hyvarinen_curve(x, r, std=0.0),
        lambda x, r: mixture.nll_curve(x, r, means=(0.0,)),
    ],
)
def test_curves_reject_bad_input(call):
    with pytest.raises(ValueError):
        call(_data(10), mixture.rho_grid())


def test_curve_minimum_on_a_parabola():
    rhos = mixture.rho_grid()
    m = mixture.curve_minimum(rhos, 3.0 * (rhos - 0.237) ** 2 + 1.0)
    assert m.rho == pytest.approx(0.24) and not m.at_edge
    assert m.refined == pytest.approx(0.237, abs=1e-12)
    assert m.curvature == pytest.approx(6.0, rel=1e-9)
    assert m.value == pytest.approx(1.0 + 3.0 * 0.003**2)


def test_curve_minimum_at_the_edge_and_on_a_flat_curve():
    rhos = mixture.rho_grid()
    edge = mixture.curve_minimum(rhos, (rhos - 0.5) ** 3)
    assert edge.at_edge and edge.rho == edge.refined == 0.01
    assert edge.curvature == pytest.approx(6 * (0.02 - 0.5), rel=1e-6)  # second difference at the first interior point
    flat = mixture.curve_minimum(rhos, torch.zeros_like(rhos))
    assert flat.refined == flat.rho and flat.curvature == 0.0


@pytest.mark.parametrize(
    "rhos, values",
    [
        (mixture.rho_grid(), torch.zeros(5, dtype=F64)),
        (torch.tensor([0.1, 0.2, 0.4], dtype=F64), torch.zeros(3, dtype=F64)),
        (torch.tensor([0.1, 0.2], dtype=F64), torch.zeros(2, dtype=F64)),
        (mixture.rho_grid(), torch.full((98,), float("nan"), dtype=F64)),
        (mixture.rho_grid().flip(0), torch.zeros(98, dtype=F64)),
    ],
)
def test_curve_minimum_rejects_bad_input(rhos, values):
    with pytest.raises(ValueError):
        mixture.curve_minimum(rhos, values)


def test_estimation_study_is_seeded_and_consistent():
    kwargs = dict(n_datasets=3, ts=[2.0, 32.0], n_samples=1024, progress=False)
    a = mixture.estimation_study(generator=torch.Generator().manual_seed(0), **kwargs)
    b = mixture.estimation_study(generator=torch.Generator().manual_seed(0), **kwargs)
    assert set(a.estimates) == {"MLE", "SM", "ED t=2", "ED t=32"}
    for name in a.estimates:
        assert a.estimates[name].shape == (3,) and torch.equal(a.estimates[name], b.estimates[name])
    mse = a.mse()
    assert mse["MLE"] == pytest.approx(float(((a.estimates["MLE"] - 0.2) ** 2).mean()))
    assert a.ed_mse() == [mse["ED t=2"], mse["ED t=32"]]
    sq = (a.estimates["SM"] - 0.2) ** 2
    assert a.mse_stderr()["SM"] == pytest.approx(float(sq.std() / math.sqrt(3)))
    assert (a.estimates["MLE"] - 0.2).abs().max() < 0.05  # sd of the MLE ≈ √(0.16/1024) = 0.0125


def test_estimation_study_matches_its_definition():
    g = torch.Generator().manual_seed(4)
    study = mixture.estimation_study(1, [8.0], n_samples=256, generator=g, progress=False)
    g = torch.Generator().manual_seed(4)
    x = GaussianMixture(0.2).sample(256, generator=g)
    rhos = mixture.rho_grid()
    assert study.estimates["MLE"].item() == mixture.curve_minimum(rhos, mixture.nll_curve(x, rhos)).refined
    ed = mixture.ed_curve(x, rhos, 8.0, generator=g)
    assert study.estimates["ED t=8"].item() == mixture.curve_minimum(rhos, ed).refined


@pytest.mark.parametrize("kwargs", [dict(n_datasets=0, ts=[1.0]), dict(n_datasets=1, ts=[]), dict(n_datasets=1, ts=[-1.0]), dict(n_datasets=1, ts="2")])
def test_estimation_study_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        mixture.estimation_study(progress=False, **kwargs)
