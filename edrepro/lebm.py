"""Latent-space energy-based prior models (LEBM, Pang et al. 2020) trained by energy discrepancy.

Model: z ∈ R^nz has the prior p_θ(z) ∝ exp(−E_θ(z)) with E_θ(z) = f_θ(z) + |z|²/2 (an MLP
correction of the standard Gaussian); an image is x = g_β(z) + σε, ε ~ N(0, I). Training
alternates, on each batch,

1. posterior sampling z ~ p(z | x) ∝ exp(−U(z)), U(z) = |x − g_β(z)|²/(2σ²) + E_θ(z), by
   short-run Langevin started at N(0, I);
2. a generator step on |x − g_β(z)|² (sum over pixels, mean over the batch);
3. a prior step: energy discrepancy of E_θ on the posterior latents (``prior_loss="ed"``), or
   short-run contrastive divergence, mean E_θ(z⁺) − mean E_θ(z⁻) with z⁻ from prior Langevin
   started at N(0, I) (``prior_loss="cd"``, Pang et al. 2020).

Step sizes follow the authors' convention: a Langevin step of size s is
z ← z − (s²/2)∇U(z) + s·ξ, i.e. :func:`edrepro.samplers.langevin` with ε = s²/2.

:func:`train` runs the epoch loop in a run folder named by a hash of the configuration,
checkpointing (atomically) at the end of every epoch and resuming from the last checkpoint.
``python -m edrepro.lebm --profile quick`` trains from the command line with the chapter's
parameters (the same run folders as the notebook).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm  # plain text bars: notebooks here run without ipywidgets

from . import _checks
from .losses import energy_discrepancy
from .nets import EMA, MLP
from .samplers import langevin

PRIOR_LOSSES = ("ed", "cd")
CHECKPOINT = "checkpoint.pt"
_FORMAT = 1  # bump when the meaning of a checkpoint changes


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
    return e[: len(z_pos)].mean() - e[len(z_pos) :].mean()


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

    def key(self) -> str:
        """A 12-hex-digit hash of the settings: the name of the run folder."""
        text = json.dumps({"format": _FORMAT, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def replace(self, **changes: Any) -> LEBMConfig:
        return dataclasses.replace(self, **changes)


def run_folder(config: LEBMConfig, runs_root: str | os.PathLike = "runs") -> Path:
    """``RUNS_ROOT/edlebm_mnist/<config hash>``: where :func:`train` keeps the run's checkpoint."""
    return Path(runs_root) / "edlebm_mnist" / config.key()


# ----------------------------------------------------------------------------- training


@dataclass
class TrainedLEBM:
    """A trained (or partly trained) model and its history.

    ``history`` holds per-iteration ``loss_g`` and ``loss_e`` lists and per-epoch ``epoch_seconds``;
    ``ema_prior`` is the EMA of the prior used for generation. ``resumed_from`` is the number of
    epochs found in the checkpoint when :func:`train` started.
    """

    config: LEBMConfig
    generator: Generator
    prior: PriorEnergy
    ema_prior: PriorEnergy
    history: dict[str, list[float]]
    epochs_done: int
    steps: int
    seconds: float
    run_dir: Path | None
    resumed_from: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / self.steps if self.steps else math.nan


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


