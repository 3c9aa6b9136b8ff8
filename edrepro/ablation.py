"""The grid of energy-discrepancy ablations of the density-ablations chapter.

The authors vary the noise scale and the stabilisation of ED on 25 Gaussians: rows "std t" ∈
{0.05, 50} at w = 1 and rows w ∈ {0, 0.05, 50} at std 1, each against M ∈ {1, 32, 512}. In
this book t is the *variance* of each Gaussian step, so their std s is t = s² here
(:func:`variance_of_std`). One :class:`Cell` is one (t, w, M) configuration; :func:`ablation_grid`
builds the rows × columns list, :func:`run_cells` trains every cell with
:func:`edrepro.density.run` (cached on disk, so an interrupted grid resumes cell by cell, and
optionally on several worker processes), and :func:`annotation` / :func:`effective_mse` turn a
finished run into the text and the number shown in its heatmap cell (a diverged run reads
"diverged at step k" and counts as an infinite error).
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _checks, density, metrics, plotting


def variance_of_std(std: float) -> float:
    """The variance t = std² of a Gaussian step whose standard deviation is ``std``."""
    return _checks.positive("std", std) ** 2


def std_of_variance(t: float) -> float:
    """The standard deviation √t of a Gaussian step of variance ``t``."""
    return math.sqrt(_checks.positive("t", t))


@dataclass(frozen=True)
class Cell:
    """One ED configuration of the grid: variance ``t``, stabilisation ``w``, negatives ``m``; ``row`` names its row."""

    row: str
    t: float
    w: float
    m: int

    @property
    def hparams(self) -> dict[str, Any]:
        """The hyperparameters of :func:`edrepro.density.run` for method ``"ed"``."""
        return {"t": self.t, "m_particles": self.m, "w": self.w}


def row_label(t: float, w: float) -> str:
    """A row's title, e.g. ``"t = 0.0025 (std 0.05), w = 1"``."""
    return f"t = {t:g} (std {std_of_variance(t):g}), w = {w:g}"


def ablation_grid(
    t_values: Sequence[float], w_values: Sequence[float], m_values: Sequence[int], w_for_t: float = 1.0, t_for_w: float = 1.0
) -> tuple[list[str], list[Cell]]:
    """The rows (their labels) and the cells of the ablation grid, row by row, M along a row.

    Rows: each variance in ``t_values`` at w = ``w_for_t``, then each w in ``w_values`` at
    t = ``t_for_w``. Columns: ``m_values``. Raises ValueError on a bad value or a repeated row.
    """
    ts = [_checks.positive("t", t) for t in t_values]
    ws = [_checks.non_negative("w", w) for w in w_values]
    ms = [_checks.positive_int("M", m) for m in m_values]
    _checks.non_negative("w_for_t", w_for_t)
    _checks.positive("t_for_w", t_for_w)
    if not ms or not (ts or ws):
        raise ValueError("the grid needs at least one M and at least one row (a t or a w value)")
    if len(set(ms)) != len(ms):
        raise ValueError(f"m_values must be distinct, got {list(m_values)}")
    settings = [(t, w_for_t) for t in ts] + [(t_for_w, w) for w in ws]
    if len(set(settings)) != len(settings):
        raise ValueError(f"two rows have the same (t, w): {settings}")
    rows = [row_label(t, w) for t, w in settings]
    cells = [Cell(label, t, w, m) for label, (t, w) in zip(rows, settings) for m in ms]
    return rows, cells


def _train_cell(cell: Cell, seed: int, n_steps: int, run_kwargs: dict[str, Any]) -> float:
    # Runs in a worker process: one thread per worker, the result lands in the cache.
    import torch

    torch.set_num_threads(1)
    density.run("ed", seed=seed, n_steps=n_steps, hparams=cell.hparams, progress=False, **run_kwargs)
    return 0.0


