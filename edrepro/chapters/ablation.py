"""The grid of energy-discrepancy ablations of the density-ablations chapter.

The authors vary the noise scale and the stabilisation of ED on 25 Gaussians: rows "std t" ∈
{0.05, 50} at w = 1 and rows w ∈ {0, 0.05, 50} at std 1, each against M ∈ {1, 32, 512}. In
this book t is the *variance* of each Gaussian step, so their std s is t = s² here
(:func:`variance_of_std`). One :class:`Cell` is one (t, w, M) configuration; :func:`ablation_grid`
builds the rows × columns list, :func:`page_specs` turns the page's cells into runs of
:mod:`edrepro.chapters.density` that record both estimators of the error (``mse``, ``mse_grid``; computed
and cached by :mod:`edrepro.book.runs`, so an interrupted grid resumes cell by cell, on worker
processes if asked).

Page helpers: :func:`annotation` / :func:`effective_mse` turn a finished run into the text and the
number shown in its heatmap cell (a diverged run reads "diverged at step k (loss)" and counts as
an infinite error); :func:`clearly_better`, :func:`finite_throughout` and :func:`flatness` measure;
:func:`stabilisation_claim` and :func:`flatness_claim` are the page's claims and
:func:`loss_bound_check` its instrument check; :func:`evaluations`, :func:`cost_fit` and
:func:`predicted_seconds` compute the cost of a grid in energy evaluations and estimate its duration
from measured speeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import _checks, metrics, plotting
from ..book import runs
from ..book.claims import Claim, InstrumentCheck, compare_below
from . import density


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
        """The hyperparameters of :func:`edrepro.chapters.density.run` for method ``"ed"``."""
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


def check_params(params: Mapping[str, Any]) -> None:
    """The ablation page's rules that tie its parameters together, checked before any cell is trained
    (:data:`edrepro.book.pipeline.PAGE_CHECKS`): no t-row may repeat a w-row (``t_for_w`` in ``t_values``
    with ``w_for_t`` in ``w_values`` would train one (t, w) twice), ``w_values`` must hold 0 and two
    values > 0 (:func:`require_w_rows`, the page's claims compare them), and the grid must build
    (:func:`page_cells`: distinct values of M, no repeated row). Raises ValueError naming the parameters."""
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be the ablation page's parameters, got {type(params).__name__}")
    if params["t_for_w"] in params["t_values"] and params["w_for_t"] in params["w_values"]:
        raise ValueError(f"t_for_w = {params['t_for_w']:g} is in t_values = {list(params['t_values'])} and w_for_t = {params['w_for_t']:g} "
                         f"is in w_values = {list(params['w_values'])}: the t-row and the w-row (t = {params['t_for_w']:g}, "
                         f"w = {params['w_for_t']:g}) would be the same cells")
    require_w_rows(params["w_values"])
    page_cells(params)


def page_cells(params: Mapping[str, Any]) -> tuple[list[str], list[Cell]]:
    """The rows and cells of the ablation page for its parameters."""
    return ablation_grid(params["t_values"], params["w_values"], params["m_values"], params["w_for_t"], params["t_for_w"])


def cell_spec(cell: Cell, params: Mapping[str, Any]) -> runs.RunSpec:
    """The ED run of one cell (:func:`edrepro.chapters.density.spec`) with the page's shared settings."""
    return density.spec(
        "ed", params["dataset"], params["seed"], params["n_steps"], hparams=cell.hparams, batch_size=params["batch_size"],
        lr=params["lr"], ema_decay=params["ema_decay"], eval_every=params["eval_every"], eval_samples=params["eval_samples"],
        metrics=["mse", "mse_grid"], chapter="density_ablations",
    )


def page_specs(params: Mapping[str, Any]) -> list[runs.RunSpec]:
    """The runs of the ablation page for its parameters, one per cell, row by row."""
    return [cell_spec(c, params) for c in page_cells(params)[1]]


SHORT = {"mse": "MSE", "mse_grid": "MSE quad."}
"""Short names of the two MSE estimators in a heatmap cell: importance sampling (the authors') and quadrature."""


def effective_mse(record: runs.RunRecord, metric: str = "mse") -> float:
    """The final ``metric`` (``"mse"`` or ``"mse_grid"``), or +inf for a diverged run (or a non-finite value)."""
    _checks.choice("metric", metric, SHORT)
    if record.diverged:
        return math.inf
    value = float(record.final(metric))
    return value if math.isfinite(value) else math.inf


def annotation(record: runs.RunRecord, metrics: Sequence[str] = ("mse",)) -> str:
    """The text of a heatmap cell: ``"MSE 0.123"`` (one line per metric of ``metrics``), or
    ``"diverged at step k (loss)"``; a quadrature MSE whose region did not hold the model's mass (final
    ``edge_mass`` above :data:`edrepro.metrics.EDGE_BAND_TOLERANCE`) says so."""
    if record.diverged:
        return record.outcome_text()
    lines = []
    edge = record.curves.get("edge_mass")
    unheld = bool(edge) and not edge[-1] <= density.metrics.EDGE_BAND_TOLERANCE  # (``metrics`` is the argument here)
    for metric in metrics:
        _checks.choice("metric", metric, SHORT)
        value = float(record.final(metric))
        mark = " (quadrature did not hold the mass)" if metric == "mse_grid" and unheld else ""
        lines.append((f"{SHORT[metric]} {value:.3g}" if math.isfinite(value) else f"{SHORT[metric]} not finite") + mark)
    return "\n".join(lines)


def mse_table(
    results: Mapping[Cell, runs.RunRecord], rows: Sequence[str], m_values: Sequence[int], metric: str = "mse"
) -> list[list[float]]:
    """The :func:`effective_mse` of every cell as a rows × M table (KeyError if a cell is missing)."""
    by_key = {(c.row, c.m): r for c, r in results.items()}
    return [[effective_mse(by_key[(row, m)], metric) for m in m_values] for row in rows]


def clearly_better(a: runs.RunRecord, b: runs.RunRecord, metric: str = "mse", margin: float = 0.9) -> bool:
    """Is run ``a``'s final ``metric`` below ``margin`` times run ``b``'s (:func:`effective_mse`; a diverged
    run is never better, and any finite value is better than a diverged one)?"""
    _checks.open_unit("margin", margin)
    mine, theirs = effective_mse(a, metric), effective_mse(b, metric)
    return math.isfinite(mine) and mine < margin * theirs


def finite_throughout(record: runs.RunRecord, metrics: Sequence[str] = ("mse", "mse_grid")) -> bool:
    """True when the run finished (did not diverge) and every evaluation of every metric is finite."""
    if record.diverged or record.status != "finished":
        return False
    return all(math.isfinite(v) for metric in metrics for v in record.curve(metric))


FLATNESS_BOUNDS: tuple[float, float] = (-3.0, 3.0)
"""The square on which :func:`flatness` measures the energy's spread: [−3, 3]² holds the 25 Gaussians."""
FLATNESS_GRID = 60
"""Grid points per axis of :func:`flatness`."""


def flatness(record: runs.RunRecord, bounds: tuple[float, float] = FLATNESS_BOUNDS, n: int = FLATNESS_GRID) -> float:
    """The spread max E − min E of a run's EMA energy on an n×n grid over ``bounds`` (:func:`energy_range`);
    smaller means a flatter density. [−3, 3]² holds the 25 Gaussians."""
    return energy_range(density.energy(record), bounds, n)


def stabilisation_claim(zero: runs.RunRecord, small: runs.RunRecord, metric: str, far_worse: float, label: str = "") -> Claim:
    """The claim that the unstabilised run ``zero`` (w = 0) is far worse than the stabilised ``small``
    on ``metric``: its final error at least ``far_worse`` times larger, or it diverged.

    A diverged ``small`` run makes it fail; a diverged ``zero`` run (and a finite ``small``) makes it
    hold; otherwise the two final errors, as :func:`edrepro.chapters.density.bounded_value` gives them
    (a quadrature MSE whose region did not hold the mass is only its floor, a lower bound, or no bound
    at all), are compared with :func:`edrepro.book.claims.compare_below`, which leaves the claim
    undecided where the bounds cannot decide it.
    """
    _checks.choice("metric", metric, SHORT)
    if isinstance(far_worse, bool) or not isinstance(far_worse, (int, float)) or not far_worse > 1:
        raise ValueError(f"far_worse must be a number above 1, got {far_worse!r}")
    a, b = effective_mse(zero, metric), effective_mse(small, metric)
    measured = f"{annotation(zero, [metric])} vs {annotation(small, [metric])}"
    if not math.isfinite(b):
        holds: bool | None = False
    elif not math.isfinite(a):
        holds = True
    else:
        (a, a_kind), (b, b_kind) = density.bounded_value(zero, metric), density.bounded_value(small, metric)
        holds = compare_below(far_worse * b, a, b_kind, a_kind)
        bounds = [f"{name} ≥ {v:.3g} (its floor)" if kind == "lower" else f"{name} {v:.3g} (no bound)"
                  for name, v, kind in (("w = 0", a, a_kind), ("w > 0", b, b_kind)) if kind != "exact"]
        if bounds:
            measured += "; compared as " + ", ".join(bounds)
    statement = (f"w = 0 is far worse than w = {small.spec.hparams['w']:g} (error ≥ {far_worse:g}×, or diverged), "
                 f"{label or 'same t and M'}, on the {density.METRICS_SHORT[metric]}")
    return Claim(statement, measured, holds)


def flatness_claim(spread: Mapping[tuple[float, int], float], w_small: float, w_large: float, m_values: Sequence[int]) -> Claim:
    """The claim that the larger stabilisation gives the flatter density at every M: the energy spread
    (:func:`flatness`) ``spread[(w_large, m)]`` below ``spread[(w_small, m)]`` for every m of ``m_values``.
    A non-finite spread (a model whose energy is not finite on the grid) never makes it hold."""
    if not w_large > w_small:
        raise ValueError(f"w_large must exceed w_small, got {w_large!r} and {w_small!r}")
    if not m_values:
        raise ValueError("m_values must name at least one M")
    lo, hi = FLATNESS_BOUNDS
    verdicts = [compare_below(spread[(w_large, m)], spread[(w_small, m)]) for m in m_values]
    return Claim(f"larger w, flatter density: the energy spread on [{lo:g}, {hi:g}]² is smaller for w = {w_large:g} "
                 f"than for w = {w_small:g} at every M",
                 "; ".join(f"M = {m}: {spread[(w_large, m)]:.3g} vs {spread[(w_small, m)]:.3g}" for m in m_values),
                 all(v is True for v in verdicts))


def ed_lower_bound(w: float, m: int) -> float:
    """log(w/M): the stabilised ED estimate mean_i log(w/M + (1/M) Σ_j exp(E(x_i) − E(x'_ij))) is above it
    for every model and every batch, since each exponential is positive (−inf for w = 0: nothing bounds it)."""
    w = _checks.non_negative("w", w)
    m = _checks.positive_int("M", m)
    return math.log(w / m) if w > 0 else -math.inf


def lowest_loss(record: runs.RunRecord) -> float:
    """The lowest finite training loss a run logged (nan when it logged none)."""
    finite = [v for v in record.losses if math.isfinite(v)]
    return min(finite) if finite else math.nan


def loss_bound_check(records: Sequence[runs.RunRecord], tolerance: float = 1e-5) -> InstrumentCheck:
    """The instrument check that the ED loss of every stabilised run (w > 0) stayed above its bound
    log(w/M) (:func:`ed_lower_bound`) at every logged step, up to ``tolerance`` (float rounding): a check
    of the loss's implementation, not a claim — the bound holds for every model. A run that logged no
    finite loss fails it."""
    stabilised = [r for r in records if r.spec.hparams.get("w", 0) > 0]
    if not stabilised:
        raise ValueError("records must hold at least one run with w > 0")
    gaps = [lowest_loss(r) - ed_lower_bound(r.spec.hparams["w"], r.spec.hparams["m_particles"]) for r in stabilised]
    below = sum(not g >= -tolerance for g in gaps)
    smallest = min((g for g in gaps if math.isfinite(g)), default=math.nan)
    return InstrumentCheck("every w > 0 run's ED loss stays above log(w/M) at every logged step (the estimator's bound)",
                           f"{len(stabilised) - below} of {len(stabilised)} runs; smallest margin {smallest:.2g}", below == 0)


def evaluations(m_values: Sequence[int], n_steps: int, batch_size: int, n_rows: int = 1) -> int:
    """Energy evaluations of training a grid: every iteration of a cell with M negatives evaluates the
    energy at B(M + 1) points (B data points and BM negatives), so the grid costs
    n_rows · n_steps · B · Σ_M (M + 1)."""
    ms = [_checks.positive_int("M", m) for m in m_values]
    for name, value in (("n_steps", n_steps), ("batch_size", batch_size), ("n_rows", n_rows)):
        _checks.positive_int(name, value)
    return n_rows * n_steps * batch_size * sum(m + 1 for m in ms)


def cost_fit(records: Sequence[runs.RunRecord]) -> tuple[float, float]:
    """Least-squares fit of the measured training seconds per iteration of ED runs against M + 1:
    seconds/iteration ≈ a + b·(M + 1); returns (a, b). Needs runs with at least two different M."""
    rs = [r for r in records if r.steps > 0 and r.train_seconds > 0]
    ms = {r.spec.hparams.get("m_particles") for r in rs}
    if not rs or any(r.spec.method != "ed" for r in rs) or len(ms) < 2:
        raise ValueError("records must hold finished ED runs with at least two different numbers of negatives M")
    x = np.array([r.spec.hparams["m_particles"] + 1 for r in rs], dtype=float)
    y = np.array([r.train_seconds / r.steps for r in rs])
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def predicted_seconds(fit: tuple[float, float], m_values: Sequence[int], n_steps: int, n_rows: int = 1) -> float:
    """Training seconds of a grid predicted by a :func:`cost_fit` (a, b): n_rows · n_steps · Σ_M (a + b(M + 1))."""
    a, b = fit
    ms = [_checks.positive_int("M", m) for m in m_values]
    _checks.positive_int("n_steps", n_steps)
    _checks.positive_int("n_rows", n_rows)
    return n_rows * n_steps * sum(a + b * (m + 1) for m in ms)


def require_w_rows(w_values: Sequence[float]) -> tuple[float, float, float]:
    """(0, the smallest w > 0, the largest w) of ``w_values``: the rows the page's claims compare.
    Raises ValueError naming ``w_values`` when it lacks w = 0 or two positive values."""
    positive = sorted(w for w in w_values if w > 0)
    if 0 not in w_values or len(positive) < 2:
        raise ValueError(f"w_values must contain 0 and at least two values > 0 (the claims compare them), got {list(w_values)}")
    return 0.0, positive[0], positive[-1]


def cell_density(
    record: runs.RunRecord, bounds: tuple[float, float] = (-4.0, 4.0), n: int = 100, energy: Callable | None = None
) -> np.ndarray | None:
    """The grid-normalised density of a run's EMA model (or of ``energy``, when given;
    :func:`edrepro.plotting.grid_density`), or None when its energies are not finite on the grid
    (a diverged model)."""
    try:
        with torch.no_grad():
            p = plotting.grid_density(energy or density.energy(record), bounds, n)
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
