"""Mechanics of the density benchmark: every training method on every 2-D data set, one budget.

One run is a (method, data set, seed) triple of :mod:`edrepro.density` (:func:`edrepro.density.spec`:
the toy energy network, the method's loss, Adam, a fresh batch every step, an EMA of the
parameters), scored at step 0, every ``eval_every`` steps and at the last step on fresh held-out
samples by the held-out NLL (every set) and the MSE of the log-density (where the set has an exact
log-density). :func:`page_specs` lists the page's runs; :mod:`edrepro.runs` computes and caches them.

The summaries (:func:`ranks`, :func:`leaderboard`, :func:`leaderboard_markdown`,
:func:`mean_curve`) are plain functions of the runs' numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from . import _checks, density, runs, toy

DATASETS: tuple[str, ...] = ("25gaussians", "8gaussians", "rings", "checkerboard", "pinwheel", "2spirals", "moons", "swissroll")
"""The data sets of the benchmark, in the order of the leaderboard's columns."""

METHODS: tuple[str, ...] = tuple(density.METHODS)
"""The training methods (the keys of :data:`edrepro.density.METHODS`), in the order of its rows."""


def run_metrics(dataset: str) -> list[str]:
    """The metrics a benchmark run records on ``dataset``: the NLL, and both MSEs where the density is exact."""
    return ["nll", "mse", "mse_grid"] if toy.get(dataset).has_log_prob else ["nll"]


def page_specs(params: Mapping[str, Any]) -> list[runs.RunSpec]:
    """The runs of the benchmark page for its parameters: every method on every data set, one seed."""
    return [
        density.spec(
            m, d, params["seed"], params["n_steps"], batch_size=params["batch_size"], lr=params["lr"],
            ema_decay=params["ema_decay"], eval_every=params["eval_every"], eval_samples=params["eval_samples"],
            metrics=run_metrics(d), grid=params["nll_grid"], chapter="density_benchmark", checkpoint_every=500,
        )
        for d in params["datasets"] for m in params["methods"]
    ]


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


def score_table(records: Mapping[tuple[str, str], Sequence[runs.RunRecord]], metric: str = "nll") -> dict[str, dict[str, float]]:
    """scores[method][dataset]: the final ``metric`` (``"nll"`` or ``"mse"``) averaged over the seeds.

    ``records`` maps (method, dataset) to that pair's runs. For ``"mse"``, sets without an exact
    density are left out.
    """
    _checks.choice("metric", metric, ("nll", "mse"))
    if not isinstance(records, Mapping) or not records:
        raise ValueError("records must be a non-empty mapping (method, dataset) -> list of RunRecord")
    table: dict[str, dict[str, float]] = {}
    for key, rs in records.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"records must be keyed by (method, dataset) pairs, got {key!r}")
        if not rs:
            raise ValueError(f"records[{key!r}] holds no runs")
        if metric not in rs[0].curves:
            continue
        values = [r.final(metric) for r in rs]
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


def mean_curve(records: Sequence[runs.RunRecord], metric: str = "nll") -> tuple[np.ndarray, np.ndarray]:
    """Curves of several runs (e.g. one method on every set) averaged at their common evaluation steps.

    Returns (mean training seconds, mean ``metric``) at each evaluation index, cut to the shortest
    curve (a diverged run stops early). Runs must share their evaluation steps.
    """
    _checks.choice("metric", metric, ("nll", "mse"))
    if not records:
        raise ValueError("records must hold at least one RunRecord")
    if any(metric not in r.curves for r in records):
        raise ValueError(f"metric {metric!r} is missing for some runs (sets without an exact density)")
    curves = [r.curve(metric) for r in records]
    n = min(len(c) for c in curves)
    steps = {tuple(r.step_curve[:n]) for r in records}
    if len(steps) != 1:
        raise ValueError("records must share their evaluation steps")
    values = np.array([c[:n] for c in curves], dtype=float)
    seconds = np.array([r.seconds_curve[:n] for r in records], dtype=float)
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
