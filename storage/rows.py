"""Rows that nothing else in their transaction refers to, written a table at a time."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from storage.models import Base


class LeafRows:
    """Rows no other row of the transaction points to and no code reads back in it (bot
    log lines, ledger events, tombstones), gathered while a batch is decided and written
    when it ends: one plain INSERT per table, sent as one executemany.

    The unit of work would make an object of each, track it, and ask the database for
    ids nobody needs; on PostgreSQL it also renders a batch as one long statement that
    the driver parses again each time (too long for its cache), where an executemany
    repeats one short statement that the driver keeps prepared."""

    def __init__(self) -> None:
        self._rows: dict[type[Base], list[dict[str, Any]]] = {}

    def add(self, model: type[Base], **values: Any) -> None:
        self._rows.setdefault(model, []).append(values)

    def write(self, session: Session) -> None:
        """Write what was gathered, in the session's transaction (pending objects are
        flushed first, so rows may point to them)."""
        rows, self._rows = self._rows, {}
        for model, values in rows.items():
            session.execute(insert(model), values)

    def drop(self) -> None:
        """Forget what was gathered: its transaction (or savepoint) was rolled back."""
        self._rows.clear()
