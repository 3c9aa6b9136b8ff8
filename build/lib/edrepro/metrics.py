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
from dataclasses import dataclass

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
    r"""Negative log-likelihood of x under exp(−E)/Z_box, normalised over the box [lo, hi]^d only.

        NLL_box = (1/B) Σᵢ E(xᵢ) + log Z_box,   Z_box = Σ_cells exp(−E(c))·h^d on [lo, hi]^d.

    Z_box ignores any mass exp(−E) places outside the box, so NLL_box = NLL − log(1 − m_out) with
    m_out the model's mass outside the box: a model that puts mass outside scores *lower* (better)
    than it should. It is exact only when the box holds the model's mass; :func:`region_nll`
    normalises over a larger region and reports m_out.
    """
    _check_energy(energy)
    _checks.batch("x", x)
    log_z = grid_log_normaliser(energy, bounds, n, dim=x.shape[1])
    e = _energies(energy, _to_energy(energy, x)).double()
    return float(e.mean()) + log_z



# --------------------------------------------------------------------------- quadrature over a region
# that holds the model's mass (not just the data's box)

#: A ``mass_in_edge_band`` above this says the region may be too small to hold the model's mass.
EDGE_BAND_TOLERANCE = 1e-3


@dataclass(frozen=True)
class RegionQuadrature:
    """log Z of exp(−E) over a region, and where the mass lies (see :func:`region_log_normaliser`)."""

    log_z: float
    #: fraction of the region's mass outside the data box
    mass_outside_box: float
    #: fraction of the region's mass in its outermost band (large: the region is too small)
    mass_in_edge_band: float
    #: number of energy evaluations the quadrature used
    n_points: int


@dataclass(frozen=True)
class RegionNLL:
    """An NLL normalised over a region that holds the model's mass (see :func:`region_nll`)."""

    nll: float
    log_z: float
    mass_outside_box: float
    mass_in_edge_band: float


@dataclass(frozen=True)
class RegionMSE:
    """The MSE of the log-density with log Z from quadrature (see :func:`region_mse_log_density`)."""

    mse: float
    log_z: float
    mass_outside_box: float
    mass_in_edge_band: float


def _default_region(box: tuple[float, float]) -> tuple[float, float]:
    lo, hi = box
    c, r = 0.5 * (lo + hi), 0.5 * (hi - lo)
    return c - 4.0 * r, c + 4.0 * r


def _region_layout(
    box: tuple[float, float], region: tuple[float, float] | None, n_box: int, n_region: int, dim: int
) -> tuple[tuple[float, float], tuple[float, float], int, int, int]:
    """Validated (box, region, k_lo, k_hi, band): the box is coarse cells k_lo … k_hi − 1 of each axis."""
    if not isinstance(box, (tuple, list)):
        raise ValueError(f"box must be a pair (lo, hi), got {box!r}")
    try:
        box = _check_bounds(box)
    except ValueError as err:
        raise ValueError(str(err).replace("bounds", "box", 1)) from None
    if region is None:
        region = _default_region(box)
    elif not isinstance(region, (tuple, list)):
        raise ValueError(f"region must be a pair (lo, hi), got {region!r}")
    try:
        region = _check_bounds(region)
    except ValueError as err:
        raise ValueError(str(err).replace("bounds", "region", 1)) from None
    _checks.positive_int("n_box", n_box)
    _checks.positive_int("n_region", n_region, minimum=3)
    _checks.positive_int("dim", dim)
    if not (region[0] < box[0] and box[1] < region[1]):
        raise ValueError(f"region must contain the box with a margin on both sides, got region={region!r}, box={box!r}")
    h = (region[1] - region[0]) / n_region
    k = [(b - region[0]) / h for b in box]
    if any(abs(v - round(v)) > 1e-6 for v in k):
        raise ValueError(
            f"n_region must put the box's edges on the region grid's cell edges: with n_region={n_region} they fall "
            f"at cells {k[0]:.4g} and {k[1]:.4g}, not whole numbers (the default region is 4× the box about its "
            f"centre; then any n_region divisible by 8 works)"
        )
    k_lo, k_hi = round(k[0]), round(k[1])
    margin = min(k_lo, n_region - k_hi)
    band = min(margin, max(1, round(n_region / 16)))
    if n_region**dim > 10**8 or n_box**dim > 10**8:
        raise ValueError(f"n_box**dim and n_region**dim must be at most 1e8, got n_box={n_box}, n_region={n_region}, dim={dim}")
    return box, region, k_lo, k_hi, band


