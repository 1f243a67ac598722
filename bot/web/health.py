"""Liveness and readiness probes."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from flask import Blueprint, Response, jsonify
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from bot.privacy.retention import retention_status
from bot.services import services
from storage.models import utcnow

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    svc = services()
    checks: dict[str, str] = {}
    try:
        with svc.db.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError:
        checks["database"] = "unavailable"
    backlog: dict[str, int] = {}
    try:
        # A growing backlog means no worker is relaying or working: worth an alert.
        backlog = {"handed_off": svc.jobs.handed_off(), "queued": svc.jobs.queue.count}
        checks["redis"] = "ok"
    except RedisError:
        # Not fatal for the webhook (messages are stored and swept), but worth a signal.
        checks["redis"] = "unavailable"
    ready = checks["database"] == "ok"
    # Each office's last successful purge, and whether the last attempt failed. A failed
    # purge does not make the app unready; it is what an alert on retention watches.
    retention: dict[str, Any] = {"status": "unavailable"}
    if ready and checks["redis"] == "ok":
        # Both answered just now; should either fail here, the next probe tells.
        with suppress(RedisError, SQLAlchemyError):
            retention = retention_status(svc, utcnow())
    body = jsonify(
        status="ok" if ready else "unavailable", checks=checks, backlog=backlog, retention=retention
    )
    return body, 200 if ready else 503
