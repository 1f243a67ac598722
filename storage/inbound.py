"""The durable half of the inbound path: one short transaction per webhook delivery,
and the leases that let exactly one worker process a stored message at a time.

It also says which database errors mean "the database cannot take a write right now"
(:func:`database_unavailable`): a refused or dropped connection, a failover, a write
lock held past the writer's deadline, a full disk, a read-only file. The webhook keeps
such a delivery elsewhere (the spool) instead of answering 500; any other error is a
bug and propagates.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, and_, case, func, or_, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from storage.db import Database, WriteLockTimeout, execute_write
from storage.models import PENDING_OUT, UNPROCESSED_IN, Message, utcnow
from storage.vocabulary import Direction, MessageStatus

_messages: Table = Message.__table__  # type: ignore[assignment]


class StoreUnavailable(RuntimeError):
    """The database cannot take the write now; the cause is chained (``__cause__``)."""


# SQLite's primary result codes that describe the database's state, not the statement:
# BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL. (SQLITE_ERROR, such as
# "no such table", is a bug or a missing migration, and is not retried elsewhere.)
_SQLITE_UNAVAILABLE = {5, 6, 7, 8, 10, 13, 14, 15}
# PostgreSQL SQLSTATE classes: connection exception, insufficient resources (disk full,
# too many connections), operator intervention (shutdown, "starting up", statement or
# lock timeout cancelled), system error (I/O); plus a read-only transaction (a standby
# after a failover) and a lock not available.
_PG_UNAVAILABLE_CLASSES = {"08", "53", "57", "58"}
_PG_UNAVAILABLE_STATES = {"25006", "55P03"}


def database_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot take a write now (and may later)."""
    if isinstance(error, StoreUnavailable | WriteLockTimeout | sa_exc.TimeoutError):
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig if error.orig is not None else error
    sqlite_code = getattr(error, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        return sqlite_code & 0xFF in _SQLITE_UNAVAILABLE
    sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate[:2] in _PG_UNAVAILABLE_CLASSES or sqlstate in _PG_UNAVAILABLE_STATES
    # No code at all: a driver error raised before the server answered (refused, reset).
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"OperationalError", "InterfaceError"})


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

    def __init__(self, db: Database, timeout: float | None = None) -> None:
        self._db = db
        # How long a delivery may wait for the database (write lock, SQLite's busy
        # wait, a PostgreSQL statement) before it is kept elsewhere: well under
        # Twilio's 15 s, so the webhook still answers in time.
        self._timeout = timeout
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

    def store(
        self,
        tenant_id: int,
        provider_sid: str,
        payload: bytes,
        received_at: datetime | None = None,
    ) -> int | None:
        """Insert the delivery; ``None`` when this ``MessageSid`` was already stored.

        The unique constraint on (tenant, provider SID) is the real deduplication:
        two concurrent deliveries of the same message cannot both insert. A
        delivery drained from the spool gives the time it was received.

        Raises :class:`StoreUnavailable` when the database cannot take it now.
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
            received_at or utcnow(),
        )
        params = tuple(p(v) if p else v for p, v in zip(self._process, values, strict=True))
        try:
            with self._db.write_lock(self._timeout):
                return self._insert(params)
        except Exception as error:
            if database_unavailable(error):
                raise StoreUnavailable("the database cannot take the delivery now") from error
            raise

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
            connection = pooled.driver_connection
            assert connection is not None
            pooled.detach()  # ours for the life of the thread, outside the pool
            try:
                self._bound(connection)
            except Exception:
                connection.close()
                raise
            self._local.connection = connection
            self._local.pid = os.getpid()
        return connection

    def _bound(self, connection: Any) -> None:
        """This connection waits at most the writer's timeout, whatever holds it up."""
        if self._timeout is None:
            return
        milliseconds = max(1, int(self._timeout * 1000))
        cursor = connection.cursor()
        if self._begin:
            cursor.execute(f"PRAGMA busy_timeout = {milliseconds}")
        else:
            cursor.execute(f"SET statement_timeout = {milliseconds}")
            cursor.execute(f"SET lock_timeout = {milliseconds}")
            connection.commit()
        cursor.close()

    def _after_error(self, connection: Any, error: Exception) -> None:
        dbapi_error = self._engine.dialect.loaded_dbapi.Error
        try:
            connection.rollback()
        except dbapi_error:
            pass
        disconnected = self._engine.dialect.is_disconnect(error, connection, None)  # type: ignore[arg-type]
        if disconnected or database_unavailable(error):
            # The server went away, or this connection may be stuck in what it found
            # (SQLite opens a read-only file read-only for good): the next delivery
            # opens a fresh connection.
            self._local.connection = None
            try:
                connection.close()
            except dbapi_error:
                pass


