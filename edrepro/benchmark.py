"""Mechanics of the density benchmark: every training method on every 2-D data set, one budget.

One *run* is a (method, data set, seed) triple. It trains the toy energy network of
:func:`edrepro.density.make_model` with the loss of :func:`edrepro.density.make_loss` through
:func:`edrepro.train.train` (Adam, a fresh batch every step, an EMA of the parameters) and, at
step 0, every ``eval_every`` steps and at the last step, scores the EMA model on fresh held-out
samples:

- ``nll``: negative log-likelihood of ``eval_samples`` fresh data points, the model normalised by
  a midpoint sum on the ``nll_grid``² grid over the set's bounds
  (:func:`edrepro.metrics.grid_nll`); available on every set;
- ``mse``: the MSE of the log-density (:func:`edrepro.metrics.mse_log_density`), only where the
  set has an exact log-density (``toy.get(name).has_log_prob``; None elsewhere).

The recorded seconds are training time only (evaluation and checkpointing excluded), so the
throughput (iterations per second) and the NLL-against-seconds curves compare the methods'
training cost. Each run is cached on disk under ``cache_dir/DATASET/METHOD-KEY-seedSEED.pt`` (KEY
hashes the configuration): a finished run is loaded, an interrupted one resumes from its last
checkpoint, bitwise identically (the checkpointing is :func:`edrepro.train.train`'s).

The summaries (:func:`ranks`, :func:`leaderboard`, :func:`leaderboard_markdown`,
:func:`mean_curve`) are plain functions of the runs' numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import _checks, density, metrics, toy, train

# Bump to invalidate every cached benchmark run (e.g. after a change of the mechanics).
CACHE_VERSION = 1

DATASETS: tuple[str, ...] = ("25gaussians", "8gaussians", "rings", "checkerboard", "pinwheel", "2spirals", "moons", "swissroll")
"""The data sets of the benchmark, in the order of the leaderboard's columns."""

METHODS: tuple[str, ...] = tuple(density.METHODS)
"""The training methods (the keys of :data:`edrepro.density.METHODS`), in the order of its rows."""


@dataclass
class BenchmarkRun:
    """One (method, data set, seed) run of :func:`run`.

    ``steps``, ``seconds``, ``nll`` and ``mse`` are the evaluation curve: step s, training seconds
    up to s and the EMA model's held-out NLL and MSE of the log-density at s (``mse`` is None for
    sets without an exact density). ``cached`` is True when this call trained nothing;
    ``resumed_from`` is the step an interrupted run continued from (0 for a fresh one).
    ``timing`` records the torch threads, device, 1-minute load average at the start and end
    and the date of the (last) call that trained.
    """

    method: str
    dataset: str
    seed: int
    n_steps: int
    steps: list[int]
    seconds: list[float]
    nll: list[float]
    mse: list[float] | None
    losses: list[float]
    ema_model: nn.Module
    steps_per_second: float
    train_seconds: float
    diverged_at: int | None
    resumed_from: int
    cached: bool
    path: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)

    @property
    def final_nll(self) -> float:
        """The held-out NLL at the last evaluated step."""
        return self.nll[-1]

    @property
    def final_mse(self) -> float | None:
        """The MSE of the log-density at the last evaluated step (None without an exact density)."""
        return None if self.mse is None else self.mse[-1]

    @property
    def energy(self) -> nn.Module:
        """The EMA energy network (without the persistent chains of ``pcd``)."""
        m = self.ema_model
        return m.net if isinstance(m, density.PersistentChains) else m


