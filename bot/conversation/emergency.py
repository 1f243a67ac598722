"""An emergency as a case: its ticket and timeline, its acknowledgement, its lane.

An emergency message opens a ticket (kind ``emergency``, intent ``emergenza``, the
hazard, the entities) whose timeline (``ticket_events``) starts with ``opened`` and
``notified``. Its conversation stays ``priority: urgent, needs_attention: true`` for
as long as one of its emergency tickets is unacknowledged: a release to the bot
keeps it so and closing it needs a reason (:mod:`bot.conversation.handoff`).

Acknowledgement is one function for every way in (console takeover, the console's
"Presa in carico", the API, the on-call person's keypress):
:func:`acknowledge_emergency`, idempotent, audited. :func:`unacknowledged_emergencies`
is the escalation's question: what nobody has taken charge of yet.

The priority lane: :func:`urgent_among` reads handed-off messages before they are
queued and names the emergencies, which go to a queue the worker serves first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from bot.conversation.alerts import hazard_label, place_in
from bot.conversation.inbound import InboundMessage, decode_payload
from bot.conversation.understanding import ReadAhead
from bot.exceptions import NotFound
from bot.privacy.audit import record_audit
from bot.services import Services
from notify.operators import OperatorEvent, tenant_channel
from storage.db import rows_affected
from storage.models import Conversation, Message, Tenant, Ticket, TicketEvent, utcnow
from storage.queries import get_conversation
from storage.vocabulary import (
    ConversationStatus,
    Direction,
    Priority,
    TicketEventKind,
    TicketKind,
    TicketStatus,
)

log = logging.getLogger(__name__)

EMERGENCY_INTENT = "emergenza"

# The literal predicate of the partial index ix_tickets_unacknowledged: a planner
# can use that index only when the query states the same condition.
_UNACKNOWLEDGED = text("tickets.kind = 'emergency' AND tickets.acknowledged_at IS NULL")


def place_of(entities: Sequence[dict[str, Any]] | None) -> dict[str, str]:
    """The building or street an emergency's ticket names: ``{"building"|"street": ...}``."""
    return place_in((str(e.get("label", "")), str(e.get("text", ""))) for e in entities or ())


# -- the timeline -------------------------------------------------------------------------


def record_ticket_event(
    session: Session,
    ticket: Ticket,
    kind: TicketEventKind,
    *,
    actor: str,
    at: datetime,
    detail: dict[str, Any] | None = None,
) -> TicketEvent:
    """One line of a ticket's timeline, in the caller's transaction."""
    event = TicketEvent(
        tenant_id=ticket.tenant_id,
        ticket_id=ticket.id,
        at=at,
        kind=kind,
        actor=actor,
        detail=detail or {},
    )
    session.add(event)
    return event


def ticket_timeline(session: Session, tenant_id: int, ticket_id: int) -> Sequence[TicketEvent]:
    return session.scalars(
        select(TicketEvent)
        .where(TicketEvent.tenant_id == tenant_id, TicketEvent.ticket_id == ticket_id)
        .order_by(TicketEvent.id)
    ).all()


# -- opening and the state of a case ------------------------------------------------------


def open_case(
    session: Session, ticket: Ticket, message: Message, alerts: list[str], now: datetime
) -> None:
    """An emergency ticket's timeline begins: opened, and the operators alerted."""
    record_ticket_event(
        session,
        ticket,
        TicketEventKind.OPENED,
        actor="contact",
        at=now,
        detail={"message_id": message.id, "hazard": ticket.hazard},
    )
    # Published right after this transaction commits (the engine's publish step).
    record_ticket_event(
        session, ticket, TicketEventKind.NOTIFIED, actor="system", at=now, detail={"events": alerts}
    )


def pending_emergencies(session: Session, tenant_id: int, conversation_id: int) -> Sequence[Ticket]:
    """The conversation's emergency tickets that nobody acknowledged and nobody closed."""
    return session.scalars(
        select(Ticket)
        .where(
            _UNACKNOWLEDGED,
            Ticket.tenant_id == tenant_id,
            Ticket.conversation_id == conversation_id,
            Ticket.status != TicketStatus.DONE,
        )
        .order_by(Ticket.id)
    ).all()


