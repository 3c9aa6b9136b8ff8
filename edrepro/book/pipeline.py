"""Notebook → papermill → Jupyter Book pipeline.

Source of truth for each chapter is the MyST-markdown notebook ``notebooks/NAME.md``
(paired with ``notebooks/NAME.ipynb`` by jupytext). A run converts the source with
jupytext, executes it with papermill under a *profile* (``smoke``, ``quick``,
``paper``) whose parameters come from ``notebooks/params/NAME/PROFILE.yaml``, and
writes the executed copy to ``_build/executed/PROFILE/NAME.ipynb``. The book renders
those executed copies; Jupyter Book never executes anything itself.

A run is skipped when an executed copy exists whose cache key — a hash of the
source text, the parameter file and the profile — matches, unless forced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .. import _paths

PROFILES = ("smoke", "quick", "paper")
"""The profiles every page has."""
EXTRA_PROFILES = ("long",)
"""Profiles a page may add (``notebooks/params/NAME/long.yaml``): a budget between ``quick`` and ``paper``
whose results are precomputed and kept in ``results/NAME/long.json``."""
ALL_PROFILES = PROFILES + EXTRA_PROFILES


def check_profile(profile: str) -> str:
    """``profile`` if it is one of :data:`ALL_PROFILES`, else a ValueError naming them."""
    if profile not in ALL_PROFILES:
        raise ValueError(f"profile must be one of {list(ALL_PROFILES)}, got {profile!r}")
    return profile
CACHE_FIELD = "edrepro"


class NotebookFailed(RuntimeError):
    """A notebook cell raised; the message names the notebook and the cell."""


@dataclass
class RunRecord:
    """What happened to one notebook in a run."""

    name: str
    profile: str
    status: str  # "executed", "cached" or "failed"
    seconds: float
    output: Path


def find_root(start: Path | None = None) -> Path:
    """Where the book's sources are: the checkout above ``start`` (or the cwd, then this package),
    else the copies the installed package carries (:func:`edrepro._paths.source_root`)."""
    return _paths.source_root(start)


def book_config(root: Path) -> dict:
    """The parsed top-level ``_config.yml``."""
    return yaml.safe_load((root / "_config.yml").read_text())


def repository_url(root: Path) -> str:
    """The repository URL: the one place it is set is ``repository.url`` in ``_config.yml``."""
    return book_config(root)["repository"]["url"]


def _toc_files(entries: list) -> list[str]:
    files = []
    for entry in entries or []:
        if "file" in entry:
            files.append(entry["file"])
        for key in ("chapters", "sections", "parts"):
            files.extend(_toc_files(entry.get(key, [])))
    return files


def notebook_names(root: Path) -> list[str]:
    """Names of the notebooks in the book's table of contents, in reading order."""
    toc = yaml.safe_load((root / "book" / "_toc.yml").read_text())
    files = [toc["root"], *_toc_files(toc.get("chapters", [])), *_toc_files(toc.get("parts", []))]
    return [f for f in files if (root / "notebooks" / f"{f}.md").is_file()]


def check_names(root: Path, names: list[str]) -> list[str]:
    """``names`` when every one is a notebook of ``root`` (a source ``notebooks/NAME.md``); else one
    ValueError naming every unknown name and listing the book's notebooks. Called before any work."""
    unknown = [n for n in names if not isinstance(n, str) or not re.fullmatch(r"[A-Za-z0-9_]+", n)
               or not (root / "notebooks" / f"{n}.md").is_file()]
    if unknown:
        which = ", ".join(repr(n) for n in unknown)
        files = ", ".join(f"notebooks/{n}.md" for n in unknown)
        raise ValueError(f"unknown notebook{'s' if len(unknown) > 1 else ''} {which}: no {files}; "
                         f"the book's notebooks are {', '.join(notebook_names(root))}")
    return list(names)


def params_path(root: Path, name: str, profile: str) -> Path:
    return root / "notebooks" / "params" / name / f"{profile}.yaml"


