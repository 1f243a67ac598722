"""The admin's logs: the audit trail and the bot log, with filters.

Filters arrive from a query string; anything malformed is dropped with an Italian
note for the page instead of an error, so no input can make these pages fail.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select, union_all
from sqlalchemy.orm import Session

from bot.console.labels import OFFICE_ZONE
from bot.console.paging import Page, decode_cursor, newest_after, newest_page
from bot.exceptions import InvalidInput
from bot.web.numbers import parse_id
from storage.models import AuditEvent, BotLogEntry, Message, User

PAGE_SIZE = 200


@dataclass(frozen=True)
class LogFilter:
    since: datetime | None = None
    until: datetime | None = None
    user_id: int | None = None
    action: str | None = None
    intent: str | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None
    problems: list[str] = field(default_factory=list)


def parse_filter(args: Mapping[str, str]) -> LogFilter:
    problems: list[str] = []
    since = _day(args.get("dal"), problems, "data iniziale")
    until = _day(args.get("al"), problems, "data finale")
    return LogFilter(
        since=since,
        # "al 3 marzo" includes the whole of 3 March.
        until=until + timedelta(days=1) if until else None,
        user_id=_id(args.get("utente"), problems, "utente"),
        action=(args.get("azione") or "").strip()[:64] or None,
        intent=(args.get("intento") or "").strip()[:32] or None,
        min_confidence=_fraction(args.get("confidenza_min"), problems, "confidenza minima"),
        max_confidence=_fraction(args.get("confidenza_max"), problems, "confidenza massima"),
        problems=problems,
    )


def _day(raw: str | None, problems: list[str], what: str) -> datetime | None:
    if not raw:
        return None
    try:
        day = date.fromisoformat(raw.strip())
    except ValueError:
        problems.append(f"La {what} non è una data valida (AAAA-MM-GG): filtro ignorato.")
        return None
    return datetime.combine(day, time.min, OFFICE_ZONE).astimezone(UTC)


def _id(raw: str | None, problems: list[str], what: str) -> int | None:
    if not raw:
        return None
    try:
        return parse_id(raw.strip(), what)
    except InvalidInput:
        problems.append(f"Valore di {what} non valido: filtro ignorato.")
        return None


def _fraction(raw: str | None, problems: list[str], what: str) -> float | None:
    """A confidence as the operator types it: 0,7 or 0.7 or 70 (per cent)."""
    if not raw:
        return None
    try:
        value = float(raw.strip().replace(",", ".").rstrip("%"))
    except ValueError:
        problems.append(f"La {what} non è un numero: filtro ignorato.")
        return None
    if value > 1:
        value /= 100
    if not 0 <= value <= 1:
        problems.append(f"La {what} deve essere tra 0 e 1: filtro ignorato.")
        return None
    return value


def _audit_where(tenant_id: int, wanted: LogFilter) -> list[ColumnElement[bool]]:
    conditions = [AuditEvent.tenant_id == tenant_id]
    if wanted.since:
        conditions.append(AuditEvent.at >= wanted.since)
    if wanted.until:
        conditions.append(AuditEvent.at < wanted.until)
    if wanted.user_id is not None:
        conditions.append(AuditEvent.user_id == wanted.user_id)
    return conditions


def audit_query(tenant_id: int, wanted: LogFilter) -> Select[AuditEvent]:
    """The audit rows the filter keeps, newest first, for the CSV export."""
    query = select(AuditEvent).where(*_audit_where(tenant_id, wanted))
    if wanted.action:
        # "conversation" finds every conversation.* action.
        query = query.where(AuditEvent.action.startswith(wanted.action, autoescape=True))
    return query.order_by(AuditEvent.id.desc())


def audit_events(
    session: Session, tenant_id: int, wanted: LogFilter, after: str | None = None
) -> Page[AuditEvent]:
    """A page of the audit trail, newest first, from the cursor ``after``.

    Read in the order of an index on (office, [action or person,] time, id): the page's
    rows and no others, whatever the trail's length. The action filter takes the
    actions it names (``conversation`` names every ``conversation.*``) from the
    office's list of actions, so that each is an equality the index can serve; with
    several, each one's page is read from its own range of the index and the pages
    are merged (one range with all of them would have to be sorted whole).
    """
    cursor = decode_cursor(after)
    query = select(AuditEvent).where(*_audit_where(tenant_id, wanted))
    if wanted.action:
        named = [a for a in audit_actions(session, tenant_id) if a.startswith(wanted.action)]
        if len(named) == 1 or len(named) > MERGED_ACTIONS:
            query = query.where(AuditEvent.action.in_(named))
        else:
            pages = [
                newest_after(query.where(AuditEvent.action == action), *_AUDIT_ORDER, cursor)
                .with_only_columns(AuditEvent.id)
                .limit(PAGE_SIZE + 1)
                .subquery()
                for action in named
            ]
            merged = union_all(*(select(page.c.id) for page in pages))
            query = select(AuditEvent).where(
                AuditEvent.tenant_id == tenant_id, AuditEvent.id.in_(merged)
            )
    return newest_page(
        session,
        query,
        *_AUDIT_ORDER,
        cursor,
        PAGE_SIZE,
        key=lambda event: (event.at, event.id),
        scalars=True,
    )


_AUDIT_ORDER = (AuditEvent.at, AuditEvent.id)
# Up to this many actions named by one filter are read each from its own index range.
MERGED_ACTIONS = 20


def _bot_log_where(tenant_id: int, wanted: LogFilter) -> list[ColumnElement[bool]]:
    conditions = [BotLogEntry.tenant_id == tenant_id]
    if wanted.since:
        conditions.append(BotLogEntry.at >= wanted.since)
    if wanted.until:
        conditions.append(BotLogEntry.at < wanted.until)
    if wanted.intent:
        conditions.append(BotLogEntry.intent == wanted.intent)
    if wanted.action:
        conditions.append(BotLogEntry.action.startswith(wanted.action, autoescape=True))
    if wanted.min_confidence is not None:
        conditions.append(BotLogEntry.confidence >= wanted.min_confidence)
    if wanted.max_confidence is not None:
        conditions.append(BotLogEntry.confidence <= wanted.max_confidence)
    return conditions


def _bot_log_rows(tenant_id: int, wanted: LogFilter) -> Select[BotLogEntry, int | None]:
    """Entries with their message's conversation (for a link), in no order yet."""
    return (
        select(BotLogEntry, Message.conversation_id)
        .outerjoin(Message, Message.id == BotLogEntry.message_id)
        .where(*_bot_log_where(tenant_id, wanted))
    )


