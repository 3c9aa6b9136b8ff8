"""Evaluating MNIST generators: a small classifier's features, a Fréchet distance on them, reconstruction MSE.

The Fréchet Inception Distance (FID, Heusel et al. 2017) compares the Gaussians fitted to
Inception-v3 features of real and generated images. Inception is an ImageNet network and
cannot run here (no torchvision, no weights), so this module uses the same formula on the
128-dimensional penultimate layer of a small MNIST classifier trained once and cached on disk.
The numbers are **not** comparable with Inception FIDs published for MNIST; they rank models
evaluated with the same classifier and the same sample sizes.

Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂):

    |μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2},

computed in float64 from two symmetric eigendecompositions (Σ₁^{1/2} Σ₂ Σ₁^{1/2} is
symmetric positive semi-definite, and has the same eigenvalues as Σ₁Σ₂), with eigenvalues
that rounding makes slightly negative set to 0.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm  # plain text bars: notebooks here run without ipywidgets

from .. import _checks
from ..book import runs

_ARCH = "cnn-16-32-128-v1"  # bump when the classifier's architecture or training changes


class MNISTClassifier(nn.Module):
    """Conv(1→16, 5×5) → ReLU → MaxPool 2 → Conv(16→32, 5×5) → ReLU → MaxPool 2 → FC 512→128 → ReLU → FC 128→10.

    Input: (B, 1, 28, 28) images in [−1, 1]. ``features(x)`` is the 128-dimensional
    penultimate layer (after its ReLU), the space in which the Fréchet distance is taken.
    """

    n_features = 128

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5)
        self.conv2 = nn.Conv2d(16, 32, 5)
        self.fc1 = nn.Linear(32 * 4 * 4, self.n_features)
        self.fc2 = nn.Linear(self.n_features, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


@dataclass(frozen=True)
class ClassifierSettings:
    """How the feature classifier is trained: Adam(lr), cross-entropy, on the first ``n_train`` training images (None: all 60 000)."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    n_train: int | None = None

    def describe(self) -> str:
        n = "60 000" if self.n_train is None else f"the first {self.n_train}"
        return (
            f"CNN (conv 16 and 32 channels, 5×5, max-pooling; FC 512→128→10), {self.epochs} epoch{'s' if self.epochs != 1 else ''} "
            f"of Adam (lr {self.lr}, batch {self.batch_size}, seed {self.seed}) on {n} training images"
        )


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 2000) -> float:
    """Fraction of ``images`` ((N, 1, 28, 28) in [−1, 1]) classified as ``labels``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    for k in range(0, len(images), batch_size):
        pred = model(images[k : k + batch_size].to(device)).argmax(1).cpu()
        correct += int((pred == labels[k : k + batch_size]).sum())
    model.train(was_training)
    return correct / len(images)


def train_classifier(
    train_images: torch.Tensor, train_labels: torch.Tensor, settings: ClassifierSettings = ClassifierSettings(),
    device: torch.device | str = "cpu", progress: bool = True,
) -> tuple[MNISTClassifier, float]:
    """Train :class:`MNISTClassifier` with ``settings``; returns (model in eval mode, training seconds)."""
    _checks.positive_int("epochs", settings.epochs)
    _checks.positive_int("batch_size", settings.batch_size)
    _checks.positive("lr", settings.lr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = MNISTClassifier()
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    order = torch.Generator().manual_seed(settings.seed)
    n = len(train_images)
    steps = math.ceil(n / settings.batch_size)
    start = time.perf_counter()
    with tqdm(total=settings.epochs * steps, desc="mnist classifier", mininterval=2.0, disable=not progress, leave=False) as bar:
        for _ in range(settings.epochs):
            perm = torch.randperm(n, generator=order)
            for i in range(steps):
                idx = perm[i * settings.batch_size : (i + 1) * settings.batch_size]
                loss = F.cross_entropy(model(train_images[idx].to(device)), train_labels[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update(1)
    return model.eval(), time.perf_counter() - start


def classifier_spec(settings: ClassifierSettings = ClassifierSettings()) -> runs.RunSpec:
    """The run that trains the feature classifier with ``settings`` (budget = epochs)."""
    if not isinstance(settings, ClassifierSettings):
        raise ValueError(f"settings must be ClassifierSettings, got {type(settings).__name__}")
    if settings.n_train is not None:
        _checks.positive_int("n_train", settings.n_train)
    hp = {"batch_size": settings.batch_size, "lr": settings.lr, "n_train": settings.n_train}
    return runs.RunSpec("classifier", _ARCH, "mnist", settings.seed, settings.epochs, hp, {}, "edlebm_mnist", None)


def train_spec(spec: runs.RunSpec, checkpoint: Any = None, device: torch.device | str = "cpu", progress: bool = True) -> runs.Outcome:
    """Train a ``classifier`` run (the trainer :mod:`edrepro.book.runs` calls): the model and its test accuracy.

    Three epochs take seconds to a minute, so the run is not checkpointed: an interrupted one restarts.
    """
    from ..data import mnist, to_signed_unit
    from ..book.train import resolve_device

    device = resolve_device(device)
    settings = ClassifierSettings(epochs=spec.budget, seed=spec.seed, **spec.hparams)
    train, test = mnist("train"), mnist("test")
    n = len(train) if settings.n_train is None else settings.n_train
    model, seconds = train_classifier(to_signed_unit(train.images[:n]), train.labels[:n], settings, device, progress)
    acc = accuracy(model, to_signed_unit(test.images), test.labels)
    return runs.Outcome(
        curves={"step": [spec.budget], "seconds": [seconds], "test_accuracy": [acc]}, series={}, steps=spec.budget,
        seconds=seconds, models={"model": model}, info={"test_accuracy": acc},
    )


def load_classifier(record: runs.RunRecord, device: torch.device | str = "cpu") -> MNISTClassifier:
    """The trained feature classifier of a ``classifier`` run, in eval mode."""
    if not isinstance(record, runs.RunRecord) or record.spec.kind != "classifier":
        raise ValueError(f"record must be the RunRecord of a classifier run, got {record!r:.80}")
    model = MNISTClassifier()
    model.load_state_dict(record.state()["model"])
    return model.to(device).eval()


@torch.no_grad()
def features(model: MNISTClassifier, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Penultimate-layer features (N, 128), float64 on the CPU, of images (N, 1, 28, 28) in [−1, 1]."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1:] != (1, 28, 28):
        raise ValueError(f"images must be a tensor of shape (N, 1, 28, 28), got {getattr(images, 'shape', type(images))}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = torch.cat([model.features(images[k : k + batch_size].to(device).float()).double().cpu() for k in range(0, len(images), batch_size)])
    model.train(was_training)
    return out


def gaussian_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, covariance with the N − 1 normaliser) of (N, d) features, in float64."""
    feats = _checks.batch("feats", torch.as_tensor(feats).double())
    if len(feats) < 2:
        raise ValueError(f"feats needs at least 2 rows to estimate a covariance, got shape {tuple(feats.shape)}")
    mu = feats.mean(0)
    centred = feats - mu
    return mu, centred.T @ centred / (len(feats) - 1)


