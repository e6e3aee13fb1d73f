"""Pure properties of rating and money: exact charges whatever the split, hour splitting that
conserves bytes, counter deltas that are never negative, per-currency rounding, 64-bit
counters and the content idempotency key. No I/O; hypothesis drives everything."""

from __future__ import annotations

import dataclasses
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from domain.accounting import COUNTER_MAX, AccountingRecord, StatusType, counter64
from domain.money import CurrencyError, Money, minor_unit, parse_amount
from domain.plans import PlanTerms, Tier
from ledger.journal import usage_postings
from rating import (
    STANDARD,
    Fragment,
    MeterState,
    UsageDelta,
    counter_delta,
    price,
    rate_fragment,
    rate_usage,
    split_by_hour,
    split_usage,
)

WIDE = Context(prec=200)  # wide enough that nothing a test sums is ever rounded
U32 = (1 << 32) - 1
T0 = 1_700_000_000

bytes_ = st.one_of(
    st.integers(0, 10**12),
    st.integers(0, COUNTER_MAX),
    st.sampled_from([0, 1, U32, U32 + 1, 10**9, COUNTER_MAX]),
)
prices = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)
currencies = st.sampled_from(["USD", "JPY", "BHD", "EUR", "KWD", "CLP"])


@st.composite
def terms(draw: st.DrawFn) -> PlanTerms:
    return PlanTerms(currency=draw(currencies), monthly_fee=Decimal("30"), price_per_gb=draw(prices))


@st.composite
def usages(draw: st.DrawFn, max_bytes: int = COUNTER_MAX) -> UsageDelta:
    start = draw(st.integers(T0, T0 + 10 * 86_400))
    end = start + draw(st.one_of(st.integers(0, 4 * 3600), st.integers(0, 40 * 86_400)))
    up = draw(st.integers(0, max_bytes))
    down = draw(st.integers(0, max_bytes))
    return UsageDelta(start, end, up, down)


def exact_sum(amounts: list[Decimal]) -> Decimal:
    with localcontext(WIDE):
        return sum(amounts, Decimal(0))


def exact_charge(price: Decimal, total_bytes: int) -> Decimal:
    return WIDE.divide(WIDE.multiply(price, Decimal(total_bytes)), Decimal(10**9))


def partition(total: int, cuts: list[int]) -> list[int]:
    """``total`` split at the given cut points (any values; reduced into [0, total])."""
    points = sorted(c % (total + 1) for c in cuts)
    bounds = [0, *points, total]
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False)]


# ---- rating is exact whatever the split ------------------------------------------------


@given(terms(), usages(), st.lists(st.integers(0, COUNTER_MAX), max_size=8),
       st.lists(st.integers(0, COUNTER_MAX), max_size=8))
def test_usage_split_at_any_byte_boundary_rates_to_the_unsplit_total(
    plan: PlanTerms, usage: UsageDelta, up_cuts: list[int], down_cuts: list[int]
) -> None:
    ups = partition(usage.upload_bytes, up_cuts)
    downs = partition(usage.download_bytes, down_cuts)
    width = max(len(ups), len(downs))
    ups += [0] * (width - len(ups))
    downs += [0] * (width - len(downs))
    parts = [UsageDelta(usage.start, usage.end, u, d) for u, d in zip(ups, downs, strict=True)]
    whole = rate_usage(plan, usage)
    charges = [rate_usage(plan, p) for p in parts]
    assert exact_sum([c.amount for c in charges]) == whole.amount
    assert sum(c.billable_bytes for c in charges) == whole.billable_bytes == usage.total_bytes
    assert whole.amount == exact_charge(plan.price_per_gb, usage.total_bytes)
    assert whole.currency == plan.currency