def bot_log_query(tenant_id: int, wanted: LogFilter) -> Select[BotLogEntry, int | None]:
    """Entries, newest first, each with its message's conversation, for the CSV export."""
    return _bot_log_rows(tenant_id, wanted).order_by(BotLogEntry.id.desc())


def bot_log(
    session: Session, tenant_id: int, wanted: LogFilter, after: str | None = None
) -> Page[tuple[BotLogEntry, int | None]]:
    """A page of entries, newest first, each with its message's conversation (for a link).

    Read in the order of the (office, [intent,] time, id) index, a page at a time from
    the cursor ``after``; each entry's message is found by its id.
    """
    return newest_page(
        session,
        _bot_log_rows(tenant_id, wanted),
        BotLogEntry.at,
        BotLogEntry.id,
        decode_cursor(after),
        PAGE_SIZE,
        key=lambda row: (row[0].at, row[0].id),
    )


@dataclass(frozen=True)
class BotLogTotals:
    entries: int
    by_intent: list[tuple[str | None, int]]
    by_action: list[tuple[str, int]]
    mean_confidence: float | None
    mean_duration_ms: float | None


def bot_log_totals(session: Session, tenant_id: int, wanted: LogFilter) -> BotLogTotals:
    """What the filtered log adds up to, counted in the database in one pass: a row
    per (intent, action) pair, a few dozen at most, added up here."""
    rows = session.execute(
        select(
            BotLogEntry.intent,
            BotLogEntry.action,
            func.count(BotLogEntry.id),
            func.sum(BotLogEntry.confidence),
            func.count(BotLogEntry.confidence),
            func.sum(BotLogEntry.duration_ms),
            func.count(BotLogEntry.duration_ms),
        )
        .where(*_bot_log_where(tenant_id, wanted))
        .group_by(BotLogEntry.intent, BotLogEntry.action)
    ).all()
    by_intent: Counter[str | None] = Counter()
    by_action: Counter[str] = Counter()
    confidence_sum = duration_sum = 0.0
    confidences = durations = 0
    for intent, action, entries, confidence, confident, duration, timed in rows:
        by_intent[intent] += int(entries)
        by_action[action] += int(entries)
        confidence_sum += float(confidence or 0)
        confidences += int(confident)
        duration_sum += float(duration or 0)
        durations += int(timed)
    return BotLogTotals(
        entries=sum(by_intent.values()),
        by_intent=_most_common(by_intent),
        by_action=_most_common(by_action),
        mean_confidence=confidence_sum / confidences if confidences else None,
        mean_duration_ms=duration_sum / durations if durations else None,
    )


def _most_common(counts: Counter[Any]) -> list[Any]:
    """The 30 largest, largest first; ties in the order of their names."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))
    return ordered[:30]


def tenant_users(session: Session, tenant_id: int) -> dict[int, str]:
    return dict(
        session.execute(
            select(User.id, User.email).where(User.tenant_id == tenant_id).order_by(User.email)
        ).all()
    )


def audit_actions(session: Session, tenant_id: int) -> list[str]:
    """The office's distinct actions, in order, one index probe each.

    A ``DISTINCT`` would read the whole trail; this walks the (office, action) index
    from one action to the next (a recursive query: the smallest action, then the
    smallest above it, ...), as many steps as there are actions.
    """
    office = AuditEvent.tenant_id == tenant_id
    first = select(func.min(AuditEvent.action).label("action")).where(office)
    walk = first.cte("actions", recursive=True)
    following = (
        select(func.min(AuditEvent.action))
        .where(office, AuditEvent.action > walk.c.action)
        .scalar_subquery()
    )
    walk = walk.union_all(select(following).where(walk.c.action.is_not(None)))
    return [a for a in session.scalars(select(walk.c.action)) if a is not None]