def open_emergencies(session: Session, tenant_id: int, conversation_id: int) -> Sequence[Ticket]:
    """The conversation's emergency tickets still open, acknowledged or not."""
    return session.scalars(
        select(Ticket)
        .where(
            Ticket.tenant_id == tenant_id,
            Ticket.conversation_id == conversation_id,
            Ticket.kind == TicketKind.EMERGENCY,
            Ticket.status != TicketStatus.DONE,
        )
        .order_by(Ticket.id)
    ).all()


def conversations_with_pending_emergencies(
    session: Session, tenant_id: int, conversation_ids: Sequence[int]
) -> set[int]:
    if not conversation_ids:
        return set()
    return set(
        session.scalars(
            select(Ticket.conversation_id).where(
                _UNACKNOWLEDGED,
                Ticket.tenant_id == tenant_id,
                Ticket.conversation_id.in_(conversation_ids),
                Ticket.status != TicketStatus.DONE,
            )
        )
    )


def record_on_open_emergencies(
    session: Session,
    conversation: Conversation,
    kind: TicketEventKind,
    *,
    actor: str,
    at: datetime,
    detail: dict[str, Any] | None = None,
) -> None:
    """A move on the conversation, written on the timeline of its open emergencies."""
    pending = {t.id for t in pending_emergencies(session, conversation.tenant_id, conversation.id)}
    for ticket in open_emergencies(session, conversation.tenant_id, conversation.id):
        facts = {"acknowledged": ticket.id not in pending, **(detail or {})}
        record_ticket_event(session, ticket, kind, actor=actor, at=at, detail=facts)


def dismiss_pending_emergencies(
    session: Session, conversation: Conversation, *, actor: str, reason: str, at: datetime
) -> list[int]:
    """Close unacknowledged emergencies with the operator's reason (a false alarm...)."""
    closed = []
    for ticket in pending_emergencies(session, conversation.tenant_id, conversation.id):
        ticket.status, ticket.updated_at = TicketStatus.DONE, at
        record_ticket_event(
            session,
            ticket,
            TicketEventKind.CLOSED,
            actor=actor,
            at=at,
            detail={"acknowledged": False, "reason": reason},
        )
        closed.append(ticket.id)
    return closed


# -- acknowledgement ----------------------------------------------------------------------


def acknowledge_in_session(
    session: Session,
    tenant_id: int,
    conversation_id: int,
    *,
    actor: str,
    user_id: int | None,
    via: str,
    now: datetime,
    ip: str | None = None,
) -> list[int]:
    """Acknowledge the conversation's pending emergencies; returns the tickets acknowledged.

    Each ticket is taken by a conditional UPDATE, so of two acknowledgements at once
    (a takeover and a keypress) exactly one records it.
    """
    acknowledged = []
    for ticket in pending_emergencies(session, tenant_id, conversation_id):
        won = rows_affected(
            session.execute(
                update(Ticket)
                .where(Ticket.id == ticket.id, Ticket.acknowledged_at.is_(None))
                .values(acknowledged_at=now, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        )
        if won != 1:
            continue
        record_ticket_event(
            session,
            ticket,
            TicketEventKind.ACKNOWLEDGED,
            actor=actor,
            at=now,
            detail={"via": via, "user_id": user_id},
        )
        acknowledged.append(ticket.id)
    if not acknowledged:
        return []
    # Someone has it now: it no longer waits in the inbox (it stays urgent until it
    # goes back to the bot or is closed).
    session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.tenant_id == tenant_id)
        .values(needs_attention=False)
        .execution_options(synchronize_session=False)
    )
    record_audit(
        session,
        tenant_id,
        "emergency.acknowledge",
        actor=actor,
        user_id=user_id,
        target_type="conversation",
        target_id=conversation_id,
        ip=ip,
        detail={"via": via, "tickets": acknowledged},
    )
    return acknowledged


def acknowledged_event(slug: str, conversation_id: int, tickets: list[int]) -> OperatorEvent:
    """Tells every console of the office (and the escalation) that someone has it."""
    return OperatorEvent(
        (tenant_channel(slug),),
        "conversation.updated",
        {"conversation_id": conversation_id, "change": "acknowledged", "tickets": tickets},
    )


