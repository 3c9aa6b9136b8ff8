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
from tqdm import tqdm  # plain text bars: notebooks here run without ipywidgets

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

    @classmethod
    def view(cls, chains: torch.Tensor, init_fn: Callable[[int, torch.Generator | None], torch.Tensor]) -> ReplayBuffer:
        """A buffer whose storage is the existing tensor ``chains`` (written in place by ``push``),
        e.g. the ``chains`` buffer of a :class:`edrepro.nets.WithChains` model, so the chains are
        saved and restored with the model."""
        if not callable(init_fn):
            raise ValueError(f"init_fn must be callable, got {type(init_fn).__name__}")
        buffer = cls.__new__(cls)
        buffer.capacity, buffer.init_fn, buffer.data = _checks.batch("chains", chains).shape[0], init_fn, chains
        return buffer

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


def uniform_box(n: int, d: int, box: float, generator: torch.Generator | None = None, like: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` points uniform on [−box, box]^d, drawn on the generator's device, returned on ``like``'s
    device and dtype (the start and restart distribution of persistent chains in 2-D)."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    u = torch.rand(n, d, generator=generator, device=gen_device, dtype=dtype)
    x = (2.0 * u - 1.0).mul_(_checks.positive("box", box))
    return x.to(like.device) if like is not None else x


# ---------------------------------------------------------------------------------------------
# Gibbs samplers for binary models (discrete ED chapter): Ising models on spins and RBMs.
# ---------------------------------------------------------------------------------------------


def _check_ising(coupling: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(coupling, torch.Tensor) or coupling.ndim != 2 or coupling.shape[0] != coupling.shape[1]:
        raise ValueError(f"coupling must be a square (D, D) tensor, got {_checks._show(coupling)}")
    if not coupling.is_floating_point() or not torch.isfinite(coupling).all():
        raise ValueError("coupling must be a finite floating-point tensor")
    if not torch.allclose(coupling, coupling.T) or coupling.diagonal().abs().max() > 0:
        raise ValueError("coupling must be symmetric with a zero diagonal")
    d = coupling.shape[0]
    if bias is None:
        bias = torch.zeros(d, dtype=coupling.dtype, device=coupling.device)
    elif not isinstance(bias, torch.Tensor) or bias.shape != (d,) or not torch.isfinite(bias).all():
        raise ValueError(f"bias must be a finite ({d},) tensor or None, got {_checks._show(bias)}")
    return coupling.detach(), bias.detach()


def interaction_colouring(coupling: torch.Tensor) -> list[torch.Tensor]:
    """Greedy colouring of the interaction graph {(i, j): J_ij ≠ 0}, sites visited in index order.

    Returns a list of LongTensors (the colour classes, together a partition of 0…D−1); no two
    sites of one class interact, so a whole class can be resampled at once given the rest. On a
    periodic lattice of even side this is the checkerboard (2 colours); an odd side needs 3.
    A dense J gives D classes of one site each (sequential Gibbs).
    """
    if not isinstance(coupling, torch.Tensor) or coupling.ndim != 2 or coupling.shape[0] != coupling.shape[1]:
        raise ValueError(f"coupling must be a square (D, D) tensor, got {_checks._show(coupling)}")
    nonzero = (coupling.detach().cpu() != 0).tolist()
    d = len(nonzero)
    colour = [-1] * d
    for i in range(d):
        used = {colour[j] for j in range(d) if j != i and nonzero[i][j] and colour[j] >= 0}
        colour[i] = next(c for c in range(d) if c not in used)
    n_colours = max(colour) + 1
    return [torch.tensor([i for i in range(d) if colour[i] == c], dtype=torch.long) for c in range(n_colours)]


def _gibbs_sweeps(coupling, s0, n_sweeps, bias, colouring, generator, progress, trace_fn):
    coupling, bias = _check_ising(coupling, bias)
    s = _checks.batch("s0", s0, dim=coupling.shape[0]).detach().clone()
    if not ((s == 1) | (s == -1)).all():
        raise ValueError("s0 must contain only -1 and +1 entries (spins)")
    n_sweeps = _checks.positive_int("n_sweeps", n_sweeps, minimum=0)
    d = coupling.shape[0]
    if colouring is None:
        groups = [torch.tensor([i]) for i in range(d)]
    else:
        groups = [torch.as_tensor(g, dtype=torch.long).reshape(-1) for g in colouring]
        flat = torch.cat(groups) if groups else torch.empty(0, dtype=torch.long)
        if flat.numel() != d or not torch.equal(flat.sort().values, torch.arange(d)):
            raise ValueError(f"colouring must partition the sites 0…{d - 1} (every site in exactly one class)")
        for g in groups:
            if (coupling[g][:, g] != 0).any():
                raise ValueError("colouring has a class with two interacting sites; it cannot be updated in one block")
    groups = [g.to(coupling.device) for g in groups]
    coupling, bias = coupling.to(s.dtype), bias.to(s.dtype)
    records = []
    with torch.no_grad():
        for sweep in tqdm(range(n_sweeps), desc="gibbs", disable=not progress):
            for g in groups:
                # log p(s_i=+1|rest) − log p(s_i=−1|rest) = 4 Σ_j J_ij s_j + 2 b_i (sᵀJs counts pairs twice)
                p_up = torch.sigmoid(4.0 * (s @ coupling[:, g]) + 2.0 * bias[g])
                u = torch.rand(p_up.shape, generator=generator, device=s.device, dtype=s.dtype)
                s[:, g] = torch.where(u < p_up, 1.0, -1.0).to(s.dtype)
            if trace_fn is not None:
                records.append(torch.as_tensor(trace_fn(s)).detach().clone())
    return s, records


def ising_gibbs(
    coupling: torch.Tensor,
    s0: torch.Tensor,
    n_sweeps: int,
    bias: torch.Tensor | None = None,
    colouring: list[torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Gibbs sampling of the Ising model p(s) ∝ exp(sᵀJs + bᵀs), s ∈ {−1, 1}^D, B chains in parallel.

    J (``coupling``) is symmetric with zero diagonal; sᵀJs counts each pair twice, so the
    conditional of one spin is p(s_i = +1 | s_−i) = sigmoid(4 Σ_j J_ij s_j + 2 b_i). One *sweep*
    resamples every site once, colour class by colour class: with a ``colouring`` (e.g.
    :func:`interaction_colouring`, the checkerboard of a lattice) all sites of a class are
    updated simultaneously, which is exact because they do not interact; without one, sites are
    updated one at a time in index order (systematic-scan Gibbs, valid for any J). ``s0`` (B, D)
    holds ±1; ``n_sweeps`` = 0 returns a copy. Returns the detached spins after ``n_sweeps``.
    """
    s, _ = _gibbs_sweeps(coupling, s0, n_sweeps, bias, colouring, generator, progress, None)
    return s


def ising_gibbs_trace(
    coupling: torch.Tensor,
    s0: torch.Tensor,
    n_sweeps: int,
    trace_fn: Callable[[torch.Tensor], torch.Tensor],
    bias: torch.Tensor | None = None,
    colouring: list[torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`ising_gibbs` that also records ``trace_fn(s)`` after every sweep (e.g. the magnetisation).

    Returns (spins after the last sweep, the records stacked along a new first axis of length n_sweeps).
    """
    if not callable(trace_fn):
        raise ValueError(f"trace_fn must be a callable (B, D) spins -> tensor, got {type(trace_fn).__name__}")
    s, records = _gibbs_sweeps(coupling, s0, n_sweeps, bias, colouring, generator, progress, trace_fn)
    if not records:
        raise ValueError("n_sweeps must be >= 1 to record a trace, got 0")
    return s, torch.stack(records)


def rbm_gibbs(
    rbm: torch.nn.Module,
    v0: torch.Tensor,
    n_steps: int,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block Gibbs sampling of an RBM (:class:`edrepro.nets.RBM`): h ~ p(h | v), then v ~ p(v | h).

    Runs ``n_steps`` such v → h → v steps from the binary ``v0`` (B, V), one chain per row; the
    conditionals factorise, so each block is sampled exactly in one vectorised draw. Returns
    (v after the last step, p(v = 1 | h) of the last step); the second is the usual smoother
    picture of a sample. Model parameters are not touched and the outputs are detached.
    """
    for attr in ("hidden_probs", "visible_probs", "n_visible"):
        if not hasattr(rbm, attr):
            raise ValueError(f"rbm must be an edrepro.nets.RBM (it has no {attr!r}), got {type(rbm).__name__}")
    v = _checks.binary_batch("v0", v0)
    v = _checks.batch("v0", v, dim=rbm.n_visible).detach().clone()
    n_steps = _checks.positive_int("n_steps", n_steps)
    with torch.no_grad():
        for _ in tqdm(range(n_steps), desc="rbm gibbs", disable=not progress):
            ph = rbm.hidden_probs(v)
            h = (torch.rand(ph.shape, generator=generator, device=v.device, dtype=ph.dtype) < ph).to(ph.dtype)
            pv = rbm.visible_probs(h)
            v = (torch.rand(pv.shape, generator=generator, device=v.device, dtype=pv.dtype) < pv).to(pv.dtype)
    return v, pv
