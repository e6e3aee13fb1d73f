"""What the operator configures: NAS devices and plans. Event-sourced, so every change
is audited and ships to the standby site with everything else."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.ids import nas_address_id
from domain.plans import PlanTerms, PlanVersion


class Nas(Aggregate):
    """A BNG allowed to send accounting: its address names it (one secret per address)."""

    @staticmethod
    def create_id(address: str, **_: Any) -> UUID:
        return nas_address_id(address)

    @event("Registered")
    def __init__(
        self,
        address: str,
        name: str,
        secret: str,
        vendor: str,
        require_message_authenticator: bool,
        site: str,
        coa_port: int = 3799,
    ) -> None:
        self.address = address
        self.name = name
        self.secret = secret
        self.vendor = vendor
        self.require_message_authenticator = require_message_authenticator
        self.site = site
        self.coa_port = coa_port
        self.retired = False

    @event("Retired")
    def retire(self) -> None:
        self.retired = True


class Plan(Aggregate):
    """A plan a WISP sells; its terms are versioned and effective-dated."""

    @event("Created")
    def __init__(self, name: str, terms: dict[str, str], effective_from: int) -> None:
        self.name = name
        self.versions: list[dict[str, Any]] = [{"effective_from": effective_from, "terms": terms}]

    @event("Revised")
    def revise(self, terms: dict[str, str], effective_from: int) -> None:
        if effective_from <= self.versions[-1]["effective_from"]:
            raise ValueError("a revision takes effect after the current version")
        self.versions.append({"effective_from": effective_from, "terms": terms})

    def plan_versions(self) -> list[PlanVersion]:
        return [PlanVersion(v["effective_from"], PlanTerms.from_dict(v["terms"])) for v in self.versions]

    @property
    def currency(self) -> str:
        return str(self.versions[-1]["terms"]["currency"])
