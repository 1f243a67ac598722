"""Tickets as the office works them: list with filters, detail, creation and edits by
hand, internal notes, status changes; every change on the ticket's timeline and audited."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from bot.conversation.emergency import record_ticket_event
from bot.crm import record_ticket_change
from bot.exceptions import NotFound, Refused
from bot.office.actor import Actor
from bot.office.buildings import building_by_code, contact_unit, tenant_buildings
from bot.office.hours import OFFICE_ZONE
from bot.privacy.audit import record_actor_audit
from intents.sensitive import find_sensitive, redact
from storage.crypto import BodyCipher
from storage.models import (
    Building,
    Contact,
    MediaItem,
    Ticket,
    TicketEvent,
    TicketNote,
    User,
    WorkOrder,
)
from storage.queries import contains_text
from storage.vocabulary import (
    ContactKind,
    Priority,
    TicketEventKind,
    TicketKind,
    TicketStatus,
)

TICKET_STATUSES = tuple(TicketStatus)
PRIORITIES = tuple(Priority)
# Kinds an operator may open by hand (an emergency comes from a resident's message).
HAND_KINDS = tuple(k for k in TicketKind if k != TicketKind.EMERGENCY)
MAX_DESCRIPTION = 2000
MAX_NOTE = 2000
# Past this many suppliers the forms stop listing them and take a typed name instead.
SUPPLIER_CHOICES = 200
SUPPLIER_SUGGESTIONS = 5  # named when what was typed fits several
MAX_SUPPLIER_TEXT = 80
# A supplier's number: the whole field (a list's choice) or a label's tail ("· n. 12").
_SUPPLIER_NUMBER = re.compile(r"^(\d{1,9})$|n\. (\d{1,9})$")


@dataclass(frozen=True)
class TicketFilter:
    """The list's filters, from the query string (Italian names, as the page shows)."""

    status: str | None = None
    building: str | None = None
    assignee: int | None = None
    supplier: int | None = None
    # What was typed where the office has too many suppliers for a list.
    supplier_text: str | None = None
    older_than_days: int | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> TicketFilter:
        def number(name: str) -> int | None:
            raw = (args.get(name) or "").strip()
            return int(raw) if raw.isdigit() and len(raw) < 10 else None

        status = args.get("stato")
        supplier = _typed(args.get("fornitore") or "")
        chosen = _chosen_id(supplier)
        return cls(
            status=status if status in TICKET_STATUSES else None,
            building=(args.get("condominio") or "").strip().upper() or None,
            assignee=number("assegnato"),
            supplier=chosen,
            supplier_text=supplier if supplier and chosen is None else None,
            older_than_days=number("giorni"),
        )


def list_tickets(
    session: Session,
    tenant_id: int,
    wanted: TicketFilter | str | None = None,
    limit: int = 200,
    now: datetime | None = None,
    before: int | None = None,
) -> tuple[Sequence[Ticket], int | None]:
    """Newest first, a page at a time: the page, and the cursor of the next (older) one.

    Read backwards along the (office, [status,] id) index from the cursor ``before``;
    the other filters (building, assignee, supplier, age) narrow what it reads.
    """
    if not isinstance(wanted, TicketFilter):
        wanted = TicketFilter(status=wanted if wanted in TICKET_STATUSES else None)
    query = select(Ticket).where(Ticket.tenant_id == tenant_id)
    if wanted.status:
        query = query.where(Ticket.status == wanted.status)
    if wanted.building:
        query = query.join(Building, Building.id == Ticket.building_id).where(
            Building.code == wanted.building
        )
    if wanted.assignee is not None:
        query = query.where(Ticket.assignee_user_id == wanted.assignee)
    if wanted.supplier is not None:
        query = query.where(Ticket.supplier_contact_id == wanted.supplier)
    elif wanted.supplier_text:
        matching = select(Contact.id).where(_supplier_matches(tenant_id, wanted.supplier_text))
        query = query.where(Ticket.supplier_contact_id.in_(matching))
    if wanted.older_than_days is not None and now is not None:
        query = query.where(Ticket.created_at < now - timedelta(days=wanted.older_than_days))
    if before is not None:
        query = query.where(Ticket.id < before)
    rows = session.scalars(query.order_by(Ticket.id.desc()).limit(limit + 1)).all()
    for row in rows:  # loaded while the session is open: the page shows them
        _ = (row.building, row.assignee, row.supplier)
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


