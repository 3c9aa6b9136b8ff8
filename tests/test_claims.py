import pytest

from edrepro.book.claims import Claim, ClaimFailed, check_claims, claims_markdown


def test_failed_claim_raises_when_enforced_and_names_it():
    claims = [Claim("a holds", "1.0", True), Claim("b holds", "0.3", False)]
    with pytest.raises(ClaimFailed, match=r"b holds \(measured 0.3\)"):
        check_claims(claims, enforce=True)
    assert check_claims(claims, enforce=False) == claims


def test_table_lists_every_claim():
    table = claims_markdown([Claim("a", "1", True), Claim("b", "2", False)])
    assert table.count("\n") == 3 and "| b | 2 | **no** |" in table


def test_empty_claims_rejected():
    with pytest.raises(ValueError, match="claims"):
        check_claims([])
