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


class NasOut(BaseModel):
    id: str
    name: str
    address: str
    vendor: str
    require_message_authenticator: bool
    site: str


class PlanIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    monthly_fee: str = Amount
    price_per_gb: str = Amount
    effective_from: datetime | None = None


class PlanOut(BaseModel):
    id: str
    name: str
    currency: str
    monthly_fee: str
    price_per_gb: str


class AccountIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    plan_id: str = Field(min_length=1, max_length=64)
    usernames: list[str] = Field(default_factory=list, max_length=50)


class AccountOut(BaseModel):
    id: str
    name: str
    plan_id: str
    currency: str
    status: str
    usernames: list[str]


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
