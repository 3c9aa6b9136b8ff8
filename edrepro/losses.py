"""Training losses for energy-based models p(x) ∝ exp(−E(x)).

An *energy* is any callable mapping a (B, d) tensor to a (B,) tensor (a trailing
(B, 1) is accepted). Every loss returns a scalar tensor to be minimised, draws its
noise through the optional ``generator`` (None → global RNG), and is differentiable
with respect to the energy's parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import _checks
from .samplers import ReplayBuffer, langevin

Energy = Callable[[torch.Tensor], torch.Tensor]


def _energies(energy: Energy, x: torch.Tensor) -> torch.Tensor:
    return _checks.energy_output("energy", energy(x), x.shape[0])


def _randn(shape: tuple[int, ...], x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)


def _grad(out: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
    """∂out/∂inp with create_graph=True; zeros where ``out`` does not depend on ``inp``."""
    if not out.requires_grad:
        return torch.zeros_like(inp)
    return torch.autograd.grad(out, inp, create_graph=True, allow_unused=True, materialize_grads=True)[0]


def _stabilised_ed(e_pos: torch.Tensor, e_neg: torch.Tensor, w: float) -> torch.Tensor:
    """mean_i log( w/M + (1/M) Σ_j exp(e_pos_i − e_neg_ij) ) via logsumexp; e_neg is (B, M)."""
    n, m = e_neg.shape
    logits = e_pos[:, None] - e_neg
    if w > 0:  # w/M = exp(log w)/M: one extra logit, then the common −log M
        logits = torch.cat([logits, logits.new_full((n, 1), math.log(w))], dim=1)
    return (torch.logsumexp(logits, dim=1) - math.log(m)).mean()


def energy_discrepancy(
    energy: Energy,
    x: torch.Tensor,
    t: float,
    m_particles: int = 4,
    w: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gaussian energy discrepancy, w-stabilised Monte-Carlo estimator (Schröder et al. 2023, Sec. 4).

    y_i = x_i + √t·ξ_i and x'_ij = y_i + √t·ξ'_ij (j = 1..M), ξ, ξ' ~ N(0, I): ``t`` is the
    *variance* of each step, and ξ_i is shared by the M negatives of x_i. Returns

        mean_i log( w/M + (1/M) Σ_j exp(E(x_i) − E(x'_ij)) ),

    computed with logsumexp; w = 0 is the unstabilised estimator. This is the paper's
    value; the authors' code logs logsumexp_j without the −log M, i.e. this + log M
    (identical gradients). All B(M+1) energies are evaluated in one batched call.
    """
    x = _checks.batch("x", x)
    t = _checks.positive("t", t)
    m = _checks.positive_int("m_particles", m_particles)
    w = _checks.non_negative("w", w)
    n, d = x.shape
    s = math.sqrt(t)
    y = x + s * _randn((n, d), x, generator)
    neg = y[:, None, :] + s * _randn((n, m, d), x, generator)
    e = _energies(energy, torch.cat([x, neg.reshape(n * m, d)]))
    return _stabilised_ed(e[:n], e[n:].view(n, m), w)


