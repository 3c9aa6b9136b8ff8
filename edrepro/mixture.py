r"""Loss curves over the mixture weight ρ of the Figure-1 model family (nearsightedness).

The model family is p_ρ(x) = ρ·N(x; m₁, σ²) + (1 − ρ)·N(x; m₂, σ²) on ℝ with fixed means and
scale (the paper: m = (−5, 5), σ = 1) and free weight ρ ∈ (0, 1); its normalised energy is
E_ρ = −log p_ρ, the same function as :meth:`edrepro.toy.GaussianMixture.energy`. Every curve
here is a loss evaluated at every ρ of a grid at once. ρ enters only through the log-weights
(log ρ, log(1 − ρ)), so the two component log-densities are evaluated once per point and
combined for all ρ — exactly, in float64, with no approximation.

- :func:`nll_curve` — negative log-likelihood, −(1/N) Σᵢ log p_ρ(xᵢ).
- :func:`fisher_curve` — Fisher divergence to a reference score, ½·(1/N) Σᵢ (s_ρ(xᵢ) − s_ρ*(xᵢ))².
- :func:`fisher_population` — its expectation over data sets, ½·∫ p_ρ* (s_ρ − s_ρ*)², by quadrature.
- :func:`hyvarinen_curve` — Hyvärinen's score-matching loss (1/N) Σᵢ [½ s_ρ(xᵢ)² + s_ρ'(xᵢ)],
  the estimator that needs no reference score; equal to the Fisher divergence plus a constant
  in expectation.
- :func:`ed_curve` — the stabilised energy discrepancy of :func:`edrepro.losses.energy_discrepancy`
  with one noise draw shared by all ρ (common random numbers).
- :func:`curve_minimum` — grid minimiser, its parabolic refinement and the curvature there.
- :func:`estimation_study` — the minimisers of every loss over repeated data sets, and their
  mean squared error (with paired comparisons, :meth:`EstimationStudy.log_mse_ratio`).

Every curve is a mean over the data points of independent per-point terms (``per_point=True``
returns them), which gives the error of every measurement made on one data set:

- :func:`weight_fisher_information` — the information I(ρ) of one observation about ρ; the
  maximum-likelihood weight has standard error 1/√(N·I).
- :func:`minimiser_stderr` — the sandwich standard error of a curve's minimiser.
- :func:`point_curvatures` and :func:`mean_stderr` — the curvature at a weight and its standard error.
- :func:`rise_zscores` — how many standard errors a curve rises above its minimum.
- :func:`summarise_curve` — all of these for one curve.

The claims of the nearsightedness chapter are functions of these measurements, each returning a
:class:`edrepro.book.claims.Claim` (:mod:`edrepro.chapters.myopia`); ``tests/test_myopia_claims.py`` makes each fail on a counterfactual input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm import tqdm  # plain text bars: notebooks here run without ipywidgets

from . import _checks
from .toy import GaussianMixture

_DTYPE = torch.float64
_LOG_2PI = math.log(2.0 * math.pi)
_CHUNK = 1 << 18  # ρ values × points × (M + 1) per block of the ED curve: 2 MiB of float64 per temporary,
# small enough for the allocator to reuse (larger blocks spend more time in page faults than in arithmetic)

Family = tuple[tuple[float, float], float]


def _family(means: tuple[float, float], std: float) -> Family:
    """Validated (means, std), using the checks of :class:`~edrepro.toy.GaussianMixture`."""
    gm = GaussianMixture(0.5, means=means, std=std)
    return gm.means, gm.std


def rho_grid(start: float = 0.01, stop: float = 0.98, step: float = 0.01) -> torch.Tensor:
    """The weights start, start + step, …, stop as a float64 tensor (the paper: 0.01 … 0.98, 98 values).

    Each value is rounded to 12 decimals, so a decimal grid holds the doubles of its literals
    (0.2 on the default grid is exactly 0.2: the true weight lies on the grid).
    """
    step = _checks.positive("step", step)
    for name, v in (("start", start), ("stop", stop)):
        _checks.open_unit(name, v)
    if not start < stop:
        raise ValueError(f"start must be smaller than stop, got start={start!r}, stop={stop!r}")
    n = round((stop - start) / step)
    if abs(start + n * step - stop) > 1e-9:
        raise ValueError(f"stop - start must be a multiple of step, got start={start!r}, stop={stop!r}, step={step!r}")
    return torch.tensor([round(start + k * step, 12) for k in range(n + 1)], dtype=_DTYPE)


def _rhos(rhos: torch.Tensor) -> torch.Tensor:
    if not isinstance(rhos, torch.Tensor) or rhos.ndim != 1 or rhos.numel() == 0:
        raise ValueError(f"rhos must be a non-empty 1-D tensor of weights, got {_checks._show(rhos)}")
    r = rhos.to(_DTYPE)
    if not ((r > 0) & (r < 1)).all():
        raise ValueError("rhos must lie in the open interval (0, 1)")
    return r


def _data(x: torch.Tensor) -> torch.Tensor:
    return _checks.batch("x", x, dim=1).detach().to(_DTYPE)


def _reduce(terms: torch.Tensor, per_point: bool) -> torch.Tensor:
    """The (R, N) per-point terms of a loss, or their mean over the points, (R,)."""
    if not isinstance(per_point, bool):
        raise ValueError(f"per_point must be True or False, got {per_point!r}")
    return terms if per_point else terms.mean(dim=1)


def _log_components(x: torch.Tensor, family: Family) -> tuple[torch.Tensor, torch.Tensor]:
    """log N(x; m₁, σ²) and log N(x; m₂, σ²) for x of any shape."""
    (m1, m2), s = family
    const = -math.log(s) - 0.5 * _LOG_2PI
    return -0.5 * ((x - m1) / s) ** 2 + const, -0.5 * ((x - m2) / s) ** 2 + const


def _log_p(l1: torch.Tensor, l2: torch.Tensor, rhos: torch.Tensor) -> torch.Tensor:
    """log p_ρ at points with component log-densities (l1, l2): shape (R, *l1.shape)."""
    r = rhos.reshape(-1, *([1] * l1.ndim))
    return torch.logaddexp(torch.log(r) + l1, torch.log1p(-r) + l2)


def _responsibility(x: torch.Tensor, rhos: torch.Tensor, family: Family) -> torch.Tensor:
    """Posterior probability r₁ = P(component 1 | x) under p_ρ, shape (R, N)."""
    l1, l2 = _log_components(x, family)
    logit = torch.log(rhos) - torch.log1p(-rhos)
    return torch.sigmoid(logit[:, None] + (l1 - l2)[None, :])


def _score(x: torch.Tensor, r1: torch.Tensor, family: Family) -> torch.Tensor:
    """s_ρ(x) = ∂ₓ log p_ρ(x) = (m₂ − x + r₁·(m₁ − m₂))/σ²."""
    (m1, m2), s = family
    return (m2 - x + r1 * (m1 - m2)) / s**2


def nll_curve(
    x: torch.Tensor,
    rhos: torch.Tensor,
    means: tuple[float, float] = (-5.0, 5.0),
    std: float = 1.0,
    per_point: bool = False,
) -> torch.Tensor:
    """Negative log-likelihood −(1/N) Σᵢ log p_ρ(xᵢ) at every ρ of ``rhos``; x is (N, 1), result (R,) float64.

    With ``per_point`` the (R, N) terms −log p_ρ(xᵢ) are returned instead of their mean.
    """
    family, x, rhos = _family(means, std), _data(x)[:, 0], _rhos(rhos)
    l1, l2 = _log_components(x, family)
    return _reduce(-_log_p(l1, l2, rhos), per_point)


def fisher_curve(
    x: torch.Tensor,
    rhos: torch.Tensor,
    rho_true: float = 0.2,
    means: tuple[float, float] = (-5.0, 5.0),
    std: float = 1.0,
    per_point: bool = False,
) -> torch.Tensor:
    r"""Fisher divergence ½·(1/N) Σᵢ (s_ρ(xᵢ) − s_ρ*(xᵢ))² to the score of p_ρ* at the data, ρ* = ``rho_true``.

    s_ρ − s_ρ* = (r₁(ρ) − r₁(ρ*))·(m₁ − m₂)/σ², where r₁ is the posterior probability of the
    first component: the scores differ only where both components have mass. The model score is
    evaluated at ρ and the reference score at ρ* (the authors evaluated both at ρ, a curve ≡ 0).
    With ``per_point`` the (R, N) terms are returned instead of their mean.
    """
    family, x, rhos = _family(means, std), _data(x)[:, 0], _rhos(rhos)
    ref = _rhos(torch.tensor([_checks.open_unit("rho_true", rho_true)], dtype=_DTYPE))
    (m1, m2), s = family
    diff = (_responsibility(x, rhos, family) - _responsibility(x, ref, family)) * ((m1 - m2) / s**2)
    return _reduce(0.5 * diff**2, per_point)


def fisher_population(
    rhos: torch.Tensor,
    rho_true: float = 0.2,
    means: tuple[float, float] = (-5.0, 5.0),
    std: float = 1.0,
    n_grid: int = 200_001,
) -> torch.Tensor:
    r"""Population Fisher divergence ½·∫ p_ρ*(x) (s_ρ(x) − s_ρ*(x))² dx at every ρ, by quadrature.

    The trapezoidal rule on ``n_grid`` points over [min(m) − 10σ, max(m) + 10σ], where the
    integrand is negligible at the ends. This is the expectation over data sets of
    :func:`fisher_curve`; for separated modes it is carried by the rare points between them.
    """
    family, rhos = _family(means, std), _rhos(rhos)
    _checks.open_unit("rho_true", rho_true)
    n = _checks.positive_int("n_grid", n_grid, minimum=3)
    (m1, m2), s = family
    x = torch.linspace(min(m1, m2) - 10 * s, max(m1, m2) + 10 * s, n, dtype=_DTYPE)
    ref = torch.tensor([rho_true], dtype=_DTYPE)
    density = _log_p(*_log_components(x, family), ref)[0].exp()
    diff = (_responsibility(x, rhos, family) - _responsibility(x, ref, family)) * ((m1 - m2) / s**2)
    return 0.5 * torch.trapezoid(density * diff**2, x, dim=1)


def hyvarinen_curve(
    x: torch.Tensor,
    rhos: torch.Tensor,
    means: tuple[float, float] = (-5.0, 5.0),
    std: float = 1.0,
    per_point: bool = False,
) -> torch.Tensor:
    r"""Hyvärinen's score-matching loss (1/N) Σᵢ [½ s_ρ(xᵢ)² + s_ρ'(xᵢ)] at every ρ (closed form).

    With r₁ the first component's responsibility, s_ρ' = −1/σ² + (m₁ − m₂)²·r₁(1 − r₁)/σ⁴. This is
    :func:`edrepro.losses.score_matching` of the energy −log p_ρ, for all ρ at once. With
    ``per_point`` the (R, N) terms are returned instead of their mean.
    """
    family, x, rhos = _family(means, std), _data(x)[:, 0], _rhos(rhos)
    (m1, m2), s = family
    r1 = _responsibility(x, rhos, family)
    score = _score(x, r1, family)
    dscore = -1.0 / s**2 + (m1 - m2) ** 2 * r1 * (1.0 - r1) / s**4
    return _reduce(0.5 * score**2 + dscore, per_point)


def ed_curve(
    x: torch.Tensor,
    rhos: torch.Tensor,
    t: float,
    m_particles: int = 4,
    w: float = 1.0,
    generator: torch.Generator | None = None,
    means: tuple[float, float] = (-5.0, 5.0),
    std: float = 1.0,
    per_point: bool = False,
) -> torch.Tensor:
    r"""Stabilised energy discrepancy of E_ρ = −log p_ρ at every ρ, with the same noise for all ρ.

    One draw of the perturbations, y_i = x_i + √t·ξ_i and x'_ij = y_i + √t·ξ'_ij (ξ then ξ' drawn
    from ``generator`` in float64, in the order of :func:`edrepro.losses.energy_discrepancy`), is
    shared by every ρ (common random numbers), and

        ED(ρ) = (1/N) Σᵢ log( w/M + (1/M) Σⱼ exp(E_ρ(xᵢ) − E_ρ(x'_ij)) ).

    Entry k therefore equals ``losses.energy_discrepancy(GaussianMixture(rhos[k]).energy, x.double(),
    t, m_particles, w, generator=g)`` for a generator g in the same state as ``generator``.
    Returns (R,) float64, or with ``per_point`` the (R, N) terms log(w/M + …) of each data point.
    """
    family, x, rhos = _family(means, std), _data(x), _rhos(rhos)
    t = _checks.positive("t", t)
    m = _checks.positive_int("m_particles", m_particles)
    w = _checks.non_negative("w", w)
    _reduce(torch.zeros(1, 1), per_point)  # checks the flag before any work
    n = x.shape[0]
    s = math.sqrt(t)
    y = x + s * torch.randn((n, 1), generator=generator, dtype=_DTYPE)
    neg = y[:, None, :] + s * torch.randn((n, m, 1), generator=generator, dtype=_DTYPE)
    p1, p2 = _log_components(x[:, 0], family)  # (N,)
    n1, n2 = _log_components(neg[:, :, 0], family)  # (N, M)
    out = []
    block = max(1, _CHUNK // (n * (m + 1)))
    for r in rhos.split(block):
        # E(x) − E(x') = log p(x') − log p(x): (R, N, M)
        logits = _log_p(n1, n2, r) - _log_p(p1, p2, r)[:, :, None]
        if w > 0:
            logits = torch.cat([logits, logits.new_full((*logits.shape[:2], 1), math.log(w))], dim=2)
        out.append(_reduce(torch.logsumexp(logits, dim=2) - math.log(m), per_point))
    return torch.cat(out)


def weight_fisher_information(
    rho: float,
    means: tuple[float, float] = (-5.0, 5.0),
    std: float = 1.0,
    n_grid: int = 200_001,
) -> float:
    r"""Fisher information I(ρ) = ∫ p_ρ(x) (∂_ρ log p_ρ(x))² dx that one observation carries about ρ.

    ∂_ρ log p_ρ = (N₁ − N₂)/p_ρ = r₁/ρ − (1 − r₁)/(1 − ρ), with r₁ the first component's
    responsibility; the integral is the trapezoidal rule on ``n_grid`` points over
    [min(m) − 10σ, max(m) + 10σ]. For well-separated components r₁ is 0 or 1 almost everywhere and
    I(ρ) → 1/(ρ(1 − ρ)), the information of a coin with bias ρ; overlap lowers it. The standard
    error of the maximum-likelihood weight from N points is 1/√(N·I(ρ*)).
    """
    family = _family(means, std)
    r = _rhos(torch.tensor([_checks.open_unit("rho", rho)], dtype=_DTYPE))
    n = _checks.positive_int("n_grid", n_grid, minimum=3)
    (m1, m2), s = family
    x = torch.linspace(min(m1, m2) - 10 * s, max(m1, m2) + 10 * s, n, dtype=_DTYPE)
    density = _log_p(*_log_components(x, family), r)[0].exp()
    r1 = _responsibility(x, r, family)[0]
    d_log_p = r1 / rho - (1.0 - r1) / (1.0 - rho)
    return float(torch.trapezoid(density * d_log_p**2, x))


def _terms(rhos: torch.Tensor, terms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Validated (ρ grid, (R, N) per-point terms, grid step) of a curve sampled on a uniform grid."""
    r = _rhos(rhos)
    if not isinstance(terms, torch.Tensor) or terms.ndim != 2 or terms.shape[0] != r.numel() or terms.shape[1] < 2:
        raise ValueError(
            f"terms must be the (R, N) per-point terms of a curve on the {r.numel()} weights of rhos, N >= 2 "
            f"(a curve function with per_point=True), got {_checks._show(terms)}"
        )
    f = terms.detach().to(_DTYPE)
    return r, f, _grid_step(r, f, "terms")


def _grid_step(r: torch.Tensor, f: torch.Tensor, name: str) -> float:
    """The step of the uniform ρ grid ``r`` (at least 3 points) on which the finite values ``f`` (named ``name``) lie."""
    if r.numel() < 3:
        raise ValueError(f"rhos must hold at least 3 grid points, got {r.numel()}")
    if not torch.isfinite(f).all():
        raise ValueError(f"{name} contains NaN or Inf")
    h = float(r[1] - r[0])
    if h <= 0 or not torch.allclose(r.diff(), torch.full_like(r[1:], h), rtol=1e-6, atol=1e-12):
        raise ValueError("rhos must be an increasing uniform grid")
    return h


def mean_stderr(values: torch.Tensor) -> tuple[float, float]:
    """Mean of ``values`` (a 1-D tensor of at least 2 independent draws) and its standard error sd/√n."""
    if not isinstance(values, torch.Tensor) or values.ndim != 1 or values.numel() < 2:
        raise ValueError(f"values must be a 1-D tensor of at least 2 draws, got {_checks._show(values)}")
    v = values.detach().to(_DTYPE)
    if not torch.isfinite(v).all():
        raise ValueError("values contains NaN or Inf")
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


def minimiser_stderr(rhos: torch.Tensor, terms: torch.Tensor) -> float:
    r"""Standard error of the minimiser of the mean curve (1/N) Σᵢ ℓᵢ(ρ), from its per-point terms.

    The minimiser of an average of N independent terms has, for large N, the "sandwich" variance
    Var(ℓᵢ'(ρ̂)) / (N·L''(ρ̂)²): the spread of the per-point slopes divided by the curvature of the
    mean curve. Both are central differences at the grid minimiser k of the mean curve. For the
    likelihood this is 1/√(N·I) with I the observed information; for energy discrepancy the
    per-point terms include their perturbations, so the Monte Carlo noise of the estimate is part of
    the error. Returns ∞ when the minimum lies at an end of the grid or the curve is not convex there.
    """
    r, f, h = _terms(rhos, terms)
    curve = f.mean(dim=1)
    k = int(torch.argmin(curve))
    if k in (0, r.numel() - 1):
        return math.inf
    curvature = float((curve[k - 1] - 2 * curve[k] + curve[k + 1]) / h**2)
    if curvature <= 0:
        return math.inf
    slopes = (f[k + 1] - f[k - 1]) / (2 * h)
    return float(slopes.std() / math.sqrt(f.shape[1])) / curvature


def _grid_index(r: torch.Tensor, rho: float) -> int:
    rho = _checks.open_unit("rho", rho)
    j = int(torch.argmin((r - rho).abs()))
    if abs(float(r[j]) - rho) > 1e-9:
        raise ValueError(f"rho must be a point of the grid rhos, got {rho!r}")
    if j in (0, r.numel() - 1):
        raise ValueError(f"rho must be an interior point of the grid (a neighbour on each side), got {rho!r}")
    return j


def point_curvatures(rhos: torch.Tensor, terms: torch.Tensor, rho: float) -> torch.Tensor:
    r"""Per-point second differences (ℓᵢ(ρ − h) − 2ℓᵢ(ρ) + ℓᵢ(ρ + h))/h² at the grid point ``rho``, shape (N,).

    Their mean is the curvature of the mean curve at ρ; as the terms of different points are
    independent, :func:`mean_stderr` of them gives its standard error, and the difference of the
    per-point curvatures of two curves on the same data is a paired comparison.
    """
    r, f, h = _terms(rhos, terms)
    j = _grid_index(r, rho)
    return (f[j - 1] - 2 * f[j] + f[j + 1]) / h**2


def rise_zscores(terms: torch.Tensor) -> torch.Tensor:
    r"""How many standard errors the mean curve rises above its minimum, at every ρ: shape (R,).

    With k the minimiser of the mean curve and dᵢ(ρ) = ℓᵢ(ρ) − ℓᵢ(ρ_k) the per-point rises, the
    score is mean(d)/(sd(d)/√N): the rise of the curve measured in its own standard error. A loss
    that can tell ρ from ρ_k on these data has a large score; a curve whose rise comes from a few
    points has a score of about √(number of points). 0 at ρ_k (and wherever d ≡ 0).
    """
    if not isinstance(terms, torch.Tensor) or terms.ndim != 2 or terms.shape[1] < 2:
        raise ValueError(f"terms must be an (R, N) tensor of per-point terms, N >= 2, got {_checks._show(terms)}")
    f = terms.detach().to(_DTYPE)
    if not torch.isfinite(f).all():
        raise ValueError("terms contains NaN or Inf")
    d = f - f[int(torch.argmin(f.mean(dim=1)))]
    mean, se = d.mean(dim=1), d.std(dim=1) / math.sqrt(f.shape[1])
    z = mean / se
    z[se == 0] = torch.where(mean[se == 0] == 0, 0.0, math.inf * torch.sign(mean[se == 0]))
    return z


@dataclass(frozen=True)
class CurveMinimum:
    """The minimum of a loss curve sampled on a uniform ρ grid.

    ``rho``: the grid point with the smallest value; ``refined``: the vertex of the parabola
    through that point and its two neighbours (within half a grid step of ``rho``; equal to
    ``rho`` at the ends of the grid or on a flat stretch); ``curvature``: the central second
    difference (f[k−1] − 2f[k] + f[k+1])/h² at k = the argmin, moved one step inwards when the
    argmin is an end point; ``at_edge``: whether the argmin is an end point of the grid.
    """

    rho: float
    refined: float
    value: float
    curvature: float
    at_edge: bool


def curve_minimum(rhos: torch.Tensor, values: torch.Tensor) -> CurveMinimum:
    """Minimiser, refined minimiser and curvature of ``values`` sampled at the uniform grid ``rhos``."""
    r = _rhos(rhos)
    if not isinstance(values, torch.Tensor) or values.shape != r.shape:
        raise ValueError(f"values must be a tensor of the same shape as rhos {tuple(r.shape)}, got {_checks._show(values)}")
    f = values.detach().to(_DTYPE)
    h = _grid_step(r, f, "values")
    k = int(torch.argmin(f))
    at_edge = k in (0, r.numel() - 1)
    c = min(max(k, 1), r.numel() - 2)
    curvature = float((f[c - 1] - 2 * f[c] + f[c + 1]) / h**2)
    refined = float(r[k])
    if not at_edge:
        a, b = float(f[k - 1] - f[k]), float(f[k + 1] - f[k])  # both ≥ 0 at the argmin
        if a + b > 0:
            refined += 0.5 * h * (a - b) / (a + b)
    return CurveMinimum(rho=float(r[k]), refined=refined, value=float(f[k]), curvature=curvature, at_edge=at_edge)


@dataclass(frozen=True)
class CurveSummary:
    """What :func:`summarise_curve` measures on a curve given by its per-point terms.

    ``minimum``: :func:`curve_minimum` of the mean curve; ``stderr``: :func:`minimiser_stderr`;
    ``curvature`` and ``curvature_stderr``: the mean of :func:`point_curvatures` at ``rho_ref``
    and its standard error, with the per-point values in ``point_curvatures`` for paired
    comparisons between curves on the same data; ``max_rise_z``: the largest :func:`rise_zscores`.
    """

    minimum: CurveMinimum
    stderr: float
    rho_ref: float
    curvature: float
    curvature_stderr: float
    max_rise_z: float
    point_curvatures: torch.Tensor


def summarise_curve(rhos: torch.Tensor, terms: torch.Tensor, rho_ref: float) -> CurveSummary:
    """Minimiser, its standard error, curvature at the grid point ``rho_ref`` and largest rise of a curve.

    ``terms`` are the (R, N) per-point terms of the curve on the grid ``rhos`` (a curve function
    called with ``per_point=True``); see :class:`CurveSummary`.
    """
    r, f, _ = _terms(rhos, terms)
    curvatures = point_curvatures(r, f, rho_ref)
    curvature, curvature_stderr = mean_stderr(curvatures)
    return CurveSummary(
        minimum=curve_minimum(r, f.mean(dim=1)),
        stderr=minimiser_stderr(r, f),
        rho_ref=float(rho_ref),
        curvature=curvature,
        curvature_stderr=curvature_stderr,
        max_rise_z=float(rise_zscores(f).max()),
        point_curvatures=curvatures,
    )


def nearest_grid_point(rhos: torch.Tensor, rho: float) -> float:
    """The weight of the grid ``rhos`` closest to ``rho`` (ρ itself when it lies on the grid)."""
    r = _rhos(rhos)
    rho = _checks.open_unit("rho", rho)
    return float(r[int(torch.argmin((r - rho).abs()))])


def ed_label(t: float) -> str:
    """The name of the ED curve at time t in :class:`EstimationStudy` (e.g. ``"ED t=8"``)."""
    return f"ED t={t:g}"


@dataclass
class EstimationStudy:
    """Minimisers of each loss over repeated data sets (see :func:`estimation_study`).

    ``estimates[name]`` is an (n_datasets,) float64 tensor of refined minimisers for name in
    ``"MLE"``, ``"SM"`` (Hyvärinen's loss) and ``ed_label(t)`` for each t of ``ts``.
    """

    rho_true: float
    ts: tuple[float, ...]
    estimates: dict[str, torch.Tensor] = field(default_factory=dict)

    def mse(self) -> dict[str, float]:
        """Mean squared error (1/K) Σ_k (ρ̂_k − ρ*)² of each loss's estimate."""
        return {name: float(((est - self.rho_true) ** 2).mean()) for name, est in self.estimates.items()}

    def mse_stderr(self) -> dict[str, float]:
        """Standard error of each :meth:`mse`: sd of the squared errors / √K (0 for K = 1)."""
        out = {}
        for name, est in self.estimates.items():
            sq = (est - self.rho_true) ** 2
            out[name] = float(sq.std() / math.sqrt(sq.numel())) if sq.numel() > 1 else 0.0
        return out

    def log_mse_ratio(self, a: str, b: str) -> tuple[float, float]:
        r"""log(MSE_a / MSE_b) for two losses of the study, and its standard error over the data sets.

        Both losses were minimised on the same data sets, so the comparison is paired: with
        eₖ the squared errors, the delta method gives the standard error sd(uₖ)/√K of the log
        ratio, uₖ = e_{a,k}/MSE_a − e_{b,k}/MSE_b. Positive: loss ``a`` has the larger error.
        """
        for name in (a, b):
            if name not in self.estimates:
                raise ValueError(f"{name!r} is not a loss of this study; it has {sorted(self.estimates)}")
        ea, eb = ((self.estimates[n] - self.rho_true) ** 2 for n in (a, b))
        ma, mb = float(ea.mean()), float(eb.mean())
        if ma == 0 or mb == 0:
            raise ValueError(f"the MSE of {a!r} or {b!r} is 0: no ratio")
        if ea.numel() < 2:
            return math.log(ma / mb), math.inf
        u = ea / ma - eb / mb
        return math.log(ma / mb), float(u.std() / math.sqrt(u.numel()))

    def ed_mse(self) -> list[float]:
        """The ED entries of :meth:`mse`, in the order of ``ts``."""
        mse = self.mse()
        return [mse[ed_label(t)] for t in self.ts]


def estimation_study(
    n_datasets: int,
    ts: Sequence[float],
    n_samples: int = 4096,
    rho_true: float = 0.2,
    m_particles: int = 4,
    w: float = 1.0,
    rhos: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    means: tuple[float, float] = (-5.0, 5.0),
    std: float = 1.0,
    progress: bool = True,
) -> EstimationStudy:
    r"""Estimate ρ by minimising each loss over ``rhos`` on ``n_datasets`` independent data sets.

    Data set k: ``n_samples`` draws of p_ρ* (ρ* = ``rho_true``) from ``generator``; then the
    negative log-likelihood, Hyvärinen's score-matching loss and, for each t in ``ts``, the ED
    curve (:func:`ed_curve`, fresh common random numbers per data set and t, drawn from
    ``generator``) are minimised over the grid (default :func:`rho_grid`) and refined by
    :func:`curve_minimum`. Seeded ``generator`` → identical study.
    """
    k = _checks.positive_int("n_datasets", n_datasets)
    n = _checks.positive_int("n_samples", n_samples)
    rho_true = _checks.open_unit("rho_true", rho_true)
    if isinstance(ts, (str, bytes)) or not isinstance(ts, Sequence) or len(ts) == 0:
        raise ValueError(f"ts must be a non-empty sequence of times > 0, got {ts!r}")
    ts = tuple(_checks.positive(f"ts[{i}]", t) for i, t in enumerate(ts))
    rhos = rho_grid() if rhos is None else _rhos(rhos)
    data_model = GaussianMixture(rho_true, means=means, std=std)
    names = ["MLE", "SM", *(ed_label(t) for t in ts)]
    est = {name: torch.empty(k, dtype=_DTYPE) for name in names}
    for i in tqdm(range(k), desc="data sets", disable=not progress, leave=False):
        x = data_model.sample(n, generator=generator)
        est["MLE"][i] = curve_minimum(rhos, nll_curve(x, rhos, means, std)).refined
        est["SM"][i] = curve_minimum(rhos, hyvarinen_curve(x, rhos, means, std)).refined
        for t in ts:
            curve = ed_curve(x, rhos, t, m_particles, w, generator=generator, means=means, std=std)
            est[ed_label(t)][i] = curve_minimum(rhos, curve).refined
    return EstimationStudy(rho_true=rho_true, ts=ts, estimates=est)


# ------------------------------------------------------------------------------------------
