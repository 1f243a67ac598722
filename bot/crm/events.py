"""Events for the office's CRM, written to the outbox in the transaction of their change.

:func:`record_event` is the one way in: called inside the transaction that makes the
change (the engine's, a status callback's, the console's), it writes the event and one
pending delivery per endpoint of the office that takes that type, or nothing at all
when no endpoint does. A change committed is therefore an event recorded, and a change
rolled back was never told. The workers deliver (:mod:`bot.crm.delivery`).

What an event carries is minimised: ids, the new state and a short summary in Italian.
The message's text only if the office turns ``webhooks.include_text`` on, the contact's
number only with ``webhooks.include_phone``; those two are kept encrypted, apart from
the rest (``WebhookEvent.private``), and merged into ``data`` when the body is sent.
Media never. Retention (``retention.webhook_days``) and erasure cover the outbox and
its log (:func:`purge_events`, :func:`forget_contact`).

The emitters below (:func:`record_turn`, :func:`record_message_status`, ...) turn one
kind of change into its events; each is the single call its caller makes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
    and_,
    delete,
    event,
    insert,
    or_,
    select,
)
from sqlalchemy.orm import Session

from bot.conversation.rules import Plan
from bot.conversation.understanding import Reading
from bot.services import Services
from storage.crypto import BodyCipher
from storage.db import rows_affected
from storage.delivery import StatusChange
from storage.models import (
    Contact,
    Conversation,
    Message,
    Tenant,
    Ticket,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    iso_utc,
    utcnow,
)
from storage.vocabulary import (
    Handoff,
    LedgerEvent,
    TicketStatus,
    WebhookDeliveryStatus,
    WebhookEventType,
)

Writer = Session | Connection
Endpoint = tuple[int, list[str]]  # an endpoint's id and the types it takes

_events: Table = WebhookEvent.__table__  # type: ignore[assignment]
_deliveries: Table = WebhookDelivery.__table__  # type: ignore[assignment]
_endpoints: Table = WebhookEndpoint.__table__  # type: ignore[assignment]

LEDGER_SUMMARY = {
    LedgerEvent.NOTICE_SENT: "Informativa inviata",
    LedgerEvent.GRANTED: "Consenso dato",
    LedgerEvent.WITHDRAWN: "Consenso revocato",
    LedgerEvent.ACCESS_REQUESTED: "Richiesta di accesso ai dati",
    LedgerEvent.ERASURE_REQUESTED: "Richiesta di cancellazione dei dati",
    LedgerEvent.IMPORTED: "Contatto importato",
}
RIGHTS_REQUESTS = (LedgerEvent.ACCESS_REQUESTED, LedgerEvent.ERASURE_REQUESTED)


def new_event_uid() -> str:
    return "evt_" + uuid.uuid4().hex


def wake_key(queue_name: str) -> str:
    """The Redis list a dispatcher blocks on, so a new event need not wait for its poll."""
    return f"portineria:crm:wake:{queue_name}"


def record_event(
    db: Writer,
    tenant_id: int,
    type: WebhookEventType,
    data: dict[str, Any],
    *,
    conversation_id: int | None = None,
    contact_id: int | None = None,
    private: dict[str, Any] | None = None,
    cipher: BodyCipher | None = None,
    now: datetime | None = None,
    endpoints: Sequence[Endpoint] | None = None,
) -> int:
    """Write one event and its deliveries in the caller's transaction; how many deliveries.

    ``data`` is sent as it is (ids, states, a summary). ``private`` (the message's text,
    the contact's number) is stored encrypted with ``cipher`` and sent inside ``data``.
    Deliveries to disabled endpoints are written too: they wait for the endpoint to be
    enabled again instead of being lost. ``endpoints`` spares a caller that records
    several events the same query (:func:`office_endpoints`).
    """
    offered = office_endpoints(db, tenant_id) if endpoints is None else endpoints
    targets = [endpoint_id for endpoint_id, types in offered if not types or type in types]
    if not targets:
        return 0
    now = now or utcnow()
    sealed = None
    if private:
        if cipher is None:
            raise ValueError("private event fields need the cipher")
        sealed = cipher.encrypt(json.dumps(private, ensure_ascii=False))
    event_id = db.execute(
        insert(_events)
        .values(
            tenant_id=tenant_id,
            uid=new_event_uid(),
            type=type,
            conversation_id=conversation_id,
            contact_id=contact_id,
            data=data,
            private=sealed,
            created_at=now,
        )
        .returning(_events.c.id)
    ).scalar_one()
    db.execute(
        insert(_deliveries),
        [
            pending_delivery(tenant_id, endpoint_id, event_id, conversation_id, now)
            for endpoint_id in targets
        ],
    )
    return len(targets)


def office_endpoints(db: Writer, tenant_id: int) -> list[Endpoint]:
    """The office's endpoints as ``(id, types)``; no types means every type."""
    rows = db.execute(
        select(_endpoints.c.id, _endpoints.c.events).where(_endpoints.c.tenant_id == tenant_id)
    )
    return [(endpoint_id, list(types or [])) for endpoint_id, types in rows]


def pending_delivery(
    tenant_id: int,
    endpoint_id: int,
    event_id: int,
    conversation_id: int | None,
    now: datetime,
    *,
    replay: bool = False,
) -> dict[str, Any]:
    """A new delivery row: due now, its retry window starting now."""
    return {
        "tenant_id": tenant_id,
        "endpoint_id": endpoint_id,
        "event_id": event_id,
        "conversation_id": conversation_id,
        "status": WebhookDeliveryStatus.PENDING,
        "replay": replay,
        "attempts": 0,
        "created_at": now,
        "retry_from": now,
        "next_attempt_at": now,
    }


def nudge(svc: Services) -> None:
    """Wake a dispatcher now (best effort: without it the dispatcher's poll finds the work
    a moment later)."""
    try:
        key = wake_key(svc.config["QUEUE_NAME"])
        with svc.redis.pipeline(transaction=False) as pipeline:
            pipeline.rpush(key, 1)
            pipeline.expire(key, 60)
            pipeline.execute()
    except RedisError:
        return  # a lost nudge costs one poll interval, nothing else


def wake_after_commit(svc: Services, session: Session) -> None:
    """:func:`nudge` once this transaction commits (before, the work is not visible)."""
    if session.info.get("crm_wake"):
        return
    session.info["crm_wake"] = True

    def after_commit(_session: Session) -> None:
        session.info.pop("crm_wake", None)
        nudge(svc)

    event.listen(session, "after_commit", after_commit, once=True)


# -- the emitters ---------------------------------------------------------------------------


def _options(tenant: Tenant) -> dict[str, Any]:
    return (tenant.settings or {}).get("webhooks") or {}


def record_turn(
    svc: Services,
    session: Session,
    tenant: Tenant,
    contact: Contact,
    thread: Conversation,
    message: Message,
    plan: Plan,
    reading: Reading | None,
    now: datetime,
    *,
    endpoints: list[Endpoint] | None = None,
) -> None:
    """The events of one inbound message the engine has just decided, in its transaction:
    ``message.received``, then ``consent.changed`` per ledger event, ``ticket.created``
    and ``ticket.updated``, ``conversation.needs_attention`` and ``emergency.opened``.

    ``endpoints``: the office's, when the caller read them already (a batch reads
    them once); an office without endpoints costs that one query, and nothing else."""
    if endpoints is None:
        endpoints = office_endpoints(session, tenant.id)
    if not endpoints:
        return
    emit = _Emitter(svc, session, tenant.id, thread.id, contact.id, now, endpoints)
    options = _options(tenant)
    private: dict[str, Any] = {}
    if options.get("include_text") and message.body is not None:
        private["text"] = svc.cipher.decrypt(message.body)
    if options.get("include_phone") and contact.phone:
        private["phone"] = contact.phone
    summary = "Nuovo messaggio" + (f" ({message.intent})" if message.intent else "")
    emit(
        WebhookEventType.MESSAGE_RECEIVED,
        {
            "message_id": message.id,
            "conversation_id": thread.id,
            "contact_id": contact.id,
            "intent": message.intent,
            "confidence": message.confidence,
            "sensitive": list(message.sensitive_kinds or []),
            "summary": summary,
        },
        private,
    )
    for ledger_event in plan.ledger:
        emit(
            WebhookEventType.CONSENT_CHANGED,
            {
                "contact_id": contact.id,
                "conversation_id": thread.id,
                "event": ledger_event,
                "consent": contact.consent,
                "channel": plan.ledger_channel,
                "summary": LEDGER_SUMMARY.get(ledger_event, str(ledger_event)),
            },
        )
    _ticket_events(emit, session, thread, message, now)
    reason = plan.handoff or next((r for r in RIGHTS_REQUESTS if r in plan.ledger), None)
    if reason is not None:
        emit(
            WebhookEventType.CONVERSATION_NEEDS_ATTENTION,
            {
                "conversation_id": thread.id,
                "contact_id": contact.id,
                "reason": reason,
                "priority": thread.priority,
                "summary": "La conversazione chiede un operatore",
            },
        )
    if plan.handoff == Handoff.EMERGENCY:
        hazard = reading.safety_rule if reading else None
        emit(
            WebhookEventType.EMERGENCY_OPENED,
            {
                "conversation_id": thread.id,
                "contact_id": contact.id,
                "message_id": message.id,
                "hazard": hazard,
                "summary": "Emergenza" + (f": {hazard}" if hazard else ""),
            },
        )
    if emit.queued:
        wake_after_commit(svc, session)


def _ticket_events(
    emit: _Emitter, session: Session, thread: Conversation, message: Message, now: datetime
) -> None:
    """Tickets this message opened, and those it closed (a supplier's "work done")."""
    touched = session.scalars(
        select(Ticket)
        .where(
            Ticket.tenant_id == thread.tenant_id,
            or_(
                Ticket.source_message_id == message.id,
                (Ticket.conversation_id == thread.id) & (Ticket.updated_at == now),
            ),
        )
        .order_by(Ticket.id)
    ).all()
    for ticket in touched:
        opened = ticket.source_message_id == message.id
        emit(
            WebhookEventType.TICKET_CREATED if opened else WebhookEventType.TICKET_UPDATED,
            {**_ticket_data(ticket), "previous_status": None, "by": "bot"},
        )


def _ticket_data(ticket: Ticket) -> dict[str, Any]:
    return {
        "ticket_id": ticket.id,
        "conversation_id": ticket.conversation_id,
        "kind": ticket.kind,
        "intent": ticket.intent,
        "status": ticket.status,
        "summary": f"Ticket {ticket.kind} n. {ticket.id}: {ticket.status}",
    }


def record_ticket_change(
    session: Session, tenant_id: int, ticket: Ticket, previous: TicketStatus, user_id: int
) -> None:
    """``ticket.updated``: an operator changed a ticket's status."""
    record_event(
        session,
        tenant_id,
        WebhookEventType.TICKET_UPDATED,
        {**_ticket_data(ticket), "previous_status": previous, "by": "operator", "user_id": user_id},
        conversation_id=ticket.conversation_id,
    )


def record_acknowledged(session: Session, conversation: Conversation, user_id: int) -> None:
    """``conversation.acknowledged``: an operator took the conversation in hand."""
    record_event(
        session,
        conversation.tenant_id,
        WebhookEventType.CONVERSATION_ACKNOWLEDGED,
        {
            "conversation_id": conversation.id,
            "contact_id": conversation.contact_id,
            "user_id": user_id,
            "priority": conversation.priority,
            "summary": "Conversazione presa in carico da un operatore",
        },
        conversation_id=conversation.id,
        contact_id=conversation.contact_id,
    )


def record_message_status(connection: Connection, change: StatusChange) -> None:
    """``message.status``: a delivery status that moved an outbound message forward
    (:func:`storage.delivery.apply_status` calls this in its transaction)."""
    record_event(
        connection,
        change.tenant_id,
        WebhookEventType.MESSAGE_STATUS,
        {
            "message_id": change.message_id,
            "conversation_id": change.conversation_id,
            "status": change.status,
            "error_code": change.error_code,
            "summary": f"Messaggio {change.message_id}: {change.status}",
        },
        conversation_id=change.conversation_id,
        contact_id=change.contact_id,
    )


class _Emitter:
    """Records the events of one conversation's change, counting the deliveries."""

    def __init__(
        self,
        svc: Services,
        session: Session,
        tenant_id: int,
        conversation_id: int,
        contact_id: int,
        now: datetime,
        endpoints: list[Endpoint],
    ) -> None:
        self.svc, self.session, self.now, self.endpoints = svc, session, now, endpoints
        self.tenant_id, self.conversation_id = tenant_id, conversation_id
        self.contact_id = contact_id
        self.queued = 0

    def __call__(
        self, type: WebhookEventType, data: dict[str, Any], private: dict[str, Any] | None = None
    ) -> None:
        self.queued += record_event(
            self.session,
            self.tenant_id,
            type,
            data,
            conversation_id=self.conversation_id,
            contact_id=self.contact_id,
            private=private or None,
            cipher=self.svc.cipher,
            now=self.now,
            endpoints=self.endpoints,
        )


# -- retention and erasure ---------------------------------------------------------------


def events_past_term(
    tenant_id: int, cutoffs: dict[str, datetime]
) -> tuple[type[WebhookEvent], ColumnElement[bool]]:
    """The office's events past ``retention.webhook_days``, or past ``messages_days`` if
    that is shorter (an event may carry a message's text); ``cutoffs`` by term name."""
    cutoff = max(cutoffs["webhook_days"], cutoffs["messages_days"])
    return WebhookEvent, and_(WebhookEvent.tenant_id == tenant_id, WebhookEvent.created_at < cutoff)


def purge_events(session: Session, tenant_id: int, cutoffs: dict[str, datetime]) -> int:
    """Delete the office's events past their term (:func:`events_past_term`), their
    deliveries with them."""
    model, condition = events_past_term(tenant_id, cutoffs)
    return rows_affected(session.execute(delete(model).where(condition)))


def forget_contact(
    session: Session, tenant_id: int, contact_id: int, conversation_ids: Select[Any]
) -> int:
    """Erasure: delete every event about the contact or their conversations, delivered
    or not (their deliveries with them), then tell the CRM the contact was erased.

    ``conversation_ids`` is a subquery of the contact's conversations: call this before
    they are deleted."""
    about_them = or_(
        WebhookEvent.contact_id == contact_id, WebhookEvent.conversation_id.in_(conversation_ids)
    )
    removed = rows_affected(
        session.execute(delete(WebhookEvent).where(WebhookEvent.tenant_id == tenant_id, about_them))
    )
    record_event(
        session,
        tenant_id,
        WebhookEventType.CONTACT_ERASED,
        {
            "contact_id": contact_id,
            "summary": "Contatto cancellato: cancellarne i dati anche nel gestionale",
        },
    )
    return removed


def event_body(
    uid: str,
    type: str,
    created_at: datetime,
    tenant_slug: str,
    data: dict[str, Any],
    private: dict[str, Any] | None = None,
) -> bytes:
    """The JSON an endpoint receives: ``{"id", "type", "created_at", "tenant", "data"}``,
    the same bytes on every attempt."""
    body = {
        "id": uid,
        "type": type,
        "created_at": iso_utc(created_at),
        "tenant": tenant_slug,
        "data": {**data, **(private or {})},
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
