"""Training-step speed: our losses against restatements of the authors' formulations.

A *training step* is what :func:`edrepro.book.train.train` does per update: ``zero_grad``, the loss,
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

The performance chapter uses :func:`loss_timings` (every loss, the three restatements and the
*bare step* of :func:`forward_backward_loss`, interleaved in one call) summarised by
:func:`loss_table` and :func:`bound_ratio`; :func:`ed_scaling` and :func:`affine_fit` for the
cost of an ED step as M and d grow; :func:`page_specs` / :func:`time_to_threshold` for the
density-estimation runs it reads (it trains none of its own); and :func:`page_claims` for its claims.
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

from .. import _checks, losses, nets
from ..book import train
from ..samplers import ReplayBuffer

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
CLAIMED_SPEED_UP: dict[str, float] = {"sm": 1.5}
"""The least median speed-up over the authors' formulation that this package claims (the performance
page asserts it, ``benchmarks/loss_speed.py`` checks it)."""
ED_OVER_BARE_LIMIT = 1.5
"""The most that our ED step may cost over the bare step (:func:`forward_backward_loss`: the same
network's forward and backward pass on the same B(M+1) points), i.e. what the loss adds around the
network; the performance page asserts it. How much faster than the authors' any ED step can be,
:func:`bound_ratio`, depends on the machine, so it is reported, not claimed."""
AUTHORS_PREFIX = "authors_"
""":func:`timed_losses` names the restated formulation of method m ``authors_m``."""
BARE = "bare"
""":func:`timed_losses`'s name for the bare step on the B(M+1) points of an ED step."""


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
    w = _checks.non_negative("w", w)
    neg = losses.gaussian_negatives(x, t, m_particles, generator)
    n, m, d = neg.shape
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
    Persistent CD runs on the CPU only: it is left out when ``x`` lives on another device.
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
    fns: dict[str, LossFn] = {
        "ed": ed,
        "sm": lambda model, z, g: losses.score_matching(model, z),
        "ssm": lambda model, z, g: losses.sliced_score_matching(model, z, 1, generator=g),
        "dsm": lambda model, z, g: losses.denoising_score_matching(model, z, 0.1, generator=g),
        "cd": cd,
        "pcd": lambda model, z, g: losses.contrastive_divergence(model, z, buffer=buffer, generator=g, **CD_SETTINGS),
        "nce": lambda model, z, g: losses.noise_contrastive_estimation(model, z, 0.0, mean, cov, 1, generator=g),
    }
    if x.device.type != "cpu":  # the replay buffer draws on the CPU (as in density.train_spec)
        del fns["pcd"]
    return fns


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
    one of :data:`CLOCKS` (``wall`` only on a GPU, where each block is timed between two
    ``torch.cuda.synchronize`` calls). The allocator setting of every training run of the package,
    :func:`edrepro.book.train.retain_freed_memory`, is in force for all losses.
    """
    if not isinstance(net, nn.Module) or not any(True for _ in net.parameters()):
        raise ValueError(f"net must be a torch.nn.Module with parameters, got {type(net).__name__}")
    if not isinstance(loss_fns, Mapping) or not loss_fns or not all(callable(f) for f in loss_fns.values()):
        raise ValueError("loss_fns must be a non-empty mapping from names to loss_fn(model, x, generator) callables")
    x = _checks.batch("x", x)
    _check_timing_args(repeats, steps, warmup, lr, threads, seed, clock)
    if x.device.type != "cpu" and clock != "wall":
        raise ValueError(f"clock must be 'wall' when x is on {x.device} (the CPU clock does not see GPU work), got {clock!r}")
    sync = (lambda: torch.cuda.synchronize(x.device)) if x.device.type == "cuda" else (lambda: None)
    now = CLOCKS[clock]
    train.retain_freed_memory()
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
                sync()
                start = now()
                runners[name](steps)
                sync()
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


def _net_and_batch(dim: int, batch_size: int, seed: int, device: torch.device | str = "cpu") -> tuple[nn.Module, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nets.toy_energy_net(dim)
    x = torch.randn(batch_size, dim, generator=torch.Generator().manual_seed(seed + 1))
    return net.to(device), x.to(device)


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


# ---------------------------------------------------------------- the performance chapter


def forward_backward_loss(points: torch.Tensor) -> LossFn:
    """The *bare step*'s loss: 0 · Σ_k E(points_k), ignoring the batch and the generator.

    A training step with it is one forward and one backward pass of the network on ``points``
    and an Adam step: no noise, no loss arithmetic. On the B(M+1) points of an ED step it is the
    least that any formulation of ED can cost with that network, since every one of the B(M+1)
    energies and its gradient must be computed; so authors' ms / bare ms bounds the speed-up any
    ED implementation could reach over the authors' (:func:`bound_ratio`).

    The factor 0 keeps the parameters where they are (autograd does not skip zeros: the backward
    pass runs in full), so every repeat times the same network. Minimising Σ E itself drives
    the Softplus units into subnormal floats within a hundred steps, which made CPU steps up to
    2.5× slower: a property of that loss, not of the work.
    """
    points = _checks.batch("points", points).detach()
    return lambda model, x, g: 0.0 * model(points).sum()


def timed_losses(x: torch.Tensor, seed: int = 0) -> dict[str, LossFn]:
    """What the performance page times on the batch ``x``: every loss of :func:`training_losses`, the
    restated authors' formulation of each method m of :data:`COMPARED` (named ``authors_m``) and the
    bare step (:data:`BARE`) on B(M+1) copies of the batch's rows, M = ``ED_SETTINGS["m_particles"]``."""
    x = _checks.batch("x", x)
    fns = training_losses(x, seed)
    for method in COMPARED:
        fns[AUTHORS_PREFIX + method] = compared_losses(method)[1]
    fns[BARE] = forward_backward_loss(x.repeat(ED_SETTINGS["m_particles"] + 1, 1))
    return fns


def loss_timings(
    dim: int = 2, batch_size: int = 128, repeats: int = 5, steps: int = 20, warmup: int = 5,
    threads: int | None = None, seed: int = 0, clock: str = "wall", device: torch.device | str = "cpu",
    names: Sequence[str] | None = None,
) -> dict[str, list[float]]:
    """Milliseconds per training step, per repeat, of every entry of :func:`timed_losses` (or of ``names``).

    All train copies of one ``nets.toy_energy_net(dim)`` (initialised from ``seed``) on one
    standard-normal batch of ``batch_size`` rows on ``device``, interleaved in a single
    :func:`step_times` call, so that any two entries form paired repeats (:func:`speed_ratio`).
    """
    from ..book.train import resolve_device

    _checks.positive_int("dim", dim)
    _checks.positive_int("batch_size", batch_size)
    _checks.positive_int("seed", seed, minimum=0)
    net, x = _net_and_batch(dim, batch_size, seed, resolve_device(device))
    fns = timed_losses(x, seed)
    if names is not None:
        if isinstance(names, (str, bytes)) or not isinstance(names, Sequence) or not names:
            raise ValueError(f"names must be a non-empty sequence of entries of timed_losses, got {names!r}")
        for name in names:
            _checks.choice("names", name, fns)
        fns = {name: fns[name] for name in names}
    return step_times(net, fns, x, repeats, steps, warmup, threads=threads, seed=seed, clock=clock)


def _check_timings(ms: Any, needed: Sequence[str]) -> Mapping[str, Sequence[float]]:
    if not isinstance(ms, Mapping) or not ms:
        raise ValueError(f"ms must map loss names to per-repeat milliseconds (from loss_timings), got {type(ms).__name__}")
    missing = [name for name in needed if name not in ms]
    if missing:
        raise ValueError(f"ms must hold the timings of {missing} (from loss_timings), it has {sorted(ms)}")
    return ms


def loss_table(ms: Mapping[str, Sequence[float]]) -> list[dict[str, Any]]:
    """One row per loss of :data:`LOSSES` in ``ms`` (from :func:`loss_timings`), in that order.

    ``loss``; ``ms`` (median ms per step); ``per_second`` = 1000 / median ms and ``per_second_range``
    = (1000 / slowest repeat, 1000 / fastest repeat); where ``ms`` has the restated authors'
    formulation, ``authors_per_second`` and ``speed_up`` (:func:`speed_ratio`: authors' ms / ours,
    paired repeat by repeat), else None.
    """
    _check_timings(ms, ())
    rows = []
    for name in (n for n in LOSSES if n in ms):
        ours, authors = ms[name], ms.get(AUTHORS_PREFIX + name)
        ratio = speed_ratio(authors, ours) if authors is not None else None
        rows.append({
            "loss": name, "ms": statistics.median(ours), "per_second": 1e3 / statistics.median(ours),
            "per_second_range": (1e3 / max(ours), 1e3 / min(ours)),
            "authors_per_second": 1e3 / statistics.median(authors) if authors is not None else None, "speed_up": ratio,
        })
    if not rows:
        raise ValueError(f"ms holds no loss of {list(LOSSES)}, only {sorted(ms)}")
    return rows


def bound_ratio(ms: Mapping[str, Sequence[float]]) -> Ratio:
    """authors' ED ms / bare-step ms, per paired repeat of :func:`loss_timings`: the largest speed-up
    over the authors' formulation that *any* ED implementation on this network could reach, since it
    still has to do the bare step's forward and backward pass (:func:`forward_backward_loss`)."""
    _check_timings(ms, (AUTHORS_PREFIX + "ed", BARE))
    return speed_ratio(ms[AUTHORS_PREFIX + "ed"], ms[BARE])


def _ed_loss(m: int) -> LossFn:
    settings = {**ED_SETTINGS, "m_particles": m}
    return lambda model, x, g: losses.energy_discrepancy(model, x, generator=g, **settings)


def draw_times(x: torch.Tensor, m_particles: int, repeats: int = 3, steps: int = 5, seed: int = 0, clock: str = "wall") -> list[float]:
    """Milliseconds, per repeat, to draw the B(M+1) points of one ED step on the batch ``x`` (CPU):
    y = x + √t·ξ, the M negatives y + √t·ξ'_j and their concatenation with x, as
    :func:`edrepro.losses.energy_discrepancy` does before it calls the network (t of :data:`ED_SETTINGS`)."""
    x = _checks.batch("x", x)
    m = _checks.positive_int("m_particles", m_particles)
    _check_timing_args(repeats, steps, 0, 1.0, None, seed, clock)
    n, d = x.shape
    s, gen, now, times = math.sqrt(ED_SETTINGS["t"]), torch.Generator().manual_seed(seed), CLOCKS[clock], []
    for _ in range(repeats):
        start = now()
        for _ in range(steps):
            y = x + s * torch.randn((n, d), generator=gen, dtype=x.dtype)
            neg = y[:, None, :] + s * torch.randn((n, m, d), generator=gen, dtype=x.dtype)
            torch.cat([x, neg.reshape(n * m, d)])
        times.append(1e3 * (now() - start) / steps)
    return times


def ed_scaling(
    m_values: Sequence[int] = (1, 2, 4, 8, 16, 32), dims: Sequence[int] = (2, 32, 512), batch_size: int = 128,
    repeats: int = 3, steps: int = 5, warmup: int = 2, threads: int | None = None, seed: int = 0, clock: str = "wall",
) -> list[dict[str, Any]]:
    """The cost of one ED training step as the negatives M and the dimension d grow, on the CPU.

    For every d of ``dims``: ``nets.toy_energy_net(d)``, a standard-normal batch of ``batch_size``
    rows, and for every M of ``m_values`` our ED step (t and w of :data:`ED_SETTINGS`) and the bare
    step on the same B(M+1) points, all interleaved in one :func:`step_times` call. Rows: ``dim``,
    ``m_particles``, ``points`` = B(M+1), ``parameters`` (of the network), ``ed_ms``, ``bare_ms``,
    ``draws_ms`` (medians; :func:`draw_times`, the ED step's own Gaussian draws) and ``overhead``
    (:class:`Ratio` of ED ms / bare ms per paired repeat).
    """
    for name, values in (("m_values", m_values), ("dims", dims)):
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {values!r}")
        for v in values:
            _checks.positive_int(name, v)
        if len(set(values)) != len(values):
            raise ValueError(f"{name} must hold distinct values, got {list(values)}")
    _checks.positive_int("batch_size", batch_size)
    _checks.positive_int("seed", seed, minimum=0)
    rows = []
    for d in dims:
        net, x = _net_and_batch(d, batch_size, seed)
        fns: dict[str, LossFn] = {}
        for m in m_values:
            fns[f"ed{m}"], fns[f"bare{m}"] = _ed_loss(m), forward_backward_loss(x.repeat(m + 1, 1))
        ms = step_times(net, fns, x, repeats, steps, warmup, threads=threads, seed=seed, clock=clock)
        rows += [{
            "dim": d, "m_particles": m, "points": batch_size * (m + 1), "parameters": nets.count_parameters(net),
            "ed_ms": statistics.median(ms[f"ed{m}"]), "bare_ms": statistics.median(ms[f"bare{m}"]),
            "draws_ms": statistics.median(draw_times(x, m, repeats, steps, seed, clock)),
            "overhead": speed_ratio(ms[f"ed{m}"], ms[f"bare{m}"]),
        } for m in m_values]
    return rows


def affine_fit(xs: Sequence[float], ys: Sequence[float], relative: bool = False) -> tuple[float, float, float]:
    """Weighted least squares y ≈ a + b·x: returns (a, b, R²).

    Minimises Σ w_i (y_i − a − b·x_i)² with w_i = 1, or with ``relative`` w_i = 1/y_i² (each
    point's error relative to its size: timing noise grows with the time, so the largest times
    would otherwise decide the intercept alone). R² = 1 − Σ w r² / Σ w (y − ȳ_w)², with ȳ_w the
    weighted mean (the squared correlation when unweighted; 1 for points on a line).
    """
    for name, values in (("xs", xs), ("ys", ys)):
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ValueError(f"{name} must be a sequence of numbers, got {values!r}")
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys must have the same length, got {len(xs)} and {len(ys)}")
    if len(set(xs)) < 2:
        raise ValueError(f"xs must hold at least two distinct values, got {list(xs)}")
    if relative:
        for y in ys:
            _checks.positive("ys", y)
    w = [1.0 / y**2 if relative else 1.0 for y in ys]
    sw, sx, sy = sum(w), sum(wi * x for wi, x in zip(w, xs)), sum(wi * y for wi, y in zip(w, ys))
    sxx, sxy = sum(wi * x * x for wi, x in zip(w, xs)), sum(wi * x * y for wi, x, y in zip(w, xs, ys))
    slope = (sw * sxy - sx * sy) / (sw * sxx - sx * sx)
    intercept = (sy - slope * sx) / sw
    total = sum(wi * (y - sy / sw) ** 2 for wi, y in zip(w, ys))
    residual = sum(wi * (y - intercept - slope * x) ** 2 for wi, x, y in zip(w, xs, ys))
    return float(intercept), float(slope), 1.0 if total == 0 else float(1.0 - residual / total)


def page_specs(params: Mapping[str, Any]) -> list[Any]:
    """The density-estimation runs the performance page reads (it trains none of its own):
    ``density.page_specs`` of that page's parameters under the profile ``params["profile"]``,
    read from the repository's parameter files (:func:`edrepro.book.pipeline.effective_params`)."""
    from ..book import pipeline
    from . import density

    if not isinstance(params, Mapping) or "profile" not in params:
        raise ValueError("params must be the performance page's parameters, with a 'profile'")
    profile = _checks.choice("profile", params["profile"], pipeline.PROFILES)
    return density.page_specs(pipeline.effective_params(pipeline.find_root(), "density_estimation", profile))


def time_to_threshold(records: Sequence[Any], threshold: float = 0.1, metric: str = "mse") -> list[dict[str, Any]]:
    """Per method of the 2-D ``records`` (in order of appearance): when each seed first had ``metric`` ≤ ``threshold``.

    Row keys: ``method``, ``seeds``, ``steps`` and ``seconds`` (per seed, :func:`edrepro.chapters.density.reach`;
    None = never within the run), ``reached`` (how many seeds did), ``median_steps`` and
    ``median_seconds`` (over the seeds that reached it; None if none did), ``ms_per_step`` (training
    ms per iteration, median over seeds), ``outcomes`` (:meth:`RunRecord.outcome_text`) and
    ``conditions`` (threads and 1-minute load range of the processes that trained them).
    """
    from ..book import runs
    from . import density

    if isinstance(records, (str, bytes)) or not isinstance(records, Sequence) or not records:
        raise ValueError("records must be a non-empty sequence of RunRecord of 2-D density runs")
    if not all(isinstance(r, runs.RunRecord) and r.spec.kind == "density" for r in records):
        raise ValueError("records must be a non-empty sequence of RunRecord of 2-D density runs")
    _checks.positive("threshold", threshold)
    _checks.choice("metric", metric, density.METRICS)
    by_method: dict[str, list[Any]] = {}
    for r in records:
        by_method.setdefault(r.spec.method, []).append(r)
    rows = []
    for method, group in by_method.items():
        reached = [density.reach(r, threshold, metric) for r in group]
        hit = [(s, t) for s, t in reached if s is not None]
        loads = [r.conditions[k] for r in group for k in ("load_start", "load_end") if k in r.conditions]
        rows.append({
            "method": method, "seeds": [r.spec.seed for r in group],
            "steps": [s for s, _ in reached], "seconds": [t for _, t in reached], "reached": len(hit),
            "median_steps": statistics.median(s for s, _ in hit) if hit else None,
            "median_seconds": statistics.median(t for _, t in hit) if hit else None,
            "ms_per_step": statistics.median(1e3 * r.train_seconds / r.steps for r in group),
            "outcomes": [r.outcome_text() for r in group],
            "conditions": {"threads": sorted({r.conditions.get("threads") for r in group}, key=str),
                           "load": (min(loads), max(loads)) if loads else None},
        })
    return rows


def _spread(r: Ratio) -> str:
    return f"{r.median:.2f}× [{r.low:.2f}, {r.high:.2f}]"


def loss_markdown(ms: Mapping[str, Sequence[float]], labels: Mapping[str, str] | None = None) -> str:
    """:func:`loss_table` of ``ms`` as a markdown table, with the bare step (when timed) as a last row.

    Columns: the loss (``labels`` maps names to display names), our iterations per second (median,
    [slowest, fastest repeat]), the authors' formulation's, and the speed-up ours / authors'
    (median [min, max] over paired repeats).
    """
    labels = dict(labels or {})
    lines = ["| loss | iterations / s, ours [range] | iterations / s, authors' formulation | speed-up, median [min, max] |",
             "|---|---|---|---|"]
    for row in loss_table(ms):
        lo, hi = row["per_second_range"]
        authors = "—" if row["authors_per_second"] is None else f"{row['authors_per_second']:.0f}"
        ratio = "—" if row["speed_up"] is None else _spread(row["speed_up"])
        lines.append(f"| {labels.get(row['loss'], row['loss'])} | {row['per_second']:.0f} [{lo:.0f}, {hi:.0f}] | {authors} | {ratio} |")
    if BARE in ms:
        bare = ms[BARE]
        lines.append(f"| *bare step: forward + backward on the B(M+1) points of ED* | {1e3 / statistics.median(bare):.0f} "
                     f"[{1e3 / max(bare):.0f}, {1e3 / min(bare):.0f}] | — | — |")
    return "\n".join(lines)


def reach_markdown(rows: Sequence[Mapping[str, Any]], threshold: float, labels: Mapping[str, str] | None = None) -> str:
    """:func:`time_to_threshold` rows as a markdown table (per-seed values separated by " / ", "never" = not reached)."""
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not rows:
        raise ValueError("rows must be a non-empty sequence of time_to_threshold rows")
    _checks.positive("threshold", threshold)
    labels = dict(labels or {})

    def each(values: Sequence[Any], fmt: str) -> str:
        return " / ".join("never" if v is None else format(v, fmt) for v in values)

    def median(value: Any, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    lines = [f"| method | seeds | iterations to ≤ {threshold:g} | training s to ≤ {threshold:g} | median iterations "
             f"| median s | seeds that reached | ms / iteration | outcome | trained with |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["conditions"]
        load = "load not recorded" if c["load"] is None else f"load {c['load'][0]:.1f}–{c['load'][1]:.1f}"
        threads = "/".join(str(t) for t in c["threads"])
        lines.append(
            f"| {labels.get(r['method'], r['method'])} | {each(r['seeds'], 'd')} | {each(r['steps'], ',d')} | {each(r['seconds'], '.0f')} "
            f"| {median(r['median_steps'], ',.0f')} | {median(r['median_seconds'], '.0f')} | {r['reached']} of {len(r['seeds'])} "
            f"| {r['ms_per_step']:.2f} | {'; '.join(sorted(set(r['outcomes'])))} | {threads} thread(s), {load} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- the performance chapter's claims


def sm_speed_up_claim(ms: Mapping[str, Sequence[float]], target: float | None = None):
    """Claim: our exact score-matching step is at least ``target`` (default :data:`CLAIMED_SPEED_UP`\\ ["sm"])
    times faster than the restated authors' formulation, as the median over paired repeats of
    :func:`loss_timings` (:func:`speed_ratio`). Fails when the two timings are swapped."""
    from ..book.claims import Claim

    _check_timings(ms, ("sm", AUTHORS_PREFIX + "sm"))
    target = CLAIMED_SPEED_UP["sm"] if target is None else _checks.positive("target", target)
    r = speed_ratio(ms[AUTHORS_PREFIX + "sm"], ms["sm"])
    return Claim(f"our exact SM step is at least {target:g}× faster than the authors' formulation (median over paired repeats)",
                 _spread(r), r.median >= target)


def ed_overhead_claim(ms: Mapping[str, Sequence[float]], limit: float = ED_OVER_BARE_LIMIT):
    """Claim: around the network our ED loss adds little: its step costs at most ``limit`` times the bare
    step (:func:`forward_backward_loss` on the same B(M+1) points), median over paired repeats. Fails for an
    ED step that does much more than the network's forward and backward pass (e.g. timings twice as long)."""
    from ..book.claims import Claim

    _check_timings(ms, ("ed", BARE))
    limit = _checks.positive("limit", limit)
    r = speed_ratio(ms["ed"], ms[BARE])
    return Claim(f"around the network our ED loss adds little: its step costs at most {limit:g}× the bare step "
                 "(the forward and backward pass on the same points)", f"ours / bare {_spread(r)}", r.median <= limit)


def page_claims(ms: Mapping[str, Sequence[float]]) -> list[Any]:
    """The performance page's claims on :func:`loss_timings`: :func:`sm_speed_up_claim` and :func:`ed_overhead_claim`."""
    return [sm_speed_up_claim(ms), ed_overhead_claim(ms)]
