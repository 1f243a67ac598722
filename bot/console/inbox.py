"""What the operator reads: the inbox and one conversation, as plain read models.

Everything is scoped by the operator's tenant. Bodies are decrypted here, for the
screen only; templates escape them (Jinja autoescape), never mark them safe.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, case, cast, false, func, or_, select, true
from sqlalchemy.orm import Session, aliased
from sqlalchemy.types import String

from bot.console.paging import decode_cursor, newest_page
from bot.conversation.alerts import hazard_label
from bot.conversation.emergency import (
    conversations_with_pending_emergencies,
    pending_emergencies,
    place_of,
    ticket_timeline,
)
from bot.outbound.gate import SERVICE_WINDOW, GateDecision, evaluate
from storage.crypto import BodyCipher
from storage.models import (
    Building,
    BuildingLink,
    Contact,
    Conversation,
    ConversationRead,
    Event,
    InternalNote,
    MediaItem,
    Message,
    Ticket,
    TicketEvent,
    User,
    utcnow,
)
from storage.queries import (
    contact_ledger,
    contains_text,
    conversation_messages,
    get_contact,
    get_conversation,
)
from storage.vocabulary import ConversationStatus, Direction, Mode, Priority, Purpose, TicketKind

FILTERS: dict[str, str] = {
    "open": "Aperte",
    "mine": "Mie",
    "unassigned": "Da prendere in carico",
    "bot": "Gestite dal bot",
    "human": "Gestite da operatore",
    "closed": "Chiuse",
}
DEFAULT_FILTER = "open"
PREVIEW_CHARS = 90
PAGE_SIZE = 100  # conversations not needing attention, per page
ATTENTION_LIMIT = 500  # conversations needing attention, all on the first page up to this
COUNT_CAP = 999  # the filters' counts stop here ("999+")
MESSAGES_PER_PAGE = 100  # a conversation's messages, newest page first
MAX_SEARCH = 100
_TICKET_NUMBER = re.compile(r"^#?(\d{1,9})$")


@dataclass(frozen=True)
class InboxRow:
    id: int
    contact: str
    contact_kind: str
    mode: str
    priority: str
    needs_attention: bool
    status: str
    holder: str | None
    waiting_since: datetime | None
    last_message_at: datetime | None
    preview: str  # the resident's last message, not the bot's
    unacknowledged: bool = False  # an emergency nobody has taken charge of
    unread: int = 0  # the resident's messages this operator has not read yet


@dataclass(frozen=True)
class EmergencyView:
    """An emergency ticket of the conversation, with its timeline."""

    ticket: Ticket
    hazard: str
    place: str | None
    pending: bool  # not acknowledged and not closed
    timeline: Sequence[TicketEvent]


@dataclass(frozen=True)
class MessageView:
    id: int
    direction: str
    body: str
    status: str
    error_code: int | None
    intent: str | None
    confidence: float | None
    sensitive_kinds: list[str]
    redacted: bool
    purpose: str | None
    sender: str | None
    at: datetime
    media: int
    entities: list[dict[str, Any]]
    template: str | None = None  # the approved template's name, for a template send
    kind: str = "message"


@dataclass(frozen=True)
class NoteView:
    """An internal note: shown among the messages, marked as never sent."""

    id: int
    body: str
    author: str | None
    at: datetime
    kind: str = "note"


@dataclass(frozen=True)
class ServiceWindow:
    """The 24-hour customer-service window: free text until ``closes_at``, then only
    an approved template (``templates``: name and ContentSid, from the settings)."""

    closes_at: datetime | None
    open: bool
    templates: list[dict[str, str]]


@dataclass(frozen=True)
class ContactView:
    id: int
    label: str
    phone: str | None
    kind: str
    legal_basis: str | None
    consent: str
    source: str
    last_consent_event: str | None
    last_consent_at: datetime | None


@dataclass
class ConversationDetail:
    conversation: Conversation
    contact: ContactView
    contact_state: Contact
    holder: str | None
    # One page of messages, oldest first: the newest page unless ``before`` was given.
    messages: list[MessageView]
    tickets: Sequence[Ticket]
    events: Sequence[Event]
    colleagues: list[tuple[int, str]] = field(default_factory=list)
    emergencies: list[EmergencyView] = field(default_factory=list)
    # The cursor of the page of older messages (None: this page begins the conversation),
    # and whether newer messages exist than this page shows.
    older_cursor: int | None = None
    newer: bool = False
    notes: list[NoteView] = field(default_factory=list)

    @property
    def pending_emergency(self) -> bool:
        return any(e.pending for e in self.emergencies)

    @property
    def timeline(self) -> list[MessageView | NoteView]:
        """Messages and notes in the order they were written."""
        return sorted([*self.messages, *self.notes], key=lambda item: (item.at, item.kind))


def service_window(contact: Contact, settings: dict[str, Any], now: datetime) -> ServiceWindow:
    closes_at = contact.last_inbound_at + SERVICE_WINDOW if contact.last_inbound_at else None
    templates = [
        t
        for t in settings.get("approved_templates") or []
        if t.get("name") and t.get("content_sid")
    ]
    return ServiceWindow(closes_at, closes_at is not None and now < closes_at, templates)


# When the gate will not let an operator write: the page and a refused reply say this.
CALL_INSTEAD = "Non è possibile scrivere: chiamalo al {phone}."


def operator_may_write(contact: Contact, now: datetime) -> GateDecision:
    """Would the outbound gate take an operator's free-text reply now (rate aside)?"""
    return evaluate(
        consent=contact.consent,
        legal_basis=contact.legal_basis,
        last_inbound_at=contact.last_inbound_at,
        purpose=Purpose.OPERATOR,
        is_template=False,
        now=now,
    )


