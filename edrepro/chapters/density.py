"""Experiment mechanics of the 2-D density-estimation chapters (density estimation, ablations, benchmark).

One *run* trains the toy energy network (:func:`edrepro.nets.toy_energy_net`) on one 2-D data
set (:func:`edrepro.toy.get`) with one training method and one seed, keeps an EMA of its
parameters, and records metrics of the EMA model every ``eval_every`` steps together with the
training seconds spent so far (evaluation excluded). :func:`spec` describes a run as an
:class:`edrepro.book.runs.RunSpec`; :func:`train_spec` trains it (the ``density`` trainer of
:mod:`edrepro.book.runs`, which caches, locks, checkpoints and resumes it); :func:`run` does both.

Methods (:data:`METHODS` lists each one's hyperparameters and defaults):

- ``ed``: energy discrepancy, :func:`edrepro.losses.energy_discrepancy`. ``t`` is the *variance*
  of each Gaussian step; the authors' density notebook quotes a standard deviation, so their
  "t = 0.05" and "t = 50" ablations are t = 0.0025 and t = 2500 here (t = 1 is the same in both);
- ``sm``: exact score matching, :func:`edrepro.losses.score_matching`;
- ``ssm``: sliced score matching; ``dsm``: denoising score matching;
- ``cd``: contrastive divergence with short-run Langevin chains started at the data. The step
  size is that of :func:`edrepro.samplers.langevin`, x ← x − ε∇E + √(2ε)ξ; the authors' "step size
  0.01" is the update x ← x − 0.005∇E + √0.01·ξ, i.e. ε = 0.005 here (the default);
- ``pcd``: persistent CD, chains kept in a replay buffer that is saved with the model;
- ``nce``: noise-contrastive estimation against a Gaussian fitted to the data; the output bias
  of the network plays the role of the learned log-normaliser.

Metrics (:data:`METRICS`), lower is better for each:

- ``mse``: the authors' MSE of the log-density, log Z by importance sampling with the data as
  proposal (:func:`edrepro.metrics.mse_log_density`; needs an exact log-density);
- ``mse_grid``: the same MSE with log Z from a quadrature over a region that holds the model's
  mass (:func:`edrepro.metrics.region_mse_log_density`): it sees mass placed away from the data,
  which the authors' estimator cannot;
- ``nll``: negative log-likelihood of fresh data under exp(−E)/Z, Z from the same quadrature
  (:func:`edrepro.metrics.region_nll`); the mass outside the data's box is recorded beside it.

Bounds are bounds: where the quadrature region did not hold a model's mass (``edge_mass`` above
:data:`edrepro.metrics.EDGE_BAND_TOLERANCE`), its NLL is only a lower bound and its quadrature MSE no
bound at all (:func:`value_bound`). :func:`reach`, :func:`may_reach`, :func:`first_to_reach` and
:func:`comparison_claims` let such a value decide only what its bound allows
(:func:`edrepro.book.claims.compare_below`); otherwise a claim is undecided (``holds`` None).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import _checks, losses, metrics, nets, samplers, toy
from ..book import runs, train

METHODS: dict[str, dict[str, Any]] = {
    "ed": {"t": 1.0, "m_particles": 4, "w": 1.0},
    "sm": {},
    "ssm": {"n_projections": 1},
    "dsm": {"sigma": 0.1},
    "cd": {"n_steps": 10, "step_size": 0.005, "reg": 0.3},
    "pcd": {"n_steps": 10, "step_size": 0.005, "reg": 0.3, "buffer_size": 10000, "reinit_frac": 0.05},
    "nce": {"noise_ratio": 1, "inflation": 1.2},
}
"""Every method's hyperparameters and their defaults (the authors' 2-D settings where they exist)."""

LABELS: dict[str, str] = {
    "ed": "Energy discrepancy",
    "sm": "Score matching",
    "ssm": "Sliced score matching",
    "dsm": "Denoising score matching",
    "cd": "Contrastive divergence",
    "pcd": "Persistent CD",
    "nce": "Noise-contrastive estimation",
}
"""Display names of the methods."""

METRICS: dict[str, str] = {
    "mse": "MSE of the log-density, log Z by importance sampling from the data (the authors' estimator)",
    "mse_grid": "MSE of the log-density, log Z by quadrature over a region that holds the model's mass",
    "nll": "negative log-likelihood of fresh data, log Z by quadrature over a region that holds the model's mass",
}
"""The evaluation metrics of a run (lower is better for each). The two quadrature metrics also record
``mass_outside`` (the model's mass outside the data set's box) and ``edge_mass`` (its mass in the
outermost band of the quadrature region, grown until it holds the mass; 1 when it cannot, e.g. exp(−E)
is not normalisable: :attr:`edrepro.metrics.RegionQuadrature.unheld_mass`). Above
:data:`edrepro.metrics.EDGE_BAND_TOLERANCE` the NLL is a lower bound."""

METRICS_SHORT = {"mse": "MSE", "mse_grid": "MSE (quadrature)", "nll": "NLL"}

_NUMBERS = (int, float)
_BOX = 4.0  # persistent chains start uniform on [−4, 4]^d, the box of every 2-D set


def method_hparams(method: str, hparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The defaults of ``method`` updated with ``hparams``; an unknown method or key raises ValueError."""
    _checks.choice("method", method, METHODS)
    merged = dict(METHODS[method])
    if hparams is None:
        return merged
    if not isinstance(hparams, Mapping):
        raise ValueError(f"hparams must be a mapping of hyperparameter names to values, got {type(hparams).__name__}")
    unknown = sorted(set(hparams) - set(merged))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown} for method {method!r}; it takes {sorted(merged)}")
    for key, value in hparams.items():
        if isinstance(value, bool) or not isinstance(value, _NUMBERS):
            raise ValueError(f"hparams[{key!r}] must be a number, got {value!r}")
    merged.update(hparams)
    return merged


