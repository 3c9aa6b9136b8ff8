"""The paper's claims, measured: a small table printed on a page and asserted.

Every chapter states the claims it reproduces, measures them and calls
:func:`check_claims`, which shows a table (claim, measured value, verdict) and, when
``enforce`` is true, fails the notebook run if any claim does not hold. The ``smoke``
profile runs with ``enforce=False`` because its budgets are too small to show anything.
"""

from __future__ import annotations

from dataclasses import dataclass


class ClaimFailed(AssertionError):
    """At least one claim of a chapter did not hold."""


@dataclass(frozen=True)
class Claim:
    """One checked statement: what is claimed, what was measured, and whether it holds."""

    statement: str
    measured: str
    holds: bool


def claims_markdown(claims: list[Claim]) -> str:
    """The claims as a markdown table."""
    lines = ["| claim | measured | holds |", "|---|---|---|"]
    lines += [f"| {c.statement} | {c.measured} | {'yes' if c.holds else '**no**'} |" for c in claims]
    return "\n".join(lines)


def check_claims(claims: list[Claim], enforce: bool = True) -> list[Claim]:
    """Display the claims table; raise :class:`ClaimFailed` naming the failed claims if ``enforce``."""
    if not claims or not all(isinstance(c, Claim) for c in claims):
        raise ValueError("claims must be a non-empty list of Claim")
    table = claims_markdown(claims)
    try:
        from IPython.display import Markdown, display

        display(Markdown(table))
    except ImportError:
        print(table)
    failed = [c for c in claims if not c.holds]
    if failed and enforce:
        raise ClaimFailed("claims that do not hold: " + "; ".join(f"{c.statement} (measured {c.measured})" for c in failed))
    if failed:
        print(f"{len(failed)} claim(s) do not hold at this budget; not enforced under this profile.")
    return claims