def load_params(root: Path, name: str, profile: str) -> dict:
    """Parameters of notebook ``name`` under ``profile`` (an empty file means the defaults)."""
    check_profile(profile)
    path = params_path(root, name, profile)
    if not path.is_file():
        raise FileNotFoundError(f"no parameter file for notebook {name!r} and profile {profile!r}: expected {path}")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{path}{where}: malformed YAML ({problem})") from None
    if not isinstance(params, dict):
        raise ValueError(f"{path} must hold a mapping of parameter names to values")
    return params


_PARAMETERS_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n:tags: \[([^\]\n]*)\]\n\n(.*?)^```", re.M | re.S)


def notebook_defaults(root: Path, name: str) -> dict:
    """The values of the notebook's ``parameters`` cell (the ``quick`` profile), read from its MyST
    source without running it (and without jupytext, which an installed package may lack)."""
    import ast

    check_names(root, [name])
    source = root / "notebooks" / f"{name}.md"
    cell = next((m.group(2) for m in _PARAMETERS_CELL.finditer(source.read_text())
                 if "parameters" in (t.strip() for t in m.group(1).split(","))), None)
    if cell is None:
        raise ValueError(f"{source} has no cell tagged 'parameters'")
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.parse(cell).body if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }


def effective_params(root: Path, name: str, profile: str, overrides: dict[str, str] | None = None) -> dict:
    """Every parameter of notebook ``name`` as a run under ``profile`` sees it: the ``parameters`` cell,
    updated by the profile's file, updated by command-line ``overrides`` (KEY → YAML text); all checked
    against the notebook's schema (:mod:`edrepro.book.parameters`), then against the rules that tie
    parameters together (the page's check of :data:`PAGE_CHECKS`), before anything runs."""
    from . import parameters

    profile_values = load_params(root, name, profile)
    if not parameters.has_schema(name):  # a notebook outside the book: its own cells check their values
        values = {**notebook_defaults(root, name), **profile_values, **_parsed(name, overrides)}
    else:
        try:
            parameters.check(name, profile_values)
        except parameters.ParameterError as error:
            raise parameters.ParameterError(f"{params_path(root, name, profile)}: {error}") from None
        values = parameters.check(name, {**notebook_defaults(root, name), **profile_values, **_parsed(name, overrides)}, complete=True)
    check = page_check(name)
    if check is not None:
        try:
            check(values)
        except ValueError as error:
            where = f"profile {profile!r} with -p {', '.join(overrides)}" if overrides else str(params_path(root, name, profile))
            raise parameters.ParameterError(f"notebook {name!r} ({where}): {error}") from None
    return values


PAGE_CHECKS: dict[str, str] = {
    "density_ablations": "edrepro.chapters.ablation:check_params",
    "edlebm_mnist": "edrepro.chapters.lebm_eval:check_params",
    "density_benchmark": "edrepro.chapters.benchmark:check_params",
    "jem": "edrepro.chapters.jem_page:check_params",
}
"""Notebook → the chapter function that checks the rules tying its parameters together (``methods`` must
hold ``ed``, ``top_k`` at most ``len(methods)``, ...): it takes the page's parameters and raises a
ValueError naming them. :func:`effective_params` calls it, so ``run``, ``sweep``, ``export`` and ``claims``
reject such values before any work; the page's own cells make the same check (the same function, or an
inline copy of it). A rule on one parameter alone belongs in the schema (``edrepro/book/schemas/NAME.yaml``)."""


def page_check(name: str):
    """The check of :data:`PAGE_CHECKS` for notebook ``name`` (a callable taking its parameters), or None."""
    import importlib

    if name not in PAGE_CHECKS:
        return None
    module, _, function = PAGE_CHECKS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def check_pages(root: Path, names: list[str], profile: str, overrides: dict[str, str] | None = None) -> dict[str, dict]:
    """Every check the pages ``names`` would make, before any work: the names (:func:`check_names`), then each
    page's parameters under ``profile`` and ``overrides`` (:func:`effective_params`). Returns them by name."""
    check_profile(profile)
    return {name: effective_params(root, name, profile, overrides) for name in check_names(root, names)}


def cache_key(root: Path, name: str, profile: str, overrides: dict | None = None) -> str:
    """Hash of the notebook source, its parameter file, the profile and any command-line overrides."""
    digest = hashlib.sha256()
    digest.update((root / "notebooks" / f"{name}.md").read_bytes())
    digest.update(params_path(root, name, profile).read_bytes())
    digest.update(profile.encode())
    if overrides:
        digest.update(json.dumps(overrides, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def figures_folder(root: Path, profile: str) -> Path:
    """Where a run's figures land: ``figures/`` for the book's ``quick`` profile, ``figures/PROFILE/`` otherwise
    (in the checkout, or in the working directory when the sources are the installed package's)."""
    folder = _paths.work_root(root) / "figures"
    return folder if profile == "quick" else folder / profile


def executed_path(root: Path, name: str, profile: str) -> Path:
    return _paths.work_root(root) / "_build" / "executed" / profile / f"{name}.ipynb"


def _is_cached(path: Path, key: str) -> bool:
    if not path.is_file():
        return False
    try:
        meta = json.loads(path.read_text())["metadata"].get(CACHE_FIELD, {})
    except (ValueError, KeyError):
        return False
    return meta.get("cache_key") == key and meta.get("status") == "ok"


def reproduce_note(name: str, profile: str) -> str:
    """The "Reproduce this page" admonition inserted into every executed notebook."""
    return (
        "```{admonition} Reproduce this page\n"
        ":class: tip\n\n"
        f"This page was executed with the `{profile}` profile. From a checkout of the repository, after `make book` or "
        "`pip install -e \".[book]\"`, re-run it with the CLI\n\n"
        f"    python -m edrepro run {name} --profile {profile} --force\n\n"
        "or with papermill directly (any profile: `smoke`, `quick`, `paper`)\n\n"
        f"    papermill notebooks/{name}.ipynb {name}-executed.ipynb -f notebooks/params/{name}/{profile}.yaml\n"
        "```"
    )