@given(terms(), usages())
@example(PlanTerms("USD", Decimal(30), Decimal("0.50")), UsageDelta(T0 - 1, T0 + 3600 * 5 + 7, 7, 3))
@example(PlanTerms("JPY", Decimal(30), Decimal("7")), UsageDelta(3599, 3601, COUNTER_MAX, 0))
def test_split_by_hour_conserves_bytes_and_charge_and_stays_in_its_hours(
    plan: PlanTerms, usage: UsageDelta
) -> None:
    parts = split_by_hour(usage)
    assert sum(p.upload_bytes for p in parts) == usage.upload_bytes
    assert sum(p.download_bytes for p in parts) == usage.download_bytes
    assert all(p.upload_bytes >= 0 and p.download_bytes >= 0 for p in parts)
    # contiguous cover of [start, end], each part inside one clock hour
    assert parts[0].start == usage.start and parts[-1].end == usage.end
    for before, after in zip(parts, parts[1:], strict=False):
        assert before.end == after.start
    for part in parts:
        assert part.start // 3600 == max(part.start, part.end - 1) // 3600
    if usage.end > usage.start:
        assert len(parts) == (usage.end - 1) // 3600 - usage.start // 3600 + 1
    assert exact_sum([rate_usage(plan, p).amount for p in parts]) == rate_usage(plan, usage).amount


@given(usages(max_bytes=10**15))
def test_split_by_hour_is_pro_rata_by_time(usage: UsageDelta) -> None:
    assume(usage.end > usage.start)
    duration = usage.end - usage.start
    done = 0
    for part in split_by_hour(usage):
        done += part.upload_bytes
        # cumulative bytes are floor(total * elapsed / duration): never more than a byte off
        assert done == usage.upload_bytes * (part.end - usage.start) // duration


@given(terms(), usages(), usages())
def test_rate_usage_is_deterministic_and_linear(plan: PlanTerms, a: UsageDelta, b: UsageDelta) -> None:
    assert rate_usage(plan, a) == rate_usage(plan, a)
    assert str(rate_usage(plan, a).amount) == str(rate_usage(plan, a).amount)
    both = UsageDelta(a.start, a.end, a.upload_bytes + b.upload_bytes, a.download_bytes + b.download_bytes)
    parts = [rate_usage(plan, a).amount, rate_usage(plan, b).amount]
    assert rate_usage(plan, both).amount == exact_sum(parts)
    assert rate_usage(plan, UsageDelta(a.start, a.end, 0, 0)).amount == 0
    # the charge does not depend on when the usage happened, only on how much
    shifted = dataclasses.replace(a, start=a.start + 7 * 86_400, end=a.end + 7 * 86_400)
    assert rate_usage(plan, shifted) == rate_usage(plan, a)


@given(terms(), usages(max_bytes=10**13), st.integers(0, 1000))
def test_rate_usage_scales_with_the_bytes(plan: PlanTerms, usage: UsageDelta, k: int) -> None:
    scaled = UsageDelta(usage.start, usage.end, usage.upload_bytes * k, usage.download_bytes * k)
    assert rate_usage(plan, scaled).amount == WIDE.multiply(rate_usage(plan, usage).amount, Decimal(k))


@given(terms(), usages(), st.lists(st.integers(T0, T0 + 50 * 86_400), max_size=6))
def test_split_usage_at_any_cut_conserves_bytes_and_price(
    plan: PlanTerms, usage: UsageDelta, cuts: list[int]
) -> None:
    fragments = split_usage(usage, plan, cuts)
    assert sum(f.upload_bytes for f in fragments) == usage.upload_bytes
    assert sum(f.download_bytes for f in fragments) == usage.download_bytes
    assert all(f.upload_bytes >= 0 and f.download_bytes >= 0 for f in fragments)
    if usage.end > usage.start:
        inner = {c for c in cuts if usage.start < c < usage.end}
        assert {f.start for f in fragments[1:]} == inner  # no band: split only at the cuts
    prices = [price(f.total_bytes, plan.price_per_gb) for f in fragments]
    assert exact_sum(prices) == rate_usage(plan, usage).amount