def contact_phone(session: Session, tenant_id: int, conversation_id: int) -> str | None:
    conversation = get_conversation(session, tenant_id, conversation_id)
    if conversation is None:
        return None
    contact = get_contact(session, tenant_id, conversation.contact_id)
    return contact.phone if contact else None


def contact_label(contact: Contact) -> str:
    """The phone when we have it; a WhatsApp username-only contact shows its id."""
    return _label(contact.phone, contact.wa_id, contact.profile_name)


def _label(phone: str | None, wa_id: str, profile_name: str | None) -> str:
    name = f" ({profile_name})" if profile_name else ""
    return (phone or f"WhatsApp {wa_id}") + name


# What an inbox row shows, read as plain columns.
_INBOX_COLUMNS = (
    Conversation.id,
    Conversation.mode,
    Conversation.priority,
    Conversation.needs_attention,
    Conversation.status,
    Conversation.human_since,
    Conversation.last_message_at,
    Conversation.created_at,
    Contact.phone,
    Contact.wa_id,
    Contact.profile_name,
    Contact.kind,
    User.email,
)


_Q = TypeVar("_Q", bound=Select[*tuple[Any, ...]])


def _filtered(query: _Q, name: str, user_id: int) -> _Q:
    # Each filter's conditions lead one of the inbox indexes (storage.models.Conversation).
    if name == "closed":
        return query.where(Conversation.status == ConversationStatus.CLOSED)
    query = query.where(Conversation.status == ConversationStatus.OPEN)
    if name == "mine":
        return query.where(Conversation.assigned_user_id == user_id)
    if name == "unassigned":
        return query.where(Conversation.mode == Mode.HUMAN, Conversation.assigned_user_id.is_(None))
    if name in ("bot", "human"):
        return query.where(Conversation.mode == Mode(name))
    return query


def _attention_order() -> tuple[Any, ...]:
    """Emergencies on top, then the longest wait first."""
    waiting_since = func.coalesce(
        Conversation.human_since, Conversation.last_message_at, Conversation.created_at
    )
    return (
        case((Conversation.priority == Priority.URGENT, 0), else_=1),
        waiting_since.asc(),
        Conversation.last_message_at.desc(),
        Conversation.id.desc(),
    )


