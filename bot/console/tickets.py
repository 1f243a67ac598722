"""Tickets as the office works them: list, detail, status changes (audited)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.conversation.emergency import record_ticket_event
from bot.crm import record_ticket_change
from bot.exceptions import NotFound, Refused
from bot.office.actor import Actor
from bot.privacy.audit import record_actor_audit
from storage.models import Ticket
from storage.vocabulary import TicketEventKind, TicketKind, TicketStatus

TICKET_STATUSES = tuple(TicketStatus)


def list_tickets(
    session: Session,
    tenant_id: int,
    status: str | None = None,
    limit: int = 200,
    before: int | None = None,
) -> tuple[Sequence[Ticket], int | None]:
    """Newest first, a page at a time: the page, and the cursor of the next (older) one.

    Read backwards along the (office, [status,] id) index from the cursor ``before``.
    """
    query = select(Ticket).where(Ticket.tenant_id == tenant_id)
    if status in TICKET_STATUSES:
        query = query.where(Ticket.status == status)
    if before is not None:
        query = query.where(Ticket.id < before)
    rows = session.scalars(query.order_by(Ticket.id.desc()).limit(limit + 1)).all()
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], rows[limit - 1].id


def load_ticket(session: Session, tenant_id: int, ticket_id: int) -> Ticket:
    ticket = session.scalar(
        select(Ticket).where(Ticket.tenant_id == tenant_id, Ticket.id == ticket_id)
    )
    if ticket is None:
        raise NotFound(ticket_id)
    return ticket


def change_ticket_status(
    session: Session, actor: Actor, ticket_id: int, status: str, now: datetime
) -> Ticket:
    if status not in TICKET_STATUSES:
        raise Refused("Stato del ticket non valido.")
    wanted = TicketStatus(status)
    ticket = load_ticket(session, actor.tenant_id, ticket_id)
    if ticket.status == wanted:
        return ticket
    unacknowledged = ticket.kind == TicketKind.EMERGENCY and ticket.acknowledged_at is None
    if wanted == TicketStatus.DONE and unacknowledged:
        # Closing it here would skip the reason its conversation's close asks for.
        raise Refused(
            "L'emergenza non è stata presa in carico: prendila in carico, oppure chiudi la "
            "conversazione indicando il motivo."
        )
    previous, ticket.status, ticket.updated_at = ticket.status, wanted, now
    if wanted == TicketStatus.DONE:
        record_ticket_event(session, ticket, TicketEventKind.CLOSED, actor=actor.audit_name, at=now)
    record_actor_audit(
        session, actor, "ticket.status", "ticket", ticket.id, {"from": previous, "to": status}
    )
    record_ticket_change(session, actor.tenant_id, ticket, previous, actor.user_id)
    return ticket