exact_prices = st.decimals(min_value=0, max_value=1000, places=18, allow_nan=False, allow_infinity=False)


@given(exact_prices, st.integers(0, COUNTER_MAX), st.integers(0, COUNTER_MAX), currencies)
def test_rated_amount_and_its_postings_are_exact_at_any_precision(
    price_per_gb: Decimal, up: int, down: int, currency: str
) -> None:
    """A price with many decimals on a 64-bit counter has more than 28 significant digits:
    neither the rated amount nor its postings may be rounded by the default context."""
    plan = PlanTerms(currency=currency, monthly_fee=Decimal(0), price_per_gb=price_per_gb)
    rated = rate_fragment(plan, MeterState(), Fragment(T0, T0 + 60, up, down, STANDARD))
    expected = exact_charge(price_per_gb, up + down)
    assert rated.amount == exact_sum([line.amount for line in rated.lines]) == expected
    postings = usage_postings("receivable:acc", rated.amount, currency) if rated.amount else []
    assert [Decimal(p["amount"]) for p in postings] == ([expected, expected.copy_negate()] if expected else [])
    assert exact_sum([Decimal(p["amount"]) for p in postings]) == 0


def test_posting_amounts_beyond_28_digits_balance_exactly() -> None:
    amount = exact_charge(Decimal("0.1234567891"), COUNTER_MAX)
    assert len(amount.as_tuple().digits) > 28
    receivable, revenue = usage_postings("receivable:acc", amount, "USD")
    assert Decimal(receivable["amount"]) == amount
    assert exact_sum([Decimal(receivable["amount"]), Decimal(revenue["amount"])]) == 0


@st.composite
def tiered_terms(draw: st.DrawFn) -> PlanTerms:
    limits = sorted(draw(st.sets(st.integers(1, 500), max_size=3)))
    tiers = [Tier(Decimal(limit), draw(prices)) for limit in limits]
    if draw(st.booleans()):
        tiers.append(Tier(None, draw(prices)))
    return PlanTerms(currency="USD", monthly_fee=Decimal(30), price_per_gb=draw(prices),
                     included_gb=Decimal(draw(st.integers(0, 200))), tiers=tuple(tiers))


@given(tiered_terms(), st.integers(0, 10**12), st.lists(st.integers(0, 10**12), max_size=6))
def test_allowance_and_tiers_rate_pieces_like_the_whole(plan: PlanTerms, total: int, cuts: list[int]) -> None:
    """Graduated pricing depends only on the cumulative position in the period."""
    whole = rate_fragment(plan, MeterState(), Fragment(T0, T0 + 60, total, 0, STANDARD))
    state, amounts = MeterState(), []
    for piece in partition(total, cuts):
        rated = rate_fragment(plan, state, Fragment(T0, T0 + 60, piece, 0, STANDARD))
        state = rated.state
        amounts.append(rated.amount)
    assert exact_sum(amounts) == whole.amount
    assert state == whole.state
    assert sum(line.bytes for line in whole.lines) == total


# ---- cumulative counters -----------------------------------------------------------------

counters = st.one_of(
    st.integers(0, COUNTER_MAX), st.integers(0, 1 << 40), st.sampled_from([0, 1, U32, U32 + 1])
)


@given(counters, counters, st.booleans())
def test_counter_delta_never_negative_and_follows_reset_rules(last: int, new: int, newer: bool) -> None:
    delta = counter_delta(last, new, newer=newer)
    assert 0 <= delta <= COUNTER_MAX
    if new >= last:
        assert delta == new - last
    elif newer:
        assert delta == new  # counter reset (NAS restart): everything reported now is new usage
    else:
        assert delta == 0  # late packet: already counted


@given(st.lists(st.integers(0, 1 << 40), min_size=1, max_size=20))
def test_monotone_counters_delta_sum_to_the_last_value(increments: list[int]) -> None:
    last, total = 0, 0
    for step in increments:
        new = last + step
        total += counter_delta(last, new, newer=True)
        last = new
    assert total == last