@dataclass
class TicketPage:
    """Everything the ticket's page shows, read in one session."""

    ticket: Ticket
    description: str | None
    timeline: list[TicketEvent]
    notes: list[tuple[TicketNote, str]]
    work_orders: list[WorkOrder]
    attachments: list[MediaItem]
    choices: dict[str, Any] = field(default_factory=dict)
    due: str = ""  # the due date as the date field writes it (AAAA-MM-GG, office time)


def ticket_page(session: Session, tenant_id: int, ticket_id: int, cipher: BodyCipher) -> TicketPage:
    ticket = load_ticket(session, tenant_id, ticket_id)
    _ = (ticket.building, ticket.unit, ticket.assignee, ticket.supplier)
    timeline = session.scalars(
        select(TicketEvent).where(TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.id)
    ).all()
    notes = session.scalars(
        select(TicketNote).where(TicketNote.ticket_id == ticket.id).order_by(TicketNote.id)
    ).all()
    orders = session.scalars(
        select(WorkOrder).where(WorkOrder.ticket_id == ticket.id).order_by(WorkOrder.id)
    ).all()
    for order in orders:
        _ = order.supplier
    attachments = (
        session.scalars(
            select(MediaItem)
            .where(MediaItem.message_id == ticket.source_message_id)
            .order_by(MediaItem.position)
        ).all()
        if ticket.source_message_id
        else []
    )
    return TicketPage(
        ticket=ticket,
        description=cipher.decrypt(ticket.description) if ticket.description else None,
        timeline=list(timeline),
        notes=[(note, cipher.decrypt(note.body)) for note in notes],
        work_orders=list(orders),
        attachments=list(attachments),
        choices=form_choices(session, tenant_id),
        due=ticket.due_at.astimezone(OFFICE_ZONE).date().isoformat() if ticket.due_at else "",
    )


def form_choices(session: Session, tenant_id: int) -> dict[str, Any]:
    """What the ticket forms offer: buildings, colleagues, suppliers.

    Suppliers come as a list up to SUPPLIER_CHOICES of them; an office with more
    gets ``None`` and the forms a field where the supplier is typed (name, trade or
    number) and found by :func:`find_supplier`."""
    suppliers = session.scalars(
        select(Contact)
        .where(Contact.tenant_id == tenant_id, Contact.kind == ContactKind.FORNITORE)
        .order_by(Contact.name, Contact.id)
        .limit(SUPPLIER_CHOICES + 1)
    ).all()
    return {
        "buildings": tenant_buildings(session, tenant_id),
        "users": session.scalars(
            select(User)
            .where(User.tenant_id == tenant_id, User.active.is_(True))
            .order_by(User.email)
        ).all(),
        "suppliers": suppliers if len(suppliers) <= SUPPLIER_CHOICES else None,
        "priorities": PRIORITIES,
        "kinds": HAND_KINDS,
    }


def supplier_label(contact: Contact) -> str:
    """How a supplier is written in the typed field; its number at the end finds it again."""
    trade = f" ({contact.trade})" if contact.trade else ""
    return f"{contact.name or contact.phone or contact.wa_id}{trade} · n. {contact.id}"


def _typed(raw: str) -> str:
    return " ".join(raw.split())[:MAX_SUPPLIER_TEXT]


def _chosen_id(raw: str) -> int | None:
    """The supplier's number, when the field holds one (picked from a list, or a label)."""
    found = _SUPPLIER_NUMBER.search(raw)
    return int(found.group(1) or found.group(2)) if found else None


