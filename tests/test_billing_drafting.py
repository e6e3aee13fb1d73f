"""Drafting an invoice the quick way gives what the rules say (hypothesis, random usage,
rates, currencies and plan histories): usage lines priced and rounded once per line as
written out here, totals and tax summary added up, postings exactly ``journal.balanced``'s
(the same dicts, the same refusal of postings that do not balance), and a batch's plan spans
(computed once per plan history) exactly ``plan_spans`` of each account's history."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.money import ROUNDING, minor_unit
from domain.plans import PlanTerms, PlanVersion
from ledger.billing import _Plans, balanced_postings
from ledger.journal import Posting, UnbalancedTransaction, balanced
from rating.invoicing import KIND_TITLES, draft_invoice, issue_postings, plan_spans

CURRENCIES = ["USD", "JPY", "BHD"]
bands = st.sampled_from(["standard", "night", "peak"])
kinds = st.sampled_from([*KIND_TITLES, "promo"])
prices = st.decimals(min_value=0, max_value=20, places=3, allow_nan=False, allow_infinity=False)
exact = st.decimals(min_value=0, max_value=10**4, places=6, allow_nan=False, allow_infinity=False)
rates = st.decimals(min_value=0, max_value=Decimal("0.3"), places=4, allow_nan=False, allow_infinity=False)


@st.composite
def usage_totals(draw: st.DrawFn) -> dict[str, dict[str, object]]:
    keys = draw(st.lists(st.tuples(bands, kinds, prices), max_size=5, unique=True))
    return {f"{band}|{kind}|{price}": {"bytes": draw(st.integers(0, 10**13)), "amount": str(draw(exact))}
            for band, kind, price in keys}


def _taxed(amount: Decimal, rate: Decimal, currency: str, inclusive: bool) -> tuple[Decimal, Decimal, Decimal]:
    """Net, tax and gross of one line, rounded once to the currency's minor unit."""
    unit = minor_unit(currency)
    if inclusive:
        gross = amount.quantize(unit, rounding=ROUNDING)
        tax = (gross * rate / (1 + rate)).quantize(unit, rounding=ROUNDING)
        return gross - tax, tax, gross
    net = amount.quantize(unit, rounding=ROUNDING)
    tax = (net * rate).quantize(unit, rounding=ROUNDING)
    return net, tax, net + tax


def _expected_usage_line(text: str, key: str, total: dict[str, object], rate: Decimal, currency: str,
                         inclusive: bool) -> dict[str, object]:
    _, _, price = key.split("|")
    amount = Decimal(str(total["amount"]))
    net, tax, gross = _taxed(amount, rate, currency, inclusive)
    quantity = (Decimal(int(str(total["bytes"]))) / Decimal(10**9)).quantize(Decimal("0.001"), rounding=ROUNDING)
    return {"kind": "usage", "description": text, "quantity": str(quantity), "unit": "GB",
            "unit_price": str(Decimal(price)), "amount": str(gross if inclusive else net), "net": str(net),
            "tax": str(tax), "gross": str(gross), "tax_rate": str(rate), "inclusive": inclusive,
            "revenue_account": "revenue:usage", "posted": str(amount)}