# ---- money -------------------------------------------------------------------------------


def test_minor_units_per_currency() -> None:
    assert minor_unit("JPY") == Decimal("1")
    assert minor_unit("USD") == Decimal("0.01")
    assert minor_unit("BHD") == Decimal("0.001")
    with pytest.raises(CurrencyError):
        minor_unit("XXX")
    with pytest.raises(CurrencyError):
        Money(Decimal(1), "usd")


@pytest.mark.parametrize(("amount", "currency", "expected"), [
    ("0.125", "USD", "0.12"), ("0.135", "USD", "0.14"), ("0.145", "USD", "0.14"), ("-0.125", "USD", "-0.12"),
    ("2.5", "JPY", "2"), ("3.5", "JPY", "4"), ("1234.4999", "JPY", "1234"), ("0.5", "JPY", "0"),
    ("0.0005", "BHD", "0.000"), ("0.0015", "BHD", "0.002"), ("1.23450", "BHD", "1.234"),
    ("1.2346", "BHD", "1.235"),
])
def test_rounding_is_bankers_at_the_currency_minor_unit(amount: str, currency: str, expected: str) -> None:
    rounded = Money(Decimal(amount), currency).rounded()
    assert rounded.amount == Decimal(expected)
    assert str(rounded.amount) == expected  # JPY has no decimals, BHD three, USD two
    assert rounded.currency == currency


@given(st.decimals(min_value=-10**9, max_value=10**9, places=9, allow_nan=False, allow_infinity=False),
       st.sampled_from(["USD", "JPY", "BHD"]))