def run_key(config: Mapping[str, Any]) -> str:
    """A short hash of a run's configuration (part of its cache file name)."""
    text = json.dumps({"benchmark_version": CACHE_VERSION, **config}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _eval_seed(seed: int, step: int) -> int:
    # Held-out points fixed by (seed, step): the same for every method, never from the training stream.
    return int(np.random.SeedSequence([seed, step, 0xBE7C]).generate_state(1, dtype=np.uint64)[0] >> 1)


def evaluate(
    energy: nn.Module, dataset: str, n: int, nll_grid: int, generator: torch.Generator | None = None
) -> dict[str, float]:
    """Held-out scores of an energy on ``n`` fresh points of ``dataset``: ``{"nll": …}`` plus ``"mse"`` where exact.

    The NLL normalises exp(−E) on the ``nll_grid``² grid over the set's bounds; the MSE uses its own
    ``n`` fresh points (drawn after the NLL's from the same generator).
    """
    data = toy.get(dataset)
    _checks.positive_int("n", n)
    _checks.positive_int("nll_grid", nll_grid, minimum=2)
    x = data.sample(n, generator)
    out = {"nll": metrics.grid_nll(energy, x, data.bounds, nll_grid)}
    if data.has_log_prob:
        out["mse"] = metrics.mse_log_density(energy, data, n=n, generator=generator)
    return out


def run(
    method: str,
    dataset: str,
    seed: int = 0,
    n_steps: int = 1000,
    *,
    hparams: Mapping[str, Any] | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    ema_decay: float = 0.99,
    eval_every: int = 250,
    eval_samples: int = 2000,
    nll_grid: int = 200,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = "runs/benchmark",
    checkpoint_every: int | None = 500,
    fresh: bool = False,
    progress: bool = True,
) -> BenchmarkRun:
    """Train ``method`` on ``dataset`` with ``seed``; record held-out NLL (and MSE where exact) of the EMA model.

    The network, its initialisation (from ``seed`` only), the loss and its hyperparameters are
    those of :mod:`edrepro.density` (``hparams`` override :data:`edrepro.density.METHODS`).
    Data batches and the loss's noise come from one generator seeded with ``seed``; evaluation
    points from a generator of their own fixed by (seed, step), the same for every method.

    Cache: with ``cache_dir`` the run lives in ``cache_dir/DATASET/METHOD-KEY-seedSEED.pt`` (KEY a
    hash of every argument except ``device``, ``cache_dir``, ``checkpoint_every``, ``fresh`` and
    ``progress``), checkpointed every ``checkpoint_every`` steps: a finished run is loaded
    (``cached=True``), an interrupted one resumes where it stopped; ``fresh=True`` deletes the
    file first. A run whose loss or gradient becomes non-finite stops there (``diverged_at``).
    """
    _checks.choice("method", method, density.METHODS)
    if not isinstance(dataset, str) or dataset not in toy.NAMES:
        raise ValueError(f"dataset must be the name of a 2-D data set, one of {list(toy.NAMES)}, got {dataset!r}")
    data = toy.get(dataset)
    _checks.positive_int("seed", seed, minimum=0)
    _checks.positive_int("n_steps", n_steps)
    _checks.positive_int("batch_size", batch_size)
    _checks.positive("lr", lr)
    _checks.unit_interval("ema_decay", ema_decay)
    _checks.positive_int("eval_every", eval_every)
    _checks.positive_int("eval_samples", eval_samples)
    _checks.positive_int("nll_grid", nll_grid, minimum=2)
    if checkpoint_every is not None:
        _checks.positive_int("checkpoint_every", checkpoint_every)
    hp = density.method_hparams(method, hparams)
    device = train.resolve_device(device)
    if method == "pcd" and device.type != "cpu":
        raise ValueError("method 'pcd' runs on the CPU only (its replay buffer draws on the CPU); use device='cpu'")

    config = {
        "method": method, "dataset": dataset, "seed": seed, "n_steps": n_steps, "hparams": hp,
        "batch_size": batch_size, "lr": lr, "ema_decay": ema_decay, "eval_every": eval_every,
        "eval_samples": eval_samples, "nll_grid": nll_grid,
    }
    path = density.cache_path(cache_dir, dataset, method, run_key(config), seed, fresh)

    def eval_fn(ema_model: nn.Module, step: int) -> dict[str, float]:
        net = ema_model.net if isinstance(ema_model, density.PersistentChains) else ema_model
        gen = torch.Generator().manual_seed(_eval_seed(seed, step))
        return evaluate(net, dataset, eval_samples, nll_grid, gen)

    result, timing, cached = density.train_run(
        method, data, seed, n_steps, hp, eval_fn, path, batch_size=batch_size, lr=lr, ema_decay=ema_decay,
        eval_every=eval_every, device=device, checkpoint_every=checkpoint_every, progress=progress,
    )
    done = len(result.losses)
    return BenchmarkRun(
        method=method, dataset=dataset, seed=seed, n_steps=n_steps,
        steps=[int(e["step"]) for e in result.evals],
        seconds=[float(e["seconds"]) for e in result.evals],
        nll=[float(e["nll"]) for e in result.evals],
        mse=[float(e["mse"]) for e in result.evals] if data.has_log_prob else None,
        losses=list(result.losses), ema_model=result.ema_model,  # type: ignore[arg-type]
        steps_per_second=done / result.seconds if result.seconds > 0 else math.inf,
        train_seconds=result.seconds, diverged_at=result.diverged_at, resumed_from=result.resumed_from,
        cached=cached, path=path, config=config, timing=timing,
    )


# ------------------------------------------------------------------------------------------
# Summaries
# ------------------------------------------------------------------------------------------

Table = Mapping[str, Mapping[str, float]]  # scores[method][dataset], lower is better


def _check_table(scores: Table) -> tuple[list[str], list[str]]:
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must be a non-empty mapping method -> {dataset: score}")
    methods = list(scores)
    columns = list(scores[methods[0]]) if isinstance(scores[methods[0]], Mapping) else []
    if not columns:
        raise ValueError("scores must map every method to a non-empty mapping dataset -> score")
    for m in methods:
        row = scores[m]
        if not isinstance(row, Mapping) or set(row) != set(columns):
            got = sorted(row) if isinstance(row, Mapping) else type(row).__name__
            raise ValueError(f"every method must be scored on the same data sets {columns}; {m!r} has {got}")
        for d in columns:
            v = row[d]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"scores[{m!r}][{d!r}] must be a number, got {v!r}")
    return methods, columns


