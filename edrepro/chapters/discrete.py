"""Experiment mechanics of the discrete-ED chapter: Ising models and RBMs with exact likelihoods.

Binary data are {0,1}^D float tensors (the input of
:func:`edrepro.losses.bernoulli_energy_discrepancy`); Ising spins are s = 2x − 1.

**Ising** (:func:`sample_ising`, :func:`mixing_summary`, :func:`train_ising`). Ground truth
p(s) ∝ exp(sᵀJs), J = σ·A with A the adjacency of the periodic L×L lattice (sᵀJs counts every
edge twice, see :class:`edrepro.nets.IsingModel`). Training data are the end states of
independent Gibbs chains (:func:`edrepro.samplers.ising_gibbs`, colour-class updates). A
symmetric J_φ is learned with

- ``ed``: Bernoulli energy discrepancy + l1 penalty λ·Σ_ij |J_φ,ij|;
- ``pcd``: persistent contrastive divergence, the negatives advanced by systematic-scan Gibbs
  sweeps under the current J_φ (exact for a dense J_φ), + the same l1 penalty.

The metric is the negative log-RMSE of J, −log sqrt(mean_ij (J_φ,ij − J_ij)²) (higher is better).

**RBM** (:func:`train_rbm`). Bernoulli RBMs (:class:`edrepro.nets.RBM`) with few enough hidden
units that log Z is exact, trained by

- ``cd``: CD-k, negatives = k block-Gibbs steps from the data batch;
- ``pcd``: persistent CD, k block-Gibbs steps of persistent chains per update;
- ``ed``: Bernoulli energy discrepancy on the free energy F(v).

All three minimise a loss whose gradient is their estimate of the negative log-likelihood
gradient (for CD/PCD: mean F(v⁺) − mean F(v⁻)). The metric is the exact NLL in nats per image.

Runs are :class:`edrepro.book.runs.RunSpec` values (:func:`ising_spec`, :func:`rbm_spec`, and the page's
:func:`page_specs`) trained by :func:`train_ising_spec` / :func:`train_rbm_spec` through
:func:`edrepro.book.train.train`; :mod:`edrepro.book.runs` caches, locks, checkpoints and resumes them
(persistent chains are a model buffer, :class:`edrepro.nets.WithChains`, saved with it).

**Page helpers** (the bookkeeping of the discrete-ED page): :func:`fetch` (runs keyed like their
specs), the mixing checks :func:`start_agreement`, :func:`meeting_sweep`, :func:`burn_in_ratio`
and :func:`mixing_table`, the scores :func:`late_mean` and :func:`ising_scores`, the tables
:func:`ising_table` and :func:`rbm_table`, and :func:`expected_flips`, :func:`largest_rise`,
:func:`method_label`, :func:`conditions_text`, :func:`unused_pixel_weight_ratio`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import _checks, data, losses, nets, samplers
from ..book import page, runs, train

ISING_METHODS = ("ed", "pcd")
RBM_METHODS = ("cd", "pcd", "ed")
LABELS = {"ed": "ED-Bern", "pcd": "Persistent CD", "cd": "CD"}


# ------------------------------------------------------------------------------------------
# Ising ground truth, data and mixing diagnostics
# ------------------------------------------------------------------------------------------


def ising_coupling(side: int, sigma: float) -> torch.Tensor:
    """The ground-truth J = σ·A of the periodic ``side`` × ``side`` lattice, shape (side², side²)."""
    sigma = _checks.positive("sigma", sigma)
    return sigma * nets.lattice_adjacency(side)


def spins_to_binary(s: torch.Tensor) -> torch.Tensor:
    """x = (s + 1)/2: spins {−1, 1} → binary {0, 1}."""
    return (s + 1.0) / 2.0


def _trace(coupling: torch.Tensor):
    d = coupling.shape[0]

    def fn(s: torch.Tensor) -> torch.Tensor:
        # per chain: magnetisation m = mean spin, and energy per site −sᵀJs/D
        return torch.stack([s.mean(1), -((s @ coupling) * s).sum(1) / d], dim=1)

    return fn


@dataclass
class IsingSample:
    """End states of ``n`` Gibbs chains and their per-sweep trace.

    ``spins`` (n, D) in {−1, 1}; ``trace`` (n_sweeps, n, 2): per sweep and chain the magnetisation
    m and the energy per site −sᵀJs/D; ``start`` how the chains were initialised.
    """

    spins: torch.Tensor
    trace: torch.Tensor
    start: str
    seconds: float

    @property
    def binary(self) -> torch.Tensor:
        return spins_to_binary(self.spins)


def sample_ising(
    coupling: torch.Tensor,
    n_samples: int,
    n_sweeps: int,
    start: str = "aligned",
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> IsingSample:
    """``n_samples`` independent Gibbs chains of p(s) ∝ exp(sᵀJs), ``n_sweeps`` colour-class sweeps each.

    ``start``: ``"aligned"`` — every spin of a chain +1 or every spin −1, the sign drawn per chain
    with probability ½ (the model is symmetric under s → −s, so this start respects the symmetry,
    and in the ordered phase it starts inside one of the two phases, which single-site Gibbs on
    a torus cannot leave or reach from a random start in any affordable time); ``"random"`` —
    uniform spins. The sites are updated by colour classes of :func:`samplers.interaction_colouring`.
    """
    _checks.choice("start", start, ("aligned", "random"))
    n_samples = _checks.positive_int("n_samples", n_samples)
    d = coupling.shape[0]
    if start == "aligned":
        sign = torch.where(torch.rand(n_samples, 1, generator=generator) < 0.5, 1.0, -1.0)
        s0 = sign.expand(n_samples, d).clone()
    else:
        s0 = torch.where(torch.rand(n_samples, d, generator=generator) < 0.5, 1.0, -1.0)
    colouring = samplers.interaction_colouring(coupling)
    t0 = time.perf_counter()
    s, trace = samplers.ising_gibbs_trace(
        coupling, s0.to(coupling), n_sweeps, _trace(coupling), colouring=colouring, generator=generator, progress=progress
    )
    return IsingSample(s, trace, start, time.perf_counter() - t0)


def autocorrelation(series: torch.Tensor | np.ndarray, max_lag: int | None = None) -> np.ndarray:
    """Normalised autocorrelation ρ(k), k = 0…max_lag, of C parallel series of length T, shape (T, C).

    Each series is centred by the mean over all chains and times (the chains share one stationary
    law); the autocovariance at lag k is the average over chains and over the T − k available
    pairs (computed by FFT) and is divided by lag 0. With the unbiased 1/(T − k) normalisation a
    chain that never changes (e.g. the sign of m in the ordered phase) has ρ(k) = 1 at every lag.
    """
    x = np.asarray(series, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"series must have shape (T, C) with T >= 2, got {x.shape}")
    t = x.shape[0]
    max_lag = t - 1 if max_lag is None else _checks.positive_int("max_lag", max_lag, minimum=0)
    x = x - x.mean()
    n_fft = 1 << (2 * t - 1).bit_length()
    f = np.fft.rfft(x, n=n_fft, axis=0)
    k_max = min(max_lag, t - 1)
    acov = np.fft.irfft(f * np.conj(f), n=n_fft, axis=0)[: k_max + 1].mean(axis=1) / (t - np.arange(k_max + 1))
    if acov[0] <= 0:
        return np.ones_like(acov)  # a constant series: no fluctuation to decorrelate
    return acov / acov[0]


def integrated_time(rho: np.ndarray, c: float = 5.0) -> float:
    """Integrated autocorrelation time τ = 1 + 2 Σ_{k=1}^{W} ρ(k), with Sokal's window: the first W ≥ c·τ(W).

    Returns ``inf`` when no window up to len(rho) − 1 satisfies W ≥ c·τ (the series is too short).
    """
    rho = np.asarray(rho, dtype=float)
    c = _checks.positive("c", c)
    taus = 1.0 + 2.0 * np.cumsum(rho[1:])
    for w, tau in enumerate(taus, start=1):
        if w >= c * tau:
            return float(tau)
    return math.inf


@dataclass
class MixingSummary:
    """Mixing diagnostics of an :class:`IsingSample` (see :func:`mixing_summary`)."""

    tau_m: float
    tau_abs_m: float
    tau_energy: float
    mean_abs_m: float
    mean_energy: float


def mixing_summary(sample: IsingSample, burn_in: int) -> MixingSummary:
    """τ of m, |m| and the energy per site over sweeps ``burn_in``…end, and their equilibrium means.

    τ (in sweeps) comes from :func:`autocorrelation` and :func:`integrated_time` on the part of
    the trace after ``burn_in``; the means are over the same part and all chains.
    """
    burn_in = _checks.positive_int("burn_in", burn_in, minimum=0)
    tr = sample.trace[burn_in:].numpy()
    if tr.shape[0] < 10:
        raise ValueError(f"burn_in={burn_in} leaves {tr.shape[0]} sweeps of the trace; need at least 10")
    m, e = tr[..., 0], tr[..., 1]
    return MixingSummary(
        tau_m=integrated_time(autocorrelation(m)),
        tau_abs_m=integrated_time(autocorrelation(np.abs(m))),
        tau_energy=integrated_time(autocorrelation(e)),
        mean_abs_m=float(np.abs(m).mean()),
        mean_energy=float(e.mean()),
    )


def neg_log_rmse(coupling: torch.Tensor, true_coupling: torch.Tensor) -> float:
    """−log RMSE(J_φ, J) = −½·log mean_ij (J_φ,ij − J_ij)² over all D² entries (higher is better)."""
    if coupling.shape != true_coupling.shape:
        raise ValueError(f"coupling shapes differ: {tuple(coupling.shape)} and {tuple(true_coupling.shape)}")
    mse = ((coupling.detach().double().cpu() - true_coupling.detach().double().cpu()) ** 2).mean().item()
    return math.inf if mse == 0 else -0.5 * math.log(mse)


# ------------------------------------------------------------------------------------------
# Learning an Ising model
# ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def ising_data(side: int, sigma: float, n_samples: int, burn_in: int, seed: int) -> IsingSample:
    """The training configurations of an Ising run: ``n_samples`` aligned-start Gibbs chains of the
    ``side`` × ``side`` lattice with coupling ``sigma`` after ``burn_in`` sweeps.

    The chains' generator is seeded by (``seed``, σ) alone, so every run (and every worker process)
    regenerates the same data; the result is kept in memory for repeated calls.
    """
    side = _checks.positive_int("side", side, minimum=3)
    _checks.positive_int("n_samples", n_samples)
    _checks.positive_int("burn_in", burn_in)
    _checks.positive_int("seed", seed, minimum=0)
    state = np.random.SeedSequence([seed, round(_checks.positive("sigma", sigma) * 1_000_000), 0x1516]).generate_state(1, dtype=np.uint64)
    generator = torch.Generator().manual_seed(int(state[0] >> 1))
    return sample_ising(ising_coupling(side, sigma), n_samples, burn_in, "aligned", generator)


def _ising_pcd_sampler(sweeps: int) -> losses.Sampler:
    # Chains are kept as binary rows like the data; Gibbs runs on their spins s = 2x − 1.
    def sample(model: nn.Module, chains: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        return spins_to_binary(samplers.ising_gibbs(model.coupling.detach(), 2.0 * chains - 1.0, sweeps, generator=g))

    return sample


def ising_spec(
    method: str, side: int, sigma: float, n_steps: int, *, n_samples: int = 2000, burn_in: int = 1000,
    lr: float = 1e-2, batch_size: int = 256, l1: float = 0.01, eps: float = 0.1, m_particles: int = 32,
    w: float = 1.0, n_chains: int = 256, gibbs_sweeps: int = 1, eval_every: int = 100, seed: int = 0,
) -> runs.RunSpec:
    """The run that learns a symmetric J_φ (from J_φ = 0) from :func:`ising_data` with ``method``.

    Both methods: Adam(``lr``), mini-batches of ``batch_size`` rows without repeats, ``n_steps``
    updates, the loss plus ``l1``·Σ_ij |J_φ,ij| (all D² entries, i.e. each pair twice).

    - ``ed``: :func:`losses.bernoulli_energy_discrepancy` with flip probability ``eps``,
      ``m_particles`` negatives and stabiliser ``w``;
    - ``pcd``: mean E(x⁺) − mean E(x⁻) with x⁻ the ``n_chains`` persistent chains (uniform start)
      after ``gibbs_sweeps`` systematic-scan Gibbs sweeps under the current J_φ, all chains every
      step. Its gradient is the stochastic log-likelihood gradient ⟨ssᵀ⟩_model − ⟨ssᵀ⟩_data.

    The metric ``neg_log_rmse`` (:func:`neg_log_rmse` against the true J) is recorded at step 0,
    every ``eval_every`` steps and at the end.
    """
    _checks.choice("method", method, ISING_METHODS)
    for name, value in (("n_steps", n_steps), ("batch_size", batch_size), ("eval_every", eval_every), ("m_particles", m_particles), ("n_chains", n_chains), ("gibbs_sweeps", gibbs_sweeps)):
        _checks.positive_int(name, value)
    _checks.positive("lr", lr)
    _checks.non_negative("l1", l1)
    _checks.open_unit("eps", eps)
    _checks.non_negative("w", w)
    hp = {"eps": eps, "m_particles": m_particles, "w": w} if method == "ed" else {"n_chains": n_chains, "gibbs_sweeps": gibbs_sweeps}
    settings = {"side": side, "sigma": sigma, "n_samples": n_samples, "burn_in": burn_in, "lr": lr, "batch_size": batch_size, "l1": l1, "eval_every": eval_every}
    return runs.RunSpec("ising", method, f"ising-L{side}-sigma{sigma:g}", seed, n_steps, hp, settings, "discrete_ed", 1000)


def _ising_model(spec: runs.RunSpec, d: int) -> nn.Module:
    model: nn.Module = nets.IsingModel(d)
    if spec.method == "pcd":
        gen = torch.Generator().manual_seed(spec.seed)
        model = nets.WithChains(model, spins_to_binary(torch.where(torch.rand(spec.hparams["n_chains"], d, generator=gen) < 0.5, 1.0, -1.0)))
    return model


def train_ising_spec(spec: runs.RunSpec, checkpoint: Any = None, device: torch.device | str = "cpu", progress: bool = True) -> runs.Outcome:
    """Train an ``ising`` run (the trainer :mod:`edrepro.book.runs` calls)."""
    s, hp = spec.settings, spec.hparams
    device = train.resolve_device(device)
    x_train = ising_data(s["side"], s["sigma"], s["n_samples"], s["burn_in"], spec.seed).binary
    truth = ising_coupling(s["side"], s["sigma"]).to(device)
    model = _ising_model(spec, x_train.shape[1]).to(device)
    if spec.method == "ed":
        base = losses.bind("ed_bernoulli", **hp)
    else:
        base = losses.bind("pcd", sampler=_ising_pcd_sampler(hp["gibbs_sweeps"]))

    def loss_fn(m: nn.Module, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        return base(m, x, g) + s["l1"] * nets.unwrap(m).coupling.abs().sum()

    return train.train(
        model, train.with_device_noise(loss_fn, device), x_train.to(device), spec.budget, lr=s["lr"], batch_size=s["batch_size"],
        eval_every=s["eval_every"], eval_fn=lambda m, step: {"neg_log_rmse": neg_log_rmse(nets.unwrap(m).coupling, truth)},
        generator=torch.Generator().manual_seed(spec.seed), on_nonfinite="stop", checkpoint_path=checkpoint,
        checkpoint_every=spec.checkpoint_every, progress=progress, desc=f"ising {spec.method} σ={s['sigma']:g}",
    )


def ising_model(record: runs.RunRecord) -> nets.IsingModel:
    """The learned Ising model of an ``ising`` run."""
    d = record.spec.settings["side"] ** 2
    model = _ising_model(record.spec, d)
    model.load_state_dict(record.state()["model"])
    return nets.unwrap(model).requires_grad_(False)


# ------------------------------------------------------------------------------------------
# RBMs on binarised MNIST
# ------------------------------------------------------------------------------------------


def binarise(images: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """uint8 images (N, H, W) → float {0, 1} rows (N, H·W): pixel/255 > ``threshold``."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 3:
        raise ValueError(f"images must be a uint8 tensor of shape (N, H, W), got {_checks._show(images)}")
    threshold = _checks.unit_interval("threshold", threshold)
    return (images.float() / 255.0 > threshold).float().reshape(images.shape[0], -1)


