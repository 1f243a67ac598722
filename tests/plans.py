"""The query plans of the hot queries: which ones read a whole table.

The hot paths (inbox and its counts, a conversation's page, the admin logs, tickets,
the API's lists, the sweeper, a contact's export and erasure) are run for real with
every statement they send captured; each captured statement is then explained by the
database with the very parameters it was sent with. SQLite's ``EXPLAIN QUERY PLAN``
says ``SCAN t`` for a table it reads from end to end (``SEARCH t USING INDEX …`` for
a range of an index; a range of the messages bounded by the office alone, with no
LIMIT to stop it, is every message the office has, and is named too); PostgreSQL's ``EXPLAIN`` says
``Seq Scan``, or an index scan with no ``Index Cond`` for an index read from end to
end. On a test's small tables PostgreSQL would rightly read a table of ten rows whole,
so its plans are asked for with sequential scans priced out (``enable_seqscan = off``):
what remains is whether an index that serves the query exists. A plan that sorts what
it pages through (a sort under a LIMIT, with no IN list bounding it) is named too: it
reads every row it might have to order before it can return the first page.

Used by tests/test_query_plans.py and, at full size, by bench/scale_bench.py.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask
from sqlalchemy import Engine, event

from bot.console.inbox import (
    FILTERS,
    conversation_detail,
    inbox,
    inbox_counts,
    unread_total,
)
from bot.console.logs import LogFilter, audit_actions, audit_events, bot_log
from bot.console.paging import cursor_of
from bot.console.tickets import list_tickets
from bot.privacy.rights import erase_in_session, write_export
from bot.services import Services
from storage.inbound import give_up_exhausted, pending_outbound, unprocessed_for_sweep
from storage.models import Base, Contact, Tenant, utcnow

# Tables that grow with an office's history; the others hold a few rows an office.
BIG_TABLES = frozenset(
    {
        "contacts",
        "conversations",
        "messages",
        "media_items",
        "bot_log",
        "audit_events",
        "consent_events",
        "tickets",
        "events",
        "sid_tombstones",
    }
)


@dataclass(frozen=True)
class Statement:
    sql: str
    parameters: Any


@contextmanager
def captured(engine: Engine) -> Iterator[list[Statement]]:
    """Every SELECT, UPDATE and DELETE the engine sends while the block runs."""
    statements: list[Statement] = []

    def keep(
        _conn: Any, _cursor: Any, sql: str, parameters: Any, _context: Any, many: bool
    ) -> None:
        if not many and sql.lstrip().split(None, 1)[0].upper() in (
            "SELECT",
            "WITH",
            "UPDATE",
            "DELETE",
        ):
            statements.append(Statement(sql, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", keep)


def problems_of(engine: Engine, statement: Statement, *, measured: bool = False) -> list[str]:
    """What reads too much in this statement's plan: full scans of big tables, sorts of pages.

    ``measured`` (PostgreSQL, at a real size): run the statement (rolled back) and name
    every scan that read far more rows than the statement returns, whatever its shape:
    the planner may rightly walk an index end to end when it stops after a page.
    """
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + statement.sql, statement.parameters)
            return _sqlite_problems([row[3] for row in cursor.fetchall()], statement.sql)
        if measured:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement.sql, statement.parameters)
            tree = _json_plan(cursor.fetchone()[0])
            return _over_read(tree, max(READ_SLACK, 10 * int(tree.get("Actual Rows", 0))))
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND reltuples >= %s",
            (sorted(BIG_TABLES), SMALL_TABLE),
        )
        big = frozenset(name for (name,) in cursor.fetchall())
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement.sql, statement.parameters)
        tree = _json_plan(cursor.fetchone()[0])
        return _postgres_problems(tree, statement.sql, big)
    finally:
        raw.rollback()
        raw.close()


# Tables (by PostgreSQL's estimate) and sorts (of this many rows) too small to matter:
# the planner rightly reads or sorts a few hundred rows whole.
SMALL_TABLE = 1_000

# Rows a measured statement may read beyond ten times what it returns: a page's worth
# of what an index range leaves out, the inbox's capped counts.
READ_SLACK = 2_500


def _json_plan(plan: Any) -> dict[str, Any]:
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]  # type: ignore[no-any-return]


def _over_read(node: dict[str, Any], allowed: int) -> list[str]:
    problems = []
    relation = node.get("Relation Name")
    if relation in BIG_TABLES:
        read = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
        read = (read + node.get("Rows Removed by Index Recheck", 0)) * node.get("Actual Loops", 1)
        if read > allowed:
            problems.append(
                f"{node['Node Type']} on {relation} ({node.get('Index Name', '-')}) "
                f"read {read:,.0f} rows"
            )
    for child in node.get("Plans", []):
        problems += _over_read(child, allowed)
    return problems


_SQLITE_SCAN = re.compile(r"^SCAN (\w+)(?: USING (?:COVERING )?INDEX (\w+))?")
# A range of an index bounded by the office alone: every row the office has, unless
# a LIMIT stops the walk (a page read in the index's order). Asked of the messages
# alone, millions of rows where every other table has thousands: on the test's small
# and empty tables the planner's pick among equal indexes says nothing.
_SQLITE_WHOLE_OFFICE = re.compile(
    r"^SEARCH (messages) USING (?:COVERING )?INDEX \w+ \(tenant_id=\?\)$"
)
# A partial index holds only the rows a query wants (the sweeper's: what is waiting),
# so reading it whole reads what there is to find, not the table.
PARTIAL_INDEXES = frozenset(
    index.name
    for table in Base.metadata.tables.values()
    for index in table.indexes
    if index.dialect_options["sqlite"].get("where") is not None and index.name
)


def _pages_a_sort(sql: str) -> bool:
    """A LIMIT over an ORDER BY that no IN list bounds and no computed key needs."""
    text = " ".join(sql.split()).upper()
    if " LIMIT " not in text or " ORDER BY " not in text:
        return False
    order = text.rsplit(" ORDER BY ", 1)[1]
    return " IN (" not in text and "CASE" not in order and "COALESCE" not in order


def _sqlite_problems(details: list[str], sql: str) -> list[str]:
    problems = []
    for detail in details:
        scanned = _SQLITE_SCAN.match(detail)
        if scanned and scanned.group(1) in BIG_TABLES and scanned.group(2) not in PARTIAL_INDEXES:
            problems.append(detail)
        if "TEMP B-TREE FOR ORDER BY" in detail and _pages_a_sort(sql):
            problems.append(detail)
        office = _SQLITE_WHOLE_OFFICE.match(detail)
        if office and " LIMIT " not in sql.upper():
            problems.append(detail)
    return problems


def _postgres_problems(
    node: dict[str, Any], sql: str, big: frozenset[str], under_limit: bool = False
) -> list[str]:
    """Sequential scans of big tables, and indexes read end to end where no LIMIT stops
    the reading (under a LIMIT, walking an index in the order asked for until a page
    is found is what the planner chooses when the rows it wants are dense)."""
    problems = []
    relation = node.get("Relation Name")
    kind = node["Node Type"]
    index = node.get("Index Name")
    whole_index = "Index Cond" not in node and index not in PARTIAL_INDEXES
    if relation in big:
        if kind == "Seq Scan":
            problems.append(f"Seq Scan on {relation}")
        elif kind in ("Index Scan", "Index Only Scan") and whole_index and not under_limit:
            problems.append(f"{kind} of all of {index} on {relation}")
    if kind == "Bitmap Index Scan" and whole_index and node.get("Plan Rows", 0) >= SMALL_TABLE:
        problems.append(f"Bitmap Index Scan of all of {index}")
    sorted_rows = node["Plans"][0].get("Plan Rows", 0) if kind == "Sort" else 0
    if under_limit and sorted_rows >= SMALL_TABLE and _pages_a_sort(sql):
        problems.append(f"Sort of {sorted_rows} rows under a LIMIT")
    for child in node.get("Plans", []):
        problems += _postgres_problems(child, sql, big, under_limit or kind == "Limit")
    return problems


@dataclass(frozen=True)
class Office:
    """The rows the hot queries are asked about."""

    tenant_id: int
    user_id: int
    conversation_id: int
    contact_id: int
    api_token: str | None = None


def hot_calls(app: Flask, svc: Services, office: Office) -> dict[str, Callable[[], object]]:
    """Each hot path, as the product runs it."""
    t, cipher = office.tenant_id, svc.cipher
    some_time = utcnow() - timedelta(days=30)

    def read(work: Callable[[Any], object]) -> Callable[[], object]:
        def run() -> object:
            with svc.db.read() as session:
                return work(session)

        return run

    def tenant() -> Tenant:
        with svc.db.read() as session:
            found = session.get(Tenant, t)
        assert found is not None
        return found

    def export() -> object:
        return write_export(svc, tenant(), office.contact_id, io.StringIO(), actor="plans")

    def erase() -> object:
        with svc.db.session(dry_run=True) as session:
            contact = session.get(Contact, office.contact_id)
            assert contact is not None
            return erase_in_session(session, tenant(), contact)

    month = LogFilter(since=some_time - timedelta(days=30), until=some_time)
    calls: dict[str, Callable[[], object]] = {
        **{
            f"inbox {name}": read(lambda s, name=name: inbox(s, cipher, t, office.user_id, name))
            for name in FILTERS
        },
        "inbox, a later page": read(
            lambda s: inbox(s, cipher, t, office.user_id, after=cursor_of(some_time, 2**31 - 1))
        ),
        "inbox counts": read(lambda s: inbox_counts(s, t, office.user_id)),
        "inbox unread total": read(lambda s: unread_total(s, t, office.user_id)),
        "conversation, newest page": read(
            lambda s: conversation_detail(s, cipher, t, office.conversation_id)
        ),
        "conversation, older page": read(
            lambda s: conversation_detail(s, cipher, t, office.conversation_id, before=2**31 - 1)
        ),
        "bot log": read(lambda s: bot_log(s, t, LogFilter())),
        "bot log by intent": read(lambda s: bot_log(s, t, LogFilter(intent="guasto"))),
        "bot log, a month": read(lambda s: bot_log(s, t, month)),
        "bot log, a later page": read(
            lambda s: bot_log(s, t, LogFilter(), cursor_of(some_time, 2**31 - 1))
        ),
        "audit log": read(lambda s: audit_events(s, t, LogFilter())),
        "audit log by action": read(lambda s: audit_events(s, t, LogFilter(action="login"))),
        "audit log by person": read(
            lambda s: audit_events(s, t, LogFilter(user_id=office.user_id))
        ),
        "audit log, a month": read(lambda s: audit_events(s, t, month)),
        "audit log, a later page": read(
            lambda s: audit_events(s, t, LogFilter(), cursor_of(some_time, 2**31 - 1))
        ),
        "audit actions": read(lambda s: audit_actions(s, t)),
        "tickets": read(lambda s: list_tickets(s, t)),
        "tickets by status": read(lambda s: list_tickets(s, t, "open")),
        "tickets, a later page": read(lambda s: list_tickets(s, t, before=2**31 - 1)),
        "sweeper: unprocessed": lambda: unprocessed_for_sweep(svc.db, utcnow(), 5),
        "sweeper: pending outbound": lambda: pending_outbound(svc.db, utcnow()),
        "sweeper: exhausted": lambda: give_up_exhausted(svc.db, 5),
        "export of a contact": export,
        "erasure of a contact": erase,
    }
    if office.api_token:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {office.api_token}"}
        since = some_time.isoformat().replace("+00:00", "Z")
        for path in (
            "/api/v1/contacts",
            "/api/v1/contacts?after=1",
            f"/api/v1/contacts/{office.contact_id}/consent-events",
            "/api/v1/conversations",
            "/api/v1/conversations?needs_attention=true",
            f"/api/v1/conversations?contact_id={office.contact_id}",
            f"/api/v1/conversations/{office.conversation_id}/messages",
            f"/api/v1/conversations/{office.conversation_id}/messages?after=1",
            "/api/v1/tickets",
            f"/api/v1/tickets?since={since}",
            "/api/v1/bot-logs",
            f"/api/v1/bot-logs?since={since}",
        ):
            name = f"GET {path}".replace(since, "(a month ago)")
            calls[name] = lambda path=path: client.get(path, headers=headers)
        calls["POST /api/v1/contacts/lookup"] = lambda: client.post(
            "/api/v1/contacts/lookup", json={"phone": "+393330000002"}, headers=headers
        )
    return calls


def hot_query_problems(
    app: Flask,
    svc: Services,
    office: Office,
    *,
    measured: bool = False,
    only: Collection[str] | None = None,
) -> dict[str, list[str]]:
    """For each hot path (or those named in ``only``), what its statements' plans read
    too much of (empty: nothing)."""
    found: dict[str, list[str]] = {}
    for name, call in hot_calls(app, svc, office).items():
        if only is not None and name not in only:
            continue
        with captured(svc.db.engine) as statements:
            call()
        problems = []
        for statement in statements:
            for problem in problems_of(svc.db.engine, statement, measured=measured):
                problems.append(f"{problem}  <-  {' '.join(statement.sql.split())[:300]}")
        found[name] = problems
    return found
