"""Deterministic identifiers: the same natural key always names the same aggregate,
so retries, replays and the other site arrive at the same id."""

from __future__ import annotations

from uuid import UUID, uuid5

NAMESPACE = UUID("6c1f3f8e-2f59-4c1e-9d0b-8a7c0b7e51a1")


def accounting_record_id(idempotency_key: str) -> UUID:
    return uuid5(NAMESPACE, f"record:{idempotency_key}")


def session_id(nas_id: str, acct_session_id: str) -> UUID:
    """All incarnations of one Acct-Session-Id on one NAS share an aggregate; the
    incarnation (start time) is resolved inside it."""
    return uuid5(NAMESPACE, f"session:{nas_id}:{acct_session_id}")


def nas_sessions_id(nas_id: str, shard: str = "") -> UUID:
    """The open-session registry of a NAS; in the distributed mode one per accounting-log
    partition (``shard``), since the sessions of one NAS spread over partitions."""
    return uuid5(NAMESPACE, f"nas-sessions:{nas_id}" + (f"#{shard}" if shard else ""))


def username_id(username: str) -> UUID:
    return uuid5(NAMESPACE, f"username:{username.casefold()}")


def nas_address_id(address: str) -> UUID:
    return uuid5(NAMESPACE, f"nas-address:{address}")


def payment_id(idempotency_key: str) -> UUID:
    return uuid5(NAMESPACE, f"payment:{idempotency_key}")