def acknowledge_emergency(
    svc: Services,
    tenant_id: int,
    conversation_id: int,
    *,
    actor: str,
    user_id: int | None,
    via: str,
    ip: str | None = None,
) -> bool:
    """Acknowledge the conversation's emergencies; True if this call acknowledged one.

    Idempotent: a second call (or a call on a conversation with no pending emergency)
    changes nothing and returns False. Raises NotFound for another office's id.
    """
    from bot.conversation.handoff import publish  # handoff builds on this module

    with svc.db.session() as session:
        conversation = get_conversation(session, tenant_id, conversation_id)
        if conversation is None:
            raise NotFound(conversation_id)
        acknowledged = acknowledge_in_session(
            session,
            tenant_id,
            conversation_id,
            actor=actor,
            user_id=user_id,
            via=via,
            now=utcnow(),
            ip=ip,
        )
        slug = session.scalar(select(Tenant.slug).where(Tenant.id == tenant_id))
    if acknowledged:
        publish(svc, [acknowledged_event(str(slug), conversation_id, acknowledged)])
    return bool(acknowledged)


@dataclass(frozen=True)
class UnacknowledgedEmergency:
    """An emergency nobody has taken charge of: what the escalation needs to act."""

    ticket_id: int
    tenant_id: int
    tenant_slug: str
    conversation_id: int | None
    hazard: str | None
    hazard_label: str
    place: dict[str, str]  # {"building": ...} or {"street": ...} from the message, or {}
    opened_at: datetime
    waiting_seconds: float


def unacknowledged_emergencies(session: Session, now: datetime) -> list[UnacknowledgedEmergency]:
    """Every open, unacknowledged emergency of every active office, oldest first."""
    rows = session.execute(
        select(Ticket, Tenant.slug)
        .join(Tenant, Tenant.id == Ticket.tenant_id)
        .join(Conversation, Conversation.id == Ticket.conversation_id)
        .where(
            _UNACKNOWLEDGED,
            Ticket.status != TicketStatus.DONE,
            Tenant.terminated_at.is_(None),
            Conversation.status == ConversationStatus.OPEN,
        )
        .order_by(Ticket.created_at, Ticket.id)
    ).all()
    return [
        UnacknowledgedEmergency(
            ticket_id=ticket.id,
            tenant_id=ticket.tenant_id,
            tenant_slug=slug,
            conversation_id=ticket.conversation_id,
            hazard=ticket.hazard,
            hazard_label=hazard_label(ticket.hazard),
            place=place_of(ticket.entities),
            opened_at=ticket.created_at,
            waiting_seconds=max(0.0, (now - ticket.created_at).total_seconds()),
        )
        for ticket, slug in rows
    ]


def keeps_urgent(session: Session, conversation: Conversation) -> dict[str, Any]:
    """What a move must leave on a conversation with a pending emergency: urgent, waiting."""
    if not pending_emergencies(session, conversation.tenant_id, conversation.id):
        return {}
    return {"priority": Priority.URGENT, "needs_attention": True}


# -- the priority lane --------------------------------------------------------------------


def urgent_among(
    svc: Services, message_ids: Sequence[int]
) -> tuple[set[int], dict[int, ReadAhead]]:
    """Which of these stored, unprocessed inbound messages report an emergency, and
    what each message's text reads as (its job uses it instead of reading again).

    Read with the same reader the engine uses (``Services.understand``), so the lane
    and the case agree.
    """
    urgent: set[int] = set()
    readings: dict[int, ReadAhead] = {}
    if not message_ids:
        return urgent, readings
    with svc.db.read() as session:
        rows = session.execute(
            select(Message.id, Message.payload).where(
                Message.id.in_(message_ids),
                Message.direction == Direction.IN,
                Message.processed_at.is_(None),
                Message.payload.is_not(None),
            )
        ).all()
    for message_id, payload in rows:
        assert payload is not None  # selected so
        inbound = InboundMessage.from_params(decode_payload(svc.cipher.decrypt(payload)))
        if not inbound.body.strip() or inbound.opt_out_type:
            continue
        reading = svc.understand(inbound.body)
        readings[message_id] = (inbound.body, reading)
        if reading.intent == EMERGENCY_INTENT:
            urgent.add(message_id)
    return urgent, readings
