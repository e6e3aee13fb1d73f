"""Pricing usage with a plan's tariff: time-of-day bands, period boundaries, the included
allowance, add-on data packs, graduated overage tiers and the fair-use cap.

Everything is exact: bytes are integers (split pro rata by time with the remainders carried,
so the parts always sum to the whole), money is Decimal computed without rounding, and the
cost of usage depends only on the cumulative position in the period. Hence usage rated in
pieces costs exactly what it costs in one piece (graduated tiers are additive).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from domain.calendar import hour_boundaries
from domain.plans import Band, PlanTerms, gb_to_bytes

from .usage import EXACT, UsageDelta, price

STANDARD = "standard"


@dataclass(frozen=True, slots=True)
class Fragment:
    """Usage inside one band and one billing period."""

    start: int
    end: int
    upload_bytes: int
    download_bytes: int
    band: str

    @property
    def total_bytes(self) -> int:
        return self.upload_bytes + self.download_bytes


@dataclass(frozen=True, slots=True)
class DataPack:
    """An add-on data pack: extra allowance valid in [valid_from, valid_until)."""

    pack_id: str
    total_bytes: int
    valid_from: int
    valid_until: int


@dataclass(frozen=True, slots=True)
class MeterState:
    """What a billing period has consumed so far."""

    allowance_used: int = 0
    overage_bytes: int = 0
    fair_use_bytes: int = 0
    fair_use_reached: bool = False
    packs_used: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"allowance_used": self.allowance_used, "overage_bytes": self.overage_bytes,
                "fair_use_bytes": self.fair_use_bytes, "fair_use_reached": self.fair_use_reached,
                "packs_used": dict(self.packs_used)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> MeterState:
        packs = data.get("packs_used") or {}
        assert isinstance(packs, dict)
        return cls(int(str(data["allowance_used"])), int(str(data["overage_bytes"])),
                   int(str(data["fair_use_bytes"])), bool(data["fair_use_reached"]),
                   {str(k): int(v) for k, v in packs.items()})


@dataclass(frozen=True, slots=True)
class ChargeLine:
    """One priced slice of a fragment: what consumed it and at what price."""

    band: str
    kind: str  # included | pack | overage | band
    bytes: int
    price_per_gb: Decimal
    amount: Decimal
    pack_id: str = ""

    def to_dict(self) -> dict[str, str | int]:
        return {"band": self.band, "kind": self.kind, "bytes": self.bytes,
                "price_per_gb": str(self.price_per_gb), "amount": str(self.amount), "pack_id": self.pack_id}


@dataclass(frozen=True, slots=True)
class Rated:
    lines: tuple[ChargeLine, ...]
    state: MeterState
    fair_use_crossed: bool

    @property
    def amount(self) -> Decimal:
        total = Decimal(0)
        for line in self.lines:
            total = EXACT.add(total, line.amount)  # exact: the default context rounds at 28 digits
        return total


def band_named(terms: PlanTerms, name: str) -> Band | None:
    return next((band for band in terms.bands if band.name == name), None)


def _band_at(terms: PlanTerms, weekday: int, hour: int) -> str:
    for band in terms.bands:
        if band.covers(weekday, hour):
            return band.name
    return STANDARD


def split_usage(usage: UsageDelta, terms: PlanTerms, cuts: Sequence[int] = ()) -> list[Fragment]:
    """Split usage pro rata by time at band changes and at ``cuts`` (billing period
    boundaries). Bytes are apportioned with remainders carried: the fragments sum exactly to
    the usage. Usage with no duration belongs to the band at its end."""
    if usage.end <= usage.start:
        band = STANDARD
        if terms.bands:
            (_, _, weekday, hour), = hour_boundaries(usage.end, usage.end + 1, terms.timezone)
            band = _band_at(terms, weekday, hour)
        return [Fragment(usage.start, usage.end, usage.upload_bytes, usage.download_bytes, band)]
    # Pieces of constant band, then cut further at period boundaries.
    if terms.bands:
        pieces = [(a, b, _band_at(terms, wd, hr)) for a, b, wd, hr in
                  hour_boundaries(usage.start, usage.end, terms.timezone)]
    else:
        pieces = [(usage.start, usage.end, STANDARD)]
    inner_cuts = sorted({c for c in cuts if usage.start < c < usage.end})
    spans: list[tuple[int, int, str]] = []
    for a, b, band in pieces:
        points = [a, *[c for c in inner_cuts if a < c < b], b]
        for lo, hi in zip(points, points[1:], strict=False):
            if spans and spans[-1][2] == band and spans[-1][1] == lo and lo not in inner_cuts:
                spans[-1] = (spans[-1][0], hi, band)
            else:
                spans.append((lo, hi, band))
    duration = usage.end - usage.start
    fragments = []
    up_done = down_done = 0
    for lo, hi, band in spans:
        elapsed = hi - usage.start
        up_total = usage.upload_bytes * elapsed // duration
        down_total = usage.download_bytes * elapsed // duration
        fragments.append(Fragment(lo, hi, up_total - up_done, down_total - down_done, band))
        up_done, down_done = up_total, down_total
    return fragments


def _tiered(terms: PlanTerms, position: int, bytes_: int, band: str) -> list[ChargeLine]:
    """Overage priced by graduated tiers from cumulative overage ``position``."""
    if not terms.tiers:
        return [ChargeLine(band, "overage", bytes_, terms.price_per_gb, price(bytes_, terms.price_per_gb))]
    lines = []
    lower = 0
    remaining, cursor = bytes_, position
    for tier in terms.tiers:
        upper = None if tier.up_to_gb is None else gb_to_bytes(tier.up_to_gb)
        if upper is not None and cursor >= upper:
            lower = upper
            continue
        take = remaining if upper is None else min(remaining, upper - max(cursor, lower))
        if take > 0:
            lines.append(ChargeLine(band, "overage", take, tier.price_per_gb, price(take, tier.price_per_gb)))
            remaining -= take
            cursor += take
        if remaining == 0:
            break
        lower = upper if upper is not None else lower
    if remaining:  # beyond the last bounded tier: the plan's base price
        lines.append(ChargeLine(band, "overage", remaining, terms.price_per_gb, price(remaining, terms.price_per_gb)))
    return lines


def rate_fragment(terms: PlanTerms, state: MeterState, fragment: Fragment,
                  packs: Sequence[DataPack] = ()) -> Rated:
    """Price one fragment against what the period has consumed so far."""
    bytes_ = fragment.total_bytes
    band = band_named(terms, fragment.band)
    lines: list[ChargeLine] = []
    if band is not None and not band.counts_toward_allowance:
        lines.append(ChargeLine(band.name, "band", bytes_, band.price_per_gb, price(bytes_, band.price_per_gb)))
        return Rated(tuple(lines), state, False)
    remaining = bytes_
    allowance_left = max(0, terms.included_bytes - state.allowance_used)
    included = min(remaining, allowance_left)
    if included:
        lines.append(ChargeLine(fragment.band, "included", included, Decimal(0), Decimal(0)))
        remaining -= included
    packs_used = dict(state.packs_used)
    for pack in sorted(packs, key=lambda p: (p.valid_until, p.pack_id)):
        if not remaining:
            break
        if not pack.valid_from <= fragment.start < pack.valid_until:
            continue
        take = min(remaining, pack.total_bytes - packs_used.get(pack.pack_id, 0))
        if take > 0:
            lines.append(ChargeLine(fragment.band, "pack", take, Decimal(0), Decimal(0), pack.pack_id))
            packs_used[pack.pack_id] = packs_used.get(pack.pack_id, 0) + take
            remaining -= take
    overage = 0
    if remaining:
        if band is not None:  # a band that counts toward the allowance but has its own price
            lines.append(ChargeLine(band.name, "band", remaining, band.price_per_gb,
                                    price(remaining, band.price_per_gb)))
        else:
            lines.extend(_tiered(terms, state.overage_bytes, remaining, fragment.band))
            overage = remaining
    fair_bytes = state.fair_use_bytes + bytes_
    crossed = False
    reached = state.fair_use_reached
    if terms.fair_use is not None and not reached and fair_bytes >= gb_to_bytes(terms.fair_use.cap_gb):
        crossed = reached = True
    # Every field given: what dataclasses.replace builds, without its per-call field walk.
    new_state = MeterState(allowance_used=state.allowance_used + included,
                           overage_bytes=state.overage_bytes + overage, fair_use_bytes=fair_bytes,
                           fair_use_reached=reached, packs_used=packs_used)
    return Rated(tuple(lines), new_state, crossed)
