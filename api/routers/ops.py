"""Health and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from ..deps import RuntimeDep

router = APIRouter(tags=["ops"])


@router.get("/health")
def health(runtime: RuntimeDep, response: Response) -> dict[str, object]:
    checks: dict[str, object] = {}
    try:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["read_models"] = "ok"
    except Exception as error:  # report, do not raise: this is the health endpoint
        checks["read_models"] = f"error: {type(error).__name__}"
    checks["ledger_position"] = runtime.ledger.recorder.max_notification_id() or 0
    checks["projected_position"] = runtime.projector.position()
    checks["accounting_position"] = runtime.intake.position()
    checks["rated_position"] = runtime.ledger.tracked_position("AccountingLog")
    healthy = checks["read_models"] == "ok"
    response.status_code = 200 if healthy else 503
    return {"status": "ok" if healthy else "degraded", "mode": runtime.settings.mode, "checks": checks}


@router.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
