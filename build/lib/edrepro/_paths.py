"""Where the book's files are: a checkout of the repository, or the copies the installed package carries.

A checkout holds ``_config.yml``, ``book/``, ``notebooks/`` (chapter sources and their parameter
files ``notebooks/params/NAME/PROFILE.yaml``) and ``results/`` (precomputed results). A wheel of
``edrepro`` carries the files a notebook needs at run time — the chapter sources, their parameter
files, the precomputed results and the table of contents — as package data under
``edrepro/bundled/``, laid out as in the checkout (``pyproject.toml`` maps those folders into the
package, so the checkout's files are the only copy). Files a run *writes* (``runs/``, ``figures/``,
``_build/``) go to the checkout, or to the working directory when there is none (Colab).
"""

from __future__ import annotations

from pathlib import Path

BUNDLE = Path(__file__).resolve().parent / "bundled"
"""The package's copy of the checkout's ``notebooks/``, ``results/`` and ``book/_toc.yml`` (wheel installs only)."""


def _is_checkout(folder: Path) -> bool:
    return (folder / "_config.yml").is_file() and (folder / "notebooks").is_dir()


def checkout_root(start: str | Path | None = None) -> Path | None:
    """The repository checkout: the nearest folder above ``start`` (default: the working directory),
    then above this package, holding ``_config.yml`` and ``notebooks/``; None when there is none."""
    for base in (Path(start or Path.cwd()).resolve(), Path(__file__).resolve().parent):
        for folder in (base, *base.parents):
            if _is_checkout(folder):
                return folder
    return None


def source_root(start: str | Path | None = None) -> Path:
    """Where the book's sources are read from: the checkout, else the installed package's bundle."""
    root = checkout_root(start)
    if root is not None:
        return root
    if (BUNDLE / "notebooks").is_dir():
        return BUNDLE
    raise FileNotFoundError(
        "found neither a checkout of the edrepro repository (a folder with _config.yml and notebooks/) "
        f"nor the notebooks' files in the installed package ({BUNDLE}); run from a checkout, or install "
        "edrepro from a wheel or from git (an editable install needs its checkout)"
    )


def is_bundle(root: str | Path) -> bool:
    """Whether ``root`` is the installed package's bundle (read-only) rather than a checkout."""
    return Path(root).resolve() == BUNDLE


def work_root(root: str | Path) -> Path:
    """Where files are written for sources read from ``root``: the checkout itself, or the working directory."""
    return Path.cwd() if is_bundle(root) else Path(root)
