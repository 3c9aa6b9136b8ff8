"""The ED-LEBM page's experiment: which runs it needs, how it scores them, and what it claims.

The page compares latent EBM priors trained by energy discrepancy, short-run contrastive divergence
and exact score matching (:mod:`edrepro.chapters.lebm`, the paper's Algs. 3, 1 and 2) on one
generator recipe, budget and posterior sampler, scored by a classifier-feature FID of prior samples,
the FID of N(0, I) latents through the same generator, reconstruction error and the classifier's
accuracy on reconstructions (:mod:`edrepro.chapters.mnist_eval`).

Nothing here trains or changes a training run, so editing this module leaves the run keys of the
LEBMs unchanged (their code is :mod:`edrepro.chapters.lebm` and what it imports).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import _checks
from ..book import runs
from . import lebm, mnist_eval
from .lebm import LEBMConfig, config_from_params, spec, PRIOR_LOSSES

METHOD_NAMES = {"ed": "ED-LEBM", "cd": "CD-LEBM", "sm": "SM-LEBM"}
"""Prior loss → the name the page gives its model."""


def check_params(params: Mapping[str, Any]) -> None:
    """The rules tying the page's parameters together: ``methods`` lists distinct prior losses and holds ``ed``."""
    methods = params.get("methods")
    if not isinstance(methods, (list, tuple)) or not methods:
        raise ValueError(f"methods must be a non-empty list of prior losses {list(PRIOR_LOSSES)}, got {methods!r}")
    for m in methods:
        _checks.choice("methods", m, PRIOR_LOSSES)
    if "ed" not in methods or len(set(methods)) != len(methods):
        raise ValueError(f"methods must hold 'ed' (the page's claims are about ED) and no method twice, got {list(methods)}")


# ----------------------------------------------------------------------------- the chapter's bookkeeping

AUTHORS_SECONDS_PER_ITERATION = 1.73
"""Seconds per training iteration in the authors' training log (their settings, one GPU): a reported value."""

MNIST_TRAIN_SIZE = 60_000


def iterations(config: LEBMConfig, n_available: int = MNIST_TRAIN_SIZE) -> int:
    """Training iterations of a run: epochs · ⌈n / batch_size⌉ with n = min(n_train, n_available)."""
    if not isinstance(config, LEBMConfig):
        raise ValueError(f"config must be an LEBMConfig, got {type(config).__name__}")
    n_available = _checks.positive_int("n_available", n_available)
    n = n_available if config.n_train is None else min(config.n_train, n_available)
    return config.epochs * math.ceil(n / config.batch_size)


def generator_size(ngf: int, nz: int = 64) -> int:
    """Parameters of :class:`Generator` (nz, ngf): Σ over its four transposed convolutions of c_in·c_out·k² + c_out."""
    ngf, nz = _checks.positive_int("ngf", ngf), _checks.positive_int("nz", nz)
    layers = ((nz, 8 * ngf, 4), (8 * ngf, 4 * ngf, 3), (4 * ngf, 2 * ngf, 4), (2 * ngf, 1, 4))
    return sum(c_in * c_out * k * k + c_out for c_in, c_out, k in layers)


def departures(config: LEBMConfig, reference: LEBMConfig | None = None) -> list[tuple[str, Any, Any]]:
    """(setting, value in ``config``, value in ``reference``) for every setting where the two differ.

    ``reference`` defaults to the authors' settings with the same prior loss and seed, so the list
    is what a profile changes relative to the paper (empty under ``paper``).
    """
    if not isinstance(config, LEBMConfig):
        raise ValueError(f"config must be an LEBMConfig, got {type(config).__name__}")
    if reference is None:
        reference = LEBMConfig(prior_loss=config.prior_loss, seed=config.seed)
    if not isinstance(reference, LEBMConfig):
        raise ValueError(f"reference must be an LEBMConfig or None, got {type(reference).__name__}")
    mine, theirs = config.to_dict(), reference.to_dict()
    return [(k, v, theirs[k]) for k, v in mine.items() if v != theirs[k]]


