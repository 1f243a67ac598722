"""Ordini di lavoro: a ticket's job sent to a supplier, and the supplier's answers.

:func:`send_work_order` sends the office's quick-reply template
(``templates.work_order``, buttons ``accept``, ``decline``, ``propose``) through the
outbound gate; the supplier answers with a button (``ButtonPayload`` and the
``OriginalRepliedMessageSid`` of our template) or in words (:func:`read_answer`, a
plain function). :func:`apply_answer` moves the work order along
``sent → accepted | declined | proposed → done``; done closes the ticket. Every step
is a line of the ticket's timeline and of the audit trail, and the resident who
reported the fault is told (:func:`tell_resident`): free text inside their 24-hour
window, the office's ``templates.ticket_update`` outside it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.conversation.emergency import record_ticket_event
from bot.conversation.keywords import normalise
from bot.exceptions import NotFound, Refused
from bot.office.hours import DAY_NAMES, OFFICE_ZONE
from bot.outbound import Envelope, Outgoing, Template, queue_message, send_message
from bot.outbound.gate import SERVICE_WINDOW
from bot.privacy.audit import record_audit
from bot.services import Services
from storage.models import (
    Contact,
    Conversation,
    Message,
    Tenant,
    Ticket,
    TicketEvent,
    WorkOrder,
    iso_utc,
    utcnow,
)
from storage.queries import contact_by_phone, open_conversation_for
from storage.vocabulary import (
    OPEN_WORK_ORDERS,
    Purpose,
    TicketEventKind,
    TicketStatus,
    WorkOrderAnswer,
    WorkOrderStatus,
)

ANSWER_STATUS = {
    WorkOrderAnswer.ACCEPT: WorkOrderStatus.ACCEPTED,
    WorkOrderAnswer.DECLINE: WorkOrderStatus.DECLINED,
    WorkOrderAnswer.PROPOSE: WorkOrderStatus.PROPOSED,
    WorkOrderAnswer.DONE: WorkOrderStatus.DONE,
}
# What the resident reads of each step (the template's second variable).
STATUS_LABELS = {
    WorkOrderStatus.SENT: "inviato al tecnico",
    WorkOrderStatus.ACCEPTED: "preso in carico dal tecnico",
    WorkOrderStatus.DECLINED: "in cerca di un altro tecnico",
    WorkOrderStatus.PROPOSED: "data proposta dal tecnico",
    WorkOrderStatus.DONE: "intervento completato",
}
MAX_NOTE = 500


# -- sending ------------------------------------------------------------------------------


def _template_sid(tenant: Tenant, name: str) -> str | None:
    return ((tenant.settings or {}).get("templates") or {}).get(name)


def _where(ticket: Ticket) -> str:
    building = ticket.building
    if building is None:
        return "indirizzo da concordare con l'ufficio"
    unit = ticket.unit
    place = f"{building.name}, {building.address}"
    if unit is not None and unit.scala:
        place += f", scala {unit.scala}"
    return place


def send_work_order(
    svc: Services,
    tenant: Tenant,
    ticket_id: int,
    supplier_phone: str,
    note: str,
    *,
    actor: str,
    user_id: int | None = None,
    ip: str | None = None,
) -> WorkOrder:
    """Send an ordine di lavoro for a ticket to a supplier; the work order is ``sent``.

    Refused (``Refused.code``) without the office's template, or when the gate refuses
    the supplier; ``NotFound`` for an unknown ticket or supplier."""
    sid = _template_sid(tenant, "work_order")
    if not sid:
        raise Refused(
            "Manca il modello WhatsApp dell'ordine di lavoro (templates.work_order).",
            "no_work_order_template",
        )
    with svc.db.read() as session:
        ticket = session.scalar(
            select(Ticket).where(Ticket.tenant_id == tenant.id, Ticket.id == ticket_id)
        )
        if ticket is None:
            raise NotFound("no such ticket")
        supplier = contact_by_phone(session, tenant, supplier_phone)
        if supplier is None:
            raise NotFound("no such supplier")
        thread = open_conversation_for(session, tenant, supplier)
        variables = {
            "1": str(ticket.id),
            "2": _where(ticket),
            "3": (note or "").strip()[:MAX_NOTE] or "vedi segnalazione",
        }
    # The gate first: a work order exists only once its message is on its way.
    key = f"work-order:{ticket_id}:{uuid.uuid4().hex}"
    envelope = Envelope(tenant, supplier, thread, key, sender_user_id=user_id)
    outcome = queue_message(
        svc, envelope, Outgoing(template=Template(sid, variables), purpose=Purpose.WORK_ORDER)
    )
    if outcome.refusal is not None:
        reason = outcome.refusal.reason or "refused"
        raise Refused(outcome.refusal.explanation or reason, str(reason))
    with svc.db.session() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        order = WorkOrder(
            tenant_id=tenant.id,
            ticket_id=ticket_id,
            supplier_contact_id=supplier.id,
            status=WorkOrderStatus.SENT,
            note=svc.cipher.encrypt(note.strip()[:MAX_NOTE]) if note.strip() else None,
            message_id=outcome.message_id,
            created_by_user_id=user_id,
        )
        session.add(order)
        session.flush()
        ticket.supplier_contact_id = supplier.id
        if ticket.status == TicketStatus.OPEN:
            ticket.status = TicketStatus.IN_PROGRESS
        ticket.updated_at = utcnow()
        _record_step(session, ticket, order, WorkOrderStatus.SENT, actor, user_id, ip)
    if outcome.message_id is not None and outcome.status == "pending":
        svc.jobs.enqueue_delivery(outcome.message_id)
    return order


def _record_step(
    session: Session,
    ticket: Ticket,
    order: WorkOrder,
    status: WorkOrderStatus,
    actor: str,
    user_id: int | None,
    ip: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    facts = {"work_order_id": order.id, "status": status, **(detail or {})}
    event = record_ticket_event(
        session, ticket, TicketEventKind.WORK_ORDER, actor=actor, at=utcnow(), detail=facts
    )
    event.work_order_id = order.id
    record_audit(
        session,
        ticket.tenant_id,
        f"work_order.{status}",
        actor=actor,
        user_id=user_id,
        target_type="work_order",
        target_id=order.id,
        ip=ip,
        detail={"ticket_id": ticket.id},
    )


# -- the supplier's answers ----------------------------------------------------------------

# Work done, in a supplier's words ("ho finito", "lavoro completato", "riparato");
# not a bare "fatto" ("ho fatto il sopralluogo" is no report of work done).
_DONE = re.compile(
    r"\b(ho|abbiamo) (finito|terminato|completato)\b"
    r"|\b(lavoro|lavori|intervento) (fatto|fatti|finito|finiti|completato|completati|"
    r"terminato|eseguito)\b"
    r"|\b(riparato|riparata|sistemato|sistemata)\b"
)
_DECLINE = re.compile(
    r"\bnon (posso|possiamo|riesco|riusciamo|sono disponibile|siamo disponibili|ce la faccio)\b"
    r"|\brifiuto\b|\bimpossibile\b"
)
_ACCEPT = re.compile(r"^(ok|okay|va bene|confermo|accetto|d accordo|perfetto|si)\b")
_AT = re.compile(r"\b(?:alle|ore|dalle)\s+(\d{1,2})(?:[:.](\d{2}))?\b")
_DATE = re.compile(r"\b(\d{1,2})[/.-](\d{1,2})(?:[/.-](\d{2,4}))?\b")
_WEEKDAYS = {normalise(name): index for index, name in enumerate(DAY_NAMES)}


def parse_proposal(text: str, now: datetime) -> datetime | None:
    """A day and time in a supplier's words ("giovedì alle 10", "domani ore 9:30",
    "12/12 alle 15"), Europe/Rome, as UTC; ``None`` without a day."""
    plain = normalise(text.replace(":", " : ").replace("/", " / "))
    plain_raw = text.lower()
    today = now.astimezone(OFFICE_ZONE).date()
    day = None
    words = plain.split()
    if "dopodomani" in words:
        day = today + timedelta(days=2)
    elif "domani" in words:
        day = today + timedelta(days=1)
    elif "oggi" in words:
        day = today
    else:
        for word in words:
            if word in _WEEKDAYS:
                ahead = (_WEEKDAYS[word] - today.weekday()) % 7 or 7
                day = today + timedelta(days=ahead)
                break
    found = _DATE.search(plain_raw)
    if day is None and found:
        try:
            day = today.replace(month=int(found.group(2)), day=int(found.group(1)))
        except ValueError:
            return None
        if day < today:
            day = day.replace(year=day.year + 1)
    if day is None:
        return None
    hour = _AT.search(plain_raw)
    clock = time(9)
    if hour and int(hour.group(1)) < 24 and int(hour.group(2) or 0) < 60:
        clock = time(int(hour.group(1)), int(hour.group(2) or 0))
    return datetime.combine(day, clock, OFFICE_ZONE).astimezone(now.tzinfo)


def read_answer(
    text: str, intent: str | None, button: str | None, now: datetime
) -> tuple[WorkOrderAnswer, datetime | None] | None:
    """A supplier's answer to a work order: the button's id, or their words."""
    if button is not None:
        try:
            answer = WorkOrderAnswer(button.strip().lower())
        except ValueError:
            return None
        return answer, (parse_proposal(text, now) if answer == WorkOrderAnswer.PROPOSE else None)
    plain = normalise(text)
    if intent == "intervento_completato" or _DONE.search(plain):
        return WorkOrderAnswer.DONE, None
    if _DECLINE.search(plain):
        return WorkOrderAnswer.DECLINE, None
    proposed = parse_proposal(text, now)
    if proposed is not None:
        return WorkOrderAnswer.PROPOSE, proposed
    if _ACCEPT.search(plain):
        return WorkOrderAnswer.ACCEPT, None
    return None


def open_work_order(
    session: Session, tenant_id: int, supplier_id: int, replied_sid: str | None
) -> WorkOrder | None:
    """The work order a supplier answers: the one whose template they replied to, or
    else their latest open one."""
    if replied_sid:
        replied = session.scalar(
            select(WorkOrder)
            .join(Message, Message.id == WorkOrder.message_id)
            .where(
                WorkOrder.tenant_id == tenant_id,
                WorkOrder.supplier_contact_id == supplier_id,
                Message.provider_sid == replied_sid,
            )
        )
        if replied is not None:
            return replied
    return session.scalar(
        select(WorkOrder)
        .where(
            WorkOrder.tenant_id == tenant_id,
            WorkOrder.supplier_contact_id == supplier_id,
            WorkOrder.status.in_(OPEN_WORK_ORDERS),
        )
        .order_by(WorkOrder.id.desc())
        .limit(1)
    )


def apply_answer(
    session: Session,
    order: WorkOrder,
    answer: WorkOrderAnswer,
    proposed_at: datetime | None,
    *,
    actor: str,
    now: datetime,
) -> WorkOrderStatus:
    """Move the work order on (done also closes its ticket), on the timeline and audited."""
    status = ANSWER_STATUS[answer]
    ticket = session.get(Ticket, order.ticket_id)
    assert ticket is not None
    order.status, order.updated_at = status, now
    if status == WorkOrderStatus.PROPOSED:
        order.proposed_at = proposed_at
    detail = {"proposed_at": proposed_at.isoformat()} if proposed_at else {}
    _record_step(session, ticket, order, status, actor, None, detail=detail)
    if status == WorkOrderStatus.DONE and ticket.status != TicketStatus.DONE:
        ticket.status = TicketStatus.DONE
        record_ticket_event(
            session,
            ticket,
            TicketEventKind.CLOSED,
            actor=actor,
            at=now,
            detail={"work_order_id": order.id},
        )
    ticket.updated_at = now
    return status


def proposal_text(moment: datetime | None) -> str:
    """`` per giovedì 4 dicembre alle 10:00`` (Italian), or empty."""
    if moment is None:
        return ""
    local = moment.astimezone(OFFICE_ZONE)
    return f" per {DAY_NAMES[local.weekday()]} {local.day}/{local.month} alle {local:%H:%M}"


# -- telling the resident ------------------------------------------------------------------


@dataclass(frozen=True)
class ResidentNews:
    """A step the reporting resident is to be told of (kept in the bot log, so that a
    retried job still tells them, once: the idempotency key is the step's)."""

    ticket_id: int
    work_order_id: int
    status: str

    def as_list(self) -> list[Any]:
        return [self.ticket_id, self.work_order_id, self.status]


def tell_resident(svc: Services, tenant: Tenant, news: ResidentNews) -> None:
    """Tell the resident who reported the ticket what happened, through the gate."""
    from bot.conversation.replies import render

    with svc.db.read() as session:
        ticket = session.get(Ticket, news.ticket_id)
        if ticket is None or ticket.contact_id is None:
            return
        resident = session.get(Contact, ticket.contact_id)
        order = session.get(WorkOrder, news.work_order_id)
        if resident is None:
            return
        thread = (
            session.get(Conversation, ticket.conversation_id) if ticket.conversation_id else None
        )
        if thread is None or thread.contact_id != resident.id:
            thread = open_conversation_for(session, tenant, resident)
    now = utcnow()
    inside = (
        resident.last_inbound_at is not None and now - resident.last_inbound_at <= SERVICE_WINDOW
    )
    proposed = proposal_text(order.proposed_at if order else None)
    if inside:
        text = render(
            f"ticket_update_{news.status}",
            tenant.settings,
            ticket=str(ticket.id),
            proposed=proposed,
        )
        outgoing = Outgoing(text=text, purpose=Purpose.TICKET_UPDATE)
    else:
        sid = _template_sid(tenant, "ticket_update")
        if not sid:
            return  # outside the window and no approved template: the office calls them
        label = STATUS_LABELS[WorkOrderStatus(news.status)] + proposed
        outgoing = Outgoing(
            template=Template(sid, {"1": str(ticket.id), "2": label}),
            purpose=Purpose.TICKET_UPDATE,
        )
    key = f"ticket-update:{news.ticket_id}:{news.work_order_id}:{news.status}"
    outcome = send_message(svc, Envelope(tenant, resident, thread, key), outgoing)
    if outcome.refusal is not None:
        return
    with svc.db.session() as session:
        stored = session.get(Ticket, news.ticket_id)
        told = session.scalar(
            select(TicketEvent.id).where(
                TicketEvent.ticket_id == news.ticket_id,
                TicketEvent.kind == TicketEventKind.RESIDENT_TOLD,
                TicketEvent.work_order_id == news.work_order_id,
                TicketEvent.detail["status"].as_string() == news.status,
            )
        )
        if stored is not None and told is None:  # a retried job tells once
            event = record_ticket_event(
                session,
                stored,
                TicketEventKind.RESIDENT_TOLD,
                actor="system",
                at=now,
                detail={"work_order_id": news.work_order_id, "status": news.status},
            )
            event.work_order_id = news.work_order_id


def work_order_events(session: Session, order: WorkOrder) -> Sequence[dict[str, Any]]:
    rows = session.scalars(
        select(TicketEvent)
        .where(TicketEvent.tenant_id == order.tenant_id, TicketEvent.work_order_id == order.id)
        .order_by(TicketEvent.id)
    )
    return [
        {"at": iso_utc(e.at), "kind": e.kind, "status": e.detail.get("status"), "actor": e.actor}
        for e in rows
    ]