def _describe_failure(name: str, error: Exception) -> str:
    cell = getattr(error, "exec_count", None)
    source = (getattr(error, "source", "") or "").strip().splitlines()
    first = source[0] if source else ""
    what = f"{getattr(error, 'ename', type(error).__name__)}: {getattr(error, 'evalue', error)}"
    return f"notebook {name!r} failed in cell In[{cell}] (starting `{first}`): {what}"


@contextlib.contextmanager
def _notebook_lock(out: Path):
    """One execution of a notebook (per profile) at a time; a second run waits for the first."""
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out.parent / f".{out.stem}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _show_effective_parameters(nb) -> None:
    """Fold papermill's injected cell into the ``parameters`` cell, so the page shows the values it ran
    with once: each injected assignment replaces the value of the same name (its comment is kept)."""
    import ast

    injected = next((c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", ())), None)
    target = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", ())), None)
    if injected is None or target is None:
        return
    values = {n.targets[0].id: ast.get_source_segment(injected.source, n.value) for n in ast.parse(injected.source).body if isinstance(n, ast.Assign)}
    lines = []
    for line in target.source.splitlines():
        head, sep, comment = line.partition("  #")
        key = head.split("=", 1)[0].strip()
        if "=" in head and key in values:
            line = f"{key} = {values.pop(key)}" + (f"  #{comment}" if sep else "")
        lines.append(line)
    target.source = "\n".join(lines + [f"{k} = {v}" for k, v in values.items()])
    nb.cells.remove(injected)


def execute_notebook(
    root: Path, name: str, profile: str, force: bool = False, progress: bool = True,
    overrides: dict[str, str] | None = None, stream: bool = False, output: Path | None = None,
) -> RunRecord:
    """Execute ``notebooks/NAME.md`` under ``profile`` into ``_build/executed/PROFILE/NAME.ipynb``.

    ``overrides`` (KEY → YAML text, as ``-p KEY VALUE`` on the command line) change parameters of
    the profile; all parameters are checked against the notebook's schema before anything runs.
    The previous executed copy stays in place until the new one has succeeded (a failed or killed
    run leaves it untouched); two runs of the same notebook take turns. ``stream`` shows the
    kernel's progress bars in this terminal; ``output`` writes the executed copy elsewhere than the
    book's ``_build/executed/PROFILE/NAME.ipynb``. Raises :class:`NotebookFailed` naming the notebook
    and the cell when a cell raises.
    """
    import tempfile

    import nbformat

    check_pages(root, [name], profile, overrides)  # the name and every parameter checked before any work
    params = {**load_params(root, name, profile), **_parsed(name, overrides)}
    key = cache_key(root, name, profile, overrides)
    out = Path(output) if output is not None else executed_path(root, name, profile)
    with _notebook_lock(out):
        if not force and _is_cached(out, key):
            return RunRecord(name, profile, "cached", 0.0, out)
        with tempfile.TemporaryDirectory(prefix=f"edrepro-{name}-") as work:
            executed, seconds = _papermill(root, name, profile, params, Path(work), progress, stream)
            nb = nbformat.read(executed, as_version=4)
            _show_effective_parameters(nb)
            first_markdown = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"), -1)
            nb.cells.insert(first_markdown + 1, nbformat.v4.new_markdown_cell(reproduce_note(name, profile)))
            nb.metadata[CACHE_FIELD] = {"cache_key": key, "profile": profile, "seconds": round(seconds, 2), "status": "ok", "overrides": overrides or {}}
            staged = out.with_name(f".{name}.{os.getpid()}.tmp")  # beside the output: the rename is atomic
            nbformat.write(nb, staged)
            os.replace(staged, out)
    return RunRecord(name, profile, "executed", seconds, out)


def _parsed(name: str, overrides: dict[str, str] | None) -> dict:
    """Command-line overrides KEY → YAML text as values, checked against the schema when there is one."""
    import yaml

    from . import parameters

    if parameters.has_schema(name):
        return {k: parameters.parse_override(name, k, v) for k, v in (overrides or {}).items()}
    return {k: yaml.safe_load(v) for k, v in (overrides or {}).items()}


def _papermill(root: Path, name: str, profile: str, params: dict, work: Path, progress: bool, stream: bool) -> tuple[Path, float]:
    """Run papermill on the jupytext conversion of the notebook in ``work``; (executed path, seconds)."""
    import jupytext
    import papermill

    unexecuted, executed = work / f"{name}.ipynb", work / f"{name}.out.ipynb"
    jupytext.write(jupytext.read(root / "notebooks" / f"{name}.md"), unexecuted)
    # With busy cores, OpenMP threads that spin while waiting slow small torch ops 10x or more;
    # the kernel inherits this environment, as it does the figures folder.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    saved_figures = os.environ.get("EDREPRO_FIGURES")
    os.environ["EDREPRO_FIGURES"] = str(figures_folder(root, profile))
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(unexecuted), str(executed), parameters=params, kernel_name="python3", cwd=str(_paths.work_root(root)),
            progress_bar=progress and not stream, language="python", stderr_file=sys.stderr if stream else None,
        )
    except papermill.PapermillExecutionError as error:
        raise NotebookFailed(_describe_failure(name, error)) from None
    finally:
        if saved_figures is None:
            os.environ.pop("EDREPRO_FIGURES")
        else:
            os.environ["EDREPRO_FIGURES"] = saved_figures
    return executed, time.perf_counter() - start


def _execute_quietly(root: Path, name: str, profile: str, force: bool, overrides: dict | None) -> RunRecord:
    # In a worker process of run_notebooks: no progress bars, the run's own environment.
    return execute_notebook(root, name, profile, force=force, progress=False, overrides=overrides)


TIMED_ALONE = ("performance",)
"""Notebooks that measure speed: with several jobs they run after the others, alone on the machine."""


def run_notebooks(
    root: Path, names: list[str] | None = None, profile: str = "quick", force: bool = False, echo=print,
    jobs: int = 1, overrides: dict[str, str] | None = None,
) -> list[RunRecord]:
    """Execute several notebooks, ``jobs`` at a time (each in its own process when ``jobs`` > 1),
    printing one line per notebook as it starts and ends; the notebooks of :data:`TIMED_ALONE` run
    last, one at a time. The first failure is raised after the notebooks already running have finished."""
    check_profile(profile)
    names = list(names) if names else notebook_names(root)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    check_pages(root, names, profile, overrides)  # every name and every page's parameters, before the first notebook runs
    if jobs == 1 or len(names) == 1:
        records = []
        for i, name in enumerate(names, 1):
            echo(f"[{i}/{len(names)}] {name} ({profile}) ...", flush=True)
            records.append(execute_notebook(root, name, profile, force=force, overrides=overrides, stream=len(names) == 1))
            echo(f"[{i}/{len(names)}] {name}: {records[-1].status} in {records[-1].seconds:.1f} s", flush=True)
        return records
    shared = [n for n in names if n not in TIMED_ALONE]
    done, first_error = _run_in_pool(root, shared, profile, force, echo, jobs, overrides, len(names))
    for name in (n for n in names if n in TIMED_ALONE):
        if first_error is not None:
            break
        echo(f"{name}: measures speed, so it runs alone ...", flush=True)
        try:
            done[name] = execute_notebook(root, name, profile, force=force, overrides=overrides)
            echo(f"[{len(done)}/{len(names)}] {name}: {done[name].status} in {done[name].seconds:.1f} s", flush=True)
        except Exception as error:
            echo(f"{name}: failed", flush=True)
            first_error = error
    if first_error is not None:
        raise first_error
    return [done[name] for name in names]


def _run_in_pool(root: Path, names: list[str], profile: str, force: bool, echo, jobs: int, overrides: dict | None,
                 total: int) -> tuple[dict[str, RunRecord], Exception | None]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    done: dict[str, RunRecord] = {}
    first_error: Exception | None = None
    if not names:
        return done, None
    with ProcessPoolExecutor(max_workers=min(jobs, len(names)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_execute_quietly, root, name, profile, force, overrides): name for name in names}
        echo(f"running {len(names)} notebooks ({profile}), {min(jobs, len(names))} at a time ...", flush=True)
        for future in as_completed(futures):
            name = futures[future]
            try:
                done[name] = future.result()
                echo(f"[{len(done)}/{total}] {name}: {done[name].status} in {done[name].seconds:.1f} s", flush=True)
            except Exception as error:
                echo(f"{name}: failed", flush=True)
                first_error = first_error or error
    return done, first_error


def claims_of(notebook_path: Path) -> list[tuple[str, bool]]:
    """The (claim, holds) rows of the claims tables (:func:`edrepro.book.claims.check_claims`) in an executed
    notebook. Every row of the page's second and later tables (e.g. claims on precomputed runs after those
    on the live ones) is named "table N: statement", so that a statement found in several tables is counted
    apart and a later table's rows are recognisable as such."""
    import nbformat

    from .claims import CLAIMS_HEADER

    rows, table = [], 0
    for cell in nbformat.read(notebook_path, as_version=4).cells:
        for out in cell.get("outputs", []):
            text = out.get("data", {}).get("text/markdown", "") if out.get("output_type") == "display_data" else ""
            if not text.startswith(CLAIMS_HEADER):  # instrument checks have their own header: not claims
                continue
            table += 1
            for line in text.splitlines()[2:]:
                cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
                name = cells[0] if table == 1 else f"table {table}: {cells[0]}"
                rows.append((name, cells[-1] == "yes"))  # "undecided" counts as not holding
    return rows


def claims_across_seeds(root: Path, name: str, profile: str, seeds: list[int], overrides: dict[str, str] | None = None,
                        workers: int = 1, echo=print) -> dict[str, list[int]]:
    """Execute notebook ``name`` once per seed (claims not enforced) and collect, for every claim, the
    seeds for which it does NOT hold: ``{claim: [failing seeds]}`` (empty lists everywhere = robust).
    A page's training runs are swept first on ``workers`` processes."""
    import tempfile

    check_names(root, [name])
    measure_all = {"enforce_claims": "false"} if "enforce_claims" in notebook_defaults(root, name) else {}
    # measure every claim: a failure is counted, not raised
    by_seed = {seed: {**(overrides or {}), "seed": str(seed), **measure_all} for seed in seeds}
    for seeded in by_seed.values():  # every seed's parameters checked before the first run
        check_pages(root, [name], profile, seeded)
    failures: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix=f"edrepro-seeds-{name}-") as folder:
        for seed, seeded in by_seed.items():
            if workers > 1 and name in PAGE_RUNS:
                sweep_notebooks(root, [name], profile, seeded, workers=workers, echo=lambda *a, **k: None)
            record = execute_notebook(root, name, profile, force=True, progress=False, overrides=seeded, output=Path(folder) / f"{name}-{seed}.ipynb")
            rows = claims_of(record.output)
            for claim, holds in rows:
                failures.setdefault(claim, [])
                if not holds:
                    failures[claim].append(seed)
            echo(f"seed {seed}: {sum(h for _, h in rows)} of {len(rows)} claims hold", flush=True)
    return failures