@torch.no_grad()
def region_log_normaliser(
    energy: Energy,
    box: tuple[float, float] = (-4.0, 4.0),
    region: tuple[float, float] | None = None,
    n_box: int = 200,
    n_region: int = 128,
    dim: int = 2,
) -> RegionQuadrature:
    r"""log Z = log ∫ exp(−E(x)) dx over a region R ⊃ B that holds the model's mass, not just the data box B.

    Two midpoint rules, cell centres c with cell volumes v_c:

    - B = [box_lo, box_hi]^d on the fine n_box^d grid (spacing h_B = (box_hi − box_lo)/n_box);
    - R \ B on the coarse n_region^d grid over R = [region_lo, region_hi]^d (spacing h_R), minus the
      cells inside B (the box's edges must lie on coarse cell edges);

        log Z ≈ log Σ_c exp(−E(c))·v_c,
        m_out  = Σ_{c ∉ B} exp(−E(c))·v_c / Z          (mass outside the data box),
        m_edge = Σ_{c in the band} exp(−E(c))·v_c / Z   (mass in R's outermost band),

    the band being the coarse cells within max(1, round(n_region/16)) cells of R's boundary
    (|x|_∞ ≥ 14 for the defaults). A model whose exp(−E) decays outward has m_edge ≈ 0; an m_edge
    above :data:`EDGE_BAND_TOLERANCE` says R is too small (or exp(−E) is not normalisable) and then
    log Z is an underestimate. All sums are log-sum-exps in float64.

    Defaults: B = [−4, 4]² with 200² cells (h_B = 0.04, as the box-only NLL), R = B scaled by 4 about
    its centre ([−16, 16]²) with 128² cells (h_R = 0.25), 40 000 + 15 360 = 55 360 energy evaluations.
    The data, and their sharp features, live in B; outside it a trained network's exp(−E) is smooth,
    so the coarse spacing suffices; the midpoint error is O(h²·∂²exp(−E)), and for a Gaussian of
    standard deviation σ ≳ h it is exponentially small (≈ exp(−2π²σ²/h²)). Measured with the
    defaults: a unit-mass Gaussian bump outside B has log Z error 1e-5 at σ = 0.2, 3e-3 at σ = 0.15,
    0.18 at σ = 0.1; a broad Gaussian (s = 3) straddling B's edge, 2e-4 (the midpoint rules'
    O((h_R² − h_B²)·∂exp(−E)) term at B's edge). Refine n_region (4× the evaluations per doubling
    in 2-D) for a model with sharp structure outside B. About 0.16 s on one CPU thread for the
    50k-parameter toy network (:func:`edrepro.nets.toy_energy_net`), vs 0.11–0.13 s for the box only.
    """
    _check_energy(energy)
    box, region, k_lo, k_hi, band = _region_layout(box, region, n_box, n_region, dim)
    fine, vol_fine = grid_points(box, n_box, dim)
    coarse, vol_coarse = grid_points(region, n_region, dim)
    idx = torch.arange(n_region)
    idx = torch.cartesian_prod(*([idx] * dim)) if dim > 1 else idx[:, None]
    outside = ((idx < k_lo) | (idx >= k_hi)).any(dim=1)
    in_band = ((idx < band) | (idx >= n_region - band)).any(dim=1)[outside]
    coarse = coarse[outside]
    e_fine = _energies(energy, _to_energy(energy, fine)).double().cpu()
    e_out = _energies(energy, _to_energy(energy, coarse)).double().cpu()
    log_in = torch.logsumexp(-e_fine, dim=0) + math.log(vol_fine)
    log_w_out = -e_out + math.log(vol_coarse)
    log_out = torch.logsumexp(log_w_out, dim=0)
    log_z = torch.logaddexp(log_in, log_out)
    log_edge = torch.logsumexp(log_w_out[in_band], dim=0)
    return RegionQuadrature(
        log_z=float(log_z),
        mass_outside_box=float(torch.exp(log_out - log_z)),
        mass_in_edge_band=float(torch.exp(log_edge - log_z)),
        n_points=int(fine.shape[0] + coarse.shape[0]),
    )


