"""Training losses for energy-based models p(x) ∝ exp(−E(x)).

An *energy* is any callable mapping a (B, d) tensor to a (B,) tensor (a trailing
(B, 1) is accepted). Every loss returns a scalar tensor to be minimised, draws its
noise through the optional ``generator`` (None → global RNG), and is differentiable
with respect to the energy's parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from . import _checks, nets
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
    w = _checks.non_negative("w", w)
    neg = gaussian_negatives(x, t, m_particles, generator)
    n, m, d = neg.shape
    e = _energies(energy, torch.cat([x, neg.reshape(n * m, d)]))
    return _stabilised_ed(e[:n], e[n:].view(n, m), w)


def gaussian_negatives(x: torch.Tensor, t: float, m_particles: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The (B, M, d) negatives of Gaussian ED: x'_ij = y_i + √t·ξ'_ij with y_i = x_i + √t·ξ_i (Sec. 4).

    ξ (B, d) is drawn before ξ' (B, M, d), from ``generator``; ``t`` is the variance of each step.
    """
    x = _checks.batch("x", x)
    t = _checks.positive("t", t)
    m = _checks.positive_int("m_particles", m_particles)
    n, d = x.shape
    s = math.sqrt(t)
    y = x + s * _randn((n, d), x, generator)
    return y[:, None, :] + s * _randn((n, m, d), x, generator)


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


# Activations whose σ' and σ'' _activation_derivatives knows: every one nets.MLP offers.
_LAPLACIAN_ACTIVATIONS = (torch.nn.Softplus, torch.nn.SiLU, torch.nn.ReLU, torch.nn.LeakyReLU, torch.nn.ELU)


def _mlp_layers(energy: Energy, x: torch.Tensor) -> list[torch.nn.Module] | None:
    """The layers of ``energy`` when it is a plain one-output :class:`edrepro.nets.MLP` for x's width, else None."""
    if not isinstance(energy, nets.MLP) or type(energy).forward is not nets.MLP.forward:
        return None  # a subclass may compute something else than its layers
    if energy.out_dim != 1 or x.shape[1] != energy.in_dim:
        return None  # the MLP's own forward raises the error for a wrong width
    layers = list(energy.net)
    linear_ok = all(type(m) is torch.nn.Linear for m in layers[0::2])
    act_ok = all(type(m) in _LAPLACIAN_ACTIVATIONS for m in layers[1::2])
    return layers if linear_ok and act_ok and len(layers) % 2 == 1 else None


