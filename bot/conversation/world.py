"""The office's world in a conversation: a fault's building, a supplier's answer to a
work order, building-notice keywords, questions about the office.

:func:`read_world` gathers, inside the engine's transaction, what the rules need to
know (:class:`World`); :func:`apply_world` carries out what the plan decided about
it and returns what the replies need (ticket number, building, choices...) for the
bot log, from which the replies are written and a retried job reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.conversation import rules
from bot.conversation.emergency import record_ticket_event
from bot.conversation.inbound import InboundMessage
from bot.conversation.keywords import KeywordMatch, normalise
from bot.conversation.office_info import office_answer, office_topic
from bot.conversation.understanding import Reading
from bot.office.buildings import (
    choices,
    contact_buildings,
    contact_unit,
    link_contact,
    match_building,
    tenant_buildings,
)
from bot.office.work_orders import apply_answer, open_work_order, proposal_text, read_answer
from bot.privacy.audit import record_audit
from storage.models import Building, Contact, Conversation, Message, Tenant, Ticket, WorkOrder
from storage.vocabulary import (
    OPEN_WORK_ORDERS,
    Consent,
    DataSource,
    KeywordKind,
    NoticeCategory,
    TicketEventKind,
    TicketStatus,
    WorkOrderAnswer,
)

# Every value a reply of this module may name, so an override or an old bot-log row
# never fails to render.
WORLD_DEFAULTS = {
    "ticket": "",
    "building": "",
    "choices": "",
    "work_order": "",
    "proposed": "",
    "answer": "",
}


@dataclass(frozen=True)
class World:
    mine: list[Building] = field(default_factory=list)  # the contact's buildings
    building_question: str | None = None
    awaiting_building: bool = False
    building: Building | None = None  # the building an answer named
    work_order: WorkOrder | None = None
    answer: WorkOrderAnswer | None = None
    proposed_at: datetime | None = None
    office_topic: str | None = None
    solved: Ticket | None = None  # the done ticket a "risolto" confirms


# What a resident writes to confirm their fault is solved (normalised, whole message).
SOLVED_PHRASES = frozenset(
    {"risolto", "e risolto", "tutto risolto", "si risolto", "risolto grazie", "ok risolto"}
)
SOLVED_WITHIN = timedelta(days=14)


def has_buildings(session: Session, tenant_id: int) -> bool:
    """Whether the office has recorded any building (then residents are asked for theirs)."""
    found = session.scalar(select(Building.id).where(Building.tenant_id == tenant_id).limit(1))
    return found is not None


def read_world(
    session: Session,
    tenant: Tenant,
    contact: Contact,
    thread: Conversation,
    inbound: InboundMessage,
    keyword: KeywordMatch | None,
    text: str,
    reading: Reading | None,
    now: datetime,
    *,
    first_contact: bool = False,
    office_has_buildings: bool | None = None,
) -> World:
    """``first_contact``: the contact was created by this very message, so it has no
    buildings and no work orders yet (nothing to look up). ``office_has_buildings``:
    already known (a batch asks once), else looked up when it matters."""
    mine = [] if first_contact else contact_buildings(session, contact.id)
    if mine:
        office_has_buildings = True
    elif office_has_buildings is None:
        office_has_buildings = has_buildings(session, tenant.id)
    question = None
    if office_has_buildings and len(mine) != 1:
        question = rules.ASK_FROM_LIST if mine else rules.ASK_ADDRESS
    accepting = keyword is not None and keyword.kind == KeywordKind.ACCEPT
    order, answer, proposed = None, None, None
    if (
        inbound.button_payload
        or keyword is None
        or (accepting and contact.consent != Consent.PENDING)
    ):
        found = (
            None
            if first_contact
            else open_work_order(session, tenant.id, contact.id, inbound.replied_sid)
        )
        read = read_answer(
            inbound.body, reading.intent if reading else None, inbound.button_payload, now
        )
        if found is not None and found.status in OPEN_WORK_ORDERS and read is not None:
            order, (answer, proposed) = found, read
    words = text if text.strip() else ""
    awaiting = thread.pending_ticket_id is not None and keyword is None and answer is None
    building = None
    if awaiting:
        offered = [b for b in (session.get(Building, i) for i in thread.building_choices) if b]
        named = match_building(
            words, choices(offered), choices(tenant_buildings(session, tenant.id))
        )
        building = session.get(Building, named.id) if named else None
    topic = office_topic(words) if words and keyword is None and answer is None else None
    solved = None
    if keyword is None and answer is None and normalise(words) in SOLVED_PHRASES:
        solved = session.scalar(
            select(Ticket)
            .where(
                Ticket.tenant_id == tenant.id,
                Ticket.contact_id == contact.id,
                Ticket.status == TicketStatus.DONE,
                Ticket.updated_at >= now - SOLVED_WITHIN,
            )
            .order_by(Ticket.updated_at.desc())
            .limit(1)
        )
    return World(mine, question, awaiting, building, order, answer, proposed, topic, solved)


def _file_under(session: Session, ticket: Ticket, building: Building, now: datetime) -> None:
    ticket.building_id = building.id
    if ticket.contact_id is not None:
        unit = contact_unit(session, ticket.contact_id, building.id)
        ticket.unit_id = unit.id if unit else None
    ticket.updated_at = now
    record_ticket_event(
        session,
        ticket,
        TicketEventKind.BUILDING_SET,
        actor="contact",
        at=now,
        detail={"building": building.code},
    )


def _named(building: Building) -> str:
    return f" per {building.name}, {building.address}"


def apply_world(
    session: Session,
    tenant: Tenant,
    contact: Contact,
    thread: Conversation,
    message: Message,
    world: World,
    plan: rules.Plan,
    now: datetime,
) -> dict[str, Any]:
    """Carry out the plan's part in the office's world; what the replies need."""
    values: dict[str, str] = {}
    tell: list[list[Any]] = []
    ticket = (
        session.scalar(select(Ticket).where(Ticket.source_message_id == message.id))
        if plan.ticket
        else None
    )
    if ticket is not None:
        values["ticket"] = str(ticket.id)
        if len(world.mine) == 1:
            _file_under(session, ticket, world.mine[0], now)
            values["building"] = _named(world.mine[0])
    if world.awaiting_building:
        pending = session.get(Ticket, thread.pending_ticket_id)
        if pending is not None and plan.building_answer is not None:
            values["ticket"] = str(pending.id)
            if plan.building_answer and world.building is not None:
                _file_under(session, pending, world.building, now)
                # Remembered: the person told us which building they write about.
                link_contact(
                    session, contact, world.building, role=None, source=DataSource.WHATSAPP_INBOUND
                )
                values["building"] = _named(world.building)
        # Asked once: answered, not understood or overtaken by a new request.
        thread.pending_ticket_id, thread.building_choices = None, []
    if plan.ask_building and ticket is not None:
        thread.pending_ticket_id = ticket.id
        thread.building_choices = [b.id for b in world.mine] if len(world.mine) > 1 else []
        values["choices"] = "\n".join(
            f"{n}. {b.name}, {b.address}" for n, b in enumerate(world.mine, start=1)
        )
    if plan.notices is not None:
        categories = set(contact.notice_categories or [])
        if plan.notices:
            categories.add(NoticeCategory.AVVISI)
        else:
            categories.discard(NoticeCategory.AVVISI)
        contact.notice_categories = sorted(categories)
        record_audit(
            session,
            tenant.id,
            "contact.notices_on" if plan.notices else "contact.notices_off",
            actor="contact",
            target_type="contact",
            target_id=contact.id,
        )
    if plan.work_order_answer is not None and world.work_order is not None:
        order = world.work_order
        status = apply_answer(
            session,
            order,
            plan.work_order_answer,
            world.proposed_at,
            actor=f"contact:{contact.id}",
            now=now,
        )
        values["work_order"] = str(order.id)
        values["proposed"] = proposal_text(world.proposed_at)
        tell.append([order.ticket_id, order.id, str(status)])
    if plan.confirmed_solved and world.solved is not None:
        values["ticket"] = str(world.solved.id)
        record_ticket_event(
            session, world.solved, TicketEventKind.CONFIRMED_SOLVED, actor="contact", at=now
        )
    if plan.office_topic is not None:
        only = world.mine[0] if len(world.mine) == 1 else None
        building = (
            {"name": only.name, "emergency_numbers": only.emergency_numbers} if only else None
        )
        values["answer"] = office_answer(plan.office_topic, tenant.settings, building)
    detail: dict[str, Any] = {}
    if values:
        detail["values"] = values
    if tell:
        detail["tell"] = tell
    return detail