def moving_average(values: Any, window: int = 25) -> np.ndarray:
    """Means of ``k`` consecutive values, k = min(window, max(1, len/10)) (the 'valid' part: len − k + 1 values).

    The window shrinks for short series so that a smoothed curve keeps at least 10 windows' worth of points.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {values.shape}")
    k = max(1, min(_checks.positive_int("window", window), len(values) // 10))
    return np.convolve(values, np.ones(k) / k, mode="valid")


def seconds_per_iteration(record: runs.RunRecord) -> float:
    """Training seconds per iteration of an LEBM run (``train_seconds / steps``; evaluation excluded)."""
    if not isinstance(record, runs.RunRecord) or record.spec.kind != "lebm":
        raise ValueError(f"record must be the RunRecord of an LEBM run, got {record!r:.80}")
    if record.steps < 1:
        raise ValueError(f"run {record.spec.label} has no training iterations")
    return record.train_seconds / record.steps


def run_line(record: runs.RunRecord, name: str) -> str:
    """One line on how run ``record`` was obtained: cached or trained, iterations, seconds, outcome, conditions."""
    spi = seconds_per_iteration(record)
    c = record.conditions
    where = f"{c.get('cpu', '?')}, {c.get('threads', '?')} torch thread(s), device {c.get('device', '?')}, load {c.get('load_start', '?')}→{c.get('load_end', '?')}"
    how = "loaded from the cache" if record.cached else "trained"
    return (f"{name} ({how}): {record.steps:,} iterations, {record.train_seconds:.1f} s of training, "
            f"{spi:.3f} s per iteration, {record.outcome_text()}; trained on {where}")


# ----------------------------------------------------------------------------- the chapter's claims

RECONSTRUCTION_RATIO = 0.5
"""A reconstruction carries information about its image when its MSE is below this fraction of the
MSE of answering every image with the mean training image (:func:`reconstruction_claim`)."""


def _finite_non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0 (inf for a broken model), got {value!r}")
    return float(value)


def reconstruction_claim(model_mse: float, mean_image_mse: float, name: str = "ED-LEBM", ratio: float = RECONSTRUCTION_RATIO) -> Any:
    """The claim that ``name``'s reconstructions carry information about their images: their MSE per
    pixel (:func:`edrepro.chapters.mnist_eval.reconstruction_mse`) is below ``ratio`` times that of the mean
    training image (:func:`edrepro.chapters.mnist_eval.mean_image_mse`). A model that ignores the image fails it."""
    from ..book.claims import Claim

    model_mse, mean_image_mse = _finite_non_negative("model_mse", model_mse), _finite_non_negative("mean_image_mse", mean_image_mse)
    if not 0 < ratio < 1 or mean_image_mse == 0:
        raise ValueError(f"ratio must lie in (0, 1) and mean_image_mse be positive, got {ratio!r} and {mean_image_mse!r}")
    return Claim(f"{name}'s reconstruction MSE is below {ratio:g} times that of the mean training image",
                 f"{model_mse:.4f} vs {mean_image_mse:.4f} (ratio {model_mse / mean_image_mse:.2f})",
                 model_mse < ratio * mean_image_mse)


def prior_fid_claim(fid_gaussian: float, fid_prior: float, fid_real: float, name: str = "ED-LEBM") -> Any:
    """The claim that the learned prior improves its generator's samples by more than the FID can
    resolve: decoding latents of the prior lowers the FID against decoding N(0, I) latents by more than
    the FID of real images of the same sample size (``fid_real``, the distance of the right
    distribution, chance alone). A prior no better than N(0, I) fails it."""
    from ..book.claims import Claim

    for label, value in (("fid_gaussian", fid_gaussian), ("fid_prior", fid_prior), ("fid_real", fid_real)):
        _finite_non_negative(label, value)
    gain = fid_gaussian - fid_prior
    gap = fid_gaussian - fid_real
    closed = f" ({100 * gain / gap:.0f} % of the gap to real data closed)" if math.isfinite(gain) and gap > 0 else ""
    return Claim(f"{name}'s learned prior lowers its generator's FID (vs N(0, I) latents) by more than the FID of real data",
                 f"{fid_gaussian:.1f} → {fid_prior:.1f}, lowered by {gain:.1f}; FID of real data {fid_real:.1f}{closed}",
                 math.isfinite(gain) and gain > fid_real)



def seeds_of(params: Mapping[str, Any]) -> list[int]:
    """The seeds of the page's LEBM runs: ``seed``, ``seed + 1``, …, ``n_seeds`` of them."""
    return [params["seed"] + k for k in range(_checks.positive_int("n_seeds", params.get("n_seeds", 1)))]