@dataclass(frozen=True)
class ClaimedMessage:
    id: int
    tenant_id: int
    payload: bytes | None
    attempts: int
    # "handled" when an earlier attempt already decided and recorded the plan.
    status: str


def claim_for_processing(
    db: Database, message_ids: Sequence[int], lease_seconds: int, max_attempts: int
) -> list[ClaimedMessage]:
    """Take the processing lease on those of these inbound messages that are unprocessed,
    in one statement; they come back in the order asked.

    A message already processed, or whose lease another worker holds, is left out. A
    lease that expired (its worker died) can be taken again: that is how a killed job
    is retried.
    """
    if not message_ids:
        return []
    now = utcnow()
    statement = (
        update(_messages)
        .where(
            _messages.c.id.in_(message_ids),
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
        claimed = {row.id: ClaimedMessage(*row) for row in connection.execute(statement)}
    return [claimed[i] for i in dict.fromkeys(message_ids) if i in claimed]


def release_lease(db: Database, message_ids: Sequence[int]) -> None:
    """Give the leases back after a failed attempt so a retry need not wait for expiry."""
    if not message_ids:
        return
    with db.begin() as connection:
        connection.execute(
            update(_messages)
            .where(_messages.c.id.in_(message_ids), _messages.c.processed_at.is_(None))
            .values(lease_until=None)
        )


def processed_values() -> dict[str, Any]:
    """What marking an inbound message processed sets: handled and answered, its raw
    payload dropped and its lease given back."""
    return {
        "processed_at": utcnow(),
        "payload": None,
        "lease_until": None,
        "status": MessageStatus.PROCESSED,
    }


def mark_processed(db: Database | Session | Connection, message_ids: Sequence[int]) -> None:
    """Mark these messages processed, in a transaction of their own or the caller's."""
    if not message_ids:
        return
    execute_write(
        db, update(_messages).where(_messages.c.id.in_(message_ids)).values(processed_values())
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
            text(UNPROCESSED_IN),
            _messages.c.created_at < older_than,
            _messages.c.attempts < max_attempts,
            or_(_messages.c.lease_until.is_(None), _messages.c.lease_until < now),
        )
        .order_by(_messages.c.created_at, _messages.c.id)  # the partial index's order
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
            text(UNPROCESSED_IN),
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
        .where(text(PENDING_OUT), _messages.c.created_at < older_than)
        .order_by(_messages.c.created_at, _messages.c.id)  # the partial index's order
        .limit(limit)
    )
    with db.connect() as connection:
        return list(connection.scalars(statement))


@dataclass(frozen=True)
class InboundBacklog:
    """Stored inbound messages not processed yet, from the database (not Redis)."""

    # Still to be processed (by a worker now, or by the sweeper later).
    unprocessed: int
    oldest_created_at: datetime | None
    # Every attempt failed on these: stored, not retried, an operator's to look at.
    given_up: int


def inbound_backlog(db: Database) -> InboundBacklog:
    """One pass over the partial index of unprocessed messages (it shrinks as they go)."""
    failed = _messages.c.status == MessageStatus.FAILED
    statement = select(
        func.count(),
        func.min(case((failed, None), else_=_messages.c.created_at)),
        func.coalesce(func.sum(case((failed, 1), else_=0)), 0),
    ).where(text(UNPROCESSED_IN))
    with db.connect() as connection:
        total, oldest, given_up = connection.execute(statement).one()
    return InboundBacklog(
        unprocessed=int(total) - int(given_up), oldest_created_at=oldest, given_up=int(given_up)
    )
