"""The claims of the nearsightedness chapter (``notebooks/myopia.md``): each a function of the exact
curves and the estimation study of :mod:`edrepro.mixture`, returning a
:class:`edrepro.book.claims.Claim`; ``tests/test_myopia_claims.py`` makes each fail on a
counterfactual input."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .. import _checks
from ..mixture import CurveSummary, EstimationStudy, ed_label, mean_stderr, point_curvatures, summarise_curve, weight_fisher_information


# The claims of the nearsightedness chapter (notebooks/myopia.md), each judged at ``n_se``
# standard errors computed from the same data (the page's "How a claim is judged").
# ------------------------------------------------------------------------------------------


def _claim(statement: str, measured: str, holds: bool):
    from ..book.claims import Claim

    return Claim(statement, measured, bool(holds))


def _n_se(n_se: float) -> float:
    return _checks.positive("n_se", n_se)


def _locates(s: CurveSummary, rho_true: float, stderr: float, n_se: float) -> tuple[float, bool]:
    """z of the minimiser and whether the curve locates ρ*: an interior minimiser within ``n_se``
    standard errors of ρ*, with n_se standard errors shorter than min(ρ*, 1 − ρ*), ρ*'s distance to the
    ends of the family (an interval of that size still tells weights apart; a flat curve's does not)."""
    z = (s.minimum.refined - rho_true) / stderr if math.isfinite(stderr) and stderr > 0 else math.inf
    return z, (not s.minimum.at_edge and abs(z) <= n_se and n_se * stderr < min(rho_true, 1.0 - rho_true))


def mle_minimiser_claim(summary: CurveSummary, rho_true: float, n_samples: int, n_se: float = 4.0,
                        means: tuple[float, float] = (-5.0, 5.0), std: float = 1.0):
    """Claim: the likelihood's minimiser lies within ``n_se`` standard errors 1/√(N·I(ρ*)) of ρ*
    (:func:`weight_fisher_information`). ``summary`` is :func:`summarise_curve` of the NLL terms.
    Fails on data drawn with another weight."""
    rho_true, n_se = _checks.open_unit("rho_true", rho_true), _n_se(n_se)
    se = 1.0 / math.sqrt(_checks.positive_int("n_samples", n_samples) * weight_fisher_information(rho_true, means, std))
    z, holds = _locates(summary, rho_true, se, n_se)
    return _claim(f"the MLE minimiser lies within {n_se:g} standard errors, 1/sqrt(N I), of rho* = {rho_true:g}",
                  f"{summary.minimum.refined:.4f} ± {se:.4f} ({z:+.2f} s.e.)", holds)


def ed_minimiser_claim(summary: CurveSummary, t: float, rho_true: float, n_se: float = 4.0):
    """Claim: the ED curve at time ``t`` locates ρ*: its minimiser lies within ``n_se`` of its own
    (sandwich) standard errors of ρ*, and ``n_se`` standard errors are shorter than min(ρ*, 1 − ρ*). Fails for a curve that is flat (a loss that cannot tell the weights apart:
    its standard error is huge) or that puts its minimum elsewhere."""
    rho_true, n_se = _checks.open_unit("rho_true", rho_true), _n_se(n_se)
    z, holds = _locates(summary, rho_true, summary.stderr, n_se)
    return _claim(f"the ED (t = {t:g}) curve locates rho* = {rho_true:g}: its minimiser lies within {n_se:g} of its standard "
                  f"errors of rho*, and {n_se:g} standard errors are less than min(rho*, 1 - rho*)",
                  f"{summary.minimum.refined:.4f} ± {summary.stderr:.4f} ({z:+.2f} s.e.)", holds)


def curvature_claim(summaries: Sequence[CurveSummary], ts: Sequence[float], n_se: float = 4.0):
    """Claim: the ED curves sharpen at ρ* as t grows: every paired step in curvature (per-point
    second differences on the same data, :func:`point_curvatures`) from one t of ``ts`` (increasing)
    to the next is positive, and the curvature at the largest t exceeds that at the smallest by more
    than ``n_se`` standard errors. ``summaries[k]`` is the ED curve at ``ts[k]``. Fails when the
    curves are given in the wrong order of t, or for curves that do not change with t."""
    n_se = _n_se(n_se)
    ts = [float(t) for t in ts]
    if len(ts) < 2 or len(ts) != len(summaries) or ts != sorted(ts) or len(set(ts)) != len(ts):
        raise ValueError(f"ts must be at least two increasing times, one per summary, got {ts!r} for {len(summaries)} summaries")
    steps = [mean_stderr(b.point_curvatures - a.point_curvatures) for a, b in zip(summaries, summaries[1:])]
    total, total_se = mean_stderr(summaries[-1].point_curvatures - summaries[0].point_curvatures)
    z = total / total_se if total_se > 0 else math.copysign(math.inf, total) if total else 0.0
    return _claim(f"the curvature of ED at rho = {summaries[0].rho_ref:g} grows with t over {{{', '.join(f'{t:g}' for t in ts)}}}: "
                  f"every step is positive, the whole rise more than {n_se:g} standard errors",
                  " < ".join(f"{s.curvature:.3g}" for s in summaries) + "; paired steps "
                  + ", ".join(f"{m / se:+.1f} s.e." if se > 0 else f"{m:+.3g}" for m, se in steps) + f"; whole rise {z:+.1f} s.e.",
                  all(m > 0 for m, _ in steps) and z > n_se)


def mse_fall_claim(study: EstimationStudy, t_small: float, t_large: float, n_se: float = 4.0):
    """Claim: the weight estimated by ED at ``t_large`` has a smaller mean squared error than at
    ``t_small``, by more than ``n_se`` standard errors of the paired log ratio
    (:meth:`EstimationStudy.log_mse_ratio`). Fails with the two times swapped."""
    n_se = _n_se(n_se)
    r, se = study.log_mse_ratio(ed_label(t_small), ed_label(t_large))
    return _claim(f"the MSE of rho-hat falls from t = {t_small:g} to t = {t_large:g} by more than {n_se:g} standard errors",
                  f"{math.exp(r):.3g}x smaller (log ratio {r:.2f} ± {se:.2f})", r > n_se * se)


def mse_no_rise_claim(study: EstimationStudy, ts: Sequence[float], n_se: float = 4.0):
    """Claim: no step up in t along ``ts`` raises the MSE of ED's estimate by more than ``n_se``
    standard errors of the paired log ratio. Fails when the times are listed in an order along which
    the error rises (e.g. reversed, when it falls)."""
    n_se = _n_se(n_se)
    ts = [float(t) for t in ts]
    if len(ts) < 2:
        raise ValueError(f"ts must hold at least two times, got {ts!r}")
    steps = [(a, b, *study.log_mse_ratio(ed_label(a), ed_label(b))) for a, b in zip(ts, ts[1:])]
    return _claim(f"no step up in t over {{{', '.join(f'{t:g}' for t in ts)}}} raises the MSE by more than {n_se:g} standard errors",
                  ", ".join(f"{a:g}→{b:g}: {math.exp(r):.2g}x smaller ({r / se:+.1f} s.e.)" for a, b, r, se in steps),
                  all(r > -n_se * se for _, _, r, se in steps))


def sm_worse_than_mle_claim(study: EstimationStudy, n_se: float = 4.0):
    """Claim (nearsightedness): score matching (Hyvärinen's loss) estimates the weight with a larger
    mean squared error than maximum likelihood, by more than ``n_se`` standard errors of the paired
    log ratio over the same data sets. Fails with the two estimators swapped."""
    n_se = _n_se(n_se)
    r, se = study.log_mse_ratio("SM", "MLE")
    return _claim(f"score matching estimates the weight worse than maximum likelihood: a larger MSE by more than {n_se:g} standard errors",
                  f"{math.exp(r):.3g}x larger (log ratio {r:.2f} ± {se:.2f})", r > n_se * se)


def panel_a_claims(summary: dict[str, CurveSummary], ts: Sequence[float], rho_true: float, n_samples: int, n_se: float = 4.0) -> list:
    """The claims of panel (a) on one data set: :func:`mle_minimiser_claim`, :func:`ed_minimiser_claim`
    at the largest t and :func:`curvature_claim` over ``ts``; ``summary`` maps "MLE" and
    ``ed_label(t)`` to :func:`summarise_curve` results."""
    ts = sorted(set(float(t) for t in ts))
    return [
        mle_minimiser_claim(summary["MLE"], rho_true, n_samples, n_se),
        ed_minimiser_claim(summary[ed_label(ts[-1])], ts[-1], rho_true, n_se),
        curvature_claim([summary[ed_label(t)] for t in ts], ts, n_se),
    ]


def panel_b_claims(study: EstimationStudy, ts: Sequence[float], n_se: float = 4.0) -> list:
    """The claims of panel (b) over repeated data sets: :func:`sm_worse_than_mle_claim`,
    :func:`mse_fall_claim` from the smallest to the largest of ``ts`` and :func:`mse_no_rise_claim` along ``ts``."""
    ts = sorted(set(float(t) for t in ts))
    return [sm_worse_than_mle_claim(study, n_se), mse_fall_claim(study, ts[0], ts[-1], n_se), mse_no_rise_claim(study, ts, n_se)]
