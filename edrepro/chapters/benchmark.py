"""Mechanics of the density benchmark: every training method on every 2-D data set, one budget.

One run is a (method, data set, seed) triple of :mod:`edrepro.chapters.density` (:func:`edrepro.chapters.density.spec`:
the toy energy network, the method's loss, Adam, a fresh batch every step, an EMA of the
parameters), scored at step 0, every ``eval_every`` steps and at the last step on fresh held-out
samples by the held-out NLL (every set) and both MSEs of the log-density (where the set has an
exact log-density): :func:`run_metrics`. The NLL and the quadrature MSE normalise exp(−E) over a
square region about the data box, four times its side (:func:`quadrature_layout`,
:func:`edrepro.metrics.region_log_normaliser`), and every run also records the model's mass outside
the data box (``mass_outside``) and in the region's outer band (``edge_mass``, checked by
:func:`leaked` and :func:`edge_warnings`). :func:`page_specs` lists the page's runs;
:mod:`edrepro.book.runs` computes and caches them.

The summaries (:func:`by_pair`, :func:`score_table`, :func:`ranks`, :func:`leaderboard`,
:func:`leaderboard_markdown`, :func:`beaten_by`, :func:`box_only_nll`, :func:`mean_curve`,
:func:`speeds`, :func:`cpu_table`, :func:`throughput_markdown`, :func:`conditions_text`) are plain
functions of the runs' numbers. A final NLL is a lower bound where the quadrature did not hold the
model's mass (:func:`nll_kinds`); :func:`rank_intervals`, :func:`beaten_by_bounds` and
:func:`versus_reference` let such a bound decide a comparison only in the direction it allows
(:func:`edrepro.book.claims.compare_below`). The page's claims are :func:`stability_claim` and
:func:`top_k_claim`; :func:`leaderboard_figure` draws the wide tables; :func:`gaussian_fit_energy`, :func:`constant_energy` and
:func:`score_energy` score reference models with the runs' metrics; :func:`heatmap_gallery` draws
the learned densities.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .. import _checks, metrics, toy
from ..book import page, runs
from ..book.claims import Claim, compare_below
from . import density

DATASETS: tuple[str, ...] = ("25gaussians", "8gaussians", "rings", "checkerboard", "pinwheel", "2spirals", "moons", "swissroll")
"""The data sets of the benchmark, in the order of the leaderboard's columns."""

METHODS: tuple[str, ...] = tuple(density.METHODS)
"""The training methods (the keys of :data:`edrepro.chapters.density.METHODS`), in the order of its rows."""

AUTHORS_2D: dict[str, float] = {"n_steps": 50_001, "ema_decay": 0.999, "batch_size": 128, "lr": 1e-3}
"""The authors' 2-D training settings, as their density notebook sets them (iterations, EMA decay of
the evaluated weights, batch size, Adam learning rate): the ``paper`` profile of the benchmark."""

SCORES: tuple[str, ...] = ("nll", "mse", "mse_grid", "mass_outside", "edge_mass")
"""The recorded quantities a :func:`score_table` or :func:`mean_curve` can summarise (lower is better for each)."""


def run_metrics(dataset: str) -> list[str]:
    """The metrics a benchmark run records on ``dataset``: the NLL, and both MSEs where the density is exact."""
    return ["nll", "mse", "mse_grid"] if toy.get(dataset).has_log_prob else ["nll"]


def quadrature_layout(dataset: str, grid: int) -> dict[str, Any]:
    """How the runs' NLL normalises exp(−E) on ``dataset`` with ``grid`` cells per axis of the box
    (:func:`edrepro.chapters.density.evaluate`, :func:`edrepro.metrics.region_log_normaliser` with its defaults):
    the data box B and the region R (B scaled by four about its centre, :func:`edrepro.metrics.region_log_normaliser`'s default), cells per axis and spacing of
    the fine grid on B and of the coarse grid on R, the energy evaluations per quadrature, and where
    R's outer band (whose mass is ``edge_mass``) begins, as a distance from R's centre in the sup norm."""
    data = toy.get(dataset) if isinstance(dataset, str) and dataset in toy.NAMES else None
    if data is None:
        raise ValueError(f"dataset must be the name of a 2-D data set, one of {list(toy.NAMES)}, got {dataset!r}")
    _checks.positive_int("grid", grid, minimum=8)
    n_region = inspect.signature(metrics.region_log_normaliser).parameters["n_region"].default
    box, region = data.bounds, metrics._default_region(data.bounds)
    n_points = metrics.region_log_normaliser(constant_energy, box, region, n_box=grid, n_region=n_region, dim=data.dim).n_points
    band = metrics._region_layout(box, region, grid, n_region, data.dim)[4]
    h_region = (region[1] - region[0]) / n_region
    return {"box": box, "region": region, "n_box": grid, "n_region": n_region, "h_box": (box[1] - box[0]) / grid,
            "h_region": h_region, "n_points": n_points, "edge_band_from": (region[1] - region[0]) / 2 - band * h_region}


