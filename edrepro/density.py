"""Experiment mechanics of the 2-D density-estimation chapters.

One *run* trains the toy energy network (:func:`edrepro.nets.toy_energy_net`) on one 2-D data
set (:func:`edrepro.toy.get`) with one training method and one seed, keeps an EMA of its
parameters, and records the MSE of the log-density (:func:`edrepro.metrics.mse_log_density`;
for data sets without an exact density, a grid-normalised NLL) of the EMA model every
``eval_every`` steps together with the training seconds spent so far (evaluation excluded).
Runs are cached on disk: a finished run is loaded instead of retrained, an interrupted one
resumes from its last checkpoint, bitwise identically.

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
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import _checks, losses, metrics, nets, toy, train
from .samplers import ReplayBuffer

# Bump to invalidate every cached run (e.g. after a change of the training mechanics).
CACHE_VERSION = 1

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
    "mse": "MSE of the log-density (needs the data set's exact log-density)",
    "nll": "negative log-likelihood of fresh data, the model normalised on a grid",
}
"""The evaluation metrics of :func:`run` (lower is better for both)."""

METRICS_SHORT = {"mse": "MSE", "nll": "NLL"}

_NUMBERS = (int, float)


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


class PersistentChains(nn.Module):
    """An energy network together with the replay buffer of persistent-CD chains.

    The chains are a registered buffer, so they are saved and restored with the model (a
    checkpointed ``pcd`` run resumes bitwise); the EMA copy carries them along unused.
    ``forward`` is the energy network's.
    """

    def __init__(self, net: nn.Module, chains: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("chains", _checks.batch("chains", chains).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _fit_noise(dataset: object, inflation: float) -> tuple[torch.Tensor, torch.Tensor]:
    # A fixed generator: the NCE noise is part of the method, not of the run's randomness.
    sample = dataset.sample(10_000, torch.Generator().manual_seed(12345))  # type: ignore[attr-defined]
    return losses.fit_gaussian_noise(sample, inflation=inflation)


def make_loss(method: str, dataset: object | None = None, **hparams: Any) -> train.LossFn:
    """The ``loss_fn(model, x, generator)`` of ``method`` for :func:`edrepro.train.train`.

    ``hparams`` override :data:`METHODS`'s defaults. ``nce`` needs ``dataset`` (its noise is a
    Gaussian fitted to 10 000 draws, inflated by ``inflation``); ``pcd`` needs the model to be
    a :class:`PersistentChains` (:func:`make_model` builds one).
    """
    hp = method_hparams(method, hparams)
    if method == "ed":
        t, m, w = hp["t"], hp["m_particles"], hp["w"]
        _checks.positive("t", t)
        _checks.positive_int("m_particles", m)
        _checks.non_negative("w", w)
        return lambda model, x, g: losses.energy_discrepancy(model, x, t=t, m_particles=m, w=w, generator=g)
    if method == "sm":
        return lambda model, x, g: losses.score_matching(model, x)
    if method == "ssm":
        k = _checks.positive_int("n_projections", hp["n_projections"])
        return lambda model, x, g: losses.sliced_score_matching(model, x, n_projections=k, generator=g)
    if method == "dsm":
        sigma = _checks.positive("sigma", hp["sigma"])
        return lambda model, x, g: losses.denoising_score_matching(model, x, sigma=sigma, generator=g)
    if method in ("cd", "pcd"):
        n_steps = _checks.positive_int("n_steps", hp["n_steps"])
        step_size = _checks.positive("step_size", hp["step_size"])
        reg = _checks.non_negative("reg", hp["reg"])
        if method == "cd":
            return lambda model, x, g: losses.contrastive_divergence(
                model, x, n_steps=n_steps, step_size=step_size, reg=reg, generator=g
            )
        _checks.positive_int("buffer_size", hp["buffer_size"])
        reinit = _checks.unit_interval("reinit_frac", hp["reinit_frac"])

        def pcd(model: nn.Module, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
            if not isinstance(model, PersistentChains):
                raise ValueError(f"method 'pcd' needs a PersistentChains model (see make_model), got {type(model).__name__}")
            buffer = _ChainsView(model.chains)
            return losses.contrastive_divergence(
                model, x, n_steps=n_steps, step_size=step_size, reg=reg, buffer=buffer, reinit_frac=reinit, generator=g
            )

        return pcd
    # nce
    if dataset is None:
        raise ValueError("method 'nce' needs the dataset (its noise distribution is fitted to the data)")
    nu = _checks.positive_int("noise_ratio", hp["noise_ratio"])
    mean, cov = _fit_noise(dataset, _checks.positive("inflation", hp["inflation"]))

    def nce(model: nn.Module, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        return losses.noise_contrastive_estimation(model, x, 0.0, mean.to(x), cov.to(x), noise_ratio=nu, generator=g)

    return nce


_BOX = 4.0  # persistent chains start uniform on [−4, 4]^d, the box of every 2-D set


class _ChainsView(ReplayBuffer):
    """A :class:`ReplayBuffer` whose storage is a model's ``chains`` buffer (written in place by ``push``)."""

    def __init__(self, chains: torch.Tensor):  # no super().__init__: the chains already exist
        self.capacity, self.data = chains.shape[0], chains
        self.init_fn = lambda n, gen: _uniform(n, chains.shape[1], gen, chains)


