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
# that holds the model's mass (not just the data's box), grown until it does

#: A ``mass_in_edge_band`` above this says the region may be too small to hold the model's mass.
EDGE_BAND_TOLERANCE = 1e-3
#: Growth stops after the first shell that holds at most this fraction of Z and beyond which the ray probe
#: bounds the mass by at most this fraction too: an ``exact`` log Z misses at most about this much of Z.
GROWTH_TOLERANCE = 1e-5
#: Default largest half-width of the grown region, as a multiple of the base region's (a power of two).
MAX_GROWTH = 16
#: A shell of inner half-width L has spacing L / max(SHELL_CELLS, ⌈L / SHELL_MAX_SPACING⌉) …
SHELL_CELLS = 32
#: … at most 1: the midpoint rule's relative error on a Gaussian bump of standard deviation σ ≥ 1 is ≲ 2·exp(−2π²σ²) ≈ 5e-9.
SHELL_MAX_SPACING = 1.0
#: Rays of the tail probe (in 2-D evenly spaced angles; in 1-D the two half-lines) …
PROBE_DIRECTIONS = 64
#: … probed at radii L₀·2^(j/PROBE_PER_OCTAVE), j = 0, 1, …, out to max_growth·PROBE_BEYOND·L₀ (L₀ the base half-width).
PROBE_PER_OCTAVE = 4
PROBE_BEYOND = 1024
#: E must rise by (d + 1)·log(r_{j+1}/r_j) between consecutive probe radii over this many outermost octaves.
PROBE_FAR_OCTAVES = 2


@dataclass(frozen=True)
class RegionQuadrature:
    """log Z of exp(−E) over a region, and where the mass lies (see :func:`region_log_normaliser`)."""

    log_z: float
    #: fraction of the region's mass outside the data box
    mass_outside_box: float
    #: fraction of the mass in the outermost band of the integrated region (large: the region is too small)
    mass_in_edge_band: float
    #: number of energy evaluations of the base region's two grids (shells and probe: below)
    n_points: int
    #: True when the integrated region holds the mass (log Z is then Z's quadrature value); False: log Z is
    #: only a lower bound (exp(−E) has no integrable tail the probe can see, or growth stopped first)
    exact: bool = False
    #: sup-norm half-width of the integrated square about the region's centre (the base region's if none grew)
    half_width: float = math.nan
    #: number of shells integrated beyond the base region, and the fraction of Z they hold
    n_shells: int = 0
    mass_in_shells: float = 0.0
    #: the probe's bound on the mass beyond the integrated square, as a fraction of Z (inf: E does not rise enough)
    tail_bound: float = math.inf
    #: energy evaluations of the shells and of the ray probe
    n_shell_points: int = 0
    n_probe_points: int = 0

    @property
    def unheld_mass(self) -> float:
        """``mass_in_edge_band`` when :attr:`exact`, else 1 (all the mass is unaccounted for): above
        :data:`EDGE_BAND_TOLERANCE` exactly when the NLL is only a lower bound."""
        return self.mass_in_edge_band if self.exact else 1.0


@dataclass(frozen=True)
class RegionNLL:
    """An NLL normalised over a region that holds the model's mass (see :func:`region_nll`)."""

    nll: float
    log_z: float
    mass_outside_box: float
    mass_in_edge_band: float
    #: False: log Z is a lower bound, so ``nll`` is only a lower bound on the true NLL
    exact: bool = False

    @property
    def bound(self) -> str:
        """``"exact"``, or ``"lower"`` when ``nll`` is only a lower bound (:attr:`exact` False)."""
        return "exact" if self.exact else "lower"


@dataclass(frozen=True)
class RegionMSE:
    """The MSE of the log-density with log Z from quadrature (see :func:`region_mse_log_density`)."""

    mse: float
    log_z: float
    mass_outside_box: float
    mass_in_edge_band: float
    #: False: log Z is a lower bound and the MSE uncertain (in either direction)
    exact: bool = False
    #: min over constants c of (1/n) Σᵢ (aᵢ − c)², the variance of aᵢ: a lower bound of the MSE whatever log Z is
    floor: float = math.nan


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


