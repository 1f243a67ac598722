"""The admin's logs: the audit trail and the bot log, with filters.

Filters arrive from a query string; anything malformed is dropped with an Italian
note for the page instead of an error, so no input can make these pages fail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, func, select
from sqlalchemy.orm import Session

from bot.console.labels import OFFICE_ZONE
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


def audit_query(tenant_id: int, wanted: LogFilter) -> Select[AuditEvent]:
    """The audit rows the filter keeps, newest first (the page takes a page, the CSV all)."""
    query = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
    if wanted.since:
        query = query.where(AuditEvent.at >= wanted.since)
    if wanted.until:
        query = query.where(AuditEvent.at < wanted.until)
    if wanted.user_id is not None:
        query = query.where(AuditEvent.user_id == wanted.user_id)
    if wanted.action:
        # "conversation" finds every conversation.* action.
        query = query.where(AuditEvent.action.startswith(wanted.action, autoescape=True))
    return query.order_by(AuditEvent.id.desc())


def audit_events(session: Session, tenant_id: int, wanted: LogFilter) -> Sequence[AuditEvent]:
    return session.scalars(audit_query(tenant_id, wanted).limit(PAGE_SIZE)).all()


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


def bot_log_query(tenant_id: int, wanted: LogFilter) -> Select[BotLogEntry, int | None]:
    """Entries, newest first, each with its message's conversation (for a link)."""
    return (
        select(BotLogEntry, Message.conversation_id)
        .outerjoin(Message, Message.id == BotLogEntry.message_id)
        .where(*_bot_log_where(tenant_id, wanted))
        .order_by(BotLogEntry.id.desc())
    )


def bot_log(
    session: Session, tenant_id: int, wanted: LogFilter
) -> Sequence[Row[BotLogEntry, int | None]]:
    return session.execute(bot_log_query(tenant_id, wanted).limit(PAGE_SIZE)).all()


@dataclass(frozen=True)
class BotLogTotals:
    entries: int
    by_intent: list[tuple[str | None, int]]
    by_action: list[tuple[str, int]]
    mean_confidence: float | None
    mean_duration_ms: float | None


def bot_log_totals(session: Session, tenant_id: int, wanted: LogFilter) -> BotLogTotals:
    """What the filtered log adds up to, counted in the database."""
    where = _bot_log_where(tenant_id, wanted)
    entries, confidence, duration = session.execute(
        select(
            func.count(BotLogEntry.id),
            func.avg(BotLogEntry.confidence),
            func.avg(BotLogEntry.duration_ms),
        ).where(*where)
    ).one()

    def counted(column: Any) -> list[Any]:
        rows = session.execute(
            select(column, func.count(BotLogEntry.id))
            .where(*where)
            .group_by(column)
            .order_by(func.count(BotLogEntry.id).desc())
            .limit(30)
        ).all()
        return [(value, int(count)) for value, count in rows]

    return BotLogTotals(
        entries=int(entries or 0),
        by_intent=counted(BotLogEntry.intent),
        by_action=counted(BotLogEntry.action),
        mean_confidence=float(confidence) if confidence is not None else None,
        mean_duration_ms=float(duration) if duration is not None else None,
    )


def tenant_users(session: Session, tenant_id: int) -> dict[int, str]:
    return dict(
        session.execute(
            select(User.id, User.email).where(User.tenant_id == tenant_id).order_by(User.email)
        ).all()
    )


def audit_actions(session: Session, tenant_id: int) -> list[str]:
    return list(
        session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.tenant_id == tenant_id)
            .distinct()
            .order_by(AuditEvent.action)
        )
    )