def lebm_specs(params: Mapping[str, Any]) -> list[runs.RunSpec]:
    """The LEBM runs of the page: every method of ``methods`` at every seed of :func:`seeds_of`, seed-major."""
    check_params(params)
    return [spec(config_from_params({**params, "seed": s}, m)) for s in seeds_of(params) for m in params["methods"]]


def page_specs(params: Mapping[str, Any]) -> list[runs.RunSpec]:
    """The runs of the ED-LEBM page: :func:`lebm_specs`, then the FID classifier.

    The LEBMs use ``seed`` onwards; the classifier has its own ``classifier_seed``, so that pages run
    with different seeds measure their FIDs with one and the same feature network.
    """
    from .mnist_eval import ClassifierSettings, classifier_spec

    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a mapping of the chapter's parameters, got {type(params).__name__}")
    missing = [k for k in ("seed", "n_seeds", "methods", "classifier_seed", "classifier_epochs", "classifier_n_train") if k not in params]
    if missing:
        raise ValueError(f"params lacks the chapter parameter(s) {missing}")
    classifier = ClassifierSettings(epochs=params["classifier_epochs"], n_train=params["classifier_n_train"], seed=params["classifier_seed"])
    return [*lebm_specs(params), classifier_spec(classifier)]


# ----------------------------------------------------------------------------- scoring the runs

METRICS = ("fid_prior", "fid_gaussian", "recon_mse", "recon_accuracy", "seconds_per_iteration")
"""What :func:`score_run` measures for one LEBM run, in the page's table order."""

METRIC_LABELS = {
    "fid_prior": "FID, prior samples", "fid_gaussian": "FID, N(0, I) latents", "recon_mse": "reconstruction MSE",
    "recon_accuracy": "classifier reads reconstructions", "seconds_per_iteration": "training s per iteration",
}

GRID_IMAGES = 32
"""Prior samples and reconstructions kept per method (first seed) for the page's image grids."""


def _to_uint8(images: torch.Tensor) -> list:
    """Images in [−1, 1] as nested lists of 0–255 integers (small enough for a results file)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).squeeze(1).tolist()


def from_uint8(pixels: Any) -> torch.Tensor:
    """The inverse of the results file's image encoding: 0–255 integers (N, 28, 28) → floats in [−1, 1], (N, 1, 28, 28)."""
    arr = torch.as_tensor(np.asarray(pixels, dtype=np.float32))
    if arr.ndim != 3 or arr.shape[1:] != (28, 28):
        raise ValueError(f"pixels must have shape (N, 28, 28), got {tuple(arr.shape)}")
    return (arr / 127.5 - 1).unsqueeze(1)


def score_run(record: runs.RunRecord, classifier: nn.Module, reference: Any, test_images: torch.Tensor, test_labels: torch.Tensor,
              params: Mapping[str, Any], device: torch.device | str = "cpu") -> dict[str, Any]:
    """Every metric of one LEBM run, with small image grids; a diverged run has no metrics, only its outcome.

    - ``fid_prior``: classifier-feature FID (:class:`edrepro.chapters.mnist_eval.FIDReference`) of
      ``n_fid`` images, ``gen_steps`` Langevin steps of size ``gen_step_size`` on the EMA prior, decoded;
    - ``fid_gaussian``: the same generator fed N(0, I) latents (what the prior adds is the difference);
    - ``recon_mse``: mean squared error per pixel (pixels in [0, 1]) of the reconstructions of
      ``test_images`` by the training posterior sampler; ``recon_accuracy``: the fraction of them
      in which the classifier reads ``test_labels``;
    - ``seconds_per_iteration``: training seconds per iteration (evaluation excluded).

    Random numbers come from generators seeded by the run's seed, so the scores of a run are the same
    on every page that computes them.
    """
    row: dict[str, Any] = {"method": record.spec.method, "seed": record.spec.seed, "outcome": record.outcome_text()}
    if record.status != "finished":
        return {**row, **{k: None for k in METRICS}, "samples": None, "reconstructions": None}
    model = lebm.load(record, device)
    seed = record.spec.seed
    sample_rng = torch.Generator(device=device).manual_seed(seed + 2)
    samples = lebm.generate(model, params["n_fid"], params["gen_steps"], params["gen_step_size"], rng=sample_rng)
    gaussian = lebm.generate(model, params["n_fid"], rng=sample_rng, prior="gaussian")
    recon = lebm.reconstruct(model, test_images, rng=torch.Generator(device=device).manual_seed(seed + 1))
    return {**row, "fid_prior": reference.fid(samples), "fid_gaussian": reference.fid(gaussian),
            "recon_mse": mnist_eval.reconstruction_mse(test_images, recon),
            "recon_accuracy": mnist_eval.accuracy(classifier, recon, test_labels),
            "seconds_per_iteration": seconds_per_iteration(record), "train_seconds": record.train_seconds,
            "samples": _to_uint8(samples[:GRID_IMAGES]), "reconstructions": _to_uint8(recon[:GRID_IMAGES])}


