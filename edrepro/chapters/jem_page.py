"""The JEM chapter's page: its runs, the scores of every trained classifier, the figures and the claims.

Scores of a run (:func:`score_toy`, :func:`score_mnist`):

- held-out accuracy and expected calibration error of p(y | x) (:mod:`edrepro.classifier_metrics`);
- 2-D: the NLL of held-out points under p(x) ∝ exp(−E(x)) restricted to the data box [−4, 4]², with Z by
  a midpoint rule (:func:`edrepro.metrics.grid_nll`: exact for the box-restricted model up to the grid's
  error), and the share of exp(−E)'s mass in [−16, 16]² that lies outside the box
  (:func:`edrepro.metrics.region_log_normaliser`): on all of ℝ² a classifier's exp(−E) = Σ_y exp(f_y)
  grows without bound wherever a logit does, so p(x) exists only on a bounded domain — the box, as
  images live in [−1, 1]^784;
- MNIST: AUROC of log p(x) + log Z = −E(x) on test digits against three sets the page makes
  (:func:`ood_sets`), and samples (:func:`samples`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .. import _checks, classifier_metrics, jem, metrics, toy
from ..book import runs
from ..book.claims import Claim
from . import jem_runs

TOY_BOX = (-jem_runs.TOY_BOX, jem_runs.TOY_BOX)
NLL_GRID = 200
"""Cells per axis of the midpoint rule for Z on the box (200² = 40 000 energies)."""
N_BINS = 15
"""Confidence bins of the expected calibration error (Guo et al. 2017)."""
OOD_NAMES = ("uniform noise", "permuted pixels", "inverted digits")
TOY_ACCURACY_TOLERANCE = 0.01
"""How much held-out accuracy JEM-ED may lose against the plain classifier on a 2-D set (a fraction)."""
MNIST_ACCURACY_TOLERANCE = 0.02
"""The same on MNIST (measured, not asserted: it does not hold for every seed 0–4 at ``quick``)."""
OOD_FLOOR = 0.99
"""The AUROC JEM-ED should reach against every out-of-distribution set (measured, not asserted)."""


def check_params(params: Mapping[str, Any]) -> None:
    """The rules tying the page's parameters together: ``methods`` holds ``ce`` and ``ed`` (the claims compare
    them), ``datasets`` is not empty, the replay buffer holds at least one batch of every data set, and the
    MNIST subset holds at least one batch."""
    methods, datasets = params.get("methods"), params.get("datasets")
    if not isinstance(methods, (list, tuple)) or len(set(methods)) != len(methods) or not {"ce", "ed"} <= set(methods):
        raise ValueError(f"methods must hold 'ce' and 'ed' (the page's claims compare them) and no method twice, got {methods!r}")
    for m in methods:
        _checks.choice("methods", m, jem_runs.METHODS)
    if not isinstance(datasets, (list, tuple)) or not datasets or len(set(datasets)) != len(datasets):
        raise ValueError(f"datasets must be a non-empty list of distinct data sets {list(jem_runs.DATASETS)}, got {datasets!r}")
    for d in datasets:
        _checks.choice("datasets", d, jem_runs.DATASETS)
    batches = [("toy_batch_size", params["toy_batch_size"])] if any(d != "mnist" for d in datasets) else []
    batches += [("mnist_batch_size", params["mnist_batch_size"])] if "mnist" in datasets else []
    for name, batch in batches:
        if params["buffer_size"] < batch:
            raise ValueError(f"buffer_size must hold at least one batch ({name} = {batch}), got {params['buffer_size']}")
    if "mnist" in datasets and params["mnist_n_train"] < params["mnist_batch_size"]:
        raise ValueError(f"mnist_n_train must be at least mnist_batch_size = {params['mnist_batch_size']}, got {params['mnist_n_train']}")


def page_specs(params: Mapping[str, Any]) -> list[runs.RunSpec]:
    """Every run of the page: each method on each data set, at the page's seed."""
    check_params(params)
    return [jem_runs.run_spec(m, d, params["seed"], params) for d in params["datasets"] for m in params["methods"]]


# ----------------------------------------------------------------------------- scores


@torch.no_grad()
def _probabilities(model: torch.nn.Module, x: torch.Tensor, batch: int = 2000) -> torch.Tensor:
    return torch.cat([torch.softmax(model(x[k : k + batch]).double(), 1) for k in range(0, len(x), batch)])


@torch.no_grad()
def _energies(model: torch.nn.Module, x: torch.Tensor, batch: int = 2000) -> torch.Tensor:
    energy = jem.energy_of(model)
    return torch.cat([energy(x[k : k + batch]).double() for k in range(0, len(x), batch)])