def _atomic_save(payload: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def train(
    config: LEBMConfig,
    images: torch.Tensor,
    run_dir: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    callback: Callable[[int, int, dict[str, float]], None] | None = None,
) -> TrainedLEBM:
    """Train an LEBM on ``images`` ((N, 1, 28, 28) float in [−1, 1]) for ``config.epochs`` epochs.

    Each epoch visits the (subset of the) images in a fresh random order, in batches of
    ``config.batch_size`` (the last, smaller batch included, as a DataLoader without drop_last).
    After every epoch both learning rates are multiplied by ``lr_decay`` and, when ``run_dir`` is
    given, a checkpoint — models, optimisers, schedulers, EMA, random states, step, history — is
    written atomically to ``run_dir/checkpoint.pt``. If that file exists when ``train`` starts,
    training resumes after its last epoch (a finished run returns at once); the result is the same
    as an uninterrupted run. ``callback(epoch, step, losses)`` is called after every iteration
    (tests use it to interrupt a run). Raises ``FloatingPointError`` naming the epoch and
    iteration if a loss becomes non-finite.
    """
    if not isinstance(config, LEBMConfig):
        raise ValueError(f"config must be an LEBMConfig, got {type(config).__name__}")
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1:] != (1, 28, 28) or not images.is_floating_point():
        raise ValueError(f"images must be a float tensor of shape (N, 1, 28, 28), got {getattr(images, 'shape', type(images))}")
    device = torch.device(device)
    data = images[training_subset(len(images), config)].to(device)
    n = len(data)
    iters_per_epoch = math.ceil(n / config.batch_size)

    gnet, prior = build_models(config, device)
    opt_g = torch.optim.Adam(gnet.parameters(), lr=config.lr_g, betas=(config.beta1, config.beta2))
    opt_e = torch.optim.Adam(prior.parameters(), lr=config.lr_e, betas=(config.beta1, config.beta2))
    sched_g = torch.optim.lr_scheduler.ExponentialLR(opt_g, config.lr_decay)
    sched_e = torch.optim.lr_scheduler.ExponentialLR(opt_e, config.lr_decay)
    ema = EMA(prior, config.ema_decay)
    order_rng = torch.Generator().manual_seed(config.seed)  # data order, on the CPU
    noise_rng = torch.Generator(device=device).manual_seed(config.seed + 1)  # every Langevin/ED draw
    history: dict[str, list[float]] = {"loss_g": [], "loss_e": [], "epoch_seconds": []}
    epoch0, step, seconds = 0, 0, 0.0

    folder = Path(run_dir) if run_dir is not None else None
    ckpt_path = folder / CHECKPOINT if folder is not None else None
    if ckpt_path is not None and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt.get("config") != config.to_dict():
            raise ValueError(f"checkpoint {ckpt_path} was written for other settings; use another run folder")
        gnet.load_state_dict(ckpt["generator"])
        prior.load_state_dict(ckpt["prior"])
        ema.load_state_dict(ckpt["ema"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_e.load_state_dict(ckpt["opt_e"])
        sched_g.load_state_dict(ckpt["sched_g"])
        sched_e.load_state_dict(ckpt["sched_e"])
        order_rng.set_state(ckpt["order_rng"])
        noise_rng.set_state(ckpt["noise_rng"])
        epoch0, step, seconds, history = ckpt["epoch"], ckpt["step"], ckpt["seconds"], ckpt["history"]
    resumed_from = epoch0

    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=1, sort_keys=True))

    def checkpoint(epoch: int) -> None:
        if ckpt_path is None:
            return
        _atomic_save({
            "format": _FORMAT, "config": config.to_dict(), "epoch": epoch, "step": step, "seconds": seconds,
            "generator": gnet.state_dict(), "prior": prior.state_dict(), "ema": ema.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_e": opt_e.state_dict(),
            "sched_g": sched_g.state_dict(), "sched_e": sched_e.state_dict(),
            "order_rng": order_rng.get_state(), "noise_rng": noise_rng.get_state(), "history": history,
        }, ckpt_path)

    total = config.epochs * iters_per_epoch
    bar = tqdm(total=total, initial=epoch0 * iters_per_epoch, desc=f"{config.prior_loss}-lebm", mininterval=2.0,
               disable=not progress or epoch0 >= config.epochs)
    try:
        for epoch in range(epoch0, config.epochs):
            epoch_start = seconds
            perm = torch.randperm(n, generator=order_rng).to(device)
            for i in range(iters_per_epoch):
                t0 = time.perf_counter()
                x = data[perm[i * config.batch_size : (i + 1) * config.batch_size]]
                z0 = torch.randn((len(x), config.nz), generator=noise_rng, device=device)
                z = posterior_langevin(gnet, prior, x, z0, config.post_steps, config.post_step_size, config.llhd_sigma, noise_rng)

                opt_g.zero_grad(set_to_none=True)
                loss_g = generator_loss(gnet, z, x)
                loss_g.backward()
                opt_g.step()

                opt_e.zero_grad(set_to_none=True)
                if config.prior_loss == "ed":
                    loss_e = ed_prior_loss(prior, z, config.ed_t, config.ed_m, config.ed_w, noise_rng)
                else:
                    loss_e = cd_prior_loss(prior, z, config.cd_steps, config.cd_step_size, noise_rng)
                loss_e.backward()
                opt_e.step()
                ema.update(prior)

                lg, le = torch.stack([loss_g.detach(), loss_e.detach()]).tolist()
                step += 1
                seconds += time.perf_counter() - t0
                if not (math.isfinite(lg) and math.isfinite(le)):
                    raise FloatingPointError(
                        f"{config.prior_loss}-lebm: loss became non-finite (loss_g={lg}, loss_e={le}) "
                        f"at epoch {epoch + 1}, iteration {i + 1} (step {step})"
                    )
                history["loss_g"].append(lg)
                history["loss_e"].append(le)
                bar.update(1)
                if progress and (i % 5 == 0 or i == iters_per_epoch - 1):
                    bar.set_postfix_str(f"epoch={epoch + 1} loss_g={lg:.2f} loss_e={le:.4f} {seconds / max(step, 1):.2f}s/it", refresh=False)
                if callback is not None:
                    callback(epoch, step, {"loss_g": lg, "loss_e": le})
            sched_g.step()
            sched_e.step()
            history["epoch_seconds"].append(seconds - epoch_start)
            checkpoint(epoch + 1)
    finally:
        bar.close()

    gnet.eval(), prior.eval()
    return TrainedLEBM(
        config=config, generator=gnet, prior=prior, ema_prior=ema.model.eval(), history=history,
        epochs_done=config.epochs,
        steps=step, seconds=seconds, run_dir=folder, resumed_from=resumed_from,
    )


