"""Joint energy-based models (JEM, Grathwohl et al. 2020): a classifier read as an energy-based model.

A classifier with logits f(x) ∈ ℝ^K defines, besides p(y | x) = softmax(f(x))_y, the joint model

    p(x, y) = exp(f(x)[y]) / Z,    so    p(x) = Σ_y p(x, y) ∝ exp(−E(x)),   E(x) = −logsumexp_y f(x)[y]

(JEM's eq. (5)); shifting every logit by the same amount leaves p(y | x) unchanged and moves E, so
the classifier's softmax never uses the freedom that p(x) lives in. JEM maximises

    log p(x, y) = log p(y | x) + log p(x),

the cross-entropy of the classifier plus a generative term for p(x) (JEM's eq. (6)). This module gives
the energy of a classifier (:func:`marginal_energy`), JEM's sampler (:func:`sgld`: stochastic-gradient
Langevin dynamics with a step and a noise scale of its own), a replay buffer whose chains restart with
a probability (:func:`draw_chains`), the two generative terms (:func:`sgld_pcd_term`, the log-likelihood
gradient with negatives from persistent SGLD chains; :func:`ed_term`, energy discrepancy) and the joint
loss (:func:`joint_loss`). The networks are :class:`SmallConvNet` (MNIST) and :func:`toy_classifier` (2-D).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks
from .losses import energy_discrepancy, energy_gap
from .nets import MLP
from .samplers import ReplayBuffer

Energy = Callable[[torch.Tensor], torch.Tensor]


def marginal_energy(logits: torch.Tensor) -> torch.Tensor:
    """E(x) = −logsumexp_y f(x)[y] of (B, K) logits: the energy of p(x) ∝ Σ_y exp(f(x)[y]) (JEM eq. (5))."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must be a (B, K) tensor with K >= 1, got {getattr(logits, 'shape', type(logits).__name__)}")
    return -torch.logsumexp(logits, dim=1)


def energy_of(classifier: nn.Module) -> Energy:
    """The energy x ↦ −logsumexp_y f(x)[y] of a classifier returning (B, K) logits, usable by every loss and sampler."""
    if not callable(classifier):
        raise ValueError(f"classifier must be callable, got {type(classifier).__name__}")
    return lambda x: marginal_energy(classifier(x))


