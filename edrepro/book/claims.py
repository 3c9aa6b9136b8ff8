"""The paper's claims, measured: a small table printed on a page and asserted.

Every chapter states the claims it reproduces, measures them and calls :func:`check_claims`, which
shows a table (claim, measured value, verdict) and, when ``enforce`` is true, fails the notebook
run if any claim does not hold *or is undecided*. The ``smoke`` profile runs with
``enforce=False`` because its budgets are too small to show anything.

A claim is a statement about the paper's science that the measurement could contradict: each
claim of the book is computed by a function of the package, and the tests hold, for each, a
counterfactual input on which it fails. A claim is **undecided** (``holds=None``) when the
measurement cannot decide it, for instance when a value is only a bound and the bound points the
wrong way: a lower bound on one method's error can show that it is *worse* than another's, never
that it is better (:func:`compare_below`).

Checks that the instruments work (a classifier reads digits, a sampler mixes, a quadrature
region holds the mass) are not claims about the paper: :func:`check_instruments` shows them in a
table of their own, headed "instrument check".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CLAIMS_HEADER = "| claim | measured | holds |"
INSTRUMENTS_HEADER = "| instrument check | measured | passes |"


class ClaimFailed(AssertionError):
    """At least one claim of a chapter did not hold or was undecided (or an instrument check failed)."""


@dataclass(frozen=True)
class Claim:
    """One checked statement: what is claimed, what was measured, and whether it holds (None: undecided)."""

    statement: str
    measured: str
    holds: bool | None


@dataclass(frozen=True)
class InstrumentCheck:
    """A check that a measuring instrument works; it is shown, and may be enforced, but is not a claim."""

    check: str
    measured: str
    passes: bool


def _verdict(holds: bool | None) -> str:
    return "undecided" if holds is None else "yes" if holds else "**no**"


def claims_markdown(claims: list[Claim]) -> str:
    """The claims as a markdown table."""
    lines = [CLAIMS_HEADER, "|---|---|---|"]
    lines += [f"| {c.statement} | {c.measured} | {_verdict(c.holds)} |" for c in claims]
    return "\n".join(lines)


def _display(table: str) -> None:
    try:
        from IPython.display import Markdown, display

        display(Markdown(table))
    except ImportError:
        print(table)


def check_claims(claims: list[Claim], enforce: bool = True) -> list[Claim]:
    """Display the claims table; raise :class:`ClaimFailed` naming the claims that failed or are
    undecided if ``enforce``."""
    if not claims or not all(isinstance(c, Claim) for c in claims):
        raise ValueError("claims must be a non-empty list of Claim")
    _display(claims_markdown(claims))
    failed = [c for c in claims if c.holds is not True]
    if failed and enforce:
        raise ClaimFailed("claims that do not hold or are undecided: "
                          + "; ".join(f"{c.statement} ({_verdict(c.holds).strip('*')}, measured {c.measured})" for c in failed))
    if failed:
        print(f"{len(failed)} claim(s) do not hold or are undecided at this budget; not enforced under this profile.")
    return claims


def check_instruments(checks: list[InstrumentCheck], enforce: bool = True) -> list[InstrumentCheck]:
    """Display the instrument checks in their own table; raise :class:`ClaimFailed` if one fails and ``enforce``."""
    if not checks or not all(isinstance(c, InstrumentCheck) for c in checks):
        raise ValueError("checks must be a non-empty list of InstrumentCheck")
    lines = [INSTRUMENTS_HEADER, "|---|---|---|"] + [f"| {c.check} | {c.measured} | {'yes' if c.passes else '**no**'} |" for c in checks]
    _display("\n".join(lines))
    failed = [c for c in checks if not c.passes]
    if failed and enforce:
        raise ClaimFailed("instrument checks that fail: " + "; ".join(f"{c.check} (measured {c.measured})" for c in failed))
    return checks


def compare_below(a: float, b: float, a_is: str = "exact", b_is: str = "exact") -> bool | None:
    """Whether a < b, where each value is ``"exact"``, a ``"lower"`` bound or an ``"upper"`` bound of
    the quantity, or ``"unknown"`` (not a bound in either direction). Returns None (undecided) when the
    bounds cannot decide it; a non-finite value (a diverged run) never makes it hold.

    a < b is shown when a's largest possible value is below b's smallest: a exact or an upper bound,
    and b exact or a lower bound. a ≥ b is shown when a's smallest possible value is at least b's
    largest. Anything else is undecided.
    """
    kinds = ("exact", "lower", "upper", "unknown")
    for name, kind in (("a_is", a_is), ("b_is", b_is)):
        if kind not in kinds:
            raise ValueError(f"{name} must be one of {kinds}, got {kind!r}")
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    if a < b and a_is in ("exact", "upper") and b_is in ("exact", "lower"):
        return True
    if a >= b and a_is in ("exact", "lower") and b_is in ("exact", "upper"):
        return False
    return None
