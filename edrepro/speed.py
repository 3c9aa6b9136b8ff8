"""Training-step speed: our losses against restatements of the authors' formulations.

A *training step* is what :func:`edrepro.train.train` does per update: ``zero_grad``, the loss,
its backward w.r.t. the parameters and an Adam step. :func:`step_times` times such steps for
several losses in one process, interleaved, so that a slower or busier machine slows every
loss alike; :func:`speed_ratio` turns paired repeats into a ratio with its spread, and
:func:`compare` does both for one method on the paper's toy network (``nets.toy_energy_net``).

The ``reference_*`` functions are **restatements**, in our own words, of how the authors'
code (Schröder et al. 2023) formulates energy discrepancy, exact score matching and
contrastive divergence, as described to us; they are written for timing and are not copies
of that code. They draw their noise in the same order as :mod:`edrepro.losses`, so with the
same generator they give the same values (to float rounding).

Timings are wall-clock (or CPU time, see :data:`CLOCKS`) and shared machines make them noisy:
compare ratios measured in one process, never absolute milliseconds across machines. With two
threads on a busy machine set OMP_WAIT_POLICY=PASSIVE before torch is imported (spinning OpenMP
threads made steps 10× slower here); ``benchmarks/loss_speed.py`` does, and holds the timing
limits, which never go in the tests.
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from . import _checks, losses, nets
from .samplers import ReplayBuffer

Energy = Callable[[torch.Tensor], torch.Tensor]
LossFn = Callable[[nn.Module, torch.Tensor, "torch.Generator | None"], torch.Tensor]

ED_SETTINGS: dict[str, Any] = {"t": 1.0, "m_particles": 4, "w": 1.0}
"""The authors' 2-D energy-discrepancy settings (variance t, M negatives, stabilisation w)."""
CD_SETTINGS: dict[str, Any] = {"n_steps": 10, "step_size": 0.005, "reg": 0.3}
"""The authors' 2-D CD settings: 10 data-initialised Langevin steps, x ← x − ½·0.01·∇E + √0.01·ξ
(``step_size`` 0.005 in the convention x ← x − ε∇E + √(2ε)ξ), energy penalty 0.3."""
COMPARED: tuple[str, ...] = ("ed", "sm", "cd")
"""The methods :func:`compare` knows, ours against the authors' formulation."""
LOSSES: tuple[str, ...] = ("ed", "sm", "ssm", "dsm", "cd", "pcd", "nce")
"""The losses :func:`iterations_per_second` times (every training loss of :mod:`edrepro.losses`)."""
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
"""``wall``: elapsed time, what a training run waits for. ``cpu``: this process's CPU time (all its
threads), which time-slicing by other jobs on a shared machine does not inflate."""


class Ratio(NamedTuple):
    """reference ms / our ms per step: the median over repeats and the smallest and largest repeat."""

    median: float
    low: float
    high: float
    repeats: int


# ---------------------------------------------------------------- restated reference formulations


