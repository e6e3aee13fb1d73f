"""Properties of the tariff (hypothesis): rating in pieces costs exactly what rating in one
piece costs; bytes are conserved by every split; proration over a full period is the fee;
tax always adds up; the journal of any rated usage balances."""

from __future__ import annotations

from decimal import Decimal
from uuid import uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.money import minor_unit
from domain.plans import PlanTerms
from ledger.journal import Posting, balanced, usage_postings
from rating import DataPack, Fragment, MeterState, UsageDelta, prorate, rate_fragment, split_usage, tax_on

GB = 10**9
prices = st.decimals(min_value=0, max_value=50, places=4, allow_nan=False, allow_infinity=False)


@st.composite
def plans(draw: st.DrawFn) -> PlanTerms:
    tier_count = draw(st.integers(0, 3))
    limits = sorted(draw(st.sets(st.integers(1, 500), min_size=tier_count, max_size=tier_count)))
    tiers = [{"up_to_gb": str(limit), "price_per_gb": str(draw(prices))} for limit in limits]
    if tiers and draw(st.booleans()):
        tiers.append({"up_to_gb": None, "price_per_gb": str(draw(prices))})
    return PlanTerms.parse("USD", "30", str(draw(prices)), included_gb=str(draw(st.integers(0, 200))), tiers=tiers)


@given(plans(), st.lists(st.integers(0, 80 * GB), min_size=1, max_size=8), st.integers(0, 300 * GB))
@settings(max_examples=300, deadline=None)
def test_rating_in_pieces_costs_exactly_the_same_as_in_one_piece(terms: PlanTerms, pieces: list[int],
                                                                   already: int) -> None:
    start = MeterState()
    warm = rate_fragment(terms, start, Fragment(0, 1, 0, already, "standard")).state
    whole = rate_fragment(terms, warm, Fragment(0, 10, 0, sum(pieces), "standard"))
    state, total = warm, Decimal(0)
    for index, size in enumerate(pieces):
        rated = rate_fragment(terms, state, Fragment(index, index + 1, size, 0, "standard"))
        state, total = rated.state, total + rated.amount
    assert total == whole.amount  # exact: no tolerance
    assert state.allowance_used == whole.state.allowance_used
    assert state.overage_bytes == whole.state.overage_bytes


@given(plans(), st.integers(0, 50 * GB), st.integers(0, 50 * GB), st.integers(1, 40))
@settings(max_examples=200, deadline=None)
def test_packs_only_ever_lower_the_price(terms: PlanTerms, used: int, more: int, pack_gb: int) -> None:
    pack = DataPack(str(uuid4()), pack_gb * GB, 0, 10**10)
    without = rate_fragment(terms, MeterState(), Fragment(5, 6, used, more, "standard"))
    with_pack = rate_fragment(terms, MeterState(), Fragment(5, 6, used, more, "standard"), [pack])
    assert with_pack.amount <= without.amount
    assert sum(line.bytes for line in with_pack.lines) == used + more


night = {"name": "night", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_hour": 22,
         "end_hour": 6, "price_per_gb": "0.1"}


@given(st.integers(1_700_000_000, 1_900_000_000), st.integers(0, 3 * 86_400), st.integers(0, 10**13),
       st.integers(0, 10**13), st.sampled_from(["UTC", "America/Bogota", "Asia/Kolkata", "Europe/Madrid"]),
       st.lists(st.integers(0, 3 * 86_400), max_size=3))
@settings(max_examples=300, deadline=None)
def test_splitting_conserves_bytes_and_time(start: int, length: int, up: int, down: int, zone: str,
                                            cuts: list[int]) -> None:
    terms = PlanTerms.parse("USD", "30", "1", bands=[night], timezone=zone)
    usage = UsageDelta(start, start + length, up, down)
    fragments = split_usage(usage, terms, [start + c for c in cuts])
    assert sum(f.upload_bytes for f in fragments) == up
    assert sum(f.download_bytes for f in fragments) == down
    assert fragments[0].start == start and fragments[-1].end == start + length
    assert all(a.end == b.start for a, b in zip(fragments, fragments[1:], strict=False))
    assert all(f.band in ("night", "standard") for f in fragments)


@given(st.decimals(min_value=0, max_value=10_000, places=2), st.integers(28, 31),
       st.sampled_from(["USD", "JPY", "BHD", "EUR"]))
def test_proration_over_a_full_period_is_the_monthly_fee(fee: Decimal, days: int, currency: str) -> None:
    fee = fee.quantize(minor_unit(currency))
    assert prorate(fee, days, days, currency) == fee
    halves = prorate(fee, days // 2, days, currency) + prorate(fee, days - days // 2, days, currency)
    assert abs(halves - fee) <= minor_unit(currency)  # each half rounded once: at most one unit off


@given(st.decimals(min_value=0, max_value=100_000, places=6), st.decimals(min_value=0, max_value="0.5", places=4),
       st.booleans(), st.sampled_from(["USD", "JPY", "KWD"]))
def test_tax_adds_up_and_is_rounded_to_the_minor_unit(amount: Decimal, rate: Decimal, inclusive: bool,
                                                      currency: str) -> None:
    taxed = tax_on(amount, rate, currency, inclusive=inclusive)
    unit = minor_unit(currency)
    assert taxed.net + taxed.tax == taxed.gross
    for value in (taxed.net, taxed.tax, taxed.gross):
        assert value == value.quantize(unit)


@given(st.decimals(min_value="-1e9", max_value="1e9", places=9))
def test_usage_postings_balance_or_the_ledger_stops(amount: Decimal) -> None:
    lines = usage_postings("receivable:x", amount, "USD")
    assert sum(Decimal(line["amount"]) for line in lines) == 0
    try:
        balanced([Posting("a", amount, "USD"), Posting("b", -amount + Decimal("0.000000001"), "USD")])
    except AssertionError:
        return
    raise AssertionError("an unbalanced transaction was accepted")
