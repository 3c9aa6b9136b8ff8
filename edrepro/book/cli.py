"""Command line: ``python -m edrepro run|sweep|book|list|sync``.

- ``run [NAME ...] --profile smoke|quick|paper [-p KEY VALUE ...] [--force] [--jobs N]`` executes
  notebooks with papermill (their training runs come from the cache, or are trained in the kernel).
- ``sweep NAME [NAME ...] --profile P [-p KEY VALUE ...] [--workers N | --scheduler ADDRESS] [--fresh]``
  computes every missing training run of those chapters on local worker processes or on a Dask
  cluster, so that ``run`` then renders from the cache.
- ``book [--profile quick] [--force] [--jobs N]`` computes the runs, executes every notebook and
  builds the HTML.
- ``export NAME [NAME ...] --profile P`` writes ``results/NAME/P.json`` (curves, tables, provenance) from
  the cached runs, for the pages to show beside their live runs.
- ``claims NAME --profile P --seeds 0-39`` executes a page once per seed and counts, per claim, the
  seeds for which it holds (exit 1 if any claim fails for some seed).
- ``verify NAME --profile P [--steps N] [--rekey]`` retrains the first steps of one stored run per
  method with the current code and compares its evaluations with ``results/NAME/P.json``.
- ``--accept-other-code`` (``run``, ``sweep``, ``book``, ``claims``) uses cached runs made by other
  code or on another device type, announcing what differs; by default they are trained again.
- ``list`` prints the book's notebooks; ``sync`` rewrites the notebooks' Colab install cell from
  ``_config.yml`` and re-pairs the ``.ipynb`` files.

``run``, ``sweep``, ``export`` and ``claims`` make every check the pages would make before any work: every
name must be a notebook, and every page's parameters must pass its schema and its cross-parameter rules
(:func:`edrepro.book.pipeline.check_pages`), so a mistake in the last name or value costs nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import pipeline


def _overrides(pairs: list[list[str]] | None) -> dict[str, str]:
    return {key: value for key, value in pairs or []}


def _seeds(text: str) -> list[int]:
    """``"0-39"`` → [0, …, 39]; ``"0,3,7"`` → [0, 3, 7]."""
    try:
        if "-" in text:
            first, last = (int(v) for v in text.split("-", 1))
            seeds = list(range(first, last + 1))
        else:
            seeds = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--seeds must look like 0-39 or 0,3,7, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise ValueError(f"--seeds must name at least one seed >= 0, got {text!r}")
    return seeds


def _add_profile(parser: argparse.ArgumentParser, overrides: bool = True) -> None:
    parser.add_argument("--profile", choices=pipeline.ALL_PROFILES, default="quick", help="parameter profile (default: quick)")
    if overrides:
        parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("KEY", "VALUE"),
                            help="override a parameter of the profile (VALUE is YAML: 3, 0.1, [ed, sm], true); repeatable")


def _parser() -> argparse.ArgumentParser:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(prog="python -m edrepro", description="Run the edrepro notebooks and build the book.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute notebooks with papermill into _build/executed/PROFILE/")
    run.add_argument("names", nargs="*", metavar="NAME", help="notebooks to run (default: every notebook of the book)")
    _add_profile(run)
    run.add_argument("--force", action="store_true", help="re-execute even when source and parameters are unchanged")
    run.add_argument("--jobs", type=int, default=1, help="notebooks executed at the same time, each in its own process (default: 1)")

    sweep = sub.add_parser("sweep", help="compute the training runs of chapters on worker processes or a Dask cluster")
    sweep.add_argument("names", nargs="+", metavar="NAME", help="chapters whose runs to compute (e.g. density_ablations)")
    _add_profile(sweep)
    sweep.add_argument("--workers", type=int, default=cores, help=f"local worker processes, one torch thread each (default: {cores}, the cores)")
    sweep.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: $EDREPRO_SCHEDULER, else local workers)")
    sweep.add_argument("--fresh", action="store_true", help="delete the chapters' cached runs first and retrain them")

    export = sub.add_parser("export", help="write results/NAME/PROFILE.json (curves, tables, provenance) from the cached runs")
    export.add_argument("names", nargs="+", metavar="NAME", help="chapters to export (their runs must be in the cache: run sweep first)")
    _add_profile(export)

    book = sub.add_parser("book", help="compute the runs, execute every notebook (cached) and build the HTML book into _build/html")
    _add_profile(book, overrides=False)
    book.add_argument("--force", action="store_true", help="re-execute every notebook")
    book.add_argument("--jobs", type=int, default=cores, help=f"worker processes for the runs and notebooks run at once (default: {cores}, the cores)")
    book.add_argument("--path-output", type=Path, default=None, help="folder that receives _build/html (default: the repository root)")
    book.add_argument("--allow-warnings", action="store_true", help="do not treat Sphinx warnings as errors")

    claims = sub.add_parser("claims", help="execute a notebook for several seeds and count, per claim, the seeds for which it holds")
    claims.add_argument("name", metavar="NAME")
    _add_profile(claims)
    claims.add_argument("--seeds", default="0-4", help="seeds, e.g. 0-39 or 0,3,7 (default: 0-4)")
    claims.add_argument("--workers", type=int, default=cores, help=f"worker processes for the page's training runs (default: {cores})")

    verify = sub.add_parser("verify", help="retrain the first steps of stored runs with the current code and compare with results/NAME/PROFILE.json")
    verify.add_argument("names", nargs="+", metavar="NAME", help="chapters whose stored results to check")
    _add_profile(verify, overrides=False)
    verify.add_argument("--steps", type=int, default=300, help="steps to retrain per run, rounded up to whole evaluation intervals (default: 300)")
    verify.add_argument("--rekey", action="store_true", help="when every run reproduces, record the current code's identity in the results file")

    for command in (run, sweep, book, claims):
        command.add_argument("--accept-other-code", action="store_true",
                             help="use cached runs made by other code or on another device type (each is announced with what differs)")

    sub.add_parser("list", help="list the book's notebooks")
    sync = sub.add_parser("sync", help="make the Colab install cell match _config.yml and each .ipynb match its .md")
    sync.add_argument("names", nargs="*", metavar="NAME", help="notebooks to sync (default: all)")
    return parser


def _verify(args: argparse.Namespace, root: Path) -> int:
    from . import verify

    failed = 0
    for name in args.names:
        checks = verify.verify(root, name, args.profile, steps=args.steps)
        failed += sum(not c.reproduced for c in checks)
        if args.rekey:
            command = f"python -m edrepro verify {name} --profile {args.profile} --steps {args.steps} --rekey"
            print(f"recorded the current code in {verify.rekey(root, name, args.profile, checks, args.steps, command)}")
    return 1 if failed else 0


def _dispatch(args: argparse.Namespace, root: Path) -> int:
    if getattr(args, "accept_other_code", False):
        from . import runs

        os.environ[runs.ACCEPT_OTHER_CODE_ENV] = "1"  # notebooks' kernels and Dask workers inherit it
    if args.command == "verify":
        return _verify(args, root)
    if args.command == "list":
        print("\n".join(pipeline.notebook_names(root)))
        return 0
    if args.command == "sync":
        changed = pipeline.sync_notebooks(root, args.names or None)
        print(f"updated: {', '.join(changed)}" if changed else "all notebooks are in sync")
        return 0
    if args.command == "sweep":
        from . import results

        start_state = results.source_state(root)  # before any run trains: what the runs are trained by
        summary = pipeline.sweep_notebooks(
            root, args.names, args.profile, _overrides(args.parameter), workers=args.workers,
            scheduler=args.scheduler, fresh=args.fresh,
        )
        results.log_sweep(root, args.names, args.profile, _overrides(args.parameter), "python -m edrepro " + " ".join(sys.argv[1:]),
                          summary, start_state=start_state)
        print(summary.text())
        return 1 if summary.failed else 0
    if args.command == "export":
        from . import results

        pipeline.check_pages(root, args.names, args.profile, _overrides(args.parameter))  # every name and page, before writing any file
        for name in args.names:
            print(f"wrote {results.export(root, name, args.profile, _overrides(args.parameter))}")
        return 0
    if args.command == "claims":
        seeds = _seeds(args.seeds)
        pipeline.check_names(root, [args.name])
        failures = pipeline.claims_across_seeds(root, args.name, args.profile, seeds, _overrides(args.parameter), workers=args.workers)
        print(f"\n{args.name} ({args.profile}), seeds {args.seeds}:")
        for claim, failed in failures.items():
            print(f"  {len(seeds) - len(failed)}/{len(seeds)}  {claim}" + (f"   (fails for seeds {failed})" if failed else ""))
        return 1 if any(failures.values()) else 0
    if args.command == "run":
        records = pipeline.run_notebooks(root, args.names or None, args.profile, args.force, jobs=args.jobs, overrides=_overrides(args.parameter))
        print("\n" + pipeline.summary_table(records))
        return 0
    records, page = pipeline.build_book(
        root, profile=args.profile, force=args.force, path_output=args.path_output,
        warnings_as_errors=not args.allow_warnings, jobs=args.jobs,
    )
    print("\n" + pipeline.summary_table(records))
    print(f"\nThe book is built. Open {page}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root = pipeline.find_root()
    try:
        return _dispatch(args, root)
    except (pipeline.NotebookFailed, ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
