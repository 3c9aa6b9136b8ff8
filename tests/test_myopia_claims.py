"""The claims of the nearsightedness chapter (edrepro.mixture): each holds on the page's kind of data
and fails on a counterfactual input; and the page's statements about ED for small t are true."""

import functools
import math

import pytest
import torch

from edrepro import mixture
from edrepro.chapters import myopia
from edrepro.toy import GaussianMixture

F64 = torch.float64
RHOS = mixture.rho_grid()
TS = [2.0, 4.0, 8.0, 32.0]


def _data(n=4096, rho=0.2, seed=0):
    return GaussianMixture(rho).sample(n, generator=torch.Generator().manual_seed(seed)).to(F64)


@functools.cache
def _summaries(rho=0.2, seed=0):
    """summarise_curve of the NLL and of ED at every t of TS, on 4096 points drawn with weight rho."""
    x, g = _data(rho=rho, seed=seed), torch.Generator().manual_seed(seed + 100)
    out = {"MLE": mixture.summarise_curve(RHOS, mixture.nll_curve(x, RHOS, per_point=True), 0.2)}
    for t in TS + [0.5]:
        out[mixture.ed_label(t)] = mixture.summarise_curve(RHOS, mixture.ed_curve(x, RHOS, t, generator=g, per_point=True), 0.2)
    return out


@functools.cache
def _study():
    return mixture.estimation_study(12, [2.0, 32.0], n_samples=1024, generator=torch.Generator().manual_seed(3), progress=False)


def _swapped(study, a, b):
    est = dict(study.estimates)
    est[a], est[b] = est[b], est[a]
    return mixture.EstimationStudy(rho_true=study.rho_true, ts=study.ts, estimates=est)


# --- the page's statement: for small t, ED is t times the Fisher divergence (½E|.|² convention) ---


def _log_mixture(x, rho, var):
    logs = [-0.5 * (x - m) ** 2 / var - 0.5 * math.log(2 * math.pi * var) for m in (-5.0, 5.0)]
    return torch.logaddexp(math.log(rho) + logs[0], math.log1p(-rho) + logs[1])


def _kl(rho_true, rho, var, x=torch.linspace(-40, 40, 400_001, dtype=F64)):
    lp = _log_mixture(x, rho_true, var)
    return float(torch.trapezoid(lp.exp() * (lp - _log_mixture(x, rho, var)), x))


@pytest.mark.parametrize("rho", [0.1, 0.4])
def test_small_t_energy_discrepancy_is_t_times_the_fisher_divergence(rho):
    # ED_t(rho) - ED_t(rho*) = KL(p || p_rho) - KL(p_t || p_rho,t); the diffused family has variance 1 + t.
    t = 1e-3
    ed = _kl(0.2, rho, 1.0) - _kl(0.2, rho, 1.0 + t)
    fisher = float(mixture.fisher_population(torch.tensor([rho], dtype=F64), rho_true=0.2)[0])  # ½ E (s_rho - s*)^2
    assert ed / (t * fisher) == pytest.approx(1.0, abs=0.02)  # t times, not t/2 times
    # and for large t, far more than t times: the diffused scores see the weight
    assert (_kl(0.2, rho, 1.0) - _kl(0.2, rho, 2.0)) > 10 * fisher


# --- panel (a) ------------------------------------------------------------------------------------


def test_mle_minimiser_claim_holds_at_rho_star_and_fails_on_data_of_another_weight():
    assert myopia.mle_minimiser_claim(_summaries()["MLE"], 0.2, 4096).holds is True
    other = _summaries(rho=0.3)["MLE"]  # data drawn with weight 0.3, claim about 0.2
    claim = myopia.mle_minimiser_claim(other, 0.2, 4096)
    assert claim.holds is False and "s.e." in claim.measured


def test_ed_minimiser_claim_holds_at_large_t_and_fails_for_a_flat_curve_or_another_weight():
    assert myopia.ed_minimiser_claim(_summaries()[mixture.ed_label(32.0)], 32.0, 0.2).holds is True
    # t = 0.5: the curve barely sees the weight; its minimiser's standard error spans the family
    flat = _summaries()[mixture.ed_label(0.5)]
    assert flat.stderr * 4 > 0.2
    assert myopia.ed_minimiser_claim(flat, 0.5, 0.2).holds is False
    assert myopia.ed_minimiser_claim(_summaries(rho=0.3)[mixture.ed_label(32.0)], 32.0, 0.2).holds is False


def test_curvature_claim_holds_in_the_order_of_t_and_fails_reversed_or_without_change():
    by_t = [_summaries()[mixture.ed_label(t)] for t in TS]
    assert myopia.curvature_claim(by_t, TS).holds is True
    assert myopia.curvature_claim(by_t[::-1], TS).holds is False  # swapped labels: the curvature falls with "t"
    same = [by_t[-1]] * len(TS)  # a loss that does not change with t
    assert myopia.curvature_claim(same, TS).holds is False
    with pytest.raises(ValueError, match="increasing"):
        myopia.curvature_claim(by_t, TS[::-1])


def test_panel_a_claims_are_the_three_claims():
    claims = myopia.panel_a_claims(_summaries(), TS, 0.2, 4096)
    assert [c.holds for c in claims] == [True, True, True]
    assert "MLE" in claims[0].statement and "t = 32" in claims[1].statement and "curvature" in claims[2].statement


# --- panel (b) ------------------------------------------------------------------------------------


def test_sm_worse_than_mle_claim_fails_with_the_estimators_swapped():
    study = _study()
    assert myopia.sm_worse_than_mle_claim(study).holds is True
    assert myopia.sm_worse_than_mle_claim(_swapped(study, "SM", "MLE")).holds is False


def test_mse_fall_claim_fails_with_the_times_swapped():
    study = _study()
    assert myopia.mse_fall_claim(study, 2.0, 32.0).holds is True
    assert myopia.mse_fall_claim(study, 32.0, 2.0).holds is False
    assert myopia.mse_fall_claim(_swapped(study, "ED t=2", "ED t=32"), 2.0, 32.0).holds is False


def test_mse_no_rise_claim_fails_when_the_error_rises_along_the_times():
    study = _study()
    assert myopia.mse_no_rise_claim(study, [2.0, 32.0]).holds is True
    assert myopia.mse_no_rise_claim(study, [32.0, 2.0]).holds is False
    with pytest.raises(ValueError, match="two times"):
        myopia.mse_no_rise_claim(study, [2.0])


def test_panel_b_claims_on_synthetic_errors():
    # Exact errors: SM 0.1, MLE 0.001, ED falling with t; swapped ED columns make two claims fail.
    k = torch.arange(8, dtype=F64)
    sign = torch.where(k % 2 == 0, 1.0, -1.0).to(F64)
    est = {"MLE": 0.2 + 0.001 * sign * (1 + 0.1 * k), "SM": 0.2 + 0.1 * sign * (1 + 0.1 * k),
           "ED t=2": 0.2 + 0.05 * sign * (1 + 0.1 * k), "ED t=32": 0.2 + 0.002 * sign * (1 + 0.1 * k)}
    study = mixture.EstimationStudy(rho_true=0.2, ts=(2.0, 32.0), estimates=est)
    assert [c.holds for c in myopia.panel_b_claims(study, [2.0, 32.0])] == [True, True, True]
    assert [c.holds for c in myopia.panel_b_claims(_swapped(study, "ED t=2", "ED t=32"), [2.0, 32.0])] == [True, False, False]
