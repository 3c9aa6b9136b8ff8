"""Training runs as one layer: spec, key, record, cache folder, lock, checkpoint, executors.

A **run** trains one model: one chapter's method on one data set with one seed, its
hyperparameters and its budget. Every chapter describes the runs its page needs as
:class:`RunSpec` values and gets back :class:`RunRecord` values; how a run is trained is the
chapter's *trainer* (registered in :data:`TRAINERS`), everything else lives here:

- **the key**: a hash of everything that changes the result (kind, method, data set, seed,
  budget, hyperparameters, settings, :data:`FORMAT`); two chapters asking for the same run share it;
- **the cache**: ``ROOT/KIND/METHOD-DATASET-seedSEED-KEY/`` (``ROOT`` = ``runs`` or
  ``$EDREPRO_RUNS``) holding ``record.json`` (the record; written last, so its presence means
  the run is done), ``result.pt`` (the trained weights) and, while training, ``checkpoint.pt``;
- **the lock**: a file lock per run folder, so that two processes asking for the same run never
  train it twice: the second waits, then loads;
- **atomic saves**: every file is written under a temporary name unique to the process and
  renamed into place, so an interruption never leaves a half-written file;
- **damaged files**: a truncated, empty or unreadable checkpoint or record raises
  :class:`DamagedRunError` naming the file and how to retrain the run — never a bare
  ``EOFError``, never a silent retrain;
- **executors**: :func:`fetch` computes a run in this process; :func:`sweep` computes many on
  local worker processes or on a running Dask distributed cluster (results come back to this
  process, which writes the cache, so workers need no shared disk). A worker that dies
  mid-run has its run retried elsewhere, resuming from the checkpoint when the disk is shared.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import io
import json
import logging
import math
import os
import platform
import resource
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import _checks
from . import identity
from .hardware import machine_conditions, resolve_device, retain_freed_memory

FORMAT = 3
"""Version of the cache layout and of the meaning of a run; bump it to retrain every run."""

ACCEPT_OTHER_CODE_ENV = "EDREPRO_ACCEPT_OTHER_CODE"
"""Set to 1 (or pass ``--accept-other-code`` to ``run``/``sweep``/``book``) to use cached runs made by
other code or on another device type, each announced with the modules that changed."""

TRAINERS: dict[str, str] = {
    "density": "edrepro.chapters.density:train_spec",
    "ising": "edrepro.chapters.discrete:train_ising_spec",
    "rbm": "edrepro.chapters.discrete:train_rbm_spec",
    "lebm": "edrepro.chapters.lebm:train_spec",
    "classifier": "edrepro.chapters.mnist_eval:train_spec",
    "jem": "edrepro.chapters.jem_runs:train_spec",
}
"""Run kind → ``module:function`` that trains a :class:`RunSpec` of that kind (see :data:`Trainer`)."""

STATUSES = ("finished", "diverged", "interrupted")
RECORD, RESULT, CHECKPOINT, LOCK = "record.json", "result.pt", "checkpoint.pt", ".lock"


class DamagedRunError(RuntimeError):
    """A run's checkpoint or record cannot be read (truncated, empty or corrupt)."""


class RunFailed(RuntimeError):
    """A run raised while training; the message names the run and the error."""


# ----------------------------------------------------------------------------- spec


def _number_form(value: Any) -> Any:
    """``value`` with every integral float written as an int, so that ``t: 1`` and ``t: 1.0`` hash alike."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_number_form(v) for v in value]
    if isinstance(value, dict):
        return {k: _number_form(v) for k, v in value.items()}
    return value


def _canonical(name: str, value: Any) -> Any:
    """``value`` as plain JSON data (dict keys sorted by json.dumps later), or ValueError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name} must hold finite numbers, got {value!r}")
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(name, v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _canonical(name, v) for k, v in value.items()}
    raise ValueError(f"{name} must hold only numbers, strings, booleans, None, lists and dicts, got {type(value).__name__}")