def _fit_noise(dataset: object, inflation: float) -> tuple[torch.Tensor, torch.Tensor]:
    # A fixed generator: the NCE noise is part of the method, not of the run's randomness.
    sample = dataset.sample(10_000, torch.Generator().manual_seed(12345))  # type: ignore[attr-defined]
    return losses.fit_gaussian_noise(sample, inflation=inflation)


def make_loss(method: str, dataset: object | None = None, **hparams: Any) -> losses.LossFn:
    """The ``loss_fn(model, x, generator)`` of ``method`` (:func:`edrepro.losses.bind`).

    ``hparams`` override :data:`METHODS`'s defaults. ``nce`` needs ``dataset`` (its noise is a
    Gaussian fitted to 10 000 draws, inflated by ``inflation``); ``pcd`` needs the model to be
    a :class:`edrepro.nets.WithChains` (:func:`make_model` builds one).
    """
    hp = method_hparams(method, hparams)
    if method == "pcd":
        hp.pop("buffer_size")
        return losses.bind("pcd", box=_BOX, **hp)
    if method == "nce":
        if dataset is None:
            raise ValueError("method 'nce' needs the dataset (its noise distribution is fitted to the data)")
        mean, cov = _fit_noise(dataset, _checks.positive("inflation", hp["inflation"]))
        return losses.bind("nce", noise_mean=mean, noise_cov=cov, noise_ratio=_checks.positive_int("noise_ratio", hp["noise_ratio"]))
    return losses.bind(method, **hp)