def _growth_levels(max_growth: int) -> int:
    """log₂ of a validated ``max_growth`` (a power of two ≥ 1; 1 integrates no shell)."""
    _checks.positive_int("max_growth", max_growth)
    if max_growth & (max_growth - 1):
        raise ValueError(f"max_growth must be a power of two (1, 2, 4, …), got {max_growth!r}")
    return max_growth.bit_length() - 1


def _ring_boxes(outer: tuple[int, int], inner: tuple[int, int], dim: int) -> list[list[tuple[int, int]]]:
    """The cells of [o₀, o₁)^dim outside [i₀, i₁)^dim as disjoint boxes of per-axis index ranges: for each axis a
    and side, the cells outside on axis a (on that side) and inside on every axis before it."""
    (o0, o1), (i0, i1) = outer, inner
    boxes = [[(i0, i1)] * a + [side] + [(o0, o1)] * (dim - 1 - a) for a in range(dim) for side in ((o0, i0), (i1, o1))]
    return [b for b in boxes if all(lo < hi for lo, hi in b)]


def _box_log_mass(energy: Energy, axis: torch.Tensor, boxes: list[list[tuple[int, int]]], log_vol: float) -> tuple[torch.Tensor, int]:
    """log Σ exp(−E(c))·vol over the cells c of ``boxes`` (centres ``axis[i]`` per axis), at most about ``_CHUNK``
    cells at a time, and the cell count."""
    logs, count = [torch.tensor(-math.inf, dtype=torch.float64)], 0
    for box in boxes:
        rest = [axis[lo:hi] for lo, hi in box[1:]]
        rows = max(1, _CHUNK // math.prod(len(r) for r in rest))
        for start in range(box[0][0], box[0][1], rows):
            first = axis[start : min(start + rows, box[0][1])]
            pts = (torch.cartesian_prod(first, *rest) if rest else first[:, None]).to(torch.get_default_dtype())
            logs.append(torch.logsumexp(-_energies(energy, _to_energy(energy, pts)).double().cpu(), dim=0) + log_vol)
            count += pts.shape[0]
    return torch.logsumexp(torch.stack(logs), dim=0), count


def _ring_mass(energy: Energy, bounds: tuple[float, float], n: int, k_lo: int, k_hi: int, band: int, dim: int
               ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Midpoint sum over the cells of the n^dim grid on [lo, hi]^dim (:func:`grid_points`'s cell centres) lying
    outside cells k_lo … k_hi − 1 of every axis: (log Σ exp(−E(c))·h^dim, the same over the cells within
    ``band`` ≤ k_lo, n − k_hi cells of the boundary, the cell count). Memory does not grow with n."""
    lo, hi = bounds
    h = (hi - lo) / n
    axis = lo + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    log_band, n_band = _box_log_mass(energy, axis, _ring_boxes((0, n), (band, n - band), dim), math.log(h**dim))
    log_rest, n_rest = _box_log_mass(energy, axis, _ring_boxes((band, n - band), (k_lo, k_hi), dim), math.log(h**dim))
    return torch.logaddexp(log_band, log_rest), log_band, n_band + n_rest


def _ray_directions(dim: int) -> torch.Tensor:
    """Unit vectors of the probe: ±1 in 1-D, PROBE_DIRECTIONS even angles in 2-D, fixed random ones above."""
    if dim == 1:
        return torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    if dim == 2:
        angle = 2 * math.pi * torch.arange(PROBE_DIRECTIONS, dtype=torch.float64) / PROBE_DIRECTIONS
        return torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    g = torch.randn(PROBE_DIRECTIONS, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return g / g.norm(dim=1, keepdim=True)


def _tail_probe(energy: Energy, centre: float, half: float, n_levels: int, dim: int) -> tuple[list[float], int]:
    """For each level k = 0 … n_levels (half-width L_k = half·2^k): log of the probe's bound T(L_k) on the mass of
    exp(−E) beyond radius L_k, +inf where E does not rise as :func:`region_log_normaliser` requires; and the
    number of energy evaluations."""
    j = torch.arange(PROBE_PER_OCTAVE * (n_levels + PROBE_BEYOND.bit_length() - 1) + 1, dtype=torch.float64)
    radii = half * 2.0 ** (j / PROBE_PER_OCTAVE)
    u = _ray_directions(dim)
    pts = (centre + radii[None, :, None] * u[:, None, :]).reshape(-1, dim).to(torch.get_default_dtype())
    e = _energies(energy, _to_energy(energy, pts)).double().cpu().reshape(u.shape[0], radii.shape[0])
    far = e[:, -PROBE_PER_OCTAVE * PROBE_FAR_OCTAVES - 1 :]
    keeps_rising = bool(((far[:, 1:] - far[:, :-1] >= (dim + 1) * math.log(2.0) / PROBE_PER_OCTAVE) | (far[:, 1:] == math.inf)).all())
    log_sphere = math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)  # area of the unit sphere
    bounds = []
    for k in range(n_levels + 1):
        i = PROBE_PER_OCTAVE * k
        rises = keeps_rising and bool((e[:, i + 1 :] >= e[:, i : i + 1] + (dim + 1) * torch.log(radii[i + 1 :] / radii[i])).all())
        log_mean = float(torch.logsumexp(-e[:, i], dim=0)) - math.log(u.shape[0])
        bounds.append(log_sphere + dim * math.log(radii[i]) + log_mean if rises else math.inf)
    return bounds, pts.shape[0]


@dataclass(frozen=True)
class _Growth:
    log_mass: torch.Tensor  # log of the shells' mass
    log_band: torch.Tensor | None  # log of the mass in the last shell's outer band (None: no shell)
    n_shells: int
    n_points: int
    held: bool  # growth stopped because the mass is held
    log_tail: float  # the probe's log bound on the mass beyond the integrated square
    half_width: float
    n_probe: int


def _grow(energy: Energy, region: tuple[float, float], dim: int, n_levels: int, log_z: torch.Tensor) -> _Growth:
    """Integrate shells [−2L, 2L]^d \\ [−L, L]^d about the region's centre, L = L₀, 2L₀, …, until one holds at most
    GROWTH_TOLERANCE of Z and the probe bounds the mass beyond it by as little (see :func:`region_log_normaliser`);
    none when no larger half-width can meet the probe's bound."""
    centre, half = 0.5 * (region[0] + region[1]), 0.5 * (region[1] - region[0])
    log_tails, n_probe = _tail_probe(energy, centre, half, n_levels, dim)
    log_tol = math.log(GROWTH_TOLERANCE)
    log_mass, log_band, k, count = torch.tensor(-math.inf, dtype=torch.float64), None, 0, 0
    held = n_levels == 0 and log_tails[0] - float(log_z) <= log_tol
    while k < n_levels and not held and any(t - float(log_z) <= log_tol for t in log_tails[k + 1 :]):
        inner = half * 2**k
        m = max(SHELL_CELLS, math.ceil(inner / SHELL_MAX_SPACING - 1e-9))
        if (4 * m) ** dim > 10**8:
            break
        shell, log_band, n = _ring_mass(energy, (centre - 2 * inner, centre + 2 * inner), 4 * m, m, 3 * m, max(1, round(m / 4)), dim)
        k, count = k + 1, count + n
        log_mass, log_z = torch.logaddexp(log_mass, shell), torch.logaddexp(log_z, shell)
        held = float(shell - log_z) <= log_tol and log_tails[k] - float(log_z) <= log_tol
    return _Growth(log_mass, log_band, k, count, held, log_tails[k], half * 2**k, n_probe)


@torch.no_grad()
def region_log_normaliser(
    energy: Energy,
    box: tuple[float, float] = (-4.0, 4.0),
    region: tuple[float, float] | None = None,
    n_box: int = 200,
    n_region: int = 128,
    dim: int = 2,
    max_growth: int = MAX_GROWTH,
) -> RegionQuadrature:
    r"""log Z = log ∫ exp(−E(x)) dx over a region that holds the model's mass wherever it lies, not just the data box B.

    Midpoint rules, log Z ≈ log Σ_c exp(−E(c))·v_c (cell centres c, volumes v_c; float64), on: the box
    B = [box_lo, box_hi]^d (fine n_box^d grid); the base region R \ B, R = [region_lo, region_hi]^d of
    half-width L₀ (default B scaled by 4 about its centre; coarse n_region^d grid whose cell edges include
    B's); and shells [−2L, 2L]^d \ [−L, L]^d about R's centre c, L = L₀, 2L₀, … (spacing
    L / max(:data:`SHELL_CELLS`, ⌈L / :data:`SHELL_MAX_SPACING`⌉): 0.5, then 1 by default), at least one and
    out to half-width ``max_growth``·L₀, evaluated in chunks.

    A ray probe evaluates E at c + r·u, u on :data:`PROBE_DIRECTIONS` directions, r = L₀·2^(j/4) ≤ r_max =
    ``max_growth``·:data:`PROBE_BEYOND`·L₀. The tail beyond radius L is *integrable* when along every ray
    (a) E(c + r·u) ≥ E(c + L·u) + (d + 1)·log(r/L) at every probed r > L (3·log(r/L) in 2-D), and (b) E rises
    at that rate between consecutive radii over the last :data:`PROBE_FAR_OCTAVES` octaves (r → ∞'s stand-in);
    then ∫_{|x−c|>L} exp(−E) dx ≤ T(L) = |S^{d−1}|·L^d·mean_u exp(−E(c + L·u)), else T(L) = ∞. Shells are
    added while some larger L_k ≤ ``max_growth``·L₀ still has T(L_k) ≤ :data:`GROWTH_TOLERANCE`·Z, until one
    holds ≤ GROWTH_TOLERANCE of Z with T(its outer half-width) ≤ GROWTH_TOLERANCE·Z: then ``exact`` is True.
    Otherwise ``exact`` is False, log Z (and the NLL) only a **lower bound**, ``unheld_mass`` 1: when no half-width
    qualifies (E flattens or falls far out: exp(−E) is not normalisable, or its tail is too heavy) nothing is
    grown and the values are R's alone, as with ``max_growth`` = 1; when growth reaches ``max_growth``·L₀ first,
    they include its shells. Mass is found where E falls towards it along some ray (as towards a Gaussian bump);
    shells resolve structure of unit scale (σ ≳ 1), not narrower.

    m_out = mass outside B / Z; m_edge = mass in the integrated square's outer band (within 1/8 of its
    half-width of the boundary, |x|_∞ ≥ 14 for the default R alone) / Z.

    Defaults: B = [−4, 4]², 200² cells; R = [−16, 16]², 128² cells: 55 360 evaluations (``n_points``), plus
    4 160 for the probe and 12 288 for the first shell (to |x|_∞ = 32), 30 % more time for a trained toy
    network (:func:`edrepro.nets.toy_energy_net`, ≈ 0.1 s → 0.13 s on one CPU thread); mass out to |x|_∞ = 1024
    (seen in CD's early models) costs up to 4.2 million evaluations, ≈ 17 s. Midpoint error: for a Gaussian of standard
    deviation σ ≳ h, about exp(−2π²σ²/h²) (a unit-mass bump outside B: log Z error 1e-5 at σ = 0.2, 3e-3 at
    0.15, 0.18 at 0.1; refine n_region for sharp structure outside B); where spacings change, an
    O((h₁² − h₂²)·∮∂exp(−E)) term: 2e-4 for a Gaussian of s = 3 across B's edge, 6e-5 for s = 10 over shells.
    """
    _check_energy(energy)
    box, region, k_lo, k_hi, band = _region_layout(box, region, n_box, n_region, dim)
    n_levels = _growth_levels(max_growth)
    fine, vol_fine = grid_points(box, n_box, dim)
    log_in = torch.logsumexp(-_energies(energy, _to_energy(energy, fine)).double().cpu(), dim=0) + math.log(vol_fine)
    log_out, log_band, n_coarse = _ring_mass(energy, region, n_region, k_lo, k_hi, band, dim)
    grown = _grow(energy, region, dim, n_levels, torch.logaddexp(log_in, log_out))
    log_out = torch.logaddexp(log_out, grown.log_mass)
    log_z = torch.logaddexp(log_in, log_out)
    edge = float(torch.exp((log_band if grown.log_band is None else grown.log_band) - log_z))
    return RegionQuadrature(
        log_z=float(log_z),
        mass_outside_box=float(torch.exp(log_out - log_z)),
        mass_in_edge_band=edge,
        n_points=int(fine.shape[0] + n_coarse),
        exact=grown.held and edge <= EDGE_BAND_TOLERANCE,
        half_width=grown.half_width,
        n_shells=grown.n_shells,
        mass_in_shells=float(torch.exp(grown.log_mass - log_z)),
        tail_bound=float(torch.exp(grown.log_tail - log_z)),
        n_shell_points=grown.n_points,
        n_probe_points=grown.n_probe,
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
    max_growth: int = MAX_GROWTH,
) -> RegionNLL:
    r"""Negative log-likelihood of x under exp(−E)/Z with Z over a region that holds the model's mass.

        NLL = (1/B) Σᵢ E(xᵢ) + log Z,   log Z from :func:`region_log_normaliser` (grown beyond R as needed).

    Also reports the model's mass outside the box (``mass_outside_box``; the box-only
    :func:`grid_nll` is lower than this NLL by about −log(1 − mass_outside_box)) and in the integrated
    region's outermost band (``mass_in_edge_band``). ``exact`` False (``bound`` ``"lower"``): the
    quadrature did not hold the mass (e.g. exp(−E) is not normalisable), log Z is a lower bound and so
    is the NLL. Defaults and cost as in :func:`region_log_normaliser`; pass the ``quadrature`` of the
    same energy (e.g. shared with :func:`region_mse_log_density`) to skip it.
    """
    _check_energy(energy)
    _checks.batch("x", x)
    q = quadrature if quadrature is not None else region_log_normaliser(energy, box, region, n_box, n_region, x.shape[1], max_growth)
    e = _energies(energy, _to_energy(energy, x)).double().cpu()
    return RegionNLL(float(e.mean()) + q.log_z, q.log_z, q.mass_outside_box, q.mass_in_edge_band, q.exact)


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
    max_growth: int = MAX_GROWTH,
) -> RegionMSE:
    r"""The MSE of the log-density on fresh data, with log Z by quadrature instead of importance sampling.

    With x₁…xₙ ~ p, aᵢ = −E(xᵢ) − log p(xᵢ) and log Z from :func:`region_log_normaliser`,

        MSE = (1/n) Σᵢ (−E(xᵢ) − log Z − log p(xᵢ))² = (1/n) Σᵢ (aᵢ − log Z)².

    :func:`mse_log_density` (the paper's metric) uses log Ẑ = log (1/n) Σᵢ exp(aᵢ), which only
    sees the model where the data are: a model q = ½p + ½r with r far from the data gets
    MSE ≈ 0 there, but (log 2)² here. This version is 0 for E = −log p + c (any constant c)
    up to the quadrature's error, provided the quadrature holds the mass (``exact``; if not, log Z
    is a lower bound and the MSE uncertain). Whatever log Z is, the MSE is at least

        floor = min_c (1/n) Σᵢ (aᵢ − c)² = (1/n) Σᵢ (aᵢ − ā)²,

    the variance of the aᵢ: the error no normalising constant can remove, returned as ``floor``. ``box`` defaults to ``dataset.bounds``; the dimension is
    the data's. inf if some aᵢ is not finite. Draws the same points as :func:`mse_log_density` for the
    same generator state. A ``quadrature`` of the same energy (:func:`region_log_normaliser`) is used
    instead of computing one.
    """
    _check_energy(energy)
    _check_dataset(dataset, need_log_prob=True)
    _checks.positive_int("n", n)
    if box is None:
        box = getattr(dataset, "bounds", None)
        if box is None:
            raise ValueError(f"box must be given: dataset {type(dataset).__name__} has no bounds")
    x = _fresh(dataset, n, generator)
    q = quadrature if quadrature is not None else region_log_normaliser(energy, box, region, n_box, n_region, x.shape[1], max_growth)
    log_p = dataset.log_prob(x).double().cpu()  # type: ignore[attr-defined]
    e = _energies(energy, _to_energy(energy, x)).double().cpu()
    a = -e - log_p
    finite = bool(torch.isfinite(a).all())
    mse = float(((a - q.log_z) ** 2).mean()) if finite and math.isfinite(q.log_z) else math.inf
    floor = float(((a - a.mean()) ** 2).mean()) if finite else math.inf
    return RegionMSE(mse, q.log_z, q.mass_outside_box, q.mass_in_edge_band, q.exact, floor)


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