def ranks(scores: Table) -> dict[str, dict[str, float]]:
    """Per data set, each method's rank by score (1 = lowest; ties share the mean of their ranks).

    A non-finite score (NaN, ±inf from a diverged or broken model) ranks after every finite one;
    several non-finite scores tie.
    """
    methods, columns = _check_table(scores)
    out: dict[str, dict[str, float]] = {m: {} for m in methods}
    for d in columns:
        keyed = [(float(scores[m][d]) if math.isfinite(scores[m][d]) else math.inf, m) for m in methods]
        values = sorted(v for v, _ in keyed)
        for v, m in keyed:
            first = values.index(v)  # 0-based position of the first equal value
            count = values.count(v)
            out[m][d] = first + (count + 1) / 2.0
    return out


def mean_ranks(scores: Table) -> dict[str, float]:
    """Each method's rank (:func:`ranks`) averaged over the data sets."""
    r = ranks(scores)
    return {m: float(np.mean(list(row.values()))) for m, row in r.items()}


def best(scores: Table) -> dict[str, list[str]]:
    """Per data set, the method(s) with the lowest finite score (empty if none is finite)."""
    methods, columns = _check_table(scores)
    out = {}
    for d in columns:
        finite = [float(scores[m][d]) for m in methods if math.isfinite(scores[m][d])]
        out[d] = [m for m in methods if finite and scores[m][d] == min(finite)]
    return out


def score_table(runs: Mapping[tuple[str, str], Sequence[BenchmarkRun]], metric: str = "nll") -> dict[str, dict[str, float]]:
    """scores[method][dataset]: the final ``metric`` (``"nll"`` or ``"mse"``) averaged over the seeds.

    ``runs`` maps (method, dataset) to that pair's runs. For ``"mse"``, sets without an exact
    density are left out.
    """
    _checks.choice("metric", metric, ("nll", "mse"))
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError("runs must be a non-empty mapping (method, dataset) -> list of BenchmarkRun")
    table: dict[str, dict[str, float]] = {}
    for key, rs in runs.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"runs must be keyed by (method, dataset) pairs, got {key!r}")
        if not rs:
            raise ValueError(f"runs[{key!r}] holds no runs")
        values = [r.final_nll if metric == "nll" else r.final_mse for r in rs]
        if metric == "mse" and values[0] is None:
            continue
        table.setdefault(key[0], {})[key[1]] = float(np.mean(values))
    return table