@dataclass(frozen=True)
class InboxPage:
    rows: list[InboxRow]
    # The next page's cursor (older conversations), None on the last page.
    next_cursor: str | None


def search_condition(tenant_id: int, text: str) -> ColumnElement[bool] | None:
    """Conversations matching what the operator typed: the contact's name or number,
    a building they are linked to, a building or address named in its tickets, or a
    ticket number (``#12``)."""
    text = " ".join(text.split())[:MAX_SEARCH]
    if not text:
        return None
    tickets = select(Ticket.conversation_id).where(Ticket.tenant_id == tenant_id)
    # Tickets keep the places they name as JSON: matched as its text, accents included
    # as JSON escapes them.
    entities = cast(Ticket.entities, String)
    places = [contains_text(entities, text), contains_text(entities, json.dumps(text)[1:-1])]
    # The buildings a contact lives in or works for (the office's own records).
    buildings = (
        select(BuildingLink.contact_id)
        .join(Building, Building.id == BuildingLink.building_id)
        .where(
            BuildingLink.tenant_id == tenant_id,
            or_(
                contains_text(Building.code, text),
                contains_text(Building.name, text),
                contains_text(Building.address, text),
            ),
        )
    )
    conditions: list[ColumnElement[bool]] = [
        contains_text(Contact.profile_name, text),
        contains_text(Contact.name, text),
        Contact.id.in_(buildings),
        Conversation.id.in_(tickets.where(or_(*places))),
    ]
    digits = re.sub(r"\D", "", text)
    if len(digits) >= 3 and not re.search(r"[^\d\s+#()./-]", text):
        conditions += [contains_text(Contact.phone, digits), contains_text(Contact.wa_id, digits)]
    number = _TICKET_NUMBER.match(text)
    if number:
        conditions.append(Conversation.id.in_(tickets.where(Ticket.id == int(number.group(1)))))
    return or_(*conditions)


def inbox(
    session: Session,
    cipher: BodyCipher,
    tenant_id: int,
    user_id: int,
    filter_name: str = DEFAULT_FILTER,
    limit: int = PAGE_SIZE,
    after: str | None = None,
    search: str = "",
) -> InboxPage:
    """A page of the inbox: on the first, every conversation needing attention (up to
    ATTENTION_LIMIT, emergencies on top, then the longest wait); then the others, most
    recent message first, a page at a time from the cursor ``after``.

    Those needing attention are few and are sorted as a whole; the others are read in
    the order of an index, a page at a time, however many there are.
    """
    # Plain columns, not entities: a page is a few hundred rows, and building an ORM
    # object (and its identity-map entry) for each conversation and contact cost more
    # than the statement itself.
    query = _filtered(
        select(*_INBOX_COLUMNS)
        .join(Contact, Contact.id == Conversation.contact_id)
        .outerjoin(User, User.id == Conversation.assigned_user_id)
        .where(Conversation.tenant_id == tenant_id),
        filter_name,
        user_id,
    )
    wanted = search_condition(tenant_id, search)
    if wanted is not None:
        query = query.where(wanted)
    cursor = decode_cursor(after)
    rows: list[Any] = []
    if cursor is None:
        attention = query.where(Conversation.needs_attention == true())
        rows = list(session.execute(attention.order_by(*_attention_order()).limit(ATTENTION_LIMIT)))
    others = newest_page(
        session,
        query.where(Conversation.needs_attention == false()),
        Conversation.last_message_at,
        Conversation.id,
        cursor,
        limit,
        key=lambda row: (row.last_message_at, row.id),
        untimed=True,
    )
    rows += others.rows
    ids = [row.id for row in rows]
    previews = _previews(session, cipher, tenant_id, ids)
    pending = conversations_with_pending_emergencies(session, tenant_id, ids)
    unread = unread_counts(session, tenant_id, user_id, ids)
    return InboxPage(
        [
            InboxRow(
                id=c.id,
                contact=_label(c.phone, c.wa_id, c.profile_name),
                contact_kind=c.kind,
                mode=c.mode,
                priority=c.priority,
                needs_attention=c.needs_attention,
                status=c.status,
                holder=c.email,
                waiting_since=c.human_since or c.last_message_at or c.created_at,
                last_message_at=c.last_message_at,
                preview=previews.get(c.id, ""),
                unacknowledged=c.id in pending,
                unread=unread.get(c.id, 0),
            )
            for c in rows
        ],
        others.next_cursor,
    )