def run_cells(
    cells: Sequence[Cell], seed: int, n_steps: int, *, workers: int = 1, progress: bool = True, **run_kwargs: Any
) -> dict[Cell, density.RunResult]:
    """Train every cell with :func:`edrepro.density.run` (method ``"ed"``) and return its result.

    ``run_kwargs`` go to :func:`edrepro.density.run` (``dataset``, ``batch_size``, ``eval_every``,
    ``cache_dir``, ...). With ``workers`` > 1 the cells are first trained in that many processes
    (one torch thread each, the most expensive cells first) into ``cache_dir``, then loaded here;
    the results are identical to ``workers = 1`` (each run's randomness depends on its seed only).
    Finished cells are loaded from the cache, interrupted ones resume; ``fresh=True`` retrains them.
    The workers are *spawned* processes: in a script, call this under ``if __name__ == "__main__":``
    (a notebook or pytest needs nothing).
    """
    cells = list(cells)
    if not cells or not all(isinstance(c, Cell) for c in cells):
        raise ValueError("cells must be a non-empty sequence of Cell")
    if len(set(cells)) != len(cells):
        raise ValueError("cells must be distinct")
    _checks.positive_int("workers", workers)
    if workers > 1 and run_kwargs.get("cache_dir", "runs/density") is None:
        raise ValueError("workers > 1 needs a cache_dir: the worker processes hand their runs back through it")
    if workers > 1:
        order = sorted(cells, key=lambda c: -c.m)  # longest first: better packing of the workers
        kwargs = {k: v for k, v in run_kwargs.items() if k != "progress"}
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(order)), mp_context=ctx) as pool:
            futures = [pool.submit(_train_cell, c, seed, n_steps, kwargs) for c in order]
            for f in futures:
                f.result()  # re-raises a worker's exception here
        run_kwargs = {**run_kwargs, "fresh": False}  # the workers retrained them; load what they wrote
    return {
        c: density.run("ed", seed=seed, n_steps=n_steps, hparams=c.hparams, progress=progress, **run_kwargs)
        for c in cells
    }


def effective_mse(result: density.RunResult) -> float:
    """The final MSE of the log-density, or +inf for a diverged run (or a non-finite MSE)."""
    if result.diverged_at is not None:
        return math.inf
    value = float(result.mse[-1])
    return value if math.isfinite(value) else math.inf


def annotation(result: density.RunResult) -> str:
    """The text of a heatmap cell: ``"MSE 0.123"`` or ``"diverged at step k"``."""
    if result.diverged_at is not None:
        return f"diverged at step {result.diverged_at:,}"
    value = float(result.mse[-1])
    return f"MSE {value:.3g}" if math.isfinite(value) else "MSE not finite"


def mse_table(
    results: Mapping[Cell, density.RunResult], rows: Sequence[str], m_values: Sequence[int]
) -> list[list[float]]:
    """The :func:`effective_mse` of every cell as a rows × M table (KeyError if a cell is missing)."""
    by_key = {(c.row, c.m): r for c, r in results.items()}
    return [[effective_mse(by_key[(row, m)]) for m in m_values] for row in rows]


def cell_density(result: density.RunResult, bounds: tuple[float, float] = (-4.0, 4.0), n: int = 100) -> np.ndarray | None:
    """The grid-normalised density of a run's EMA model (:func:`edrepro.plotting.grid_density`),
    or None when its energies are not finite on the grid (a diverged model)."""
    try:
        with torch.no_grad():
            p = plotting.grid_density(result.energy, bounds, n)
    except ValueError:  # energies rejected as non-finite
        return None
    return p if np.isfinite(p).all() else None


def energy_range(energy: Callable[[torch.Tensor], torch.Tensor], bounds: tuple[float, float] = (-3.0, 3.0), n: int = 60) -> float:
    """max − min of ``energy`` on an n×n grid over the square ``bounds`` (inf if not finite).

    A flatter density has a smaller range; it does not depend on the energy's additive constant.
    """
    points, _ = metrics.grid_points(bounds, n, dim=2)
    if isinstance(energy, torch.nn.Module):
        param = next(energy.parameters(), None)
        if param is not None:
            points = points.to(param)
    with torch.no_grad():
        e = energy(points).reshape(-1)
    if not torch.isfinite(e).all():
        return math.inf
    return float(e.max() - e.min())


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and by its finished child processes (e.g. the workers of
    :func:`run_cells`): a measure of the work done that, unlike wall-clock time, does not grow with
    the load other programs put on the machine."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