def _uniform(n: int, d: int, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(n, d, generator=generator, device=gen_device, dtype=like.dtype)
    return (2.0 * u - 1.0).mul_(_BOX).to(like.device)


def make_model(method: str, seed: int, dim: int = 2, hparams: Mapping[str, Any] | None = None) -> nn.Module:
    """The toy energy network initialised from ``seed`` alone (the same start for every method).

    Uses a forked random state, so the global one is untouched. For ``pcd`` the network is
    wrapped in :class:`PersistentChains` with a buffer of uniform draws on [−4, 4]^dim.
    """
    hp = method_hparams(method, hparams)
    _checks.positive_int("seed", seed, minimum=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nets.toy_energy_net(dim)
    if method != "pcd":
        return net
    size = _checks.positive_int("buffer_size", hp["buffer_size"])
    gen = torch.Generator().manual_seed(seed)
    return PersistentChains(net, _uniform(size, dim, gen, torch.empty(0)))


def _eval_seed(seed: int, step: int) -> int:
    # Evaluation draws its own samples, fixed by (seed, step): the same 5000 points for every method
    # at a given step, and the training random stream is never touched by evaluation.
    return int(np.random.SeedSequence([seed, step, 0xED]).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass
class RunResult:
    """One (method, data set, seed) run.

    ``steps``, ``seconds`` and ``values`` are the evaluation curve: step s, training seconds up to
    s (evaluation and checkpointing excluded) and the EMA model's ``metric`` at s (see
    :data:`METRICS`; ``mse`` is ``values`` for the default metric).
    ``cached`` is True when nothing was trained by this call (the run was loaded from disk);
    ``resumed_from`` is the step an interrupted run continued from (0 for a fresh one).
    ``timing`` describes the conditions of the (last) call that trained: torch threads, device,
    the 1-minute load average at its start and end, and the date; it is kept beside the
    checkpoint, so a cached run still says under what load its seconds were measured.
    """

    method: str
    dataset: str
    seed: int
    n_steps: int
    hparams: dict[str, Any]
    steps: list[int]
    seconds: list[float]
    values: list[float]
    losses: list[float]
    model: nn.Module
    ema_model: nn.Module
    steps_per_second: float
    train_seconds: float
    diverged_at: int | None
    resumed_from: int
    cached: bool
    path: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    metric: str = "mse"

    @property
    def final(self) -> float:
        """The metric at the last evaluated step."""
        return self.values[-1]

    @property
    def final_mse(self) -> float:
        """The MSE of the log-density at the last evaluated step (runs with ``metric="mse"`` only)."""
        return self.mse[-1]

    @property
    def mse(self) -> list[float]:
        """The curve of the MSE of the log-density (runs with ``metric="mse"`` only)."""
        if self.metric != "mse":
            raise ValueError(f"this run recorded metric {self.metric!r}, not 'mse'; use .values")
        return self.values

    @property
    def energy(self) -> nn.Module:
        """The EMA energy network (without the persistent chains of ``pcd``)."""
        return self.ema_model.net if isinstance(self.ema_model, PersistentChains) else self.ema_model


def train_run(
    method: str, data: object, seed: int, n_steps: int, hp: Mapping[str, Any],
    eval_fn: Callable[[nn.Module, int], dict[str, float]], path: Path | None, *, batch_size: int, lr: float,
    ema_decay: float, eval_every: int, device: torch.device, checkpoint_every: int | None, progress: bool,
) -> tuple[train.TrainResult, dict[str, Any], bool]:
    """Train one (method, data set, seed) run with the authors' 2-D setup, checkpointed at ``path``.

    The toy energy network initialised from ``seed``, Adam(``lr``), a fresh batch every step,
    an EMA that ``eval_fn`` sees, a run that stops (not raises) on a non-finite loss. Returns the
    training result, the conditions it was trained under (threads, device, load average; kept
    beside the checkpoint as ``.json`` so a cached run still reports them) and whether the run
    was loaded finished from the cache. Shared by :func:`run` and :func:`edrepro.benchmark.run`.
    """
    model = make_model(method, seed, data.dim, hp).to(device)
    loss_fn = train.with_device_noise(make_loss(method, data, **hp), device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    existed = path is not None and path.exists()
    meta_path = path.with_suffix(".json") if path is not None else None
    load_start = os.getloadavg()[0]
    result = train.train(
        model, loss_fn, data.sample, n_steps, batch_size=batch_size, optimizer=optimizer,
        ema_decay=ema_decay, eval_every=eval_every, eval_fn=eval_fn,
        generator=torch.Generator().manual_seed(seed), on_nonfinite="stop",
        checkpoint_path=path, checkpoint_every=checkpoint_every if path is not None else None,
        progress=progress, desc=f"{method} {data.name} seed {seed}",
    )
    done = len(result.losses)
    timing: dict[str, Any] = {}
    if meta_path is not None and meta_path.exists() and done == result.resumed_from:
        timing = json.loads(meta_path.read_text())
    elif done > result.resumed_from:
        timing = {
            "threads": torch.get_num_threads(), "device": str(device), "load_start": round(load_start, 2),
            "load_end": round(os.getloadavg()[0], 2), "date": time.strftime("%Y-%m-%d %H:%M"),
        }
        if meta_path is not None:
            meta_path.write_text(json.dumps(timing))
    return result, timing, existed and result.resumed_from == done


def cache_path(
    cache_dir: str | os.PathLike | None, dataset: str, method: str, key: str, seed: int, fresh: bool
) -> Path | None:
    """``cache_dir/DATASET/METHOD-KEY-seedSEED.pt`` (folder created), or None without a cache.

    With ``fresh`` the checkpoint and its ``.json`` timing record are deleted first, so the run retrains.
    """
    if cache_dir is None:
        return None
    folder = Path(cache_dir) / dataset
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{method}-{key}-seed{seed}.pt"
    if fresh:
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)
    return path


def run_key(config: Mapping[str, Any]) -> str:
    """A short hash of a run's configuration (its cache file name)."""
    text = json.dumps({"version": CACHE_VERSION, **config}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run(
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
    metric: str = "mse",
    nll_grid: int = 200,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = "runs/density",
    checkpoint_every: int | None = 1000,
    fresh: bool = False,
    progress: bool = True,
) -> RunResult:
    """Train ``method`` on ``dataset`` with ``seed`` and return its MSE curve and EMA model.

    The authors' 2-D setup: the toy energy network (2→128→128→128→128→1, Softplus) initialised
    from ``seed``, Adam(``lr``), a fresh batch of ``batch_size`` every step, an EMA with decay
    ``ema_decay`` that every evaluation uses, and the MSE of the log-density on ``eval_samples``
    fresh data points at step 0, every ``eval_every`` steps and at the last step. Data sets
    without an exact density (pinwheel, 2spirals, moons, swissroll) need ``metric="nll"``: the
    negative log-likelihood of the fresh points under the model normalised on an
    ``nll_grid``² grid over the data set's bounds (:func:`edrepro.metrics.grid_nll`).

    Randomness: the initial network depends on ``seed`` only; data batches and the loss's noise come
    from one generator seeded with ``seed``; evaluation samples come from their own generator fixed
    by (seed, step). Two calls with the same arguments give identical curves and parameters.

    Cache: with ``cache_dir`` the run lives in ``cache_dir/DATASET/METHOD-KEY-seedSEED.pt``, KEY a
    hash of every argument above except ``device``, ``cache_dir``, ``checkpoint_every`` and
    ``progress``; it is checkpointed every ``checkpoint_every`` steps. A finished run is loaded
    (``cached=True``), an interrupted one resumes; ``fresh=True`` deletes the file first and
    retrains (so does ``cache_dir=None``, without writing anything). A run whose loss becomes
    non-finite stops there (``diverged_at``).
    """
    _checks.choice("method", method, METHODS)
    if not isinstance(dataset, str):
        raise ValueError(f"dataset must be the name of a 2-D data set, one of {list(toy.NAMES)}, got {dataset!r}")
    data = toy.get(dataset)
    _checks.choice("metric", metric, METRICS)
    if metric == "mse" and not data.has_log_prob:
        with_lp = [n for n in toy.NAMES if toy.get(n).has_log_prob]
        raise ValueError(
            f"dataset {dataset!r} has no analytic log-density, so the MSE cannot be computed; "
            f"use metric='nll' or one of {with_lp}"
        )
    _checks.positive_int("nll_grid", nll_grid, minimum=2)
    _checks.positive_int("seed", seed, minimum=0)
    _checks.positive_int("n_steps", n_steps)
    _checks.positive_int("batch_size", batch_size)
    _checks.positive("lr", lr)
    _checks.unit_interval("ema_decay", ema_decay)
    _checks.positive_int("eval_every", eval_every)
    _checks.positive_int("eval_samples", eval_samples)
    if checkpoint_every is not None:
        _checks.positive_int("checkpoint_every", checkpoint_every)
    hp = method_hparams(method, hparams)
    device = train.resolve_device(device)
    if method == "pcd" and device.type != "cpu":
        raise ValueError("method 'pcd' runs on the CPU only (samplers.ReplayBuffer draws its permutation on the CPU); use device='cpu'")

    config = {
        "method": method, "dataset": dataset, "seed": seed, "n_steps": n_steps, "hparams": hp,
        "batch_size": batch_size, "lr": lr, "ema_decay": ema_decay, "eval_every": eval_every,
        "eval_samples": eval_samples, "metric": metric, **({"nll_grid": nll_grid} if metric == "nll" else {}),
    }
    path = cache_path(cache_dir, dataset, method, run_key(config), seed, fresh)

    def evaluate(ema_model: nn.Module, step: int) -> dict[str, float]:
        gen = torch.Generator().manual_seed(_eval_seed(seed, step))
        if metric == "mse":
            return {metric: metrics.mse_log_density(ema_model, data, n=eval_samples, generator=gen)}
        x = data.sample(eval_samples, gen)
        return {metric: metrics.grid_nll(ema_model, x, data.bounds, nll_grid)}

    result, timing, cached = train_run(
        method, data, seed, n_steps, hp, evaluate, path, batch_size=batch_size, lr=lr, ema_decay=ema_decay,
        eval_every=eval_every, device=device, checkpoint_every=checkpoint_every, progress=progress,
    )
    done = len(result.losses)
    return RunResult(
        method=method, dataset=dataset, seed=seed, n_steps=n_steps, hparams=hp,
        steps=[int(e["step"]) for e in result.evals],
        seconds=[float(e["seconds"]) for e in result.evals],
        values=[float(e[metric]) for e in result.evals],
        losses=list(result.losses), model=result.model, ema_model=result.ema_model,  # type: ignore[arg-type]
        steps_per_second=done / result.seconds if result.seconds > 0 else math.inf,
        train_seconds=result.seconds, diverged_at=result.diverged_at,
        resumed_from=result.resumed_from, cached=cached,
        path=path, config=config, timing=timing, metric=metric,
    )


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


def reach(result: RunResult, threshold: float, sustained: bool = False) -> tuple[int | None, float | None]:
    """(first step, training seconds at that step) at which the run's metric ≤ ``threshold``; (None, None) if never."""
    i = first_reaching(list(range(len(result.values))), result.values, threshold, sustained)
    return (None, None) if i is None else (result.steps[int(i)], result.seconds[int(i)])


def tail_median(result: RunResult, fraction: float = 0.2) -> float:
    """Median of the metric over the evaluations in the last ``fraction`` of the run's steps (robust to spikes)."""
    fraction = _checks.open_unit("fraction", fraction) if fraction != 1 else 1.0
    start = (1.0 - fraction) * result.steps[-1]
    return float(np.median([v for s, v in zip(result.steps, result.values) if s >= start]))


def iterations_per_second(result: RunResult) -> float:
    """Training steps per training second (evaluation excluded) of a run, from its full history."""
    return result.steps_per_second


def format_reach(value: float | None, unit: str = "", digits: int = 0) -> str:
    """``"never"`` for None, else the value with ``digits`` decimals and a unit (e.g. ``"52 s"``)."""
    if value is None:
        return "never"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".rstrip()


def curve_band(results: Sequence[RunResult], x: str = "steps") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Several seeds' metric curves on the common evaluation steps: (x, mean, min, max).

    ``x = "steps"`` gives the steps; ``x = "seconds"`` the training seconds averaged over the
    seeds. Curves are cut to the shortest one (a diverged run stops early).
    """
    _checks.choice("x", x, ("steps", "seconds"))
    if not results:
        raise ValueError("results must hold at least one RunResult")
    n = min(len(r.values) for r in results)
    values = np.array([r.values[:n] for r in results], dtype=float)
    xs = np.array([getattr(r, x)[:n] for r in results], dtype=float).mean(axis=0)
    return xs, values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def summary(results: Mapping[str, Sequence[RunResult]], threshold: float = 0.1) -> list[dict[str, Any]]:
    """One row per method: the final metric (per seed, mean, std), the best value, the median of the
    last 20 % of the steps (:func:`tail_median`, mean over seeds), iterations per second, and
    the steps and seconds at which each seed first reached a value ≤ ``threshold`` (None = never)."""
    rows = []
    for method, runs in results.items():
        if not runs:
            raise ValueError(f"results[{method!r}] holds no runs")
        final = np.array([r.final for r in runs], dtype=float)
        metric = {r.metric for r in runs}
        if len(metric) != 1:
            raise ValueError(f"results[{method!r}] mixes metrics {sorted(metric)}")
        reached = [reach(r, threshold) for r in runs]
        rows.append({
            "method": method,
            "label": LABELS.get(method, method),
            "seeds": [r.seed for r in runs],
            "metric": metric.pop(),
            "final": final.tolist(),
            "final_mean": float(final.mean()),
            "final_std": float(final.std(ddof=1)) if len(final) > 1 else 0.0,
            "best": float(min(min(r.values) for r in runs)),
            "tail": float(np.mean([tail_median(r) for r in runs])),
            "it_per_s": float(np.mean([iterations_per_second(r) for r in runs])),
            "steps_to_threshold": [s for s, _ in reached],
            "seconds_to_threshold": [t for _, t in reached],
            "diverged_at": [r.diverged_at for r in runs],
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
        lines.append(
            f"| {r['label']} | {final} | {r['tail']:.3g} | {r['best']:.3g} | {r['it_per_s']:.0f} | "
            f"{seeds(r['steps_to_threshold'], '')} | {seeds(r['seconds_to_threshold'], 's')} |"
        )
    return "\n".join(lines)