def _read_mark(user_id: int) -> ColumnElement[bool]:
    """The operator's read mark of the conversation (outer-joined: none yet is fine)."""
    return and_(
        ConversationRead.conversation_id == Conversation.id,
        ConversationRead.user_id == user_id,
    )


def _unread() -> ColumnElement[bool]:
    """A message of the conversation's resident past the operator's read mark: read
    from the (conversation, id) index from that id on, so a conversation read to its
    end costs one probe, not a walk of its history."""
    return and_(
        Message.conversation_id == Conversation.id,
        Message.direction == Direction.IN,
        Message.id > func.coalesce(ConversationRead.last_read_message_id, 0),
    )


def unread_counts(
    session: Session, tenant_id: int, user_id: int, conversation_ids: list[int]
) -> dict[int, int]:
    """Per conversation, the resident's messages this operator has not read."""
    if not conversation_ids:
        return {}
    query = (
        select(Conversation.id, func.count(Message.id))
        .outerjoin(ConversationRead, _read_mark(user_id))
        .join(Message, _unread())
        .where(Conversation.tenant_id == tenant_id, Conversation.id.in_(conversation_ids))
        .group_by(Conversation.id)
    )
    return {int(cid): int(n) for cid, n in session.execute(query)}


def unread_total(session: Session, tenant_id: int, user_id: int) -> int:
    """How many of the office's open conversations hold messages from the resident
    this operator has not read (the page title's count), up to COUNT_CAP + 1.

    One probe per open conversation, stopping at its first unread message. A join
    instead let PostgreSQL read the messages table from its start until it had
    counted enough, all of it for an operator who has read everything.
    """
    first_unread = (
        select(Message.id)
        .where(_unread())
        .limit(1)
        .correlate(Conversation, ConversationRead)
        .scalar_subquery()
    )
    waiting = (
        select(Conversation.id)
        .outerjoin(ConversationRead, _read_mark(user_id))
        .where(
            Conversation.tenant_id == tenant_id,
            Conversation.status == ConversationStatus.OPEN,
            first_unread.is_not(None),
        )
        .limit(COUNT_CAP + 1)
        .subquery()
    )
    return int(session.scalar(select(func.count()).select_from(waiting)) or 0)


def mark_read(session: Session, tenant_id: int, user_id: int, conversation_id: int) -> bool:
    """The operator has seen the conversation up to its newest message; whether that
    is further than they had seen before."""
    newest = session.scalar(
        select(func.max(Message.id)).where(
            Message.tenant_id == tenant_id, Message.conversation_id == conversation_id
        )
    )
    mark = session.get(ConversationRead, (user_id, conversation_id))
    if mark is None:
        mark = ConversationRead(
            user_id=user_id, conversation_id=conversation_id, tenant_id=tenant_id
        )
        session.add(mark)
    before = mark.last_read_message_id or 0
    mark.last_read_message_id = max(before, newest or 0)
    mark.read_at = utcnow()
    return mark.last_read_message_id > before


def next_waiting(
    session: Session, tenant_id: int, user_id: int, after: int | None = None
) -> int | None:
    """The conversation to open next: the first one waiting (urgent first, then the
    longest wait) other than ``after``."""
    query = (
        select(Conversation.id)
        .where(
            Conversation.tenant_id == tenant_id,
            Conversation.status == ConversationStatus.OPEN,
            Conversation.needs_attention.is_(True),
        )
        .order_by(*_attention_order())
        .limit(2)
    )
    ids = [i for i in session.scalars(query) if i != after]
    return ids[0] if ids else None