def _activation_derivatives(
    act: torch.nn.Module, h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(σ(h), σ'(h), σ''(h)) for σ in _LAPLACIAN_ACTIVATIONS; σ'' is None where it vanishes (piecewise linear σ).

    The derivatives agree with autograd's on each side of a kink (ReLU-type at h = 0 takes the
    left-hand value, as autograd does). Softplus: σ' = sigmoid(βh), σ'' = β·σ'(1 − σ'); where
    βh > threshold torch's Softplus is the identity, whose (1, 0) these miss by < β·e^(−threshold).
    """
    if isinstance(act, torch.nn.Softplus):
        b = act.beta
        s = torch.sigmoid(h if b == 1 else b * h)
        return act(h), s, s - s * s if b == 1 else b * (s - s * s)
    if isinstance(act, torch.nn.SiLU):  # σ = h·s, s = sigmoid(h)
        s = torch.sigmoid(h)
        return act(h), s * (1 + h * (1 - s)), (s - s * s) * (2 + h * (1 - 2 * s))
    pos = (h > 0).to(h.dtype)
    if isinstance(act, torch.nn.ELU):  # α(eʰ − 1) for h ≤ 0
        neg = (1 - pos) * act.alpha * torch.exp(h.clamp(max=0))
        return act(h), pos + neg, neg
    slope = act.negative_slope if isinstance(act, torch.nn.LeakyReLU) else 0.0
    return act(h), pos if slope == 0 else slope + (1 - slope) * pos, None


def _forward_laplacian(layers: list[torch.nn.Module], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇E, ΔE) of the MLP E = ``layers`` at x, both exact, in one forward sweep (Li et al. 2023, "forward Laplacian").

    Each pre-activation h carries its value, its Jacobian J_k = ∂h/∂x_k (k = 1..d) and its
    Laplacian Δh = Σ_k ∂²h/∂x_k². A linear layer maps all three (bias on h only); an elementwise
    σ gives ∂σ(h)/∂x_k = σ'(h)·J_k and Δσ(h) = σ'(h)·Δh + σ''(h)·Σ_k J_k². Cost ≈ d + 2 forward
    passes and an ordinary graph for the parameter gradient: no double backward through E.
    """
    first = layers[0]
    h = F.linear(x, first.weight, first.bias)
    jac = first.weight.T[:, None, :]  # (d, 1, w): ∂h/∂x_k is the same for every row
    lap = None  # Δh = 0 after an affine map of x; None skips adding zeros
    for act, lin in zip(layers[1::2], layers[2::2]):
        a, d1, d2 = _activation_derivatives(act, h)
        lap_a = None if d2 is None else d2 * (jac * jac).sum(0)
        if lap is not None:
            lap_a = d1 * lap if lap_a is None else lap_a + d1 * lap
        h = F.linear(a, lin.weight, lin.bias)
        jac = (d1 * jac) @ lin.weight.T
        lap = None if lap_a is None else lap_a @ lin.weight.T
    n, d = x.shape
    grad = jac[..., 0].T.expand(n, d)  # (d, n, 1) → (n, d); a net with no hidden layer has n = 1 here
    return grad, lap[:, 0] if lap is not None else x.new_zeros(n)


def _hessian_trace_by_rows(energy: Energy, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇E, tr ∇²E) of any energy: one first-order graph, then d Hessian-vector products with the unit vectors."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        g = _grad(_energies(energy, xg).sum(), xg)
        trace = torch.zeros_like(g[:, 0])
        for k in range(x.shape[1]):  # row k of ∇²E for all samples at once: ∂(Σ_i ∂_k E(x_i))/∂x
            trace = trace + _grad(g[:, k].sum(), xg)[:, k]
    return g, trace


def score_matching(energy: Energy, x: torch.Tensor) -> torch.Tensor:
    """Exact Hyvärinen score matching (Hyvärinen 2005, Theorem 1, with log p = −E − log Z).

    With the model score ψ = −∇E, Theorem 1's objective Σ_k [∂_k ψ_k + ½ψ_k²] averaged over the
    sample (its sample version) is

        loss = mean_i [ ½|∇E(x_i)|² − tr ∇²E(x_i) ],

    with the exact Hessian trace (Laplacian) ΔE = Σ_k ∂²E/∂x_k². How it is computed, the fastest
    exact method measured per training step (benchmarks/loss_speed.py; toy net, batch 128, CPU):

    - ``energy`` a one-output :class:`edrepro.nets.MLP` (any of its activations): the forward
      Laplacian, propagating (h, ∂h/∂x, Δh) through the layers, ≈ d + 2 forward passes with no
      autograd w.r.t. x; 1.5× the authors' loop per step at d = 1, 1.9× at d = 2, 3.5× at d ≥ 20;
    - any other energy, any d: one first-order graph ∇E, then d Hessian-vector products with the
      unit vectors e_k, keeping entry k of product k (the authors' method). Replicating the
      batch d times was slower at every d ≤ 50; batching the d products (``is_grads_batched``)
      was on par at d = 5–10 and slower at d ≤ 2 and d ≥ 20; torch.func vmap/jvp (forward over
      reverse) was about 2× slower at d = 2.

    The forward Laplacian keeps (d, B, width) Jacobians per layer: memory grows like d·B·width.

    Assumes rows are independent (no batch-coupling layers).
    """
    g, trace = gradient_and_laplacian(energy, x)
    return (0.5 * (g**2).sum(1) - trace).mean()


def gradient_and_laplacian(energy: Energy, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇E(x_i), ΔE(x_i)) for every row x_i, both exact, by the fastest exact method (see :func:`score_matching`).

    ΔE = Σ_k ∂²E/∂x_k² is the Hessian trace. A one-output :class:`edrepro.nets.MLP` takes the forward
    Laplacian (Li et al. 2023), any other energy d Hessian-vector products. The results keep the
    graph to the energy's parameters, so a loss built from them can be differentiated for training.
    """
    x = _checks.batch("x", x)
    layers = _mlp_layers(energy, x)
    if layers is not None:
        return _forward_laplacian(layers, x.detach())
    return _hessian_trace_by_rows(energy, x)


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
    :mod:`edrepro.chapters.density` uses.
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
    return _contrast(energy, x, x_neg, reg)


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


# ---------------------------------------------------------------------------------------------
# The contrastive term, and losses bound by name to the training loop's (model, x, generator) shape
# ---------------------------------------------------------------------------------------------


def energy_gap(e_pos: torch.Tensor, e_neg: torch.Tensor, reg: float = 0.0) -> torch.Tensor:
    """The contrastive-divergence objective on energies of data and of negatives:

        mean E(x⁺) − mean E(x⁻) + reg · mean(E(x⁺)² + E(x⁻)²)

    (Hinton 2002; the penalty is Du & Mordatch 2019's). Its gradient is the (short-run) estimate of
    the log-likelihood gradient, E_data[∇E] − E_model[∇E]. ``e_pos`` and ``e_neg`` are 1-D tensors
    (persistent chains may be more or fewer than the data points; with a penalty they must pair
    up); the penalty is left out when ``reg`` is 0.
    """
    if not isinstance(e_pos, torch.Tensor) or not isinstance(e_neg, torch.Tensor) or e_pos.ndim != 1 or e_neg.ndim != 1:
        raise ValueError(f"e_pos and e_neg must be 1-D tensors of energies, got {getattr(e_pos, 'shape', e_pos)} and {getattr(e_neg, 'shape', e_neg)}")
    reg = _checks.non_negative("reg", reg)
    if reg > 0 and e_pos.shape != e_neg.shape:
        raise ValueError(f"with reg > 0, e_pos and e_neg must have the same shape, got {tuple(e_pos.shape)} and {tuple(e_neg.shape)}")
    gap = e_pos.mean() - e_neg.mean()
    return gap + reg * (e_pos**2 + e_neg**2).mean() if reg > 0 else gap


LossFn = Callable[[torch.nn.Module, torch.Tensor, "torch.Generator | None"], torch.Tensor]
Sampler = Callable[[torch.nn.Module, torch.Tensor, "torch.Generator | None"], torch.Tensor]

BINDABLE = ("ed", "ed_bernoulli", "sm", "ssm", "dsm", "cd", "pcd", "nce")
"""The loss names :func:`bind` knows."""


def _contrast(model: torch.nn.Module, x: torch.Tensor, x_neg: torch.Tensor, reg: float) -> torch.Tensor:
    e = _energies(model, torch.cat([x, x_neg]))
    return energy_gap(e[: x.shape[0]], e[x.shape[0]:], reg)


def _persistent(sampler: Sampler, reg: float) -> LossFn:
    """PCD where every persistent chain (``model.chains``) advances by ``sampler`` at every update."""

    def loss(model: torch.nn.Module, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        chains = _chains_of(model)
        x_neg = sampler(model.inner, chains, g)
        chains.copy_(x_neg)
        return _contrast(model, x, x_neg, reg)

    return loss


def _chains_of(model: torch.nn.Module) -> torch.Tensor:
    chains = getattr(model, "chains", None)
    if not isinstance(chains, torch.Tensor):
        raise ValueError(f"persistent CD needs a model with persistent chains (edrepro.nets.WithChains), got {type(model).__name__}")
    return chains


def _replay_pcd(n_steps: int, step_size: float, reg: float, reinit_frac: float, box: float) -> LossFn:
    """PCD on a replay buffer over ``model.chains``: B chains drawn per update, a fraction restarted uniformly on [−box, box]^d."""
    from .samplers import uniform_box

    def loss(model: torch.nn.Module, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        chains = _chains_of(model)
        buffer = ReplayBuffer.view(chains, lambda n, gen: uniform_box(n, chains.shape[1], box, gen, chains))
        return contrastive_divergence(model, x, n_steps=n_steps, step_size=step_size, reg=reg, buffer=buffer, reinit_frac=reinit_frac, generator=g)

    return loss


def bind(name: str, *, sampler: Sampler | None = None, **hparams: Any) -> LossFn:
    """The loss ``name`` with its hyperparameters bound, as the ``loss_fn(model, x, generator)`` of
    :func:`edrepro.book.train.train`; the one place where a loss is chosen by name.

    - ``ed``: :func:`energy_discrepancy` (``t``, ``m_particles``, ``w``);
    - ``ed_bernoulli``: :func:`bernoulli_energy_discrepancy` (``eps``, ``m_particles``, ``w``);
    - ``sm``, ``ssm`` (``n_projections``), ``dsm`` (``sigma``): the score-matching family;
    - ``cd``: :func:`energy_gap` with negatives from ``sampler(model, x, generator)`` started at the
      data, by default Langevin (:func:`contrastive_divergence`: ``n_steps``, ``step_size``), ``reg``;
    - ``pcd``: the model is a :class:`edrepro.nets.WithChains`. With a ``sampler``, every chain
      advances by ``sampler(inner_model, chains, generator)`` at each update; without, a replay
      buffer over the chains with Langevin (``n_steps``, ``step_size``, ``reinit_frac``, ``box``);
    - ``nce``: :func:`noise_contrastive_estimation` against N(``noise_mean``, ``noise_cov``),
      ``noise_ratio``; the energy's output bias plays the learned log-normaliser.

    Unknown names or hyperparameters raise ValueError naming them.
    """
    _checks.choice("name", name, BINDABLE)
    allowed = {
        "ed": {"t", "m_particles", "w"}, "ed_bernoulli": {"eps", "m_particles", "w"}, "sm": set(),
        "ssm": {"n_projections"}, "dsm": {"sigma"}, "cd": {"n_steps", "step_size", "reg"},
        "pcd": {"n_steps", "step_size", "reg", "reinit_frac", "box"}, "nce": {"noise_mean", "noise_cov", "noise_ratio"},
    }[name]
    unknown = sorted(set(hparams) - allowed)
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown} for loss {name!r}; it takes {sorted(allowed)}")
    if sampler is not None and name not in ("cd", "pcd"):
        raise ValueError(f"sampler is only used by 'cd' and 'pcd', not by {name!r}")
    hp = dict(hparams)
    if name == "ed":
        return lambda model, x, g: energy_discrepancy(model, x, generator=g, **hp)
    if name == "ed_bernoulli":
        return lambda model, x, g: bernoulli_energy_discrepancy(model, x, generator=g, **hp)
    if name == "sm":
        return lambda model, x, g: score_matching(model, x)
    if name == "ssm":
        return lambda model, x, g: sliced_score_matching(model, x, generator=g, **hp)
    if name == "dsm":
        return lambda model, x, g: denoising_score_matching(model, x, generator=g, **hp)
    if name == "nce":
        return lambda model, x, g: noise_contrastive_estimation(model, x, 0.0, generator=g, **hp)
    reg = _checks.non_negative("reg", hp.pop("reg", 0.0))
    if name == "cd":
        if sampler is None:
            return lambda model, x, g: contrastive_divergence(model, x, reg=reg, generator=g, **hp)
        return lambda model, x, g: _contrast(model, x, sampler(model, x.detach(), g), reg)
    if sampler is not None:
        return _persistent(sampler, reg)
    return _replay_pcd(hp["n_steps"], hp["step_size"], reg, hp.get("reinit_frac", 0.05), hp.get("box", 4.0))
