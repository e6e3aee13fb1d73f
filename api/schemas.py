"""Request and response bodies. Amounts are decimal strings with a currency."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Amount = Field(pattern=r"^-?\d{1,18}(\.\d{1,12})?$", examples=["12.50"])


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NasIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    address: str = Field(min_length=1, max_length=64, description="IP address or subnet (CIDR)")
    secret: str = Field(min_length=1, max_length=128)
    vendor: Literal["generic", "mikrotik", "cisco", "juniper", "accel-ppp", "huawei"] = "generic"
    require_message_authenticator: bool = False
    site: str = Field(default="", max_length=64)
    coa_port: int = Field(default=3799, ge=1, le=65535, description="where the NAS listens for CoA/Disconnect")


class NasOut(BaseModel):
    id: str
    name: str
    address: str
    vendor: str
    require_message_authenticator: bool
    site: str
    coa_port: int


Volume = Field(pattern=r"^\d{1,9}(\.\d{1,9})?$", examples=["100"], description="GB (10^9 bytes)")


class TierIn(Strict):
    up_to_gb: str | None = Field(default=None, pattern=r"^\d{1,9}(\.\d{1,9})?$",
                                 description="cumulative overage volume this tier reaches; null: no limit")
    price_per_gb: str = Amount


class BandIn(Strict):
    name: str = Field(min_length=1, max_length=64)
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(min_length=1, max_length=7)
    start_hour: int = Field(ge=0, le=23)
    end_hour: int = Field(ge=0, le=24, description="exclusive; smaller than start_hour wraps past midnight")
    price_per_gb: str = Amount
    counts_toward_allowance: bool = False


class FairUseIn(Strict):
    cap_gb: str = Volume
    action: Literal["throttle", "block"] = "throttle"
    throttle_rate: str = Field(default="1M/1M", max_length=64, description="vendor rate limit while throttled")


class PlanTermsIn(Strict):
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    monthly_fee: str = Amount
    price_per_gb: str = Amount
    included_gb: str = Field(default="0", pattern=r"^\d{1,9}(\.\d{1,9})?$")
    tiers: list[TierIn] = Field(default_factory=list, max_length=20)
    bands: list[BandIn] = Field(default_factory=list, max_length=20)
    fair_use: FairUseIn | None = None
    payment_model: Literal["postpaid", "prepaid"] = "postpaid"
    prices_include_tax: bool = False
    timezone: str = Field(default="UTC", max_length=64)
    rate_limit: str = Field(default="", max_length=64, description="normal vendor rate limit, e.g. 50M/50M")
    dunning_days: int = Field(default=0, ge=0, le=365,
                              description="suspend the account when an invoice is this many days overdue (0: never)")

    def terms_dict(self) -> dict[str, object]:
        return self.model_dump(exclude_none=True)


class PlanIn(PlanTermsIn):
    name: str = Field(min_length=1, max_length=200)
    effective_from: datetime | None = None

    def terms_dict(self) -> dict[str, object]:
        return self.model_dump(exclude_none=True, exclude={"name", "effective_from"})


class PlanRevisionIn(PlanTermsIn):
    effective_from: datetime

    def terms_dict(self) -> dict[str, object]:
        return self.model_dump(exclude_none=True, exclude={"effective_from"})


class PlanVersionOut(BaseModel):
    effective_from: datetime
    terms: dict[str, object]


class PlanOut(BaseModel):
    id: str
    name: str
    currency: str
    monthly_fee: str
    price_per_gb: str
    versions: list[PlanVersionOut]


class AccountIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    plan_id: str = Field(min_length=1, max_length=64)
    usernames: list[str] = Field(default_factory=list, max_length=50)
    anchor_day: int = Field(default=1, ge=1, le=28, description="day of the month billing periods start")
    tax_zone: str = Field(default="", max_length=64)
    tax_rate: str = Field(default="0", pattern=r"^0(\.\d{1,6})?$", description="e.g. 0.16 for 16 %")
    credit_limit: str = Field(default="0", pattern=r"^\d{1,12}(\.\d{1,4})?$",
                              description="postpaid: how far below zero before enforcement (0: no limit)")
    opened_at: datetime | None = Field(
        default=None, description="start of the account's life (default: now); usage before it is not charged "
                                  "(a subscriber migrated while online)")


class PlanChangeIn(Strict):
    plan_id: str = Field(min_length=1, max_length=64)
    effective_from: datetime | None = None


class StatusIn(Strict):
    status: Literal["active", "suspended", "terminated"]
    reason: str = Field(default="", max_length=200)
    at: datetime | None = None


class AddonIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    gb: str = Volume
    price: str = Amount
    valid_from: datetime | None = None
    valid_days: int = Field(default=30, ge=1, le=366)


class DiscountIn(Strict):
    description: str = Field(min_length=1, max_length=200)
    percent: str = Field(default="0", pattern=r"^\d{1,3}(\.\d{1,4})?$")
    fixed_amount: str = Field(default="0", pattern=r"^\d{1,12}(\.\d{1,4})?$")
    valid_from: datetime
    valid_until: datetime


class AccountCore(BaseModel):
    """What every view of an account shows."""

    id: str
    name: str
    plan_id: str
    currency: str
    status: str
    usernames: list[str]


class AccountOut(AccountCore):
    anchor_day: int
    tax_zone: str
    tax_rate: str
    credit_limit: str
    packs: list[dict[str, object]]
    discounts: list[dict[str, object]]
    enforcement: dict[str, object] | None


class AccountSummary(AccountCore):
    opened_at: datetime
    balance: str  # what the subscriber holds: credit positive, debt negative (as GET .../balance)


class AccountPage(BaseModel):
    items: list[AccountSummary]
    next_cursor: str | None


class PaymentIn(Strict):
    amount: str = Amount
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    method: str = Field(default="bank-transfer", max_length=64)
    reference: str = Field(default="", max_length=200)


class PaymentOut(BaseModel):
    id: str
    account_id: str
    amount: str
    currency: str
    method: str
    reference: str


class Created(BaseModel):
    id: str


class BalanceOut(BaseModel):
    account_id: str
    balance: str = Field(description="Customer credit (payments minus charges), rounded to the currency's minor unit")
    balance_exact: str = Field(description="The same, unrounded (charges are rated exactly)")
    currency: str
    as_of: datetime | None


class UsageBucket(BaseModel):
    start: datetime
    upload_bytes: int
    download_bytes: int
    bands: dict[str, int] = Field(description="bytes per time-of-day band ('standard' outside any band)")


class UsageOut(BaseModel):
    account_id: str
    granularity: Literal["hour", "day"]
    buckets: list[UsageBucket]


class SessionOut(BaseModel):
    id: str
    nas_id: str
    acct_session_id: str
    username: str
    started_at: datetime
    updated_at: datetime
    stopped_at: datetime | None
    upload_bytes: int
    download_bytes: int
    charge: str
    currency: str
    framed_ip: str
    terminate_cause: str


class SessionPage(BaseModel):
    items: list[SessionOut]
    next_cursor: str | None