def inbox_counts(session: Session, tenant_id: int, user_id: int) -> dict[str, int]:
    """How many conversations each filter holds, counted up to COUNT_CAP + 1.

    A count reads its filter's index up to the cap and no further: past it the inbox
    says "999+", which tells an operator as much as an exact figure would, and costs
    the same however large the office grows. One statement, one round trip.
    """
    tenant = Conversation.tenant_id == tenant_id

    def capped(query: Select[Any]) -> Any:
        bounded = query.limit(COUNT_CAP + 1).subquery()
        return select(func.count()).select_from(bounded).scalar_subquery()

    counts = {
        name: capped(_filtered(select(Conversation.id).where(tenant), name, user_id))
        for name in FILTERS
    }
    counts["attention"] = capped(
        select(Conversation.id).where(
            tenant,
            Conversation.status == ConversationStatus.OPEN,
            Conversation.needs_attention == true(),
        )
    )
    row = session.execute(select(*(value.label(name) for name, value in counts.items()))).one()
    return {name: int(value or 0) for name, value in row._mapping.items()}


def _previews(
    session: Session, cipher: BodyCipher, tenant_id: int, conversation_ids: list[int]
) -> dict[int, str]:
    """The resident's newest message in each conversation: one probe of its messages'
    index each, then those messages by primary key (a page's worth of ids)."""
    if not conversation_ids:
        return {}
    inner = aliased(Message)
    newest = (
        select(inner.id)
        # The resident's own last words: the bot's answer says little about what they want.
        .where(inner.conversation_id == Conversation.id, inner.direction == Direction.IN)
        # In the (conversation, id) index's order, backwards from the newest: stops at the
        # first of theirs (max() with the direction was planned as a walk of all ids).
        .order_by(inner.conversation_id.desc(), inner.id.desc())
        .limit(1)
        .correlate(Conversation)
        .scalar_subquery()
    )
    latest = select(newest).where(
        Conversation.tenant_id == tenant_id, Conversation.id.in_(conversation_ids)
    )
    ids = [i for i in session.scalars(latest) if i is not None]
    if not ids:
        return {}
    # By primary key alone: with the office's id beside a few hundred ids, SQLite
    # preferred walking every message of the office through its (tenant, time) index.
    # The ids are the office's own (read through its conversations); checked anyway.
    messages = session.execute(
        select(Message.conversation_id, Message.body, Message.tenant_id).where(Message.id.in_(ids))
    ).all()
    return {
        conversation_id: _shorten(cipher.decrypt(body) if body else "")
        for conversation_id, body, owner in messages
        if conversation_id is not None and owner == tenant_id
    }


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"


def conversation_detail(
    session: Session,
    cipher: BodyCipher,
    tenant_id: int,
    conversation_id: int,
    before: int | None = None,
    templates: dict[str, str] | None = None,
) -> ConversationDetail | None:
    """A conversation with a page of its messages: the newest, or those before the
    message ``before`` (the cursor of the "older messages" link). ``templates``:
    ContentSid to name, so a template send shows which it was."""
    conversation = get_conversation(session, tenant_id, conversation_id)
    if conversation is None:
        return None
    contact = get_contact(session, tenant_id, conversation.contact_id)
    assert contact is not None
    users = dict(
        session.execute(select(User.id, User.email).where(User.tenant_id == tenant_id)).all()
    )
    tickets = session.scalars(
        select(Ticket)
        .where(Ticket.tenant_id == tenant_id, Ticket.conversation_id == conversation.id)
        .order_by(Ticket.id)
    ).all()
    events = session.scalars(
        select(Event)
        .where(Event.tenant_id == tenant_id, Event.conversation_id == conversation.id)
        .order_by(Event.id)
    ).all()
    colleagues = session.execute(
        select(User.id, User.email)
        .where(User.tenant_id == tenant_id, User.active)
        .order_by(User.email)
    ).all()
    # One message more than the page, to know whether older ones exist.
    page = conversation_messages(
        session, tenant_id, conversation.id, limit=MESSAGES_PER_PAGE + 1, before=before
    )
    older = len(page) > MESSAGES_PER_PAGE
    shown = page[1:] if older else page
    return ConversationDetail(
        conversation=conversation,
        contact=_contact_view(session, cipher, tenant_id, contact),
        contact_state=contact,
        holder=users.get(conversation.assigned_user_id) if conversation.assigned_user_id else None,
        messages=_message_views(
            session, cipher, tenant_id, shown, users, [*tickets, *events], templates or {}
        ),
        tickets=tickets,
        events=events,
        colleagues=list(colleagues),
        emergencies=_emergency_views(session, tenant_id, conversation.id, tickets),
        older_cursor=shown[0].id if older and shown else None,
        newer=before is not None,
        notes=_note_views(session, cipher, tenant_id, conversation.id, users),
    )