@dataclass(frozen=True, eq=False)
class RunSpec:
    """What one run trains: its ``kind`` (which trainer), ``method``, ``dataset``, ``seed``,
    ``budget`` (training steps; epochs for an LEBM), the method's ``hparams`` and every other
    ``settings`` that change the result (batch size, learning rate, EMA, evaluation, ...).

    ``chapter`` names the page that asked for it and ``checkpoint_every`` how often the
    trainer checkpoints; neither is part of :attr:`key`, so chapters share identical runs.
    The key is :attr:`content_key` (the spec, numbers in canonical form) joined to the digest of
    :attr:`code` (the package modules that train and evaluate a run of this kind, and the torch
    version: :mod:`edrepro.book.identity`). Two specs are equal when their keys are.
    """

    kind: str
    method: str
    dataset: str
    seed: int
    budget: int
    hparams: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    chapter: str = ""
    checkpoint_every: int | None = None

    def __post_init__(self) -> None:
        _checks.choice("kind", self.kind, TRAINERS)
        for name in ("method", "dataset", "chapter"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        _checks.positive_int("seed", self.seed, minimum=0)
        _checks.positive_int("budget", self.budget)
        if self.checkpoint_every is not None:
            _checks.positive_int("checkpoint_every", self.checkpoint_every)
        for name in ("hparams", "settings"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise ValueError(f"{name} must be a mapping, got {type(value).__name__}")
            object.__setattr__(self, name, _canonical(name, dict(value)))

    def content(self) -> dict[str, Any]:
        """Everything that defines the result (what :attr:`key` hashes)."""
        return {
            "format": FORMAT, "kind": self.kind, "method": self.method, "dataset": self.dataset,
            "seed": self.seed, "budget": self.budget, "hparams": self.hparams, "settings": self.settings,
        }

    @property
    def content_key(self) -> str:
        """A 12-hex-digit hash of :meth:`content`, integral floats written as ints."""
        text = json.dumps(_number_form(self.content()), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def code(self) -> dict[str, Any]:
        """The code this run depends on (:func:`edrepro.book.identity.code_identity` of its trainer's module)."""
        return identity.code_identity(TRAINERS[self.kind].partition(":")[0])

    @property
    def key(self) -> str:
        """``CONTENT-CODE``: :attr:`content_key` and the 8-hex-digit digest of :attr:`code`."""
        return f"{self.content_key}-{self.code['digest']}"

    @property
    def label(self) -> str:
        """``METHOD-DATASET-seedSEED-KEY``: the run's folder name."""
        dataset = "".join(c if c.isalnum() or c in "._" else "_" for c in self.dataset)
        return f"{self.method}-{dataset}-seed{self.seed}-{self.key}"

    def describe(self) -> str:
        """A one-line description for progress bars and error messages."""
        return f"{self.kind} {self.method} on {self.dataset}, seed {self.seed}, budget {self.budget:,}"

    def to_dict(self) -> dict[str, Any]:
        return {**self.content(), "chapter": self.chapter, "checkpoint_every": self.checkpoint_every}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        fields = {k: data[k] for k in ("kind", "method", "dataset", "seed", "budget", "hparams", "settings")}
        return cls(**fields, chapter=data.get("chapter", ""), checkpoint_every=data.get("checkpoint_every"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunSpec) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


# ----------------------------------------------------------------------------- outcome and record


@dataclass
class Outcome:
    """What a training loop produced (returned by :func:`edrepro.book.train.train` and every trainer).

    ``curves`` are the evaluations: ``"step"``, ``"seconds"`` (training seconds up to that step,
    evaluation excluded) and one list per metric. ``series`` are per-step values (``"loss"``,
    ``"grad_norm"``, ...). ``diverged_at`` is the step at which ``nonfinite`` (the quantity, e.g.
    ``"loss"``) became NaN or infinite. ``models`` are the trained modules by name; their
    ``state_dict`` is what :func:`fetch` saves as ``result.pt``. ``info`` holds other scalars.
    """

    curves: dict[str, list[float]]
    series: dict[str, list[float]]
    steps: int
    seconds: float
    models: dict[str, torch.nn.Module] = field(default_factory=dict)
    diverged_at: int | None = None
    nonfinite: str | None = None
    resumed_from: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def losses(self) -> list[float]:
        return self.series.get("loss", [])

    @property
    def model(self) -> torch.nn.Module:
        return self.models["model"]

    @property
    def ema_model(self) -> torch.nn.Module | None:
        return self.models.get("ema")

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else math.inf


@dataclass
class RunRecord:
    """A computed run: its spec, status, curves, per-step series, training seconds and conditions.

    ``status`` is ``"finished"``, ``"diverged"`` (``diverged_at`` and ``nonfinite`` say when and
    which quantity) or ``"interrupted"`` (stopped by the user; computing it again resumes it).
    ``conditions`` describe the machine and load of the (last) process that trained it.
    ``code`` is the identity of the code that trained it (:attr:`RunSpec.code` plus the ``device``
    type). ``cached`` is True when this process loaded the run instead of training it;
    ``other_code`` lists what differs (modules, ``torch``, ``device``) when the reader chose to use
    a run made by other code (:data:`ACCEPT_OTHER_CODE_ENV`), and is empty otherwise.
    """

    spec: RunSpec
    status: str
    curves: dict[str, list[float]]
    series: dict[str, list[float]]
    steps: int
    train_seconds: float
    diverged_at: int | None = None
    nonfinite: str | None = None
    resumed_from: int = 0
    cpu_seconds: float = 0.0
    conditions: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    code: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    other_code: list[str] = field(default_factory=list)
    folder: Path | None = None
    _state: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        keys = ("status", "curves", "series", "steps", "train_seconds", "diverged_at", "nonfinite",
                "resumed_from", "cpu_seconds", "conditions", "info", "code")
        return {"spec": self.spec.to_dict(), **{k: getattr(self, k) for k in keys}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        fields = {k: v for k, v in data.items() if k not in ("spec", "cached", "other_code", "folder")}
        return cls(spec=RunSpec.from_dict(data["spec"]), **fields)

    # -- evaluation curves
    @property
    def step_curve(self) -> list[int]:
        """The evaluated steps."""
        return [int(s) for s in self.curves["step"]]

    @property
    def seconds_curve(self) -> list[float]:
        """Training seconds up to each evaluated step."""
        return self.curves["seconds"]

    def curve(self, metric: str) -> list[float]:
        """The values of ``metric`` at :attr:`step_curve`."""
        if metric not in self.curves or metric in ("step", "seconds"):
            names = [k for k in self.curves if k not in ("step", "seconds")]
            raise ValueError(f"metric must be one of {names} for run {self.spec.label}, got {metric!r}")
        return self.curves[metric]

    def final(self, metric: str) -> float:
        """``metric`` at the last evaluation."""
        return self.curve(metric)[-1]

    @property
    def losses(self) -> list[float]:
        return self.series.get("loss", [])

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.train_seconds if self.train_seconds > 0 else math.inf

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    def outcome_text(self) -> str:
        """``"finished"`` or ``"diverged at step N (loss)"``."""
        if self.diverged:
            return f"diverged at step {self.diverged_at:,} ({self.nonfinite})"
        return self.status

    def code_note(self) -> str:
        """Empty for a run of the current code; else which code made it, for the page to print."""
        if not self.other_code:
            return ""
        return (f"run {self.spec.describe()} was made by other code (differs in: {', '.join(self.other_code)}; "
                f"its code digest {self.code.get('digest', 'not recorded')}, device {self.code.get('device', '?')}) "
                f"and is used because {ACCEPT_OTHER_CODE_ENV}=1")

    def state(self) -> dict[str, Any]:
        """The saved weights (``result.pt``): a dict of state dicts by model name, loaded once."""
        if self._state is None:
            if self.folder is None:
                raise ValueError(f"run {self.spec.label} has no folder to load its weights from")
            self._state = _load_torch(self.folder / RESULT, self.spec)
        return self._state

    def same_result(self, other: RunRecord) -> bool:
        """Bitwise equal curves (seconds aside), series, status and weights: the same computation."""
        mine = {k: v for k, v in self.curves.items() if k != "seconds"}
        theirs = {k: v for k, v in other.curves.items() if k != "seconds"}
        if (self.spec, self.status, mine, self.series, self.steps) != (other.spec, other.status, theirs, other.series, other.steps):
            return False
        return _state_digest(self.state()) == _state_digest(other.state())


def _state_digest(state: Any) -> str:
    digest = hashlib.sha256()

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            digest.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        elif isinstance(value, Mapping):
            for k in sorted(value, key=str):
                digest.update(str(k).encode())
                walk(value[k])
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        else:
            digest.update(repr(value).encode())

    walk(state)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- files


def root_folder(root: str | os.PathLike | None = None) -> Path:
    """The cache root: ``root``, else ``$EDREPRO_RUNS``, else ``runs`` (relative to the working directory)."""
    return Path(root if root is not None else os.environ.get("EDREPRO_RUNS", "runs"))


def run_folder(spec: RunSpec, root: str | os.PathLike | None = None) -> Path:
    """``ROOT/KIND/LABEL``: where ``spec``'s record, weights and checkpoint live."""
    if not isinstance(spec, RunSpec):
        raise ValueError(f"spec must be a RunSpec, got {type(spec).__name__}")
    return root_folder(root) / spec.kind / spec.label


def json_text(value: Any, depth: int = 0) -> str:
    """JSON with one key or nested item per line, indented by one space per level, and every list that holds
    no list or dict on a single line: a curve or an image row costs one line, not one line per number.
    ``json.loads`` of it gives back exactly what ``json.dumps`` would have written."""
    pad = " " * (depth + 1)
    if isinstance(value, Mapping) and value:
        items = [f"{pad}{json.dumps({key: None})[1:-7]}: {json_text(item, depth + 1)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
    if isinstance(value, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in value):
        return "[\n" + ",\n".join(pad + json_text(item, depth + 1) for item in value) + "\n" + " " * depth + "]"
    return json.dumps(value)


def save_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write ``payload`` to ``path`` (``torch.save``; JSON text for a ``.json`` path) via a temporary
    file unique to this process and thread, renamed into place: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if path.suffix == ".json":
            tmp.write_text(json_text(payload))
        else:
            torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _retrain_hint(path: Path, spec: RunSpec | None) -> str:
    what = f"run {spec.describe()}" if spec is not None else "the run"
    return (
        f"to train {what} again from the start, delete its folder (`rm -r {path.parent}`) or pass fresh=True "
        "(`python -m edrepro sweep NAME --fresh` for a chapter's runs)"
    )


def _load_torch(path: Path, spec: RunSpec | None = None) -> Any:
    try:
        if path.stat().st_size == 0:
            raise EOFError("the file is empty")
        return torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only: never code
    except FileNotFoundError:
        raise
    except Exception as error:  # torch.load raises EOFError, RuntimeError, UnpicklingError, zipfile errors...
        raise DamagedRunError(f"{path} is damaged and cannot be read ({type(error).__name__}: {error}); {_retrain_hint(path, spec)}") from None


def load_checkpoint(path: str | os.PathLike, spec: RunSpec | None = None) -> dict[str, Any] | None:
    """The checkpoint at ``path``, None if there is none, :class:`DamagedRunError` if it cannot be read."""
    path = Path(path)
    if not path.exists():
        return None
    payload = _load_torch(path, spec)
    if not isinstance(payload, dict):
        raise DamagedRunError(f"{path} does not hold a checkpoint (got {type(payload).__name__}); {_retrain_hint(path, spec)}")
    return payload


def _read_record(folder: Path, spec: RunSpec | None = None) -> RunRecord | None:
    path = folder / RECORD
    if not path.exists():
        return None
    try:
        record = RunRecord.from_dict(json.loads(path.read_text()))
    except Exception as error:
        raise DamagedRunError(f"{path} is damaged and cannot be read ({type(error).__name__}: {error}); {_retrain_hint(path, spec)}") from None
    if spec is not None and record.spec != spec:
        raise DamagedRunError(f"{path} holds run {record.spec.label}, not {spec.label}; {_retrain_hint(path, spec)}")
    record.folder, record.cached = folder, True
    return record


@contextlib.contextmanager
def locked(folder: Path, label: str = "", echo: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the run folder's exclusive file lock (waiting, with a message, if another process has it)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if echo is not None:
                echo(f"waiting for another process that is computing run {label or folder.name} ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def clear(spec: RunSpec, root: str | os.PathLike | None = None) -> None:
    """Delete ``spec``'s record, weights and checkpoint (under its lock), so that it retrains."""
    folder = run_folder(spec, root)
    if not folder.exists():
        return
    with locked(folder, spec.label):
        for name in (RECORD, RESULT, CHECKPOINT):
            (folder / name).unlink(missing_ok=True)


def done(spec: RunSpec, root: str | os.PathLike | None = None) -> RunRecord | None:
    """``spec``'s record if the run is finished or diverged, else None (damaged files raise)."""
    record = _read_record(run_folder(spec, root), spec)
    return record if record is not None and record.status != "interrupted" else None


def available(spec: RunSpec, root: str | os.PathLike | None = None) -> bool:
    """Whether :func:`fetch` would load ``spec`` rather than train it: it is done, or the reader accepts
    runs made by other code (:data:`ACCEPT_OTHER_CODE_ENV`) and the cache holds one."""
    return done(spec, root) is not None or (accept_other_code() and _other_code_record(spec, root, torch.device("cpu")) is not None)


# ----------------------------------------------------------------------------- training


Trainer = Callable[..., Outcome]
"""``trainer(spec, checkpoint=Path, device=torch.device, progress=bool) -> Outcome``: trains ``spec``,
checkpointing to (and resuming from) the given path."""


def trainer_of(kind: str) -> Trainer:
    """The trainer function registered for ``kind`` in :data:`TRAINERS`."""
    _checks.choice("kind", kind, TRAINERS)
    module, _, name = TRAINERS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


BLOWUP_FACTOR = 1e6
"""A run has diverged when a quantity becomes NaN or infinite, or exceeds ``BLOWUP_FACTOR`` times its
starting scale, ``max(1, |first value|)``: the per-step loss, and every evaluated metric."""


def blow_up(curves: Mapping[str, list[float]], series: Mapping[str, list[float]]) -> tuple[int, str] | None:
    """The first ``(step, quantity)`` at which a run diverged by the rule of :data:`BLOWUP_FACTOR`, or None.

    ``series["loss"][i]`` is the loss of step i + 1; a metric's values sit at ``curves["step"]``.
    """
    found: list[tuple[int, str]] = []
    candidates = [("loss", series.get("loss", []), None)]
    candidates += [(name, values, curves.get("step")) for name, values in curves.items() if name not in ("step", "seconds")]
    for name, values, steps in candidates:
        values = [float(v) if v is not None else math.nan for v in values]
        if not values:
            continue
        scale = max(1.0, abs(values[0])) if math.isfinite(values[0]) else 1.0
        for i, value in enumerate(values):
            if not math.isfinite(value) or abs(value) > BLOWUP_FACTOR * scale:
                step = int(steps[i]) if steps is not None else i + 1
                reason = name if not math.isfinite(value) else f"{name} beyond {BLOWUP_FACTOR:.0e} x its starting scale"
                found.append((step, reason))
                break
    return min(found, default=None)


def _train(spec: RunSpec, folder: Path, device: torch.device, progress: bool) -> tuple[RunRecord, dict[str, Any]]:
    """Train ``spec`` with its checkpoint in ``folder``; the record and the weights to save."""
    retain_freed_memory()
    conditions = machine_conditions(device)
    cpu0 = time.process_time()
    outcome = trainer_of(spec.kind)(spec, checkpoint=folder / CHECKPOINT, device=device, progress=progress)
    diverged_at, quantity = outcome.diverged_at, outcome.nonfinite
    late = blow_up(outcome.curves, outcome.series)
    if late is not None and (diverged_at is None or late[0] < diverged_at):
        diverged_at, quantity = late
    conditions["load_end"] = round(os.getloadavg()[0], 2)
    record = RunRecord(
        spec=spec, status="diverged" if diverged_at is not None else "finished", curves=outcome.curves,
        series=outcome.series, steps=outcome.steps, train_seconds=outcome.seconds, diverged_at=diverged_at,
        nonfinite=quantity, resumed_from=outcome.resumed_from, cpu_seconds=time.process_time() - cpu0,
        conditions=conditions, info=outcome.info, code={**spec.code, "device": device.type},
    )
    state = {name: module.state_dict() for name, module in outcome.models.items()}
    return record, state


def _store(folder: Path, record: RunRecord, state: dict[str, Any]) -> RunRecord:
    """Write weights, then the record (its presence marks the run as done); drop the checkpoint."""
    save_atomic(folder / RESULT, state)
    save_atomic(folder / RECORD, record.to_dict())
    (folder / CHECKPOINT).unlink(missing_ok=True)
    record.folder, record._state = folder, state
    return record


def accept_other_code() -> bool:
    """Whether the reader chose to use cached runs made by other code (:data:`ACCEPT_OTHER_CODE_ENV` = 1)."""
    return os.environ.get(ACCEPT_OTHER_CODE_ENV, "0") == "1"


def _other_code_record(spec: RunSpec, root: str | os.PathLike | None, device: torch.device) -> RunRecord | None:
    """The newest finished run of ``spec``'s content made by other code or on another device type, with
    ``other_code`` saying what differs; None if the cache holds none."""
    kind_folder = root_folder(root) / spec.kind
    prefix = spec.label[: -len(spec.code["digest"])]
    candidates = sorted(kind_folder.glob(prefix + "*/" + RECORD), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        record = _read_record(path.parent)
        if record is not None and record.status != "interrupted" and record.spec.content_key == spec.content_key:
            record.other_code = _differences(record, spec, device)
            return record
    return None


def _differences(record: RunRecord, spec: RunSpec, device: torch.device) -> list[str]:
    """What differs between the code and device that made ``record`` and those that would train ``spec`` now."""
    if not record.code:
        return ["code not recorded"]
    changed = identity.changed_modules(record.code, spec.code)
    return changed + ([f"device {record.code.get('device')} (now {device.type})"] if record.code.get("device") != device.type else [])


def _cached(spec: RunSpec, folder: Path, root, device: torch.device, echo) -> RunRecord | None:
    """A finished cached run this process may use as ``spec``'s result, read without a lock (the
    record is written last and atomically), so a read-only cache serves its finished runs."""
    record = _read_record(folder, spec)
    if record is not None and record.status != "interrupted":
        record.other_code = [d for d in _differences(record, spec, device) if d.startswith("device")]
        if not record.other_code or accept_other_code():
            return record
        if echo is not None:
            echo(f"run {spec.describe()} in the cache was trained on another {record.other_code[0]}: training it again "
                 f"(set {ACCEPT_OTHER_CODE_ENV}=1 to use it)")
        return None
    if record is None and accept_other_code():
        other = _other_code_record(spec, root, device)
        if other is not None and echo is not None:
            echo(other.code_note())
        return other
    return None


def fetch(
    spec: RunSpec,
    *,
    root: str | os.PathLike | None = None,
    fresh: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> RunRecord:
    """The record of ``spec``: loaded from the cache, or trained in this process and saved.

    A finished run of the current code on the same device type is loaded without a lock (so a
    read-only cache works). A run made by other code has another key and is not found; one made on
    another device type is trained again; with :data:`ACCEPT_OTHER_CODE_ENV` = 1 either is used
    instead, and :meth:`RunRecord.code_note` says which code made it. Training holds the run's lock,
    so a concurrent request for the same run waits and then loads. An interrupted run resumes from
    its checkpoint; ``fresh`` deletes the cached run first. A damaged file raises :class:`DamagedRunError`.
    """
    device = resolve_device(device)
    folder = run_folder(spec, root)
    if not fresh:
        record = _cached(spec, folder, root, device, echo)
        if record is not None:
            return record
    with locked(folder, spec.label, echo):
        record = None if fresh else _read_record(folder, spec)
        if record is not None and record.status != "interrupted" and not _differences(record, spec, device):
            return record  # another process trained it while this one waited for the lock
        for name in (RECORD, RESULT) + ((CHECKPOINT,) if fresh or record is not None and record.status != "interrupted" else ()):
            (folder / name).unlink(missing_ok=True)
        try:
            record, state = _train(spec, folder, device, progress)
        except KeyboardInterrupt:
            partial = RunRecord(spec=spec, status="interrupted", curves={}, series={}, steps=0, train_seconds=0.0)
            save_atomic(folder / RECORD, partial.to_dict())
            raise
        return _store(folder, record, state)


def fetch_all(
    specs: Sequence[RunSpec],
    *,
    workers: int = 1,
    root: str | os.PathLike | None = None,
    fresh: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> list[RunRecord]:
    """The records of ``specs``, in order: the missing ones are computed first — with ``workers`` > 1
    on that many local worker processes (:func:`sweep`), else one by one in this process."""
    specs = _check_specs(specs)
    _checks.positive_int("workers", workers)
    if fresh:
        for spec in specs:
            clear(spec, root)
    missing = [s for s in specs if not available(s, root)]
    if workers > 1 and len(missing) > 1 and not _has_dask():
        if echo is not None:
            echo(f"Dask distributed is not installed (pip install 'edrepro[cluster]'): training {len(missing)} runs one by one here")
    elif workers > 1 and len(missing) > 1:
        summary = sweep(missing, workers=workers, root=root, progress=progress, echo=echo or (lambda *_, **__: None))
        if summary.failed:
            raise RunFailed(summary.failure_text())
    return [fetch(s, root=root, device=device, progress=progress, echo=echo) for s in specs]


def _has_dask() -> bool:
    return importlib.util.find_spec("distributed") is not None


def _check_specs(specs: Sequence[RunSpec]) -> list[RunSpec]:
    specs = list(specs)
    if not specs or not all(isinstance(s, RunSpec) for s in specs):
        raise ValueError("specs must be a non-empty sequence of RunSpec")
    return specs


# ----------------------------------------------------------------------------- remote execution


def _worker_root(client_root: str) -> Path:
    """Where a worker keeps checkpoints: ``$EDREPRO_RUNS`` on the worker, else the client's folder when
    it exists there (same machine or a shared disk, so a retried run resumes), else a temporary folder."""
    if os.environ.get("EDREPRO_RUNS"):
        return Path(os.environ["EDREPRO_RUNS"])
    if Path(client_root).is_dir():
        return Path(client_root)
    return Path(tempfile.gettempdir()) / "edrepro-runs"


def compute_remote(spec_data: dict[str, Any], client_root: str, threads: int = 1) -> dict[str, Any]:
    """Compute one run in a worker process and return it to the client as plain data: the record as
    JSON text, the weights as ``torch.save`` bytes of tensors, and whether the worker trained it or
    found it in its own cache. The client decides what it stores (:func:`_store_payload`).

    Runs under the run folder's lock on the worker's disk; a run killed mid-way resumes from its
    checkpoint when retried on a worker that sees the same disk.
    """
    torch.set_num_threads(max(1, int(threads)))
    spec = RunSpec.from_dict(spec_data)
    folder = run_folder(spec, _worker_root(client_root))
    with locked(folder, spec.label):
        existing = _read_record(folder, spec)
        if existing is not None and existing.status != "interrupted" and not _differences(existing, spec, torch.device("cpu")):
            return {"record": json.dumps(existing.to_dict()), "result": (folder / RESULT).read_bytes(), "from_worker_cache": True}
        record, state = _train(spec, folder, torch.device("cpu"), progress=False)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return {"record": json.dumps(record.to_dict()), "result": buffer.getvalue(), "from_worker_cache": False}


@dataclass
class SweepSummary:
    """What a :func:`sweep` did: runs trained, loaded (already cached), failed (spec, error), CPU-seconds, wall seconds."""

    trained: list[RunSpec] = field(default_factory=list)
    loaded: list[RunSpec] = field(default_factory=list)
    failed: list[tuple[RunSpec, str]] = field(default_factory=list)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    executor: str = ""

    def text(self) -> str:
        line = (
            f"runs trained: {len(self.trained)}, loaded from the cache: {len(self.loaded)}, failed: {len(self.failed)}; "
            f"{self.cpu_seconds:,.0f} CPU-seconds of training, {self.wall_seconds:,.0f} s wall ({self.executor})"
        )
        return line + ("\n" + self.failure_text() if self.failed else "")

    def failure_text(self) -> str:
        return "failed runs:\n" + "\n".join(f"  {s.describe()} [{s.label}]: {e}" for s, e in self.failed)


class PayloadRejected(RunFailed):
    """A worker's result is not plain data of the expected run and code; nothing was stored."""


def _store_payload(spec: RunSpec, payload: Any, root: str | os.PathLike | None) -> RunRecord:
    """Check a worker's result and write it into the client's cache (under the run's lock).

    The payload must be plain data: the record as JSON text and the weights as bytes that
    ``torch.load(weights_only=True)`` reads (tensors only, never a pickled object, which could run
    code here). The record must be of ``spec`` and made by the client's own code. Anything else
    raises :class:`PayloadRejected` and stores nothing.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("record"), str) or not isinstance(payload.get("result"), bytes):
        raise PayloadRejected(f"the worker's result for run {spec.describe()} is not a JSON record with weights as bytes")
    try:
        record = RunRecord.from_dict(json.loads(payload["record"]))
        state = torch.load(io.BytesIO(payload["result"]), map_location="cpu", weights_only=True)
    except Exception as error:  # a forged pickle fails here, before any of it runs
        raise PayloadRejected(f"the worker's result for run {spec.describe()} was rejected ({type(error).__name__}: {_short_error(error)})") from None
    if record.spec != spec or record.code.get("digest") != spec.code["digest"]:
        changed = ", ".join(identity.changed_modules(record.code, spec.code)) or "spec"
        raise PayloadRejected(f"the worker returned run {record.spec.label} made by other code (differs in: {changed}), not {spec.label}")
    folder = run_folder(spec, root)
    with locked(folder, spec.label):
        existing = _read_record(folder, spec)
        if existing is not None and existing.status != "interrupted":
            return existing  # a concurrent sweep stored it first: keep one consistent copy
        stored = _store(folder, record, state)
    stored.cached = bool(payload.get("from_worker_cache"))
    return stored


SCHEDULER_TIMEOUT = 5
"""Seconds to wait for a Dask scheduler before giving up with one line."""


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """A Dask distributed client: connected to ``scheduler`` (an address such as ``tcp://host:8786``),
    or to a new local cluster of ``workers`` processes with one thread each on 127.0.0.1."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise RuntimeError(
            "sweeps run on Dask distributed, which is not installed: pip install 'edrepro[cluster]' "
            "(or pip install 'dask[distributed]')"
        ) from None
    if scheduler:
        try:
            client = Client(scheduler, timeout=f"{SCHEDULER_TIMEOUT}s")
        except (OSError, TimeoutError) as error:
            raise RuntimeError(f"cannot reach the Dask scheduler at {scheduler} within {SCHEDULER_TIMEOUT} s "
                               f"({type(error).__name__}); is `dask scheduler` running there?") from None
        with client:
            yield client
        return
    workers = workers or os.cpu_count() or 1
    _checks.positive_int("workers", workers)
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, silence_logs=logging.ERROR,
    ) as cluster, Client(cluster) as client:
        yield client


def sweep(
    specs: Sequence[RunSpec],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    root: str | os.PathLike | None = None,
    fresh: bool = False,
    progress: bool = True,
    echo: Callable[..., None] = print,
) -> SweepSummary:
    """Compute every missing run of ``specs`` on Dask workers and store the results in the cache.

    ``scheduler`` (or ``$EDREPRO_SCHEDULER``) connects to a running Dask cluster; without one,
    ``workers`` local worker processes (default: the number of cores) with one torch thread each
    are started for the sweep. Runs already cached are loaded, not recomputed. A run that raises
    is listed in the summary's ``failed`` (the others go on); a worker that dies has its run
    retried by Dask on another worker.
    """
    specs = list(dict.fromkeys(_check_specs(specs)))  # one computation per distinct run
    scheduler = scheduler or os.environ.get("EDREPRO_SCHEDULER") or None
    summary = SweepSummary(executor=f"Dask scheduler {scheduler}" if scheduler else f"{workers or os.cpu_count()} local worker process(es)")
    start = time.perf_counter()
    if fresh:
        for spec in specs:
            clear(spec, root)
    missing = []
    for spec in specs:
        (summary.loaded if available(spec, root) else missing).append(spec)
    if missing:
        _sweep_missing(missing, summary, workers, scheduler, root, progress, echo)
    summary.wall_seconds = time.perf_counter() - start
    return summary


def _sweep_missing(missing, summary, workers, scheduler, root, progress, echo) -> None:
    from tqdm import tqdm

    from dask.distributed import as_completed

    client_root = root_folder(root).resolve()
    client_root.mkdir(parents=True, exist_ok=True)  # so that workers on this machine or a shared disk find it
    with dask_client(scheduler, workers if not scheduler else None) as client:
        echo(f"sweep: {len(missing)} run(s) to compute on {summary.executor}", flush=True)
        futures = {
            client.submit(compute_remote, spec.to_dict(), str(client_root), 1, key=f"edrepro-{spec.label}-{uuid.uuid4().hex[:6]}", pure=False): spec
            for spec in _longest_first(missing)
        }
        bar = tqdm(total=len(futures), desc="runs", disable=not progress, file=sys.stderr)
        for future in as_completed(futures):
            spec = futures[future]
            try:
                record = _store_payload(spec, future.result(), root)
                if record.cached:
                    summary.loaded.append(spec)
                else:
                    summary.trained.append(spec)
                    summary.cpu_seconds += record.cpu_seconds
            except Exception as error:  # the run failed on the worker (or its result could not be stored)
                summary.failed.append((spec, _short_error(error)))
            bar.update(1)
            bar.set_postfix_str(f"trained {len(summary.trained)}, loaded {len(summary.loaded)}, failed {len(summary.failed)}", refresh=False)
        bar.close()


def _longest_first(specs: list[RunSpec]) -> list[RunSpec]:
    # Dask starts tasks roughly in submission order: the longest first packs the workers better.
    # A rough cost in "2-D ED iterations": an LEBM epoch or an RBM step with its exact likelihood
    # weighs far more than one update of the small networks.
    # A JEM update costs one pass per SGLD step or per ED particle, on the MNIST network about 40 × a 2-D one.
    per_step = {"lebm": 20_000.0, "classifier": 20_000.0, "rbm": 3.0, "ising": 0.5, "density": 1.0, "jem": 0.5}

    def cost(s: RunSpec) -> float:
        m = s.hparams.get("m_particles", 4)
        if s.kind == "jem":
            passes = 1 + s.hparams.get("n_steps", s.hparams.get("m_particles", 0))
            return per_step["jem"] * s.budget * passes * (40.0 if s.dataset == "mnist" else 1.0)
        weight = 0.25 * (1 + m) if s.method == "ed" and isinstance(m, int) else 2.0
        return per_step[s.kind] * s.budget * (weight if s.kind == "density" else 1.0)

    return sorted(specs, key=cost, reverse=True)


def _short_error(error: BaseException) -> str:
    lines = traceback.format_exception_only(type(error), error)
    return lines[-1].strip() if lines else repr(error)


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
