"""Gradient-based MCMC samplers for energies, and a replay buffer for persistent chains.

An *energy* is any callable mapping a (B, d) tensor to a (B,) tensor (a trailing
(B, 1) is accepted); the target density is p(x) ∝ exp(−E(x)). Every sampler runs B
independent chains in parallel, draws all noise through the optional ``generator``
(None → global RNG), differentiates only with respect to the state (so model
parameters' ``.grad`` is never touched) and returns detached tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from . import _checks

Energy = Callable[[torch.Tensor], torch.Tensor]


def _energy_and_grad(energy: Energy, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (E(x), ∇ₓE(x)), both detached; gradients are taken w.r.t. ``x`` only."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = _checks.energy_output("energy", energy(x), x.shape[0])
        if not e.requires_grad:  # an energy that ignores x (e.g. a constant)
            return e.detach(), torch.zeros_like(x)
        (g,) = torch.autograd.grad(e.sum(), x, allow_unused=True, materialize_grads=True)
    return e.detach(), g


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _check_finite(name: str, x: torch.Tensor, step: int, n_steps: int) -> None:
    if not torch.isfinite(x).all():
        raise FloatingPointError(
            f"{name}: the state became non-finite at step {step + 1} of {n_steps}; "
            "reduce step_size or check the energy"
        )


def _validate(x0: torch.Tensor, n_steps: int, step_size: float) -> tuple[torch.Tensor, int, float]:
    x0 = _checks.batch("x0", x0)
    return x0.detach().clone(), _checks.positive_int("n_steps", n_steps), _checks.positive("step_size", step_size)


def langevin(
    energy: Energy,
    x0: torch.Tensor,
    n_steps: int,
    step_size: float,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Unadjusted Langevin algorithm: x ← x − ε∇E(x) + √(2ε)·ξ, ξ ~ N(0, I).

    ε = ``step_size`` is the Euler–Maruyama time step of dx = −∇E dt + √2 dW, whose
    stationary law is exp(−E). Without a Metropolis correction the chain is biased by
    O(ε) (for a Gaussian with precision eigenvalue λ the stationary variance is
    1/(λ(1 − ελ/2))). Raises ``FloatingPointError`` naming the step if the state
    becomes non-finite.
    """
    x, n_steps, eps = _validate(x0, n_steps, step_size)
    noise_scale = math.sqrt(2.0 * eps)
    for step in tqdm(range(n_steps), desc="langevin", disable=not progress):
        _, g = _energy_and_grad(energy, x)
        x = x - eps * g + noise_scale * _noise(x, generator)
        _check_finite("langevin", x, step, n_steps)
    return x


def mala(
    energy: Energy,
    x0: torch.Tensor,
    n_steps: int,
    step_size: float,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, float]:
    """Metropolis-adjusted Langevin (Roberts & Tweedie 1996).

    Proposal x' = x − ε∇E(x) + √(2ε)ξ, i.e. q(x'|x) = N(x − ε∇E(x), 2εI); accepted per
    chain with probability min(1, exp(E(x) − E(x') + log q(x|x') − log q(x'|x))), so the
    chain targets exp(−E) exactly for any ε. Returns (samples, acceptance rate averaged
    over chains and steps).
    """
    x, n_steps, eps = _validate(x0, n_steps, step_size)
    e, g = _energy_and_grad(energy, x)
    accepted = 0.0
    for step in tqdm(range(n_steps), desc="mala", disable=not progress):
        xp = x - eps * g + math.sqrt(2.0 * eps) * _noise(x, generator)
        ep, gp = _energy_and_grad(energy, xp)
        log_q_fwd = -((xp - x + eps * g) ** 2).sum(1) / (4.0 * eps)
        log_q_bwd = -((x - xp + eps * gp) ** 2).sum(1) / (4.0 * eps)
        log_alpha = e - ep + log_q_bwd - log_q_fwd
        u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        # NaN log_alpha (a diverged proposal) compares False, i.e. is rejected
        accept = torch.log(u) < log_alpha
        x = torch.where(accept[:, None], xp, x)
        e = torch.where(accept, ep, e)
        g = torch.where(accept[:, None], gp, g)
        accepted += accept.float().mean().item()
        _check_finite("mala", x, step, n_steps)
    return x, accepted / n_steps