def test_rounding_property(amount: Decimal, currency: str) -> None:
    unit = minor_unit(currency)
    rounded = Money(amount, currency).rounded().amount
    assert rounded.as_tuple().exponent == unit.as_tuple().exponent
    assert abs(rounded - amount) <= unit / 2
    if abs(rounded - amount) == unit / 2:  # a tie goes to the even neighbour
        assert (rounded / unit) % 2 == 0
    assert rounded == amount.quantize(unit, rounding=ROUND_HALF_EVEN)
    micro = amount.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN)
    assert Money(amount, currency).rated().amount == micro


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_parse_amount_refuses_floats(value: float) -> None:
    with pytest.raises(ValueError):
        parse_amount(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", [True, False, "NaN", "Infinity", "-Infinity", "sNaN", "abc", "", "1,50", None, "1e"]
)
def test_parse_amount_refuses_non_decimals(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_amount(bad)  # type: ignore[arg-type]


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_parse_amount_accepts_decimal_strings_exactly(value: Decimal) -> None:
    assert parse_amount(str(value)) == value
    assert parse_amount(value) == value


def test_parse_amount_accepts_ints_and_keeps_precision() -> None:
    assert parse_amount(7) == Decimal(7)
    assert parse_amount("0.1") + parse_amount("0.2") == Decimal("0.3")
    assert str(parse_amount("0.10")) == "0.10"


def test_money_refuses_floats_and_mixed_currencies() -> None:
    with pytest.raises(ValueError):
        Money(0.5, "USD")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Money(Decimal("NaN"), "USD")
    with pytest.raises(CurrencyError):
        Money(Decimal(1), "USD") + Money(Decimal(1), "EUR")
    with pytest.raises(ValueError):
        PlanTerms.parse("USD", "30", 0.5)
    with pytest.raises(ValueError):
        PlanTerms.parse("USD", "30", "-0.5")


# ---- 64-bit counters -----------------------------------------------------------------------


@given(st.integers(0, U32), st.integers(0, U32))
def test_counter64_combines_octets_and_gigawords(octets: int, gigawords: int) -> None:
    value = counter64(octets, gigawords)
    assert value == gigawords * 2**32 + octets
    assert value >> 32 == gigawords and value & U32 == octets
    assert 0 <= value <= COUNTER_MAX


@pytest.mark.parametrize(
    ("octets", "gigawords"), [(-1, 0), (0, -1), (1 << 32, 0), (0, 1 << 32), (1 << 40, 0)]
)
def test_counter64_rejects_values_outside_32_bits(octets: int, gigawords: int) -> None:
    with pytest.raises(ValueError):
        counter64(octets, gigawords)


def test_counter64_known_values() -> None:
    assert counter64(0, 1) == 4_294_967_296
    assert counter64(U32, U32) == COUNTER_MAX
    assert counter64(5, 2) == 2 * 4_294_967_296 + 5


@pytest.mark.parametrize("value", [-1, COUNTER_MAX + 1, 1 << 70])
def test_accounting_record_rejects_counters_out_of_range(value: int) -> None:
    with pytest.raises(ValueError):
        AccountingRecord(nas_id="n", status=StatusType.INTERIM, event_time=T0, received_at=T0,
                         acct_session_id="s", input_octets=value)
    with pytest.raises(ValueError):
        AccountingRecord(nas_id="n", status=StatusType.INTERIM, event_time=T0, received_at=T0,
                         acct_session_id="s", output_octets=value)


# ---- idempotency key -------------------------------------------------------------------------


@st.composite
def accounting_records(draw: st.DrawFn) -> AccountingRecord:
    status = draw(st.sampled_from([StatusType.START, StatusType.INTERIM, StatusType.STOP]))
    event_time = draw(st.integers(T0, T0 + 86_400))
    delay = draw(st.integers(0, 600))
    sent = draw(st.booleans())
    return AccountingRecord(
        nas_id=draw(st.sampled_from(["nas-a", "nas-b"])), status=status, event_time=event_time,
        received_at=event_time + delay, acct_session_id=draw(st.sampled_from(["s1", "s2", "81000001"])),
        username=draw(st.sampled_from(["alice", "bob"])), session_time=draw(st.integers(0, 86_400)),
        input_octets=draw(counters), output_octets=draw(counters),
        input_packets=draw(st.integers(0, U32)), output_packets=draw(st.integers(0, U32)),
        delay_time=delay, event_timestamp_sent=sent,
    )


@given(accounting_records(), st.integers(0, 600), st.integers(1, 30))
def test_retransmission_with_other_delay_and_receive_time_has_the_same_key(
    rec: AccountingRecord, new_delay: int, later: int
) -> None:
    if rec.event_timestamp_sent:
        # the NAS sent Event-Timestamp: event time is fixed, delay and receive time vary
        resent = dataclasses.replace(
            rec, delay_time=new_delay, received_at=rec.event_time + new_delay + later
        )
    else:
        # no Event-Timestamp: the derived event time itself jitters between retransmissions
        resent = dataclasses.replace(rec, delay_time=new_delay, received_at=rec.received_at + later,
                                     event_time=rec.received_at + later - new_delay)
    assert resent.idempotency_key() == rec.idempotency_key()


@given(accounting_records(), st.sampled_from(["input_octets", "output_octets", "input_packets",
                                              "output_packets", "session_time"]), st.integers(1, 1 << 33))
def test_different_counters_give_a_different_key(rec: AccountingRecord, name: str, bump: int) -> None:
    value = getattr(rec, name)
    changed = value - bump if value - bump >= 0 else value + bump
    assume(changed <= COUNTER_MAX)
    other = dataclasses.replace(rec, **{name: changed})
    assert other.idempotency_key() != rec.idempotency_key()


@given(accounting_records())
def test_key_tells_status_session_nas_and_sent_event_time_apart(rec: AccountingRecord) -> None:
    key = rec.idempotency_key()
    other_status = StatusType.STOP if rec.status is not StatusType.STOP else StatusType.INTERIM
    assert dataclasses.replace(rec, status=other_status).idempotency_key() != key
    assert dataclasses.replace(rec, acct_session_id=rec.acct_session_id + "x").idempotency_key() != key
    assert dataclasses.replace(rec, nas_id=rec.nas_id + "x").idempotency_key() != key
    # the username, framed IP and the like are not part of the content key
    assert dataclasses.replace(rec, username="mallory", framed_ip="10.0.0.9").idempotency_key() == key
    if rec.event_timestamp_sent:
        assert dataclasses.replace(rec, event_time=rec.event_time + 1).idempotency_key() != key


@given(st.integers(T0, T0 + 86_400), st.integers(1, 86_400))
def test_accounting_on_at_another_time_is_another_event(at: int, later: int) -> None:
    first = AccountingRecord(nas_id="nas-a", status=StatusType.ACCOUNTING_ON, event_time=at, received_at=at)
    again = AccountingRecord(nas_id="nas-a", status=StatusType.ACCOUNTING_ON, event_time=at + later,
                             received_at=at + later)
    resent = dataclasses.replace(first, received_at=at + 3, delay_time=3)
    assert again.idempotency_key() != first.idempotency_key()
    assert resent.idempotency_key() == first.idempotency_key()


@given(accounting_records())
def test_record_round_trips_through_json_with_the_same_key(rec: AccountingRecord) -> None:
    back = AccountingRecord.from_json(rec.to_json())
    assert back == rec
    assert back.idempotency_key() == rec.idempotency_key()


@given(st.dictionaries(st.sampled_from(["standard|overage|0.5", "night|band|0.1", "standard|included|0"]),
                       st.tuples(st.integers(0, 10**13), st.integers(0, 10**9)), min_size=1),
       st.lists(st.floats(0, 1), min_size=0, max_size=3))
def test_late_usage_is_what_no_document_billed_and_never_negative(totals, shares) -> None:
    """Usage billed in pieces (the period's invoice, then late lines on later invoices) plus
    what is still unbilled is exactly the period's usage, per key; a fully billed period
    leaves nothing; the late lines of the unbilled part price it exactly, with tax."""
    from rating.invoicing import late_usage_lines, unbilled_usage

    current = {k: {"bytes": b, "amount": str(Decimal(a) / 1000)} for k, (b, a) in totals.items()}
    billed, left_bytes = [], {k: v["bytes"] for k, v in current.items()}
    left_amount = {k: Decimal(v["amount"]) for k, v in current.items()}
    for share in shares:  # each document billed a share of what was left when it was drafted
        piece = {}
        for key in current:
            size = int(left_bytes[key] * share)
            amount = (left_amount[key] * Decimal(str(share))).quantize(Decimal("0.000001"))
            piece[key] = {"bytes": size, "amount": str(amount)}
            left_bytes[key] -= size
            left_amount[key] -= amount
        billed.append(piece)
    left = unbilled_usage(current, billed)
    for key, total in current.items():
        done_bytes = sum(p[key]["bytes"] for p in billed)
        done_amount = sum((Decimal(p[key]["amount"]) for p in billed), Decimal(0))
        rest = left.get(key, {"bytes": 0, "amount": "0"})
        assert done_bytes + rest["bytes"] == total["bytes"]
        assert done_amount + Decimal(rest["amount"]) == Decimal(total["amount"])
        assert rest["bytes"] >= 0 and Decimal(rest["amount"]) >= 0
    assert unbilled_usage(current, [*billed, left]) == {}
    lines = late_usage_lines({"2026-10": left}, Decimal("0.16"), "USD", inclusive=False)
    assert sum((line.posted for line in lines), Decimal(0)) == sum((Decimal(v["amount"]) for v in left.values()),
                                                                  Decimal(0))
    assert all(line.tax == (line.net * Decimal("0.16")).quantize(Decimal("0.01"), ROUND_HALF_EVEN) for line in lines)
