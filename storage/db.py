"""Engines and sessions for SQLite (WAL) and PostgreSQL: one write path, one read path.

* :meth:`Database.session` and :meth:`Database.begin` are the write path: a unit of
  work that, on SQLite, first takes the process-wide write lock and then
  ``BEGIN IMMEDIATE``, so a read-then-write transaction never fails to upgrade.
* :meth:`Database.read` and :meth:`Database.connect` are the read path: a deferred
  transaction that takes no lock at all (WAL readers never wait for the writer).

A thread that asks for a second write transaction while it holds one would wait for
itself until SQLite's busy timeout; that is a bug, so it raises at once instead.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine, Result, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from storage.files import create_private_file, open_private_for_append

BACKSTOP_CHECKPOINT_PAGES = 50_000
BUSY_TIMEOUT_MS = 10_000
CHECKPOINT_INTERVAL_SECONDS = 0.5
CHECKPOINT_TAKEOVER_SECONDS = 5.0
STATISTICS_SAMPLE_ROWS = 1_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the web processes write while the worker reads; NORMAL is durable
    # across process crashes, which is the failure that matters for the webhook.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # Checkpoints are the background checkpointer's job (see WalCheckpointer):
    # an automatic one would run inside a writer's commit, while it holds the
    # write lock. The large mark is only a backstop should that thread be stuck.
    cursor.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
    cursor.close()
    dbapi_connection.isolation_level = None


READ_ONLY = "portineria_read_only"


BUSY_TIMEOUT = "portineria_busy_timeout_ms"


def _begin(connection: Any) -> None:
    # Reads begin deferred (no write lock); writes take it up front.
    options = connection.get_execution_options()
    if options.get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")
        return
    # Within a deadline (Database.deadline) SQLite's busy wait for another program's
    # write transaction is bounded too; the pooled connection gets the default back after.
    wanted = int(options.get(BUSY_TIMEOUT, BUSY_TIMEOUT_MS))
    if connection.info.get(BUSY_TIMEOUT, BUSY_TIMEOUT_MS) != wanted:
        connection.exec_driver_sql(f"PRAGMA busy_timeout={wanted}")
        connection.info[BUSY_TIMEOUT] = wanted
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class WriteInReadTransaction(RuntimeError):
    """Code inside :meth:`Database.read` tried to change something: use ``session()``."""


class NestedWriteTransaction(RuntimeError):
    """A thread asked for a write transaction while holding one (it would deadlock)."""


class WriteLockTimeout(TimeoutError):
    """The SQLite write lock stayed held by another writer past the caller's deadline."""