def summary_table(records: list[RunRecord]) -> str:
    """A plain-text table: notebook, profile, status, wall time."""
    rows = [("notebook", "profile", "status", "seconds")]
    rows += [(r.name, r.profile, r.status, f"{r.seconds:.1f}") for r in records]
    widths = [max(len(row[k]) for row in rows) for k in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"total: {sum(r.seconds for r in records):.1f} s")
    return "\n".join(lines)


def stage_book(root: Path, profile: str, build_dir: Path) -> Path:
    """Assemble the book's source folder: prose and TOC from ``book/`` plus the executed notebooks
    (and, beside it, the package's source, which pages include)."""
    src = build_dir / "src"
    shutil.rmtree(src, ignore_errors=True)
    # copy2 keeps modification times so that Sphinx rebuilds only pages that changed.
    shutil.copytree(root / "book", src, copy_function=shutil.copy2)
    for name in notebook_names(root):
        executed = executed_path(root, name, profile)
        if not executed.is_file():
            raise FileNotFoundError(f"notebook {name!r} has not been executed under profile {profile!r} ({executed})")
        shutil.copy2(executed, src / f"{name}.ipynb")
    # Pages include the package's source with ``literalinclude ../edrepro/...``, a path relative to
    # notebooks/ in the checkout: the same path from src/ needs the package beside it.
    package = build_dir / "edrepro"
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(root / "edrepro", package, copy_function=shutil.copy2, ignore=shutil.ignore_patterns("__pycache__", "bundled"))
    return src