def check_params(params: Mapping[str, Any]) -> None:
    """The benchmark page's rules that tie its parameters together, checked before any run is trained
    (:data:`edrepro.book.pipeline.PAGE_CHECKS`): ``methods`` must hold ``"ed"`` (the page ranks ED against
    the others) and ``top_k`` must be at most ``len(methods)`` (the claim puts ED among the best ``top_k``).
    Raises ValueError naming the parameters and their values."""
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be the benchmark page's parameters, got {type(params).__name__}")
    methods, top_k = list(params["methods"]), params["top_k"]
    if "ed" not in methods:
        raise ValueError(f"methods = {methods} must include 'ed': the page ranks ED against the other methods")
    if top_k > len(methods):
        raise ValueError(f"top_k = {top_k} must be at most len(methods) = {len(methods)} (methods = {methods}): "
                         "the claim places ED among the best top_k of the methods")


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


def by_pair(records: Sequence[runs.RunRecord]) -> dict[tuple[str, str], list[runs.RunRecord]]:
    """The runs grouped by (method, dataset), in the order they come (the input of :func:`score_table`)."""
    if isinstance(records, (str, bytes)) or not isinstance(records, Sequence) or not records:
        raise ValueError("records must be a non-empty sequence of RunRecord")
    out: dict[tuple[str, str], list[runs.RunRecord]] = {}
    for r in records:
        if not isinstance(r, runs.RunRecord):
            raise ValueError(f"records must hold RunRecord values, got {type(r).__name__}")
        out.setdefault((r.spec.method, r.spec.dataset), []).append(r)
    return out


def score_table(records: Mapping[tuple[str, str], Sequence[runs.RunRecord]], metric: str = "nll") -> dict[str, dict[str, float]]:
    """scores[method][dataset]: the final ``metric`` (one of :data:`SCORES`) averaged over the seeds.

    ``records`` maps (method, dataset) to that pair's runs (:func:`by_pair`). Sets whose runs did
    not record ``metric`` (the MSEs where the density is not exact) are left out. A diverged run
    scores inf (its last evaluation, before the divergence, is not its result), so it ranks last.
    """
    _checks.choice("metric", metric, SCORES)
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
        values = [math.inf if r.diverged else r.final(metric) for r in rs]
        table.setdefault(key[0], {})[key[1]] = float(np.mean(values))
    return table


def leaderboard(scores: Table) -> list[dict[str, Any]]:
    """Rows of the leaderboard, sorted by mean rank: method, scores per set, ranks, mean rank."""
    r = ranks(scores)
    mr = mean_ranks(scores)
    rows = [{"method": m, "scores": dict(scores[m]), "ranks": r[m], "mean_rank": mr[m]} for m in scores]
    return sorted(rows, key=lambda row: (row["mean_rank"], list(scores).index(row["method"])))


def leaderboard_markdown(
    scores: Table, labels: Mapping[str, str] | None = None, digits: int = 2, sort: bool = False,
    marks: Mapping[tuple[str, str], str] | None = None,
) -> str:
    """A markdown table: rows methods, columns data sets, the best score per column in bold, the mean rank last.

    ``labels`` maps method keys to display names; ``sort`` orders the rows by mean rank (else as
    given); ``marks`` maps (method, dataset) to a prefix of that cell (e.g. ``"≥"`` for a lower
    bound, see :func:`leaked`). Non-finite scores are written as they are (``nan``, ``inf``).
    """
    _checks.positive_int("digits", digits, minimum=0)
    marks = dict(marks or {})
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
            text = marks.get((m, d), "") + (f"{v:.{digits}f}" if math.isfinite(v) else str(v))
            cells.append(f"**{text}**" if m in winners[d] else text)
        lines.append(f"| {labels.get(m, m)} | " + " | ".join(cells) + f" | {mr[m]:.2f} |")
    return "\n".join(lines)


