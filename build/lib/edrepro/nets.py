"""Energy networks and an exponential moving average of a model's parameters.

An energy is any callable mapping a (B, d) batch to (B,) energies; :class:`MLP` with
``out_dim == 1`` is one.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from . import _checks

ACTIVATIONS: tuple[str, ...] = ("softplus", "silu", "relu", "leaky_relu", "elu")


def _activation(name: str, negative_slope: float) -> nn.Module:
    if name == "softplus":
        return nn.Softplus()
    if name == "silu":
        return nn.SiLU()
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    return nn.ELU()


class MLP(nn.Module):
    """Fully connected network in_dim → hidden[0] → … → hidden[-1] → out_dim.

    Each hidden layer is ``Linear`` followed by the activation; the last layer is linear.
    With ``out_dim == 1`` the output is squeezed to shape (B,) so the network is an energy.
    ``negative_slope`` is used by ``leaky_relu`` only (PyTorch's default 0.01).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int = 1,
        activation: str = "softplus",
        negative_slope: float = 0.01,
    ):
        super().__init__()
        _checks.positive_int("in_dim", in_dim)
        _checks.positive_int("out_dim", out_dim)
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise ValueError(f"hidden must be a sequence of positive integers, got {hidden!r}")
        for i, h in enumerate(hidden):
            _checks.positive_int(f"hidden[{i}]", h)
        _checks.choice("activation", activation, ACTIVATIONS)
        _checks.positive("negative_slope", negative_slope)
        self.in_dim, self.out_dim = in_dim, out_dim
        widths = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), _activation(activation, negative_slope)]
        layers.append(nn.Linear(widths[-1], out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Only a cheap shape check: this is the hot path of every training step.
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x must have shape (B, {self.in_dim}), got shape {tuple(x.shape)}")
        out = self.net(x)
        return out.squeeze(1) if self.out_dim == 1 else out


def toy_energy_net(dim: int = 2) -> MLP:
    """The paper's toy energy: dim → 128 → 128 → 128 → 128 → 1 with Softplus (50 049 parameters for dim = 2)."""
    _checks.positive_int("dim", dim)
    return MLP(dim, (128, 128, 128, 128), 1, activation="softplus")


def tiny_silu_net() -> MLP:
    """The 13-parameter energy 1 → 2 → 2 → 1 with SiLU used for Figure 2 (w-stabilisation)."""
    return MLP(1, (2, 2), 1, activation="silu")


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model``."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters())


class EMA:
    r"""Exponential moving average of a model's parameters, θ̄ ← d·θ̄ + (1 − d)·θ.

    ``ema.model`` is a frozen deep copy of the model holding θ̄ (usable as an energy);
    buffers are copied, not averaged. The paper's toy experiments evaluate with d = 0.999.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.decay = _checks.unit_interval("decay", decay)
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self._shadow = [p for p in self.model.parameters()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """θ̄ ← d·θ̄ + (1 − d)·θ for every parameter; buffers are copied."""
        params = [p.detach() for p in model.parameters()]
        if len(params) != len(self._shadow) or any(p.shape != s.shape for p, s in zip(params, self._shadow)):
            raise ValueError("model must have the same parameter shapes as the model the EMA was built from")
        if params:
            # lerp(θ̄, θ, 1 − d) = θ̄ + (1 − d)(θ − θ̄) = d·θ̄ + (1 − d)·θ
            torch._foreach_lerp_(self._shadow, params, 1.0 - self.decay)
        for b_s, b in zip(self.model.buffers(), model.buffers()):
            b_s.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or "model" not in state or "decay" not in state:
            raise ValueError(f"state must be a dict with keys 'decay' and 'model', got {type(state).__name__}")
        self.decay = _checks.unit_interval("state['decay']", state["decay"])
        self.model.load_state_dict(state["model"])


class WithChains(nn.Module):
    """A model together with the states of its persistent Markov chains (persistent CD).

    The chains are a registered buffer, so they are saved, restored and moved with the model (a
    checkpointed run resumes bitwise; an EMA copy carries them along unused). ``forward`` is the
    model's; ``inner`` is the model itself.
    """

    def __init__(self, model: nn.Module, chains: torch.Tensor):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(chains, torch.Tensor) or chains.ndim != 2 or chains.shape[0] == 0:
            raise ValueError(f"chains must be a (N, d) tensor with N >= 1, got {getattr(chains, 'shape', type(chains).__name__)}")
        self.model = model
        self.register_buffer("chains", chains.detach().clone())

    @property
    def inner(self) -> nn.Module:
        return self.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a :class:`WithChains` (any other model is returned as it is)."""
    return model.model if isinstance(model, WithChains) else model


# ---------------------------------------------------------------------------------------------
# Binary models: Ising models and restricted Boltzmann machines (discrete ED chapter).
#
# Binary data are {0,1}^D float tensors throughout (the input of
# :func:`edrepro.losses.bernoulli_energy_discrepancy`); an Ising model's spins are s = 2x − 1.
# ---------------------------------------------------------------------------------------------


def lattice_adjacency(side: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Adjacency matrix A of the periodic ``side`` × ``side`` square lattice (a torus), shape (D, D), D = side².

    Site (r, c) has index r·side + c and the four neighbours (r±1 mod side, c) and (r, c±1 mod side):
    A is symmetric, 0/1, with zero diagonal and exactly 4 ones per row. ``side`` ≥ 3 (for side = 2
    the left and right neighbours coincide and a site would have only 2 distinct neighbours).
    """
    side = _checks.positive_int("side", side, minimum=3)
    d = side * side
    idx = torch.arange(d).view(side, side)
    a = torch.zeros(d, d, dtype=dtype)
    for shifted in (idx.roll(1, 0), idx.roll(-1, 0), idx.roll(1, 1), idx.roll(-1, 1)):
        a[idx.reshape(-1), shifted.reshape(-1)] = 1
    return a


def _check_coupling(name: str, coupling: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if not isinstance(coupling, torch.Tensor) or coupling.ndim != 2 or coupling.shape[0] != coupling.shape[1]:
        raise ValueError(f"{name} must be a square (D, D) tensor, got {_checks._show(coupling)}")
    if dim is not None and coupling.shape[0] != dim:
        raise ValueError(f"{name} must have shape ({dim}, {dim}), got {tuple(coupling.shape)}")
    if not coupling.is_floating_point() or not torch.isfinite(coupling).all():
        raise ValueError(f"{name} must be a finite floating-point tensor")
    if not torch.allclose(coupling, coupling.T) or coupling.diagonal().abs().max() > 0:
        raise ValueError(f"{name} must be symmetric with a zero diagonal")
    return coupling


class IsingModel(nn.Module):
    r"""Ising model p(s) ∝ exp(sᵀJs + bᵀs) on spins s ∈ {−1, 1}^D, with a learnable symmetric J.

    Convention: J is symmetric with zero diagonal and the quadratic form sᵀJs = Σ_{i≠j} J_ij s_i s_j
    counts every pair twice, so an edge (i, j) contributes 2·J_ij·s_i·s_j (the convention of the
    Gibbs-with-gradients and discrete-ED Ising benchmarks, whose ground truth is J = σ·A with A the
    lattice adjacency). The energy is E = −sᵀJs − bᵀs.

    The model acts on binary data x ∈ {0, 1}^D through s = 2x − 1: ``forward(x)`` is
    E(2x − 1), the energy that :func:`edrepro.losses.bernoulli_energy_discrepancy` needs;
    :meth:`spin_energy` takes spins. J is parametrised as (W + Wᵀ)/2 with the diagonal masked, so
    it stays symmetric with zero diagonal under any optimiser. W starts at ``init_coupling``
    (zeros by default). The bias b is used only when ``learn_bias`` is True (else it is zero).
    """

    def __init__(self, dim: int, init_coupling: torch.Tensor | None = None, learn_bias: bool = False):
        super().__init__()
        self.dim = _checks.positive_int("dim", dim, minimum=2)
        if init_coupling is None:
            w = torch.zeros(dim, dim)
        else:
            w = _check_coupling("init_coupling", init_coupling, dim).detach().clone().float()
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.zeros(dim), requires_grad=bool(learn_bias))
        self.register_buffer("mask", 1.0 - torch.eye(dim))

    @property
    def coupling(self) -> torch.Tensor:
        """The symmetric, zero-diagonal coupling matrix J (differentiable)."""
        return 0.5 * (self.weight + self.weight.T) * self.mask

    def spin_energy(self, s: torch.Tensor) -> torch.Tensor:
        """E(s) = −sᵀJs − bᵀs for spins s ∈ {−1, 1}^D, shape (B, D) → (B,)."""
        if s.ndim != 2 or s.shape[1] != self.dim:
            raise ValueError(f"s must have shape (B, {self.dim}), got shape {tuple(s.shape)}")
        return -((s @ self.coupling) * s).sum(1) - s @ self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Energy of binary data x ∈ {0, 1}^D, shape (B, D) → (B,): E(2x − 1)."""
        return self.spin_energy(2.0 * x - 1.0)


class RBM(nn.Module):
    r"""Bernoulli–Bernoulli restricted Boltzmann machine on v ∈ {0,1}^V, h ∈ {0,1}^H.

    Joint energy E(v, h) = −b_vᵀv − b_hᵀh − vᵀWh (``weight`` is W, shape (V, H)). Summing out h
    gives the *free energy*, the energy of the visible marginal p(v) = exp(−F(v))/Z:

        F(v) = −b_vᵀv − Σ_j softplus(b_h,j + (vᵀW)_j).

    ``forward(v)`` is F(v), so an RBM is an energy for every loss of :mod:`edrepro.losses`.
    The partition function is exact for small H (:meth:`log_partition` sums over all 2^H hidden
    states): log Z = logsumexp_h [ b_hᵀh + Σ_i softplus(b_v,i + (Wh)_i) ].

    Initialisation: W ~ N(0, ``init_std``²) drawn from ``generator``, b_h = 0 and b_v = 0 unless
    ``visible_bias`` is given (e.g. :func:`bernoulli_logits` of the data mean, which makes the
    initial model the data-mean Bernoulli model up to the small weights).
    """

    max_exact_hidden = 26

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        init_std: float = 0.01,
        visible_bias: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.n_visible = _checks.positive_int("n_visible", n_visible)
        self.n_hidden = _checks.positive_int("n_hidden", n_hidden)
        init_std = _checks.non_negative("init_std", init_std)
        self.weight = nn.Parameter(init_std * torch.randn(n_visible, n_hidden, generator=generator))
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden))
        if visible_bias is None:
            bv = torch.zeros(n_visible)
        else:
            if not isinstance(visible_bias, torch.Tensor) or visible_bias.shape != (n_visible,):
                raise ValueError(f"visible_bias must be a ({n_visible},) tensor, got {_checks._show(visible_bias)}")
            if not torch.isfinite(visible_bias).all():
                raise ValueError("visible_bias must be finite")
            bv = visible_bias.detach().clone().float()
        self.visible_bias = nn.Parameter(bv)

    def _check_v(self, v: torch.Tensor) -> None:
        if v.ndim != 2 or v.shape[1] != self.n_visible:
            raise ValueError(f"v must have shape (B, {self.n_visible}), got shape {tuple(v.shape)}")

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = −b_vᵀv − Σ_j softplus(b_h,j + (vᵀW)_j), shape (B, V) → (B,)."""
        self._check_v(v)
        return -(v @ self.visible_bias) - nn.functional.softplus(v @ self.weight + self.hidden_bias).sum(1)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.free_energy(v)

    def joint_energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """E(v, h) = −b_vᵀv − b_hᵀh − vᵀWh for paired rows of v (B, V) and h (B, H)."""
        self._check_v(v)
        if h.ndim != 2 or h.shape != (v.shape[0], self.n_hidden):
            raise ValueError(f"h must have shape ({v.shape[0]}, {self.n_hidden}), got shape {tuple(h.shape)}")
        return -(v @ self.visible_bias) - (h @ self.hidden_bias) - ((v @ self.weight) * h).sum(1)

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        """p(h_j = 1 | v) = sigmoid(b_h,j + (vᵀW)_j), shape (B, H)."""
        self._check_v(v)
        return torch.sigmoid(v @ self.weight + self.hidden_bias)

    def visible_probs(self, h: torch.Tensor) -> torch.Tensor:
        """p(v_i = 1 | h) = sigmoid(b_v,i + (Wh)_i), shape (B, V)."""
        if h.ndim != 2 or h.shape[1] != self.n_hidden:
            raise ValueError(f"h must have shape (B, {self.n_hidden}), got shape {tuple(h.shape)}")
        return torch.sigmoid(h @ self.weight.T + self.visible_bias)

    def log_partition(self, chunk_size: int = 4096) -> torch.Tensor:
        """Exact log Z by summing over all 2^H hidden states, ``chunk_size`` states at a time.

        log Z = logsumexp_h [ b_hᵀh + Σ_i softplus(b_v,i + (Wh)_i) ]; cost 2^H·V·H, memory
        chunk_size·V. Differentiable. Raises ValueError for H > ``max_exact_hidden`` (26).
        """
        chunk_size = _checks.positive_int("chunk_size", chunk_size)
        h_dim = self.n_hidden
        if h_dim > self.max_exact_hidden:
            raise ValueError(f"exact log Z enumerates 2^H hidden states; H = {h_dim} > {self.max_exact_hidden} is too many")
        n_states = 1 << h_dim
        bits = 1 << torch.arange(h_dim, device=self.weight.device)
        parts = []
        for start in range(0, n_states, chunk_size):
            codes = torch.arange(start, min(start + chunk_size, n_states), device=self.weight.device)
            h = ((codes[:, None] & bits) > 0).to(self.weight.dtype)
            terms = h @ self.hidden_bias + nn.functional.softplus(h @ self.weight.T + self.visible_bias).sum(1)
            parts.append(torch.logsumexp(terms, 0))
        return torch.logsumexp(torch.stack(parts), 0)

    def log_prob(self, v: torch.Tensor, log_z: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log p(v) = −F(v) − log Z (pass ``log_z`` to reuse a computed partition function)."""
        if log_z is None:
            log_z = self.log_partition()
        return -self.free_energy(v) - log_z


def bernoulli_logits(mean: torch.Tensor, clamp: float = 1e-3) -> torch.Tensor:
    """logit(mean) with the mean clamped to [clamp, 1 − clamp]: the visible bias of the Bernoulli model with that mean."""
    clamp = _checks.open_unit("clamp", clamp)
    if not isinstance(mean, torch.Tensor) or mean.ndim != 1:
        raise ValueError(f"mean must be a 1-D tensor, got {_checks._show(mean)}")
    p = mean.clamp(clamp, 1 - clamp)
    return torch.log(p) - torch.log1p(-p)
