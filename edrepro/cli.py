"""Command line: ``python -m edrepro run|book|list``.

- ``run [NAME ...] --profile smoke|quick|paper [--force]`` executes notebooks with papermill.
- ``book [--profile quick] [--force]`` executes every notebook of the book, then builds the HTML.
- ``list`` prints the book's notebooks.
- ``sync`` rewrites the notebooks' Colab install cell from ``_config.yml`` and re-pairs the ``.ipynb`` files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import pipeline


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edrepro", description="Run the edrepro notebooks and build the book.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute notebooks with papermill into _build/executed/PROFILE/")
    run.add_argument("names", nargs="*", metavar="NAME", help="notebooks to run (default: every notebook of the book)")
    run.add_argument("--profile", choices=pipeline.PROFILES, default="quick", help="parameter profile (default: quick)")
    run.add_argument("--force", action="store_true", help="re-execute even when source and parameters are unchanged")

    book = sub.add_parser("book", help="execute every notebook (cached) and build the HTML book into _build/html")
    book.add_argument("--profile", choices=pipeline.PROFILES, default="quick", help="parameter profile (default: quick)")
    book.add_argument("--force", action="store_true", help="re-execute every notebook")
    book.add_argument("--path-output", type=Path, default=None, help="folder that receives _build/html (default: the repository root)")
    book.add_argument("--allow-warnings", action="store_true", help="do not treat Sphinx warnings as errors")

    sub.add_parser("list", help="list the book's notebooks")
    sync = sub.add_parser("sync", help="make the Colab install cell match _config.yml and each .ipynb match its .md")
    sync.add_argument("names", nargs="*", metavar="NAME", help="notebooks to sync (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root = pipeline.find_root()
    try:
        if args.command == "list":
            for name in pipeline.notebook_names(root):
                print(name)
            return 0
        if args.command == "sync":
            changed = pipeline.sync_notebooks(root, args.names or None)
            print(f"updated: {', '.join(changed)}" if changed else "all notebooks are in sync")
            return 0
        if args.command == "run":
            records = pipeline.run_notebooks(root, args.names or None, profile=args.profile, force=args.force)
            print()
            print(pipeline.summary_table(records))
            return 0
        records, page = pipeline.build_book(
            root, profile=args.profile, force=args.force, path_output=args.path_output,
            warnings_as_errors=not args.allow_warnings,
        )
        print()
        print(pipeline.summary_table(records))
        print(f"\nThe book is built. Open {page}")
        return 0
    except (pipeline.NotebookFailed, ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