PAGE_RUNS: dict[str, str] = {
    "density_estimation": "edrepro.chapters.density:page_specs",
    "density_ablations": "edrepro.chapters.ablation:page_specs",
    "density_benchmark": "edrepro.chapters.benchmark:page_specs",
    "discrete_ed": "edrepro.chapters.discrete:page_specs",
    "edlebm_mnist": "edrepro.chapters.lebm_eval:page_specs",
    "performance": "edrepro.chapters.speed:page_specs",
    "jem": "edrepro.chapters.jem_page:page_specs",
}
"""Notebook → the chapter function listing the training runs its page needs (the function the page calls)."""


def page_specs(root: Path, name: str, profile: str, overrides: dict[str, str] | None = None) -> list:
    """The training runs (:class:`edrepro.book.runs.RunSpec`) of notebook ``name`` under ``profile``; [] for a page without runs."""
    import importlib

    params = check_pages(root, [name], profile, overrides)[name]
    if name not in PAGE_RUNS:
        return []
    module, _, function = PAGE_RUNS[name].partition(":")
    return getattr(importlib.import_module(module), function)(params)


def profile_cost(name: str, measured: list, profile: str = "paper", root: Path | None = None) -> dict:
    """A rough training cost of notebook ``name`` under ``profile`` from runs measured at another budget.

    Each run of the profile is charged its steps at the mean seconds per step of the ``measured``
    :class:`edrepro.book.runs.RunRecord` of the same kind, method and data set (of the same kind and
    method when no data set matches). Evaluation is not counted. Returns the number of runs, their
    steps, the estimated CPU seconds, and how many runs had no measured counterpart.
    """
    specs = page_specs(find_root() if root is None else root, name, profile)
    if not measured:
        raise ValueError("measured must hold at least one RunRecord with a training time")

    def rate(*fields: str):
        table: dict = {}
        for r in measured:
            if r.steps > 0 and r.train_seconds > 0:
                table.setdefault(tuple(getattr(r.spec, f) for f in fields), []).append(r.train_seconds / r.steps)
        return {k: sum(v) / len(v) for k, v in table.items()}

    exact, coarse = rate("kind", "method", "dataset"), rate("kind", "method")
    seconds, unmatched, steps = 0.0, 0, 0
    for s in specs:
        per_step = exact.get((s.kind, s.method, s.dataset), coarse.get((s.kind, s.method)))
        steps += s.budget
        if per_step is None:
            unmatched += 1
        else:
            seconds += per_step * s.budget
    return {"runs": len(specs), "steps": steps, "cpu_seconds": seconds, "unmatched": unmatched}