def leaderboard(scores: Table) -> list[dict[str, Any]]:
    """Rows of the leaderboard, sorted by mean rank: method, scores per set, ranks, mean rank."""
    r = ranks(scores)
    mr = mean_ranks(scores)
    rows = [{"method": m, "scores": dict(scores[m]), "ranks": r[m], "mean_rank": mr[m]} for m in scores]
    return sorted(rows, key=lambda row: (row["mean_rank"], list(scores).index(row["method"])))


def leaderboard_markdown(
    scores: Table, labels: Mapping[str, str] | None = None, digits: int = 2, sort: bool = False
) -> str:
    """A markdown table: rows methods, columns data sets, the best score per column in bold, the mean rank last.

    ``labels`` maps method keys to display names; ``sort`` orders the rows by mean rank (else as
    given). Non-finite scores are written as they are (``nan``, ``inf``).
    """
    _checks.positive_int("digits", digits, minimum=0)
    methods, columns = _check_table(scores)
    mr = mean_ranks(scores)
    winners = best(scores)
    order = [row["method"] for row in leaderboard(scores)] if sort else methods
    labels = labels or {}
    lines = ["| method | " + " | ".join(columns) + " | mean rank |", "|---|" + "---:|" * (len(columns) + 1)]
    for m in order:
        cells = []
        for d in columns:
            v = scores[m][d]
            text = f"{v:.{digits}f}" if math.isfinite(v) else str(v)
            cells.append(f"**{text}**" if m in winners[d] else text)
        lines.append(f"| {labels.get(m, m)} | " + " | ".join(cells) + f" | {mr[m]:.2f} |")
    return "\n".join(lines)


def mean_curve(runs: Sequence[BenchmarkRun], metric: str = "nll") -> tuple[np.ndarray, np.ndarray]:
    """Curves of several runs (e.g. one method on every set) averaged at their common evaluation steps.

    Returns (mean training seconds, mean ``metric``) at each evaluation index, cut to the shortest
    curve (a diverged run stops early). Runs must share their evaluation steps.
    """
    _checks.choice("metric", metric, ("nll", "mse"))
    if not runs:
        raise ValueError("runs must hold at least one BenchmarkRun")
    curves = [getattr(r, metric) for r in runs]
    if any(c is None for c in curves):
        raise ValueError(f"metric {metric!r} is missing for some runs (sets without an exact density)")
    n = min(len(c) for c in curves)
    steps = {tuple(r.steps[:n]) for r in runs}
    if len(steps) != 1:
        raise ValueError("runs must share their evaluation steps")
    values = np.array([c[:n] for c in curves], dtype=float)
    seconds = np.array([r.seconds[:n] for r in runs], dtype=float)
    return seconds.mean(axis=0), values.mean(axis=0)


def data_histogram(dataset: str, n_samples: int = 20_000, bins: int = 100, generator: torch.Generator | None = None) -> np.ndarray:
    """A normalised 2-D histogram of ``n_samples`` draws of ``dataset`` on its bounds, rows along x₂.

    The array sums to 1 over the points inside the bounds and is laid out like
    :func:`edrepro.plotting.grid_density` (``density_heatmap(ax, density=...)`` draws it).
    """
    data = toy.get(dataset) if isinstance(dataset, str) and dataset in toy.NAMES else None
    if data is None:
        raise ValueError(f"dataset must be the name of a 2-D data set, one of {list(toy.NAMES)}, got {dataset!r}")
    _checks.positive_int("n_samples", n_samples)
    _checks.positive_int("bins", bins)
    x = data.sample(n_samples, generator).double().numpy()
    lo, hi = data.bounds
    h, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=bins, range=[[lo, hi], [lo, hi]])
    total = h.sum()
    return (h / total).T if total > 0 else h.T