def _supplier_matches(tenant_id: int, text: str) -> ColumnElement[bool]:
    conditions = [contains_text(Contact.name, text), contains_text(Contact.trade, text)]
    digits = re.sub(r"\D", "", text)
    if len(digits) >= 3:
        conditions.append(contains_text(Contact.phone, digits))
    return and_(
        Contact.tenant_id == tenant_id, Contact.kind == ContactKind.FORNITORE, or_(*conditions)
    )


def find_supplier(session: Session, tenant_id: int, raw: str) -> Contact | None:
    """The office's supplier a form names: by number (a list's choice, or the label
    of the typed field), or the one supplier whose name, trade or telephone number
    contains what was typed. ``None`` for an empty field; Refused, in Italian, for
    one that names nobody or several."""
    text = _typed(raw)
    if not text:
        return None
    chosen = _chosen_id(text)
    if chosen is not None:
        contact = session.get(Contact, chosen)
        if (
            contact is None
            or contact.tenant_id != tenant_id
            or contact.kind != ContactKind.FORNITORE
        ):
            raise Refused("Fornitore non valido: sceglilo dall'elenco.")
        return contact
    found = session.scalars(
        select(Contact)
        .where(_supplier_matches(tenant_id, text))
        .order_by(Contact.name, Contact.id)
        .limit(SUPPLIER_SUGGESTIONS + 1)
    ).all()
    if not found:
        raise Refused(f"Nessun fornitore corrisponde a «{text}».")
    if len(found) > 1:
        names = ", ".join(supplier_label(c) for c in found[:SUPPLIER_SUGGESTIONS])
        more = "…" if len(found) > SUPPLIER_SUGGESTIONS else ""
        raise Refused(
            f"Più fornitori corrispondono a «{text}»: {names}{more}. "
            "Scrivi il nome per intero, il telefono o il numero del fornitore."
        )
    return found[0]


# -- changes ----------------------------------------------------------------------------


def _clean_text(raw: str, limit: int) -> str:
    text = raw.strip()
    if len(text) > limit:
        raise Refused(f"Testo troppo lungo: al massimo {limit} caratteri.")
    # Stored as a resident's message is: identifiers and health data redacted.
    findings = find_sensitive(text) if text else []
    return redact(text, list(findings)) if findings else text


def _due(raw: str) -> datetime | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError as error:
        raise Refused("Scadenza non valida: usa il formato AAAA-MM-GG.") from error
    # The end of that day in the office's time.
    return datetime.combine(day, time(23, 59), OFFICE_ZONE)


def _user(session: Session, tenant_id: int, raw: str) -> int | None:
    if not raw.strip():
        return None
    user = session.get(User, int(raw)) if raw.strip().isdigit() else None
    if user is None or user.tenant_id != tenant_id or not user.active:
        raise Refused("Operatore non valido: sceglilo dall'elenco.")
    return user.id


def _supplier(session: Session, tenant_id: int, raw: str) -> int | None:
    contact = find_supplier(session, tenant_id, raw)
    return contact.id if contact else None


def _building(session: Session, tenant_id: int, raw: str) -> Building | None:
    if not raw.strip():
        return None
    building = building_by_code(session, tenant_id, raw)
    if building is None:
        raise Refused("Condominio non valido: sceglilo dall'elenco.")
    return building


