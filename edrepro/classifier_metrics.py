"""Metrics of a probabilistic classifier: accuracy, calibration, and out-of-distribution detection.

- **Expected calibration error** (Naeini et al. 2015; Guo et al. 2017): sort the predictions into
  ``n_bins`` equal-width bins of confidence c = max_y p(y | x); with B_b the points of bin b,

      ECE = Σ_b (|B_b| / N) · | acc(B_b) − conf(B_b) |,

  acc the fraction correct and conf the mean confidence of the bin. 0 for a calibrated classifier.
- **AUROC** of a score that should be higher in-distribution: the probability that a random
  in-distribution point scores above a random out-of-distribution one, ties counting one half
  (the Mann–Whitney U statistic divided by n_in · n_out). 0.5 is chance, 1 perfect separation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import _checks


def _probabilities(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(probs, torch.Tensor) or probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] < 2:
        raise ValueError(f"probs must be a non-empty (N, K) tensor with K >= 2, got {getattr(probs, 'shape', type(probs).__name__)}")
    probs = probs.detach().double()
    if not torch.isfinite(probs).all() or (probs < 0).any() or not torch.allclose(probs.sum(1), torch.ones(len(probs), dtype=probs.dtype), atol=1e-6):
        raise ValueError("probs must hold probabilities: finite, non-negative rows summing to 1")
    if not isinstance(labels, torch.Tensor) or labels.shape != (probs.shape[0],):
        raise ValueError(f"labels must be a ({probs.shape[0]},) tensor, got {getattr(labels, 'shape', type(labels).__name__)}")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must lie in [0, {probs.shape[1]}), got range [{int(labels.min())}, {int(labels.max())}]")
    return probs, labels.long()


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose most probable class is the label."""
    probs, labels = _probabilities(probs, labels)
    return float((probs.argmax(1) == labels).double().mean())


@dataclass(frozen=True)
class Reliability:
    """Per-bin calibration: bin edges, points per bin, accuracy and mean confidence (NaN in empty bins)."""

    edges: list[float]
    counts: list[int]
    accuracy: list[float]
    confidence: list[float]

    @property
    def ece(self) -> float:
        n = sum(self.counts)
        return sum(c / n * abs(a - f) for c, a, f in zip(self.counts, self.accuracy, self.confidence) if c)


def reliability(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> Reliability:
    """The reliability diagram's numbers: ``n_bins`` equal-width confidence bins on [0, 1] (a confidence on an
    edge goes to the bin above it, 1 to the last bin)."""
    probs, labels = _probabilities(probs, labels)
    n_bins = _checks.positive_int("n_bins", n_bins)
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).double()
    which = (confidence * n_bins).floor().long().clamp(max=n_bins - 1)
    counts, acc, conf = [], [], []
    for b in range(n_bins):
        inside = which == b
        k = int(inside.sum())
        counts.append(k)
        acc.append(float(correct[inside].mean()) if k else float("nan"))
        conf.append(float(confidence[inside].mean()) if k else float("nan"))
    return Reliability([b / n_bins for b in range(n_bins + 1)], counts, acc, conf)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE = Σ_b (|B_b|/N)·|acc(B_b) − conf(B_b)| over ``n_bins`` equal-width confidence bins (Guo et al. 2017)."""
    return reliability(probs, labels, n_bins).ece


def auroc(scores_in: torch.Tensor, scores_out: torch.Tensor) -> float:
    """P(s_in > s_out) + ½ P(s_in = s_out) for independent draws of the two score sets (Mann–Whitney U / (n_in·n_out)).

    Computed from the ranks of the pooled scores (average ranks for ties), in float64.
    """
    for name, s in (("scores_in", scores_in), ("scores_out", scores_out)):
        if not isinstance(s, torch.Tensor) or s.ndim != 1 or s.numel() == 0:
            raise ValueError(f"{name} must be a non-empty 1-D tensor, got {getattr(s, 'shape', type(s).__name__)}")
        if not torch.isfinite(s).all():
            raise ValueError(f"{name} must be finite")
    a, b = scores_in.detach().double().cpu(), scores_out.detach().double().cpu()
    pooled = torch.cat([a, b])
    order = torch.argsort(pooled, stable=True)
    sorted_values = pooled[order]
    ranks = torch.empty_like(pooled)
    ranks[order] = torch.arange(1, len(pooled) + 1, dtype=torch.float64)
    # average ranks within runs of equal values
    unique, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks[order] = mean_rank[inverse]
    n_in, n_out = len(a), len(b)
    u = float(ranks[:n_in].sum()) - n_in * (n_in + 1) / 2
    return u / (n_in * n_out)