def mean_curve(records: Sequence[runs.RunRecord], metric: str = "nll", statistic: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Curves of several runs (e.g. one method on every set) summarised at their common evaluation steps.

    Returns (mean training seconds, ``statistic`` — ``"mean"`` or ``"median"`` — of ``metric``) at each
    evaluation index, cut to the shortest curve (a diverged run stops early). The median is robust to
    one run gone far astray (an NLL in the tens on one set). Runs must share their evaluation steps.
    """
    _checks.choice("metric", metric, SCORES)
    _checks.choice("statistic", statistic, ("mean", "median"))
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
    return seconds.mean(axis=0), (values.mean(axis=0) if statistic == "mean" else np.median(values, axis=0))


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


def beaten_by(scores: Table, method: str) -> dict[str, list[tuple[str, float]]]:
    """Per data set, the methods whose score is below ``method``'s, with the margin, best first.

    margin = scores[method][d] − scores[other][d] > 0. A non-finite score of ``method`` is beaten by
    every finite one (margin inf); a non-finite score never beats.
    """
    methods, columns = _check_table(scores)
    _checks.choice("method", method, methods)
    out = {}
    for d in columns:
        own = float(scores[method][d]) if math.isfinite(scores[method][d]) else math.inf
        better = [(m, own - float(scores[m][d])) for m in methods
                  if m != method and math.isfinite(scores[m][d]) and scores[m][d] < own]
        out[d] = sorted(better, key=lambda pair: -pair[1])
    return out


def box_only_nll(nll: Table, mass_outside: Table) -> dict[str, dict[str, float]]:
    """The NLL a normaliser over the data box alone would give: NLL_box = NLL + log(1 − m_out).

    With Z = Z_box + Z_out and m_out = Z_out/Z, log Z_box = log Z + log(1 − m_out): the box-only NLL
    is lower than the NLL by −log(1 − m_out), the more so the more mass the model puts outside the box.
    NaN where m_out rounds to 1 (Z_box below the float resolution of Z: the recorded numbers cannot
    recover it) or the NLL is not finite.
    """
    methods, columns = _check_table(nll)
    if _check_table(mass_outside) != (methods, columns):
        raise ValueError("nll and mass_outside must score the same methods on the same data sets, in the same order")
    out: dict[str, dict[str, float]] = {m: {} for m in methods}
    for m in methods:
        for d in columns:
            v, mo = float(nll[m][d]), float(mass_outside[m][d])
            if math.isfinite(mo) and not 0.0 <= mo <= 1.0:
                raise ValueError(f"mass_outside[{m!r}][{d!r}] must lie in [0, 1], got {mo!r}")
            out[m][d] = v + math.log1p(-mo) if math.isfinite(v) and math.isfinite(mo) and mo < 1.0 else math.nan
    return out


def box_only_markdown(nll: Table, mass_outside: Table, labels: Mapping[str, str] | None = None) -> str:
    """A markdown table, rows as in ``nll``: each method's mean rank by the NLL and by the box-only NLL
    (:func:`box_only_nll`), and its largest flattery NLL − NLL_box with the set (finite ones only)."""
    box = box_only_nll(nll, mass_outside)
    rank, box_rank = mean_ranks(nll), mean_ranks(box)
    labels = labels or {}
    rows = []
    for m in nll:
        gaps = {d: nll[m][d] - box[m][d] for d in nll[m] if math.isfinite(nll[m][d] - box[m][d])}
        d = max(gaps, key=gaps.get) if gaps else None
        rows.append([labels.get(m, m), rank[m], box_rank[m], f"{gaps[d]:.3f} nats ({d})" if d else None])
    header = ["method", "mean rank, NLL over R", "mean rank, NLL over the box only", "largest flattery (set)"]
    return page.markdown_table(header, rows)


def leaked(records: Sequence[runs.RunRecord], tolerance: float = metrics.EDGE_BAND_TOLERANCE) -> set[tuple[str, str]]:
    """The (method, dataset) pairs with a run whose final ``edge_mass`` exceeds ``tolerance``: the
    quadrature region did not hold that model's mass, so its final NLL (and mass outside the box) is
    a lower bound and its quadrature MSE uncertain."""
    tolerance = _checks.open_unit("tolerance", tolerance)
    return {key for key, rs in by_pair(records).items() if any(not r.final("edge_mass") <= tolerance for r in rs)}


def edge_warnings(records: Sequence[runs.RunRecord], tolerance: float = metrics.EDGE_BAND_TOLERANCE) -> list[str]:
    """Where the quadrature region did not hold a model's mass: ``edge_mass`` above ``tolerance``.

    There log Z is an underestimate, and the NLL (and the quadrature MSE) a lower bound. Returns one
    ``warning:`` line per run whose *final* evaluation (the one the tables use) exceeds it, then one
    ``note:`` line per earlier evaluation step at which some runs exceed it (how many, and which when
    few: an untrained network is nearly flat over the region, so step 0 usually appears); [] when
    every region held at every evaluation.
    """
    tolerance = _checks.open_unit("tolerance", tolerance)
    recs = [r for rs in by_pair(records).values() for r in rs]
    lines, early = [], {}
    for r in recs:
        edge = r.curve("edge_mass")
        if not edge[-1] <= tolerance:
            lines.append(f"warning: {r.spec.label}: {edge[-1]:.2g} of the mass in the quadrature region's outer band at the "
                         f"final evaluation (step {r.step_curve[-1]}, tolerance {tolerance:g}); its final NLL is a lower bound")
        for step, v in zip(r.step_curve[:-1], edge[:-1]):
            if not v <= tolerance:
                early.setdefault(step, []).append(r.spec.label)
    for step in sorted(early):
        who = early[step]
        names = f": {', '.join(who)}" if len(who) <= 3 else ""
        lines.append(f"note: at step {step} the region did not hold the mass of {len(who)} of {len(recs)} runs "
                     f"(their NLL there is a lower bound){names}")
    return lines


def gaussian_fit_energy(dataset: str, n: int = 10_000, seed: int = 12345) -> Callable[[torch.Tensor], torch.Tensor]:
    """E(x) = −log N(x; μ, Σ), with μ and Σ the mean and covariance of ``n`` draws of ``dataset``.

    The moment-matched Gaussian: a model that learned the data's location and spread and nothing
    else. Its expected NLL is ½ log det(2πe Σ) (for μ, Σ the exact moments). The draws come from
    their own generator (``seed``), not from any run's.
    """
    data = toy.get(dataset) if isinstance(dataset, str) and dataset in toy.NAMES else None
    if data is None:
        raise ValueError(f"dataset must be the name of a 2-D data set, one of {list(toy.NAMES)}, got {dataset!r}")
    _checks.positive_int("n", n, minimum=2)
    _checks.positive_int("seed", seed, minimum=0)
    x = data.sample(n, torch.Generator().manual_seed(seed)).double()
    gauss = torch.distributions.MultivariateNormal(x.mean(0), covariance_matrix=torch.cov(x.T))
    return lambda y: -gauss.log_prob(y.double())


def constant_energy(x: torch.Tensor) -> torch.Tensor:
    """E(x) = 0: exp(−E) is flat over whatever region normalises it."""
    return torch.zeros(_checks.batch("x", x).shape[0], dtype=torch.float64)


def score_energy(energy: Callable[[torch.Tensor], torch.Tensor], dataset: str, seed: int, step: int, n: int, grid: int) -> dict[str, float]:
    """The metrics of :func:`run_metrics` for ``energy`` on the held-out points a benchmark run of
    ``seed`` draws at ``step`` (``n`` points, ``grid`` cells per axis of the box): the same numbers
    as a run's evaluation, for a reference model (plus ``mass_outside`` and ``edge_mass``)."""
    data = toy.get(dataset) if isinstance(dataset, str) and dataset in toy.NAMES else None
    if data is None:
        raise ValueError(f"dataset must be the name of a 2-D data set, one of {list(toy.NAMES)}, got {dataset!r}")
    _checks.positive_int("seed", seed, minimum=0)
    _checks.positive_int("step", step, minimum=0)
    gen = torch.Generator().manual_seed(density._eval_seed(seed, step))
    return density.evaluate(energy, dataset, run_metrics(dataset), n, grid, gen)


def speeds(records: Mapping[tuple[str, str], Sequence[runs.RunRecord]]) -> dict[str, list[float]]:
    """Per method, the training iterations per second (wall time, evaluation excluded) of each of its runs."""
    if not isinstance(records, Mapping) or not records:
        raise ValueError("records must be a non-empty mapping (method, dataset) -> list of RunRecord")
    out: dict[str, list[float]] = {}
    for (method, _), rs in records.items():
        out.setdefault(method, []).extend(r.steps_per_second for r in rs)
    return out


def cpu_table(records: Mapping[tuple[str, str], Sequence[runs.RunRecord]]) -> dict[str, dict[str, float]]:
    """cpu[method][dataset]: the CPU seconds of the process that computed the run, mean over the seeds.

    They count training and evaluation; on one data set every method is evaluated alike (same points,
    metrics and quadrature), so the differences between methods are differences of training cost.
    Unlike the wall-clock throughput, CPU time hardly changes when other work shares the machine.
    """
    if not isinstance(records, Mapping) or not records:
        raise ValueError("records must be a non-empty mapping (method, dataset) -> list of RunRecord")
    table: dict[str, dict[str, float]] = {}
    for (method, dataset), rs in records.items():
        if not rs:
            raise ValueError(f"records[{(method, dataset)!r}] holds no runs")
        table.setdefault(method, {})[dataset] = float(np.mean([r.cpu_seconds for r in rs]))
    return table


def throughput_markdown(records: Mapping[tuple[str, str], Sequence[runs.RunRecord]], labels: Mapping[str, str] | None = None) -> str:
    """A markdown table, cheapest first: per method, the mean (min–max) training iterations per second
    over its runs (wall time, evaluation excluded), the training seconds of all its runs, and the mean
    CPU seconds of one run (training and evaluation, :func:`cpu_table`)."""
    its = speeds(records)
    cpu = cpu_table(records)
    secs: dict[str, float] = {}
    for (method, _), rs in records.items():
        secs[method] = secs.get(method, 0.0) + sum(r.train_seconds for r in rs)
    mean_cpu = {m: float(np.mean(list(row.values()))) for m, row in cpu.items()}
    labels = labels or {}
    rows = [[labels.get(m, m), f"{np.mean(its[m]):.0f}", f"{min(its[m]):.0f}–{max(its[m]):.0f}", f"{secs[m]:.0f}", f"{mean_cpu[m]:.1f}"]
            for m in sorted(its, key=lambda m: mean_cpu[m])]
    header = ["method", "iterations / s, mean", "min–max over runs", "training seconds, all runs", "CPU seconds per run, mean"]
    return page.markdown_table(header, rows)


def conditions_text(records: Sequence[runs.RunRecord]) -> str:
    """One line on where ``records`` were trained, from their ``conditions``: device, CPU, cores,
    torch threads and version, the range of the 1-minute load average while they trained, and dates."""
    recs = [r for rs in by_pair(records).values() for r in rs]
    cond = [r.conditions for r in recs if r.conditions]
    if not cond:
        return f"{len(recs)} runs; their training conditions were not recorded"

    def values(key: str) -> str:
        return ", ".join(sorted({str(c[key]) for c in cond if key in c})) or "unknown"

    loads = sorted(float(c[k]) for c in cond for k in ("load_start", "load_end") if c.get(k) is not None)
    dates = sorted(str(c["date"]) for c in cond if "date" in c)
    load = f"{loads[0]:.1f}–{loads[-1]:.1f}" if loads else "unknown"
    when = (dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}") if dates else "unknown"
    return (f"{len(recs)} runs on {values('device')} ({values('cpu')}, {values('cores')} cores), torch {values('torch')} "
            f"with {values('threads')} thread(s); 1-minute load average while they trained {load}; trained {when}")


def heatmap_gallery(records: Mapping[tuple[str, str], Sequence[runs.RunRecord]], methods: Sequence[str], datasets: Sequence[str],
                    labels: Mapping[str, str] | None = None, n: int = 100, seed: int = 0) -> Any:
    """A figure: one column per data set, a top row of data histograms (100 000 draws of generator
    ``seed``), then one row per method with the first run's EMA density exp(−E) normalised over an
    ``n`` × ``n`` grid on the box, titled with the run's NLL ("≥": a lower bound, see :func:`leaked`) and its mass
    outside the box."""
    import matplotlib.pyplot as plt

    from .. import plotting

    _checks.positive_int("n", n, minimum=2)
    missing = [(m, d) for d in datasets for m in methods if not records.get((m, d))]
    if missing or not methods or not datasets:
        raise ValueError(f"records must hold a run for every (method, dataset) pair; missing {missing or 'methods or datasets'}")
    labels = labels or {}
    fig, axes = plt.subplots(len(methods) + 1, len(datasets), figsize=(1.9 * len(datasets), 1.95 * (len(methods) + 1)), squeeze=False)
    for j, d in enumerate(datasets):
        bounds = toy.get(d).bounds
        plotting.density_heatmap(axes[0, j], density=data_histogram(d, 100_000, n, torch.Generator().manual_seed(seed)), bounds=bounds, title=d)
        for i, m in enumerate(methods, start=1):
            r = records[m, d][0]
            with torch.no_grad():
                plotting.density_heatmap(axes[i, j], energy=density.energy(r), bounds=bounds, n=n)
            bound = "" if r.final("edge_mass") <= metrics.EDGE_BAND_TOLERANCE else "≥ "  # the region did not hold the mass
            title = r.outcome_text() if r.diverged else f"NLL {bound}{r.final('nll'):.2f}, {100 * r.final('mass_outside'):.0f} % out"
            axes[i, j].set_title(title, fontsize=7, pad=2)
    axes[0, 0].set_ylabel("data", fontsize=10)
    for i, m in enumerate(methods, start=1):
        axes[i, 0].set_ylabel(labels.get(m, m).replace(" ", "\n", 1), fontsize=9)
    return fig


# ------------------------------------------------------------------------------------------
# Bounds and the page's claims
# ------------------------------------------------------------------------------------------


def nll_kinds(records: Sequence[runs.RunRecord], tolerance: float = metrics.EDGE_BAND_TOLERANCE) -> dict[tuple[str, str], str]:
    """What each (method, dataset) pair's final NLL is, for :func:`edrepro.book.claims.compare_below`:
    ``"lower"`` — a lower bound on the true NLL — where the quadrature did not hold the model's mass
    (:func:`leaked`), else ``"exact"`` (the quadrature value)."""
    lower = leaked(records, tolerance)
    return {key: "lower" if key in lower else "exact" for key in by_pair(records)}


def _surely_below(a: float, b: float, a_is: str, b_is: str) -> bool | None:
    """Is the true value of score ``a`` below that of ``b``? As :func:`compare_below`, except that a
    non-finite score (a diverged run) is the worst: every finite score is below it, it is below none."""
    if not math.isfinite(a):
        return False
    if not math.isfinite(b):
        return True
    return compare_below(a, b, a_is, b_is)


def rank_intervals(scores: Table, kinds: Mapping[tuple[str, str], str] | None = None) -> dict[str, tuple[float, float]]:
    """Each method's mean rank over the data sets (1 = lowest score) as an interval (best case, worst
    case) that holds whatever the true values behind bounded scores are.

    ``kinds[(method, dataset)]`` says whether a score is ``"exact"`` or a ``"lower"`` / ``"upper"``
    bound (missing: exact). On one set, a method's rank is at least 1 + the number of methods surely
    below it (:func:`edrepro.book.claims.compare_below`) and at most 1 + the number that may be below
    it. With exact, distinct scores both ends are the rank of :func:`ranks`.
    """
    methods, columns = _check_table(scores)
    kinds = dict(kinds or {})
    lo = {m: 0.0 for m in methods}
    hi = {m: 0.0 for m in methods}
    for d in columns:
        for m in methods:
            verdicts = [_surely_below(float(scores[k][d]), float(scores[m][d]), kinds.get((k, d), "exact"), kinds.get((m, d), "exact"))
                        for k in methods if k != m]
            lo[m] += 1 + sum(v is True for v in verdicts)
            hi[m] += 1 + sum(v is not False for v in verdicts)
    return {m: (lo[m] / len(columns), hi[m] / len(columns)) for m in methods}


def top_k_claim(scores: Table, kinds: Mapping[tuple[str, str], str] | None, method: str, top_k: int,
                labels: Mapping[str, str] | None = None, score: str = "held-out NLL") -> Claim:
    """The claim that ``method``'s mean rank by ``score`` is among the best ``top_k`` of the methods.

    Decided with the :func:`rank_intervals`: it holds when fewer than ``top_k`` other methods can have a
    lower mean rank than ``method``'s worst case (best case below it); it fails when at least ``top_k``
    methods are ahead even in ``method``'s best case; otherwise a bound leaves it undecided. With exact
    scores it is the plain ranking.
    """
    methods, _ = _check_table(scores)
    _checks.choice("method", method, methods)
    top_k = _checks.positive_int("top_k", top_k)
    labels = labels or {}
    interval = rank_intervals(scores, kinds)
    mean = mean_ranks(scores)
    lo, hi = interval[method]
    can_lead = [k for k in methods if k != method and interval[k][0] < hi]
    must_lead = [k for k in methods if k != method and interval[k][1] < lo]
    holds = True if len(can_lead) < top_k else False if len(must_lead) >= top_k else None
    order = sorted(methods, key=lambda k: mean[k])
    bounded = sum(1 for v in (kinds or {}).values() if v != "exact")
    measured = f"{labels.get(method, method)} {mean[method]:.2f}, place {order.index(method) + 1}; " + ", ".join(f"{k} {mean[k]:.2f}" for k in order)
    if bounded:
        measured += (f". {bounded} scores are bounds: {labels.get(method, method)}'s mean rank lies in [{lo:.2f}, {hi:.2f}]; methods that may be "
                     f"ahead: {', '.join(can_lead) or 'none'}")
    return Claim(f"{labels.get(method, method)}'s mean rank by the {score} is among the best {top_k} of {len(methods)} methods",
                 measured, holds)


def stability_claim(records: Sequence[runs.RunRecord], quantities: Sequence[str] = SCORES) -> Claim:
    """The claim that no run diverged and every recorded value of ``quantities`` is finite at every evaluation."""
    recs = [r for rs in by_pair(records).values() for r in rs]
    values = [v for r in recs for q in quantities if q in r.curves for v in r.curve(q)]
    diverged = [f"{r.spec.label}: {r.outcome_text()}" for r in recs if r.diverged]
    bad = sum(not math.isfinite(v) for v in values)
    return Claim("every method trains stably at this budget: no run diverges, and every NLL, MSE and mass is finite at every evaluation",
                 f"{len(recs)} runs, {len(values)} values, {bad} not finite; diverged: {'; '.join(diverged) or 'none'}",
                 not diverged and bad == 0)


def beaten_by_bounds(scores: Table, kinds: Mapping[tuple[str, str], str] | None, method: str
                     ) -> dict[str, tuple[list[tuple[str, float]], list[str]]]:
    """Per data set: the methods surely below ``method``'s score, with the margin (best first), and the
    methods that may be below it — a bound below ``method``'s value that cannot decide it
    (:func:`edrepro.book.claims.compare_below`)."""
    methods, columns = _check_table(scores)
    _checks.choice("method", method, methods)
    kinds = dict(kinds or {})
    out = {}
    for d in columns:
        own = float(scores[method][d])
        sure, maybe = [], []
        for k in methods:
            if k == method:
                continue
            verdict = _surely_below(float(scores[k][d]), own, kinds.get((k, d), "exact"), kinds.get((method, d), "exact"))
            if verdict is True:
                sure.append((k, own - float(scores[k][d])))
            elif verdict is None:
                maybe.append(k)
        out[d] = (sorted(sure, key=lambda pair: -pair[1]), maybe)
    return out


def versus_reference(scores: Table, kinds: Mapping[tuple[str, str], str] | None, reference: Mapping[str, float],
                     reference_kinds: Mapping[str, str] | None = None) -> dict[str, tuple[list[str], list[str]]]:
    """Per data set: the methods whose score is surely *not* below the reference's, and those a bound
    leaves undecided (:func:`edrepro.book.claims.compare_below`; a non-finite score is never below)."""
    methods, columns = _check_table(scores)
    kinds, reference_kinds = dict(kinds or {}), dict(reference_kinds or {})
    out = {}
    for d in columns:
        verdicts = {m: _surely_below(float(scores[m][d]), float(reference[d]), kinds.get((m, d), "exact"), reference_kinds.get(d, "exact"))
                    for m in methods}
        out[d] = ([m for m in methods if verdicts[m] is False], [m for m in methods if verdicts[m] is None])
    return out


def grid_table(ax: Any, texts: Sequence[Sequence[str]], shade: Any, row_labels: Sequence[str], col_labels: Sequence[str],
               bold: Any = (), cmap: str = "Blues", title: str = "") -> None:
    """Draw a table on ``ax``: one cell per (row, column) holding ``texts[i][j]``, filled by ``shade[i][j]``
    (NaN: no fill) on ``cmap``; the cells of ``bold`` ((i, j) pairs) in bold type."""
    values = np.asarray(shade, dtype=float)
    if values.shape != (len(row_labels), len(col_labels)) or [len(t) for t in texts] != [len(col_labels)] * len(row_labels):
        raise ValueError(f"texts and shade must be {len(row_labels)} x {len(col_labels)} like the labels, got shade {values.shape}")
    finite = values[np.isfinite(values)]
    ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto", vmin=finite.min() if finite.size else 0,
              vmax=(finite.max() if finite.size else 1) * 1.6 or 1)
    bold = set(bold)
    for i, row in enumerate(texts):
        for j, text in enumerate(row):
            ax.text(j, i, text, ha="center", va="center", fontsize=8, fontweight="bold" if (i, j) in bold else "normal")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=25, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    ax.tick_params(length=0)
    ax.grid(False)
    ax.set_title(title, fontsize=10)


