"""Enforcement rules: when a subscriber is throttled or cut off, and what the NAS is told.

Pure: the balance, the plan and the account state come in; a decision goes out. The
attributes a CoA carries depend on the BNG vendor's rate-limit attribute."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

THROTTLE = "throttle"
BLOCK = "block"


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # throttle | block
    reason: str  # prepaid-exhausted | credit-limit | fair-use | suspended
    rate: str = ""  # for throttle: "rx/tx", e.g. "2M/2M"


def balance_decision(payment_model: str, credit: Decimal, credit_limit: Decimal) -> Decision | None:
    """Prepaid: cut off at zero credit. Postpaid: cut off past the credit limit (0 = none)."""
    if payment_model == "prepaid":
        return Decision(BLOCK, "prepaid-exhausted") if credit <= 0 else None
    if credit_limit > 0 and -credit > credit_limit:
        return Decision(BLOCK, "credit-limit")
    return None


def _bits(rate: str) -> int:
    """'2M' -> 2_000_000, '512k' -> 512_000, '1G' -> 10^9, '300000' -> 300000."""
    text = rate.strip().lower()
    scale = {"k": 10**3, "m": 10**6, "g": 10**9}.get(text[-1:], 1)
    number = text[:-1] if scale != 1 else text
    return int(Decimal(number) * scale)


def rate_limit_attributes(vendor: str, rate: str) -> list[tuple[str, str | int]]:
    """The vendor's attributes setting a subscriber's rate limit ``rx/tx`` (e.g. '2M/2M')."""
    rx, _, tx = rate.partition("/")
    tx = tx or rx
    if vendor in ("mikrotik", "accel-ppp", "generic"):
        # accel-ppp's shaper reads Mikrotik-Rate-Limit when configured with vendor=Mikrotik.
        return [("Mikrotik-Rate-Limit", f"{rx}/{tx}")]
    if vendor == "cisco":
        return [("Cisco-AVPair", f"subscriber:sa=RATE-{rx.upper()}-{tx.upper()}")]
    if vendor == "juniper":
        return [("ERX-Ingress-Policy-Name", f"RATE-{tx.upper()}"), ("ERX-Egress-Policy-Name", f"RATE-{rx.upper()}")]
    if vendor == "huawei":
        return [("Huawei-Input-Average-Rate", _bits(tx)), ("Huawei-Output-Average-Rate", _bits(rx))]
    raise ValueError(f"no rate-limit attribute known for vendor {vendor!r}")
