"""The hot queries read by index, not by scanning whole tables, on SQLite and PostgreSQL.

An office is seeded in bulk (bench/scale_seed.py, the benchmark's seeder, at a small
size), its statistics refreshed as the product refreshes them (SQLite: the worker's
sampled ANALYZE; PostgreSQL: autovacuum's ANALYZE), and every hot path is run with
its statements captured and explained (tests/plans.py says how plans are judged).
The benchmark runs the same check at full size.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import add_message, make_contact, make_conversation, make_tenant, make_user
from plans import Office, Statement, hot_query_problems, problems_of
from sqlalchemy import inspect, text

from bot.office.tokens import create_token
from bot.runtime.worker import make_sweeper
from bot.services import Services
from storage.models import Base, Tenant, utcnow
from storage.queries import conversation_messages

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from scale_seed import Size, seed_office  # noqa: E402

BOTH = ["sqlite", "postgresql"]
SIZE = Size(
    contacts=1_500,
    messages=15_000,
    bot_log=3_000,
    audit=5_000,
    tickets=1_500,
    big_conversation=2_000,
)
# Sorts that are right: they order the few rows of one person (their conversations).
FEW_SORTED = {"GET /api/v1/conversations?contact_id=2"}


def _statistics(svc: Services) -> None:
    """As a running office has them: the worker's refresh; PostgreSQL's autovacuum
    (its VACUUM marks pages all-visible, which index-only scans rely on; its ANALYZE)."""
    if svc.db.is_sqlite:
        svc.db.refresh_statistics()
        return
    with svc.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")


@pytest.fixture
def office(svc: Services, tenant: Tenant) -> Office:
    return _office(svc, tenant, SIZE)


def _office(svc: Services, tenant: Tenant, size: Size) -> Office:
    users = tuple(
        make_user(svc, tenant, email, role).id
        for email, role in (
            ("capo@studio-rossi.it", "admin"),
            ("anna@studio-rossi.it", "operator"),
            ("bruno@studio-rossi.it", "operator"),
        )
    )
    seeded = seed_office(svc, tenant.id, users, size, utcnow())
    other = make_tenant(svc, slug="studio-bianchi", number="+390298765432")
    seed_office(svc, other.id, users, Size.scaled(0.0001), utcnow())
    with svc.db.session() as session:
        token = create_token(session, session.get(Tenant, tenant.id), "crm")
    _statistics(svc)
    contact = seeded.offsets.contacts + 2
    return Office(tenant.id, users[1], seeded.big_conversation, contact, token)


def _named(found: dict[str, list[str]]) -> dict[str, list[str]]:
    """The hot paths with a plan problem, but the sorts known to be right."""
    return {name: found[name] for name in found if found[name] and name not in FEW_SORTED}


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_every_hot_query_reads_its_rows_by_index(app, svc, office):
    found = hot_query_problems(app, svc, office)

    assert len(found) > 40
    assert _named(found) == {}


# What the worker's sampled refresh (storage.db refresh_statistics) wrote for the
# big tables at the full size (bench/scale_bench.py --scale 1: 2,000,000
# messages, 100,000 conversations, 50,000 tickets). The sample guesses ~600 rows per
# office where there are a million, so the planner weighs an office's index against a
# few hundred primary-key probes as it would in a two-year-old office.
FULL_SIZE_STATISTICS = {
    ("messages", "ix_messages_contact_id"): "3317600 39",
    ("messages", "ix_messages_conversation_id_id"): "3362964 39 1",
    ("messages", "ix_messages_tenant_id_created_at"): "1513600 600 1 1",
    ("messages", "sqlite_autoindex_messages_1"): "1470600 600 1",
    ("messages", "uq_messages_tenant_id_idempotency_key"): "904634 550 1",
    ("conversations", "ix_conversations_contact_id"): "53237 1",
    ("conversations", "ix_conversations_inbox_holder"): "93312 667 667 667 1 1",
    ("conversations", "ix_conversations_inbox_mode"): "99750 510 340 255 255 1 1",
    ("conversations", "ix_conversations_inbox_status"): "93312 510 340 340 1 1",
    ("conversations", "ix_conversations_tenant_id"): "100940 510 510 1",
    ("conversations", "ix_conversations_tenant_id_created_at"): "97520 510 1",
    ("conversations", "ix_conversations_tenant_id_id"): "46068 510 1",
}


def test_with_the_statistics_of_a_full_size_office_every_hot_query_reads_by_index(app, svc, office):
    with svc.db.begin() as connection:
        for (table, index), figures in FULL_SIZE_STATISTICS.items():
            connection.exec_driver_sql(
                "DELETE FROM sqlite_stat1 WHERE tbl = ? AND idx = ?", (table, index)
            )
            connection.exec_driver_sql(
                "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)",
                (table, index, figures),
            )
    svc.db.engine.dispose()  # a connection reads the statistics when it opens

    found = hot_query_problems(app, svc, office)

    assert _named(found) == {}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_long_conversations_page_reads_only_its_page_on_postgresql(app, svc, tenant):
    # Run for real, a conversation holding a quarter of the office's messages, all far
    # back: given the page's ids as a subquery, PostgreSQL walked the primary key from
    # the newest message down to them, to spare itself a sort of the page.
    office = _office(svc, tenant, Size.scaled(0.01))
    pages = ("conversation, newest page", "conversation, older page")

    found = hot_query_problems(app, svc, office, measured=True, only=pages)

    assert found == {name: [] for name in pages}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_apis_since_lists_read_from_the_time_asked_for_on_postgresql(app, svc, tenant):
    # Run for real, on two years of bot log: listed by id from the oldest, it was read
    # from its first entry to the month asked for.
    office = _office(svc, tenant, replace(SIZE, bot_log=20_000, tickets=5_000, audit=500))
    since = ("GET /api/v1/tickets?since=(a month ago)", "GET /api/v1/bot-logs?since=(a month ago)")

    found = hot_query_problems(app, svc, office, measured=True, only=since)

    assert found == {name: [] for name in since}


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_the_plan_check_names_a_query_that_reads_a_whole_table(svc, office):
    everything = Statement("SELECT COUNT(*) FROM messages WHERE intent = 'guasto'", ())

    assert problems_of(svc.db.engine, everything)


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_the_migrations_make_every_index_the_models_declare(svc):
    inspector = inspect(svc.db.engine)
    for table in Base.metadata.sorted_tables:
        declared = {index.name for index in table.indexes}
        made = {index["name"] for index in inspector.get_indexes(table.name)}
        assert declared <= made, table.name


def test_the_worker_refreshes_the_planner_statistics_when_it_starts(app, svc, office):
    with svc.db.begin() as connection:
        connection.exec_driver_sql("DELETE FROM sqlite_stat1")

    with app.app_context():
        sweeper = make_sweeper(app)
    sweeper.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _analyzed(svc, "messages"):
            time.sleep(0.05)
    finally:
        sweeper.stop()
        sweeper.join(10)

    assert _analyzed(svc, "messages")


def test_migrating_a_database_with_data_gives_the_planner_statistics(svc, office):
    from storage.migrate import downgrade, upgrade

    downgrade(svc.db.engine, "0008_sid_tombstones")
    with svc.db.begin() as connection:
        connection.exec_driver_sql("DELETE FROM sqlite_stat1")

    upgrade(svc.db.engine)

    assert _analyzed(svc, "messages")
    assert _analyzed(svc, "conversations", "ix_conversations_inbox_status")


def _analyzed(svc: Services, table: str, index: str | None = None) -> bool:
    query = "SELECT COUNT(*) FROM sqlite_stat1 WHERE tbl = :table"
    if index is not None:
        query += " AND idx = :index"
    with svc.db.read() as session:
        return bool(session.scalar(text(query), {"table": table, "index": index}))


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_a_conversations_pages_go_from_its_newest_message_back_to_its_first(svc, tenant):
    # Named as a range of (conversation, id), a conversation must still be exactly its
    # own messages: none of the next conversation's, none left out between two pages.
    first = make_conversation(svc, tenant)
    other = make_conversation(svc, tenant, make_contact(svc, tenant, "+393339999999"))
    ours = []
    for n in range(7):
        ours.append(add_message(svc, first, f"nostro {n}").id)
        add_message(svc, other, f"altro {n}")

    pages, before = [], None
    with svc.db.read() as session:
        while len(pages) < 10:
            rows = conversation_messages(session, tenant, first.id, 3, before=before)
            page = [row.id for row in rows]
            if not page:
                break
            pages.append(page)
            before = page[0]

    assert pages == [ours[4:7], ours[1:4], ours[0:1]]
