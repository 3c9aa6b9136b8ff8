"""Latent-space energy-based prior models (LEBM, Pang et al. 2020) trained by energy discrepancy.

Model: z ∈ R^nz has the prior p_θ(z) ∝ exp(−E_θ(z)) with E_θ(z) = f_θ(z) + |z|²/2 (an MLP
correction of the standard Gaussian); an image is x = g_β(z) + σε, ε ~ N(0, I). Training
alternates, on each batch,

1. posterior sampling z ~ p(z | x) ∝ exp(−U(z)), U(z) = |x − g_β(z)|²/(2σ²) + E_θ(z), by
   short-run Langevin started at N(0, I);
2. a generator step on |x − g_β(z)|² (sum over pixels, mean over the batch);
3. a prior step on the posterior latents z⁺: energy discrepancy of E_θ (``prior_loss="ed"``, the
   paper's Alg. 3), short-run contrastive divergence, mean E_θ(z⁺) − mean E_θ(z⁻) with z⁻ from
   prior Langevin started at N(0, I) (``prior_loss="cd"``, Pang et al. 2020; the paper's Alg. 1),
   or exact score matching, mean ½|∇E_θ(z⁺)|² − ΔE_θ(z⁺) (``prior_loss="sm"``, the paper's Alg. 2).

Step sizes follow the authors' convention: a Langevin step of size s is
z ← z − (s²/2)∇U(z) + s·ξ, i.e. :func:`edrepro.samplers.langevin` with ε = s²/2.

:func:`train` runs the epoch loop, checkpointing at the end of every epoch and resuming from
the last checkpoint; :func:`spec` makes a configuration a run of :mod:`edrepro.book.runs` (cached under
a hash of its settings). ``python -m edrepro.chapters.lebm --profile quick`` trains the chapter's runs from
the command line (the same cache as the notebook and ``python -m edrepro sweep edlebm_mnist``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm  # plain text bars: notebooks here run without ipywidgets

from .. import _checks
from ..book import runs
from ..losses import energy_discrepancy, energy_gap, gradient_and_laplacian
from ..nets import EMA, MLP
from ..samplers import langevin
from ..book.train import announce_estimate

PRIOR_LOSSES = ("ed", "cd", "sm")
_FORMAT = 2  # bump when the meaning of a checkpoint changes


# ----------------------------------------------------------------------------- models


class Generator(nn.Module):
    """g(z): ConvT nz→8·ngf (k4 s1 p0) → 4·ngf (k3 s2 p1) → 2·ngf (k4 s2 p1) → 1 (k4 s2 p1), 1×1 → 28×28.

    LeakyReLU(0.1) between layers, Tanh at the end (images in [−1, 1]). ``ngf`` = 128 is the
    authors' width (1024, 512, 256 channels, ≈ 7.9 M parameters). Weights of the transposed
    convolutions are Xavier-normal initialised, biases keep PyTorch's default, as the authors'.
    Accepts z of shape (B, nz) or (B, nz, 1, 1).
    """

    def __init__(self, nz: int = 64, ngf: int = 128):
        super().__init__()
        self.nz = _checks.positive_int("nz", nz)
        self.ngf = _checks.positive_int("ngf", ngf)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(nz, 8 * ngf, 4, 1, 0),
            nn.LeakyReLU(0.1),
            nn.ConvTranspose2d(8 * ngf, 4 * ngf, 3, 2, 1),
            nn.LeakyReLU(0.1),
            nn.ConvTranspose2d(4 * ngf, 2 * ngf, 4, 2, 1),
            nn.LeakyReLU(0.1),
            nn.ConvTranspose2d(2 * ngf, 1, 4, 2, 1),
            nn.Tanh(),
        )
        for m in self.net:
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.xavier_normal_(m.weight)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim == 2:
            z = z[:, :, None, None]
        if z.ndim != 4 or z.shape[1:] != (self.nz, 1, 1):
            raise ValueError(f"z must have shape (B, {self.nz}) or (B, {self.nz}, 1, 1), got {tuple(z.shape)}")
        return self.net(z)


class PriorEnergy(nn.Module):
    """E(z) = f(z) + |z|²/2 with f an MLP nz → hidden → hidden → hidden → 1 (LeakyReLU ``slope``).

    exp(−E) is the standard Gaussian tilted by exp(−f); with f ≡ 0 the prior is N(0, I).
    ``correction(z)`` returns f(z) alone. The authors use hidden = 200, slope = 0.2.
    """

    def __init__(self, nz: int = 64, hidden: int = 200, slope: float = 0.2):
        super().__init__()
        self.nz = _checks.positive_int("nz", nz)
        self.f = MLP(nz, (hidden, hidden, hidden), 1, activation="leaky_relu", negative_slope=slope)

    def correction(self, z: torch.Tensor) -> torch.Tensor:
        return self.f(z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.f(z) + 0.5 * (z * z).sum(1)


def _langevin_eps(step_size: float) -> float:
    """The authors' step size s (z ← z − s²/2·∇U + s·ξ) as samplers.langevin's ε = s²/2."""
    return 0.5 * _checks.positive("step_size", step_size) ** 2


def posterior_energy(generator: nn.Module, prior: nn.Module, x: torch.Tensor, sigma: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """U(z) = |x − g(z)|²/(2σ²) + E(z) per row: the negative log-posterior up to a constant."""
    sigma = _checks.positive("sigma", sigma)
    flat = x.reshape(x.shape[0], -1)

    def energy(z: torch.Tensor) -> torch.Tensor:
        residual = generator(z).reshape(z.shape[0], -1) - flat
        return (residual * residual).sum(1) / (2.0 * sigma**2) + prior(z)

    return energy


def posterior_langevin(
    generator: nn.Module, prior: nn.Module, x: torch.Tensor, z0: torch.Tensor,
    n_steps: int, step_size: float, sigma: float, rng: torch.Generator | None = None,
) -> torch.Tensor:
    """Short-run Langevin on U(z) = |x − g(z)|²/(2σ²) + E(z) from ``z0``; returns detached (B, nz) latents.

    ``step_size`` is the authors' s (ε = s²/2). Model parameters' ``.grad`` are not touched.
    """
    if x.shape[0] != z0.shape[0]:
        raise ValueError(f"x and z0 must have the same batch size, got {x.shape[0]} and {z0.shape[0]}")
    return langevin(posterior_energy(generator, prior, x, sigma), z0, n_steps, _langevin_eps(step_size), generator=rng)


def prior_langevin(
    prior: nn.Module, z0: torch.Tensor, n_steps: int, step_size: float, rng: torch.Generator | None = None, progress: bool = False
) -> torch.Tensor:
    """Langevin on the prior energy E(z) from ``z0`` (authors' step size s, ε = s²/2)."""
    return langevin(prior, z0, n_steps, _langevin_eps(step_size), generator=rng, progress=progress)


def generator_loss(generator: nn.Module, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Σ_pixels (g(z) − x)² averaged over the batch (the authors' MSELoss(sum) / B)."""
    return ((generator(z) - x) ** 2).sum() / x.shape[0]


def ed_prior_loss(prior: nn.Module, z: torch.Tensor, t: float, m_particles: int, w: float, rng: torch.Generator | None = None) -> torch.Tensor:
    """Energy discrepancy of the prior energy on posterior latents (see :func:`edrepro.losses.energy_discrepancy`)."""
    return energy_discrepancy(prior, z.detach(), t=t, m_particles=m_particles, w=w, generator=rng)


def cd_prior_loss(
    prior: nn.Module, z_pos: torch.Tensor, n_steps: int, step_size: float, rng: torch.Generator | None = None
) -> torch.Tensor:
    """Short-run CD (Pang et al. 2020): mean E(z⁺) − mean E(z⁻), z⁻ = prior Langevin from N(0, I).

    The chains start afresh at N(0, I) for every batch and their ends are detached.
    """
    z0 = torch.randn(z_pos.shape, generator=rng, device=z_pos.device, dtype=z_pos.dtype)
    z_neg = prior_langevin(prior, z0, n_steps, step_size, rng)
    e = prior(torch.cat([z_pos.detach(), z_neg]))
    return energy_gap(e[: len(z_pos)], e[len(z_pos) :])


def sm_prior_loss(prior: PriorEnergy, z: torch.Tensor) -> torch.Tensor:
    """Exact score matching of the prior energy on posterior latents (the paper's Alg. 2; Hyvärinen 2005).

    loss = mean_i [ ½|∇E(z_i)|² − ΔE(z_i) ]. With E(z) = f(z) + |z|²/2, ∇E = ∇f + z and ΔE = Δf + nz,
    so only the MLP f needs derivatives; its exact gradient and Laplacian come from the forward
    Laplacian (:func:`edrepro.losses.gradient_and_laplacian`), about nz + 2 forward passes of f and no
    double backward — the fastest exact method measured for an MLP (benchmarks/loss_speed.py).
    """
    if not isinstance(prior, PriorEnergy):
        raise ValueError(f"prior must be a PriorEnergy, got {type(prior).__name__}")
    z = z.detach()
    grad_f, laplacian_f = gradient_and_laplacian(prior.f, z)
    grad = grad_f + z
    return (0.5 * (grad * grad).sum(1) - laplacian_f - prior.nz).mean()


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class LEBMConfig:
    """Every setting of one LEBM training run; the defaults are the authors' (``paper``) settings.

    ``post_step_size``, ``cd_step_size`` are Langevin step sizes s in the authors' convention
    (ε = s²/2). ``ed_t`` is the variance of each ED perturbation (their std 0.5 → t = 0.25).
    ``n_train`` = None uses all 60 000 training images, else a random subset of that size
    (fixed by ``seed``). ``lr_decay`` multiplies both learning rates after every epoch.
    """

    prior_loss: str = "ed"
    nz: int = 64
    ngf: int = 128
    prior_hidden: int = 200
    prior_slope: float = 0.2
    llhd_sigma: float = 0.3
    post_steps: int = 20
    post_step_size: float = 0.1
    ed_t: float = 0.25
    ed_m: int = 16
    ed_w: float = 1.0
    cd_steps: int = 60
    cd_step_size: float = 0.4
    lr_g: float = 1e-4
    lr_e: float = 5e-5
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay: float = 0.99
    batch_size: int = 256
    epochs: int = 30
    n_train: int | None = None
    ema_decay: float = 0.999
    seed: int = 0

    def __post_init__(self) -> None:
        _checks.choice("prior_loss", self.prior_loss, PRIOR_LOSSES)
        for name in ("nz", "ngf", "prior_hidden", "post_steps", "ed_m", "cd_steps", "batch_size", "epochs"):
            _checks.positive_int(name, getattr(self, name))
        for name in ("prior_slope", "llhd_sigma", "post_step_size", "ed_t", "cd_step_size", "lr_g", "lr_e", "lr_decay"):
            _checks.positive(name, getattr(self, name))
        _checks.non_negative("ed_w", self.ed_w)
        for name in ("beta1", "beta2", "ema_decay"):
            _checks.unit_interval(name, getattr(self, name))
        if self.n_train is not None:
            _checks.positive_int("n_train", self.n_train)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> LEBMConfig:
        return dataclasses.replace(self, **changes)


def spec(config: LEBMConfig, chapter: str = "edlebm_mnist") -> runs.RunSpec:
    """The :class:`edrepro.book.runs.RunSpec` of an LEBM run: method = the prior loss, budget = epochs.

    Only the hyperparameters of its own prior loss are part of the run (an ED run does not depend
    on the CD settings, and vice versa); the rest of the configuration is its settings.
    """
    if not isinstance(config, LEBMConfig):
        raise ValueError(f"config must be an LEBMConfig, got {type(config).__name__}")
    d = config.to_dict()
    method, seed, epochs = d.pop("prior_loss"), d.pop("seed"), d.pop("epochs")
    hparams = {k: d.pop(k) for k in ED_HPARAMS + CD_HPARAMS}
    own = {k: hparams[k] for k in OWN_HPARAMS[method]}
    return runs.RunSpec("lebm", method, "mnist", seed, epochs, own, d, chapter, 1)


ED_HPARAMS = ("ed_t", "ed_m", "ed_w")
CD_HPARAMS = ("cd_steps", "cd_step_size")
OWN_HPARAMS = {"ed": ED_HPARAMS, "cd": CD_HPARAMS, "sm": ()}
"""Prior loss → the settings of that loss alone (exact score matching has none)."""


def config_of(spec: runs.RunSpec) -> LEBMConfig:
    """The LEBMConfig of an LEBM run (the inverse of :func:`spec`; the other loss's settings at their defaults)."""
    return LEBMConfig(prior_loss=spec.method, seed=spec.seed, epochs=spec.budget, **spec.hparams, **spec.settings)


# ----------------------------------------------------------------------------- training


@dataclass
class LEBM:
    """A trained latent EBM: the generator g, the prior energy E and its EMA (used to generate)."""

    config: LEBMConfig
    generator: Generator
    prior: PriorEnergy
    ema_prior: PriorEnergy


def build_models(config: LEBMConfig, device: torch.device | str = "cpu") -> tuple[Generator, PriorEnergy]:
    """Generator and prior energy of ``config``, initialised from ``torch.manual_seed(config.seed)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        gen = Generator(config.nz, config.ngf)
        prior = PriorEnergy(config.nz, config.prior_hidden, config.prior_slope)
    return gen.to(device), prior.to(device)


def training_subset(n_available: int, config: LEBMConfig) -> torch.Tensor:
    """Indices of the training images used by ``config`` (all, or a seeded random subset)."""
    if config.n_train is None or config.n_train >= n_available:
        return torch.arange(n_available)
    g = torch.Generator().manual_seed(config.seed + 12345)
    return torch.randperm(n_available, generator=g)[: config.n_train].sort().values


@dataclass
class _Trainer:
    """The modules, optimisers, schedulers, EMA and random streams of one LEBM run, and its progress."""

    gnet: Generator
    prior: PriorEnergy
    ema: EMA
    opt_g: torch.optim.Optimizer
    opt_e: torch.optim.Optimizer
    sched_g: Any
    sched_e: Any
    order_rng: torch.Generator
    noise_rng: torch.Generator
    epoch: int = 0
    step: int = 0
    seconds: float = 0.0
    history: dict[str, list[float]] = field(default_factory=lambda: {"loss_g": [], "loss_e": [], "epoch_seconds": [], "epoch_step": []})
    diverged: tuple[int, str] | None = None
    first_step: int = 0  # where this call started (for the time estimate), not saved
    first_seconds: float = 0.0

    _STATEFUL = ("gnet", "prior", "ema", "opt_g", "opt_e", "sched_g", "sched_e")

    def state_dict(self, config: LEBMConfig) -> dict[str, Any]:
        return {
            "format": _FORMAT, "config": config.to_dict(), "epoch": self.epoch, "step": self.step, "seconds": self.seconds,
            "history": self.history, "diverged": self.diverged, "order_rng": self.order_rng.get_state(),
            "noise_rng": self.noise_rng.get_state(), **{k: getattr(self, k).state_dict() for k in self._STATEFUL},
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        for k in self._STATEFUL:
            getattr(self, k).load_state_dict(ckpt[k])
        self.order_rng.set_state(ckpt["order_rng"])
        self.noise_rng.set_state(ckpt["noise_rng"])
        self.epoch, self.step, self.seconds, self.history, self.diverged = ckpt["epoch"], ckpt["step"], ckpt["seconds"], ckpt["history"], ckpt["diverged"]


def _trainer(config: LEBMConfig, device: torch.device) -> _Trainer:
    gnet, prior = build_models(config, device)
    opt_g = torch.optim.Adam(gnet.parameters(), lr=config.lr_g, betas=(config.beta1, config.beta2))
    opt_e = torch.optim.Adam(prior.parameters(), lr=config.lr_e, betas=(config.beta1, config.beta2))
    return _Trainer(
        gnet, prior, EMA(prior, config.ema_decay), opt_g, opt_e,
        torch.optim.lr_scheduler.ExponentialLR(opt_g, config.lr_decay), torch.optim.lr_scheduler.ExponentialLR(opt_e, config.lr_decay),
        order_rng=torch.Generator().manual_seed(config.seed),  # data order, on the CPU
        noise_rng=torch.Generator(device=device).manual_seed(config.seed + 1),  # every Langevin/ED draw
    )


def _iteration(t: _Trainer, config: LEBMConfig, x: torch.Tensor) -> tuple[float, float]:
    """One batch: posterior sampling, a generator step, a prior step, the EMA; returns (loss_g, loss_e)."""
    z0 = torch.randn((len(x), config.nz), generator=t.noise_rng, device=x.device)
    z = posterior_langevin(t.gnet, t.prior, x, z0, config.post_steps, config.post_step_size, config.llhd_sigma, t.noise_rng)
    t.opt_g.zero_grad(set_to_none=True)
    loss_g = generator_loss(t.gnet, z, x)
    loss_g.backward()
    t.opt_g.step()
    t.opt_e.zero_grad(set_to_none=True)
    if config.prior_loss == "ed":
        loss_e = ed_prior_loss(t.prior, z, config.ed_t, config.ed_m, config.ed_w, t.noise_rng)
    elif config.prior_loss == "cd":
        loss_e = cd_prior_loss(t.prior, z, config.cd_steps, config.cd_step_size, t.noise_rng)
    else:
        loss_e = sm_prior_loss(t.prior, z)
    loss_e.backward()
    t.opt_e.step()
    t.ema.update(t.prior)
    lg, le = torch.stack([loss_g.detach(), loss_e.detach()]).tolist()
    return lg, le


def _check_images(images: Any) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1:] != (1, 28, 28) or not images.is_floating_point():
        raise ValueError(f"images must be a float tensor of shape (N, 1, 28, 28), got {getattr(images, 'shape', type(images))}")
    return images


def _outcome(t: _Trainer, resumed_from: int) -> runs.Outcome:
    h = t.history
    ends = h["epoch_step"]
    curves = {
        "step": list(ends), "seconds": list(np.cumsum(h["epoch_seconds"]).tolist()),
        "loss_g": [float(np.mean(h["loss_g"][a:b])) for a, b in zip([0, *ends[:-1]], ends)],
        "loss_e": [float(np.mean(h["loss_e"][a:b])) for a, b in zip([0, *ends[:-1]], ends)],
    }
    models = {"generator": t.gnet.eval(), "prior": t.prior.eval(), "ema_prior": t.ema.model.eval()}
    diverged_at, nonfinite = t.diverged if t.diverged is not None else (None, None)
    return runs.Outcome(
        curves=curves, series={"loss_g": h["loss_g"], "loss_e": h["loss_e"]}, steps=t.step, seconds=t.seconds,
        models=models, diverged_at=diverged_at, nonfinite=nonfinite, resumed_from=resumed_from,
        info={"epochs_done": t.epoch, "epoch_seconds": h["epoch_seconds"]},
    )


def train(
    config: LEBMConfig,
    images: torch.Tensor,
    checkpoint: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    callback: Callable[[int, int, dict[str, float]], None] | None = None,
) -> runs.Outcome:
    """Train an LEBM on ``images`` ((N, 1, 28, 28) float in [−1, 1]) for ``config.epochs`` epochs.

    Each epoch visits the (subset of the) images in a fresh random order, in batches of
    ``config.batch_size`` (the last, smaller batch included, as a DataLoader without drop_last).
    After every epoch both learning rates are multiplied by ``lr_decay`` and, with ``checkpoint``,
    the whole state — models, optimisers, schedulers, EMA, random states, step, history — is saved
    there (:func:`edrepro.book.runs.save_atomic`). If that file exists when ``train`` starts, training
    resumes after its last epoch (a finished run returns at once) with the same result as an
    uninterrupted run. A non-finite loss stops the run and records the step and the loss
    (``loss_g`` or ``loss_e``). ``callback(epoch, step, losses)`` runs after every iteration.
    Returns an :class:`edrepro.book.runs.Outcome` with models ``generator``, ``prior`` and ``ema_prior``.
    """
    if not isinstance(config, LEBMConfig):
        raise ValueError(f"config must be an LEBMConfig, got {type(config).__name__}")
    device = torch.device(device)
    data = _check_images(images)[training_subset(len(images), config)].to(device)
    per_epoch = math.ceil(len(data) / config.batch_size)
    t = _trainer(config, device)
    ckpt = runs.load_checkpoint(checkpoint) if checkpoint is not None else None
    if ckpt is not None:
        if ckpt.get("config") != config.to_dict():
            raise ValueError(f"checkpoint {checkpoint} was written for other settings; use another run folder")
        t.load_state_dict(ckpt)
    resumed_from, t.first_step, t.first_seconds = t.epoch, t.step, t.seconds
    with tqdm(total=config.epochs * per_epoch, initial=t.epoch * per_epoch, desc=f"{config.prior_loss}-lebm", mininterval=2.0,
              disable=not progress or t.epoch >= config.epochs or t.diverged is not None) as bar:
        while t.epoch < config.epochs and t.diverged is None:
            _epoch(t, config, data, per_epoch, bar, callback)
            if checkpoint is not None:
                runs.save_atomic(checkpoint, t.state_dict(config))
    return _outcome(t, resumed_from)


def _epoch(t: _Trainer, config: LEBMConfig, data: torch.Tensor, per_epoch: int, bar: Any, callback: Callable | None) -> None:
    """One epoch of :func:`train` (stops early, recording the step, if a loss becomes non-finite)."""
    epoch_start = t.seconds
    perm = torch.randperm(len(data), generator=t.order_rng).to(data.device)
    for i in range(per_epoch):
        t0 = time.perf_counter()
        lg, le = _iteration(t, config, data[perm[i * config.batch_size : (i + 1) * config.batch_size]])
        t.step += 1
        t.seconds += time.perf_counter() - t0
        t.history["loss_g"].append(lg)
        t.history["loss_e"].append(le)
        bad = "loss_g" if not math.isfinite(lg) else "loss_e" if not math.isfinite(le) else None
        if bad is not None:
            t.diverged = (t.step, bad)
            return
        bar.update(1)
        if t.step == t.first_step + 5:
            announce_estimate(f"{config.prior_loss}-lebm", 5, t.seconds - t.first_seconds, config.epochs * per_epoch - t.first_step)
        if i % 5 == 0 or i == per_epoch - 1:
            bar.set_postfix_str(f"epoch={t.epoch + 1} loss_g={lg:.2f} loss_e={le:.4f} {t.seconds / t.step:.2f}s/it", refresh=False)
        if callback is not None:
            callback(t.epoch, t.step, {"loss_g": lg, "loss_e": le})
    t.sched_g.step()
    t.sched_e.step()
    t.epoch += 1
    t.history["epoch_seconds"].append(t.seconds - epoch_start)
    t.history["epoch_step"].append(t.step)


@functools.lru_cache(maxsize=1)
def _training_images() -> torch.Tensor:
    from ..data import mnist, to_signed_unit

    return to_signed_unit(mnist("train").images)


def train_spec(spec: runs.RunSpec, checkpoint: Any = None, device: torch.device | str = "cpu", progress: bool = True) -> runs.Outcome:
    """Train an ``lebm`` run (the trainer :mod:`edrepro.book.runs` calls) on the MNIST training images."""
    from ..book.train import resolve_device

    return train(config_of(spec), _training_images(), checkpoint, resolve_device(device), progress)


def load(record: runs.RunRecord, device: torch.device | str = "cpu") -> LEBM:
    """The trained model of an ``lebm`` run."""
    if not isinstance(record, runs.RunRecord) or record.spec.kind != "lebm":
        raise ValueError(f"record must be the RunRecord of an LEBM run, got {record!r:.80}")
    config = config_of(record.spec)
    gnet, prior = build_models(config, device)
    ema_prior = build_models(config, device)[1]
    state = record.state()
    gnet.load_state_dict(state["generator"])
    prior.load_state_dict(state["prior"])
    ema_prior.load_state_dict(state["ema_prior"])
    return LEBM(config, gnet.eval(), prior.eval(), ema_prior.eval().requires_grad_(False))


# ----------------------------------------------------------------------------- using a trained model


def _check_model(model: Any) -> LEBM:
    if not isinstance(model, LEBM):
        raise ValueError(f"model must be an LEBM (see lebm.load), got {type(model).__name__}")
    return model


@torch.no_grad()
def decode(generator: nn.Module, z: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """g(z) in batches, on the CPU."""
    _checks.positive_int("batch_size", batch_size)
    return torch.cat([generator(z[k : k + batch_size]).cpu() for k in range(0, len(z), batch_size)])


def sample_latents(
    prior: nn.Module, n: int, n_steps: int = 500, step_size: float = 0.2,
    rng: torch.Generator | None = None, device: torch.device | str = "cpu", progress: bool = False,
) -> torch.Tensor:
    """n latents from the prior energy: ``n_steps`` Langevin steps of size s on E, started at N(0, I)."""
    n = _checks.positive_int("n", n)
    z0 = torch.randn((n, _nz(prior)), generator=rng, device=device)
    return prior_langevin(prior, z0, n_steps, step_size, rng, progress=progress)


def _nz(prior: nn.Module) -> int:
    nz = getattr(prior, "nz", None)
    if not isinstance(nz, int):
        raise ValueError(f"prior must be a PriorEnergy (with an nz attribute), got {type(prior).__name__}")
    return nz


def generate(
    model: LEBM, n: int, n_steps: int = 500, step_size: float = 0.2, rng: torch.Generator | None = None,
    prior: str = "ema", progress: bool = False,
) -> torch.Tensor:
    """n images (n, 1, 28, 28) on the CPU from ``model``: z from the prior, then x = g(z).

    ``prior`` = "ema" (``n_steps`` Langevin steps of size ``step_size`` on the EMA of the prior,
    our default), "last" (the same on the last prior iterate) or "gaussian" (z ~ N(0, I): the same
    generator without the learned prior).
    """
    _check_model(model)
    n = _checks.positive_int("n", n)
    _checks.choice("prior", prior, ("ema", "last", "gaussian"))
    device = next(model.generator.parameters()).device
    if prior == "gaussian":
        z = torch.randn((n, model.config.nz), generator=rng, device=device)
    else:
        energy = model.ema_prior if prior == "ema" else model.prior
        z = sample_latents(energy, n, n_steps, step_size, rng, device, progress)
    return decode(model.generator, z)


def reconstruct(
    model: LEBM, x: torch.Tensor, rng: torch.Generator | None = None, batch_size: int = 500,
    n_steps: int | None = None, prior: str = "ema",
) -> torch.Tensor:
    """g(z) with z from the training posterior sampler (``post_steps`` Langevin steps from N(0, I)) given x."""
    cfg = _check_model(model).config
    _check_images(x)
    _checks.positive_int("batch_size", batch_size)
    _checks.choice("prior", prior, ("ema", "last"))
    device = next(model.generator.parameters()).device
    energy = model.ema_prior if prior == "ema" else model.prior
    out = []
    for k in range(0, len(x), batch_size):
        xb = x[k : k + batch_size].to(device)
        z0 = torch.randn((len(xb), cfg.nz), generator=rng, device=device)
        z = posterior_langevin(model.generator, energy, xb, z0, n_steps or cfg.post_steps, cfg.post_step_size, cfg.llhd_sigma, rng)
        out.append(decode(model.generator, z))
    return torch.cat(out)


# ----------------------------------------------------------------------------- the chapter's parameters and command line

# Chapter parameter → LEBMConfig field (parameters not listed keep the authors' value).
PARAM_TO_CONFIG = {
    "ngf": "ngf", "post_steps": "post_steps", "post_step_size": "post_step_size", "batch_size": "batch_size",
    "epochs": "epochs", "n_train": "n_train", "ema_decay": "ema_decay", "lr_g": "lr_g", "lr_e": "lr_e",
    "lr_decay": "lr_decay", "ed_t": "ed_t", "ed_m": "ed_m", "ed_w": "ed_w", "cd_steps": "cd_steps",
    "cd_step_size": "cd_step_size", "seed": "seed",
}


def config_from_params(params: Mapping[str, Any], prior_loss: str) -> LEBMConfig:
    """The LEBMConfig of the chapter's parameters (a dict as in notebooks/params/edlebm_mnist/*.yaml).

    Parameters of :data:`PARAM_TO_CONFIG` that ``params`` lacks keep the authors' values; the
    others (evaluation, device, ...) do not change the training run.
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a mapping of the chapter's parameters, got {type(params).__name__}")
    _checks.choice("prior_loss", prior_loss, PRIOR_LOSSES)
    known = {k: params[k] for k in PARAM_TO_CONFIG if k in params}
    return LEBMConfig(prior_loss=prior_loss, **{PARAM_TO_CONFIG[k]: v for k, v in known.items()})


def _overrides(items: list[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` items as KEY → VALUE text; ValueError for an item without '=' or a key."""
    pairs = [item.partition("=") for item in items]
    bad = [item for item, (key, eq, _) in zip(items, pairs) if not eq or not key.strip()]
    if bad:
        raise ValueError(f"--set takes KEY=VALUE items, got {bad[0]!r}")
    return {key.strip(): value for key, _, value in pairs}


def main(argv: list[str] | None = None) -> int:
    """``python -m edrepro.chapters.lebm [--profile quick] [--prior ed cd] [--set KEY=VALUE ...]``: train (or resume) the LEBM runs.

    The parameters are the page's (:func:`edrepro.book.pipeline.effective_params`), so an unknown key or
    a value the schema forbids stops the command before any work (exit status 2).
    """
    from ..book import parameters, pipeline
    from ..book.pipeline import effective_params, find_root

    parser = argparse.ArgumentParser(prog="python -m edrepro.chapters.lebm", description="Train latent EBM priors on MNIST, resuming from checkpoints.")
    parser.add_argument("--profile", default="quick", choices=pipeline.ALL_PROFILES, help="the chapter's parameter profile")
    parser.add_argument("--prior", nargs="+", default=list(PRIOR_LOSSES), choices=PRIOR_LOSSES, help="which prior losses to train")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override a parameter of the chapter (YAML value)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda (default: the profile's)")
    parser.add_argument("--runs", default=None, help="cache folder of the runs (default: $EDREPRO_RUNS, else runs)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        params = effective_params(find_root(), "edlebm_mnist", args.profile, _overrides(args.set))
    except (parameters.ParameterError, ValueError) as error:
        print(f"error: {error}", flush=True)
        return 2
    if params.get("cpu_threads"):
        torch.set_num_threads(int(params["cpu_threads"]))
    for prior_loss in args.prior:
        run_spec = spec(config_from_params(params, prior_loss))
        print(f"{prior_loss}: run {run_spec.label} in {runs.run_folder(run_spec, args.runs)}", flush=True)
        record = runs.fetch(run_spec, root=args.runs, device=args.device or params["device"], progress=not args.no_progress)
        print(f"{prior_loss}: {record.info['epochs_done']} epochs, {record.steps} iterations, "
              f"{record.train_seconds / max(record.steps, 1):.3f} s/it, {record.outcome_text()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
