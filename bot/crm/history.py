"""The delivery log (per endpoint: status, latency, attempts, last error) and replays.

A replay writes new pending deliveries of stored events (one event, or those of a time
range) for the office's endpoints that take their type: the same event ids, so a
receiver that already has an event ignores it again. Replayed deliveries come after
whatever already waits for their conversation. Events exist only while some endpoint
takes them and within ``retention.webhook_days``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, insert, select
from sqlalchemy.orm import Session

from bot.crm.endpoints import By
from bot.crm.events import nudge, pending_delivery
from bot.exceptions import InvalidInput, NotFound
from bot.privacy.audit import record_audit
from bot.services import Services
from storage.models import WebhookDelivery, WebhookEndpoint, WebhookEvent, iso_utc, utcnow
from storage.vocabulary import WebhookDeliveryStatus

MAX_REPLAY_EVENTS = 10_000
LOG_LENGTH = 100
DELIVERY_STATUSES = tuple(s.value for s in WebhookDeliveryStatus)


def delivery_json(delivery: WebhookDelivery) -> dict[str, Any]:
    """One delivery as the API and the console show it (never the payload)."""
    return {
        "id": delivery.id,
        "endpoint_id": delivery.endpoint_id,
        "event_id": delivery.event.uid,
        "event_type": delivery.event.type,
        "conversation_id": delivery.conversation_id,
        "status": delivery.status,
        "replay": delivery.replay,
        "attempts": delivery.attempts,
        "latency_ms": delivery.latency_ms,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "created_at": iso_utc(delivery.created_at),
        "last_attempt_at": iso_utc(delivery.last_attempt_at),
        "next_attempt_at": iso_utc(delivery.next_attempt_at)
        if delivery.status == WebhookDeliveryStatus.PENDING
        else None,
        "delivered_at": iso_utc(delivery.delivered_at),
    }


def deliveries_query(
    tenant_id: int,
    *,
    endpoint_id: int | None = None,
    status: str | None = None,
    since: datetime | None = None,
) -> Select[WebhookDelivery]:
    """The office's deliveries, filtered (unordered: the caller pages them)."""
    query = select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant_id)
    if endpoint_id is not None:
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    if status is not None:
        if status not in DELIVERY_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(DELIVERY_STATUSES)}")
        query = query.where(WebhookDelivery.status == status)
    if since is not None:
        query = query.where(WebhookDelivery.created_at >= since)
    return query


def recent_deliveries(
    session: Session, tenant_id: int, endpoint_id: int, limit: int = LOG_LENGTH
) -> list[WebhookDelivery]:
    """An endpoint's latest deliveries, newest first (the console's log)."""
    query = deliveries_query(tenant_id, endpoint_id=endpoint_id)
    return list(session.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit)))


def replay(
    svc: Services,
    tenant_id: int,
    *,
    by: By,
    event_uid: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    endpoint_id: int | None = None,
) -> int:
    """Deliver stored events again: one (``event_uid``) or those created in
    ``[since, until)``; to one endpoint or to every one that takes them. Returns how many
    deliveries were queued."""
    if (event_uid is None) == (since is None):
        raise InvalidInput("replay one event, or the events since a moment")
    if since is not None and until is not None and until <= since:
        raise InvalidInput("the end of the range must come after its start")
    now = utcnow()
    with svc.db.session() as session:
        events = _events_to_replay(session, tenant_id, event_uid, since, until)
        endpoints = session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.events).where(
                WebhookEndpoint.tenant_id == tenant_id,
                *([WebhookEndpoint.id == endpoint_id] if endpoint_id is not None else []),
            )
        ).all()
        if endpoint_id is not None and not endpoints:
            raise NotFound(f"no webhook endpoint {endpoint_id} in this office")
        rows = [
            pending_delivery(tenant_id, target, event_id, conversation_id, now, replay=True)
            for event_id, type, conversation_id in events
            for target, types in endpoints
            if not types or type in types
        ]
        if rows:
            session.execute(insert(WebhookDelivery), rows)
        record_audit(
            session,
            tenant_id,
            "webhook.replay",
            actor=by.actor,
            user_id=by.user_id,
            ip=by.ip,
            target_type="webhook_endpoint" if endpoint_id is not None else "tenant",
            target_id=endpoint_id if endpoint_id is not None else tenant_id,
            detail={
                "event": event_uid,
                "since": iso_utc(since),
                "until": iso_utc(until),
                "events": len(events),
                "deliveries": len(rows),
            },
        )
    if rows:
        nudge(svc)
    return len(rows)


def _events_to_replay(
    session: Session,
    tenant_id: int,
    event_uid: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[Any]:
    query = select(WebhookEvent.id, WebhookEvent.type, WebhookEvent.conversation_id).where(
        WebhookEvent.tenant_id == tenant_id
    )
    if event_uid is not None:
        found = session.execute(query.where(WebhookEvent.uid == event_uid)).all()
        if not found:
            raise NotFound(f"no stored event {event_uid} in this office")
        return list(found)
    assert since is not None
    query = query.where(WebhookEvent.created_at >= since)
    if until is not None:
        query = query.where(WebhookEvent.created_at < until)
    found = session.execute(query.order_by(WebhookEvent.id).limit(MAX_REPLAY_EVENTS + 1)).all()
    if len(found) > MAX_REPLAY_EVENTS:
        raise InvalidInput(f"more than {MAX_REPLAY_EVENTS} events in that range: narrow it")
    return list(found)