def score_page(records: Sequence[runs.RunRecord], params: Mapping[str, Any], device: torch.device | str = "cpu",
               progress: bool = True) -> dict[str, Any]:
    """The page's whole comparison from its runs (:func:`page_specs` order: LEBMs, then the classifier).

    Returns ``rows`` (one :func:`score_run` per LEBM run, grids kept for the first seed only) and the
    yardsticks measured with the same classifier and sample sizes: ``fid_real`` (``n_fid`` training
    images, the FID of the right distribution), ``mean_image_mse`` (every test image answered with the
    mean training image), ``test_accuracy`` (the classifier on the test images themselves), and the
    ``test_images`` shown beside the reconstructions. The result is JSON-serialisable: a results file
    keeps it as its extras (:func:`export_extras`).
    """
    from tqdm import tqdm

    from ..data import mnist, to_signed_unit

    *lebm_records, classifier_record = records
    classifier = mnist_eval.load_classifier(classifier_record, device)
    test_set = mnist("test")
    x_test, x_train = to_signed_unit(test_set.images), to_signed_unit(mnist("train").images)
    images, labels = x_test[: params["n_test"]], test_set.labels[: params["n_test"]]
    reference = mnist_eval.FIDReference(classifier, x_test)
    first_seed = min(r.spec.seed for r in lebm_records)
    rows = []
    for record in tqdm(lebm_records, desc="scoring runs", disable=not progress):
        row = score_run(record, classifier, reference, images, labels, params, device)
        if record.spec.seed != first_seed:
            row["samples"] = row["reconstructions"] = None
        rows.append(row)
    return {
        "rows": rows, "fid_real": reference.fid(mnist_eval.random_subset(x_train, params["n_fid"], params["seed"])),
        "mean_image_mse": mnist_eval.mean_image_mse(x_train, images), "test_accuracy": mnist_eval.accuracy(classifier, images, labels),
        "classifier_accuracy": classifier_record.info["test_accuracy"], "n_reference": reference.n_reference,
        "test_images": _to_uint8(images[:GRID_IMAGES]), "n_fid": params["n_fid"], "n_test": params["n_test"],
    }


def export_extras(records: Sequence[runs.RunRecord], params: Mapping[str, Any]) -> dict[str, Any]:
    """The small data a results file keeps for the page: :func:`score_page` of its runs, on the CPU."""
    return score_page(records, params, device="cpu")