def hmc(
    energy: Energy,
    x0: torch.Tensor,
    n_steps: int,
    step_size: float,
    n_leapfrog: int = 10,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, float]:
    """Hamiltonian Monte Carlo (Duane et al. 1987; Neal 2011) with unit mass.

    Each step draws p ~ N(0, I), runs ``n_leapfrog`` leapfrog steps of size ε on
    H(x, p) = E(x) + ½|p|² and accepts per chain with probability min(1, exp(H₀ − H₁)).
    Returns (samples, acceptance rate averaged over chains and steps).
    """
    x, n_steps, eps = _validate(x0, n_steps, step_size)
    n_leapfrog = _checks.positive_int("n_leapfrog", n_leapfrog)
    e, g = _energy_and_grad(energy, x)
    accepted = 0.0
    for step in tqdm(range(n_steps), desc="hmc", disable=not progress):
        p = _noise(x, generator)
        h0 = e + 0.5 * (p**2).sum(1)
        xn, pn = x, p - 0.5 * eps * g
        for k in range(n_leapfrog):
            xn = xn + eps * pn
            en, gn = _energy_and_grad(energy, xn)
            pn = pn - (eps if k < n_leapfrog - 1 else 0.5 * eps) * gn
        h1 = en + 0.5 * (pn**2).sum(1)
        u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        accept = torch.log(u) < h0 - h1  # NaN (diverged trajectory) → rejected
        x = torch.where(accept[:, None], xn, x)
        e = torch.where(accept, en, e)
        g = torch.where(accept[:, None], gn, g)
        accepted += accept.float().mean().item()
        _check_finite("hmc", x, step, n_steps)
    return x, accepted / n_steps


class ReplayBuffer:
    """Fixed-size store of persistent chain states for persistent contrastive divergence.

    Persistent CD (Tieleman 2008) continues the negative chains across parameter updates;
    re-initialising a small fraction from a simple distribution keeps the buffer diverse
    (Du & Mordatch 2019 use 5 %). ``init_fn(n, generator)`` must return an (n, d) tensor;
    it fills the buffer at construction and supplies the re-initialised rows.

    Usage: ``x, idx = buf.sample(n)``, run the chains from ``x``, then ``buf.push(x_end, idx)``.
    """

    def __init__(
        self,
        capacity: int,
        init_fn: Callable[[int, torch.Generator | None], torch.Tensor],
        generator: torch.Generator | None = None,
    ) -> None:
        self.capacity = _checks.positive_int("capacity", capacity)
        if not callable(init_fn):
            raise ValueError(f"init_fn must be callable, got {type(init_fn).__name__}")
        self.init_fn = init_fn
        self.data = self._fresh(capacity, generator, dim=None)

    def _fresh(self, n: int, generator: torch.Generator | None, dim: int | None) -> torch.Tensor:
        x = _checks.batch("init_fn output", self.init_fn(n, generator))
        d = x.shape[1] if dim is None else dim
        if x.shape != (n, d):
            raise ValueError(f"init_fn({n}, generator) must return shape ({n}, {d}), got {tuple(x.shape)}")
        return x.detach()

    def sample(
        self, n: int, reinit_frac: float = 0.05, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` distinct stored states; the first round(reinit_frac·n) rows are fresh from init_fn.

        Returns (x, idx): x is a copy, idx the (n,) buffer slots that ``push`` writes back to.
        Sampling without replacement makes ``push`` unambiguous (no slot written twice).
        """
        n = _checks.positive_int("n", n)
        if n > self.capacity:
            raise ValueError(f"n must be <= capacity={self.capacity}, got {n}")
        reinit_frac = _checks.unit_interval("reinit_frac", reinit_frac)
        idx = torch.randperm(self.capacity, generator=generator)[:n]
        x = self.data[idx.to(self.data.device)].clone()
        k = round(reinit_frac * n)
        if k > 0:
            x[:k] = self._fresh(k, generator, dim=self.data.shape[1]).to(x)
        return x, idx

    def push(self, x: torch.Tensor, idx: torch.Tensor) -> None:
        """Store the chain states ``x`` (len(idx), d) in the slots ``idx`` returned by ``sample``."""
        if not isinstance(idx, torch.Tensor) or idx.ndim != 1 or idx.dtype != torch.long:
            raise ValueError(f"idx must be a 1-D LongTensor, got {idx!r}")
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.capacity):
            raise ValueError(f"idx entries must lie in [0, {self.capacity}), got range [{idx.min()}, {idx.max()}]")
        x = _checks.batch("x", x, dim=self.data.shape[1])
        if x.shape[0] != idx.shape[0]:
            raise ValueError(f"x must have len(idx)={idx.shape[0]} rows, got shape {tuple(x.shape)}")
        self.data[idx.to(self.data.device)] = x.detach().to(self.data)

    def __len__(self) -> int:
        return self.capacity