def reference_energy_discrepancy(
    energy: Energy, x: torch.Tensor, t: float = 1.0, m_particles: int = 4, w: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RESTATEMENT of the authors' energy-discrepancy loss (two energy calls).

    Draws y = x + √t·ξ, ξ of shape (B, d), then x'_j = y + √t·ξ'_j, ξ' of shape (B, M, d) (the
    order :func:`edrepro.losses.energy_discrepancy` uses); evaluates E on x and, in a second
    call, on the B·M negatives; appends the logit log w to the B × M logits E(x) − E(x'_j) and
    returns mean_i logsumexp. That is log(w + Σ_j exp(·)) = our value + log M (same gradients).
    """
    x = _checks.batch("x", x)
    t = _checks.positive("t", t)
    m = _checks.positive_int("m_particles", m_particles)
    w = _checks.non_negative("w", w)
    n, d = x.shape
    s = math.sqrt(t)
    y = x + s * torch.randn((n, d), generator=generator, dtype=x.dtype, device=x.device)
    neg = y[:, None, :] + s * torch.randn((n, m, d), generator=generator, dtype=x.dtype, device=x.device)
    e_pos = _checks.energy_output("energy", energy(x), n)
    e_neg = _checks.energy_output("energy", energy(neg.reshape(n * m, d)), n * m).view(n, m)
    logits = e_pos[:, None] - e_neg
    if w > 0:
        logits = torch.cat([logits, logits.new_full((n, 1), math.log(w))], dim=1)
    return torch.logsumexp(logits, dim=1).mean()


def reference_score_matching(energy: Energy, x: torch.Tensor) -> torch.Tensor:
    """RESTATEMENT of the authors' exact score matching: mean_i [ ½|∇E(x_i)|² − Σ_k ∂²E/∂x_k²(x_i) ].

    The Hessian diagonal comes from a Python loop over the d dimensions, each an
    ``autograd.grad`` of one column of the gradient (Hyvärinen 2005, Theorem 1, ψ = −∇E).
    """
    x = _checks.batch("x", x)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        e = _checks.energy_output("energy", energy(xg), x.shape[0])
        g = torch.autograd.grad(e.sum(), xg, create_graph=True)[0]
        trace = torch.zeros_like(e)
        for k in range(x.shape[1]):
            trace = trace + torch.autograd.grad(g[:, k].sum(), xg, create_graph=True)[0][:, k]
    return (0.5 * (g**2).sum(1) - trace).mean()


def reference_contrastive_divergence(
    energy: Energy, x: torch.Tensor, n_steps: int = 10, step_size: float = 0.005, reg: float = 0.3,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RESTATEMENT of the authors' contrastive divergence with short-run Langevin negatives.

    ``n_steps`` updates x⁻ ← x⁻ − ε∇E(x⁻) + √(2ε)·ξ (ε = ``step_size``, ξ of shape (B, d) drawn
    per step) started from the data; then, with separate energy calls on the data and the
    negatives, mean E(x⁺) − mean E(x⁻) + reg · mean(E(x⁺)² + E(x⁻)²).
    """
    x = _checks.batch("x", x)
    n_steps = _checks.positive_int("n_steps", n_steps)
    eps = _checks.positive("step_size", step_size)
    reg = _checks.non_negative("reg", reg)
    x_neg = x.detach()
    for _ in range(n_steps):
        with torch.enable_grad():
            xg = x_neg.requires_grad_(True)
            g = torch.autograd.grad(energy(xg).sum(), xg)[0]
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x_neg = (x_neg - eps * g + math.sqrt(2 * eps) * noise).detach()
    e_pos = _checks.energy_output("energy", energy(x), x.shape[0])
    e_neg = _checks.energy_output("energy", energy(x_neg), x.shape[0])
    return e_pos.mean() - e_neg.mean() + reg * (e_pos**2 + e_neg**2).mean()


# ---------------------------------------------------------------- the two sides of each comparison


def compared_losses(method: str) -> tuple[LossFn, LossFn]:
    """(ours, reference) for ``method`` in :data:`COMPARED`, with the authors' 2-D settings, as
    ``loss_fn(model, x, generator)`` callables."""
    _checks.choice("method", method, COMPARED)
    if method == "ed":
        return (
            lambda model, x, g: losses.energy_discrepancy(model, x, generator=g, **ED_SETTINGS),
            lambda model, x, g: reference_energy_discrepancy(model, x, generator=g, **ED_SETTINGS),
        )
    if method == "sm":
        return (lambda model, x, g: losses.score_matching(model, x), lambda model, x, g: reference_score_matching(model, x))
    return (
        lambda model, x, g: losses.contrastive_divergence(model, x, generator=g, **CD_SETTINGS),
        lambda model, x, g: reference_contrastive_divergence(model, x, generator=g, **CD_SETTINGS),
    )


def training_losses(x: torch.Tensor, seed: int = 0) -> dict[str, LossFn]:
    """Every training loss of :mod:`edrepro.losses` (names :data:`LOSSES`) with the 2-D settings.

    ED, CD as in :data:`ED_SETTINGS` / :data:`CD_SETTINGS`; sliced SM with one projection;
    denoising SM with σ = 0.1; persistent CD with a 10 000-state :class:`ReplayBuffer` drawn
    uniformly on [−4, 4]^d and 5 % restarts; NCE (one noise sample per data point, output bias
    as log-normaliser) against a Gaussian fitted to ``x`` with :func:`losses.fit_gaussian_noise`.
    """
    x = _checks.batch("x", x)
    _checks.positive_int("seed", seed, minimum=0)
    d = x.shape[1]

    def box(n: int, g: torch.Generator | None) -> torch.Tensor:
        return (8 * torch.rand(n, d, generator=g, dtype=x.dtype) - 4).to(x.device)

    buffer = ReplayBuffer(10_000, box, torch.Generator().manual_seed(seed))
    mean, cov = losses.fit_gaussian_noise(x)
    ed, _ = compared_losses("ed")
    cd, _ = compared_losses("cd")
    return {
        "ed": ed,
        "sm": lambda model, z, g: losses.score_matching(model, z),
        "ssm": lambda model, z, g: losses.sliced_score_matching(model, z, 1, generator=g),
        "dsm": lambda model, z, g: losses.denoising_score_matching(model, z, 0.1, generator=g),
        "cd": cd,
        "pcd": lambda model, z, g: losses.contrastive_divergence(model, z, buffer=buffer, generator=g, **CD_SETTINGS),
        "nce": lambda model, z, g: losses.noise_contrastive_estimation(model, z, 0.0, mean, cov, 1, generator=g),
    }


# ---------------------------------------------------------------- timing


def _check_timing_args(repeats: int, steps: int, warmup: int, lr: float, threads: int | None, seed: int, clock: str) -> None:
    _checks.choice("clock", clock, CLOCKS)
    _checks.positive_int("repeats", repeats)
    _checks.positive_int("steps", steps)
    _checks.positive_int("warmup", warmup, minimum=0)
    _checks.positive("lr", lr)
    _checks.positive_int("seed", seed, minimum=0)
    if threads is not None:
        _checks.positive_int("threads", threads)


def _runner(net: nn.Module, loss_fn: LossFn, x: torch.Tensor, lr: float, seed: int) -> Callable[[int], None]:
    """``run(k)``: k training steps of ``loss_fn`` on a private copy of ``net`` with its own Adam."""
    model = copy.deepcopy(net)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator(device=x.device).manual_seed(seed)

    def run(k: int) -> None:
        for _ in range(k):
            opt.zero_grad(set_to_none=True)
            loss_fn(model, x, gen).backward()
            opt.step()

    return run


def step_times(
    net: nn.Module, loss_fns: Mapping[str, LossFn], x: torch.Tensor, repeats: int = 5, steps: int = 20,
    warmup: int = 5, lr: float = 1e-3, threads: int | None = None, seed: int = 0, clock: str = "wall",
) -> dict[str, list[float]]:
    """Milliseconds per training step (zero_grad, loss, backward, Adam step) of every loss, per repeat.

    Each loss trains its own copy of ``net`` (own Adam(``lr``), own generator seeded ``seed``) on
    the fixed batch ``x``. After ``warmup`` untimed steps each, every repeat times a block of
    ``steps`` steps of each loss in turn, starting one loss later each repeat, so that load on
    the machine falls on all losses alike; repeat r of one loss pairs with repeat r of another.
    ``threads`` sets torch's intra-op threads for the call (restored afterwards); ``clock`` is
    one of :data:`CLOCKS`.
    """
    if not isinstance(net, nn.Module) or not any(True for _ in net.parameters()):
        raise ValueError(f"net must be a torch.nn.Module with parameters, got {type(net).__name__}")
    if not isinstance(loss_fns, Mapping) or not loss_fns or not all(callable(f) for f in loss_fns.values()):
        raise ValueError("loss_fns must be a non-empty mapping from names to loss_fn(model, x, generator) callables")
    x = _checks.batch("x", x)
    _check_timing_args(repeats, steps, warmup, lr, threads, seed, clock)
    now = CLOCKS[clock]
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        runners = {name: _runner(net, fn, x, lr, seed) for name, fn in loss_fns.items()}
        for run in runners.values():
            run(warmup)
        names, times = list(runners), {name: [] for name in runners}
        for r in range(repeats):
            for name in names[r % len(names):] + names[: r % len(names)]:
                start = now()
                runners[name](steps)
                times[name].append(1e3 * (now() - start) / steps)
    finally:
        torch.set_num_threads(before)
    return times


def speed_ratio(reference_ms: Sequence[float], ours_ms: Sequence[float]) -> Ratio:
    """How many times faster ours is: reference / ours per paired repeat, summarised as :class:`Ratio`."""
    for name, ms in (("reference_ms", reference_ms), ("ours_ms", ours_ms)):
        if isinstance(ms, (str, bytes)) or not isinstance(ms, Sequence) or not ms:
            raise ValueError(f"{name} must be a non-empty sequence of milliseconds, got {ms!r}")
        for v in ms:
            _checks.positive(name, v)
    if len(reference_ms) != len(ours_ms):
        raise ValueError(f"reference_ms and ours_ms must pair up repeat by repeat, got {len(reference_ms)} and {len(ours_ms)}")
    ratios = [r / o for r, o in zip(reference_ms, ours_ms)]
    return Ratio(statistics.median(ratios), min(ratios), max(ratios), len(ratios))


def compare(
    method: str, dim: int = 2, batch_size: int = 128, repeats: int = 5, steps: int = 20, warmup: int = 5,
    threads: int | None = None, seed: int = 0, clock: str = "wall",
) -> tuple[Ratio, dict[str, list[float]]]:
    """Ours against the authors' formulation of ``method`` (:data:`COMPARED`), per training step.

    Both train copies of one ``nets.toy_energy_net(dim)`` (initialised from ``seed``) on one
    standard-normal batch of ``batch_size`` rows, interleaved by :func:`step_times`. Returns the
    :class:`Ratio` (authors' ms / our ms) and the per-repeat milliseconds {"ours", "reference"}.
    """
    _checks.choice("method", method, COMPARED)
    _checks.positive_int("dim", dim)
    _checks.positive_int("batch_size", batch_size)
    _checks.positive_int("seed", seed, minimum=0)
    ours, reference = compared_losses(method)
    net, x = _net_and_batch(dim, batch_size, seed)
    ms = step_times(net, {"ours": ours, "reference": reference}, x, repeats, steps, warmup, threads=threads, seed=seed, clock=clock)
    return speed_ratio(ms["reference"], ms["ours"]), ms


def iterations_per_second(
    names: Sequence[str] = LOSSES, dim: int = 2, batch_size: int = 128, repeats: int = 5, steps: int = 20,
    warmup: int = 5, threads: int | None = None, seed: int = 0, clock: str = "wall",
) -> dict[str, float]:
    """Training steps per second (median over repeats) of each loss in ``names`` (from :data:`LOSSES`)
    on ``nets.toy_energy_net(dim)`` with a standard-normal batch, interleaved by :func:`step_times`."""
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise ValueError(f"names must be a non-empty sequence of loss names from {list(LOSSES)}, got {names!r}")
    for name in names:
        _checks.choice("names", name, LOSSES)
    _checks.positive_int("dim", dim)
    _checks.positive_int("batch_size", batch_size)
    _checks.positive_int("seed", seed, minimum=0)
    net, x = _net_and_batch(dim, batch_size, seed)
    fns = training_losses(x, seed)
    ms = step_times(net, {n: fns[n] for n in names}, x, repeats, steps, warmup, threads=threads, seed=seed, clock=clock)
    return {name: 1e3 / statistics.median(v) for name, v in ms.items()}


def _net_and_batch(dim: int, batch_size: int, seed: int) -> tuple[nn.Module, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nets.toy_energy_net(dim)
    x = torch.randn(batch_size, dim, generator=torch.Generator().manual_seed(seed + 1))
    return net, x


def describe_machine() -> dict[str, Any]:
    """Where a timing ran: CPU model (from /proc/cpuinfo), logical cores, torch intra-op threads,
    torch version and the 1-minute load average (None where the platform has none)."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load: float | None = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__, "load_1min": load}