def leaderboard_figure(nll: Table, outside: Table, reference_outside: Mapping[str, float], kinds: Mapping[tuple[str, str], str],
                       labels: Mapping[str, str] | None = None) -> Any:
    """Two tables as one figure, rows sorted by mean rank by NLL: (a) the final NLL of each method on each
    set (shaded by its rank in the column, the lowest in bold, "≥" before a lower bound) and the mean rank;
    (b) the mass outside the data box in percent, with a last row for the moment-matched Gaussian
    (``reference_outside``; "≥" where the quadrature did not hold the model's mass)."""
    import matplotlib.pyplot as plt

    methods, columns = _check_table(nll)
    labels = labels or {}
    order = [row["method"] for row in leaderboard(nll)]
    r, mr, winners = ranks(nll), mean_ranks(nll), best(nll)
    mark = {key: "≥" for key, kind in kinds.items() if kind == "lower"}
    texts = [[mark.get((m, d), "") + (f"{nll[m][d]:.2f}" if math.isfinite(nll[m][d]) else str(nll[m][d])) for d in columns]
             + [f"{mr[m]:.2f}"] for m in order]
    shade = [[r[m][d] for d in columns] + [mr[m]] for m in order]
    bold = {(i, j) for i, m in enumerate(order) for j, d in enumerate(columns) if m in winners[d]}
    fig, (ax_nll, ax_out) = plt.subplots(2, 1, figsize=(10, 0.42 * (2 * len(order) + 1) + 2.4))
    names = [labels.get(m, m) for m in order]
    grid_table(ax_nll, texts, shade, names, [*columns, "mean rank"], bold, "Blues", "(a) held-out NLL, lower is better; shade: rank in the column")
    out_texts = [[mark.get((m, d), "") + f"{100 * outside[m][d]:.1f} %" for d in columns] for m in order]
    out_texts.append([f"{100 * reference_outside[d]:.1f} %" for d in columns])
    out_shade = [[100 * outside[m][d] for d in columns] for m in order] + [[100 * reference_outside[d] for d in columns]]
    grid_table(ax_out, out_texts, out_shade, [*names, "moment-matched Gaussian"], columns, (), "Oranges", "(b) mass outside the data box")
    return fig
