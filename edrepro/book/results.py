"""Results kept in the repository: the compact outcome of a chapter's profile, with its provenance.

A long profile (``paper``) is computed once — ``python -m edrepro sweep NAME --profile paper`` — and
exported with ``python -m edrepro export NAME --profile paper`` to ``results/NAME/PROFILE.json``:

- ``provenance``: the commands, the commit of the code that trained the runs, the date, the machine
  (CPU, cores, torch threads, torch version, device, load averages), the sweep's wall-clock time and
  the runs' summed training and CPU seconds;
- ``parameters``: every parameter of the page under that profile (:func:`edrepro.book.pipeline.effective_params`);
- ``records``: each run's :class:`edrepro.book.runs.RunRecord` without its per-step series (evaluation
  curves, status, training seconds, conditions) — no weights, no checkpoints;
- ``extras``: small data the chapter's page plots (e.g. density grids), from the chapter's ``export_extras``.

A page loads the file with :func:`load` and labels what it shows as precomputed, with
:func:`provenance_line`. A results file whose parameters or run keys no longer match the current
code and parameter files is *stale*: :func:`stale_reasons` says why (the test suite fails on it).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import runs

SWEEP_LOG = "sweeps.jsonl"
"""Under the runs cache: one JSON line per ``sweep`` command (what, where, how long)."""

EXTRAS: dict[str, str] = {
    "density_estimation": "edrepro.chapters.density:export_extras",
    "edlebm_mnist": "edrepro.chapters.lebm_eval:export_extras",
}
"""Notebook → the chapter function ``f(records, parameters)`` computing the small data a page shows
beside the records (plot grids, scores of the trained models), from the runs in page order."""


@dataclass
class Results:
    """A loaded results file (see the module docstring)."""

    notebook: str
    profile: str
    provenance: dict[str, Any]
    parameters: dict[str, Any]
    records: list[runs.RunRecord]
    extras: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def results_path(root: Path, name: str, profile: str) -> Path:
    """``results/NAME/PROFILE.json`` in the repository ``root``."""
    return Path(root) / "results" / name / f"{profile}.json"


NUMBER_SOURCES = ("edrepro", "notebooks", "setup.py", "pyproject.toml", "constraints.txt")
"""What can change a stored number: the package, the notebooks (their defaults and parameter files)
and the packaging that picks the versions."""


def source_state(root: Path) -> dict[str, Any]:
    """The state of everything that changes a number: the commit, the files of :data:`NUMBER_SOURCES`
    that differ from it, and a digest of their content (so that an edit during a sweep is seen
    even when the tree was already dirty). ``text`` is the commit, with ``+uncommitted`` when dirty."""
    digest = hashlib.sha256()
    files = sorted(f for folder in NUMBER_SOURCES for f in ([Path(root) / folder] if (Path(root) / folder).is_file()
                   else (Path(root) / folder).rglob("*")) if f.is_file() and f.suffix in (".py", ".md", ".yaml", ".toml", ".txt", ".ipynb")
                   and "__pycache__" not in f.parts)
    for f in files:
        digest.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *NUMBER_SOURCES], cwd=root,
                               capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", []
    changed = [line[3:] for line in dirty]
    return {"commit": commit, "uncommitted": changed, "digest": digest.hexdigest()[:16],
            "text": commit + ("+uncommitted" if changed else "")}


def git_commit(root: Path) -> str:
    """The checked-out commit, with ``+uncommitted`` when anything that changes a number differs from it."""
    return source_state(root)["text"]


def log_sweep(root: Path, names: list[str], profile: str, overrides: Mapping[str, str], command: str,
              summary: runs.SweepSummary, runs_root: str | os.PathLike | None = None,
              start_state: Mapping[str, Any] | None = None) -> None:
    """Append one line describing a finished sweep to the cache's :data:`SWEEP_LOG`: the source state
    when it started (``start_state``, taken before any run trained) and when it ended, whether the
    code changed in between, and the keys of the runs it trained."""
    end = source_state(root)
    start = dict(start_state) if start_state is not None else end
    entry = {
        "names": list(names), "profile": profile, "overrides": dict(overrides), "command": command,
        "commit": start["text"], "start_state": start, "end_state": end,
        "changed_during_sweep": (start["commit"], start["digest"]) != (end["commit"], end["digest"]),
        "trained_keys": [s.key for s in summary.trained],
        "date": time.strftime("%Y-%m-%d %H:%M"), "executor": summary.executor,
        "wall_seconds": round(summary.wall_seconds, 1), "trained": len(summary.trained), "loaded": len(summary.loaded),
        "failed": len(summary.failed), "cpu_seconds": round(summary.cpu_seconds, 1),
    }
    path = runs.root_folder(runs_root) / SWEEP_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as log:
        log.write(json.dumps(entry) + "\n")


def _sweeps_of(keys: set[str], runs_root: str | os.PathLike | None) -> list[dict[str, Any]]:
    """The logged sweeps that trained at least one of the runs ``keys``."""
    path = runs.root_folder(runs_root) / SWEEP_LOG
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in entries if keys & set(e.get("trained_keys", []))]


def _machine(records: list[runs.RunRecord]) -> dict[str, Any]:
    conditions = [r.conditions for r in records if r.conditions]
    if not conditions:
        return {}
    keys = ("host", "cpu", "cores", "threads", "torch", "device")
    machine = {k: sorted({str(c.get(k)) for c in conditions}) for k in keys}
    loads = [c[k] for c in conditions for k in ("load_start", "load_end") if k in c]
    dates = sorted(c["date"] for c in conditions if "date" in c)
    return {**{k: v[0] if len(v) == 1 else v for k, v in machine.items()},
            "load_min": min(loads, default=None), "load_max": max(loads, default=None),
            "trained_from": dates[0] if dates else None, "trained_to": dates[-1] if dates else None}


def export(root: Path, name: str, profile: str, overrides: Mapping[str, str] | None = None,
           runs_root: str | os.PathLike | None = None) -> Path:
    """Write ``results/NAME/PROFILE.json`` from the cached runs of the page (every run must be done)."""
    from .pipeline import effective_params, page_specs

    specs = page_specs(root, name, profile, dict(overrides or {}))
    if not specs:
        raise ValueError(f"notebook {name!r} has no training runs to export")
    records = [runs.done(s, runs_root) for s in specs]
    missing = [s for s, r in zip(specs, records) if r is None]
    if missing:
        raise ValueError(f"{len(missing)} of the {len(specs)} runs of {name} ({profile}) are not in the cache, e.g. "
                         f"{missing[0].describe()}; compute them first: python -m edrepro sweep {name} --profile {profile}")
    sweeps = _sweeps_of({s.key for s in specs}, runs_root)
    moved = [s for s in sweeps if s.get("changed_during_sweep")]
    if moved:
        a, b = moved[0]["start_state"], moved[0]["end_state"]
        raise ValueError(f"the code changed while `{moved[0]['command']}` ran ({a['text']} → {b['text']}): its runs may have been "
                         f"trained by either, so no results file can name one commit. Train them again on a fixed "
                         f"checkout: python -m edrepro sweep {name} --profile {profile} --fresh")
    flags = "".join(f" -p {k} {v}" for k, v in (overrides or {}).items())
    provenance = {
        "commands": [f"python -m edrepro sweep {name} --profile {profile}{flags}", f"python -m edrepro export {name} --profile {profile}{flags}"],
        "trained_by_commit": sorted({s["commit"] for s in sweeps}) or ["not recorded (runs computed by the page itself)"],
        "code": code_by_kind(specs),
        "exported_at_commit": git_commit(root),
        "exported": time.strftime("%Y-%m-%d %H:%M"),
        "machine": _machine(records),
        "sweep_wall_seconds": round(sum(s["wall_seconds"] for s in sweeps), 1) if sweeps else None,
        "sweeps": sweeps,
        "training_seconds": round(sum(r.train_seconds for r in records), 1),
        "cpu_seconds": round(sum(r.cpu_seconds for r in records), 1),
    }
    extras = {}
    parameters = effective_params(root, name, profile, dict(overrides or {}))
    if name in EXTRAS:
        module, _, function = EXTRAS[name].partition(":")
        extras = getattr(importlib.import_module(module), function)(records, parameters)
    payload = {
        "notebook": name, "profile": profile, "provenance": provenance,
        "parameters": parameters,
        "records": [{**r.to_dict(), "series": {}} for r in records], "extras": extras,
    }
    path = results_path(root, name, profile)
    runs.save_atomic(path, payload)
    return path


def load(name: str, profile: str = "paper", root: Path | None = None) -> Results | None:
    """The results file of notebook ``name`` and ``profile``, or None when this checkout has none."""
    if root is None:
        from .pipeline import find_root

        try:
            root = find_root()
        except FileNotFoundError:
            return None
    path = results_path(root, name, profile)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return Results(
            data["notebook"], data["profile"], data["provenance"], data["parameters"],
            [runs.RunRecord.from_dict(r) for r in data["records"]], data.get("extras", {}), path,
        )
    except (ValueError, KeyError, TypeError) as error:
        raise runs.DamagedRunError(
            f"{path} is damaged and cannot be read ({type(error).__name__}: {error}). It is a file kept in the repository: "
            f"restore it, in {Path(root).resolve()}, with `git checkout -- results/{name}/{profile}.json`. Only if the committed copy is "
            f"damaged too, compute the runs and export it again (hours at the paper profile): python -m edrepro sweep {name} --profile {profile}, "
            f"then python -m edrepro export {name} --profile {profile}") from None


def provenance_line(results: Results) -> str:
    """One line saying where precomputed results come from: command, commit, date, machine, time."""
    p, m = results.provenance, results.provenance.get("machine", {})
    wall = p.get("sweep_wall_seconds")
    time_text = f"{wall / 3600:.2f} h wall-clock" if wall else "wall-clock not recorded"
    return (
        f"Precomputed by `{p['commands'][0]}` then `{p['commands'][1]}` at commit {', '.join(p['trained_by_commit'])} "
        f"(exported {p['exported']}); machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('threads', '?')} torch "
        f"thread(s) per run, torch {m.get('torch', '?')}, device {m.get('device', '?')}, 1-minute load {m.get('load_min')}–{m.get('load_max')}; "
        f"{time_text}, {p['training_seconds'] / 3600:.2f} h of training in {len(results.records)} runs."
        + _rekey_text(p) + _code_change_text(results)
    )


def code_by_kind(specs: Iterable[runs.RunSpec]) -> dict[str, dict[str, Any]]:
    """Run kind → the current code identity of its runs (:attr:`edrepro.book.runs.RunSpec.code`), for a provenance."""
    return dict(sorted({s.kind: s.code for s in specs}.items()))


def _rekey_text(provenance: Mapping[str, Any]) -> str:
    rekey = provenance.get("rekeyed")
    if not rekey:
        return ""
    return (f" Its code identity was recorded on {rekey['date']} at commit {rekey['commit']}, after `{rekey['command']}` "
            f"retrained the first {rekey['steps']} steps of {len(rekey['verified'])} runs with that code and "
            f"reproduced their first evaluations ({rekey['agreement']}).")


def code_changes(results: Results) -> dict[str, list[str]]:
    """Run kind → what differs between the code that made the stored runs and the current code
    (modules, ``torch``; ``["code not recorded"]`` for a file written before runs carried their code)."""
    from .identity import changed_modules

    changes: dict[str, list[str]] = {}
    for record in results.records:
        kind, current = record.spec.kind, record.spec.code
        diff = changed_modules(record.code, current) if record.code else ["code not recorded"]
        if diff:
            changes[kind] = sorted(set(changes.get(kind, [])) | set(diff))
    return changes


def _code_change_text(results: Results) -> str:
    changes = code_changes(results)
    if not changes:
        return " The current code is the code that made them."
    parts = "; ".join(f"{kind} runs: {', '.join(diff)}" for kind, diff in sorted(changes.items()))
    return (f" **The current code differs from the code that made these results** ({parts}); "
            f"`python -m edrepro verify {results.notebook} --profile {results.profile}` checks whether it still reproduces them.")


def stale_reasons(root: Path, name: str, profile: str) -> list[str]:
    """Why ``results/NAME/PROFILE.json`` no longer matches the code and parameter files ([] = current)."""
    from .pipeline import effective_params, page_specs

    results = load(name, profile, root)
    if results is None:
        return [f"{results_path(root, name, profile)} does not exist"]
    reasons = []
    current = effective_params(root, name, profile)
    if results.parameters != current:
        changed = sorted(k for k in set(current) | set(results.parameters) if current.get(k) != results.parameters.get(k))
        reasons.append(f"parameters differ from notebooks/params/{name}/{profile}.yaml and the notebook's defaults: {changed}")
    keys = {s.content_key for s in page_specs(root, name, profile)}
    recorded = {r.spec.content_key for r in results.records}
    if keys != recorded:
        reasons.append(f"{len(keys ^ recorded)} run spec(s) differ from what the page would train now")
    return reasons