def update_ticket(
    session: Session,
    actor: Actor,
    ticket_id: int,
    form: Mapping[str, str],
    cipher: BodyCipher,
    now: datetime,
) -> list[str]:
    """Apply the edit form; returns the names of the fields that changed."""
    ticket = load_ticket(session, actor.tenant_id, ticket_id)
    changed: dict[str, Any] = {}
    if "building" in form:
        building = _building(session, actor.tenant_id, form["building"])
        building_id = building.id if building else None
        if building_id != ticket.building_id:
            ticket.building_id = building_id
            unit = (
                contact_unit(session, ticket.contact_id, building_id)
                if building_id and ticket.contact_id
                else None
            )
            ticket.unit_id = unit.id if unit else None
            changed["building"] = building.code if building else None
    if "priority" in form:
        if form["priority"] not in PRIORITIES:
            raise Refused("Priorità non valida.")
        if form["priority"] != ticket.priority:
            ticket.priority = Priority(form["priority"])
            changed["priority"] = form["priority"]
    if "assignee" in form:
        assignee = _user(session, actor.tenant_id, form["assignee"])
        if assignee != ticket.assignee_user_id:
            ticket.assignee_user_id = assignee
            changed["assignee"] = assignee
    if "supplier" in form:
        supplier = _supplier(session, actor.tenant_id, form["supplier"])
        if supplier != ticket.supplier_contact_id:
            ticket.supplier_contact_id = supplier
            changed["supplier"] = supplier
    if "due" in form:
        due = _due(form["due"])
        if due != ticket.due_at:
            ticket.due_at = due
            changed["due"] = form["due"].strip() or None
    if "description" in form:
        text = _clean_text(form["description"], MAX_DESCRIPTION)
        current = cipher.decrypt(ticket.description) if ticket.description else ""
        if text != current:
            ticket.description = cipher.encrypt(text) if text else None
            changed["description"] = True  # the words stay out of the timeline and audit
    if changed:
        ticket.updated_at = now
        record_ticket_event(
            session, ticket, TicketEventKind.UPDATED, actor=actor.audit_name, at=now, detail=changed
        )
        record_actor_audit(session, actor, "ticket.update", "ticket", ticket.id, changed)
    return list(changed)


def create_ticket(
    session: Session, actor: Actor, form: Mapping[str, str], cipher: BodyCipher, now: datetime
) -> Ticket:
    """A ticket opened by hand (a phone call, a visit to the office)."""
    kind = form.get("kind", "")
    if kind not in HAND_KINDS:
        raise Refused("Tipo di ticket non valido.")
    description = _clean_text(form.get("description", ""), MAX_DESCRIPTION)
    if not description:
        raise Refused("Scrivi una descrizione.")
    ticket = Ticket(
        tenant_id=actor.tenant_id,
        kind=TicketKind(kind),
        status=TicketStatus.OPEN,
        entities=[],
        description=cipher.encrypt(description),
        priority=Priority.NORMAL,
        created_at=now,
        updated_at=now,
    )
    session.add(ticket)
    session.flush()
    record_ticket_event(
        session,
        ticket,
        TicketEventKind.OPENED,
        actor=actor.audit_name,
        at=now,
        detail={"by": "hand"},
    )
    record_actor_audit(session, actor, "ticket.create", "ticket", ticket.id, {"kind": kind})
    update_ticket(
        session,
        actor,
        ticket.id,
        {k: v for k, v in form.items() if k != "description"},
        cipher,
        now,
    )
    return ticket


def add_note(
    session: Session, actor: Actor, ticket_id: int, text: str, cipher: BodyCipher, now: datetime
) -> TicketNote:
    ticket = load_ticket(session, actor.tenant_id, ticket_id)
    body = _clean_text(text, MAX_NOTE)
    if not body:
        raise Refused("La nota è vuota.")
    note = TicketNote(
        tenant_id=ticket.tenant_id,
        ticket_id=ticket.id,
        user_id=actor.user_id,
        body=cipher.encrypt(body),
        created_at=now,
    )
    session.add(note)
    session.flush()
    record_ticket_event(
        session,
        ticket,
        TicketEventKind.NOTE_ADDED,
        actor=actor.audit_name,
        at=now,
        detail={"note_id": note.id},
    )
    record_actor_audit(session, actor, "ticket.note", "ticket", ticket.id, {"note_id": note.id})
    return note


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
    else:
        record_ticket_event(
            session,
            ticket,
            TicketEventKind.UPDATED,
            actor=actor.audit_name,
            at=now,
            detail={"status": status},
        )
    record_actor_audit(
        session, actor, "ticket.status", "ticket", ticket.id, {"from": previous, "to": status}
    )
    record_ticket_change(session, actor.tenant_id, ticket, previous, actor.user_id)
    return ticket
