"""Toy data: the 1-D Gaussian mixture of Figure 1 and the 2-D density-estimation sets.

Every sampler draws its randomness from an optional ``torch.Generator`` so that the same
seed gives bitwise identical samples on the CPU. Samples use the default floating dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import _checks

_LOG_2PI = math.log(2.0 * math.pi)


def _normal_log_pdf(x: torch.Tensor, mean: torch.Tensor | float, std: float) -> torch.Tensor:
    """log N(x; mean, std²) elementwise (1-D)."""
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * _LOG_2PI


# --------------------------------------------------------------------------------------
# 1-D two-component Gaussian mixture (paper Section 3 / Figure 1)
# --------------------------------------------------------------------------------------


class GaussianMixture:
    r"""p_ρ(x) = ρ·N(x; m₁, σ²) + (1 − ρ)·N(x; m₂, σ²) on ℝ.

    Figure 1 of the paper uses ρ = 0.2, (m₁, m₂) = (−5, 5), σ = 1 as data and the same family
    with free ρ as the model. ``rho`` may be a float or a 0-d tensor; a tensor that requires
    grad flows through :meth:`log_prob`, :meth:`energy` and :meth:`score`, so that a loss can be
    differentiated with respect to the mixture weight.
    """

    dim = 1

    def __init__(self, rho: float | torch.Tensor, means: tuple[float, float] = (-5.0, 5.0), std: float = 1.0):
        if isinstance(rho, torch.Tensor):
            if rho.ndim != 0 or not rho.is_floating_point():
                raise ValueError(f"rho must be a float or a 0-d floating tensor, got tensor of shape {tuple(rho.shape)} and dtype {rho.dtype}")
            value = float(rho.detach())
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"rho must lie in [0, 1], got {value!r}")
        else:
            _checks.unit_interval("rho", rho)
            rho = float(rho)
        if not isinstance(means, (tuple, list)) or len(means) != 2:
            raise ValueError(f"means must be a pair (m1, m2), got {means!r}")
        for i, m in enumerate(means):
            if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m):
                raise ValueError(f"means[{i}] must be a finite number, got {m!r}")
        self.rho = rho
        self.means = (float(means[0]), float(means[1]))
        self.std = _checks.positive("std", std)
        self.name = f"mixture(rho={float(self._rho_value()):.4g})"
        # (lo, hi) holding all but ~1e-15 of the mass; used for grid quadrature.
        self.bounds = (min(self.means) - 8.0 * self.std, max(self.means) + 8.0 * self.std)
        self.has_log_prob = True

    def _rho_value(self) -> float:
        return float(self.rho.detach()) if isinstance(self.rho, torch.Tensor) else self.rho

    def _log_weights(self, like: torch.Tensor) -> torch.Tensor:
        rho = self.rho if isinstance(self.rho, torch.Tensor) else torch.tensor(self.rho, dtype=like.dtype, device=like.device)
        rho = rho.to(dtype=like.dtype, device=like.device)
        return torch.stack([torch.log(rho), torch.log1p(-rho)])

    def _joint(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2) matrix of log w_k + log N(x; m_k, σ²)."""
        _checks.batch("x", x, dim=1)
        means = torch.tensor(self.means, dtype=x.dtype, device=x.device)
        return self._log_weights(x) + _normal_log_pdf(x, means, self.std)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p_ρ(x) = logsumexp_k [log w_k + log N(x; m_k, σ²)], x of shape (B, 1) → (B,)."""
        return torch.logsumexp(self._joint(x), dim=1)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) = −log p_ρ(x) (normalised energy), (B, 1) → (B,)."""
        return -self.log_prob(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        r"""∇ₓ log p_ρ(x) = Σ_k r_k(x)·(m_k − x)/σ², r_k the posterior responsibilities; (B,1) → (B,1)."""
        resp = torch.softmax(self._joint(x), dim=1)
        means = torch.tensor(self.means, dtype=x.dtype, device=x.device)
        return (resp * (means - x)).sum(dim=1, keepdim=True) / self.std**2

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (n, 1): component 1 with probability ρ, then m_k + σ·ε."""
        _checks.positive_int("n", n)
        dtype = torch.get_default_dtype()
        first = torch.rand(n, 1, generator=generator, dtype=dtype) < self._rho_value()
        noise = torch.randn(n, 1, generator=generator, dtype=dtype)
        centre = torch.where(first, self.means[0], self.means[1]).to(dtype)
        return centre + self.std * noise

    def __repr__(self) -> str:
        return f"GaussianMixture(rho={self._rho_value()!r}, means={self.means!r}, std={self.std!r})"


# --------------------------------------------------------------------------------------
# 2-D data sets
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Toy2D:
    """A 2-D data set: a sampler, an optional exact log-density and its documented moments.

    ``mean`` and ``mean_sq_norm`` (E|x|²) are exact values of the construction; the tests
    compare sample moments against them.
    """

    name: str
    bounds: tuple[float, float]
    mean: tuple[float, float]
    mean_sq_norm: float
    _sample: Callable[[int, torch.Generator | None, torch.dtype], torch.Tensor] = field(repr=False)
    _log_prob: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    dim: int = 2
    _labelled: Callable[[int, torch.Generator | None, torch.dtype], tuple[torch.Tensor, torch.Tensor]] | None = field(default=None, repr=False)
    n_classes: int | None = None

    @property
    def has_log_prob(self) -> bool:
        return self._log_prob is not None

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n fresh samples, shape (n, 2)."""
        _checks.positive_int("n", n)
        return self._sample(n, generator, torch.get_default_dtype())

    @property
    def has_labels(self) -> bool:
        return self._labelled is not None

    def sample_labelled(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n fresh samples with the component each came from: (x of shape (n, 2), labels of shape (n,),
        integers in [0, n_classes)). The same random draws as :meth:`sample`, so ``x`` equals
        ``sample(n, generator)`` for a generator in the same state."""
        if self._labelled is None:
            raise ValueError(f"data set {self.name!r} has no labels; labelled sets: {list(LABELLED)}")
        _checks.positive_int("n", n)
        return self._labelled(n, generator, torch.get_default_dtype())

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density, (B, 2) → (B,); NotImplementedError where no closed form exists."""
        if self._log_prob is None:
            raise NotImplementedError(
                f"data set {self.name!r} has no analytic log-density; "
                f"sets with one: {[n for n in NAMES if _REGISTRY[n].has_log_prob]}"
            )
        _checks.batch("x", x, dim=2, finite=False)
        return self._log_prob(x)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) = −log p(x), the normalised true energy."""
        return -self.log_prob(x)


def _isotropic_mixture_log_prob(x: torch.Tensor, centres: torch.Tensor, std: float) -> torch.Tensor:
    """log (1/K) Σ_k N(x; c_k, std²·I) in 2-D."""
    c = centres.to(dtype=x.dtype, device=x.device)
    sq = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    log_comp = -0.5 * sq / std**2 - 2.0 * math.log(std) - _LOG_2PI
    return torch.logsumexp(log_comp, dim=1) - math.log(c.shape[0])


def _isotropic_mixture_labelled(centres: torch.Tensor, std: float) -> Callable:
    """Sampler of (x, index of its centre) for the equal-weight mixture of N(c_k, std²·I)."""

    def sample(n: int, generator: torch.Generator | None, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(centres.shape[0], (n,), generator=generator)
        noise = torch.randn(n, 2, generator=generator, dtype=dtype)
        return centres.to(dtype)[idx] + std * noise, idx

    return sample


def _unlabelled(labelled: Callable) -> Callable:
    return lambda n, generator, dtype: labelled(n, generator, dtype)[0]


# 25gaussians -------------------------------------------------------------------------
# The authors' construction: centres {−4,−2,0,2,4}², std 0.2, every point divided by 1.414.
_S25 = 1.414
_C25 = torch.cartesian_prod(*(torch.arange(-4.0, 5.0, 2.0, dtype=torch.float64),) * 2) / _S25
_STD25 = 0.2 / _S25

# 8gaussians: centres at radius 2√2 on the angles kπ/4, std 1/(2√2).
_R8 = 2.0 * math.sqrt(2.0)
_C8 = torch.tensor([[_R8 * math.cos(k * math.pi / 4), _R8 * math.sin(k * math.pi / 4)] for k in range(8)], dtype=torch.float64)
_STD8 = 1.0 / (2.0 * math.sqrt(2.0))


# rings -------------------------------------------------------------------------------
_RING_RADII = (0.75, 1.5, 2.25, 3.0)
_RING_STD = 0.08


def _rings_sample(n: int, generator: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
    idx = torch.randint(len(_RING_RADII), (n,), generator=generator)
    angle = 2.0 * math.pi * torch.rand(n, generator=generator, dtype=dtype)
    noise = torch.randn(n, 2, generator=generator, dtype=dtype)
    radius = torch.tensor(_RING_RADII, dtype=dtype)[idx]
    return radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1) + _RING_STD * noise


def _rings_log_prob(x: torch.Tensor) -> torch.Tensor:
    # A uniform circle of radius R blurred by N(0, σ²I) has density
    # exp(−(r² + R²)/2σ²)·I₀(rR/σ²)/(2πσ²); writing I₀(z) = e^z·i0e(z) keeps it finite.
    r = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    radii = torch.tensor(_RING_RADII, dtype=x.dtype, device=x.device)
    s2 = _RING_STD**2
    log_comp = -((r - radii) ** 2) / (2 * s2) + torch.log(torch.special.i0e(r * radii / s2)) - math.log(2 * math.pi * s2)
    return torch.logsumexp(log_comp, dim=1) - math.log(len(_RING_RADII))


# checkerboard ------------------------------------------------------------------------
# The 4×4 board of 2×2 cells on [−4, 4]²; cell (i, j) = [−4+2i, −2+2i] × [−4+2j, −2+2j]
# is occupied when i + j is even (8 cells, total area 32).
_CB_CENTRES = torch.tensor([[-3.0 + 2 * i, -3.0 + 2 * j] for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=torch.float64)


def _checkerboard_sample(n: int, generator: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
    idx = torch.randint(8, (n,), generator=generator)
    offset = 2.0 * torch.rand(n, 2, generator=generator, dtype=dtype) - 1.0
    return _CB_CENTRES.to(dtype)[idx] + offset


def _checkerboard_log_prob(x: torch.Tensor) -> torch.Tensor:
    # Closed cells, so a sample rounded onto a cell edge still has positive density.
    c = _CB_CENTRES.to(dtype=x.dtype, device=x.device)
    inside = ((x[:, None, :] - c[None]).abs() <= 1.0).all(-1).any(-1)
    value = torch.full_like(x[:, 0], -math.log(32.0))
    return torch.where(inside, value, torch.full_like(value, -math.inf))


# pinwheel ----------------------------------------------------------------------------
_PW_ARMS, _PW_RADIAL, _PW_TANGENTIAL, _PW_RATE, _PW_SCALE = 5, 0.3, 0.1, 0.25, 2.0


def _pinwheel_labelled(n: int, generator: torch.Generator | None, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    arm_index = torch.randint(_PW_ARMS, (n,), generator=generator)
    arm = arm_index.to(dtype)
    z = torch.randn(n, 2, generator=generator, dtype=dtype)
    a = 1.0 + _PW_RADIAL * z[:, 0]
    b = _PW_TANGENTIAL * z[:, 1]
    angle = 2.0 * math.pi * arm / _PW_ARMS + _PW_RATE * torch.exp(a)
    cos, sin = torch.cos(angle), torch.sin(angle)
    return _PW_SCALE * torch.stack([cos * a - sin * b, sin * a + cos * b], dim=1), arm_index


# 2spirals ----------------------------------------------------------------------------
_SP_TURN, _SP_SCALE, _SP_STD = 3.0 * math.pi, 1.0 / 3.0, 0.1


def _spirals_sample(n: int, generator: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
    theta = _SP_TURN * torch.sqrt(torch.rand(n, generator=generator, dtype=dtype))
    sign = 2.0 * torch.randint(2, (n,), generator=generator).to(dtype) - 1.0
    noise = torch.randn(n, 2, generator=generator, dtype=dtype)
    curve = torch.stack([-theta * torch.cos(theta), theta * torch.sin(theta)], dim=1)
    return sign[:, None] * _SP_SCALE * curve + _SP_STD * noise


# moons -------------------------------------------------------------------------------
_MOON_SCALE, _MOON_STD = 2.0, 0.1


def _moons_labelled(n: int, generator: torch.Generator | None, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    phi = math.pi * torch.rand(n, generator=generator, dtype=dtype)
    moon = torch.randint(2, (n,), generator=generator)
    sign = 2.0 * moon.to(dtype) - 1.0
    noise = torch.randn(n, 2, generator=generator, dtype=dtype)
    arc = torch.stack([torch.cos(phi) - 0.5, torch.sin(phi) - 0.25], dim=1)
    return sign[:, None] * _MOON_SCALE * arc + _MOON_STD * noise, moon


# swissroll ---------------------------------------------------------------------------
_SR_SCALE, _SR_STD = 0.2, 0.2


def _swissroll_sample(n: int, generator: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
    t = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, generator=generator, dtype=dtype))
    noise = torch.randn(n, 2, generator=generator, dtype=dtype)
    return _SR_SCALE * torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) + _SR_STD * noise


_SETS = (
    Toy2D(
        "25gaussians", (-4.0, 4.0), (0.0, 0.0), 2 * (8.0 + _STD25**2 * _S25**2) / _S25**2,
        _unlabelled(_isotropic_mixture_labelled(_C25, _STD25)), lambda x: _isotropic_mixture_log_prob(x, _C25, _STD25),
        _labelled=_isotropic_mixture_labelled(_C25, _STD25), n_classes=25,
    ),
    Toy2D(
        "8gaussians", (-4.0, 4.0), (0.0, 0.0), _R8**2 + 2 * _STD8**2,
        _unlabelled(_isotropic_mixture_labelled(_C8, _STD8)), lambda x: _isotropic_mixture_log_prob(x, _C8, _STD8),
    ),
    Toy2D(
        "rings", (-4.0, 4.0), (0.0, 0.0), sum(r * r for r in _RING_RADII) / len(_RING_RADII) + 2 * _RING_STD**2,
        _rings_sample, _rings_log_prob,
    ),
    Toy2D("checkerboard", (-4.0, 4.0), (0.0, 0.0), 2 * (5.0 + 1.0 / 3.0), _checkerboard_sample, _checkerboard_log_prob),
    Toy2D(
        "pinwheel", (-4.0, 4.0), (0.0, 0.0), _PW_SCALE**2 * (1.0 + _PW_RADIAL**2 + _PW_TANGENTIAL**2),
        _unlabelled(_pinwheel_labelled), _labelled=_pinwheel_labelled, n_classes=_PW_ARMS,
    ),
    # E θ² = (3π)²·E[u] = 4.5π², so E|x|² = 4.5π²/9 + 2·0.1².
    Toy2D("2spirals", (-4.0, 4.0), (0.0, 0.0), 0.5 * math.pi**2 + 2 * _SP_STD**2, _spirals_sample),
    # E(cos φ − ½)² = ¾ and E(sin φ − ¼)² = 9/16 − 1/π for φ ~ U(0, π).
    Toy2D(
        "moons", (-4.0, 4.0), (0.0, 0.0), _MOON_SCALE**2 * (0.75 + 9.0 / 16.0 - 1.0 / math.pi) + 2 * _MOON_STD**2,
        _unlabelled(_moons_labelled), _labelled=_moons_labelled, n_classes=2,
    ),
    # t ~ U(1.5π, 4.5π): E[t cos t] = 2, E[t sin t] = 2/(3π), E t² = 9.75π².
    Toy2D(
        "swissroll", (-4.0, 4.0), (_SR_SCALE * 2.0, _SR_SCALE * 2.0 / (3.0 * math.pi)),
        _SR_SCALE**2 * 9.75 * math.pi**2 + 2 * _SR_STD**2, _swissroll_sample,
    ),
)

NAMES: tuple[str, ...] = tuple(s.name for s in _SETS)
_REGISTRY: dict[str, Toy2D] = {s.name: s for s in _SETS}
LABELLED: tuple[str, ...] = tuple(s.name for s in _SETS if s.has_labels)
"""The sets whose points carry the component they came from (:meth:`Toy2D.sample_labelled`): the
25 Gaussians labelled by mode, the pinwheel by arm, the moons by moon."""


def get(name: str) -> Toy2D:
    """The 2-D data set called ``name`` (one of :data:`NAMES`).

    Parameterisations (all data lie essentially inside [−4, 4]², ``bounds`` = (−4, 4)):

    - ``25gaussians`` (the authors'): equal-weight mixture of N(c/1.414, (0.2/1.414)²·I) for
      c ∈ {−4,−2,0,2,4}²; exact ``log_prob``.
    - ``8gaussians``: equal-weight mixture of N(c_k, σ²I), c_k = 2√2·(cos kπ/4, sin kπ/4),
      σ = 1/(2√2); exact ``log_prob``; about 2·10⁻⁴ of the mass lies outside [−4, 4]².
    - ``rings``: x = R·(cos α, sin α) + 0.08·ε with R uniform on {0.75, 1.5, 2.25, 3.0},
      α ~ U(0, 2π), ε ~ N(0, I); exact ``log_prob``
      (1/4)·Σ_R exp(−(r − R)²/2σ²)·i0e(rR/σ²)/(2πσ²), r = |x|.
    - ``checkerboard``: uniform on the 8 cells [−4+2i, −2+2i]×[−4+2j, −2+2j] with i + j even
      (density 1/32 on the closed cells, −inf elsewhere); E[x₁x₂] = 1.
    - ``pinwheel``: 5 arms; (a, b) = (1 + 0.3 z₁, 0.1 z₂), rotated by 2πk/5 + 0.25·eᵃ, scaled
      by 2; no closed-form density.
    - ``2spirals``: ±(−θ cos θ, θ sin θ)/3 + 0.1·ε with θ = 3π√u, u ~ U(0, 1); no
      closed-form density.
    - ``moons``: ±2·(cos φ − ½, sin φ − ¼) + 0.1·ε, φ ~ U(0, π) (two interleaved half circles,
      centred); no closed-form density.
    - ``swissroll``: 0.2·(t cos t, t sin t) + 0.2·ε, t ~ U(1.5π, 4.5π); mean (0.4, 0.4/(3π));
      no closed-form density.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"name must be one of {list(NAMES)}, got {name!r}")
    return _REGISTRY[name]
