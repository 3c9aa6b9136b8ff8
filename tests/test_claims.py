import pytest

from edrepro.book.claims import Claim, ClaimFailed, check_claims, claims_markdown


def test_failed_claim_raises_when_enforced_and_names_it():
    claims = [Claim("a holds", "1.0", True), Claim("b holds", "0.3", False)]
    with pytest.raises(ClaimFailed, match=r"b holds \(no, measured 0.3\)"):
        check_claims(claims, enforce=True)
    assert check_claims(claims, enforce=False) == claims


def test_table_lists_every_claim():
    table = claims_markdown([Claim("a", "1", True), Claim("b", "2", False)])
    assert table.count("\n") == 3 and "| b | 2 | **no** |" in table


def test_empty_claims_rejected():
    with pytest.raises(ValueError, match="claims"):
        check_claims([])


def test_an_undecided_claim_fails_an_enforced_run_and_is_shown_as_such():
    claims = [Claim("a holds", "1.0", True), Claim("c is below d", "0.2 vs ≥ 0.1 (a lower bound)", None)]
    assert "| c is below d | 0.2 vs ≥ 0.1 (a lower bound) | undecided |" in claims_markdown(claims)
    with pytest.raises(ClaimFailed, match="c is below d \\(undecided"):
        check_claims(claims, enforce=True)


@pytest.mark.parametrize("a, b, a_is, b_is, expected", [
    (1.0, 2.0, "exact", "exact", True),
    (3.0, 2.0, "exact", "exact", False),
    (1.0, 2.0, "exact", "lower", True),      # b can only be larger: a < b shown
    (1.0, 2.0, "lower", "exact", None),      # a could be larger than 2
    (3.0, 2.0, "lower", "exact", False),     # a is at least 3 > 2
    (1.0, 2.0, "unknown", "exact", None),
    (1.0, float("inf"), "exact", "exact", False),  # a diverged run decides nothing in anyone's favour
])
def test_compare_below_lets_a_bound_decide_only_in_its_direction(a, b, a_is, b_is, expected):
    from edrepro.book.claims import compare_below

    assert compare_below(a, b, a_is, b_is) is expected


def test_instrument_checks_are_a_table_of_their_own(monkeypatch):
    from edrepro.book import claims as module

    shown = []
    monkeypatch.setattr(module, "_display", shown.append)
    with pytest.raises(ClaimFailed, match="reads digits"):
        module.check_instruments([module.InstrumentCheck("the classifier reads digits", "91 %", False)])
    module.check_instruments([module.InstrumentCheck("the classifier reads digits", "99 %", True)])
    assert all(t.startswith(module.INSTRUMENTS_HEADER) and not t.startswith(module.CLAIMS_HEADER) for t in shown)
