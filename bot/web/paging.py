"""Keyset paging for the API's lists: a bounded ``limit`` and a cursor on the row id.

An offset skips or repeats rows when rows arrive or go between two pages; a cursor
("after this id") does not, and costs one index range scan per page however deep
the walk. Each list is ordered by its id, oldest first or newest first; the cursor
of a page is the id of its last item, and the next page is what lies beyond it in
the same order. One extra row is read to know whether there is a next page, so the
last page says ``next_cursor: null`` without a further, empty request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from bot.web.numbers import parse_id, parse_int

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Page", "PageRequest", "fetch_page"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 500

Row = TypeVar("Row")


@dataclass(frozen=True)
class PageRequest:
    """What the caller asked for: how many items, and after which cursor."""

    limit: int = DEFAULT_LIMIT
    after: int | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> PageRequest:
        """``limit`` (1..500, default 100) and ``after`` (a cursor) from a query string.

        Raises :class:`~bot.exceptions.InvalidInput` for values out of range.
        """
        limit = parse_int(args.get("limit") or str(DEFAULT_LIMIT), "limit", low=1, high=MAX_LIMIT)
        after = args.get("after")
        return cls(limit=limit, after=parse_id(after, "after") if after else None)


@dataclass(frozen=True)
class Page(Generic[Row]):
    items: Sequence[Row]
    next_cursor: str | None  # None: this was the last page


def fetch_page(
    session: Session,
    query: Select[Row],
    key: InstrumentedAttribute[int],
    wanted: PageRequest,
    *,
    newest_first: bool = False,
) -> Page[Row]:
    """One page of ``query`` (unordered, already filtered to the caller's office), by ``key``."""
    if wanted.after is not None:
        query = query.where(key < wanted.after if newest_first else key > wanted.after)
    ordered = query.order_by(key.desc() if newest_first else key.asc())
    rows = session.scalars(ordered.limit(wanted.limit + 1)).all()
    if len(rows) <= wanted.limit:
        return Page(rows, None)
    shown = rows[: wanted.limit]
    return Page(shown, str(getattr(shown[-1], key.key)))
