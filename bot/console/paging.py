"""Keyset cursors for the console's lists shown newest first by a time, then by id.

A cursor names the last row of a page by its time and id; the next page is what lies
beyond it in that order. The database reads it from an index that holds (…, time, id)
and stops after a page, however deep the walk: no offsets, no counting of what lies
before. A row whose time is unset sorts after every row that has one (on SQLite and
PostgreSQL alike), so such rows come last, by id.

A cursor that does not parse starts from the newest row: anything in a query string
is the client's, and no input may make a page fail.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from flask import request, url_for
from sqlalchemy import ColumnElement, Select, and_, literal, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from bot.exceptions import InvalidInput
from bot.web.numbers import parse_id

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_CURSOR = re.compile(r"(?:([0-9]{1,17})|n)\.([0-9]{1,10})")


@dataclass(frozen=True)
class Cursor:
    at: datetime | None
    id: int

    def encode(self) -> str:
        moment = "n" if self.at is None else str((self.at - EPOCH) // _MICROSECOND)
        return f"{moment}.{self.id}"


def decode_cursor(raw: str | None) -> Cursor | None:
    """The cursor in ``raw``, or ``None`` (start from the top) if there is none or it is bad."""
    match = _CURSOR.fullmatch(raw or "")
    if match is None:
        return None
    micros, row_id = match.groups()
    try:
        checked = parse_id(row_id, "cursor")
    except InvalidInput:
        return None
    at = None if micros is None else EPOCH + timedelta(microseconds=int(micros))
    return Cursor(at, checked)


def id_cursor(raw: str | None) -> int | None:
    """A cursor that is a row id ("before this one"); ``None`` (the newest page) otherwise."""
    try:
        return parse_id(raw or "", "cursor")
    except InvalidInput:
        return None


def cursor_of(at: datetime | None, row_id: int) -> str:
    return Cursor(at, row_id).encode()


def beyond(
    at: InstrumentedAttribute[Any], row_id: InstrumentedAttribute[int], cursor: Cursor
) -> ColumnElement[bool]:
    """Rows after ``cursor`` in newest-first order, among rows whose time is set.

    A row value comparison, which both databases read as one range of the index.
    """
    assert cursor.at is not None
    return tuple_(at, row_id) < tuple_(literal(cursor.at, at.type), literal(cursor.id))


def untimed_beyond(
    at: InstrumentedAttribute[Any], row_id: InstrumentedAttribute[int], cursor: Cursor | None
) -> ColumnElement[bool]:
    """Rows without a time after ``cursor``: all of them unless the cursor is among them."""
    if cursor is None or cursor.at is not None:
        return at.is_(None)
    return and_(at.is_(None), row_id < cursor.id)


Row = TypeVar("Row")


# A SELECT of any columns (Select is generic over its columns' types).
AnySelect = Select[*tuple[Any, ...]]


@dataclass(frozen=True)
class Page(Generic[Row]):
    rows: list[Row]
    next_cursor: str | None  # None: nothing older


def newest_after(
    query: AnySelect,
    at: InstrumentedAttribute[Any],
    row_id: InstrumentedAttribute[int],
    cursor: Cursor | None,
) -> AnySelect:
    """``query``'s rows after ``cursor`` (whose time is set), newest first."""
    if cursor is not None:
        query = query.where(beyond(at, row_id, cursor))
    return query.order_by(at.desc(), row_id.desc())


def newest_page(
    session: Session,
    query: AnySelect,
    at: InstrumentedAttribute[Any],
    row_id: InstrumentedAttribute[int],
    cursor: Cursor | None,
    limit: int,
    key: Callable[[Any], tuple[datetime | None, int]],
    *,
    untimed: bool = False,
    scalars: bool = False,
) -> Page[Any]:
    """One page of ``query`` newest first by (``at``, ``row_id``), after ``cursor``.

    ``key`` gives a row's time and id (for the next cursor); ``untimed`` says the time
    may be unset, and such rows follow the others, newest id first. One row more than
    the page is read, to know whether there is a next page.
    """

    def run(statement: AnySelect) -> list[Any]:
        return list(session.scalars(statement) if scalars else session.execute(statement).all())

    rows: list[Any] = []
    if cursor is None or cursor.at is not None:
        timed = query.where(at.is_not(None)) if untimed else query
        rows = run(newest_after(timed, at, row_id, cursor).limit(limit + 1))
    if untimed and len(rows) <= limit:
        rest = query.where(untimed_beyond(at, row_id, cursor)).order_by(row_id.desc())
        rows += run(rest.limit(limit + 1 - len(rows)))
    if len(rows) <= limit:
        return Page(rows, None)
    shown = rows[:limit]
    return Page(shown, cursor_of(*key(shown[-1])))


def page_links(cursor: object | None, param: str = "prima") -> dict[str, str | None]:
    """Links from the page being shown to the next (older) one and back to the newest,
    the query string's filters kept: ``next_page`` and ``first_page`` for the
    ``console/_pages.html`` macro."""
    args: dict[str, Any] = {key: value for key, value in request.args.items() if key != param}
    endpoint = request.endpoint or ""
    return {
        "next_page": url_for(endpoint, **{**args, param: cursor}) if cursor else None,
        "first_page": url_for(endpoint, **args) if param in request.args else None,
    }
