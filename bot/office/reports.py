"""The office's reports: pure queries over a date range, aggregated in SQL.

Every query starts from an indexed range of the office's rows (the bot log by time,
conversations and tickets by opening time) and groups in the database; what comes
back is one row per week and intent, per conversation with an operator reply, per
emergency or per age bucket, never the messages themselves. Medians (which SQL
dialects do not share) are taken in Python over those per-conversation rows.

Definitions (also shown on the page):
- messages per week by intent: inbound messages the bot read (its log), by the week
  (Monday to Sunday, Italian time) in which they arrived;
- first response: for each conversation opened in the range that an operator answered,
  from the resident's last message before the operator's first reply to that reply,
  credited to the operator who sent it;
- resolution: tickets opened in the range and completed, from opening to their last
  update, credited to the first operator who answered in their conversation;
- emergencies: emergency tickets opened in the range, by the address or building the
  resident named, and the time to their acknowledgement (the ticket's own time when it
  has one, else the conversation's first takeover in the audit trail);
- handled by the bot alone: conversations opened in the range that no operator
  answered or took over;
- open tickets by age: tickets not completed, by how long ago they were opened.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Integer,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import Session, aliased

from storage.models import (
    AuditEvent,
    BotLogEntry,
    Conversation,
    Message,
    Ticket,
    User,
    UTCDateTime,
)
from storage.vocabulary import Direction, Mode, Purpose, TicketKind, TicketStatus

OFFICE_ZONE = ZoneInfo("Europe/Rome")
MAX_DAYS = 366 * 2
TAKEOVER = "conversation.takeover"
PLACE_LABELS = ("CONDOMINIO", "ADDRESS")
NO_PLACE = "luogo non indicato"
# Open tickets' ages: (lower bound in days, label); the last one has no upper bound.
AGE_BUCKETS: tuple[tuple[int, str], ...] = (
    (0, "meno di 1 giorno"),
    (1, "1-3 giorni"),
    (3, "3-7 giorni"),
    (7, "7-30 giorni"),
    (30, "oltre 30 giorni"),
)


@dataclass(frozen=True)
class Period:
    """Whole days in Italian time, ``first`` to ``last`` included; UTC bounds."""

    first: date
    last: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time.min, OFFICE_ZONE).astimezone(UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time.min, OFFICE_ZONE).astimezone(
            UTC
        )

    @property
    def first_monday(self) -> date:
        return self.first - timedelta(days=self.first.weekday())

    def weeks(self) -> list[date]:
        monday, out = self.first_monday, []
        while monday <= self.last:
            out.append(monday)
            monday += timedelta(days=7)
        return out


def default_period(today: date, weeks: int = 12) -> Period:
    """The last ``weeks`` whole weeks up to today."""
    first = today - timedelta(days=today.weekday()) - timedelta(weeks=weeks - 1)
    return Period(first, today)


def _in(column: Any, period: Period) -> ColumnElement[bool]:
    return and_(column >= period.start, column < period.end)


# -- messages per week by intent ------------------------------------------------------


@dataclass(frozen=True)
class WeekIntent:
    week: date  # the Monday
    intent: str | None
    count: int


def _days_since(session: Session, column: Any, origin: datetime) -> Any:
    """Days (fractional) from ``origin`` to ``column``, in the database's own dialect."""
    if session.get_bind().dialect.name == "sqlite":
        return func.julianday(column) - func.julianday(literal(origin, UTCDateTime()))
    return func.extract("epoch", column - literal(origin, UTCDateTime())) / 86400.0


def messages_by_week(session: Session, tenant_id: int, period: Period) -> list[WeekIntent]:
    origin = datetime.combine(period.first_monday, time.min, OFFICE_ZONE).astimezone(UTC)
    week = cast(func.floor(_days_since(session, BotLogEntry.at, origin) / 7), Integer)
    rows = session.execute(
        select(week.label("week"), BotLogEntry.intent, func.count(BotLogEntry.id))
        .where(
            BotLogEntry.tenant_id == tenant_id,
            _in(BotLogEntry.at, period),
            BotLogEntry.message_id.is_not(None),
        )
        .group_by(week, BotLogEntry.intent)
        .order_by(week, BotLogEntry.intent)
    ).all()
    found = [
        WeekIntent(period.first_monday + timedelta(weeks=int(index or 0)), intent, int(count))
        for index, intent, count in rows
    ]
    # The dialects order NULL differently: messages with no intent first, everywhere.
    return sorted(found, key=lambda w: (w.week, w.intent is not None, w.intent or ""))


# -- operators: first response and resolution -------------------------------------------


