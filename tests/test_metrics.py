"""Completion metrics: bounds and known values."""

from hypothesis import given
from hypothesis import strategies as st

from distill_code.metrics import edit_similarity, exact_match, identifier_f1


def test_known_values() -> None:
    assert exact_match(" x = 1\n", "x = 1") == 1.0
    assert exact_match("x = 2", "x = 1") == 0.0
    assert edit_similarity("kitten", "sitting") == 1 - 3 / 7
    assert identifier_f1("foo(bar)", "foo(baz)") == 0.5


@given(st.text(max_size=30), st.text(max_size=30))
def test_bounds_and_identity(a: str, b: str) -> None:
    assert 0.0 <= edit_similarity(a, b) <= 1.0
    assert edit_similarity(a, a) == 1.0
    assert 0.0 <= identifier_f1(a, b) <= 1.0