def by_method(scores: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The rows of :func:`score_page` grouped by method (methods in page order, seeds ascending)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(scores["rows"], key=lambda r: r["seed"]):
        grouped.setdefault(row["method"], []).append(row)
    return {m: grouped[m] for m in dict.fromkeys(r["method"] for r in scores["rows"])}


def summary_rows(scores: Mapping[str, Any]) -> list[list[Any]]:
    """One table row per method: its name, then per metric of :data:`METRICS` the mean over seeds and,
    with several seeds, the range as "mean (min–max)"; a method with a diverged seed shows the outcome."""
    out = []
    for method, rows in by_method(scores).items():
        bad = [r for r in rows if r["fid_prior"] is None]
        if bad:
            out.append([METHOD_NAMES[method], *[f"seed {bad[0]['seed']}: {bad[0]['outcome']}"] * len(METRICS)])
            continue
        cells = []
        for k in METRICS:
            v = np.array([r[k] for r in rows], dtype=float)
            fmt = ".1f" if k.startswith("fid") else ".1%" if k == "recon_accuracy" else ".4f" if k == "recon_mse" else ".3f"
            cells.append(f"{v.mean():{fmt}}" + (f" ({v.min():{fmt}}–{v.max():{fmt}})" if len(v) > 1 else ""))
        out.append([METHOD_NAMES[method], *cells])
    return out


ORDERED_METRICS = {"fid_prior": "FID of prior samples", "recon_mse": "reconstruction MSE"}

ORDERINGS = (("fid_prior", "cd"), ("fid_prior", "sm"), ("recon_mse", "cd"), ("recon_mse", "sm"))
"""The paper's ordering, as comparisons of ED against another method: (metric, other method); lower is better."""


def ordering_claim(scores: Mapping[str, Any], metric: str, other: str) -> Any:
    """The claim that ED's ``metric`` (lower is better) is below ``other``'s at every seed, seed by seed.

    A seed where either run diverged, or a seed one of the two lacks, makes the claim fail: a diverged
    run never makes a comparison hold. Swapping the methods turns a holding claim into a failing one.
    """
    from ..book.claims import Claim

    _checks.choice("metric", metric, ("fid_prior", "recon_mse"))
    _checks.choice("other", other, tuple(m for m in PRIOR_LOSSES if m != "ed"))
    grouped = by_method(scores)
    if "ed" not in grouped or other not in grouped:
        raise ValueError(f"scores must hold rows of ed and {other}, got methods {list(grouped)}")
    ed, theirs = ({r["seed"]: r[metric] for r in grouped[m]} for m in ("ed", other))
    seeds = sorted(set(ed) | set(theirs))
    pairs = [(s, ed.get(s), theirs.get(s)) for s in seeds]
    wins = [a is not None and b is not None and a < b for _, a, b in pairs]
    fmt = ".1f" if metric.startswith("fid") else ".4f"
    shown = "; ".join(f"seed {s}: {'–' if a is None else format(a, fmt)} vs {'–' if b is None else format(b, fmt)}" for s, a, b in pairs)
    return Claim(f"ED-LEBM's {ORDERED_METRICS[metric]} is below {METHOD_NAMES[other]}'s on every seed",
                 f"{shown} ({sum(wins)} of {len(pairs)} seeds)", bool(pairs) and all(wins))


def demonstration_claims(row: Mapping[str, Any], scores: Mapping[str, Any], name_seed: bool = False) -> list[Any]:
    """The claims of the authors' demonstration for one scored run (a row of :func:`score_page`):
    :func:`reconstruction_claim` and :func:`prior_fid_claim` against the page's yardsticks. A diverged
    run fails both, with its outcome as the measurement. ``name_seed`` puts the run's seed in the
    statements (a page with several seeds); otherwise a claim reads the same for every seed, so that
    ``python -m edrepro claims`` counts it across seeds."""
    from ..book.claims import Claim

    name = METHOD_NAMES[row["method"]] + (f" (seed {row['seed']})" if name_seed else "")
    if row["fid_prior"] is None:
        return [Claim(f"{name} reconstructs and samples", row["outcome"], False)]
    return [reconstruction_claim(row["recon_mse"], scores["mean_image_mse"], name=name),
            prior_fid_claim(row["fid_gaussian"], row["fid_prior"], scores["fid_real"], name=name)]


def orderings_text(held: Sequence[Any], missed: Sequence[Any]) -> str:
    """The page's sentence on the paper's orderings: how many hold on every seed (asserted) and which do not."""
    n = len(held) + len(missed)
    text = f"Of the {n} comparisons, {len(held)} {'holds' if len(held) == 1 else 'hold'} on every seed"
    text += " and " + ("is" if len(held) == 1 else "are") + " asserted with the demonstration's claims below" if held else ""
    if not missed:
        return text + "; the stored runs reproduce every one."
    which = "; ".join(c.statement for c in missed)
    return (text + f"; {len(missed)} {'does' if len(missed) == 1 else 'do'} not, so this budget does not reproduce the paper's "
            f"ordering there ({which}): the table after the claims shows what was measured.")


# ----------------------------------------------------------------------------- the page's figures

MARKERS = {"ed": "o", "cd": "s", "sm": "^"}


def comparison_figure(scores: Mapping[str, Any], title: str) -> Any:
    """(a) FID of prior samples against training seconds, one point per run, per method a colour; hollow
    markers: the same generator fed N(0, I) latents; dashed: the FID of real data. (b, …) prior samples
    of each method's first seed."""
    import matplotlib.pyplot as plt

    from ..plotting import show_images

    grouped = by_method(scores)
    fig, axes = plt.subplots(1, 1 + len(grouped), figsize=(4.2 * (1 + len(grouped)), 4.2))
    for k, (method, rows) in enumerate(grouped.items()):
        ok = [r for r in rows if r["fid_prior"] is not None]
        secs = [r["train_seconds"] for r in ok]
        axes[0].scatter(secs, [r["fid_prior"] for r in ok], color=f"C{k}", marker=MARKERS[method], label=f"{METHOD_NAMES[method]}, its prior")
        axes[0].scatter(secs, [r["fid_gaussian"] for r in ok], facecolors="none", edgecolors=f"C{k}", marker=MARKERS[method],
                        label=f"{METHOD_NAMES[method]}'s generator, N(0, I)")
        first = rows[0]
        if first["samples"] is not None:
            show_images(axes[1 + k], from_uint8(first["samples"]), nrow=8, title=f"({chr(98 + k)}) {METHOD_NAMES[method]}, seed {first['seed']}")
        else:
            axes[1 + k].set_axis_off()
            axes[1 + k].set_title(f"({chr(98 + k)}) {METHOD_NAMES[method]}: {first['outcome']}")
    axes[0].axhline(scores["fid_real"], color="grey", linestyle="--", label="real training images")
    axes[0].set(xlabel="training seconds", ylabel="classifier-feature FID (lower is better)", title="(a) FID against training time")
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    return fig


def reconstruction_figure(scores: Mapping[str, Any]) -> Any:
    """(a) The first test images; (b, …) their reconstructions by each method's first seed."""
    import matplotlib.pyplot as plt

    from ..plotting import show_images

    grouped = by_method(scores)
    fig, axes = plt.subplots(1, 1 + len(grouped), figsize=(4.2 * (1 + len(grouped)), 2.6))
    show_images(axes[0], from_uint8(scores["test_images"]), nrow=8, title="(a) test images")
    for k, (method, rows) in enumerate(grouped.items()):
        recon = rows[0]["reconstructions"]
        if recon is None:
            axes[1 + k].set_axis_off()
            axes[1 + k].set_title(f"({chr(98 + k)}) {METHOD_NAMES[method]}: {rows[0]['outcome']}")
        else:
            show_images(axes[1 + k], from_uint8(recon), nrow=8, title=f"({chr(98 + k)}) {METHOD_NAMES[method]}")
    fig.suptitle("Test images and their reconstructions g(z), z from the posterior Langevin sampler")
    return fig


LOSS_LABELS = {"ed": "ED loss", "cd": r"CD loss $\overline{E(z^+)} - \overline{E(z^-)}$", "sm": r"SM loss $\frac{1}{2}|\nabla E|^2 - \Delta E$"}


def losses_figure(records: Sequence[runs.RunRecord], ed_bound: float, window: int = 25) -> Any:
    """(a) Every method's generator loss; then one panel per method with its prior loss (moving averages
    over ``window`` iterations); the ED panel shows its lower bound log(w/M), dashed."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(records), figsize=(4.2 * (1 + len(records)), 3.6))
    for k, record in enumerate(records):
        name, method = METHOD_NAMES[record.spec.method], record.spec.method
        axes[0].plot(moving_average(record.series["loss_g"], window), color=f"C{k}", label=name)
        axes[1 + k].plot(moving_average(record.series["loss_e"], window), color=f"C{k}", label=LOSS_LABELS[method])
        if method == "ed":
            axes[1 + k].axhline(ed_bound, color="grey", linestyle="--", label=r"lower bound $\log(w/M)$")
        axes[1 + k].set(xlabel="iteration", title=f"({chr(98 + k)}) {name} prior loss")
        axes[1 + k].legend(fontsize=8)
    axes[0].set(xlabel="iteration", yscale="log", title="(a) generator loss (sum of squares per image)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Training losses (moving averages over up to {window} iterations)")
    return fig
