"""The durable half of the inbound path: one short transaction per webhook delivery,
and the leases that let exactly one worker process a stored message at a time."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, or_, select, text, update

from storage.db import Database
from storage.models import PENDING_OUTBOUND, UNPROCESSED_INBOUND, Message, utcnow
from storage.vocabulary import Direction, MessageStatus

_messages: Table = Message.__table__  # type: ignore[assignment]


class InboundWriter:
    """Stores webhook deliveries: one short transaction, one driver-level statement.

    This is the webhook's hot path. The statement is rendered once from the table
    and run on a DBAPI connection that each thread keeps (taken from the engine, so
    it carries the engine's connect-time settings), skipping SQLAlchemy's per-call
    execution and pool machinery: together about 0.2 ms a request, more than the
    insert itself. Values go through the column types' own bind processors, so rows
    are stored exactly as the ORM would store them.
    """

    _COLUMNS = (
        "tenant_id",
        "direction",
        "provider_sid",
        "payload",
        "status",
        "status_rank",
        "sensitive_kinds",
        "redacted",
        "attempts",
        "sweeps",
        "created_at",
    )

    def __init__(self, db: Database) -> None:
        self._db = db
        self._local = threading.local()
        self._engine = engine = db.engine
        dialect = engine.dialect
        if dialect.name not in ("sqlite", "postgresql"):
            raise NotImplementedError(f"unsupported database: {dialect.name}")
        self._begin = "BEGIN IMMEDIATE" if dialect.name == "sqlite" else None
        marker = "?" if dialect.paramstyle == "qmark" else "%s"
        # Built from our own column names and placeholders only; values are bound.
        self._sql = (
            f"INSERT INTO messages ({', '.join(self._COLUMNS)}) "  # noqa: S608
            f"VALUES ({', '.join([marker] * len(self._COLUMNS))}) "
            "ON CONFLICT (tenant_id, provider_sid) DO NOTHING RETURNING id"
        )
        self._process = [
            _messages.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in self._COLUMNS
        ]

    def store(self, tenant_id: int, provider_sid: str, payload: bytes) -> int | None:
        """Insert the delivery; ``None`` when this ``MessageSid`` was already stored.

        The unique constraint on (tenant, provider SID) is the real deduplication:
        two concurrent deliveries of the same message cannot both insert.
        """
        values: tuple[object, ...] = (
            tenant_id,
            Direction.IN,
            provider_sid,
            payload,
            MessageStatus.RECEIVED,
            0,
            [],
            False,
            0,
            0,
            utcnow(),
        )
        params = tuple(p(v) if p else v for p, v in zip(self._process, values, strict=True))
        with self._db.write_lock():
            return self._insert(params)

    def _insert(self, params: tuple[object, ...]) -> int | None:
        connection = self._connection()
        try:
            cursor = connection.cursor()
            if self._begin:
                cursor.execute(self._begin)
            cursor.execute(self._sql, params)
            row = cursor.fetchone()
            cursor.close()
            connection.commit()
        except self._engine.dialect.loaded_dbapi.Error as error:
            self._after_error(connection, error)
            raise
        return int(row[0]) if row else None

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None or self._local.pid != os.getpid():
            pooled = self._engine.raw_connection()
            connection = self._local.connection = pooled.driver_connection
            pooled.detach()  # ours for the life of the thread, outside the pool
            self._local.pid = os.getpid()
        return connection

    def _after_error(self, connection: Any, error: Exception) -> None:
        try:
            connection.rollback()
        except self._engine.dialect.loaded_dbapi.Error:
            pass
        if self._engine.dialect.is_disconnect(error, connection, None):  # type: ignore[arg-type]
            # The server went away: the next delivery opens a fresh connection.
            self._local.connection = None


@dataclass(frozen=True)
class ClaimedMessage:
    id: int
    tenant_id: int
    payload: bytes | None
    attempts: int
    # "handled" when an earlier attempt already decided and recorded the plan.
    status: str


def claim_for_processing(
    db: Database, message_id: int, lease_seconds: int, max_attempts: int
) -> ClaimedMessage | None:
    """Take the processing lease on an unprocessed inbound message.

    ``None`` if it is already processed, or another worker holds a live lease.
    A lease that expired (its worker died) can be taken again: that is how a
    killed job is retried.
    """
    now = utcnow()
    statement = (
        update(_messages)
        .where(
            _messages.c.id == message_id,
            _messages.c.direction == Direction.IN,
            _messages.c.processed_at.is_(None),
            _messages.c.attempts < max_attempts,
            or_(_messages.c.lease_until.is_(None), _messages.c.lease_until < now),
        )
        .values(
            lease_until=now + timedelta(seconds=lease_seconds), attempts=_messages.c.attempts + 1
        )
        .returning(
            _messages.c.id,
            _messages.c.tenant_id,
            _messages.c.payload,
            _messages.c.attempts,
            _messages.c.status,
        )
    )
    with db.begin() as connection:
        row = connection.execute(statement).first()
    return ClaimedMessage(*row) if row else None


def release_lease(db: Database, message_id: int) -> None:
    """Give the lease back after a failed attempt so a retry need not wait for expiry."""
    with db.begin() as connection:
        connection.execute(
            update(_messages)
            .where(_messages.c.id == message_id, _messages.c.processed_at.is_(None))
            .values(lease_until=None)
        )


def mark_processed(db: Database, message_id: int) -> None:
    """The message is handled and answered: drop the raw payload and the lease."""
    with db.begin() as connection:
        connection.execute(
            update(_messages)
            .where(_messages.c.id == message_id)
            .values(
                processed_at=utcnow(),
                payload=None,
                lease_until=None,
                status=MessageStatus.PROCESSED,
            )
        )


# The sweeper runs every few seconds over a table of millions of messages, nearly all
# of them long processed. Its queries name the partial indexes' own conditions (see
# storage.models) and read them in their order (created_at), so that they read only
# what is waiting: nothing, most of the time. Ordered by id instead, both planners
# preferred walking the primary key through every message.


def unprocessed_for_sweep(
    db: Database, older_than: datetime, max_attempts: int, limit: int = 500
) -> list[tuple[int, int]]:
    """Stored inbound messages that no live worker holds: ``(id, sweeps)`` pairs, oldest first."""
    now = utcnow()
    statement = (
        select(_messages.c.id, _messages.c.sweeps)
        .where(
            text(UNPROCESSED_INBOUND),
            _messages.c.created_at < older_than,
            _messages.c.attempts < max_attempts,
            or_(_messages.c.lease_until.is_(None), _messages.c.lease_until < now),
        )
        .order_by(_messages.c.created_at, _messages.c.id)
        .limit(limit)
    )
    with db.connect() as connection:
        return [(row.id, row.sweeps) for row in connection.execute(statement)]


def give_up_exhausted(db: Database, max_attempts: int) -> list[int]:
    """Mark failed the inbound messages every attempt failed on; returns their ids.

    They stay stored (nothing is lost) but are no longer retried: a message that
    crashes the job every time would otherwise hold a worker forever.
    """
    statement = (
        update(_messages)
        .where(
            text(UNPROCESSED_INBOUND),
            _messages.c.attempts >= max_attempts,
            _messages.c.status != MessageStatus.FAILED,
            or_(_messages.c.lease_until.is_(None), _messages.c.lease_until < utcnow()),
        )
        .values(status=MessageStatus.FAILED, lease_until=None)
        .returning(_messages.c.id)
    )
    with db.begin() as connection:
        return list(connection.scalars(statement))


def note_swept(db: Database, message_id: int, sweeps: int) -> bool:
    """Count a sweep; ``False`` if another sweeper counted it first."""
    with db.begin() as connection:
        result = connection.execute(
            update(_messages)
            .where(and_(_messages.c.id == message_id, _messages.c.sweeps == sweeps))
            .values(sweeps=sweeps + 1)
        )
    return bool(result.rowcount == 1)


def pending_outbound(db: Database, older_than: datetime, limit: int = 500) -> list[int]:
    """Recorded outbound messages that were never handed to a delivery job, oldest first."""
    statement = (
        select(_messages.c.id)
        .where(text(PENDING_OUTBOUND), _messages.c.created_at < older_than)
        .order_by(_messages.c.created_at, _messages.c.id)
        .limit(limit)
    )
    with db.connect() as connection:
        return list(connection.scalars(statement))