def _sqrt_psd(sym: torch.Tensor) -> torch.Tensor:
    ev, vec = torch.linalg.eigh(sym)
    return (vec * ev.clamp(min=0).sqrt()) @ vec.T


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """|μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2} in float64 (clipped at 0)."""
    mu1, mu2 = torch.as_tensor(mu1).double(), torch.as_tensor(mu2).double()
    cov1, cov2 = torch.as_tensor(cov1).double(), torch.as_tensor(cov2).double()
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(f"need means of shape (d,) and covariances (d, d); got {tuple(mu1.shape)}, {tuple(cov1.shape)}, {tuple(mu2.shape)}, {tuple(cov2.shape)}")
    for name, c in (("cov1", cov1), ("cov2", cov2)):
        if not torch.isfinite(c).all() or not torch.allclose(c, c.T, rtol=1e-6, atol=1e-9 * float(c.abs().max().clamp(min=1))):
            raise ValueError(f"{name} must be a finite symmetric matrix")
    s1 = _sqrt_psd((cov1 + cov1.T) / 2)
    middle = s1 @ cov2 @ s1
    ev = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0)
    value = float(((mu1 - mu2) ** 2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * ev.sqrt().sum())
    return max(value, 0.0)


def fid_from_features(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets."""
    return frechet_distance(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


class FIDReference:
    """Feature statistics of a reference image set (e.g. the 10 000 test images), computed once.

    ``fid(images)`` is the classifier-feature Fréchet distance of ``images`` to the reference.
    """

    def __init__(self, model: MNISTClassifier, reference_images: torch.Tensor) -> None:
        self.model = model
        self.n_reference = len(reference_images)
        self.mu, self.cov = gaussian_stats(features(model, reference_images))

    def fid(self, images: torch.Tensor) -> float:
        return frechet_distance(*gaussian_stats(features(self.model, images)), self.mu, self.cov)


def reconstruction_mse(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean squared error per pixel with pixels on the [0, 1] scale, for images given in [−1, 1].

    (On the model's [−1, 1] scale the value is 4 times larger.)
    """
    if not isinstance(x, torch.Tensor) or not isinstance(x_hat, torch.Tensor) or x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat must be tensors of the same shape, got {getattr(x, 'shape', x)} and {getattr(x_hat, 'shape', x_hat)}")
    return float((((x.double() - x_hat.double()) / 2) ** 2).mean())



# ----------------------------------------------------------------------------- the chapter's evaluation helpers


def mean_image_mse(train_images: torch.Tensor, test_images: torch.Tensor) -> float:
    """The reconstruction MSE of the trivial model that answers every test image with the mean training image.

    (1/N) Σ_i mean_pixels ((x_i − x̄)/2)² for images in [−1, 1] (pixels on the [0, 1] scale, as
    :func:`reconstruction_mse`): the yardstick a reconstruction must beat to carry any information
    about the particular image.
    """
    for name, images in (("train_images", train_images), ("test_images", test_images)):
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1:] != (1, 28, 28) or len(images) == 0:
            raise ValueError(f"{name} must be a non-empty tensor of shape (N, 1, 28, 28), got {getattr(images, 'shape', type(images))}")
    mean = train_images.double().mean(0, keepdim=True)
    return reconstruction_mse(test_images, mean.expand_as(test_images).to(test_images.dtype))


def random_subset(images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` distinct images drawn at random (fixed by ``seed``) from ``images``."""
    if not isinstance(images, torch.Tensor) or images.ndim < 1:
        raise ValueError(f"images must be a tensor with a batch dimension, got {type(images).__name__}")
    n = _checks.positive_int("n", n)
    if n > len(images):
        raise ValueError(f"n must be at most the number of images ({len(images)}), got {n}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]]


def classifier_line(record: runs.RunRecord) -> str:
    """One line on the feature classifier's run: how it was trained, its test accuracy, cached or trained."""
    if not isinstance(record, runs.RunRecord) or record.spec.kind != "classifier":
        raise ValueError(f"record must be the RunRecord of a classifier run, got {record!r:.80}")
    s = record.spec
    settings = ClassifierSettings(epochs=s.budget, seed=s.seed, **s.hparams)
    how = "loaded from the cache" if record.cached else "trained"
    return (f"{settings.describe()}: test accuracy {100 * record.info['test_accuracy']:.2f} % "
            f"({how}; {record.train_seconds:.0f} s of training)")


CLASSIFIER_ACCURACY = 0.98
"""The test accuracy the feature classifier must reach for its features to be trusted (:func:`classifier_check`)."""


def classifier_check(accuracy: float, threshold: float = CLASSIFIER_ACCURACY) -> Any:
    """The instrument check that the FID's feature classifier reads the test digits reliably: its
    test ``accuracy`` is at least ``threshold``. A check of the measuring instrument, not a claim
    about the models it measures."""
    from ..book.claims import InstrumentCheck

    for name, value in (("accuracy", accuracy), ("threshold", threshold)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    return InstrumentCheck(f"the feature classifier reads ≥ {100 * threshold:g} % of the test digits",
                           f"{100 * accuracy:.2f} %", accuracy >= threshold)
