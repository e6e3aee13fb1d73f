"""This site's role and epoch, its replication lag, and promotion/demotion."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from adapters.shipping import demote, promote

from ..deps import RuntimeDep, require
from ..stores import ledger_store

router = APIRouter(prefix="/v1/site", tags=["site"])


def site_status(runtime: Any) -> dict[str, Any]:
    store = ledger_store(runtime)
    record = store.site(default_name=runtime.settings.site, default_role=runtime.settings.site_role)
    head, head_hash = store.chain_head()
    status: dict[str, Any] = {
        "name": record.name, "role": record.role, "epoch": record.epoch, "changed_at": record.changed_at,
        "reason": record.reason, "head_position": head, "head_hash": head_hash,
        "divergent_events_set_aside": store.divergent_count(),
    }
    controller = runtime.__dict__.get("_site_controller")
    if controller is not None:
        # The record changes first (CLI or API); the running process follows within seconds.
        status["serving_as"] = "active" if controller.active else "standby"
    elif (serving := store.serving()) is not None:
        # A distributed site: what its site controller (in `relay`) has put into effect.
        status["serving_as"] = serving
    if not record.active:
        lag = max(0, record.peer_head - head)
        status["replication"] = {
            "peer_epoch": record.peer_epoch, "peer_head": record.peer_head, "lag_positions": lag,
            # Seconds since this site last held the active's head: grows while the link is cut.
            "lag_seconds": max(0, int(time.time()) - record.caught_up_at) if record.caught_up_at else None,
            "resubmission_pending_from": record.resubmit_from or None,
        }
    return status


@router.get("", dependencies=[require("admin", "auditor", "replication")])
def status(runtime: RuntimeDep) -> dict[str, Any]:
    return site_status(runtime)


@router.post("/promote", dependencies=[require("admin")])
def promote_site(runtime: RuntimeDep) -> dict[str, Any]:
    """Make this site active at a higher epoch (its RADIUS port starts answering)."""
    store = ledger_store(runtime)
    record = store.site(default_name=runtime.settings.site, default_role=runtime.settings.site_role)
    if not record.active:
        promote(store, record, reason="promoted through the API")
    return site_status(runtime)


@router.post("/demote", dependencies=[require("admin")])
def demote_site(runtime: RuntimeDep) -> dict[str, Any]:
    """Make this site a standby (it stops rating and answering RADIUS, and follows its peer)."""
    store = ledger_store(runtime)
    record = store.site(default_name=runtime.settings.site, default_role=runtime.settings.site_role)
    if record.active:
        demote(store, record, reason="demoted through the API")
    return site_status(runtime)