def sgld(
    energy: Energy, x0: torch.Tensor, n_steps: int, step_size: float, noise_std: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """JEM's sampler: x ← x − α ∇E(x) + σ ξ, ξ ~ N(0, I), for ``n_steps`` steps; returns the detached end.

    α = ``step_size`` and σ = ``noise_std`` are set separately, as JEM does (α = 1, σ = 0.01 on images in
    [−1, 1]): with σ² ≠ 2α this is not a discretisation of the Langevin diffusion whose law is exp(−E) but
    a noisy gradient descent on E, which is why JEM's chains must persist to produce anything like
    samples. Raises FloatingPointError
    naming the step if the state becomes non-finite.
    """
    x = _checks.batch("x0", x0).detach().clone()
    n_steps = _checks.positive_int("n_steps", n_steps)
    step_size = _checks.positive("step_size", step_size)
    noise_std = _checks.non_negative("noise_std", noise_std)
    for step in range(n_steps):
        with torch.enable_grad():
            x.requires_grad_(True)
            (g,) = torch.autograd.grad(energy(x).sum(), x)
        x = x.detach() - step_size * g + noise_std * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        if not torch.isfinite(x).all():
            raise FloatingPointError(f"sgld: the state became non-finite at step {step + 1} of {n_steps}; reduce step_size")
    return x


def draw_chains(buffer: ReplayBuffer, n: int, reinit_prob: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` chains from ``buffer``, each restarted from the buffer's ``init_fn`` with probability ``reinit_prob``
    (JEM: 0.05), independently: returns (states, their buffer slots, the mask of restarted rows)."""
    if not isinstance(buffer, ReplayBuffer):
        raise ValueError(f"buffer must be a samplers.ReplayBuffer, got {type(buffer).__name__}")
    reinit_prob = _checks.unit_interval("reinit_prob", reinit_prob)
    x, idx = buffer.sample(n, 0.0, generator)
    restart = torch.rand(n, generator=generator) < reinit_prob
    k = int(restart.sum())
    if k:
        fresh = buffer.init_fn(k, generator)
        x[restart.to(x.device)] = _checks.batch("init_fn output", fresh, dim=x.shape[1]).to(x)
    return x, idx, restart


def sgld_pcd_term(
    energy: Energy, x: torch.Tensor, buffer: ReplayBuffer, n_steps: int, step_size: float, noise_std: float,
    reinit_prob: float, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """JEM's generative term: mean E(x⁺) − mean E(x⁻) with x⁻ the ends of persistent SGLD chains.

    The chains come from ``buffer`` (:func:`draw_chains`), run ``n_steps`` of :func:`sgld` and are pushed
    back. The gradient of this term is the maximum-likelihood gradient of −log p(x),
    E_data[∇E] − E_model[∇E], with the chains' ends standing in for the model's samples.
    """
    x = _checks.batch("x", x)
    x0, idx, _ = draw_chains(buffer, x.shape[0], reinit_prob, generator)
    x_neg = sgld(energy, x0, n_steps, step_size, noise_std, generator)
    buffer.push(x_neg, idx)
    e = energy(torch.cat([x, x_neg]))
    return energy_gap(e[: x.shape[0]], e[x.shape[0]:])


def ed_term(energy: Energy, x: torch.Tensor, t: float, m_particles: int, w: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Energy discrepancy of p(x) (:func:`edrepro.losses.energy_discrepancy`, the paper's eq. (ed-loss)) as
    the generative term: no sampling from the model, M + 1 energies per data point."""
    return energy_discrepancy(energy, x, t, m_particles, w, generator)


def joint_loss(logits: torch.Tensor, labels: torch.Tensor, generative: torch.Tensor | None, weight: float = 1.0) -> torch.Tensor:
    """−mean log p(y | x) + ``weight`` · (generative term): JEM's objective with a weighted generative part.

    ``generative`` is None for a plain classifier (cross-entropy only).
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ValueError(f"logits must be a (B, K) tensor, got {getattr(logits, 'shape', type(logits).__name__)}")
    if not isinstance(labels, torch.Tensor) or labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must be a ({logits.shape[0]},) tensor, got {getattr(labels, 'shape', type(labels).__name__)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got range [{int(labels.min())}, {int(labels.max())}]")
    weight = _checks.non_negative("weight", weight)
    ce = F.cross_entropy(logits, labels.long())
    return ce if generative is None else ce + weight * generative


def toy_classifier(n_classes: int, width: int = 128, depth: int = 3) -> MLP:
    """2 → width → … (``depth`` hidden layers, SiLU) → ``n_classes`` logits: the 2-D classifier (smooth, so
    that SGLD's gradients and ED's energies are well defined)."""
    _checks.positive_int("n_classes", n_classes, minimum=2)
    _checks.positive_int("width", width)
    _checks.positive_int("depth", depth)
    return MLP(2, [width] * depth, n_classes, activation="silu")


class SmallConvNet(nn.Module):
    """A small convolutional classifier of flattened 28×28 images: (B, 784) → (B, 10) logits.

    Conv(1→c, 3×3) → SiLU → Conv(c→2c, 4×4, stride 2) → SiLU → Conv(2c→2c, 4×4, stride 2) → SiLU →
    Linear(2c·7·7 → 10), c = ``channels``. Smooth activations, so the energy −logsumexp f has gradients
    everywhere for the SGLD chains. Inputs are flat so the persistent chains are (N, 784) rows.
    """

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        c = _checks.positive_int("channels", channels)
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(2 * c * 7 * 7, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != 784:
            raise ValueError(f"x must have shape (B, 784) (flattened 28×28 images), got shape {tuple(x.shape)}")
        return self.net(x.view(-1, 1, 28, 28))


def uniform_images(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` flattened images with pixels uniform on [−1, 1]: JEM's initial and restarted chains."""
    n = _checks.positive_int("n", n)
    return 2.0 * torch.rand(n, 784, generator=generator) - 1.0

