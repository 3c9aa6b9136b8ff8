"""Model-agnostic evaluation of energies against data sets with known densities.

An *energy* is any callable mapping (B, d) → (B,) (or (B, 1)); a *data set* is any object with
``sample(n, generator)`` and, where needed, ``log_prob(x)`` (and optionally ``score(x)``),
such as :class:`edrepro.toy.GaussianMixture` or :func:`edrepro.toy.get`'s sets. Energies
living on a GPU are handled: samples are moved to the device and dtype of the energy's
parameters (an energy without parameters receives them as the data set produces them).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from . import _checks

Energy = Callable[[torch.Tensor], torch.Tensor]
_CHUNK = 65536


def _check_energy(energy: Energy) -> None:
    if not callable(energy):
        raise ValueError(f"energy must be a callable mapping (B, d) to (B,), got {type(energy).__name__}")


def _to_energy(energy: Energy, x: torch.Tensor) -> torch.Tensor:
    """x moved to the device and floating dtype of the energy's parameters (unchanged if it has none)."""
    params = getattr(energy, "parameters", None)
    if callable(params):
        for p in params():
            if p.is_floating_point():
                return x.to(device=p.device, dtype=p.dtype)
    return x


def _energies(energy: Energy, x: torch.Tensor, chunk: int = _CHUNK) -> torch.Tensor:
    """E(x) evaluated in chunks, validated and concatenated, shape (B,)."""
    out = []
    for start in range(0, x.shape[0], chunk):
        xb = x[start : start + chunk]
        out.append(_checks.energy_output("energy", energy(xb), xb.shape[0]))
    return torch.cat(out)


def _check_dataset(dataset: object, need_log_prob: bool) -> None:
    if not callable(getattr(dataset, "sample", None)):
        raise ValueError(f"dataset must have a sample(n, generator) method, got {type(dataset).__name__}")
    if need_log_prob and not (callable(getattr(dataset, "log_prob", None)) and getattr(dataset, "has_log_prob", True)):
        raise ValueError(
            f"dataset must have an analytic log_prob(x); {getattr(dataset, 'name', type(dataset).__name__)!r} has none"
        )


def _fresh(dataset: object, n: int, generator: torch.Generator | None) -> torch.Tensor:
    x = dataset.sample(n, generator)  # type: ignore[attr-defined]
    return _checks.batch("dataset.sample(n)", x)


def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError(f"bounds must be a pair (lo, hi), got {bounds!r}")
    lo, hi = bounds
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"bounds must be two finite numbers, got {bounds!r}")
    if not lo < hi:
        raise ValueError(f"bounds must satisfy lo < hi, got {bounds!r}")
    return float(lo), float(hi)


@torch.no_grad()
def mse_log_density(
    energy: Energy, dataset: object, n: int = 5000, generator: torch.Generator | None = None
) -> float:
    r"""Mean squared error of the model's normalised log-density on fresh data (the paper's toy metric).

    With x₁…xₙ ~ p and aᵢ = −E(xᵢ) − log p(xᵢ), the normaliser is estimated by importance sampling
    with p as the proposal, log Ẑ = log (1/n) Σᵢ exp(aᵢ), and the metric is

        MSE = (1/n) Σᵢ (−E(xᵢ) − log Ẑ − log p(xᵢ))² = (1/n) Σᵢ (aᵢ − log Ẑ)².

    It is 0 for E = −log p + c for any constant c, and inf if some aᵢ is not finite.
    Computed in float64 without gradients.
    """
    _check_energy(energy)
    _check_dataset(dataset, need_log_prob=True)
    _checks.positive_int("n", n)
    x = _fresh(dataset, n, generator)
    log_p = dataset.log_prob(x).double()  # type: ignore[attr-defined]
    e = _energies(energy, _to_energy(energy, x)).double().cpu()
    a = -e - log_p
    if not torch.isfinite(a).all():
        return math.inf
    log_z = torch.logsumexp(a, dim=0) - math.log(n)
    return float(((a - log_z) ** 2).mean())


def grid_points(bounds: tuple[float, float], n: int, dim: int = 2) -> tuple[torch.Tensor, float]:
    """Cell centres of the regular n^dim grid on [lo, hi]^dim, shape (n^dim, dim), and the cell volume h^dim.

    Points are ordered with the *last* coordinate varying fastest, so ``f(points).reshape(n, n)``
    is indexed ``[i_x1, i_x2]``.
    """
    lo, hi = _check_bounds(bounds)
    _checks.positive_int("n", n)
    _checks.positive_int("dim", dim)
    if n**dim > 10**8:
        raise ValueError(f"n**dim must be at most 1e8 grid points, got n={n}, dim={dim}")
    h = (hi - lo) / n
    axis = lo + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    pts = torch.cartesian_prod(*([axis] * dim)) if dim > 1 else axis[:, None]
    return pts.to(torch.get_default_dtype()), h**dim


