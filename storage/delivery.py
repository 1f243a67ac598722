"""Outbound messages' delivery: the claim before a send, its result, Twilio's status
callbacks applied monotonically, and the sends a dead worker left unconfirmed."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    Update,
    bindparam,
    func,
    select,
    text,
    update,
)

from storage.db import Database, rows_affected
from storage.models import PENDING_OUT, SENDING_OUT, UNCONFIRMED_OUT, Message, utcnow
from storage.vocabulary import DeliveryFailure, Direction, MessageStatus

# Twilio's callbacks can arrive out of order: a late "sent" must not overwrite
# "delivered" or "read". Failure outranks progress short of delivery.
STATUS_RANK: dict[str, int] = {
    MessageStatus.PENDING: 0,
    MessageStatus.ACCEPTED: 1,
    MessageStatus.SCHEDULED: 1,
    MessageStatus.QUEUED: 1,
    MessageStatus.SENDING: 2,
    MessageStatus.SENT: 3,
    MessageStatus.FAILED: 4,
    MessageStatus.UNDELIVERED: 4,
    MessageStatus.CANCELED: 4,
    MessageStatus.DELIVERED: 5,
    MessageStatus.READ: 6,
}

_messages: Table = Message.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class StatusChange:
    """A status that moved an outbound message forward."""

    tenant_id: int
    message_id: int
    conversation_id: int | None
    contact_id: int | None
    status: str
    error_code: int | None


def apply_status(
    db: Database,
    tenant_id: int,
    provider_sid: str,
    status: str,
    error_code: int | None,
    *,
    then: Callable[[Connection, StatusChange], None] | None = None,
) -> int | None:
    """Record a status if it moves the message forward; returns the message id if it did.

    ``then`` runs in the same transaction when it did (the CRM's outbox is written there).
    """
    rank = STATUS_RANK.get(status)
    if rank is None:
        return None
    statement = (
        update(_messages)
        .where(
            _messages.c.tenant_id == tenant_id,
            _messages.c.provider_sid == provider_sid,
            _messages.c.direction == Direction.OUT,
            _messages.c.status_rank < rank,
        )
        .values(status=status, status_rank=rank, error_code=error_code, status_at=utcnow())
        .returning(_messages.c.id, _messages.c.conversation_id, _messages.c.contact_id)
    )
    with db.begin() as connection:
        row = connection.execute(statement).first()
        if row is None:
            return None
        if then is not None:
            change = StatusChange(
                tenant_id, row.id, row.conversation_id, row.contact_id, status, error_code
            )
            then(connection, change)
        return int(row.id)


# Every send runs these two: built once, they skip building and coercing a statement
# and its cache key each time (half of the claim's CPU on SQLite).
_CLAIM = (
    update(_messages)
    .where(_messages.c.id == bindparam("message_id"), _messages.c.status == MessageStatus.PENDING)
    .values(
        status=MessageStatus.SENDING,
        status_rank=STATUS_RANK[MessageStatus.SENDING],
        status_at=bindparam("at"),
    )
)


@functools.cache
def _result_statement(with_sid: bool, with_error: bool) -> Update:
    values: dict[str, Any] = {
        "status": bindparam("status"),
        "status_rank": bindparam("rank"),
        "status_at": bindparam("at"),
    }
    if with_sid:
        values["provider_sid"] = bindparam("provider_sid")
    if with_error:
        values["error_code"] = bindparam("error_code")
    return update(_messages).where(_messages.c.id == bindparam("message_id")).values(values)


def claim_for_sending(db: Database, message_id: int) -> bool:
    """Take a recorded message from ``pending`` to ``sending``: only the one attempt
    that wins this may hand it to the provider."""
    with db.begin() as connection:
        result = connection.execute(_CLAIM, {"message_id": message_id, "at": utcnow()})
    return rows_affected(result) == 1


def record_send_result(
    db: Database,
    message_id: int,
    status: MessageStatus,
    *,
    provider_sid: str | None = None,
    error_code: int | None = None,
) -> None:
    """What the provider answered to a send (or ``pending`` again, to retry later)."""
    statement = _result_statement(provider_sid is not None, error_code is not None)
    values = {
        "message_id": message_id,
        "status": status,
        "rank": STATUS_RANK[status],
        "at": utcnow(),
        "provider_sid": provider_sid,
        "error_code": error_code,
    }
    with db.begin() as connection:
        connection.execute(statement, values)


# -- sends a dead worker left behind ----------------------------------------------------


@dataclass(frozen=True)
class StuckOutbound:
    """Outbound rows still ``pending`` or ``sending`` past their grace."""

    count: int
    oldest_created_at: datetime | None


def stuck_outbound(db: Database, older_than: datetime) -> StuckOutbound:
    """Count the stuck rows, through the two partial indexes (cheap on a big table)."""
    count, oldest = 0, None
    with db.connect() as connection:
        for predicate in (PENDING_OUT, SENDING_OUT):
            row = connection.execute(
                select(func.count(), func.min(_messages.c.created_at)).where(
                    text(predicate), _messages.c.created_at < older_than
                )
            ).one()
            count += int(row[0])
            if row[1] is not None and (oldest is None or row[1] < oldest):
                oldest = row[1]
    return StuckOutbound(count=count, oldest_created_at=oldest)


@dataclass(frozen=True)
class StaleSend:
    """A row claimed for sending whose attempt never recorded what the provider said."""

    id: int
    tenant_id: int
    contact_id: int | None
    created_at: datetime
    body: bytes | None
    template_sid: str | None
    reconcile_looks: int


def stale_sends(db: Database, touched_before: datetime, limit: int = 50) -> list[StaleSend]:
    """``sending`` rows untouched since ``touched_before`` (the sending lease), oldest first."""
    columns = [_messages.c[name] for name in StaleSend.__dataclass_fields__]
    statement = (
        select(*columns)
        .where(text(SENDING_OUT), _messages.c.status_at < touched_before)
        # In the index's own order: sorting by id would make SQLite scan the table.
        .order_by(_messages.c.created_at, _messages.c.id)
        .limit(limit)
    )
    with db.connect() as connection:
        return [StaleSend(*row) for row in connection.execute(statement)]


def known_provider_sids(db: Database, tenant_id: int, sids: Iterable[str]) -> set[str]:
    """Which of these provider SIDs our rows already carry (they belong to other sends)."""
    wanted = list(sids)
    if not wanted:
        return set()
    statement = select(_messages.c.provider_sid).where(
        _messages.c.tenant_id == tenant_id, _messages.c.provider_sid.in_(wanted)
    )
    with db.connect() as connection:
        return {sid for sid in connection.scalars(statement) if sid}


def _still_sending(message_id: int) -> list[ColumnElement[bool]]:
    return [
        _messages.c.id == message_id,
        _messages.c.direction == Direction.OUT,
        _messages.c.status == MessageStatus.SENDING,
    ]


def confirm_send(db: Database, message_id: int, provider_sid: str, status: MessageStatus) -> bool:
    """The provider's list shows the send: record its SID and status (if still unknown)."""
    with db.begin() as connection:
        result = connection.execute(
            update(_messages)
            .where(*_still_sending(message_id))
            .values(
                provider_sid=provider_sid,
                status=status,
                status_rank=STATUS_RANK[status],
                status_at=utcnow(),
            )
        )
    return rows_affected(result) == 1


def note_reconcile_look(db: Database, message_id: int, looks: int) -> bool:
    """Count a look that found nothing; the next one waits a lease from now.

    ``False`` if another sweeper counted this look first.
    """
    with db.begin() as connection:
        result = connection.execute(
            update(_messages)
            .where(*_still_sending(message_id), _messages.c.reconcile_looks == looks)
            .values(reconcile_looks=looks + 1, status_at=utcnow())
        )
    return rows_affected(result) == 1


def mark_never_confirmed(db: Database, message_id: int) -> bool:
    """Give up on a send the provider never showed: failed, for an operator to decide.

    Never resent by itself: it may have reached the resident all the same.
    """
    with db.begin() as connection:
        result = connection.execute(
            update(_messages)
            .where(*_still_sending(message_id))
            .values(
                status=MessageStatus.FAILED,
                status_rank=STATUS_RANK[MessageStatus.FAILED],
                status_at=utcnow(),
                failure_reason=DeliveryFailure.NEVER_CONFIRMED,
            )
        )
    return rows_affected(result) == 1


def outbound_needing_attention(
    db: Database, tenant_id: int, older_than: datetime, limit: int = 200
) -> list[int]:
    """An office's outbound messages an operator should look at, newest first: stuck in
    ``pending``/``sending`` past their grace, or never confirmed by the provider.

    One query per partial index, so each stays cheap however large the table grows.
    """
    found: set[int] = set()
    with db.connect() as connection:
        for predicate, aged in ((PENDING_OUT, True), (SENDING_OUT, True), (UNCONFIRMED_OUT, False)):
            statement = select(_messages.c.id).where(
                text(predicate), _messages.c.tenant_id == tenant_id
            )
            if aged:
                statement = statement.where(_messages.c.created_at < older_than)
            found.update(connection.scalars(statement.order_by(_messages.c.id.desc()).limit(limit)))
    return sorted(found, reverse=True)[:limit]