def load(config: LEBMConfig, run_dir: str | os.PathLike, device: torch.device | str = "cpu") -> TrainedLEBM:
    """The model saved in ``run_dir/checkpoint.pt`` (at whatever epoch it reached)."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train the run first")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("config") != config.to_dict():
        raise ValueError(f"checkpoint {path} was written for other settings")
    gnet, prior = build_models(config, device)
    gnet.load_state_dict(ckpt["generator"])
    prior.load_state_dict(ckpt["prior"])
    ema = EMA(prior, config.ema_decay)
    ema.load_state_dict(ckpt["ema"])
    return TrainedLEBM(config, gnet.eval(), prior.eval(), ema.model.eval(), ckpt["history"], ckpt["epoch"], ckpt["step"], ckpt["seconds"], Path(run_dir), ckpt["epoch"])


# ----------------------------------------------------------------------------- using a trained model


@torch.no_grad()
def decode(generator: nn.Module, z: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """g(z) in batches, on the CPU."""
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
    model: TrainedLEBM, n: int, n_steps: int = 500, step_size: float = 0.2, rng: torch.Generator | None = None,
    prior: str = "ema", progress: bool = False,
) -> torch.Tensor:
    """n images (n, 1, 28, 28) on the CPU from ``model``: prior Langevin, then the generator.

    ``prior`` = "ema" (the EMA of the prior, our default), "last" (the last prior iterate) or
    "gaussian" (z ~ N(0, I): the same generator without the learned prior).
    """
    _checks.choice("prior", prior, ("ema", "last", "gaussian"))
    device = next(model.generator.parameters()).device
    if prior == "gaussian":
        z = torch.randn((n, model.config.nz), generator=rng, device=device)
    else:
        energy = model.ema_prior if prior == "ema" else model.prior
        z = sample_latents(energy, n, n_steps, step_size, rng, device, progress)
    return decode(model.generator, z)


def reconstruct(
    model: TrainedLEBM, x: torch.Tensor, rng: torch.Generator | None = None, batch_size: int = 500,
    n_steps: int | None = None, prior: str = "ema",
) -> torch.Tensor:
    """g(z) with z from the training posterior sampler (``post_steps`` Langevin steps from N(0, I)) given x."""
    _checks.choice("prior", prior, ("ema", "last"))
    cfg = model.config
    device = next(model.generator.parameters()).device
    energy = model.ema_prior if prior == "ema" else model.prior
    out = []
    for k in range(0, len(x), batch_size):
        xb = x[k : k + batch_size].to(device)
        z0 = torch.randn((len(xb), cfg.nz), generator=rng, device=device)
        z = posterior_langevin(model.generator, energy, xb, z0, n_steps or cfg.post_steps, cfg.post_step_size, cfg.llhd_sigma, rng)
        out.append(decode(model.generator, z))
    return torch.cat(out)


# ----------------------------------------------------------------------------- command line

# Chapter parameter → LEBMConfig field (parameters not listed keep the authors' value).
PARAM_TO_CONFIG = {
    "ngf": "ngf", "post_steps": "post_steps", "post_step_size": "post_step_size", "batch_size": "batch_size",
    "epochs": "epochs", "n_train": "n_train", "ema_decay": "ema_decay", "lr_g": "lr_g", "lr_e": "lr_e",
    "lr_decay": "lr_decay", "ed_t": "ed_t", "ed_m": "ed_m", "ed_w": "ed_w", "cd_steps": "cd_steps",
    "cd_step_size": "cd_step_size", "seed": "seed",
}


def config_from_params(params: dict[str, Any], prior_loss: str) -> LEBMConfig:
    """The LEBMConfig of the chapter's parameters (a dict as in notebooks/params/edlebm_mnist/*.yaml)."""
    known = {k: params[k] for k in PARAM_TO_CONFIG if k in params}
    return LEBMConfig(prior_loss=prior_loss, **{PARAM_TO_CONFIG[k]: v for k, v in known.items()})