@dataclass(frozen=True)
class OperatorTimes:
    user_id: int | None
    email: str
    answered: int
    median_first_response_s: float | None
    resolved: int
    median_resolution_s: float | None


def _first_replies(session: Session, tenant_id: int, conversations: Any) -> Any:
    """Per conversation among ``conversations`` (a subquery of ids): its first operator
    reply's id (the messages' conversation index does the work)."""
    return (
        select(
            Message.conversation_id.label("conversation_id"),
            func.min(Message.id).label("reply_id"),
        )
        .where(
            Message.tenant_id == tenant_id,
            Message.conversation_id.in_(conversations),
            Message.purpose == Purpose.OPERATOR,
        )
        .group_by(Message.conversation_id)
        .subquery()
    )


def operator_times(session: Session, tenant_id: int, period: Period) -> list[OperatorTimes]:
    opened = select(Conversation.id).where(
        Conversation.tenant_id == tenant_id, _in(Conversation.created_at, period)
    )
    first = _first_replies(session, tenant_id, opened)
    reply = aliased(Message)
    before = (
        select(func.max(Message.created_at))
        .where(
            Message.conversation_id == first.c.conversation_id,
            Message.direction == Direction.IN,
            Message.id < first.c.reply_id,
        )
        .scalar_subquery()
    )
    answered = session.execute(
        select(reply.sender_user_id, reply.created_at, before)
        .select_from(first)
        .join(reply, reply.id == first.c.reply_id)
    ).all()
    waits: dict[int | None, list[float]] = {}
    for user_id, replied_at, asked_at in answered:
        seconds = (replied_at - _aware(asked_at)).total_seconds() if asked_at else None
        waits.setdefault(user_id, [])
        if seconds is not None and seconds >= 0:
            waits[user_id].append(seconds)
    counts = {user_id: 0 for user_id in waits}
    for user_id, *_rest in answered:
        counts[user_id] += 1
    resolutions = _resolutions(session, tenant_id, period)
    emails: dict[int | None, str] = dict(
        session.execute(select(User.id, User.email).where(User.tenant_id == tenant_id)).all()
    )
    out = []
    for user_id in sorted(set(waits) | set(resolutions), key=lambda u: emails.get(u, "~")):
        done = resolutions.get(user_id, [])
        out.append(
            OperatorTimes(
                user_id=user_id,
                email=emails.get(user_id, "operatore non più presente"),
                answered=counts.get(user_id, 0),
                median_first_response_s=_median(waits.get(user_id, [])),
                resolved=len(done),
                median_resolution_s=_median(done),
            )
        )
    return out


def _resolutions(session: Session, tenant_id: int, period: Period) -> dict[int | None, list[float]]:
    done = (
        select(Ticket.conversation_id)
        .where(
            Ticket.tenant_id == tenant_id,
            _in(Ticket.created_at, period),
            Ticket.status == TicketStatus.DONE,
            Ticket.conversation_id.is_not(None),
        )
        .scalar_subquery()
    )
    first = _first_replies(session, tenant_id, done)
    rows = session.execute(
        select(Message.sender_user_id, Ticket.created_at, Ticket.updated_at)
        .join(first, first.c.conversation_id == Ticket.conversation_id)
        .join(Message, Message.id == first.c.reply_id)
        .where(
            Ticket.tenant_id == tenant_id,
            _in(Ticket.created_at, period),
            Ticket.status == TicketStatus.DONE,
        )
    ).all()
    out: dict[int | None, list[float]] = {}
    for user_id, opened, updated in rows:
        out.setdefault(user_id, []).append(max(0.0, (updated - opened).total_seconds()))
    return out


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _aware(moment: datetime) -> datetime:
    # A scalar subquery's value skips the column type: SQLite hands back a string.
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- emergencies ----------------------------------------------------------------------


@dataclass(frozen=True)
class Emergency:
    ticket_id: int
    conversation_id: int | None
    place: str
    opened_at: datetime
    acknowledged_at: datetime | None

    @property
    def seconds_to_ack(self) -> float | None:
        if self.acknowledged_at is None:
            return None
        return max(0.0, (self.acknowledged_at - self.opened_at).total_seconds())


@dataclass(frozen=True)
class PlaceEmergencies:
    place: str
    count: int
    acknowledged: int
    median_ack_s: float | None


