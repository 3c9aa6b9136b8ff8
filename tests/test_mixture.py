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


# --- per-point terms and the standard errors of the page's claims ---------------------------------


def test_per_point_terms_average_to_the_curves():
    x, rhos = _data(**OTHER), mixture.rho_grid(0.05, 0.95, 0.15)
    for curve in (mixture.nll_curve, mixture.hyvarinen_curve):
        terms = curve(x, rhos, per_point=True, **OTHER)
        assert terms.shape == (rhos.numel(), x.shape[0])
        torch.testing.assert_close(terms.mean(dim=1), curve(x, rhos, **OTHER), rtol=0, atol=1e-13)
    fisher = mixture.fisher_curve(x, rhos, rho_true=0.35, per_point=True, **OTHER)
    torch.testing.assert_close(fisher.mean(dim=1), mixture.fisher_curve(x, rhos, rho_true=0.35, **OTHER), rtol=0, atol=1e-15)
    ed = mixture.ed_curve(x, rhos, 2.0, generator=torch.Generator().manual_seed(3), per_point=True, **OTHER)
    mean = mixture.ed_curve(x, rhos, 2.0, generator=torch.Generator().manual_seed(3), **OTHER)
    torch.testing.assert_close(ed.mean(dim=1), mean, rtol=0, atol=1e-13)


def test_per_point_ed_terms_are_single_point_losses(monkeypatch):
    # Term i is the loss of point i alone with its own perturbations; chunking does not change it.
    x, rhos = _data(5), mixture.rho_grid(0.1, 0.9, 0.2)
    terms = mixture.ed_curve(x, rhos, 4.0, m_particles=3, generator=torch.Generator().manual_seed(0), per_point=True)
    monkeypatch.setattr(mixture, "_CHUNK", 2 * 5 * 4)
    chunked = mixture.ed_curve(x, rhos, 4.0, m_particles=3, generator=torch.Generator().manual_seed(0), per_point=True)
    torch.testing.assert_close(chunked, terms, rtol=0, atol=1e-14)
    g = torch.Generator().manual_seed(0)
    xd = x.double()
    y = xd + 2.0 * torch.randn((5, 1), generator=g, dtype=F64)
    neg = y[:, None, :] + 2.0 * torch.randn((5, 3, 1), generator=g, dtype=F64)
    for k, r in enumerate(rhos):
        e = _model(float(r)).energy
        for i in range(5):
            expected = torch.logsumexp(torch.cat([e(xd[i : i + 1]) - e(neg[i]), torch.zeros(1, dtype=F64)]), 0) - math.log(3)
            assert terms[k, i].item() == pytest.approx(expected.item(), abs=1e-12)


def test_per_point_must_be_a_bool():
    with pytest.raises(ValueError, match="per_point"):
        mixture.nll_curve(_data(10), mixture.rho_grid(), per_point=1)


def test_weight_fisher_information_of_separated_and_overlapping_components():
    # Separated: a coin flip with bias rho, I = 1/(rho(1 - rho)).
    for rho in (0.2, 0.5, 0.9):
        assert mixture.weight_fisher_information(rho) == pytest.approx(1 / (rho * (1 - rho)), rel=1e-5)
    # Overlapping: E[(d/drho log p)^2] on a large sample, which is below the coin's information.
    x = _data(400_000, seed=2, rho=0.3, **OTHER)[:, 0].double()
    l1 = torch.distributions.Normal(-1.0, 0.5).log_prob(x).exp()
    l2 = torch.distributions.Normal(2.0, 0.5).log_prob(x).exp()
    score = (l1 - l2) / (0.3 * l1 + 0.7 * l2)
    info = mixture.weight_fisher_information(0.3, **OTHER)
    assert info == pytest.approx(float((score**2).mean()), rel=0.02)
    assert info < 1 / (0.3 * 0.7)


