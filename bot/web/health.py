"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from bot.services import services

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
    body = jsonify(
        status="ok" if ready else "unavailable",
        checks=checks,
        backlog=backlog,
        # Deliveries kept while the database could not take them (Redis, this host's files).
        spool=svc.spool.status(),
    )
    return body, 200 if ready else 503