def emergencies(session: Session, tenant_id: int, period: Period) -> list[Emergency]:
    """Emergency tickets opened in the range, oldest first, with their acknowledgement."""
    own_ack = getattr(Ticket, "acknowledged_at", None)  # emergency cases keep their own
    columns: list[Any] = [Ticket.id, Ticket.conversation_id, Ticket.entities, Ticket.created_at]
    if own_ack is not None:
        columns.append(own_ack)
    rows = session.execute(
        select(*columns)
        .where(
            Ticket.tenant_id == tenant_id,
            _in(Ticket.created_at, period),
            Ticket.kind == TicketKind.EMERGENCY,
        )
        .order_by(Ticket.created_at)
    ).all()
    takeovers = _first_takeovers(session, tenant_id, {row[1] for row in rows if row[1] is not None})
    out = []
    for row in rows:
        ticket_id, conversation_id, entities, opened = row[:4]
        acknowledged = row[4] if own_ack is not None else None
        if acknowledged is None and conversation_id is not None:
            later = [t for t in takeovers.get(conversation_id, []) if t >= opened]
            acknowledged = later[0] if later else None
        out.append(Emergency(ticket_id, conversation_id, place_of(entities), opened, acknowledged))
    return out


def _first_takeovers(
    session: Session, tenant_id: int, conversation_ids: set[int]
) -> dict[int, list[datetime]]:
    if not conversation_ids:
        return {}
    rows = session.execute(
        select(AuditEvent.target_id, AuditEvent.at)
        .where(
            AuditEvent.tenant_id == tenant_id,
            AuditEvent.action == TAKEOVER,
            AuditEvent.target_id.in_([str(c) for c in conversation_ids]),
        )
        .order_by(AuditEvent.at)
    ).all()
    out: dict[int, list[datetime]] = {}
    for target, at in rows:
        if target is not None:
            out.setdefault(int(target), []).append(at)
    return out


def place_of(entities: list[Any] | None) -> str:
    """The building or street the resident named (the first of them), or a placeholder."""
    for wanted in PLACE_LABELS:
        for entity in entities or []:
            if isinstance(entity, dict) and entity.get("label") == wanted and entity.get("text"):
                return " ".join(str(entity["text"]).split())[:120]
    return NO_PLACE


def emergencies_by_place(found: Sequence[Emergency]) -> list[PlaceEmergencies]:
    places: dict[str, list[Emergency]] = {}
    for emergency in found:
        places.setdefault(emergency.place.lower(), []).append(emergency)
    out = []
    for group in places.values():
        acks = [e.seconds_to_ack for e in group if e.seconds_to_ack is not None]
        out.append(PlaceEmergencies(group[0].place, len(group), len(acks), _median(acks)))
    return sorted(out, key=lambda p: (-p.count, p.place))


# -- handled by the bot alone -----------------------------------------------------------


@dataclass(frozen=True)
class BotShare:
    conversations: int
    bot_only: int

    @property
    def share(self) -> float | None:
        return self.bot_only / self.conversations if self.conversations else None


def bot_share(session: Session, tenant_id: int, period: Period) -> BotShare:
    answered = exists().where(
        Message.conversation_id == Conversation.id, Message.purpose == Purpose.OPERATOR
    )
    taken = exists().where(
        AuditEvent.tenant_id == tenant_id,
        AuditEvent.action == TAKEOVER,
        AuditEvent.target_id == cast(Conversation.id, AuditEvent.target_id.type),
    )
    human = or_(answered, taken, Conversation.mode == Mode.HUMAN)
    total, humans = session.execute(
        select(func.count(Conversation.id), func.count(case((human, 1)))).where(
            Conversation.tenant_id == tenant_id, _in(Conversation.created_at, period)
        )
    ).one()
    return BotShare(int(total or 0), int(total or 0) - int(humans or 0))


# -- open tickets by age ------------------------------------------------------------------


@dataclass(frozen=True)
class AgeCount:
    bucket: str
    kind: str
    count: int


def open_tickets_by_age(session: Session, tenant_id: int, now: datetime) -> list[AgeCount]:
    """Tickets not completed, by age bucket and kind (whatever the range: they are open now)."""
    # Youngest first: a ticket falls in the first bucket whose upper bound it is under.
    bucket = case(
        *[
            (Ticket.created_at > now - timedelta(days=high), label)
            for (_, label), (high, _) in zip(AGE_BUCKETS, AGE_BUCKETS[1:], strict=False)
        ],
        else_=AGE_BUCKETS[-1][1],
    )
    rows = session.execute(
        select(bucket.label("bucket"), Ticket.kind, func.count(Ticket.id))
        .where(Ticket.tenant_id == tenant_id, Ticket.status != TicketStatus.DONE)
        .group_by(bucket, Ticket.kind)
    ).all()
    order = {label: index for index, (_, label) in enumerate(AGE_BUCKETS)}
    return sorted(
        (AgeCount(str(b), str(k), int(c)) for b, k, c in rows),
        key=lambda a: (order.get(a.bucket, 99), a.kind),
    )