def bernoulli_energy_discrepancy(
    energy: Energy,
    x: torch.Tensor,
    eps: float,
    m_particles: int = 32,
    w: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Energy discrepancy for binary data with Bernoulli flip noise (Schröder et al. 2023, arXiv 2307.07595).

    For x ∈ {0,1}^d: y = x ⊕ b, b ~ Bernoulli(ε)^d, and x'_j = y ⊕ b'_j (⊕ = XOR, ε = flip
    probability). The flip kernel is symmetric, so the same stabilised estimate applies:
    mean_i log( w/M + (1/M) Σ_j exp(E(x_i) − E(x'_ij)) ).
    """
    x = _checks.binary_batch("x", x)
    eps = _checks.open_unit("eps", eps)
    m = _checks.positive_int("m_particles", m_particles)
    w = _checks.non_negative("w", w)
    n, d = x.shape

    def flips(shape: tuple[int, ...]) -> torch.Tensor:
        return (torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype) < eps).to(x.dtype)

    y = (x - flips((n, d))).abs()  # |a − b| is XOR on {0, 1}
    neg = (y[:, None, :] - flips((n, m, d))).abs()
    e = _energies(energy, torch.cat([x, neg.reshape(n * m, d)]))
    return _stabilised_ed(e[:n], e[n:].view(n, m), w)


def score_matching(energy: Energy, x: torch.Tensor) -> torch.Tensor:
    """Exact Hyvärinen score matching (Hyvärinen 2005, Theorem 1, with log p = −E − log Z).

    Loss = mean_i [ ½|∇E(x_i)|² − tr ∇²E(x_i) ], with the exact Hessian trace. The batch is
    replicated d times; block k contributes the diagonal entry ∂²E/∂x_k², so two autograd
    calls give the whole trace (cost ≈ d forward/backward passes, no Python loop over d).
    Assumes rows are independent (no batch-coupling layers).
    """
    x = _checks.batch("x", x)
    n, d = x.shape
    with torch.enable_grad():
        xr = x.detach().repeat(d, 1).requires_grad_(True)
        g = _grad(_energies(energy, xr).sum(), xr)  # (d·n, d)
        block = torch.arange(d, device=x.device).repeat_interleave(n)[:, None]
        h = _grad(g.gather(1, block).sum(), xr)
        laplacian = h.gather(1, block).view(d, n).sum(0)
    return (0.5 * (g[:n] ** 2).sum(1) - laplacian).mean()


def denoising_score_matching(
    energy: Energy, x: torch.Tensor, sigma: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Denoising score matching (Vincent 2011): x̃ = x + σξ, loss = mean ½|−∇E(x̃) + ξ/σ|².

    By Stein's identity its expectation equals exact score matching of the σ-smoothed data
    plus the constant d/(2σ²): for a quadratic energy ½xᵀAx that is
    SM(data) + d/(2σ²) + ½σ² tr A², i.e. SM + d/(2σ²) + O(σ²).
    """
    x = _checks.batch("x", x)
    sigma = _checks.positive("sigma", sigma)
    xi = _randn(tuple(x.shape), x, generator)
    with torch.enable_grad():
        xt = (x.detach() + sigma * xi).requires_grad_(True)
        g = _grad(_energies(energy, xt).sum(), xt)
    return (0.5 * ((-g + xi / sigma) ** 2).sum(1)).mean()


def sliced_score_matching(
    energy: Energy, x: torch.Tensor, n_projections: int = 1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sliced score matching (Song et al. 2019) with Gaussian projections v ~ N(0, I).

    With s = −∇E: loss = mean over projections and batch of vᵀ(∇s)v + ½(vᵀs)²
    = −vᵀ∇²E v + ½(vᵀ∇E)²; its expectation over v is exact score matching. One
    Hessian-vector product per projection (all projections in one batch).
    """
    x = _checks.batch("x", x)
    k = _checks.positive_int("n_projections", n_projections)
    n, d = x.shape
    v = _randn((k * n, d), x, generator)
    with torch.enable_grad():
        xr = x.detach().repeat(k, 1).requires_grad_(True)
        g = _grad(_energies(energy, xr).sum(), xr)
        hv = _grad((g * v).sum(), xr)  # ∇²E v
    return (-(v * hv).sum(1) + 0.5 * (v * g).sum(1) ** 2).mean()


def contrastive_divergence(
    energy: Energy,
    x: torch.Tensor,
    n_steps: int = 10,
    step_size: float = 0.01,
    reg: float = 0.0,
    buffer: ReplayBuffer | None = None,
    reinit_frac: float = 0.05,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Contrastive divergence with short-run Langevin negatives (Hinton 2002; Du & Mordatch 2019).

    Negatives x⁻: ``n_steps`` of unadjusted Langevin x ← x − ε∇E(x) + √(2ε)ξ (see
    :func:`edrepro.samplers.langevin`), started from the data batch, or — with ``buffer`` —
    persistent CD: chains start from ``buffer.sample(B, reinit_frac)`` and their ends are
    pushed back. Negatives are detached. Loss

        mean E(x⁺) − mean E(x⁻) + reg · mean(E(x⁺)² + E(x⁻)²).

    The authors' 2-D setting is 10 data-initialised steps "of size 0.01" with reg=0.3; their update
    x ← x − ½·0.01·∇E + √0.01·ξ is ``step_size=0.005`` in the convention above, which is what
    :mod:`edrepro.density` uses.
    """
    x = _checks.batch("x", x)
    n_steps = _checks.positive_int("n_steps", n_steps)
    step_size = _checks.positive("step_size", step_size)
    reg = _checks.non_negative("reg", reg)
    reinit_frac = _checks.unit_interval("reinit_frac", reinit_frac)
    if buffer is not None and not isinstance(buffer, ReplayBuffer):
        raise ValueError(f"buffer must be a samplers.ReplayBuffer or None, got {type(buffer).__name__}")
    n = x.shape[0]
    if buffer is None:
        x0, idx = x.detach(), None
    else:
        x0, idx = buffer.sample(n, reinit_frac, generator)
        x0 = _checks.batch("buffer sample", x0, dim=x.shape[1]).to(x)
    x_neg = langevin(energy, x0, n_steps, step_size, generator=generator)
    if buffer is not None:
        buffer.push(x_neg, idx)
    e = _energies(energy, torch.cat([x, x_neg]))
    e_pos, e_neg = e[:n], e[n:]
    return e_pos.mean() - e_neg.mean() + reg * (e_pos**2 + e_neg**2).mean()


def _gaussian_params(mean: torch.Tensor, cov: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = x.shape[1]
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device)
    cov = torch.as_tensor(cov, dtype=x.dtype, device=x.device)
    if mean.shape != (d,) or not torch.isfinite(mean).all():
        raise ValueError(f"noise_mean must be a finite ({d},) tensor, got shape {tuple(mean.shape)}")
    if cov.shape != (d, d) or not torch.isfinite(cov).all():
        raise ValueError(f"noise_cov must be a finite ({d}, {d}) tensor, got shape {tuple(cov.shape)}")
    chol, info = torch.linalg.cholesky_ex(cov)
    if info != 0 or not torch.allclose(cov, cov.T):
        raise ValueError("noise_cov must be symmetric positive definite")
    return mean, chol


def noise_contrastive_estimation(
    energy: Energy,
    x: torch.Tensor,
    log_normaliser: torch.Tensor | float,
    noise_mean: torch.Tensor,
    noise_cov: torch.Tensor,
    noise_ratio: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Noise-contrastive estimation (Gutmann & Hyvärinen 2010, 2012).

    Model log p_m(u) = −E(u) − c with c = ``log_normaliser`` (a learnable scalar the caller
    owns); noise p_n = N(noise_mean, noise_cov), ν = ``noise_ratio`` noise samples per data
    point. With G(u) = log p_m(u) − log p_n(u) − log ν the loss is the logistic regression

        −[ mean_data log σ(G(x)) + ν · mean_noise log σ(−G(y)) ].
    """
    x = _checks.batch("x", x)
    nu = _checks.positive_int("noise_ratio", noise_ratio)
    if isinstance(log_normaliser, torch.Tensor):
        if log_normaliser.numel() != 1 or not torch.isfinite(log_normaliser).all():
            raise ValueError(f"log_normaliser must be a finite scalar, got tensor of shape {tuple(log_normaliser.shape)}")
        log_normaliser = log_normaliser.reshape(())
    elif isinstance(log_normaliser, bool) or not isinstance(log_normaliser, (int, float)) or not math.isfinite(log_normaliser):
        raise ValueError(f"log_normaliser must be a finite scalar, got {log_normaliser!r}")
    mean, chol = _gaussian_params(noise_mean, noise_cov, x)
    n, d = x.shape
    y = mean + _randn((nu * n, d), x, generator) @ chol.T
    u = torch.cat([x, y])
    z = torch.linalg.solve_triangular(chol, (u - mean).T, upper=False).T
    log_pn = -0.5 * (z**2).sum(1) - torch.log(torch.diagonal(chol)).sum() - 0.5 * d * math.log(2 * math.pi)
    g = -_energies(energy, u) - log_normaliser - log_pn - math.log(nu)
    return -(F.logsigmoid(g[:n]).mean() + nu * F.logsigmoid(-g[n:]).mean())


def fit_gaussian_noise(x: torch.Tensor, inflation: float = 1.2) -> tuple[torch.Tensor, torch.Tensor]:
    """NCE noise fitted to data: (sample mean, inflation · sample covariance + 1e-6·I).

    The covariance is inflated by 20 % (≈ 10 % in standard deviation) so that the noise
    covers the data's tails: NCE's variance grows with p_data/p_noise, which is unbounded
    where the noise is narrower than the data, while noise much wider than the data makes
    the classification too easy. The 1e-6·I jitter keeps it positive definite for data on
    a subspace.
    """
    x = _checks.batch("x", x)
    inflation = _checks.positive("inflation", inflation)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"x needs at least 2 rows to estimate a covariance, got shape {tuple(x.shape)}")
    x = x.detach()
    cov = torch.cov(x.T).reshape(d, d)
    return x.mean(0), inflation * cov + 1e-6 * torch.eye(d, dtype=x.dtype, device=x.device)
