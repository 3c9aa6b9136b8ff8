r"""Between score matching and likelihood: the energy discrepancy of the Figure-1 family, computed exactly.

The data distribution is p = ρ*·N(m₁, σ_p²) + (1 − ρ*)·N(m₂, σ_p²) and the model q_ρ the same
mixture with weight ρ and component scale σ_q (σ_p = σ_q: the family of Figure 1, well specified;
σ_p ≠ σ_q: the model is wrong). The model's energy is E_ρ = −log q_ρ. In one dimension every
population quantity of the paper's theory is a quadrature in float64:

- the contrastive potential E_{ρ,t}(y) = −log ∫ k_t(y − x') exp(−E_ρ(x')) dx' with the Gaussian
  kernel k_t of *variance* t, by the trapezoidal rule (:func:`log_gaussian_smoothing`);
- the energy discrepancy ED_t(p, E_ρ) = E_p[E_ρ(x)] − E_{x∼p, y∼k_t(·−x)}[E_{ρ,t}(y)], where the
  law of y is p_t = p * k_t, computed by the same quadrature (:func:`interpolation_curves`);
- the Kullback–Leibler divergence KL(p‖q_ρ) and the Fisher divergence F(p, q_ρ) = ½ E_p|∇log p −
  ∇log q_ρ|² (with the ½, as everywhere in the book).

The theory being checked: ΔED_t(ρ) := ED_t(p, E_ρ) − ED_t(p, −log p) = KL(p‖q_ρ) − KL(p_t‖q_{ρ,t})
= ∫₀ᵗ F(p_s, q_{ρ,s}) ds, so ΔED_t/t → F(p, q_ρ) as t → 0 and ΔED_t → KL(p‖q_ρ) as t → ∞.

- :func:`small_t_claim`, :func:`large_t_claim` — the two limits, each with its measured rate.
- :func:`minimiser_path_claim` — the minimiser of ED over the weight moves from score matching's to
  the likelihood's as t grows (visible when the model is wrong, σ_p ≠ σ_q: otherwise both are ρ*).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .. import _checks
from ..book.claims import Claim, InstrumentCheck
from ..mixture import _log_components, _log_p, _responsibility, _rhos, _score

_DTYPE = torch.float64
_LOG_2PI = math.log(2.0 * math.pi)
_TAIL = 12.0  # the x and y grids reach 12 standard deviations beyond the outer means: the density there is e^-72 of its peak
_SUPPORT = 20.0  # the support of a smoothed component: 20 of its standard deviations (see log_gaussian_smoothing)
_BAND = 20.0  # the kernel is summed over 20 √t on each side of y
_NODES_PER_SD = 8  # nodes of the smoothing quadrature per min(√t, σ): relative error about exp(−2π²·32) for its Gaussian integrands


def uniform_grid(lo: float, hi: float, step: float) -> torch.Tensor:
    """A float64 grid lo, lo + h, …, hi with h ≤ ``step`` (the endpoints exact, the spacing uniform)."""
    step = _checks.positive("step", step)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"lo < hi must be finite numbers, got lo={lo!r}, hi={hi!r}")
    return torch.linspace(lo, hi, math.ceil((hi - lo) / step) + 1, dtype=_DTYPE)


def _spacing(x: torch.Tensor) -> float:
    """The spacing of a uniform grid, from its ends (x[1] − x[0] carries the rounding of x[0] and x[1])."""
    return float(x[-1] - x[0]) / (x.numel() - 1)


def log_gaussian_smoothing(
    log_f: Callable[[torch.Tensor], torch.Tensor], t: float, y: torch.Tensor, step: float, support: tuple[float, float]
) -> torch.Tensor:
    r"""log ∫ k_t(y − x') f(x') dx' at every point of ``y``, with k_t the density of N(0, t) (variance t).

    ``log_f`` evaluates log f at any tensor of points; f must be negligible outside ``support``. The
    integral is the trapezoidal rule with spacing at most ``step``, summed in log space (logsumexp),
    over x' within 20 √t of y, where all but e^-200 of the kernel lies:

    - when that window is narrower than the support, on nodes centred at each y, x' = y + j·h: the
      kernel centred at y is the quadrature's grid, as it is the estimator's proposal;
    - otherwise on one uniform grid over the support.

    For a Gaussian f of scale σ and y within D standard deviations of f smoothed by k_t, the
    integrand peaks within D √t of y (and within D σ of f's centre) and has width at most
    min(√t, σ), so a window of 20 √t and a support reaching 20 σ beyond f's centre hold it for
    D ≤ 12. The spacing must resolve the kernel, ``step`` ≤ √t/2: the rule's relative error for a
    Gaussian integrand of width w is then about exp(−2π² w²/h²).
    """
    t, step = _checks.positive("t", t), _checks.positive("step", step)
    if not isinstance(y, torch.Tensor) or y.ndim != 1:
        raise ValueError(f"y must be a 1-D tensor of points, got {_checks._show(y)}")
    lo, hi = (float(v) for v in support)
    if not lo < hi:
        raise ValueError(f"support must be an interval (lo, hi) with lo < hi, got {support!r}")
    s = math.sqrt(t)
    if step > s / 2:
        raise ValueError(f"step = {step:.3g} must resolve the kernel of variance t = {t:g}: at most sqrt(t)/2 = {s / 2:.3g}")
    y = y.to(_DTYPE)
    log_norm = -0.5 * (_LOG_2PI + math.log(t))
    if 2 * _BAND * s < hi - lo:
        j = math.ceil(_BAND * s / step)
        offsets = torch.arange(-j, j + 1, dtype=_DTYPE) * step
        values = log_f(y[:, None] + offsets[None, :]) + (-0.5 * offsets**2 / t + log_norm)[None, :]
        return torch.logsumexp(values, dim=1) + math.log(step)
    nodes = uniform_grid(lo, hi, step)
    values = log_f(nodes)[None, :] - 0.5 * (y[:, None] - nodes[None, :]) ** 2 / t + log_norm
    return torch.logsumexp(values, dim=1) + math.log(_spacing(nodes))


def _log_normal(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * _LOG_2PI


def _trapezoid(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """∫ values dx over the last axis on the uniform grid x, for integrands negligible at the ends."""
    return values.sum(dim=-1) * _spacing(x)


@dataclass(frozen=True)
class InterpolationCurves:
    """Exact population quantities on a grid of times ``ts`` (T,) and model weights ``rhos`` (R,).

    ``ed`` (T, R): ED_t(p, E_ρ) from its definition; ``ed_at_data`` (T,): ED_t(p, −log p), which is
    H(p) − H(p_t); ``excess`` (T, R): ΔED_t(ρ) = ED_t(p, E_ρ) − ED_t(p, −log p), computed from the
    pointwise differences of the energies and potentials (no cancellation of large numbers);
    ``kl`` (R,): KL(p‖q_ρ); ``fisher`` (R,): F(p, q_ρ) = ½ E_p|∇log p − ∇log q_ρ|²; ``kl_diffused``
    (T, R): KL(p_t‖q_{ρ,t}) from the quadrature densities. Instruments: ``mass`` (T,), the
    quadrature's ∫p_t dy; ``potential_error`` (T,), the largest deviation of the quadrature's
    −log of each smoothed component from the closed form −log N(y; m, σ² + t), over y within 10
    standard deviations of the component.
    """

    ts: torch.Tensor
    rhos: torch.Tensor
    rho_true: float
    means: tuple[float, float]
    model_std: float
    data_std: float
    kernel_factor: float
    ed: torch.Tensor
    ed_at_data: torch.Tensor
    excess: torch.Tensor
    kl: torch.Tensor
    fisher: torch.Tensor
    kl_diffused: torch.Tensor
    mass: torch.Tensor
    potential_error: torch.Tensor

    def small_t_ratio(self) -> torch.Tensor:
        """ΔED_t / (t·F) at every t and ρ, (T, R): tends to 1 as t → 0."""
        _positive_all("fisher", self.fisher, self.rhos)
        return self.excess / (self.ts[:, None] * self.fisher[None, :])

    def large_t_ratio(self) -> torch.Tensor:
        """ΔED_t / KL at every t and ρ, (T, R): tends to 1 as t → ∞."""
        _positive_all("kl", self.kl, self.rhos)
        return self.excess / self.kl[None, :]

    def ed_minimisers(self) -> torch.Tensor:
        """The grid index of the minimiser of ED_t over ``rhos`` at every t, (T,) int64."""
        return self.excess.argmin(dim=1)


def _positive_all(name: str, values: torch.Tensor, rhos: torch.Tensor) -> None:
    bad = [float(r) for r, v in zip(rhos, values) if not v > 0]
    if bad:
        raise ValueError(f"{name} is not positive at rho = {bad}: the model equals the data there and the ratio is undefined")


def log_ts(log10_min: float, log10_max: float, per_decade: int) -> list[float]:
    """Times 10^k from 10^log10_min to 10^log10_max, ``per_decade`` per factor 10 (both ends included)."""
    per_decade = _checks.positive_int("per_decade", per_decade)
    if not (math.isfinite(log10_min) and math.isfinite(log10_max) and log10_min < log10_max):
        raise ValueError(f"log10_min < log10_max must be finite, got {log10_min!r} and {log10_max!r}")
    n = math.ceil((log10_max - log10_min) * per_decade)
    return [10.0 ** (log10_min + k * (log10_max - log10_min) / n) for k in range(n + 1)]


def interpolation_curves(
    ts: Sequence[float],
    rhos: torch.Tensor,
    rho_true: float = 0.2,
    means: tuple[float, float] = (-5.0, 5.0),
    model_std: float = 1.0,
    data_std: float = 1.0,
    points_per_sd: int = 20,
    kernel_factor: float = 1.0,
) -> InterpolationCurves:
    r"""ED_t(p, E_ρ) and its limits, exactly, for data p = ρ*N(m₁, σ_p²) + (1 − ρ*)N(m₂, σ_p²) and
    models q_ρ = ρN(m₁, σ_q²) + (1 − ρ)N(m₂, σ_q²), at every t of ``ts`` and ρ of ``rhos``.

    The definition, term by term: ED_t = ∫ p(x) E_ρ(x) dx − ∫ p_t(y) E_{ρ,t}(y) dy, with p_t(y) =
    ∫ k_t(y − x) p(x) dx the law of y = x + √t ξ and E_{ρ,t}(y) = −log ∫ k_t(y − x') e^{−E_ρ(x')} dx'.
    Both integrals over x' are :func:`log_gaussian_smoothing`; since e^{−E_ρ} = ρN₁ + (1 − ρ)N₂, each
    is ρ·(k_t * N₁) + (1 − ρ)·(k_t * N₂), so two smoothings per component scale serve every ρ.

    Grids (uniform, trapezoidal rule): x over [min m − 12σ, max m + 12σ] (σ the larger scale) with
    spacing σ_min/``points_per_sd``; at each t, y over [min m − 12 s_t, max m + 12 s_t] with
    s_t = √(σ² + t) and spacing √(σ_min² + t)/``points_per_sd``; the smoothing of each component of
    scale σ has spacing min(√t, σ)/8 (the window and support of :func:`log_gaussian_smoothing`).
    ``kernel_factor`` ≠ 1 gives the contrastive potential a kernel
    of variance kernel_factor·t while y keeps variance t: not energy discrepancy, a counterfactual
    for the tests.
    """
    if isinstance(ts, (str, bytes)) or not isinstance(ts, Sequence) or len(ts) == 0:
        raise ValueError(f"ts must be a non-empty sequence of times > 0, got {ts!r}")
    ts = [_checks.positive(f"ts[{i}]", t) for i, t in enumerate(ts)]
    rhos = _rhos(rhos)
    rho_true = _checks.open_unit("rho_true", rho_true)
    model_std, data_std = _checks.positive("model_std", model_std), _checks.positive("data_std", data_std)
    kernel_factor = _checks.positive("kernel_factor", kernel_factor)
    n = _checks.positive_int("points_per_sd", points_per_sd, minimum=2)
    if not isinstance(means, (tuple, list)) or len(means) != 2 or not all(math.isfinite(float(m)) for m in means):
        raise ValueError(f"means must be a pair of finite numbers, got {means!r}")
    means = (float(means[0]), float(means[1]))
    model, data = (means, model_std), (means, data_std)
    s_min, s_max = min(model_std, data_std), max(model_std, data_std)
    lo, hi = min(means) - _TAIL * s_max, max(means) + _TAIL * s_max
    x = uniform_grid(lo, hi, s_min / n)
    rho_star = torch.tensor([rho_true], dtype=_DTYPE)
    log_p, log_q = _log_p(*_log_components(x, data), rho_star)[0], _log_p(*_log_components(x, model), rhos)
    p = log_p.exp()
    energy_term = _trapezoid(p * (log_p - log_q), x)  # ∫ p (E_ρ − E_p) dx: exactly KL(p‖q_ρ)
    energy_data = _trapezoid(p * -log_p, x)  # ∫ p E_p dx = H(p)
    energy_model = _trapezoid(p * -log_q, x)  # ∫ p E_ρ dx
    fisher = 0.5 * _trapezoid(p * (_score(x, _responsibility(x, rho_star, data), data)
                                   - _score(x, _responsibility(x, rhos, model), model)) ** 2, x)
    rows: dict[str, list] = {k: [] for k in ("ed", "ed_at_data", "excess", "kl_diffused", "mass", "potential_error")}
    for t in ts:
        s_t = math.sqrt(s_max**2 + t)
        y = uniform_grid(min(means) - _TAIL * s_t, max(means) + _TAIL * s_t, math.sqrt(s_min**2 + t) / n)
        smoothed, error = {}, 0.0
        for std in {model_std, data_std}:
            for tt in {t, kernel_factor * t}:
                for m in means:
                    smoothed[m, std, tt] = log_gaussian_smoothing(
                        lambda v, m=m, std=std: _log_normal(v, m, std), tt, y, min(math.sqrt(tt), std) / _NODES_PER_SD,
                        (m - _SUPPORT * std, m + _SUPPORT * std))
                    near = (y - m).abs() <= 10 * math.sqrt(std**2 + tt)
                    exact = _log_normal(y[near], m, math.sqrt(std**2 + tt))
                    error = max(error, float((smoothed[m, std, tt][near] - exact).abs().max()))

        def mixed(w: torch.Tensor, std: float, tt: float) -> torch.Tensor:
            return torch.logaddexp(torch.log(w)[:, None] + smoothed[means[0], std, tt], torch.log1p(-w)[:, None] + smoothed[means[1], std, tt])

        log_pt = mixed(rho_star, data_std, t)[0]  # log p_t: the law of y
        log_pt_k = mixed(rho_star, data_std, kernel_factor * t)[0]  # −E_{p,t}: the potential of the data's own energy
        log_qt = mixed(rhos, model_std, kernel_factor * t)  # −E_{ρ,t}
        p_t = log_pt.exp()
        potential_term = _trapezoid(p_t * (log_pt_k - log_qt), y)  # ∫ p_t (E_{ρ,t} − E_{p,t}) dy
        rows["excess"].append(energy_term - potential_term)
        rows["ed"].append(energy_model - _trapezoid(p_t * -log_qt, y))
        rows["ed_at_data"].append(energy_data - _trapezoid(p_t * -log_pt_k, y))
        rows["kl_diffused"].append(_trapezoid(p_t * (log_pt - mixed(rhos, model_std, t)), y))
        rows["mass"].append(_trapezoid(p_t, y))
        rows["potential_error"].append(error)
    stack = {k: torch.stack(v) if isinstance(v[0], torch.Tensor) else torch.tensor(v, dtype=_DTYPE) for k, v in rows.items()}
    return InterpolationCurves(
        ts=torch.tensor(ts, dtype=_DTYPE), rhos=rhos, rho_true=rho_true, means=means, model_std=model_std,
        data_std=data_std, kernel_factor=kernel_factor, kl=energy_term, fisher=fisher, **stack,
    )


# ------------------------------------------------------------------------------------------
# Claims and instrument checks of notebooks/interpolation.md
# ------------------------------------------------------------------------------------------


def _tolerance(tolerance: float) -> float:
    tolerance = _checks.positive("tolerance", tolerance)
    if tolerance >= 1:
        raise ValueError(f"tolerance must be below 1 (a relative error), got {tolerance!r}")
    return tolerance


def _two(name: str, ts: torch.Tensor) -> None:
    if ts.numel() < 2:
        raise ValueError(f"{name} needs at least two times t, got {ts.numel()}")


def _a_decade_in(ts: torch.Tensor, from_the_end: bool) -> int:
    """The index of the time nearest the smallest (``from_the_end``: the largest) that lies at least a
    factor 10 from it: a rate measured between two times so far apart is not swamped by rounding."""
    t = [float(v) for v in ts]
    if t != sorted(t) or len(set(t)) != len(t):
        raise ValueError("the times ts must increase")
    far = [k for k, v in enumerate(t) if (v <= t[-1] / 10 if from_the_end else v >= 10 * t[0])]
    if not far:
        raise ValueError(f"the times must span at least a factor 10 to measure a rate, got {t[0]:g} to {t[-1]:g}")
    return far[-1] if from_the_end else far[0]


def _rho_list(rhos: torch.Tensor) -> str:
    return ", ".join(f"{float(r):g}" for r in rhos)


def small_t_claim(curves: InterpolationCurves, tolerance: float = 0.05) -> Claim:
    r"""Claim: ΔED_t/t tends to the Fisher divergence as t → 0, for every ρ of the curves.

    With r(t) = ΔED_t/(t·F), the theory gives r(t) = 1 + a·t + O(t²). The slope a is measured
    between the smallest time t₁ and the first time t₂ ≥ 10 t₁ (closer times would let rounding
    decide the slope), â = (r(t₂) − r(t₁))/(t₂ − t₁), and the claim holds when
    the deviation at t₁ is that first-order term, |r(t₁) − 1| ≤ 2|â|·t₁ (the factor 2 leaves room for
    the O(t²) term, negligible when |b|·t₂ ≪ |a|), and the term itself is small, 2|â|·t₁ ≤ ``tolerance``
    (t₁ lies in the limit's regime). Fails when the limit is another constant (a kernel of the
    wrong variance, the Fisher divergence without its ½) or when the smallest t is not small.
    """
    tolerance = _tolerance(tolerance)
    _two("the small-t claim", curves.ts)
    r = curves.small_t_ratio()
    j = _a_decade_in(curves.ts, from_the_end=False)
    t1, t2 = float(curves.ts[0]), float(curves.ts[j])
    slope = (r[j] - r[0]) / (t2 - t1)
    bound = 2 * slope.abs() * t1
    deviation = (r[0] - 1).abs()
    holds = bool(((deviation <= bound) & (bound <= tolerance)).all())
    measured = "; ".join(f"rho = {float(rho):g}: ΔED/(tF) = {float(v):.6g}, 2·abs(a)·t = {float(b):.2g}"
                         for rho, v, b in zip(curves.rhos, r[0], bound))
    return Claim(f"ΔED_t/t tends to the Fisher divergence as t → 0 (rho = {_rho_list(curves.rhos)}): at t = {t1:g}, "
                 f"abs(ΔED/(tF) − 1) ≤ 2·abs(a)·t ≤ {tolerance:g}, with the slope a of ΔED/(tF) measured between t = {t1:g} and {t2:.3g}",
                 measured, holds)


def large_t_claim(curves: InterpolationCurves, tolerance: float = 0.05) -> Claim:
    r"""Claim: ΔED_t tends to KL(p‖q_ρ) as t → ∞, for every ρ of the curves.

    With R(t) = ΔED_t/KL, the theory gives R(t) = 1 − KL(p_t‖q_t)/KL = 1 + c/t + O(1/t²) (diffused
    densities that differ in their means by Δ have KL(p_t‖q_t) ≈ Δ²/(2t)). The coefficient is
    measured between the largest time t_K and the last time t_J ≤ t_K/10, ĉ = (R(t_K) − R(t_J))/(1/t_K − 1/t_J),
    and the claim holds when |R(t_K) − 1| ≤ 2|ĉ|/t_K ≤ ``tolerance``. Fails when the limit is not
    the KL divergence (e.g. compared with the reverse divergence KL(q‖p)) or when t_K is not large.
    """
    tolerance = _tolerance(tolerance)
    _two("the large-t claim", curves.ts)
    r = curves.large_t_ratio()
    j = _a_decade_in(curves.ts, from_the_end=True)
    ta, tb = float(curves.ts[j]), float(curves.ts[-1])
    coefficient = (r[-1] - r[j]) / (1 / tb - 1 / ta)
    bound = 2 * coefficient.abs() / tb
    deviation = (r[-1] - 1).abs()
    holds = bool(((deviation <= bound) & (bound <= tolerance)).all())
    measured = "; ".join(f"rho = {float(rho):g}: ΔED/KL = {float(v):.6g}, 2·abs(c)/t = {float(b):.2g}"
                         for rho, v, b in zip(curves.rhos, r[-1], bound))
    return Claim(f"ΔED_t tends to KL(p‖q) as t → ∞ (rho = {_rho_list(curves.rhos)}): at t = {tb:g}, "
                 f"abs(ΔED/KL − 1) ≤ 2·abs(c)/t ≤ {tolerance:g}, with the coefficient c of 1/t measured between t = {ta:.3g} and {tb:g}",
                 measured, holds)


def minimiser_path_claim(curves: InterpolationCurves) -> Claim:
    r"""Claim: the minimiser of ED_t over the weight grid moves monotonically from score matching's
    minimiser (the smallest t) to the likelihood's (the largest t).

    On the grid ``curves.rhos`` (uniform): k_SM = argmin F, k_MLE = argmin KL and k(t) = argmin ΔED_t.
    The claim holds when k at the smallest t is within one grid step of k_SM, k at the largest t
    within one step of k_MLE, and k(t) never steps back, away from k_MLE, as t grows: monotone at the
    grid's resolution. It is undecided (None) when k_SM and k_MLE are less than two steps apart:
    then there is no path to see (a well-specified model, where both are ρ*). Fails on a path that
    overshoots and turns back, or with the roles of the two losses swapped.
    """
    _two("the minimiser-path claim", curves.ts)
    if curves.rhos.numel() < 3:
        raise ValueError("the minimiser-path claim needs a grid of at least 3 weights")
    rhos = curves.rhos
    k_sm, k_mle = int(curves.fisher.argmin()), int(curves.kl.argmin())
    path = [int(k) for k in curves.ed_minimisers()]
    direction = 1 if k_mle >= k_sm else -1
    back = sum(1 for a, b in zip(path, path[1:]) if direction * (b - a) < 0)
    measured = (f"SM {float(rhos[k_sm]):.3g}, MLE {float(rhos[k_mle]):.3g}; ED minimiser {float(rhos[path[0]]):.3g} at "
                f"t = {float(curves.ts[0]):g} → {float(rhos[path[-1]]):.3g} at t = {float(curves.ts[-1]):g}; "
                f"{back} step(s) back over {len(path)} times")
    statement = "the ED minimiser over rho moves monotonically from score matching's minimiser (small t) to the likelihood's (large t)"
    if abs(k_mle - k_sm) < 2:
        return Claim(statement, measured + " (SM and MLE agree to a grid step: no path to see)", None)
    holds = abs(path[0] - k_sm) <= 1 and abs(path[-1] - k_mle) <= 1 and back == 0
    return Claim(statement, measured, holds)


def instrument_checks(curves: InterpolationCurves, mass_tol: float = 1e-12, potential_tol: float = 1e-10) -> list[InstrumentCheck]:
    """The quadrature works: p_t integrates to 1 within ``mass_tol`` and the smoothed components
    match their closed form N(m, σ² + t) within ``potential_tol`` (in log), at every t."""
    mass_error = float((curves.mass - 1).abs().max())
    potential = float(curves.potential_error.max())
    return [
        InstrumentCheck(f"the quadrature's p_t integrates to 1 within {mass_tol:g} at every t", f"largest abs(∫p_t − 1) = {mass_error:.1e}",
                        mass_error <= mass_tol),
        InstrumentCheck(f"the quadrature's smoothed components equal N(m, σ² + t) within {potential_tol:g} in log, at every t",
                        f"largest error {potential:.1e}", potential <= potential_tol),
    ]