@torch.no_grad()
def region_nll(
    energy: Energy,
    x: torch.Tensor,
    box: tuple[float, float] = (-4.0, 4.0),
    region: tuple[float, float] | None = None,
    n_box: int = 200,
    n_region: int = 128,
    quadrature: RegionQuadrature | None = None,
) -> RegionNLL:
    r"""Negative log-likelihood of x under exp(−E)/Z with Z over a region that holds the model's mass.

        NLL = (1/B) Σᵢ E(xᵢ) + log Z,   log Z from :func:`region_log_normaliser` over R ⊃ box.

    Also reports the model's mass outside the box (``mass_outside_box``; the box-only
    :func:`grid_nll` is lower than this NLL by about −log(1 − mass_outside_box)) and in R's
    outermost band (``mass_in_edge_band``; above :data:`EDGE_BAND_TOLERANCE`, R is too small and
    the NLL is a lower bound). Defaults and cost as in :func:`region_log_normaliser`; pass the
    ``quadrature`` of the same energy (e.g. shared with :func:`region_mse_log_density`) to skip it.
    """
    _check_energy(energy)
    _checks.batch("x", x)
    q = quadrature if quadrature is not None else region_log_normaliser(energy, box, region, n_box, n_region, dim=x.shape[1])
    e = _energies(energy, _to_energy(energy, x)).double().cpu()
    return RegionNLL(float(e.mean()) + q.log_z, q.log_z, q.mass_outside_box, q.mass_in_edge_band)


@torch.no_grad()
def region_mse_log_density(
    energy: Energy,
    dataset: object,
    n: int = 5000,
    generator: torch.Generator | None = None,
    box: tuple[float, float] | None = None,
    region: tuple[float, float] | None = None,
    n_box: int = 200,
    n_region: int = 128,
    quadrature: RegionQuadrature | None = None,
) -> RegionMSE:
    r"""The MSE of the log-density on fresh data, with log Z by quadrature instead of importance sampling.

    With x₁…xₙ ~ p, aᵢ = −E(xᵢ) − log p(xᵢ) and log Z from :func:`region_log_normaliser`,

        MSE = (1/n) Σᵢ (−E(xᵢ) − log Z − log p(xᵢ))² = (1/n) Σᵢ (aᵢ − log Z)².

    :func:`mse_log_density` (the paper's metric) uses log Ẑ = log (1/n) Σᵢ exp(aᵢ), which only
    sees the model where the data are: a model q = ½p + ½r with r far from the data gets
    MSE ≈ 0 there, but (log 2)² here. This version is 0 for E = −log p + c (any constant c)
    up to the quadrature's error, provided the region holds the mass (``mass_in_edge_band`` ≈ 0).
    ``box`` defaults to ``dataset.bounds``; the dimension is the data's. inf if some aᵢ is not
    finite. Draws the same points as :func:`mse_log_density` for the same generator state. A
    ``quadrature`` of the same energy (:func:`region_log_normaliser`) is used instead of computing one.
    """
    _check_energy(energy)
    _check_dataset(dataset, need_log_prob=True)
    _checks.positive_int("n", n)
    if box is None:
        box = getattr(dataset, "bounds", None)
        if box is None:
            raise ValueError(f"box must be given: dataset {type(dataset).__name__} has no bounds")
    x = _fresh(dataset, n, generator)
    q = quadrature if quadrature is not None else region_log_normaliser(energy, box, region, n_box, n_region, dim=x.shape[1])
    log_p = dataset.log_prob(x).double().cpu()  # type: ignore[attr-defined]
    e = _energies(energy, _to_energy(energy, x)).double().cpu()
    a = -e - log_p
    mse = float(((a - q.log_z) ** 2).mean()) if torch.isfinite(a).all() and math.isfinite(q.log_z) else math.inf
    return RegionMSE(mse, q.log_z, q.mass_outside_box, q.mass_in_edge_band)


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
