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

from .. import _checks
from ..book import runs
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


def prior_fid_claim(fid_gaussian: float, fid_prior: float, fid_real: float, name: str = "ED") -> Any:
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
    return Claim(f"the {name}-trained prior lowers its generator's FID (vs N(0, I) latents) by more than the FID of real data",
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
