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