def bernoulli_nll(mean: torch.Tensor, x: torch.Tensor, clamp: float = 1e-3) -> float:
    """Mean NLL in nats per row of binary ``x`` under independent Bernoullis with ``mean`` (clamped to [clamp, 1 − clamp])."""
    x = _checks.binary_batch("x", x)
    p = mean.clamp(clamp, 1 - clamp).to(x)
    return float(-(x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum(1).mean())


@torch.no_grad()
def rbm_nll(rbm: nets.RBM, x: torch.Tensor, chunk_size: int = 4096) -> float:
    """Exact mean NLL in nats per row, mean_i [F(x_i)] + log Z, with log Z summed over all hidden states."""
    return _nll(rbm, _checks.binary_batch("x", x), chunk_size)


@torch.no_grad()
def _nll(rbm: nets.RBM, x: torch.Tensor, chunk_size: int = 4096) -> float:
    log_z = rbm.log_partition(chunk_size)
    return float(torch.cat([rbm.free_energy(c) for c in x.split(8192)]).mean() + log_z)


@functools.lru_cache(maxsize=2)
def mnist_binary(split: str, threshold: float = 0.5) -> torch.Tensor:
    """Binarised MNIST rows of ``split`` (:func:`binarise` of :func:`edrepro.data.mnist`), kept in memory."""
    return binarise(data.mnist(split).images, threshold)


def rbm_spec(
    method: str, n_hidden: int, n_steps: int, *, lr: float = 1e-2, batch_size: int = 100, eps: float = 0.01,
    m_particles: int = 32, w: float = 1.0, cd_steps: int = 1, n_chains: int = 100, init_std: float = 0.01,
    eval_every: int = 500, eval_train: int = 10_000, seed: int = 0,
) -> runs.RunSpec:
    """The run that trains an RBM with ``n_hidden`` hidden units on binarised MNIST by ``method``.

    Every method: the same initial RBM (W ~ N(0, ``init_std``²) from ``seed``, b_h = 0, b_v = the
    logits of the training mean, i.e. the data-mean Bernoulli model), Adam(``lr``), mini-batches
    of ``batch_size`` rows without repeats, ``n_steps`` updates.

    - ``cd``: mean F(v⁺) − mean F(v⁻), v⁻ = ``cd_steps`` block-Gibbs steps from the batch;
    - ``pcd``: the same with v⁻ = ``n_chains`` persistent chains (start: Bernoulli(data mean))
      advanced ``cd_steps`` steps per update;
    - ``ed``: :func:`losses.bernoulli_energy_discrepancy` of the free energy (``eps``,
      ``m_particles``, ``w``).

    Recorded at step 0, every ``eval_every`` steps and at the end: the exact NLL (nats per image)
    of the whole test set (``test_nll``) and of the first ``eval_train`` training rows (``train_nll``).
    """
    _checks.choice("method", method, RBM_METHODS)
    n_hidden = _checks.positive_int("n_hidden", n_hidden)
    if n_hidden > nets.RBM.max_exact_hidden:
        raise ValueError(f"n_hidden must be <= {nets.RBM.max_exact_hidden} for an exact log Z, got {n_hidden}")
    for name, value in (("n_steps", n_steps), ("batch_size", batch_size), ("m_particles", m_particles), ("cd_steps", cd_steps), ("n_chains", n_chains), ("eval_every", eval_every), ("eval_train", eval_train)):
        _checks.positive_int(name, value)
    _checks.positive("lr", lr)
    _checks.open_unit("eps", eps)
    _checks.non_negative("w", w)
    _checks.positive("init_std", init_std)
    hp = {"ed": {"eps": eps, "m_particles": m_particles, "w": w}, "cd": {"cd_steps": cd_steps},
          "pcd": {"cd_steps": cd_steps, "n_chains": n_chains}}[method]
    settings = {"n_hidden": n_hidden, "lr": lr, "batch_size": batch_size, "init_std": init_std, "eval_every": eval_every, "eval_train": eval_train}
    return runs.RunSpec("rbm", method, "mnist-binarised", seed, n_steps, hp, settings, "discrete_ed", 1000)


def _rbm_model(spec: runs.RunSpec, train_x: torch.Tensor) -> nn.Module:
    mean = train_x.mean(0)
    gen = torch.Generator().manual_seed(spec.seed)
    model: nn.Module = nets.RBM(train_x.shape[1], spec.settings["n_hidden"], spec.settings["init_std"], nets.bernoulli_logits(mean), generator=gen)
    if spec.method == "pcd":
        model = nets.WithChains(model, (torch.rand(spec.hparams["n_chains"], train_x.shape[1], generator=gen) < mean).float())
    return model


def _rbm_gibbs_sampler(k: int) -> losses.Sampler:
    return lambda rbm, v0, g: samplers.rbm_gibbs(rbm, v0, k, generator=g)[0]


def train_rbm_spec(spec: runs.RunSpec, checkpoint: Any = None, device: torch.device | str = "cpu", progress: bool = True) -> runs.Outcome:
    """Train an ``rbm`` run (the trainer :mod:`edrepro.book.runs` calls)."""
    s, hp = spec.settings, spec.hparams
    device = train.resolve_device(device)
    train_x, test_x = mnist_binary("train"), mnist_binary("test")
    model = _rbm_model(spec, train_x).to(device)
    test_dev, train_eval = test_x.to(device), train_x[: s["eval_train"]].to(device)
    if spec.method == "ed":
        loss_fn = losses.bind("ed_bernoulli", **hp)
    else:
        loss_fn = losses.bind(spec.method, sampler=_rbm_gibbs_sampler(hp["cd_steps"]))

    def eval_fn(m: nn.Module, step: int) -> dict[str, float]:
        rbm = nets.unwrap(m)
        return {"test_nll": _nll(rbm, test_dev), "train_nll": _nll(rbm, train_eval)}

    return train.train(
        model, train.with_device_noise(loss_fn, device), train_x.to(device), spec.budget, lr=s["lr"], batch_size=s["batch_size"],
        eval_every=s["eval_every"], eval_fn=eval_fn, generator=torch.Generator().manual_seed(spec.seed), on_nonfinite="stop",
        checkpoint_path=checkpoint, checkpoint_every=spec.checkpoint_every, progress=progress, desc=f"rbm {spec.method}",
    )


def rbm_model(record: runs.RunRecord) -> nets.RBM:
    """The trained RBM of an ``rbm`` run."""
    model = _rbm_model(record.spec, mnist_binary("train"))
    model.load_state_dict(record.state()["model"])
    return nets.unwrap(model).requires_grad_(False)


def ising_specs(params: Mapping[str, Any]) -> dict[tuple[float, str], runs.RunSpec]:
    """The page's Ising runs by (σ, method)."""
    return {
        (sigma, method): ising_spec(
            method, params["side"], sigma, params["ising_steps"], n_samples=params["n_samples"], burn_in=params["burn_in"],
            lr=params["ising_lr"], batch_size=params["ising_batch"], l1=params["l1"], eps=params["ising_eps"],
            m_particles=params["m_particles"], w=params["w"], n_chains=params["pcd_chains"], gibbs_sweeps=params["pcd_sweeps"],
            eval_every=params["ising_eval_every"], seed=params["seed"],
        )
        for sigma in params["sigmas"] for method in ISING_METHODS
    }


def eps_ablation_specs(params: Mapping[str, Any]) -> dict[tuple[float, float], runs.RunSpec]:
    """The page's side experiment: ED-Bern with the flip probabilities ``ablation_eps`` at ``ablation_sigmas``."""
    return {
        (sigma, eps): ising_spec(
            "ed", params["side"], sigma, params["ising_steps"], n_samples=params["n_samples"], burn_in=params["burn_in"],
            lr=params["ising_lr"], batch_size=params["ising_batch"], l1=params["l1"], eps=eps,
            m_particles=params["m_particles"], w=params["w"], eval_every=params["ising_eval_every"], seed=params["seed"],
        )
        for sigma in params["ablation_sigmas"] if sigma in params["sigmas"] for eps in params["ablation_eps"]
    }


def rbm_specs(params: Mapping[str, Any]) -> dict[str, runs.RunSpec]:
    """The page's RBM runs by method."""
    return {
        method: rbm_spec(
            method, params["n_hidden"], params["rbm_steps"], lr=params["rbm_lr"], batch_size=params["rbm_batch"],
            eps=params["rbm_eps"], m_particles=params["rbm_m_particles"], w=params["w"], cd_steps=params["cd_steps"],
            n_chains=params["rbm_chains"], eval_every=params["rbm_eval_every"], seed=params["seed"],
        )
        for method in RBM_METHODS
    }


def page_specs(params: Mapping[str, Any]) -> list[runs.RunSpec]:
    """Every run of the discrete-ED page for its parameters."""
    return [*ising_specs(params).values(), *eps_ablation_specs(params).values(), *rbm_specs(params).values()]


# ------------------------------------------------------------------------------------------
# Reference values and tables
# ------------------------------------------------------------------------------------------

PAPER_ISING: dict[float, dict[str, float]] = {
    0.1: {"ed": 5.1, "gibbs": 4.8, "gwg": 4.8},
    0.2: {"ed": 4.0, "gibbs": 4.7, "gwg": 4.7},
    0.3: {"ed": 2.9, "gibbs": 3.4, "gwg": 3.4},
    0.4: {"ed": 2.5, "gibbs": 2.6, "gwg": 2.6},
    0.5: {"ed": 2.3, "gibbs": 2.3, "gwg": 2.3},
}
"""Negative log-RMSE of J reported by the workshop paper (arXiv 2307.07595) for D = 10×10:
ED-Bern, PCD with Gibbs sampling and with Gibbs-with-gradients (GWG)."""


def zero_coupling_score(side: int, sigma: float) -> float:
    """Negative log-RMSE of the trivial estimate J_φ = 0: −log(σ·√(4D)/D) = −log(2σ/side)."""
    side = _checks.positive_int("side", side, minimum=3)
    sigma = _checks.positive("sigma", sigma)
    return -math.log(2.0 * sigma / side)


# ------------------------------------------------------------------------------------------
# Page helpers: fetching runs, mixing diagnostics, scores and tables
# ------------------------------------------------------------------------------------------


def fetch(specs: Mapping[Any, runs.RunSpec], **kwargs: Any) -> dict[Any, runs.RunRecord]:
    """:func:`edrepro.book.runs.fetch_all` of a dict of specs (e.g. :func:`ising_specs`), keyed like it.

    ``kwargs`` go to ``fetch_all`` (``device``, ``fresh``, ``workers``, ...).
    """
    if not isinstance(specs, Mapping) or not specs:
        raise ValueError(f"specs must be a non-empty dict of RunSpec, got {_checks._show(specs)}")
    return dict(zip(specs, runs.fetch_all(list(specs.values()), **kwargs)))


def _statistic(sample: IsingSample, quantity: str) -> np.ndarray:
    """Per sweep and chain: ``"energy"`` per site or ``"abs_m"`` = |m|, shape (n_sweeps, n)."""
    _checks.choice("quantity", quantity, ("energy", "abs_m"))
    trace = sample.trace.double().numpy()
    return trace[..., 1] if quantity == "energy" else np.abs(trace[..., 0])


@dataclass
class Agreement:
    """The difference of two equilibrium means (aligned − random start) and its standard error."""

    difference: float
    stderr: float

    @property
    def z(self) -> float:
        """|difference| in standard errors (∞ when the standard error is 0 or ∞ and the difference is not 0)."""
        if self.difference == 0:
            return 0.0
        return abs(self.difference) / self.stderr if 0 < self.stderr < math.inf else math.inf


def start_agreement(aligned: IsingSample, random: IsingSample, burn_in: int) -> dict[str, Agreement]:
    """Do two sets of chains of one model agree after ``burn_in`` sweeps? For the energy per site
    and |m|: the difference of their means over sweeps ``burn_in``…end and all chains, with the
    standard error of that difference for correlated sweeps and independent chains,

        se² = Σ_starts var·τ / (C·T),

    var the variance over chains and sweeps, τ the integrated autocorrelation time
    (:func:`integrated_time`), C chains and T sweeps; se = ∞ when τ cannot be estimated.
    """
    out = {}
    for quantity in ("energy", "abs_m"):
        means, variance = [], 0.0
        for sample in (aligned, random):
            x = _statistic(sample, quantity)[_checks.positive_int("burn_in", burn_in, minimum=0):]
            if x.shape[0] < 10:
                raise ValueError(f"burn_in={burn_in} leaves {x.shape[0]} sweeps of the trace; need at least 10")
            tau = integrated_time(autocorrelation(x))
            means.append(float(x.mean()))
            variance += float(x.var()) * tau / x.size if x.var() > 0 else 0.0
        out[quantity] = Agreement(means[0] - means[1], math.sqrt(variance) if math.isfinite(variance) else math.inf)
    return out


def meeting_sweep(aligned: IsingSample, random: IsingSample, quantity: str = "energy", z: float = 5.0) -> int | None:
    """The first sweep from which on the chain averages of ``quantity`` (``"energy"`` or
    ``"abs_m"``) of two sets of independent chains differ by at most ``z`` standard errors at
    every later sweep, se(t)² = var_a(t)/C_a + var_r(t)/C_r; None if they differ at the last sweep.
    """
    z = _checks.positive("z", z)
    a, r = _statistic(aligned, quantity), _statistic(random, quantity)
    if a.shape[0] != r.shape[0]:
        raise ValueError(f"aligned and random must have traces of equal length, got {a.shape[0]} and {r.shape[0]} sweeps")
    se = np.sqrt(a.var(1) / a.shape[1] + r.var(1) / r.shape[1])
    apart = np.abs(a.mean(1) - r.mean(1)) > z * se + 1e-12
    if apart[-1]:
        return None
    last_apart = np.flatnonzero(apart)
    return int(last_apart[-1]) + 2 if last_apart.size else 1  # sweeps are numbered from 1


def burn_in_ratio(summary: MixingSummary, burn_in: int) -> float:
    """``burn_in`` in units of the slower of τ_|m| and τ_E (0 when either is infinite)."""
    burn_in = _checks.positive_int("burn_in", burn_in)
    tau = max(summary.tau_abs_m, summary.tau_energy)
    return burn_in / tau if math.isfinite(tau) else 0.0


def mixing_table(aligned: Mapping[float, IsingSample], random: Mapping[float, IsingSample], burn_in: int, part: str = "all") -> str:
    """Markdown: per σ the τ's of the aligned-start chains (second half of ``burn_in``),
    burn-in/max(τ_|m|, τ_E), and the equilibrium means of |m| and the energy of both starts.
    ``part`` = ``"times"`` keeps the first four, ``"means"`` the last four (a narrower table each)."""
    _checks.choice("part", part, ("all", "times", "means"))
    if set(aligned) != set(random) or not aligned:
        raise ValueError("aligned and random must hold samples for the same, non-empty set of σ")
    rows = []
    for sigma in aligned:
        mx, rs = mixing_summary(aligned[sigma], burn_in // 2), mixing_summary(random[sigma], burn_in // 2)
        rows.append([sigma, mx.tau_m, mx.tau_abs_m, mx.tau_energy, burn_in_ratio(mx, burn_in),
                     mx.mean_abs_m, rs.mean_abs_m, mx.mean_energy, rs.mean_energy])
    header = ["σ", "τ_m", "τ_\\|m\\|", "τ_E", "burn-in / max(τ_\\|m\\|, τ_E)", "⟨\\|m\\|⟩ aligned",
              "⟨\\|m\\|⟩ random", "⟨E⟩/D aligned", "⟨E⟩/D random"]
    keep = {"all": range(9), "times": range(5), "means": (0, 5, 6, 7, 8)}[part]
    return page.markdown_table([header[k] for k in keep], [[row[k] for k in keep] for row in rows], digits=3)


def expected_flips(eps: float, d: int) -> float:
    """Expected Hamming distance between a data point and an ED-Bern negative, 2ε(1 − ε)·D.

    A negative is x ⊕ ξ ⊕ ξ' with ξ, ξ' ~ Bernoulli(ε)^D: a bit differs when exactly one of
    its two flips happens, with probability 2ε(1 − ε).
    """
    eps = _checks.open_unit("eps", eps)
    return 2.0 * eps * (1.0 - eps) * _checks.positive_int("d", d)


def largest_rise(values: Any) -> float:
    """The largest increase between two consecutive values, max(0, max_k v_{k+1} − v_k): how far a
    loss-like curve (lower is better) ever went back up between two evaluations."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size < 1 or not np.isfinite(v).all():
        raise ValueError(f"values must be a non-empty 1-D sequence of finite numbers, got {_checks._show(values)}")
    return float(max(0.0, np.diff(v).max())) if v.size > 1 else 0.0


def method_label(method: str, cd_steps: int = 1) -> str:
    """The display name of a method: ``ED-Bern``, ``Persistent CD``, ``CD-k`` (k = ``cd_steps``)."""
    _checks.choice("method", method, LABELS)
    return f"CD-{_checks.positive_int('cd_steps', cd_steps)}" if method == "cd" else LABELS[method]


def late_mean(record: runs.RunRecord, metric: str, fraction: float = 0.25) -> float:
    """The mean of ``metric`` over the evaluations in the last ``fraction`` of training (steps ≥
    (1 − fraction)·steps): the level a run settled at, less noisy than its last evaluation alone."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be a number in (0, 1], got {_checks._show(fraction)}")
    steps, values = record.step_curve, record.curve(metric)
    late = [v for s, v in zip(steps, values) if s >= (1.0 - fraction) * steps[-1]]
    return float(np.mean(late))


def ising_scores(records: Mapping[tuple[float, str], runs.RunRecord], method: str) -> dict[float, float]:
    """Negative log-RMSE of J by σ for one ``method`` of :func:`ising_specs`' records: its
    :func:`late_mean` over the last quarter of training."""
    _checks.choice("method", method, ISING_METHODS)
    scores = {sigma: late_mean(r, "neg_log_rmse") for (sigma, m), r in records.items() if m == method}
    if not scores:
        raise ValueError(f"records hold no run of method {method!r}")
    return scores


def flip_scores(ablation_runs: Mapping[tuple[float, float], runs.RunRecord], ising_runs: Mapping[tuple[float, str], runs.RunRecord],
                eps: float) -> dict[tuple[float, float], float]:
    """ED-Bern's score (:func:`late_mean` of −log RMSE(J)) by (σ, ε) for the flip-probability runs, with
    the main Ising runs' ED-Bern score at ε = ``eps`` added for every σ of the side experiment."""
    scores = {k: late_mean(r, "neg_log_rmse") for k, r in ablation_runs.items()}
    ed = ising_scores(ising_runs, "ed")
    scores.update({(s, eps): ed[s] for s, _ in list(scores)})
    return scores


def ising_table(records: Mapping[tuple[float, str], runs.RunRecord], side: int) -> str:
    """Markdown: per σ the scores of ED-Bern and PCD (:func:`ising_scores`) and of J = 0 on the
    ``side`` × ``side`` lattice, next to :data:`PAPER_ISING` (D = 100) and J = 0 on the paper's 10 × 10 lattice."""
    ed, pcd = ising_scores(records, "ed"), ising_scores(records, "pcd")
    d = _checks.positive_int("side", side, minimum=3) ** 2
    rows = []
    for sigma in ed:
        ref = PAPER_ISING.get(sigma, {})
        rows.append([sigma, ed[sigma], pcd.get(sigma), zero_coupling_score(side, sigma), ref.get("ed"), ref.get("gibbs"),
                     ref.get("gwg"), zero_coupling_score(10, sigma)])
    header = ["σ", f"ED-Bern, D={d}", f"PCD, D={d}", f"J = 0, D={d}", "ED-Bern, paper", "Gibbs, paper", "GWG, paper", "J = 0, D=100"]
    return page.markdown_table(header, rows)


def rbm_table(records: Mapping[str, runs.RunRecord], baseline_nll: float, cd_steps: int = 1) -> str:
    """Markdown: per RBM run the test NLL at the start, its best, its final value, the final
    training NLL, the largest rise between two evaluations and the milliseconds per update;
    a last row for the data-mean Bernoulli model with NLL ``baseline_nll``."""
    rows = []
    for method, r in records.items():
        nll = r.curve("test_nll")
        rows.append([method_label(method, cd_steps), nll[0], min(nll), nll[-1], r.final("train_nll"), largest_rise(nll),
                     1000.0 / r.steps_per_second])
    rows.append(["data-mean Bernoulli", baseline_nll, None, baseline_nll, None, None, None])
    header = ["model", "test NLL, start", "best", "final", "train NLL, final", "largest rise", "ms / update"]
    return page.markdown_table(header, rows)


def conditions_text(records: Any) -> str:
    """One line on where ``records`` (a list or dict of :class:`RunRecord`) were trained: device and
    CPU, torch threads, the range of the load average at their start and of their dates."""
    records = list(records.values()) if isinstance(records, Mapping) else list(records)
    if not records or not all(isinstance(r, runs.RunRecord) for r in records):
        raise ValueError("records must be a non-empty collection of RunRecord")
    cond = [r.conditions for r in records]

    def values(key: str) -> str:
        found = sorted({str(c[key]) for c in cond if key in c})
        return ", ".join(found) if found else "unknown"

    def span(key: str, fmt: str = "{}") -> str:
        found = sorted(c[key] for c in cond if c.get(key) is not None)
        if not found:
            return "unknown"
        lo, hi = fmt.format(found[0]), fmt.format(found[-1])
        return lo if lo == hi else f"{lo} to {hi}"

    return (f"{len(records)} runs on {values('device')} ({values('cpu')}), torch threads {values('threads')}, "
            f"load average at their start {span('load_start', '{:.1f}')}, trained {span('date')}")


def unused_pixel_weight_ratio(rbm: nets.RBM, x: torch.Tensor) -> tuple[int, float]:
    """How strongly an RBM weights the pixels that no row of ``x`` switches on.

    Returns (number of such pixels, RMS of their weights / RMS of the other pixels' weights);
    the ratio is NaN when every pixel is used or none is.
    """
    x = _checks.binary_batch("x", x)
    if x.shape[1] != rbm.n_visible:
        raise ValueError(f"x must have {rbm.n_visible} columns like the RBM's visible units, got {x.shape[1]}")
    unused = x.sum(0) == 0
    w = rbm.weight.detach().double()
    if unused.all() or not unused.any():
        return int(unused.sum()), math.nan
    return int(unused.sum()), float(w[unused].pow(2).mean().sqrt() / w[~unused].pow(2).mean().sqrt())


# ------------------------------------------------------------------------------------------
# The page's claims on trained runs (live or precomputed)
# ------------------------------------------------------------------------------------------


def keyed_records(records: Any, params: Mapping[str, Any]) -> tuple[dict, dict, dict]:
    """Sort a flat list of the page's run records (e.g. a results file's) into the page's three maps:
    Ising runs by (σ, method), flip-probability runs by (σ, ε), RBM runs by method; matched by run key
    against the specs that ``params`` give. A record no spec of ``params`` asks for raises ValueError."""
    by_key = {r.spec.key: r for r in records}
    maps = (ising_specs(params), eps_ablation_specs(params), rbm_specs(params))
    found = tuple({k: by_key[s.key] for k, s in m.items() if s.key in by_key} for m in maps)
    if sum(len(f) for f in found) != len(by_key):
        raise ValueError(f"records hold {len(by_key)} runs but the parameters ask for {sum(len(f) for f in found)} of them")
    return found


def ising_claims(ising_runs: Mapping[tuple[float, str], runs.RunRecord], side: int,
                 ablation_scores: Mapping[tuple[float, float], float] | None = None, eps: float = 0.1) -> list[Any]:
    """The paper's Ising claims, on Ising runs by (σ, method) of a ``side`` × ``side`` lattice.

    Scores are :func:`ising_scores`; "gain" is a score minus :func:`zero_coupling_score`. A claim
    whose σ is not among the runs is left out: ED-Bern ≥ PCD at σ = 0.1; ED-Bern < PCD at σ = 0.2 and 0.3; for σ ≥ 0.4
    each gain is below a quarter of the same method's gain at σ = 0.1; and, with ``ablation_scores``
    (ED-Bern's score by (σ, ε), including ε = ``eps``), a flip probability below ``eps`` scores higher at σ = 0.3.
    """
    from ..book.claims import Claim

    ed, pcd = ising_scores(ising_runs, "ed"), ising_scores(ising_runs, "pcd")
    sigmas = sorted(ed)
    gain = {m: {s: scores[s] - zero_coupling_score(side, s) for s in sigmas} for m, scores in (("ed", ed), ("pcd", pcd))}
    mid, high = [s for s in sigmas if s in (0.2, 0.3)], [s for s in sigmas if s >= 0.4]

    def listed(text: Any, keys: list[float]) -> str:
        return ", ".join(text(k) for k in keys)

    claims = []
    if 0.1 in ed:
        claims.append(Claim("As in the paper, ED-Bern scores at least as well as persistent CD at σ = 0.1",
                            f"ED {ed[0.1]:.2f}, PCD {pcd[0.1]:.2f}", ed[0.1] >= pcd[0.1]))
    if mid:
        claims.append(Claim("As in the paper, ED-Bern scores below persistent CD at σ = 0.2 and 0.3",
                            listed(lambda s: f"σ={s}: ED {ed[s]:.2f}, PCD {pcd[s]:.2f}", mid), all(ed[s] < pcd[s] for s in mid)))
    if high and 0.1 in ed:
        claims.append(Claim("As in the paper, in the ordered phase (σ ≥ 0.4) neither method gets far beyond J = 0: each gain is "
                            "below a quarter of the same method's gain at σ = 0.1",
                            listed(lambda s: f"σ={s}: ED {gain['ed'][s]:+.2f}, PCD {gain['pcd'][s]:+.2f}", high),
                            all(gain[m][s] < 0.25 * gain[m][0.1] for m in gain for s in high)))
    smaller = [e for (s, e) in (ablation_scores or {}) if s == 0.3 and e < eps]
    if smaller and (0.3, eps) in ablation_scores:
        best = max(smaller, key=lambda e: ablation_scores[0.3, e])
        claims.append(Claim(f"The flip probability matters near criticality: at σ = 0.3 a flip probability below ε = {eps:g} "
                            f"scores higher than ε = {eps:g}",
                            f"ε = {best:g}: {ablation_scores[0.3, best]:.2f}, ε = {eps:g}: {ablation_scores[0.3, eps]:.2f}",
                            ablation_scores[0.3, best] > ablation_scores[0.3, eps]))
    return claims


def learning_claim(ising_runs: Mapping[tuple[float, str], runs.RunRecord], side: int) -> Any:
    """The book's own Ising claim (not the paper's), for the σ ≤ 0.2 among the runs: ED-Bern's gain over
    J = 0 is at least half of persistent CD's, and PCD's gain is positive. None without such a σ."""
    from ..book.claims import Claim

    ed, pcd = ising_scores(ising_runs, "ed"), ising_scores(ising_runs, "pcd")
    low = [s for s in sorted(ed) if s <= 0.2]
    if not low:
        return None
    gain = {m: {s: scores[s] - zero_coupling_score(side, s) for s in low} for m, scores in (("ed", ed), ("pcd", pcd))}
    return Claim("ED-Bern learns the couplings for σ ≤ 0.2: its gain over J = 0 is at least half of persistent CD's",
                 ", ".join(f"σ={s}: ED {gain['ed'][s]:+.2f}, PCD {gain['pcd'][s]:+.2f}" for s in low),
                 all(gain["ed"][s] >= 0.5 * gain["pcd"][s] > 0 for s in low))


def rbm_claims(rbm_runs: Mapping[str, runs.RunRecord], cd_steps: int = 1) -> list[Any]:
    """The RBM claims of the page on runs by method ("ed", "pcd", "cd"), from their exact test NLL
    curves: ED-Bern's largest rise between two evaluations (:func:`largest_rise`) is below PCD's, and
    its final NLL is at most CD's final NLL plus CD's own largest rise."""
    from ..book.claims import Claim

    nll = {m: rbm_runs[m].curve("test_nll") for m in RBM_METHODS}
    rises = {m: largest_rise(v) for m, v in nll.items()}
    cd = method_label("cd", cd_steps)
    return [
        Claim("ED-Bern's exact test NLL is steadier than persistent CD's: a smaller largest rise between two evaluations",
              f"ED {rises['ed']:.1f} nats, PCD {rises['pcd']:.1f} nats", rises["ed"] < rises["pcd"]),
        Claim(f"ED-Bern's RBM ends as well as {cd}'s: its final test NLL is at most {cd}'s plus the largest rise of "
              f"{cd}'s curve between two evaluations",
              f"ED {nll['ed'][-1]:.1f}, {cd} {nll['cd'][-1]:.1f} + {rises['cd']:.1f}", nll["ed"][-1] <= nll["cd"][-1] + rises["cd"]),
    ]


MIXING_MIN_RATIO = 50.0
"""The data chains' burn-in must be at least this many integrated autocorrelation times (:func:`mixing_checks`)."""
START_AGREEMENT_Z = 4.0
"""Aligned and random starts must agree to within this many standard errors (:func:`mixing_checks`)."""


def mixing_checks(aligned: Mapping[float, IsingSample], random: Mapping[float, IsingSample], burn_in: int,
                  min_ratio: float = MIXING_MIN_RATIO, max_z: float = START_AGREEMENT_Z) -> list[Any]:
    """The instrument checks of the data-generating Gibbs chains, one per statement, over every σ:

    - the burn-in is at least ``min_ratio`` integrated autocorrelation times of |m| and of the energy
      (:func:`burn_in_ratio` of the aligned chains' second half);
    - aligned and random starts agree: their equilibrium means of the energy and |m| (second half of
      the burn-in) differ by at most ``max_z`` standard errors (:func:`start_agreement`).

    They check the sampler that makes the training data, not a claim of the paper."""
    from ..book.claims import InstrumentCheck

    if set(aligned) != set(random) or not aligned:
        raise ValueError("aligned and random must hold samples for the same, non-empty set of σ")
    ratio = min(burn_in_ratio(mixing_summary(aligned[s], burn_in // 2), burn_in) for s in aligned)
    worst_z = max(a.z for s in aligned for a in start_agreement(aligned[s], random[s], burn_in // 2).values())
    return [
        InstrumentCheck(f"the data chains mix: the burn-in is at least {min_ratio:g} integrated autocorrelation times of the "
                        "absolute magnetisation and of the energy, at every σ", f"min burn-in/τ = {ratio:.0f}", ratio >= min_ratio),
        InstrumentCheck("aligned and random starts agree: their equilibrium means of the energy and of the absolute magnetisation "
                        f"differ by at most {max_z:g} standard errors, at every σ", f"largest difference {worst_z:.1f} s.e.", worst_z <= max_z),
    ]


def coupling_errors(coupling: torch.Tensor, true_coupling: torch.Tensor) -> dict[str, float]:
    """Where a learned coupling matrix errs, against the lattice ``true_coupling``: the mean learned
    coupling on the lattice's edges (``edge_mean``, to compare with σ), the RMS error on them
    (``edge_rmse``) and the RMS of the entries off the lattice (``off_rms``, the truth is 0 there;
    the diagonal excluded)."""
    if coupling.shape != true_coupling.shape or coupling.ndim != 2 or coupling.shape[0] != coupling.shape[1]:
        raise ValueError(f"coupling and true_coupling must be square matrices of one shape, got {tuple(coupling.shape)} "
                         f"and {tuple(true_coupling.shape)}")
    j, truth = coupling.detach().double().cpu(), true_coupling.detach().double().cpu()
    edges = truth != 0
    off = ~edges & ~torch.eye(len(truth), dtype=torch.bool)
    if not edges.any() or not off.any():
        raise ValueError("true_coupling must have edges and non-edges off the diagonal")
    return {"edge_mean": float(j[edges].mean()), "edge_rmse": float((j - truth)[edges].pow(2).mean().sqrt()),
            "off_rms": float(j[off].pow(2).mean().sqrt())}


def w_share(coupling: torch.Tensor, spins: torch.Tensor, eps: float, m_particles: int, w: float,
            generator: torch.Generator | None = None) -> float:
    """How much of the stabilised average of ED-Bern the constant w makes up, for the Ising model of
    ``coupling`` (E(s) = −sᵀJs) on configurations ``spins`` (±1): the mean over the configurations of

        w / (w + Σ_j exp(E(x_i) − E(x'_ij))),

    with x'_ij Bernoulli negatives of flip probability ``eps`` (y = x ⊕ ξ, x'_j = y ⊕ ξ'_j). Near 1 the
    w term dominates every summand of the loss, and its gradient (weights exp(·)/(w + Σ exp(·))) is small."""
    j = coupling.detach().double()
    s = spins.detach().double()
    if j.ndim != 2 or s.ndim != 2 or s.shape[1] != j.shape[0] or not ((s == 1) | (s == -1)).all():
        raise ValueError(f"spins must be an (n, {j.shape[0]}) batch of ±1 for the coupling of shape {tuple(j.shape)}")
    eps = _checks.open_unit("eps", eps)
    m = _checks.positive_int("m_particles", m_particles)
    w = _checks.positive("w", w)
    n, d = s.shape
    flip_y = torch.rand((n, 1, d), generator=generator, dtype=torch.float64) < eps
    flip_x = torch.rand((n, m, d), generator=generator, dtype=torch.float64) < eps
    neg = s[:, None, :] * torch.where(flip_y ^ flip_x, -1.0, 1.0)  # a spin differs when exactly one flip happens
    energy = lambda z: -((z @ j) * z).sum(-1)
    gap = torch.logsumexp(energy(s)[:, None] - energy(neg), dim=1)
    return float((w / (w + gap.exp())).mean())