@torch.no_grad()
def grid_log_normaliser(energy: Energy, bounds: tuple[float, float], n: int, dim: int = 2) -> float:
    r"""log Z ≈ log Σ_cells exp(−E(c))·h^dim: midpoint Riemann sum on the n^dim grid over [lo, hi]^dim.

    Accurate when [lo, hi]^dim holds essentially all of exp(−E) and the grid resolves it.
    Energies are evaluated in chunks; the sum is done in float64.
    """
    _check_energy(energy)
    pts, vol = grid_points(bounds, n, dim)
    e = _energies(energy, _to_energy(energy, pts)).double()
    return float(torch.logsumexp(-e, dim=0)) + math.log(vol)


@torch.no_grad()
def grid_log_density(energy: Energy, bounds: tuple[float, float], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised log-density −E − log Z_grid on the n×n grid of :func:`grid_points` (for heatmaps).

    Returns (axis of cell centres (n,), log-density (n, n) indexed [i_x1, i_x2]) on the CPU.
    """
    _check_energy(energy)
    pts, vol = grid_points(bounds, n, 2)
    log_q = -_energies(energy, _to_energy(energy, pts)).double().cpu()
    log_q = log_q - (torch.logsumexp(log_q, dim=0) + math.log(vol))
    return pts[::n, 0].clone(), log_q.reshape(n, n)


@torch.no_grad()
def grid_nll(energy: Energy, x: torch.Tensor, bounds: tuple[float, float], n: int) -> float:
    r"""Negative log-likelihood of x under exp(−E)/Z with Z from the grid: mean E(x) + log Z_grid."""
    _check_energy(energy)
    _checks.batch("x", x)
    log_z = grid_log_normaliser(energy, bounds, n, dim=x.shape[1])
    e = _energies(energy, _to_energy(energy, x)).double()
    return float(e.mean()) + log_z


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def _kernel_sum(a: torch.Tensor, b: torch.Tensor, gamma: float, chunk: int = 1024) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for s in range(0, a.shape[0], chunk):
        total = total + torch.exp(-gamma * _sq_dists(a[s : s + chunk], b)).sum()
    return total


@torch.no_grad()
def mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> float:
    r"""Unbiased estimate of the squared maximum mean discrepancy with an RBF kernel.

    k(a, b) = exp(−|a − b|²/(2ℓ²)); ℓ is the median pairwise distance of the pooled sample
    (median heuristic; computed on at most the first 1000 points of each set) unless given.

        MMD²_u = Σ_{i≠j} k(xᵢ,xⱼ)/(n(n−1)) + Σ_{i≠j} k(yᵢ,yⱼ)/(m(m−1)) − 2 Σ_{i,j} k(xᵢ,yⱼ)/(nm)

    (Gretton et al., 2012, eq. 3). Unbiased, so it can be slightly negative when p = q.
    """
    _checks.batch("x", x)
    _checks.batch("y", y, dim=x.shape[1])
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"x and y need at least 2 rows each, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    if bandwidth is None:
        pool = torch.cat([x[:1000], y[:1000]])
        d2 = _sq_dists(pool, pool)
        off = d2[~torch.eye(pool.shape[0], dtype=torch.bool)]
        ell2 = float(off.median())
        if ell2 <= 0:
            raise ValueError("median pairwise distance is 0 (all points equal); pass bandwidth explicitly")
    else:
        ell2 = _checks.positive("bandwidth", bandwidth) ** 2
    gamma = 1.0 / (2.0 * ell2)
    n, m = x.shape[0], y.shape[0]
    kxx = (_kernel_sum(x, x, gamma) - n) / (n * (n - 1))  # the diagonal contributes k = 1 each
    kyy = (_kernel_sum(y, y, gamma) - m) / (m * (m - 1))
    kxy = _kernel_sum(x, y, gamma) / (n * m)
    return float(kxx + kyy - 2.0 * kxy)


def _true_score(dataset: object, x: torch.Tensor) -> torch.Tensor:
    score = getattr(dataset, "score", None)
    if callable(score):
        return score(x).detach()
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(dataset.log_prob(xr).sum(), xr)  # type: ignore[attr-defined]
    return g


def fisher_divergence(
    energy: Energy, dataset: object, n: int = 5000, generator: torch.Generator | None = None
) -> float:
    r"""Fisher divergence ½·E_{x~p} |∇ₓ log p(x) − ∇ₓ log q(x)|² with q ∝ exp(−E), on n fresh samples.

    ∇ log q = −∇E is independent of the normaliser; the estimate is (1/2n) Σᵢ |∇E(xᵢ) + ∇log p(xᵢ)|².
    The data score comes from ``dataset.score`` if present, else from autograd of ``dataset.log_prob``.
    Gradients are taken with respect to x only; parameter ``.grad`` fields are untouched.
    """
    _check_energy(energy)
    _check_dataset(dataset, need_log_prob=not callable(getattr(dataset, "score", None)))
    _checks.positive_int("n", n)
    x = _fresh(dataset, n, generator)
    true = _true_score(dataset, x).double()
    grads = []
    for start in range(0, n, _CHUNK):
        with torch.enable_grad():
            xb = _to_energy(energy, x[start : start + _CHUNK]).detach().requires_grad_(True)
            e = _checks.energy_output("energy", energy(xb), xb.shape[0])
            (g,) = torch.autograd.grad(e.sum(), xb)
        grads.append(g.detach().double().cpu())
    diff = torch.cat(grads) + true
    return float(0.5 * (diff**2).sum(dim=1).mean())
