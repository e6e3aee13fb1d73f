"""A journal line's amount taken as stored when it is already canonical
(``money.canonical_amount``) is always what normalising and formatting it gives (``fmt``), in
the projector's decimal context: random decimal texts with exponents, leading and trailing
zeros, signs, negative zero, and more digits than the context keeps."""

from __future__ import annotations

from decimal import Context, Decimal, localcontext

from hypothesis import example, given, settings
from hypothesis import strategies as st

from projections.base import fmt
from projections.money import canonical_amount

DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=90)
TEXTS = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: format(d, "f")),
    st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: format(d, "e")),
    st.builds(lambda sign, whole, point, frac: f"{sign}{whole}{point}{frac}",
              st.sampled_from(["", "-", "+"]), DIGITS, st.sampled_from([".", ""]),
              st.one_of(st.just(""), DIGITS)),
)


@settings(max_examples=800, deadline=None)
@given(TEXTS)
@example("-0")
@example("0.000")
@example("100")
@example("1.50")
@example("-1.07771906655")
@example("1" * 45 + "." + "1" * 45)
@example("1." + "1" * 85)  # more digits than the context keeps: normalising rounds
def test_an_amount_taken_as_stored_is_the_formatted_one(text: str) -> None:
    with localcontext(Context(prec=80)):
        amount = Decimal(text)
        assert canonical_amount(text, amount) == fmt(amount)