def _note_views(
    session: Session,
    cipher: BodyCipher,
    tenant_id: int,
    conversation_id: int,
    users: dict[int, str],
) -> list[NoteView]:
    notes = session.scalars(
        select(InternalNote)
        .where(InternalNote.tenant_id == tenant_id, InternalNote.conversation_id == conversation_id)
        .order_by(InternalNote.id)
    )
    return [
        NoteView(
            id=n.id,
            body=cipher.decrypt(n.body),
            author=users.get(n.author_user_id) if n.author_user_id else None,
            at=n.created_at,
        )
        for n in notes
    ]


def _emergency_views(
    session: Session, tenant_id: int, conversation_id: int, tickets: Sequence[Ticket]
) -> list[EmergencyView]:
    pending = {t.id for t in pending_emergencies(session, tenant_id, conversation_id)}
    return [
        EmergencyView(
            ticket=t,
            hazard=hazard_label(t.hazard),
            place=" · ".join(place_of(t.entities).values()) or None,
            pending=t.id in pending,
            timeline=ticket_timeline(session, tenant_id, t.id),
        )
        for t in tickets
        if t.kind == TicketKind.EMERGENCY
    ]


def _contact_view(
    session: Session, cipher: BodyCipher, tenant_id: int, contact: Contact
) -> ContactView:
    newest = contact_ledger(session, tenant_id, contact, cipher, newest_first=True, limit=1)
    last = newest[0] if newest else None
    return ContactView(
        id=contact.id,
        label=contact_label(contact),
        phone=contact.phone,
        kind=contact.kind,
        legal_basis=contact.legal_basis,
        consent=contact.consent,
        source=contact.source,
        last_consent_event=last.event if last else None,
        last_consent_at=last.at if last else None,
    )


def _message_views(
    session: Session,
    cipher: BodyCipher,
    tenant_id: int,
    messages: Sequence[Message],
    users: dict[int, str],
    linked: list[Ticket | Event],
    templates: dict[str, str],
) -> list[MessageView]:
    media = dict(
        session.execute(
            select(MediaItem.message_id, func.count(MediaItem.id))
            .where(
                MediaItem.tenant_id == tenant_id, MediaItem.message_id.in_([m.id for m in messages])
            )
            .group_by(MediaItem.message_id)
        ).all()
    )
    entities: dict[int, list[dict[str, Any]]] = {}
    for item in linked:
        if item.source_message_id is not None:
            entities.setdefault(item.source_message_id, []).extend(item.entities or [])
    return [
        MessageView(
            id=m.id,
            direction=m.direction,
            body=cipher.decrypt(m.body) if m.body else "",
            status=m.status,
            error_code=m.error_code,
            intent=m.intent,
            confidence=m.confidence,
            sensitive_kinds=list(m.sensitive_kinds or []),
            redacted=m.redacted,
            purpose=m.purpose,
            sender=users.get(m.sender_user_id) if m.sender_user_id else None,
            at=m.created_at,
            media=int(media.get(m.id, 0)),
            entities=entities.get(m.id, []),
            template=(templates.get(m.template_sid) or "modello approvato")
            if m.template_sid
            else None,
        )
        for m in messages
    ]