@given(usage_totals(), usage_totals(), rates, st.sampled_from(CURRENCIES), st.booleans())
@settings(max_examples=300, deadline=None)
def test_usage_lines_totals_and_postings_follow_the_rules(own: dict[str, dict[str, object]],
                                                          late: dict[str, dict[str, object]], rate: Decimal,
                                                          currency: str, inclusive: bool) -> None:
    terms = PlanTerms.parse(currency, "30", "1", prices_include_tax=inclusive)
    spans = plan_spans([(0, "plan", "Home", [(0, terms)])], 1_000, 1_000 + 30 * 86_400)
    draft = draft_invoice(currency=currency, period_start=1_000, period_end=1_000 + 30 * 86_400, timezone="UTC",
                          spans=spans, usage_totals=own, packs=[], discounts=[], tax_rate=rate,
                          late_usage={"2026-09": late} if late else {})
    lines = [line.to_dict() for line in draft.lines]
    expected = [_expected_usage_line(f"Data, {band} hours, {KIND_TITLES.get(kind, kind)}", key, own[key], rate,
                                     currency, inclusive)
                for key in sorted(own) for band, kind, _ in [key.split("|")]]
    expected += [_expected_usage_line(f"Data used in 2026-09, received after its invoice: {band} hours, "
                                      f"{KIND_TITLES.get(kind, kind)}", key, late[key], rate, currency, inclusive)
                 for key in sorted(late) for band, kind, _ in [key.split("|")]]
    assert [line for line in lines if line["kind"] == "usage"] == expected
    net = tax = gross = Decimal(0)
    for line in draft.lines:
        net, tax, gross = net + line.net, tax + line.tax, gross + line.gross
    totals = draft.totals()
    assert (totals["net"], totals["tax"], totals["gross"]) == (str(net), str(tax), str(gross))
    assert (draft.net, draft.tax, draft.gross) == (net, tax, gross)
    assert Decimal(totals["gross"]) == Decimal(totals["net"]) + Decimal(totals["tax"])
    postings = issue_postings(draft.lines, "receivable:x", currency)
    assert balanced_postings(postings) == balanced([Posting(*p) for p in postings])


amounts = st.decimals(min_value=-10**6, max_value=10**6, places=8, allow_nan=False, allow_infinity=False)


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), amounts, st.sampled_from(CURRENCIES)), max_size=10),
       st.booleans())
@settings(max_examples=300, deadline=None)
def test_postings_are_journal_balanced_s_or_refused_as_it_refuses_them(
        postings: list[tuple[str, Decimal, str]], pair_them: bool) -> None:
    if pair_them:  # each with its opposite: balanced, as issuing an invoice posts them
        postings = [p for account, amount, currency in postings
                    for p in ((account, amount, currency), ("other", -amount, currency))]
    try:
        expected = balanced([Posting(*p) for p in postings])
    except UnbalancedTransaction:
        with pytest.raises(UnbalancedTransaction):
            balanced_postings(postings)
    else:
        assert balanced_postings(postings) == expected


@st.composite
def plan_histories(draw: st.DrawFn) -> list[dict[str, object]]:
    changes = sorted(draw(st.sets(st.integers(0, 60), min_size=1, max_size=3)))
    return [{"plan_id": draw(st.sampled_from(list(PLANS))), "effective_from": day * 86_400} for day in changes]


def _versions(monthly: list[str]) -> list[PlanVersion]:
    return [PlanVersion(effective_from=n * 20 * 86_400, terms=PlanTerms.parse("USD", fee, "1"))
            for n, fee in enumerate(monthly)]


class _Plan:
    def __init__(self, plan_id: UUID, name: str, versions: list[PlanVersion]) -> None:
        self.id, self.name, self.versions = plan_id, name, versions

    def plan_versions(self) -> list[PlanVersion]:
        return self.versions


PLANS = {uuid4(): _Plan(uuid4(), "Home", _versions(["30", "35"])),
         uuid4(): _Plan(uuid4(), "Pro", _versions(["50", "45", "60"]))}
for _key, _plan in PLANS.items():
    _plan.id = _key


@given(st.lists(st.tuples(plan_histories(), st.integers(0, 40), st.integers(1, 40)), min_size=1, max_size=12))
@settings(max_examples=200, deadline=None)
def test_a_batch_s_plan_spans_are_each_account_s_plan_spans(accounts: list[tuple[list[dict[str, object]], int, int]],
                                                            ) -> None:
    plans = _Plans(lambda plan_id: PLANS[plan_id])  # type: ignore[arg-type, return-value]
    for entries, from_day, days in accounts:
        start, end = from_day * 86_400, (from_day + days) * 86_400
        history = [(int(str(e["effective_from"])), str(e["plan_id"]), PLANS[e["plan_id"]].name,  # type: ignore[index]
                    [(v.effective_from, v.terms) for v in PLANS[e["plan_id"]].versions])  # type: ignore[index]
                   for e in entries]
        assert plans.spans(entries, start, end) == plan_spans(history, start, end)