def classification_scores(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Accuracy, expected calibration error and the reliability bins of ``model`` on (x, y)."""
    probs = _probabilities(model, x)
    bins = classifier_metrics.reliability(probs, y, N_BINS)
    return {"accuracy": classifier_metrics.accuracy(probs, y), "ece": bins.ece, "reliability": bins}


def toy_test_set(dataset: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` held-out labelled points of a 2-D set, drawn apart from every training and training-time stream."""
    _checks.choice("dataset", dataset, toy.LABELLED)
    return toy.get(dataset).sample_labelled(_checks.positive_int("n", n), torch.Generator().manual_seed(10_000_019 + seed))


def _run_row(record: runs.RunRecord) -> dict[str, Any]:
    """What every score row says of its run: method, data set, seed, outcome and training seconds per iteration."""
    return {"method": record.spec.method, "dataset": record.spec.dataset, "seed": record.spec.seed,
            "outcome": record.outcome_text(), "diverged": record.diverged,
            "seconds_per_iteration": record.train_seconds / max(record.steps, 1)}


def score_toy(record: runs.RunRecord, n_test: int, seed: int) -> dict[str, Any]:
    """Scores of a 2-D run on ``n_test`` held-out points: accuracy, ECE, the box-restricted NLL of p(x),
    the mass of exp(−E) in [−16, 16]² outside the box, the log-density on the heatmap grid; or, for a
    diverged run, only its divergence."""
    row = _run_row(record)
    if record.diverged:
        return row
    model, _ = jem_runs.load_model(record)
    x, y = toy_test_set(record.spec.dataset, n_test, seed)
    energy = jem.energy_of(model)
    quadrature = metrics.region_log_normaliser(energy, TOY_BOX, max_growth=1)
    row.update(classification_scores(model, x, y))
    row["nll"] = metrics.grid_nll(energy, x, TOY_BOX, NLL_GRID)
    row["mass_outside_box"] = quadrature.mass_outside_box
    row["heatmap"] = metrics.grid_log_density(energy, TOY_BOX, 100)[1].exp().numpy()
    return row


def data_nll(dataset: str, n_test: int, seed: int) -> float | None:
    """The NLL of the held-out points under the true density (the yardstick), where it has a closed form."""
    data = toy.get(dataset)
    if not data.has_log_prob:
        return None
    x, _ = toy_test_set(dataset, n_test, seed)
    return float(-data.log_prob(x.double()).mean())


def ood_sets(test_images: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """Three sets of flattened images in [−1, 1], as many as ``test_images``, that are not digits: uniform
    noise, the test digits with their pixels permuted (one fixed permutation), the test digits inverted (−x)."""
    x = _checks.batch("test_images", test_images, dim=784)
    g = torch.Generator().manual_seed(20_000_003 + seed)
    noise = 2.0 * torch.rand(x.shape, generator=g, dtype=x.dtype) - 1.0
    permuted = x[:, torch.randperm(784, generator=g)]
    return dict(zip(OOD_NAMES, (noise, permuted, -x)))


def score_mnist(record: runs.RunRecord, x: torch.Tensor, y: torch.Tensor, ood: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Scores of an MNIST run on test images (x, y): accuracy, ECE, reliability bins, and the AUROC of −E(x)
    (log p(x) up to its constant) on the test digits against each set of ``ood``."""
    row = _run_row(record)
    if record.diverged:
        return row
    model, _ = jem_runs.load_model(record)
    row.update(classification_scores(model, x, y))
    score_in = -_energies(model, x)
    row["auroc"] = {name: classifier_metrics.auroc(score_in, -_energies(model, images)) for name, images in ood.items()}
    return row


def samples(record: runs.RunRecord, n: int, n_steps: int, step_size: float, noise_std: float, seed: int) -> torch.Tensor:
    """``n`` images of the model's p(x): for an SGLD run the first ``n`` persistent chains of its buffer; for the
    others ``n_steps`` of the same SGLD sampler (:func:`edrepro.jem.sgld`) from uniform noise."""
    model, chains = jem_runs.load_model(record)
    if chains is not None:
        return chains[:n].clamp(-1, 1)
    g = torch.Generator().manual_seed(30_000_001 + seed)
    return jem.sgld(jem.energy_of(model), jem.uniform_images(n, g), n_steps, step_size, noise_std, g).clamp(-1, 1)


# ----------------------------------------------------------------------------- claims


def _by(rows: Sequence[Mapping[str, Any]], method: str) -> dict[str, Mapping[str, Any]]:
    return {r["dataset"]: r for r in rows if r["method"] == method}


def _value_text(row: Mapping[str, Any], key: str, fmt: str) -> str:
    return row["outcome"] if row["diverged"] else format(row[key], fmt)


def _usable(*rows_: Mapping[str, Any]) -> bool:
    return all(not r["diverged"] for r in rows_)


def nll_claim(rows: Sequence[Mapping[str, Any]]) -> Claim:
    """JEM-ED's box-restricted NLL of p(x) is below the plain classifier's on every 2-D set of ``rows``: the
    generative term teaches the classifier's energy the data's density. A diverged run on either side fails it
    (a divergence never makes a claim hold)."""
    ed, ce = _by(rows, "ed"), _by(rows, "ce")
    sets = [d for d in ed if d != "mnist" and d in ce]
    if not sets:
        raise ValueError("rows must hold ed and ce rows of at least one 2-D set")
    holds = all(_usable(ed[d], ce[d]) and ed[d]["nll"] < ce[d]["nll"] for d in sets)
    measured = "; ".join(f"{d}: {_value_text(ed[d], 'nll', '.3g')} vs {_value_text(ce[d], 'nll', '.3g')}" for d in sets)
    return Claim("JEM-ED's NLL of held-out points under p(x) (on the box) is below the plain classifier's on every 2-D set", measured, holds)


def accuracy_claim(rows: Sequence[Mapping[str, Any]], tolerance: float, dataset_kind: str) -> Claim:
    """JEM-ED classifies as well as the plain classifier, within ``tolerance`` (a fraction) of its held-out
    accuracy, on every data set of ``dataset_kind`` ("2-D" or "mnist"): the generative term costs no accuracy."""
    _checks.choice("dataset_kind", dataset_kind, ("2-D", "mnist"))
    tolerance = _checks.unit_interval("tolerance", tolerance)
    ed, ce = _by(rows, "ed"), _by(rows, "ce")
    sets = [d for d in ed if d in ce and (d == "mnist") == (dataset_kind == "mnist")]
    if not sets:
        raise ValueError(f"rows must hold ed and ce rows of a {dataset_kind} data set")
    holds = all(_usable(ed[d], ce[d]) and ed[d]["accuracy"] >= ce[d]["accuracy"] - tolerance for d in sets)
    measured = "; ".join(f"{d}: {_value_text(ed[d], 'accuracy', '.2%')} vs {_value_text(ce[d], 'accuracy', '.2%')}" for d in sets)
    where = "on MNIST" if dataset_kind == "mnist" else "on every 2-D set"
    points = f"{100 * tolerance:g} point{'' if 100 * tolerance == 1 else 's'}"
    return Claim(f"JEM-ED's held-out accuracy is within {points} of the plain classifier's {where}", measured, holds)


def _mnist_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    ed, ce = _by(rows, "ed").get("mnist"), _by(rows, "ce").get("mnist")
    if ed is None or ce is None:
        raise ValueError("rows must hold the ed and ce rows of mnist")
    return ed, ce


def _auroc_text(row: Mapping[str, Any], name: str) -> str:
    return row["outcome"] if row["diverged"] else f"{row['auroc'][name]:.3f}"


def ood_claim(rows: Sequence[Mapping[str, Any]], ood_name: str) -> Claim:
    """JEM-ED's log p(x) separates MNIST test digits from the set ``ood_name`` better than the plain
    classifier's logsumexp does: a higher AUROC."""
    _checks.choice("ood_name", ood_name, OOD_NAMES)
    ed, ce = _mnist_rows(rows)
    holds = _usable(ed, ce) and ed["auroc"][ood_name] > ce["auroc"][ood_name]
    return Claim(f"JEM-ED's log p(x) tells MNIST digits from {ood_name} better than the plain classifier's (AUROC)",
                 f"{_auroc_text(ed, ood_name)} vs {_auroc_text(ce, ood_name)}", holds)


def ood_floor_claim(rows: Sequence[Mapping[str, Any]], floor: float) -> Claim:
    """JEM-ED's log p(x) separates the MNIST test digits from every out-of-distribution set with an AUROC of at
    least ``floor``."""
    floor = _checks.unit_interval("floor", floor)
    ed, _ = _mnist_rows(rows)
    holds = _usable(ed) and all(ed["auroc"][name] >= floor for name in OOD_NAMES)
    measured = "; ".join(f"{name}: {_auroc_text(ed, name)}" for name in OOD_NAMES)
    return Claim(f"JEM-ED's log p(x) separates MNIST digits from every out-of-distribution set with AUROC ≥ {floor:g}", measured, holds)


# ----------------------------------------------------------------------------- tables and figures


def _name(method: str) -> str:
    return jem_runs.METHOD_NAMES[method]


def _failed_title(method: str, outcome: str) -> str:
    return "\n".join([_name(method) + ":", *textwrap.wrap(outcome, 30)])


def toy_table(rows: Sequence[Mapping[str, Any]], data_nlls: Mapping[str, float | None]) -> list[list[Any]]:
    """Rows (set, model, accuracy, ECE, NLL of p(x) on the box, mass outside the box, s / iteration) of the 2-D
    runs; a diverged run shows its divergence; each set ends with the true density's NLL where known."""
    table: list[list[Any]] = []
    for d in dict.fromkeys(r["dataset"] for r in rows if r["dataset"] != "mnist"):
        for r in (r for r in rows if r["dataset"] == d):
            if r["diverged"]:
                table.append([d, _name(r["method"]), r["outcome"], "", "", "", f"{r['seconds_per_iteration'] * 1000:.1f}"])
            else:
                table.append([d, _name(r["method"]), f"{r['accuracy']:.2%}", f"{r['ece']:.4f}", f"{r['nll']:.3f}",
                              f"{r['mass_outside_box']:.3f}", f"{r['seconds_per_iteration'] * 1000:.1f}"])
        if data_nlls.get(d) is not None:
            table.append([d, "true density", "", "", f"{data_nlls[d]:.3f}", "", ""])
    return table


TOY_HEADER = ["set", "model", "accuracy", "ECE", "NLL of p(x) on the box", "mass in [−16, 16]² outside the box", "ms / iteration"]
MNIST_HEADER = ["model", "accuracy", "ECE", *(f"AUROC vs {n}" for n in OOD_NAMES), "ms / iteration"]


def mnist_table(rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Rows (model, accuracy, ECE, AUROC against each out-of-distribution set, ms / iteration) of the MNIST runs."""
    table = []
    for r in (r for r in rows if r["dataset"] == "mnist"):
        ms = f"{r['seconds_per_iteration'] * 1000:.0f}"
        if r["diverged"]:
            table.append([_name(r["method"]), r["outcome"], "", *([""] * len(OOD_NAMES)), ms])
        else:
            table.append([_name(r["method"]), f"{r['accuracy']:.2%}", f"{r['ece']:.4f}", *(f"{r['auroc'][n]:.3f}" for n in OOD_NAMES), ms])
    return table


def toy_figure(rows: Sequence[Mapping[str, Any]], n_points: int, seed: int) -> Any:
    """One row per 2-D set: its labelled data (coloured by label), then the density p(x) on the box of each
    model (a diverged model's panel says so)."""
    import matplotlib.pyplot as plt

    from ..plotting import density_heatmap

    sets = list(dict.fromkeys(r["dataset"] for r in rows if r["dataset"] != "mnist"))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(len(sets), 1 + len(methods), figsize=(2.6 * (1 + len(methods)), 2.6 * len(sets)), squeeze=False)
    for i, d in enumerate(sets):
        x, y = toy_test_set(d, n_points, seed)
        axes[i, 0].scatter(x[:, 0], x[:, 1], c=y, s=2, cmap="tab10" if toy.get(d).n_classes <= 10 else "tab20")
        axes[i, 0].set(xlim=TOY_BOX, ylim=TOY_BOX, xticks=[], yticks=[], aspect="equal", title=f"{d}: labelled data")
        for j, m in enumerate(methods):
            r = next(r for r in rows if r["dataset"] == d and r["method"] == m)
            if r["diverged"]:
                axes[i, 1 + j].set_axis_off()
                axes[i, 1 + j].set_title(_failed_title(m, r["outcome"]), fontsize=8)
            else:
                density_heatmap(axes[i, 1 + j], density=r["heatmap"].T, bounds=TOY_BOX, title=_name(m))
    return fig


def reliability_figure(rows: Sequence[Mapping[str, Any]]) -> Any:
    """Reliability diagrams of the MNIST models: accuracy against mean confidence per bin, the diagonal of a
    calibrated classifier, bar widths the bins."""
    import matplotlib.pyplot as plt

    mnist_rows = [r for r in rows if r["dataset"] == "mnist"]
    fig, axes = plt.subplots(1, len(mnist_rows), figsize=(3.2 * len(mnist_rows), 3.2), squeeze=False)
    for ax, r in zip(axes[0], mnist_rows):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        if r["diverged"]:
            ax.set_title(_failed_title(r["method"], r["outcome"]), fontsize=8)
            continue
        bins = r["reliability"]
        lefts = bins.edges[:-1]
        heights = [a if c else 0.0 for a, c in zip(bins.accuracy, bins.counts)]
        ax.bar(lefts, heights, width=1 / len(lefts), align="edge", edgecolor="black", alpha=0.7)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=f"{_name(r['method'])}\nECE {r['ece']:.4f}")
    return fig


def samples_figure(images: Mapping[str, torch.Tensor], captions: Mapping[str, str]) -> Any:
    """One grid of flattened MNIST images per model."""
    import matplotlib.pyplot as plt

    from ..plotting import show_images

    fig, axes = plt.subplots(1, len(images), figsize=(3.4 * len(images), 3.6), squeeze=False)
    for ax, (method, x) in zip(axes[0], images.items()):
        show_images(ax, x.view(-1, 28, 28), nrow=6, title=f"{_name(method)}\n{captions[method]}")
    return fig


def paper_cost(records: Sequence[runs.RunRecord], quick: Mapping[str, Any], paper: Mapping[str, Any]) -> float:
    """Estimated training CPU-seconds of the page's runs under the ``paper`` parameters, from the seconds per
    iteration measured here: each run's rate scaled by its budget and, for SGLD, by (steps + 1) per update,
    for ED by (M + 1), since those set the network evaluations of one update."""
    def work(method: str, p: Mapping[str, Any]) -> float:
        return {"ce": 1.0, "sgld": p["sgld_steps"] + 1.0, "ed": p["ed_m"] + 1.0}[method]

    total = 0.0
    for r in records:
        if r.spec.kind != "jem" or r.steps == 0:
            continue
        budget = paper["mnist_steps"] if r.spec.dataset == "mnist" else paper["toy_steps"]
        batch = "mnist_batch_size" if r.spec.dataset == "mnist" else "toy_batch_size"
        scale = work(r.spec.method, paper) / work(r.spec.method, quick) * paper[batch] / quick[batch]
        total += r.train_seconds / r.steps * budget * scale
    return total


SHORT_NAMES = {"ce": "plain classifier", "sgld": "SGLD-trained JEM", "ed": "ED-trained JEM"}


def _mass_text(done: Sequence[Mapping[str, Any]]) -> str:
    lo, hi = min(r["mass_outside_box"] for r in done), max(r["mass_outside_box"] for r in done)
    return f"{lo:.3f}" + (f" to {hi:.3f}" if hi - lo >= 5e-4 else "") + " of its mass in [−16, 16]² outside the box"


def toy_reading(rows: Sequence[Mapping[str, Any]]) -> str:
    """What the 2-D table says, computed from it: per model, the range of its mass outside the box and the
    sets on which it diverged; then the range of held-out accuracy over the finished models."""
    toy_rows = [r for r in rows if r["dataset"] != "mnist"]
    if not toy_rows:
        raise ValueError("rows must hold at least one 2-D row")
    parts = []
    for m in dict.fromkeys(r["method"] for r in toy_rows):
        done = [r for r in toy_rows if r["method"] == m and not r["diverged"]]
        failed = [r["dataset"] for r in toy_rows if r["method"] == m and r["diverged"]]
        said = ([f"leaves {_mass_text(done)}"] if done else []) + ([f"diverged on {', '.join(failed)}"] if failed else [])
        parts.append(f"the {SHORT_NAMES[m]} " + " and ".join(said))
    done = [r for r in toy_rows if not r["diverged"]]
    accuracy = (f" Held-out accuracy ranges from {min(r['accuracy'] for r in done):.2%} to "
                f"{max(r['accuracy'] for r in done):.2%} over the models that finished.") if done else ""
    return "On this seed " + "; ".join(parts) + "." + accuracy


def accuracy_gap_claim(rows: Sequence[Mapping[str, Any]]) -> Claim:
    """On MNIST, JEM-ED loses less held-out accuracy against the plain classifier than JEM-SGLD does:
    acc(ce) − acc(ed) < acc(ce) − acc(sgld). Any diverged run of the three fails it."""
    by = {m: _by(rows, m).get("mnist") for m in ("ce", "sgld", "ed")}
    if any(r is None for r in by.values()):
        raise ValueError("rows must hold the ce, sgld and ed rows of mnist")
    ce, sgld, ed = by["ce"], by["sgld"], by["ed"]
    holds = _usable(ce, sgld, ed) and ce["accuracy"] - ed["accuracy"] < ce["accuracy"] - sgld["accuracy"]
    measured = ", ".join(f"{SHORT_NAMES[m]} {_value_text(r, 'accuracy', '.2%')}" for m, r in by.items())
    return Claim("On MNIST JEM-ED's held-out accuracy is closer to the plain classifier's than JEM-SGLD's is", measured, holds)
