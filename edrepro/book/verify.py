"""Does the current code still reproduce a stored results file? Retrain the first steps and compare.

``python -m edrepro verify NAME --profile paper`` takes one stored run per (kind, method) of
``results/NAME/PROFILE.json``, trains its recorded spec with the current code for its first
``steps`` steps (rounded up to whole evaluation intervals, so that the same evaluations happen) and
compares every evaluation they share with the stored curve. On the machine kind that made the
results (the same CPU model and torch threads) the numbers must be bitwise equal; on another one
they must agree within :data:`CROSS_MACHINE_RTOL` (different kernels round differently, and the
difference grows with the steps). With ``rekey`` a file that reproduces gets the current code's
identity recorded in its records and provenance; one that does not is left as it is.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import results, runs
from .hardware import machine_conditions

CROSS_MACHINE_RTOL = 1e-3
"""Largest relative difference accepted between a stored and a retrained evaluation on another machine kind."""


@dataclass
class Check:
    """One retrained run compared with its stored curve."""

    label: str
    steps: int
    evaluations: int
    max_relative_difference: float
    bitwise: bool
    same_machine: bool

    @property
    def reproduced(self) -> bool:
        return self.evaluations > 0 and (self.bitwise if self.same_machine else self.max_relative_difference <= CROSS_MACHINE_RTOL)

    def text(self) -> str:
        how = "bitwise equal" if self.bitwise else f"max relative difference {self.max_relative_difference:.2e}"
        where = "same machine kind" if self.same_machine else f"another machine kind, tolerance {CROSS_MACHINE_RTOL:g}"
        return (f"{'reproduced' if self.reproduced else 'NOT reproduced'}: {self.label}, first {self.steps:,} steps, "
                f"{self.evaluations} evaluations, {how} ({where})")


def _truncated(spec: runs.RunSpec, steps: int) -> runs.RunSpec:
    every = spec.settings.get("eval_every") or steps
    budget = min(spec.budget, math.ceil(steps / every) * every)
    return runs.RunSpec(spec.kind, spec.method, spec.dataset, spec.seed, budget, spec.hparams, spec.settings, spec.chapter)


def _compare(stored: runs.RunRecord, fresh: runs.RunRecord) -> tuple[int, float, bool]:
    """(evaluations compared, max relative difference, all bitwise equal) over the shared evaluated steps."""
    at = {int(s): i for i, s in enumerate(stored.curves.get("step", []))}
    names = [k for k in fresh.curves if k not in ("step", "seconds") and k in stored.curves]
    count, worst, bitwise = 0, 0.0, True
    for j, step in enumerate(fresh.curves["step"]):
        if int(step) not in at:
            continue
        for name in names:
            a, b = float(stored.curves[name][at[int(step)]]), float(fresh.curves[name][j])
            if a == b or (math.isnan(a) and math.isnan(b)):
                continue
            bitwise = False
            worst = max(worst, abs(a - b) / max(abs(a), abs(b), 1e-12))
        count += 1
    return count, worst, bitwise


def verify(root: Path, name: str, profile: str = "paper", steps: int = 300, progress: bool = True, echo=print) -> list[Check]:
    """Retrain the first ``steps`` steps of one stored run per (kind, method) and compare (see the module docstring)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    stored = results.load(name, profile, root)
    if stored is None:
        raise ValueError(f"{results.results_path(root, name, profile)} does not exist: there is nothing to verify")
    chosen: dict[tuple[str, str], runs.RunRecord] = {}
    for record in sorted(stored.records, key=lambda r: (r.spec.seed, r.spec.dataset)):
        chosen.setdefault((record.spec.kind, record.spec.method), record)
    here = machine_conditions("cpu")["cpu"]
    checks = []
    with tempfile.TemporaryDirectory(prefix="edrepro-verify-") as folder:
        for record in chosen.values():
            spec = _truncated(record.spec, steps)
            threads = int(record.conditions.get("threads") or 1)
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                fresh = runs.fetch(spec, root=folder, device="cpu", progress=progress, echo=None)
            finally:
                torch.set_num_threads(before)
            count, worst, bitwise = _compare(record, fresh)
            check = Check(record.spec.describe(), spec.budget, count, worst, bitwise, record.conditions.get("cpu") == here)
            echo(check.text(), flush=True)
            checks.append(check)
    return checks


def rekey(root: Path, name: str, profile: str, checks: list[Check], steps: int, command: str) -> Path:
    """Record the current code's identity in ``results/NAME/PROFILE.json`` after :func:`verify` reproduced it."""
    failed = [c for c in checks if not c.reproduced]
    if not checks or failed:
        raise ValueError(f"the current code does not reproduce {name} ({profile}): {failed[0].text() if failed else 'nothing was verified'}; "
                         "the results file is left as it is")
    path = results.results_path(root, name, profile)
    data: dict[str, Any] = json.loads(path.read_text())
    stored = results.load(name, profile, root)
    for raw, record in zip(data["records"], stored.records):
        raw["code"] = {**record.spec.code, "device": "cpu"}
    data["provenance"]["code"] = results.code_by_kind(r.spec for r in stored.records)
    agreement = "bitwise" if all(c.bitwise for c in checks) else f"within a relative {max(c.max_relative_difference for c in checks):.1e}"
    data["provenance"]["rekeyed"] = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "commit": results.git_commit(root), "command": command, "steps": steps,
        "verified": [c.text() for c in checks], "agreement": agreement,
    }
    runs.save_atomic(path, data)
    return path