def main(argv: list[str] | None = None) -> int:
    """``python -m edrepro.lebm [--profile quick] [--prior ed cd] [--set KEY=VALUE ...]``: train (or resume) runs."""
    import yaml

    from .pipeline import find_root, load_params
    from .train import resolve_device

    parser = argparse.ArgumentParser(prog="python -m edrepro.lebm", description="Train latent EBM priors on MNIST, resuming from checkpoints.")
    parser.add_argument("--profile", default="quick", choices=("smoke", "quick", "paper"), help="the chapter's parameter profile")
    parser.add_argument("--prior", nargs="+", default=["ed", "cd"], choices=PRIOR_LOSSES, help="which prior losses to train")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override a parameter of the profile (YAML value)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda (default: the profile's)")
    parser.add_argument("--runs", default=None, help="folder of run folders (default: the profile's runs_root, else runs)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from .data import mnist, to_signed_unit

    root = find_root()
    # quick.yaml holds the notebook's defaults; a profile overrides some of them.
    params = {**load_params(root, "edlebm_mnist", "quick"), **load_params(root, "edlebm_mnist", args.profile)}
    for item in args.set:
        key, _, value = item.partition("=")
        params[key] = yaml.safe_load(value)
    device = resolve_device(args.device or params.get("device", "auto"))
    if params.get("cpu_threads"):
        torch.set_num_threads(int(params["cpu_threads"]))
    images = to_signed_unit(mnist("train", params.get("data_root")).images)
    for prior_loss in args.prior:
        config = config_from_params(params, prior_loss)
        folder = run_folder(config, args.runs or params.get("runs_root") or "runs")
        print(f"{prior_loss}: run folder {folder}", flush=True)
        model = train(config, images, folder, device=device, progress=not args.no_progress)
        print(f"{prior_loss}: {model.epochs_done} epochs, {model.steps} iterations, {model.seconds_per_iteration:.3f} s/it", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
