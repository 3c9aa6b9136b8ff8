"""Figure 2 helpers (edrepro.chapters.stabilisation): the one-parameter model's optimum, learned energies, the runs."""

import math

import pytest
import torch

from edrepro import losses, nets
from edrepro.chapters import stabilisation

F64 = torch.float64


def _study(n=4096, t=1.0, m=4, seed=0):
    return stabilisation.quadratic_study(n, t, m, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("w", [0.0, 0.5, 1.0, 4.0])
def test_quadratic_loss_is_energy_discrepancy_of_a_parabola(w):
    # Same draws in the same order: x, then the perturbations of losses.energy_discrepancy.
    study = _study(n=300, t=2.0, m=3, seed=4)
    g = torch.Generator().manual_seed(4)
    x = torch.randn((300, 1), generator=g, dtype=F64)
    for a in (0.5, 1.0, 2.5):
        expected = losses.energy_discrepancy(lambda z: 0.5 * a * (z**2).sum(dim=1), x, 2.0, 3, w, generator=g)
        g = torch.Generator().manual_seed(4)
        torch.randn((300, 1), generator=g, dtype=F64)
        assert study.loss(a, w).item() == pytest.approx(expected.item(), abs=1e-12)


def test_quadratic_loss_slope_and_convexity():
    study, a = _study(), torch.linspace(0.2, 4.0, 39, dtype=F64)
    for w in (0.0, 0.1, 1.0):
        loss = study.loss(a, w)
        h = 1e-5
        numeric = (study.loss(a + h, w) - study.loss(a - h, w)) / (2 * h)
        torch.testing.assert_close(study.slope(a, w), numeric, rtol=1e-5, atol=1e-8)
        assert ((loss[:-2] - 2 * loss[1:-1] + loss[2:]) >= -1e-12).all()  # convex in a
    assert (study.loss(a, 1.0) >= math.log(1.0 / 4)).all()  # bounded below by log(w/M)


def test_quadratic_optimum_solves_the_slope_and_orders_with_w():
    study = _study(n=1 << 15, seed=1)
    optimum = {w: study.optimum(w) for w in (0.0, 0.1, 1.0, 4.0)}
    for w, a in optimum.items():
        assert abs(study.slope(a, w).item()) < 1e-9
    assert optimum[0.0] > optimum[0.1] > optimum[1.0] > optimum[4.0]  # larger w, flatter energy


def test_quadratic_optimum_for_w_one_is_the_true_energy():
    # With w = 1 the true energy is a stationary point of the population loss, for every M and t.
    for m, t in ((4, 1.0), (1, 0.5), (16, 3.0)):
        study = _study(n=1 << 16, t=t, m=m, seed=7)
        a = study.optimum(1.0)
        assert abs(a - 1.0) < 4 * study.optimum_stderr(1.0, a)
    other = _study(n=1 << 16, seed=7)
    assert abs(other.optimum(4.0) - 1.0) > 20 * other.optimum_stderr(4.0)  # other w are biased


def test_optimum_stderr_shrinks_like_one_over_root_n():
    small, large = _study(n=4096, seed=2), _study(n=65536, seed=2)
    ratio = small.optimum_stderr(1.0) / large.optimum_stderr(1.0)
    assert ratio == pytest.approx(4.0, rel=0.15)


def test_asymptotic_slope_and_unbounded_loss():
    study = _study(n=64)
    top = study.d.max(dim=1).values
    assert study.asymptotic_slope(0.0) == pytest.approx(float(top.mean()))
    assert study.asymptotic_slope(1.0) == pytest.approx(float(top.clamp(min=0).mean())) and study.asymptotic_slope(1.0) >= 0
    # A draw whose negatives all lie farther out than the data: the w = 0 loss falls without bound.
    runaway = stabilisation.QuadraticStudy(d=-torch.ones(10, 2, dtype=F64))
    assert runaway.optimum(0.0) == math.inf and runaway.optimum_stderr(0.0) == math.inf
    assert math.isfinite(runaway.optimum(1.0))


@pytest.mark.parametrize("call", [
    lambda s: s.loss(0.0, 1.0), lambda s: s.loss(1.0, -1.0), lambda s: s.slope(float("nan"), 1.0),
    lambda s: stabilisation.quadratic_study(0, 1.0, 4), lambda s: stabilisation.quadratic_study(10, 0.0, 4),
    lambda s: stabilisation.quadratic_study(10, 1.0, 0),
])
def test_quadratic_study_rejects_bad_input(call):
    with pytest.raises(ValueError):
        call(_study(n=16))


class _Parabola(torch.nn.Module):
    def __init__(self, a: float, c: float):
        super().__init__()
        self.a, self.c = torch.nn.Parameter(torch.tensor(a)), c

    def forward(self, x):
        return 0.5 * self.a * x[:, 0] ** 2 + self.c


def test_learned_energy_measures_the_distance_to_the_truth():
    exact = stabilisation.learned_energy(_Parabola(1.0, 3.0))
    assert exact.rmse < 1e-5 and exact.at_inner == pytest.approx((2.0, 2.0)) and exact.argmin == pytest.approx(0.0, abs=1e-6)
    assert exact.energy.min() == 0 and exact.mean_at_inner == pytest.approx(2.0)
    steep = stabilisation.learned_energy(_Parabola(1.5, -7.0), n=2001)
    # RMSE of 0.25 x^2 over [-2, 2]: 0.25 sqrt(E[x^4]) = 0.25 sqrt(16/5)
    assert steep.rmse == pytest.approx(0.25 * math.sqrt(16 / 5), rel=1e-3) and steep.mean_at_inner == pytest.approx(3.0)
    with pytest.raises(ValueError):
        stabilisation.learned_energy(_Parabola(1.0, 0.0), lo=-1.0, hi=3.0)
    with pytest.raises(ValueError):
        stabilisation.learned_energy(lambda x: x)


def test_train_for_ws_runs_differ_only_in_w():
    data = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    kwargs = dict(t=1.0, m_particles=2, lr=0.01, n_steps=3, seed=5, progress=False)
    runs = stabilisation.train_for_ws(data, [0.0, 1.0], **kwargs)
    again = stabilisation.train_for_ws(data, [1.0], **kwargs)
    assert list(runs) == [0.0, 1.0] and all(len(r.losses) == 3 for r in runs.values())
    assert runs[1.0].losses == again[1.0].losses  # the same network and noise whatever the other runs
    torch.manual_seed(6)  # every run starts from the network seeded with seed + 1
    first = nets.tiny_silu_net()
    x = data[:8]
    expected = losses.energy_discrepancy(first, x, 1.0, 2, 1.0, generator=torch.Generator().manual_seed(6))
    one_step = stabilisation.train_for_ws(x, [1.0], 1.0, 2, 0.01, 1, seed=5, progress=False)[1.0]
    assert one_step.losses[0] == pytest.approx(expected.item(), rel=1e-6)
    for bad in ([], [1.0, 1.0], [-0.5], "1"):
        with pytest.raises(ValueError):
            stabilisation.train_for_ws(data, bad, **kwargs)


# --- the page's claims: each holds on its factual input and fails on a counterfactual one ----------


def _parabolas(slopes):
    """{w: learned_energy of a·x²/2} for {w: a}: stand-ins for trained runs."""
    return {w: stabilisation.learned_energy(_Parabola(a, 0.0)) for w, a in slopes.items()}


def test_optimum_claim_holds_for_normal_data_and_fails_for_data_of_another_variance():
    assert stabilisation.optimum_claim(_study(n=1 << 15, seed=3)).holds is True
    g = torch.Generator().manual_seed(3)
    x = math.sqrt(2.0) * torch.randn((1 << 15, 1), generator=g, dtype=F64)  # N(0, 2): the truth is a = 1/2
    neg = x + torch.randn((1 << 15, 1), generator=g, dtype=F64) + torch.randn((1 << 15, 4), generator=g, dtype=F64)
    wide = stabilisation.QuadraticStudy(d=0.5 * (x**2 - neg**2))
    claim = stabilisation.optimum_claim(wide)
    assert claim.holds is False and "s.e." in claim.measured


def test_steepness_claim_fails_for_runs_that_ignore_w_or_have_w_swapped():
    ordered = _parabolas({0.0: 0.9, 0.1: 1.6, 1.0: 1.0, 4.0: 0.8})  # w = 0 is not part of the claim
    claim = stabilisation.steepness_claim(ordered, {0.1: 1.5, 1.0: 1.0, 4.0: 0.8})
    assert claim.holds is True and "{0.1, 1, 4}" in claim.statement and "predicted" in claim.measured
    assert stabilisation.steepness_claim(_parabolas({0.1: 1.0, 1.0: 1.0, 4.0: 1.0})).holds is False  # training ignores w
    assert stabilisation.steepness_claim(_parabolas({0.1: 0.8, 1.0: 1.0, 4.0: 1.6})).holds is False  # w swapped
    with pytest.raises(ValueError, match="two runs with w > 0"):
        stabilisation.steepness_claim(_parabolas({0.0: 2.0, 1.0: 1.0}))


def test_best_and_worst_w_claims_fail_swapped_or_tied():
    runs = _parabolas({0.0: 3.0, 0.1: 1.5, 1.0: 1.02, 4.0: 0.8})
    assert stabilisation.best_w_claim(runs).holds is True and stabilisation.worst_w_claim(runs).holds is True
    swapped = _parabolas({0.0: 1.02, 0.1: 1.5, 1.0: 3.0, 4.0: 0.8})
    assert stabilisation.best_w_claim(swapped).holds is False and stabilisation.worst_w_claim(swapped).holds is False
    tied = _parabolas({0.0: 1.3, 0.1: 1.3, 1.0: 1.3, 4.0: 1.3})  # every run the same: neither best nor worst
    assert stabilisation.best_w_claim(tied).holds is False and stabilisation.worst_w_claim(tied).holds is False
    with pytest.raises(ValueError, match="w = 0"):
        stabilisation.worst_w_claim(_parabolas({1.0: 1.0, 4.0: 0.8}))


def test_page_claims_are_the_claims_its_runs_allow():
    runs = _parabolas({0.0: 3.0, 0.1: 1.5, 1.0: 1.02, 4.0: 0.8})
    claims = stabilisation.page_claims(_study(n=1 << 14, seed=3), runs)
    assert len(claims) == 4 and all(c.holds for c in claims)
    assert len(stabilisation.page_claims(_study(n=1 << 12), _parabolas({0.0: 3.0, 1.0: 1.0}))) == 3  # one w > 0: no ordering