def test_weight_fisher_information_is_the_curvature_of_the_population_likelihood():
    # -E[d^2/drho^2 log p] = I: the second difference of the NLL on a large sample.
    x = _data(400_000, seed=4, rho=0.3, **OTHER)
    rhos = mixture.rho_grid(0.29, 0.31, 0.01)
    nll = mixture.nll_curve(x, rhos, **OTHER)
    curvature = float((nll[0] - 2 * nll[1] + nll[2]) / 0.01**2)
    assert curvature == pytest.approx(mixture.weight_fisher_information(0.3, **OTHER), rel=0.02)


def test_mean_stderr():
    mean, se = mixture.mean_stderr(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert mean == 3.0 and se == pytest.approx(math.sqrt(14 / 3) / 2)
    for bad in (torch.tensor([1.0]), torch.zeros(2, 2), [1.0, 2.0], torch.tensor([1.0, float("nan")])):
        with pytest.raises(ValueError):
            mixture.mean_stderr(bad)


def test_minimiser_stderr_of_the_likelihood_is_one_over_root_n_i():
    x, rhos = _data(4096, seed=1, rho=0.2), mixture.rho_grid()
    se = mixture.minimiser_stderr(rhos, mixture.nll_curve(x, rhos, per_point=True))
    assert se == pytest.approx(1 / math.sqrt(4096 * mixture.weight_fisher_information(0.2)), rel=0.05)


@pytest.mark.parametrize("loss", ["MLE", "ED"])
def test_minimiser_stderr_predicts_the_spread_over_data_sets(loss):
    # The sandwich error from one data set matches the sd of the minimisers over 150 data sets.
    g, rhos = torch.Generator().manual_seed(11), mixture.rho_grid(0.05, 0.6, 0.005)
    estimates, errors = [], []
    for _ in range(150):
        x = GaussianMixture(0.3, **OTHER).sample(300, generator=g)
        if loss == "MLE":
            terms = mixture.nll_curve(x, rhos, per_point=True, **OTHER)
        else:
            terms = mixture.ed_curve(x, rhos, 1.0, m_particles=4, generator=g, per_point=True, **OTHER)
        estimates.append(mixture.curve_minimum(rhos, terms.mean(dim=1)).refined)
        errors.append(mixture.minimiser_stderr(rhos, terms))
    spread = float(torch.tensor(estimates).std())
    assert float(torch.tensor(errors).median()) == pytest.approx(spread, rel=0.2)
    assert abs(float(torch.tensor(estimates).mean()) - 0.3) < 3 * spread / math.sqrt(150)  # no bias at this precision


def test_minimiser_stderr_is_infinite_at_an_edge_or_without_curvature():
    rhos = mixture.rho_grid(0.1, 0.9, 0.1)
    rising = (rhos[:, None] * torch.ones(1, 4, dtype=F64)) + torch.randn(9, 4, dtype=F64) * 0
    assert mixture.minimiser_stderr(rhos, rising) == math.inf
    concave = -((rhos - 0.5) ** 2)[:, None].repeat(1, 4)
    concave[0] += 1.0  # minimum at the first point
    assert mixture.minimiser_stderr(rhos, concave) == math.inf


def test_point_curvatures_are_exact_second_differences():
    rhos = mixture.rho_grid(0.1, 0.9, 0.1)
    c = torch.tensor([1.0, 2.0, 5.0], dtype=F64)
    terms = c[None, :] * (rhos[:, None] - 0.3) ** 2
    torch.testing.assert_close(mixture.point_curvatures(rhos, terms, 0.5), 2 * c, rtol=1e-9, atol=0)
    for bad in (0.1, 0.9, 0.35):  # edge points and a weight off the grid
        with pytest.raises(ValueError, match="rho"):
            mixture.point_curvatures(rhos, terms, bad)


def test_rise_zscores():
    # One point carries the rise: about one standard error however large; k equal points: about sqrt(k).
    n = 400
    one = torch.zeros(3, n, dtype=F64)
    one[0, 0] = 1e3
    z = mixture.rise_zscores(one)
    assert z[0].item() == pytest.approx(1.0, rel=0.01) and z[1] == 0 and z[2] == 0
    nine = torch.zeros(2, n, dtype=F64)
    nine[1, :9] = 5.0
    assert mixture.rise_zscores(nine)[1].item() == pytest.approx(3.0, rel=0.02)
    # the definition: mean / (sd / sqrt(N)) of the per-point rises above the minimising row
    terms = torch.randn(4, 50, dtype=F64, generator=torch.Generator().manual_seed(0))
    d = terms - terms[int(terms.mean(dim=1).argmin())]
    expected = d.mean(dim=1) / (d.std(dim=1) / math.sqrt(50))
    expected[int(terms.mean(dim=1).argmin())] = 0.0
    torch.testing.assert_close(mixture.rise_zscores(terms), expected)


def test_rise_zscores_of_the_fisher_curve_depend_on_the_overlap_of_the_modes():
    # Separated modes: the Fisher curve rises by a few standard errors at most, whatever the data set
    # (so the myopia page does not assert "the SM curve is flat": it would hold by construction);
    # overlapping modes: the same measure is large.
    rhos = mixture.rho_grid()
    separated = mixture.fisher_curve(_data(4096, seed=4, rho=0.2), rhos, per_point=True)
    assert mixture.rise_zscores(separated).max() < 4
    closer = mixture.fisher_curve(_data(4096, seed=4, rho=0.2, **OTHER), rhos, per_point=True, **OTHER)
    assert mixture.rise_zscores(closer).max() > 4  # modes 6 sd apart instead of 10
    near = dict(means=(-1.0, 1.0), std=1.0)
    overlapping = mixture.fisher_curve(_data(4096, seed=4, rho=0.2, **near), rhos, per_point=True, **near)
    assert mixture.rise_zscores(overlapping).max() > 20


def test_summarise_curve_and_nearest_grid_point():
    x, rhos = _data(2048, seed=5, rho=0.2), mixture.rho_grid()
    terms = mixture.nll_curve(x, rhos, per_point=True)
    s = mixture.summarise_curve(rhos, terms, 0.2)
    assert s.minimum == mixture.curve_minimum(rhos, terms.mean(dim=1))
    assert s.stderr == mixture.minimiser_stderr(rhos, terms)
    assert (s.curvature, s.curvature_stderr) == mixture.mean_stderr(mixture.point_curvatures(rhos, terms, 0.2))
    assert abs(s.curvature - mixture.weight_fisher_information(0.2)) < 4 * s.curvature_stderr
    assert s.max_rise_z == float(mixture.rise_zscores(terms).max()) and s.rho_ref == 0.2
    assert mixture.nearest_grid_point(rhos, 0.2) == 0.2 and mixture.nearest_grid_point(rhos, 0.2049) == 0.2
    with pytest.raises(ValueError, match="terms"):
        mixture.summarise_curve(rhos, terms[:, :1], 0.2)


def test_log_mse_ratio_is_the_delta_method_on_paired_errors():
    est = {"a": torch.tensor([0.3, 0.1, 0.25, 0.2], dtype=F64), "b": torch.tensor([0.21, 0.19, 0.2, 0.22], dtype=F64)}
    study = mixture.EstimationStudy(rho_true=0.2, ts=(1.0,), estimates=est)
    ea, eb = (est["a"] - 0.2) ** 2, (est["b"] - 0.2) ** 2
    r, se = study.log_mse_ratio("a", "b")
    assert r == pytest.approx(math.log(float(ea.mean() / eb.mean())))
    assert se == pytest.approx(float((ea / ea.mean() - eb / eb.mean()).std() / 2))
    assert study.log_mse_ratio("b", "a")[0] == pytest.approx(-r)
    with pytest.raises(ValueError, match="not a loss"):
        study.log_mse_ratio("a", "MLE")
