"""What a chapter page shows besides figures: tables, glued numbers and provenance lines.

A number that the prose of a page states is *glued*: the page computes it, :func:`glue`
stores it under a name in the executed notebook, and the markdown refers to it with
``{glue:text}`name:.3g``` (MyST-NB), so the sentence always shows the value of the run that
built the page. Outside Jupyter Book (Colab, a plain kernel) the value is printed instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def glue(name: str, value: Any, display: bool = False) -> Any:
    """Store ``value`` under ``name`` for the page's prose (``{glue:text}`name```); return the value.

    Uses MyST-NB's ``glue`` when it is installed (the book build), else prints ``name = value``
    when ``display`` is set, so a reader in Colab sees the number too.
    """
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"name must be a word of letters, digits, '_' or '-', got {name!r}")
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        if display:
            print(f"{name} = {value}")
        return value
    myst_glue(name, value, display=display)
    return value


def format_value(value: Any, digits: int = 2) -> str:
    """A table cell: floats with ``digits`` decimals (∞ for infinities), None as an em dash, the rest as str."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 2) -> str:
    """A markdown table; every cell goes through :func:`format_value`."""
    header = list(header)
    if not header:
        raise ValueError("header must name at least one column")
    rows = [list(r) for r in rows]
    bad = [i for i, r in enumerate(rows) if len(r) != len(header)]
    if bad:
        raise ValueError(f"every row must have {len(header)} cells like the header; row {bad[0]} has {len(rows[bad[0]])}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(format_value(v, digits) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def show_markdown(text: str) -> None:
    """Display markdown (a table, a note) in a notebook; print it elsewhere."""
    try:
        from IPython.display import Markdown, display
    except ImportError:
        print(text)
        return
    display(Markdown(text))