def scale_out_commands(name: str, profile: str = "paper") -> str:
    """Markdown: the commands that compute a profile's runs on local workers or on a Dask cluster,
    export them as a results file and render the page from them."""
    return (
        f"```bash\n"
        f"# on this machine, one worker process per core:\n"
        f"python -m edrepro sweep {name} --profile {profile}\n"
        f"# or on a running Dask cluster (dask scheduler + dask worker on any machines, or dask-jobqueue on SLURM):\n"
        f"python -m edrepro sweep {name} --profile {profile} --scheduler tcp://SCHEDULER-HOST:8786\n"
        f"# then keep the compact results and render the page from the cache:\n"
        f"python -m edrepro export {name} --profile {profile}\n"
        f"python -m edrepro run {name} --profile {profile}\n"
        f"```"
    )


def sweep_notebooks(
    root: Path, names: list[str] | None, profile: str, overrides: dict[str, str] | None = None, *,
    workers: int | None = None, scheduler: str | None = None, fresh: bool = False, echo=print,
):
    """Compute every missing training run of the notebooks ``names`` (default: all) under ``profile``
    (:func:`edrepro.book.runs.sweep`) into the cache that their pages load from."""
    from . import runs

    names = list(names) if names else notebook_names(root)
    check_pages(root, names, profile, overrides)  # every name and every page's parameters, before any run
    specs = [spec for name in names for spec in page_specs(root, name, profile, overrides)]
    if not specs:
        echo("no training runs in " + ", ".join(names), flush=True)
        return runs.SweepSummary(executor="none")
    return runs.sweep(specs, workers=workers, scheduler=scheduler, fresh=fresh, echo=echo)


