"""One plotting style for the whole book, and the figures every chapter draws.

Figures are saved by :func:`save_figure` as ``figures/NAME.png`` and ``.pdf``; the
folder is ``$EDREPRO_FIGURES`` when set, else ``figures/`` under the working
directory (the repository root when run through ``python -m edrepro``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

from . import _checks, metrics

PALETTE = "colorblind"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def set_style() -> None:
    """Apply the book's matplotlib/seaborn style (called on import of this module)."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "figure.constrained_layout.use": True,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "legend.frameon": False,
            "image.cmap": "viridis",
        }
    )


def figures_dir() -> Path:
    """Folder where :func:`save_figure` writes: ``$EDREPRO_FIGURES`` or ``./figures``."""
    return Path(os.environ.get("EDREPRO_FIGURES", "figures"))


def save_figure(fig: plt.Figure, name: str, folder: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Save ``fig`` as ``NAME.png`` and ``NAME.pdf`` and return both paths.

    ``name`` is a plain file stem such as ``intro_mixture`` (letters, digits, ``_``, ``-``, ``.``).
    """
    if not isinstance(fig, plt.Figure):
        raise ValueError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith((".png", ".pdf")):
        raise ValueError(f"name must be a file stem like 'intro_mixture' (no folder, no extension), got {name!r}")
    out = Path(folder) if folder is not None else figures_dir()
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / f"{name}.png", out / f"{name}.pdf")
    for path in paths:
        fig.savefig(path)
    return paths


def grid_density(
    energy: Callable[[torch.Tensor], torch.Tensor], bounds: tuple[float, float] = (-4.0, 4.0), n: int = 100
) -> np.ndarray:
    """exp(−E) on an n×n grid over the square ``bounds``, normalised to sum to 1; rows run along y.

    Grid normalisation, p_ij = exp(−E(x_ij)) / Σ_kl exp(−E(x_kl)), is what the authors plot;
    it needs no estimate of the partition function (see :func:`edrepro.metrics.grid_log_density`).
    """
    _, log_density = metrics.grid_log_density(energy, bounds, n)
    p = torch.softmax(log_density.reshape(-1), dim=0).reshape(n, n)
    return p.T.numpy()  # grid_log_density is indexed [i_x1, i_x2]; imshow wants rows = x2


def density_heatmap(
    ax: plt.Axes,
    energy: Callable[[torch.Tensor], torch.Tensor] | None = None,
    bounds: tuple[float, float] = (-4.0, 4.0),
    n: int = 100,
    title: str | None = None,
    density: np.ndarray | None = None,
) -> plt.Axes:
    """Draw a grid-normalised density heatmap of ``energy`` (or a precomputed ``density``)."""
    if (energy is None) == (density is None):
        raise ValueError("give exactly one of energy and density")
    p = grid_density(energy, bounds, n) if density is None else np.asarray(density)
    if p.ndim != 2:
        raise ValueError(f"density must be a 2-D array, got shape {p.shape}")
    lo, hi = bounds
    ax.imshow(p, origin="lower", extent=(lo, hi, lo, hi), cmap="viridis", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if title:
        ax.set_title(title)
    return ax


def plot_curves(
    ax: plt.Axes,
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    styles: Mapping[str, Mapping] | None = None,
    title: str | None = None,
) -> plt.Axes:
    """Plot named (x, y) curves on one axis with labels and a legend.

    ``styles`` maps a curve's name to extra keyword arguments for ``ax.plot`` (e.g. a dashed line).
    """
    if not curves:
        raise ValueError("curves must hold at least one (x, y) pair")
    for label, (x, y) in curves.items():
        if len(x) != len(y):
            raise ValueError(f"curve {label!r} has {len(x)} x values but {len(y)} y values")
        ax.plot(x, y, label=label, **(styles or {}).get(label, {}))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    return ax


def image_grid(images: torch.Tensor | np.ndarray, nrow: int = 8, padding: int = 2, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Tile a batch of images (N, H, W) or (N, 1, H, W) into one (rows·H, nrow·W) array in [0, 1].

    A small replacement for torchvision's ``make_grid`` (torchvision is not available on
    CPU-only torch builds here). Pixels are mapped from ``value_range`` to [0, 1].
    """
    arr = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, dtype=np.float32)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3 or len(arr) == 0:
        raise ValueError(f"images must have shape (N, H, W) or (N, 1, H, W) with N >= 1, got {arr.shape}")
    _checks.positive_int("nrow", nrow)
    lo, hi = value_range
    if not lo < hi:
        raise ValueError(f"value_range must satisfy lo < hi, got {value_range!r}")
    arr = np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    n, h, w = arr.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    out = np.ones((rows * (h + padding) + padding, cols * (w + padding) + padding), dtype=np.float32)
    for k in range(n):
        r, c = divmod(k, cols)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        out[top : top + h, left : left + w] = arr[k]
    return out


def show_images(ax: plt.Axes, images: torch.Tensor | np.ndarray, nrow: int = 8, title: str | None = None, value_range: tuple[float, float] = (-1.0, 1.0)) -> plt.Axes:
    """Show :func:`image_grid` of ``images`` on ``ax`` in grey, without ticks."""
    ax.imshow(image_grid(images, nrow=nrow, value_range=value_range), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


set_style()