def rows_affected(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE changed (its result is a cursor result)."""
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def execute_write(target: Database | Session | Connection, statement: Any) -> Result[Any]:
    """Run a write statement in the caller's transaction (a session or connection), or
    in one of its own (a :class:`Database`). Not for statements whose rows are read."""
    if isinstance(target, Database):
        with target.begin() as connection:
            return connection.execute(statement)
    return target.execute(statement)


def make_engine(url: str, **kwargs: Any) -> Engine:
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 10}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite defers BEGIN on its own; we issue it ourselves so that a
        # read-then-write transaction takes the write lock up front instead of
        # failing with SQLITE_BUSY when it upgrades.
        event.listen(engine, "begin", _begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


class SqliteWriteLock:
    """A file lock that writers take before SQLite's own write lock.

    SQLite makes a blocked writer poll with growing sleeps (1, 2, 5, 10 ms...), so
    under concurrent webhooks most of the wait is oversleeping. Waiting on an
    ``flock`` instead wakes the next writer as soon as the lock is released.
    """

    def __init__(self, database_path: str) -> None:
        self._path = database_path + ".write-lock"
        self._local = threading.local()

    @contextmanager
    def held(self, timeout: float | None = None) -> Iterator[None]:
        """The lock, waited for in the kernel; with ``timeout``, for that long at most
        (then :class:`WriteLockTimeout`)."""
        if getattr(self._local, "holding", False):
            raise NestedWriteTransaction("this thread already holds the SQLite write lock")
        handle = getattr(self._local, "handle", None)
        if handle is None:
            handle = self._local.handle = open_private_for_append(self._path)  # kept per thread
        if timeout is None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        else:
            _flock_within(handle, timeout)
        self._local.holding = True
        try:
            yield
        finally:
            self._local.holding = False
            fcntl.flock(handle, fcntl.LOCK_UN)


def _flock_within(handle: Any, timeout: float) -> None:
    """``flock`` has no timeout: try without blocking, then poll with short, growing
    pauses. Uncontended, this is the same single call as a blocking ``flock``."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    deadline = time.monotonic() + timeout
    pause = 0.0001
    while True:
        time.sleep(pause)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                held = f"the SQLite write lock stayed held for {timeout:g}s"
                raise WriteLockTimeout(held) from None
            pause = min(pause * 2, 0.002)


class WalCheckpointer(threading.Thread):
    """Copies the WAL back into the database file every half second, off the hot path.

    A PASSIVE checkpoint never blocks writers, so webhooks keep committing while it
    runs. Every process that writes starts one of these threads, but only the one
    holding the checkpoint lock works: the others would repeat the same pass and take
    CPU from the requests. The kernel releases the lock when its holder exits, and
    the next thread to try takes over.
    """

    def __init__(self, database_path: str) -> None:
        super().__init__(name="portineria-wal-checkpoint", daemon=True)
        self._path = database_path
        self._stopped = threading.Event()
        self.working = False  # holds the lock: the one checkpointer of this database

    def run(self) -> None:
        import sqlite3

        with open_private_for_append(self._path + ".checkpoint-lock") as lock:
            while not self._has_lock(lock):
                if self._stopped.wait(CHECKPOINT_TAKEOVER_SECONDS):
                    return
            self.working = True
            connection = sqlite3.connect(self._path, timeout=10, isolation_level=None)
            try:
                while not self._stopped.wait(CHECKPOINT_INTERVAL_SECONDS):
                    try:
                        connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error:
                        continue  # busy: next round
            finally:
                self.working = False
                connection.close()

    @staticmethod
    def _has_lock(lock: Any) -> bool:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def stop(self) -> None:
        self._stopped.set()


class Database:
    """One engine and its session factory, owned by the app (``app.extensions``)."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        """``pool_size``: connections kept open for reuse, one per thread that may use
        the database at once (more of them at once open, and then close, overflow
        connections: on PostgreSQL a new server process each time)."""
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        read_options: dict[str, Any] = {READ_ONLY: True}
        if not self.is_sqlite:
            # A read that tries to write is a bug: PostgreSQL refuses it loudly.
            read_options["postgresql_readonly"] = True
        self._read_engine = self.engine.execution_options(**read_options)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)
        database = self.engine.url.database
        file_backed = self.is_sqlite and database is not None and database not in ("", ":memory:")
        self._database_path = database if file_backed else None
        if database and file_backed and os.path.isdir(os.path.dirname(database) or "."):
            # Created owner-only before SQLite opens it: SQLite would create it with the
            # umask's mode (0644), and gives its -wal and -shm files the same mode.
            create_private_file(database)
        self._write_lock = SqliteWriteLock(database) if database and file_backed else None
        self._checkpointer: WalCheckpointer | None = None
        self._checkpointer_pid = 0
        self._deadline = threading.local()

    @contextmanager
    def write_lock(self, timeout: float | None = None) -> Iterator[None]:
        """Serialise SQLite writers efficiently; nothing to do on PostgreSQL.

        With ``timeout``, a writer that cannot wait long (the webhook) gets
        :class:`WriteLockTimeout` instead of waiting behind a long transaction.
        """
        if self._write_lock is None:
            yield
            return
        if self._checkpointer_pid != os.getpid():
            self._start_checkpointer()
        if timeout is None:
            timeout = getattr(self._deadline, "seconds", None)
        with self._write_lock.held(timeout):
            yield

    @contextmanager
    def deadline(self, seconds: float | None) -> Iterator[None]:
        """Within it, this thread's writes wait at most ``seconds`` for the write lock
        (:class:`WriteLockTimeout`) and for another program's SQLite write transaction:
        for a caller that must answer in time (a webhook) through code that takes no
        timeout of its own."""
        previous = getattr(self._deadline, "seconds", None)
        self._deadline.seconds = seconds
        try:
            yield
        finally:
            self._deadline.seconds = previous

    def _start_checkpointer(self) -> None:
        # Per process and started on first write: a forked worker needs its own.
        assert self._database_path is not None
        self._checkpointer = WalCheckpointer(self._database_path)
        self._checkpointer.start()
        self._checkpointer_pid = os.getpid()

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self, *, dry_run: bool = False) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on any error.

        With ``dry_run`` it is rolled back in any case: the work can count what it
        would change (deleted rows, say) and leave everything as it was.
        """
        with (
            self.write_lock(),
            self._sessions(bind=self._write_engine()) as session,
            session.begin() as transaction,
        ):
            yield session
            if dry_run:
                transaction.rollback()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only unit of work: no write lock; rolled back at the end.

        Objects it returns stay usable afterwards (loaded attributes are kept).
        """
        with self._read_sessions() as session, session.begin() as transaction:
            driver: Any = None
            if self.is_sqlite:
                # PostgreSQL refuses writes in a read-only transaction; make SQLite as loud.
                # Set and reset on the driver's connection: it outlives a failed transaction.
                driver = session.connection().connection.driver_connection
                driver.execute("PRAGMA query_only = ON")
            try:
                yield session
                if session.new or session.dirty or session.deleted:
                    raise WriteInReadTransaction("changes made in a read transaction")
            finally:
                if driver is not None:
                    driver.execute("PRAGMA query_only = OFF")
                # Detached first: a rollback would expire what the caller goes on using.
                session.expunge_all()
                transaction.rollback()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A Core connection in a write transaction, under the write lock."""
        with self.write_lock(), self._write_engine().begin() as connection:
            yield connection

    def _write_engine(self) -> Engine:
        """The engine, or within a deadline an engine whose SQLite busy wait keeps to it."""
        seconds = getattr(self._deadline, "seconds", None)
        if seconds is None or not self.is_sqlite:
            return self.engine
        return self.engine.execution_options(**{BUSY_TIMEOUT: max(1, int(seconds * 1000))})

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A Core connection for reads: no write lock."""
        with self._read_engine.connect() as connection:
            yield connection

    def refresh_statistics(self, rows_per_index: int = STATISTICS_SAMPLE_ROWS) -> None:
        """Refresh SQLite's query-planner statistics from a bounded sample of each index.

        SQLite plans from the statistics ``ANALYZE`` last wrote, and never refreshes
        them itself: figures taken when an office was small would misguide it once the
        office is large. A full ``ANALYZE`` reads every index end to end (seconds at
        millions of rows, under the write lock the webhook needs); with
        ``analysis_limit`` it reads about ``rows_per_index`` rows of each, in
        milliseconds, which is enough for the planner to weigh one index against
        another. The worker runs this from its housekeeping. PostgreSQL's autovacuum
        keeps its own statistics fresh: nothing to do there.
        """
        if not self.is_sqlite:
            return
        with self.begin() as connection:
            connection.exec_driver_sql(f"PRAGMA analysis_limit={int(rows_per_index)}")
            try:
                connection.exec_driver_sql("ANALYZE")
            finally:
                connection.exec_driver_sql("PRAGMA analysis_limit=0")

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()