def make_model(method: str, seed: int, dim: int = 2, hparams: Mapping[str, Any] | None = None) -> nn.Module:
    """The toy energy network initialised from ``seed`` alone (the same start for every method).

    Uses a forked random state, so the global one is untouched. For ``pcd`` the network is
    wrapped in :class:`edrepro.nets.WithChains` with a buffer of uniform draws on [−4, 4]^dim.
    """
    hp = method_hparams(method, hparams)
    _checks.positive_int("seed", seed, minimum=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nets.toy_energy_net(dim)
    if method != "pcd":
        return net
    size = _checks.positive_int("buffer_size", hp["buffer_size"])
    return nets.WithChains(net, samplers.uniform_box(size, dim, _BOX, torch.Generator().manual_seed(seed)))


def _eval_seed(seed: int, step: int) -> int:
    # Evaluation draws its own samples, fixed by (seed, step): the same points for every method
    # at a given step, and the training random stream is never touched by evaluation.
    return int(np.random.SeedSequence([seed, step, 0xED]).generate_state(1, dtype=np.uint64)[0] >> 1)


def evaluate(
    energy: nn.Module, dataset: str, names: Sequence[str], n: int, grid: int = 100, generator: torch.Generator | None = None
) -> dict[str, float]:
    """The metrics ``names`` (:data:`METRICS`) of ``energy`` on fresh points of ``dataset``, in order,
    each on its own ``n`` points drawn from ``generator``. The quadrature metrics share one
    :func:`edrepro.metrics.region_log_normaliser` (``grid``² cells on the data box, a coarser grid
    out to four times its size, grown beyond as needed) and add ``mass_outside`` and ``edge_mass`` (1 when the
    quadrature is not exact, so that the NLL is marked a lower bound wherever ``edge_mass`` is checked);
    ``mse_grid`` comes with ``mse_grid_floor``, its lower bound whatever log Z is
    (:attr:`edrepro.metrics.RegionMSE.floor`), which decides comparisons when the region is too small."""
    data = toy.get(dataset)
    quad = None
    if {"mse_grid", "nll"} & set(names):
        quad = metrics.region_log_normaliser(energy, data.bounds, n_box=grid, dim=data.dim)
    out = {}
    for name in names:
        if name == "mse":
            out["mse"] = metrics.mse_log_density(energy, data, n=n, generator=generator)
        elif name == "mse_grid":
            result = metrics.region_mse_log_density(energy, data, n, generator, quadrature=quad)
            out["mse_grid"], out["mse_grid_floor"] = result.mse, result.floor
        else:
            out["nll"] = metrics.region_nll(energy, data.sample(n, generator), data.bounds, quadrature=quad).nll
    if quad is not None:
        out["mass_outside"], out["edge_mass"] = quad.mass_outside_box, quad.unheld_mass
    return out


def spec(
    method: str,
    dataset: str = "25gaussians",
    seed: int = 0,
    n_steps: int = 10_000,
    *,
    hparams: Mapping[str, Any] | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    ema_decay: float = 0.999,
    eval_every: int = 500,
    eval_samples: int = 5000,
    metrics: Sequence[str] = ("mse",),
    grid: int = 100,
    chapter: str = "density_estimation",
    checkpoint_every: int = 1000,
) -> runs.RunSpec:
    """The :class:`edrepro.book.runs.RunSpec` of one 2-D run: ``method`` on ``dataset`` with ``seed``.

    The authors' 2-D setup: the toy energy network (2→128→128→128→128→1, Softplus) initialised
    from ``seed``, Adam(``lr``), a fresh batch of ``batch_size`` every step, an EMA with decay
    ``ema_decay`` that every evaluation uses, and the ``metrics`` (:data:`METRICS`) on
    ``eval_samples`` fresh points at step 0, every ``eval_every`` steps and at the last step.
    The quadrature metrics use ``grid``² cells on the data box (100² resolves the 25 Gaussians' modes,
    standard deviation 0.14, to a relative error below 1e-7). Every argument is checked here, before any work.
    """
    _checks.choice("method", method, METHODS)
    if not isinstance(dataset, str) or dataset not in toy.NAMES:
        raise ValueError(f"dataset must be the name of a 2-D data set, one of {list(toy.NAMES)}, got {dataset!r}")
    metrics = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
    if not metrics or len(set(metrics)) != len(metrics):
        raise ValueError(f"metrics must be a non-empty list of distinct names from {list(METRICS)}, got {metrics!r}")
    for name in metrics:
        _checks.choice("metric", name, METRICS)
    if {"mse", "mse_grid"} & set(metrics) and not toy.get(dataset).has_log_prob:
        with_lp = [n for n in toy.NAMES if toy.get(n).has_log_prob]
        raise ValueError(f"dataset {dataset!r} has no analytic log-density, so the MSE cannot be computed; use metric 'nll' or one of {with_lp}")
    for name, value in (("n_steps", n_steps), ("batch_size", batch_size), ("eval_every", eval_every), ("eval_samples", eval_samples)):
        _checks.positive_int(name, value)
    _checks.positive_int("grid", grid, minimum=8)
    _checks.positive("lr", lr)
    _checks.unit_interval("ema_decay", ema_decay)
    settings = {
        "batch_size": batch_size, "lr": lr, "ema_decay": ema_decay, "eval_every": eval_every,
        "eval_samples": eval_samples, "metrics": metrics, **({"grid": grid} if {"nll", "mse_grid"} & set(metrics) else {}),
    }
    return runs.RunSpec("density", method, dataset, seed, n_steps, method_hparams(method, hparams), settings, chapter, checkpoint_every)


def train_spec(spec: runs.RunSpec, checkpoint: Any = None, device: torch.device | str = "cpu", progress: bool = True) -> runs.Outcome:
    """Train a ``density`` run (the trainer :mod:`edrepro.book.runs` calls), checkpointing to ``checkpoint``.

    Randomness: the initial network depends on the seed only; data batches and the loss's noise
    come from one generator seeded with the seed; evaluation samples from their own generator
    fixed by (seed, step). A non-finite loss or gradient stops the run and records the step.
    """
    device = train.resolve_device(device)
    if spec.method == "pcd" and device.type != "cpu":
        raise ValueError("method 'pcd' runs on the CPU only (its replay buffer draws its permutation on the CPU); use device='cpu'")
    data, s = toy.get(spec.dataset), spec.settings
    model = make_model(spec.method, spec.seed, data.dim, spec.hparams).to(device)
    loss_fn = train.with_device_noise(make_loss(spec.method, data, **spec.hparams), device)

    def eval_fn(ema_model: nn.Module, step: int) -> dict[str, float]:
        gen = torch.Generator().manual_seed(_eval_seed(spec.seed, step))
        return evaluate(nets.unwrap(ema_model), spec.dataset, s["metrics"], s["eval_samples"], s.get("grid", 100), gen)

    return train.train(
        model, loss_fn, data.sample, spec.budget, batch_size=s["batch_size"],
        optimizer=torch.optim.Adam(model.parameters(), lr=s["lr"]), ema_decay=s["ema_decay"],
        eval_every=s["eval_every"], eval_fn=eval_fn, generator=torch.Generator().manual_seed(spec.seed),
        on_nonfinite="stop", checkpoint_path=checkpoint, checkpoint_every=spec.checkpoint_every,
        progress=progress, desc=f"{spec.method} {spec.dataset} seed {spec.seed}",
    )


def run(
    method: str, dataset: str = "25gaussians", seed: int = 0, n_steps: int = 10_000, *,
    device: str | torch.device = "cpu", fresh: bool = False, progress: bool = True,
    root: str | None = None, **settings: Any,
) -> runs.RunRecord:
    """Train (or load from the cache) one 2-D run; ``settings`` are :func:`spec`'s keyword arguments."""
    return runs.fetch(spec(method, dataset, seed, n_steps, **settings), root=root, fresh=fresh, device=device, progress=progress)


def energy(record: runs.RunRecord) -> nn.Module:
    """The trained EMA energy network of a 2-D run (without the persistent chains of ``pcd``)."""
    if not isinstance(record, runs.RunRecord) or record.spec.kind != "density":
        raise ValueError(f"record must be the RunRecord of a 2-D density run, got {record!r:.80}")
    model = make_model(record.spec.method, record.spec.seed, toy.get(record.spec.dataset).dim, record.spec.hparams)
    model.load_state_dict(record.state()["ema"])
    return nets.unwrap(model).requires_grad_(False)


def page_specs(params: Mapping[str, Any]) -> list[runs.RunSpec]:
    """The runs of the density-estimation page for its parameters (ED, SM and CD on every seed)."""
    hparams = {
        "ed": {"t": params["ed_t"], "m_particles": params["ed_m"], "w": params["ed_w"]},
        "sm": {},
        "cd": {"n_steps": params["cd_steps"], "step_size": params["cd_step_size"], "reg": params["cd_reg"]},
    }
    return [
        spec(m, params["dataset"], s, params["n_steps"], hparams=hparams[m], batch_size=params["batch_size"], lr=params["lr"],
             ema_decay=params["ema_decay"], eval_every=params["eval_every"], eval_samples=params["eval_samples"], metrics=["mse", "mse_grid"])
        for m in hparams for s in range(params["seed"], params["seed"] + params["n_seeds"])
    ]


# ------------------------------------------------------------------------------------------
# Summaries
# ------------------------------------------------------------------------------------------


def first_reaching(
    xs: Sequence[float], values: Sequence[float], threshold: float, sustained: bool = False
) -> float | None:
    """The first x at which ``values`` ≤ ``threshold``, or None if it never gets there.

    ``xs`` are the matching steps (or seconds). With ``sustained`` the value must also stay
    ≤ ``threshold`` at every later point. NaN never counts as reaching.
    """
    if len(xs) != len(values):
        raise ValueError(f"xs and values must have the same length, got {len(xs)} and {len(values)}")
    if isinstance(threshold, bool) or not isinstance(threshold, _NUMBERS) or math.isnan(threshold):
        raise ValueError(f"threshold must be a number, got {threshold!r}")
    below = [v <= threshold for v in values]  # False for NaN
    if sustained:
        for i in range(len(below)):
            if all(below[i:]):
                return xs[i]
        return None
    return next((x for x, b in zip(xs, below) if b), None)


QUADRATURE_METRICS = ("mse_grid", "nll")
"""The metrics whose log Z comes from the region quadrature: a bound, or not even that, when the region
did not hold the model's mass (:func:`value_bound`)."""


def value_bound(record: runs.RunRecord, metric: str = "mse", index: int = -1) -> str:
    """What the ``metric`` of ``record`` at evaluation ``index`` is, as :func:`edrepro.book.claims.compare_below`
    takes it: ``"exact"``, a ``"lower"`` bound, or ``"unknown"`` (a bound in neither direction).

    A quadrature metric (:data:`QUADRATURE_METRICS`) is *flagged* at an evaluation where the region did not
    hold the model's mass: ``edge_mass`` above :data:`edrepro.metrics.EDGE_BAND_TOLERANCE` (``edge_mass`` is
    1 wherever the quadrature was not exact, :attr:`edrepro.metrics.RegionQuadrature.unheld_mass`), or not
    recorded. Its log Z is then too low, so a flagged NLL is a lower bound of the true NLL, and a flagged
    MSE of the log-density is off in either direction. The authors' ``mse`` (log Z by importance sampling)
    is taken as it is, an estimate, as the authors do; so is ``mse_grid``/``nll`` where not flagged."""
    _checks.choice("metric", metric, METRICS)
    if metric not in QUADRATURE_METRICS:
        return "exact"
    edge = record.curves.get("edge_mass")
    held = edge is not None and len(edge) == len(record.curve(metric)) and float(edge[index]) <= metrics.EDGE_BAND_TOLERANCE
    return "exact" if held else "lower" if metric == "nll" else "unknown"


FLOORS = {"mse_grid": "mse_grid_floor"}
"""Quadrature metric → the recorded lower bound of it that holds whatever log Z is."""


def bounded_value(record: runs.RunRecord, metric: str = "mse", index: int = -1) -> tuple[float, str]:
    """``(value, kind)`` of ``metric`` at evaluation ``index`` as :func:`edrepro.book.claims.compare_below`
    takes it: the recorded value when it is exact or a lower bound (:func:`value_bound`); for a flagged
    quadrature MSE, its floor (:data:`FLOORS`) as a ``"lower"`` bound when recorded, else the value as
    ``"unknown"``."""
    value, kind = float(record.curve(metric)[index]), value_bound(record, metric, index)
    floor = FLOORS.get(metric)
    if kind == "unknown" and floor in record.curves and len(record.curves[floor]) == len(record.curve(metric)):
        return float(record.curves[floor][index]), "lower"
    return value, kind


def _shown_below(value: float, kind: str, threshold: float) -> bool:
    """Whether ``value`` of this ``kind`` shows the quantity ≤ ``threshold``."""
    return value <= threshold and kind in ("exact", "upper")


def _maybe_below(value: float, kind: str, threshold: float) -> bool:
    """Whether the quantity may be ≤ ``threshold`` given ``value`` of this ``kind`` (NaN: never)."""
    if math.isnan(value):
        return False
    return kind == "unknown" or (value <= threshold if kind in ("exact", "lower") else True)


def reach(
    record: runs.RunRecord, threshold: float, metric: str = "mse", sustained: bool = False, *, from_step: int = 0
) -> tuple[int | None, float | None]:
    """(first step, training seconds at that step) at which the run's ``metric`` is *shown* to be ≤ ``threshold``;
    (None, None) if never. A flagged quadrature value (:func:`value_bound`) shows nothing: a lower bound or a
    value that is no bound at or under the threshold does not show that the quantity is. With ``sustained``
    the value must be shown ≤ ``threshold`` at every later evaluation too. Evaluations before ``from_step``
    are left out."""
    values = record.curve(metric)
    bounded = [bounded_value(record, metric, i) for i in range(len(values))]
    shown = [v if s >= from_step and _shown_below(v, kind, threshold) else math.nan
             for s, (v, kind) in zip(record.step_curve, bounded)]
    i = first_reaching(list(range(len(values))), shown, threshold, sustained)
    return (None, None) if i is None else (record.step_curve[int(i)], record.seconds_curve[int(i)])


def may_reach(record: runs.RunRecord, threshold: float, metric: str = "mse", *, from_step: int = 0) -> int | None:
    """The first evaluated step at which the run's ``metric`` *may* have been ≤ ``threshold``: an exact value
    at or under it, a lower bound at or under it, or a flagged value that is no bound (:func:`value_bound`);
    None when every evaluation shows the quantity above the threshold. Equal to :func:`reach`'s step when
    no evaluation is flagged. Evaluations before ``from_step`` are left out."""
    for i, s in enumerate(record.step_curve):
        if s >= from_step and _maybe_below(*bounded_value(record, metric, i), threshold):
            return s
    return None


def tail_median(record: runs.RunRecord, metric: str = "mse", fraction: float = 0.2) -> float:
    """Median of ``metric`` over the evaluations in the last ``fraction`` of the run's steps (robust to spikes)."""
    fraction = _checks.open_unit("fraction", fraction) if fraction != 1 else 1.0
    steps = record.step_curve
    start = (1.0 - fraction) * steps[-1]
    return float(np.median([v for s, v in zip(steps, record.curve(metric)) if s >= start]))


def format_reach(value: float | None, unit: str = "", digits: int = 0) -> str:
    """``"never"`` for None, else the value with ``digits`` decimals and a unit (e.g. ``"52 s"``)."""
    if value is None:
        return "never"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".rstrip()


def curve_band(records: Sequence[runs.RunRecord], metric: str = "mse", x: str = "steps") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Several seeds' ``metric`` curves on the common evaluation steps: (x, mean, min, max).

    ``x = "steps"`` gives the steps; ``x = "seconds"`` the training seconds averaged over the
    seeds. Curves are cut to the shortest one (a diverged run stops early).
    """
    _checks.choice("x", x, ("steps", "seconds"))
    if not records:
        raise ValueError("records must hold at least one RunRecord")
    n = min(len(r.curve(metric)) for r in records)
    values = np.array([r.curve(metric)[:n] for r in records], dtype=float)
    xs = np.array([(r.step_curve if x == "steps" else r.seconds_curve)[:n] for r in records], dtype=float).mean(axis=0)
    return xs, values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def plot_error_bands(
    ax: Any, results: Mapping[str, Sequence[runs.RunRecord]], metric: str = "mse", x: str = "steps", threshold: float | None = None
) -> Any:
    """Each method's ``metric`` curve on ``ax`` (log scale): the mean over its seeds as a line and, with
    several seeds, their range as a band (:func:`curve_band`); ``threshold`` as a dashed line."""
    _checks.choice("metric", metric, METRICS)
    for i, (method, records) in enumerate(results.items()):
        xs, mean, lo, hi = curve_band(records, metric, x)
        ax.plot(xs, mean, color=f"C{i}", label=LABELS.get(method, method), linewidth=1.2)
        if len(records) > 1:
            ax.fill_between(xs, lo, hi, color=f"C{i}", alpha=0.2, linewidth=0)
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set(yscale="log", xlabel="iterations" if x == "steps" else "training time (s)", ylabel=METRICS_SHORT[metric])
    return ax


def summary(results: Mapping[str, Sequence[runs.RunRecord]], threshold: float = 0.1, metric: str = "mse") -> list[dict[str, Any]]:
    """One row per method: the final ``metric`` (per seed, mean, std), the best value, the median of the
    last 20 % of the steps (:func:`tail_median`, mean over seeds), iterations per second, and
    the steps and seconds at which each seed first reached a value ≤ ``threshold`` (None = never)."""
    _checks.choice("metric", metric, METRICS)
    rows = []
    for method, records in results.items():
        if not records:
            raise ValueError(f"results[{method!r}] holds no runs")
        final = np.array([r.final(metric) for r in records], dtype=float)
        reached = [reach(r, threshold, metric) for r in records]
        rows.append({
            "method": method,
            "label": LABELS.get(method, method),
            "seeds": [r.spec.seed for r in records],
            "metric": metric,
            "final": final.tolist(),
            "final_mean": float(final.mean()),
            "final_std": float(final.std(ddof=1)) if len(final) > 1 else 0.0,
            "best": float(min(min(r.curve(metric)) for r in records)),
            "tail": float(np.mean([tail_median(r, metric) for r in records])),
            "it_per_s": float(np.mean([r.steps_per_second for r in records])),
            "steps_to_threshold": [s for s, _ in reached],
            "seconds_to_threshold": [t for _, t in reached],
            "outcome": [r.outcome_text() for r in records],
        })
    return rows


def summary_markdown(rows: Iterable[Mapping[str, Any]], threshold: float = 0.1) -> str:
    """:func:`summary` rows as a markdown table (per-seed values separated by " / ")."""
    def seeds(values: Sequence[float | None], unit: str) -> str:
        return " / ".join(format_reach(v, unit) for v in values)

    rows = list(rows)
    names = {METRICS_SHORT[r["metric"]] for r in rows}
    if len(names) > 1:
        raise ValueError(f"rows mix metrics {sorted(names)}")
    name = names.pop() if names else "MSE"
    lines = [
        f"| method | final {name} | median {name}, last 20 % | best {name} | iterations / s "
        f"| iterations to {name} ≤ {threshold:g} | seconds to {name} ≤ {threshold:g} |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        final = f"{r['final_mean']:.3g}"
        if len(r["final"]) > 1:
            final += f" ± {r['final_std']:.2g}"
        tail, best = f"{r['tail']:.3g}", f"{r['best']:.3g}"
        if any(o != "finished" for o in r["outcome"]):  # a diverged run's numbers are not results
            final = tail = best = " / ".join(r["outcome"])
        lines.append(
            f"| {r['label']} | {final} | {tail} | {best} | {r['it_per_s']:.0f} | "
            f"{seeds(r['steps_to_threshold'], '')} | {seeds(r['seconds_to_threshold'], 's')} |"
        )
    return "\n".join(lines)


def export_extras(records: Sequence[runs.RunRecord], params: Mapping[str, Any] | None = None, n: int = 100) -> dict[str, Any]:
    """Small plot data kept with exported results: for the first seed of each method, the EMA model's
    density normalised on an ``n`` × ``n`` grid over the data set's box (rows along x₂). The page's
    ``params`` are not needed: the grid depends on the runs alone."""
    from ..plotting import grid_density

    first: dict[str, runs.RunRecord] = {}
    for r in records:
        first.setdefault(r.spec.method, r)
    heatmaps = {}
    for method, r in first.items():
        with torch.no_grad():
            heatmaps[method] = {"seed": r.spec.seed, "density": np.asarray(grid_density(energy(r), toy.get(r.spec.dataset).bounds, n)).round(8).tolist()}
    return {"heatmaps": heatmaps, "grid_points": n}


# ------------------------------------------------------------------------------------------
# Page helpers (density-estimation chapter)
# ------------------------------------------------------------------------------------------


def by_method(records: Sequence[runs.RunRecord]) -> dict[str, list[runs.RunRecord]]:
    """The records grouped by method, methods in order of first appearance, seeds in the given order."""
    grouped: dict[str, list[runs.RunRecord]] = {}
    for r in records:
        if not isinstance(r, runs.RunRecord) or r.spec.kind != "density":
            raise ValueError(f"records must hold RunRecords of 2-D density runs, got {r!r:.80}")
        grouped.setdefault(r.spec.method, []).append(r)
    return grouped


def first_to_reach(
    results: Mapping[str, Sequence[runs.RunRecord]], threshold: float, metric: str = "mse", leader: str = "ed"
) -> list[bool | None]:
    """Seed by seed (the k-th record of every method): did ``leader`` reach ``metric`` ≤ ``threshold``
    at an earlier evaluated step than every other method (one that never reaches counts as later)?

    With s_m the first step at which method m is shown to be at or under the threshold (:func:`reach`;
    ∞ if never) and r_m the first at which it may have been (:func:`may_reach`; ∞ if never; r_m = s_m
    when no evaluation is flagged): True when s_leader < r_m for every other m; False when r_leader = ∞
    or s_m ≤ r_leader for some other m; else None (undecided: flagged quadrature values leave the order
    open). Steps, not seconds: the seconds depend on the machine's load. The evaluation at step 0 is left
    out: every method starts from the same network (:func:`make_model` depends on the seed alone) and is
    evaluated on the same points, so step 0 cannot put one method before another; the claim is about
    training.
    """
    if leader not in results:
        raise ValueError(f"leader must be one of the methods {list(results)}, got {leader!r}")
    counts = {m: len(rs) for m, rs in results.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"every method needs the same number of seeds, got {counts}")
    out: list[bool | None] = []
    for k in range(counts[leader]):
        sure = {m: reach(rs[k], threshold, metric, from_step=1)[0] for m, rs in results.items()}
        maybe = {m: may_reach(rs[k], threshold, metric, from_step=1) for m, rs in results.items()}
        others = [m for m in results if m != leader]
        if maybe[leader] is None or any(sure[m] is not None and sure[m] <= maybe[leader] for m in others):
            out.append(False)  # the leader surely never reached, or another surely reached no later than it could have
        elif sure[leader] is not None and all(maybe[m] is None or sure[leader] < maybe[m] for m in others):
            out.append(True)
        else:
            out.append(None)  # flagged evaluations leave the order open
    return out


def reach_text(records: Sequence[runs.RunRecord], threshold: float, metric: str = "mse", *, from_step: int = 0) -> str:
    """``"seed 0: 5,200 it (31 s); seed 1: never"``: when each run first had ``metric`` ≤ ``threshold``
    (:func:`reach`). Where flagged quadrature values leave it open (:func:`may_reach` earlier), the text says
    from which step it may have: ``"seed 2: not shown (possibly from 400 it: region too small)"``. Evaluations
    before ``from_step`` are left out."""
    parts = []
    for r in records:
        step, sec = reach(r, threshold, metric, from_step=from_step)
        maybe = may_reach(r, threshold, metric, from_step=from_step)
        text = "never" if step is None and maybe is None else "not shown" if step is None else f"{step:,} it ({sec:.0f} s)"
        if maybe is not None and (step is None or maybe < step):
            text += f" (possibly from {maybe:,} it: region too small)"
        parts.append(f"seed {r.spec.seed}: {text}")
    return "; ".join(parts)


def conditions_text(record: runs.RunRecord) -> str:
    """The conditions a run was trained under (:attr:`edrepro.book.runs.RunRecord.conditions`), in words:
    torch threads, the machine's 1-minute load average at its start and end, the CPU, the device, the date."""
    if not isinstance(record, runs.RunRecord):
        raise ValueError(f"record must be a RunRecord, got {record!r:.80}")
    c = record.conditions
    if not c:
        return "conditions not recorded"
    load = f"load {c['load_start']:.1f} → {c['load_end']:.1f}" if "load_end" in c else f"load {c.get('load_start', float('nan')):.1f} at start"
    return f"{c.get('threads', '?')} thread(s), {load}, {c.get('cores', '?')} cores, {c.get('cpu', '?')}, {c.get('device', '?')}, {c.get('date', '?')}"


def final_values(records: Sequence[runs.RunRecord], metric: str = "mse") -> list[float]:
    """The last evaluated ``metric`` of each run; +inf for a diverged run or a non-finite value.

    A value may be only a bound, or not even that (a flagged quadrature value): :func:`final_bounds`
    says which, and a comparison must go through :func:`edrepro.book.claims.compare_below` with it."""
    out = []
    for r in records:
        value = bounded_value(r, metric, -1)[0]
        out.append(math.inf if r.diverged or not math.isfinite(value) else value)
    return out


def final_bounds(records: Sequence[runs.RunRecord], metric: str = "mse") -> list[str]:
    """For each value of :func:`final_values`: ``"exact"``, ``"lower"`` or ``"unknown"`` (:func:`value_bound`
    at the last evaluation; a diverged run's +inf is ``"exact"``: it decides nothing in its favour)."""
    return ["exact" if r.diverged else bounded_value(r, metric, -1)[1] for r in records]


def final_mean_text(records: Sequence[runs.RunRecord], metric: str = "mse") -> str:
    """The mean of :func:`final_values` over the seeds with 3 significant digits, marked when some of them
    are flagged quadrature values (the mean is then no bound of anything) or a run diverged."""
    values, kinds = final_values(records, metric), final_bounds(records, metric)
    text = f"{sum(values) / len(values):.3g}"
    flagged = sum(k != "exact" for k in kinds)
    if flagged:
        text += f" (region too small on {flagged} of {len(kinds)} seed(s): not a bound)"
    return text


def final_text(record: runs.RunRecord, metric: str = "mse") -> str:
    """The last evaluated ``metric`` with 3 significant digits, or the run's outcome (``"diverged at step N
    (loss)"``) when it diverged: never a bare huge number for a diverged run. A flagged quadrature value
    (:func:`value_bound`: the model's mass reaches the edge of the quadrature region, so log Z is too low)
    is marked "(region too small: …)": an NLL as "≥ value" (a lower bound), an MSE as "not a bound"."""
    if record.diverged:
        return record.outcome_text()
    text = f"{float(record.final(metric)):.3g}"
    value, kind = bounded_value(record, metric, -1)
    if kind == "lower" and metric in FLOORS:
        return f"{text}, ≥ {value:.3g} whatever log Z is (region too small)"
    if kind == "lower":
        return f"≥ {text} (region too small: a lower bound)"
    if kind == "unknown":
        return f"{text} (region too small: not a bound)"
    return text


def _all_of(verdicts: Iterable[bool | None]) -> bool | None:
    """Every verdict True: True; any False: False; else None (undecided)."""
    verdicts = list(verdicts)
    return False if any(v is False for v in verdicts) else True if all(v is True for v in verdicts) else None


def comparison_claims(
    results: Mapping[str, Sequence[runs.RunRecord]], threshold: float, metric: str = "mse", leader: str = "ed"
) -> list[Any]:
    """The density-estimation page's claims on one estimator ``metric``, seed by seed:

    1. for every other method m: ``leader``'s final value is below m's;
    2. ``leader`` reaches ``metric`` ≤ ``threshold`` within the budget;
    3. no other method reaches it at an earlier or the same evaluated step after step 0 (:func:`first_to_reach`).

    A diverged run never makes a claim hold: a comparison with one fails, whichever side it is on.
    A flagged quadrature value (:func:`value_bound`) decides a claim only in the direction its bound
    allows (:func:`edrepro.book.claims.compare_below`; :func:`reach` and :func:`may_reach`): otherwise the
    claim is undecided (``holds`` None), which fails an enforced page like a claim that does not hold.
    """
    from ..book.claims import Claim, compare_below

    _checks.choice("metric", metric, METRICS)
    if leader not in results or len(results) < 2:
        raise ValueError(f"results must hold the leader {leader!r} and at least one other method, got {list(results)}")
    name, mine = METRICS_SHORT[metric], results[leader]
    ours, our_kinds = final_values(mine, metric), final_bounds(mine, metric)
    claims = []
    for m, rs in results.items():
        if m == leader:
            continue
        theirs, their_kinds = final_values(rs, metric), final_bounds(rs, metric)
        measured = "; ".join(f"seed {r.spec.seed}: {final_text(a, metric)} vs {final_text(r, metric)}" for a, r in zip(mine, rs))
        verdicts = [compare_below(a, b, ka, kb) for a, b, ka, kb in zip(ours, theirs, our_kinds, their_kinds)]
        claims.append(Claim(f"{leader.upper()}'s final {name} is below {m.upper()}'s on every seed", measured,
                            _all_of(verdicts) if len(ours) == len(theirs) else False))
    reached = [False if r.diverged else True if reach(r, threshold, metric)[0] is not None
               else False if may_reach(r, threshold, metric) is None else None for r in mine]
    claims.append(Claim(f"{leader.upper()} reaches {name} ≤ {threshold:g} on every seed", reach_text(mine, threshold, metric),
                        _all_of(reached)))
    others = ". ".join(f"{m.upper()}: {reach_text(rs, threshold, metric, from_step=1)}" for m, rs in results.items() if m != leader)
    none_diverged = not any(r.diverged for rs in results.values() for r in rs)
    claims.append(Claim(f"no other method reaches {name} ≤ {threshold:g} at an earlier iteration than {leader.upper()}, on every seed",
                        others, _all_of(first_to_reach(results, threshold, metric, leader)) if none_diverged else False))
    return claims


def estimator_checks(truth: Mapping[str, float], leaky: Mapping[str, float], leaked: float = 0.5, tolerance: float = 0.1) -> list[Any]:
    """Instrument checks of the two estimators of the MSE of the log-density, on energies whose answer is known.

    ``truth``: :func:`evaluate` (``mse``, ``mse_grid``, ``mass_outside``) of the true energy plus a constant,
    whose MSE is 0: both estimators must give at most 1e-6. ``leaky``: the same of a model that puts the
    fraction ``leaked`` of its mass on a bump far outside the data's box and the rest on the true density:
    its log-density on the data is off by log(1 − leaked), so its MSE is log(1 − leaked)². The quadrature
    must charge that within a relative ``tolerance`` and see the leaked mass outside the box within
    ``tolerance``; the importance-sampling estimator, whose samples never reach the bump, must miss it
    (below ``tolerance`` times the true MSE). These check the instruments, not the paper: they are
    shown with :func:`edrepro.book.claims.check_instruments`."""
    from ..book.claims import InstrumentCheck

    leaked = _checks.open_unit("leaked", leaked)
    tolerance = _checks.open_unit("tolerance", tolerance)
    for name, values in (("truth", truth), ("leaky", leaky)):
        if not isinstance(values, Mapping) or not {"mse", "mse_grid", "mass_outside"} <= set(values):
            raise ValueError(f"{name} must be evaluate()'s values with 'mse', 'mse_grid' and 'mass_outside', got {values!r:.80}")
    exact = math.log1p(-leaked) ** 2
    return [
        InstrumentCheck("both estimators give the true energy (plus a constant) an MSE of 0, up to 1e-6",
                        f"importance sampling {truth['mse']:.2g}, quadrature {truth['mse_grid']:.2g}",
                        0 <= truth["mse"] <= 1e-6 and 0 <= truth["mse_grid"] <= 1e-6),
        InstrumentCheck(f"the quadrature charges a model with {leaked:g} of its mass far from the data log(1 - {leaked:g})^2 "
                        f"= {exact:.3f}, within {tolerance:.0%}, and sees that mass outside the box",
                        f"MSE {leaky['mse_grid']:.3f}, mass outside the box {leaky['mass_outside']:.3f}",
                        abs(leaky["mse_grid"] - exact) <= tolerance * exact and abs(leaky["mass_outside"] - leaked) <= tolerance),
        InstrumentCheck("importance sampling from the data misses that mass (the reason for the second estimator)",
                        f"MSE {leaky['mse']:.2g}", 0 <= leaky["mse"] <= tolerance * exact),
    ]


def conditions_summary(records: Sequence[runs.RunRecord]) -> str:
    """The conditions of several runs in one line: the distinct thread counts, CPUs and devices, the
    range of the 1-minute load average over their starts and ends, and the range of dates."""
    if not records or not all(isinstance(r, runs.RunRecord) for r in records):
        raise ValueError("records must be a non-empty sequence of RunRecords")
    cs = [r.conditions for r in records if r.conditions]
    if not cs:
        return "conditions not recorded"
    def distinct(key: str) -> str:
        return ", ".join(dict.fromkeys(str(c.get(key, "?")) for c in cs))
    loads = [c[k] for c in cs for k in ("load_start", "load_end") if k in c]
    dates = sorted(c["date"] for c in cs if "date" in c)
    load = f"load {min(loads):.1f} to {max(loads):.1f}" if loads else "load not recorded"
    when = f"{dates[0]} to {dates[-1]}" if dates and dates[0] != dates[-1] else (dates[0] if dates else "?")
    return f"{distinct('threads')} thread(s), {load}, {distinct('cores')} cores, {distinct('cpu')}, {distinct('device')}, {when}"