def build_book(
    root: Path, profile: str = "quick", force: bool = False, path_output: Path | None = None,
    warnings_as_errors: bool = True, echo=print, jobs: int = 1,
) -> tuple[list[RunRecord], Path]:
    """Compute every chapter's training runs (``jobs`` worker processes), execute every notebook of the
    TOC under ``profile`` (cached; ``jobs`` at a time) and build the HTML book.

    The HTML lands in ``PATH_OUTPUT/_build/html`` (``PATH_OUTPUT`` defaults to the repository root).
    Returns the run records and the path of the page to open.
    """
    stale = [n for n in notebook_names(root) if force or not _is_cached(executed_path(root, n, profile), cache_key(root, n, profile))]
    if stale and jobs > 1:
        summary = sweep_notebooks(root, stale, profile, workers=jobs, echo=echo)
        echo(summary.text(), flush=True)
        if summary.failed:
            raise RuntimeError("some training runs failed; see the list above")
    records = run_notebooks(root, profile=profile, force=force, echo=echo, jobs=jobs)
    output = Path(path_output or root).resolve()
    src = stage_book(root, profile, output / "_build")
    command = [
        str(Path(sys.executable).with_name("jupyter-book")), "build", str(src),
        "--config", str(root / "_config.yml"), "--toc", str(src / "_toc.yml"), "--path-output", str(output),
    ]
    if warnings_as_errors:
        command += ["-W", "--keep-going"]
    echo("building the book: " + " ".join(command), flush=True)
    env = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    result = subprocess.run(command, cwd=root, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed with exit code {result.returncode} (see the messages above)")
    return records, output / "_build" / "html" / "index.html"


COLAB_INSTALL_CELL = """\
# Installs edrepro {version}, the version this book was built with, when this notebook runs in
# Google Colab; does nothing elsewhere.
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "edrepro @ git+{url}@{ref}"], check=True)"""


INSTALL_CELL_MARK = "# Installs edrepro"  # how sync recognises an install cell of any version

# The install cell matters only in Colab; the book hides it (the page's "Reproduce" box says how to run).
INSTALL_CELL_TAG = "remove-cell"


def book_ref() -> str:
    """The git tag of the package version the notebooks are written for: ``v`` + ``edrepro.__version__``.

    The one place the version is set is ``edrepro/__init__.py``; ``python -m edrepro sync`` writes it
    into every notebook's install cell, and a release tags the commit the book is built from with it.
    """
    from .. import __version__

    return f"v{__version__}"


def colab_install_source(root: Path) -> str:
    """The first code cell of every notebook: installs the package from ``repository.url`` in
    ``_config.yml`` at the tag :func:`book_ref`, so that Colab runs the code that made the page."""
    from .. import __version__

    return COLAB_INSTALL_CELL.format(url=repository_url(root), ref=book_ref(), version=__version__)


def _cell_signature(nb) -> list[tuple]:
    return [(c.cell_type, c.source, tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def sync_notebooks(root: Path, names: list[str] | None = None) -> list[str]:
    """Make each notebook's Colab install cell match ``_config.yml`` and its ``.ipynb`` match its ``.md``.

    Files are rewritten only when their content changes, and existing cell ids are kept,
    so that a sync leaves untouched notebooks byte-for-byte as they were. Returns the
    names of the notebooks whose files changed.
    """
    import jupytext
    import nbformat

    sources = [root / "notebooks" / f"{n}.md" for n in names] if names else sorted((root / "notebooks").glob("*.md"))
    changed = []
    for source in sources:
        if not source.is_file():
            raise ValueError(f"unknown notebook {source.stem!r}: no {source}")
        nb = jupytext.read(source)
        wanted = colab_install_source(root)
        index, first_code = next(((i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"), (len(nb.cells), None))
        touched = first_code is None or first_code.source != wanted or first_code.metadata.get("tags") != [INSTALL_CELL_TAG]
        if touched and first_code is not None and first_code.source.startswith(INSTALL_CELL_MARK):
            # Edit the cell's text in place: a jupytext round trip would restyle the rest of the file.
            source.write_text(source.read_text().replace(first_code.source, wanted, 1))
            nb = jupytext.read(source)
        elif touched:  # no install cell yet: put one before the first code cell
            first_code = nbformat.v4.new_code_cell(wanted, metadata={"tags": [INSTALL_CELL_TAG]})
            nb.cells.insert(index, first_code)
            jupytext.write(nb, source, fmt="md:myst")
        paired = source.with_suffix(".ipynb")
        old = jupytext.read(paired) if paired.is_file() else None
        if old is None or _cell_signature(old) != _cell_signature(nb):
            if old is not None:  # keep the ids of cells that are still there, in order
                for new_cell, old_cell in zip(nb.cells, old.cells):
                    if "id" in old_cell and (new_cell.cell_type, new_cell.source) == (old_cell.cell_type, old_cell.source):
                        new_cell["id"] = old_cell["id"]
            jupytext.write(nb, paired, fmt="ipynb")
            touched = True
        if touched:
            changed.append(source.stem)
    return changed
