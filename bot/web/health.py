"""Liveness and readiness probes.

``/healthz`` says the process serves. ``/readyz`` says whether messages are being
answered: the backlog comes from the database, which is the record of what must be
processed (Redis may have been restarted empty, and a worker that is gone leaves
no trace there), with Redis's own hand-off list and queue next to it.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, Response, jsonify
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from bot.privacy.retention import retention_status
from bot.services import Services, services
from storage.delivery import stuck_outbound
from storage.inbound import inbound_backlog
from storage.models import utcnow

bp = Blueprint("health", __name__)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, str]
    backlog: dict[str, Any] = field(default_factory=dict)


def _age(now: datetime, moment: datetime | None) -> float:
    return round(max((now - moment).total_seconds(), 0.0), 1) if moment else 0.0


def readiness(svc: Services, now: datetime) -> Readiness:
    """Ready when the database answers and no stored message has waited too long.

    An unprocessed message older than ``READY_MAX_BACKLOG_SECONDS`` means no worker
    is getting through (none running, or all stuck): not ready. Replies stuck in
    ``pending``/``sending`` past ``SENDING_LEASE_SECONDS`` are reported, not fatal:
    the sweeper reconciles them.
    """
    checks: dict[str, str] = {}
    backlog: dict[str, Any] = {}
    grace = timedelta(seconds=float(svc.config["SENDING_LEASE_SECONDS"]))
    try:
        inbound = inbound_backlog(svc.db)
        outbound = stuck_outbound(svc.db, now - grace)
    except SQLAlchemyError:
        checks["database"] = "unavailable"
    else:
        checks["database"] = "ok"
        oldest = _age(now, inbound.oldest_created_at)
        backlog = {
            "unprocessed": inbound.unprocessed,
            "oldest_unprocessed_seconds": oldest,
            "given_up": inbound.given_up,
            "outbound_stuck": outbound.count,
            "oldest_outbound_stuck_seconds": _age(now, outbound.oldest_created_at),
        }
        limit = float(svc.config["READY_MAX_BACKLOG_SECONDS"])
        checks["backlog"] = "ok" if oldest <= limit else "behind"
    try:
        # A growing hand-off list means no relay runs; a growing queue, no worker.
        backlog.update(handed_off=svc.jobs.handed_off(), queued=svc.jobs.queue.count)
        checks["redis"] = "ok"
    except RedisError:
        # Not fatal for the webhook (messages are stored and swept), but worth a signal.
        checks["redis"] = "unavailable"
    ready = checks["database"] == "ok" and checks.get("backlog") == "ok"
    return Readiness(ready=ready, checks=checks, backlog=backlog)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    svc = services()
    state = readiness(svc, utcnow())
    # Each office's last successful purge, and whether the last attempt failed. A failed
    # purge does not make the app unready; it is what an alert on retention watches.
    retention: dict[str, Any] = {"status": "unavailable"}
    if state.checks.get("database") == "ok" and state.checks.get("redis") == "ok":
        # Both answered just now; should either fail here, the next probe tells.
        with suppress(RedisError, SQLAlchemyError):
            retention = retention_status(svc, utcnow())
    body = jsonify(
        status="ok" if state.ready else "unavailable",
        checks=state.checks,
        backlog=state.backlog,
        # Deliveries kept while the database could not take them (Redis, this host's files).
        spool=svc.spool.status(),
        retention=retention,
    )
    return body, 200 if state.ready else 503
