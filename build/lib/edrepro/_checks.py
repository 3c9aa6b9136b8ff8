"""Input validation shared by every public function of :mod:`edrepro`.

Every check raises :class:`ValueError` whose message names the argument and the
value received, so that a wrong call is fixed from the message alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


def _show(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}"
    return repr(value)


def positive(name: str, value: float) -> float:
    """Require a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {_show(value)}")
    return float(value)


def non_negative(name: str, value: float) -> float:
    """Require a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {_show(value)}")
    return float(value)


def open_unit(name: str, value: float) -> float:
    """Require a number strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{name} must lie in the open interval (0, 1), got {_show(value)}")
    return float(value)


def unit_interval(name: str, value: float) -> float:
    """Require a number in the closed interval [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must lie in [0, 1], got {_show(value)}")
    return float(value)


def positive_int(name: str, value: int, minimum: int = 1) -> int:
    """Require an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {_show(value)}")
    return value


def batch(name: str, x: Any, dim: int | None = None, finite: bool = True) -> torch.Tensor:
    """Require a floating (B, d) tensor, optionally with d == ``dim`` and finite entries."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, d), got {type(x).__name__}")
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (B, d) with B >= 1, got shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if finite and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return x


def binary_batch(name: str, x: Any) -> torch.Tensor:
    """Require a (B, d) tensor whose entries are all 0 or 1."""
    batch(name, x, finite=True)
    if not ((x == 0) | (x == 1)).all():
        raise ValueError(f"{name} must contain only 0 and 1 entries")
    return x


def choice(name: str, value: Any, options: Iterable[Any]) -> Any:
    """Require ``value`` to be one of ``options``; the message lists them."""
    options = list(options)
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def energy_output(name: str, e: Any, n: int) -> torch.Tensor:
    """Require an energy's output to be a (n,) tensor (a trailing singleton is squeezed)."""
    if not isinstance(e, torch.Tensor):
        raise ValueError(f"{name} must return a torch.Tensor, got {type(e).__name__}")
    if e.ndim == 2 and e.shape[1] == 1:
        e = e[:, 0]
    if e.shape != (n,):
        raise ValueError(f"{name} must map a (B, d) batch to a (B,) tensor; for B={n} it returned shape {tuple(e.shape)}")
    return e
