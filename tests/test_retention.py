"""Retention: the scheduled purge deletes rows and files, per office terms, and says so."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    add_message,
    drain,
    make_contact,
    make_conversation,
    make_tenant,
    send_inbound,
)
from servers import wait_until
from sqlalchemy import LargeBinary, event, func, insert, literal, select, update

from bot.office.lifecycle import terminate_tenant
from bot.privacy.retention import purge, purge_if_due
from bot.privacy.rights import erase_in_session
from storage.models import (
    AuditEvent,
    BotLogEntry,
    ConsentEvent,
    Contact,
    Conversation,
    FileDeletion,
    MediaItem,
    Message,
    Tenant,
    utcnow,
)

pytestmark = pytest.mark.usefixtures("tenant")


def count(svc, model) -> int:
    # The read path: polled while a purge runs, it must not queue for the write lock.
    with svc.db.read() as session:
        return int(session.scalar(select(func.count(model.id))) or 0)


def age(svc, model, column: str, days: int) -> None:
    with svc.db.session() as session:
        session.execute(update(model).values({column: utcnow() - timedelta(days=days)}))


def consented_with_photo(client, svc, twilio) -> Path:
    send_inbound(client, "buongiorno")
    drain(svc)
    send_inbound(client, "accetto")
    drain(svc)
    url = twilio.add_media(b"\x89PNG crepa", "image/png")
    send_inbound(client, "la crepa", NumMedia="1", MediaUrl0=url, MediaContentType0="image/png")
    drain(svc)
    with svc.db.session() as session:
        return Path(session.scalar(select(MediaItem.path)))


def test_old_messages_and_their_media_files_are_purged(client, svc, twilio):
    photo = consented_with_photo(client, svc, twilio)
    age(svc, Message, "created_at", 400)
    age(svc, MediaItem, "created_at", 400)

    [report] = purge(svc, utcnow())

    assert count(svc, Message) == 0
    assert count(svc, MediaItem) == 0
    assert not photo.exists()
    assert report.removed["messages"] > 0 and report.removed["media"] == 1
    assert count(svc, ConsentEvent) == 2  # the ledger is not purged
    with svc.db.session() as session:
        assert session.scalar(select(AuditEvent.action).order_by(AuditEvent.id.desc())) == (
            "retention.purge"
        )


def test_recent_data_is_kept(client, svc, twilio):
    photo = consented_with_photo(client, svc, twilio)

    purge(svc, utcnow())

    assert count(svc, Message) > 0 and photo.exists()


def test_dry_run_counts_and_removes_nothing(client, svc, twilio):
    photo = consented_with_photo(client, svc, twilio)
    age(svc, Message, "created_at", 400)
    age(svc, MediaItem, "created_at", 400)
    before = count(svc, Message)

    [report] = purge(svc, utcnow(), dry_run=True)

    assert report.removed["messages"] == before
    assert count(svc, Message) == before and photo.exists()


def test_contacts_who_never_accepted_are_erased_after_the_term(client, svc):
    send_inbound(client, "buongiorno")
    drain(svc)
    age(svc, Contact, "created_at", 31)

    [report] = purge(svc, utcnow())

    assert report.removed["never_consented_contacts"] == 1
    assert count(svc, Contact) == 0 and count(svc, Message) == 0


def test_office_terms_override_the_defaults(client, svc, tenant, twilio):
    from storage.models import Tenant

    consented_with_photo(client, svc, twilio)
    with svc.db.session() as session:
        stored = session.get(Tenant, tenant.id)
        stored.settings = {**stored.settings, "retention": {"messages_days": 7}}
    age(svc, Message, "created_at", 8)

    purge(svc, utcnow())

    assert count(svc, Message) == 0


def test_the_daily_purge_runs_once_a_day_across_workers(client, svc):
    assert purge_if_due(svc, utcnow()) is not None
    assert purge_if_due(svc, utcnow()) is None


def test_purge_command_dry_run(runner, client, svc):
    send_inbound(client, "buongiorno")
    drain(svc)
    age(svc, Contact, "created_at", 40)

    result = runner.invoke(args=["purge", "--dry-run"])

    assert result.exit_code == 0, result.output
    assert "would remove: studio-rossi:" in result.output
    assert "never_consented_contacts 1" in result.output
    assert count(svc, Contact) == 1


# -- at scale, in batches ----------------------------------------------------------------

# No statement the purge runs carries more bound parameters than this (its largest is the
# page of journaled files it forgets); the databases allow 32,766-250,000 (SQLite, as
# compiled) and 65,535 (PostgreSQL's protocol).
MAX_PARAMETERS = 100
POSTGRESQL_PARAMETER_LIMIT = 65_535


def parameter_limit(svc) -> int:
    if not svc.db.is_sqlite:
        return POSTGRESQL_PARAMETER_LIMIT
    with svc.db.engine.connect() as connection:
        driver = connection.connection.driver_connection
        return int(driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


def seed_expired_messages(svc, tenant, count: int, *, days: int = 400) -> None:
    """``count`` outbound messages ``days`` old, inserted by one INSERT … SELECT over a
    recursive CTE: the database makes the rows, nothing travels per row."""
    numbers = select(literal(1).label("n")).cte("numbers", recursive=True)
    numbers = numbers.union_all(select(numbers.c.n + 1).where(numbers.c.n < count))
    old = utcnow() - timedelta(days=days)
    values = {
        "tenant_id": literal(tenant.id),
        "direction": literal("out"),
        "status": literal("delivered"),
        "status_rank": literal(3),
        "sensitive_kinds": literal([], Message.sensitive_kinds.type),
        "redacted": literal(False),
        "created_at": literal(old, Message.created_at.type),
        "attempts": literal(0),
        "sweeps": literal(0),
        "body": literal(svc.cipher.encrypt("Il tecnico passa domani"), LargeBinary()),
    }
    rows = select(*values.values()).select_from(numbers)
    with svc.db.begin() as connection:
        connection.execute(insert(Message.__table__).from_select(list(values), rows))


@contextmanager
def statements(svc) -> Iterator[list[tuple[str, Any]]]:
    """Every statement run on the app's engine meanwhile, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def record(_conn, _cursor, statement, parameters, _context, executemany) -> None:
        seen.append((statement, parameters if executemany else [parameters]))

    event.listen(svc.db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(svc.db.engine, "before_cursor_execute", record)


def width(parameters: list[Any]) -> int:
    """Bound parameters of a statement (of each row, for an executemany)."""
    return max((len(row) for row in parameters), default=0)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_more_expired_messages_than_the_parameter_limit_are_counted_then_purged(svc, tenant):
    expired = parameter_limit(svc) + 1
    seed_expired_messages(svc, tenant, expired)

    with statements(svc) as seen:
        [counted] = purge(svc, utcnow(), dry_run=True)
        [report] = purge(svc, utcnow())

    assert counted.removed["messages"] == expired
    assert report.error is None and report.removed["messages"] == expired
    assert count(svc, Message) == 0
    widest = max(seen, key=lambda statement: width(statement[1]))
    assert width(widest[1]) <= MAX_PARAMETERS, widest[0]


def test_the_dry_run_counts_what_the_purge_then_removes(client, svc, tenant, twilio):
    photo = consented_with_photo(client, svc, twilio)  # media past its term only
    age(svc, MediaItem, "created_at", 200)
    someone = make_contact(svc, tenant, "+393330000000")
    with svc.db.session() as session:
        stale = Conversation(tenant_id=tenant.id, contact_id=someone.id)
        session.add(stale)
    # A year-old message whose photo is recent: the photo goes with the message.
    a_year_ago = utcnow() - timedelta(days=400)
    old = add_message(svc, stale, "foto", created_at=a_year_ago, processed_at=a_year_ago)
    old_photo = keep_file(svc, tenant, old, b"vecchia")
    # A year-old inbound message nobody processed yet: kept.
    send_inbound(client, "mai elaborato", From="whatsapp:+393339999999")
    with svc.db.session() as session:
        session.execute(
            update(Message)
            .where(Message.direction == "in", Message.processed_at.is_(None))
            .values(created_at=utcnow() - timedelta(days=400))
        )
    make_contact(svc, tenant, "+393331111111", consent="none", legal_basis=None)
    age(svc, Contact, "created_at", 40)  # and the consented ones keep their basis
    inactive = make_contact(svc, tenant, "+393332222222")
    with svc.db.session() as session:
        session.get(Contact, inactive.id).last_contact_at = utcnow() - timedelta(days=800)
    age_bot_log(svc, 400)

    [counted] = purge(svc, utcnow(), dry_run=True)
    [report] = purge(svc, utcnow())

    assert report.removed == counted.removed
    assert report.removed["media"] == 2, report.removed
    assert report.removed["messages"] == 1, report.removed
    assert report.removed["bot_log"] > 0
    assert report.removed["never_consented_contacts"] == 1
    assert report.removed["inactive_contacts"] == 1
    assert not photo.exists() and not old_photo.exists()
    with svc.db.session() as session:
        unprocessed = (Message.direction == "in", Message.processed_at.is_(None))
        assert session.scalar(select(func.count()).where(*unprocessed)) == 1  # kept


def keep_file(svc, tenant, message, content: bytes) -> Path:
    """A media item of ``message`` with its file on disk, as the engine stores one."""
    path = Path(svc.config["MEDIA_ROOT"]) / str(tenant.id) / f"{message.id}-0-test.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(svc.cipher.encrypt_bytes(content))
    with svc.db.session() as session:
        session.add(
            MediaItem(
                tenant_id=tenant.id,
                message_id=message.id,
                position=0,
                content_type="image/png",
                path=str(path),
            )
        )
    return path


def age_bot_log(svc, days: int) -> None:
    age(svc, BotLogEntry, "at", days)


def test_the_files_of_an_erased_contact_go_with_their_rows(client, svc, twilio):
    photo = consented_with_photo(client, svc, twilio)
    with svc.db.session() as session:
        session.execute(update(Contact).values(last_contact_at=utcnow() - timedelta(days=800)))

    [report] = purge(svc, utcnow())

    assert report.removed["inactive_contacts"] == 1
    assert not photo.exists()
    assert count(svc, MediaItem) == 0 and count(svc, FileDeletion) == 0


def test_files_a_crashed_purge_journaled_are_deleted_by_the_next(svc, tenant, tmp_path):
    # The state a purge leaves when it dies after committing a batch and before
    # unlinking its files: the rows are gone, the paths are in the journal.
    left = tmp_path / "media" / "orphan.bin"
    left.parent.mkdir(parents=True, exist_ok=True)
    left.write_bytes(b"cifrato")
    with svc.db.session() as session:
        session.add(FileDeletion(path=str(left)))

    purge(svc, utcnow())

    assert not left.exists()
    assert count(svc, FileDeletion) == 0


PURGE_CHILD = """
import json, sys
from bot import create_app
from bot.privacy.retention import purge
from storage.models import utcnow
app = create_app(json.loads(sys.argv[1]))
[report] = purge(app.extensions["portineria"], utcnow())
sys.exit(1 if report.error else 0)
"""


def start_purge(app_config) -> subprocess.Popen[bytes]:
    """``purge`` in a process of its own, as the worker or ``portineria purge`` runs it."""
    config = {key: value for key, value in app_config.items() if key != "TESTING"}
    return subprocess.Popen(
        [sys.executable, "-c", PURGE_CHILD, json.dumps(config)], stderr=subprocess.PIPE
    )


def expired_left(svc) -> int:
    with svc.db.read() as session:
        old = Message.created_at < utcnow() - timedelta(days=300)
        return int(session.scalar(select(func.count()).select_from(Message).where(old)) or 0)


def with_files(svc, tenant, share: int) -> None:
    """A recent photo, file on disk, for one message in ``share``: it goes with it."""
    with svc.db.session() as session:
        ids = session.scalars(select(Message.id).where(Message.id % share == 0)).all()
    with svc.db.session() as session:
        for message_id in ids:
            path = Path(svc.config["MEDIA_ROOT"]) / f"{message_id}-0-test.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"cifrato")
            session.add(
                MediaItem(
                    tenant_id=tenant.id,
                    message_id=message_id,
                    position=0,
                    content_type="image/png",
                    path=str(path),
                    # Recent: the photos go with their messages, batch by batch.
                    created_at=utcnow(),
                )
            )


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_purge_killed_between_batches_leaves_no_file_without_a_row_and_the_next_finishes(
    app_config, svc, tenant
):
    expired = 60_000
    seed_expired_messages(svc, tenant, expired)
    with_files(svc, tenant, 10)
    child = start_purge(app_config)
    try:
        assert wait_until(lambda: count(svc, Message) < expired, timeout=60, interval=0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    left = count(svc, Message)
    assert 0 < left < expired, "the purge was not caught in the middle"

    with svc.db.read() as session:
        named = set(session.scalars(select(MediaItem.path)))
        journaled = set(session.scalars(select(FileDeletion.path)))
    on_disk = {str(path) for path in Path(svc.config["MEDIA_ROOT"]).glob("*.bin")}
    assert on_disk - named <= journaled  # a file whose row is gone is journaled

    [report] = purge(svc, utcnow())

    assert report.removed["messages"] == left
    assert count(svc, Message) == 0 and count(svc, MediaItem) == 0
    assert count(svc, FileDeletion) == 0
    assert not list(Path(svc.config["MEDIA_ROOT"]).glob("*.bin"))


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_webhooks_are_answered_and_stored_while_a_purge_runs(app_config, client, svc, tenant):
    """Signed webhooks posted while another process purges are answered between its
    batches, with the purge still midway: it never holds the database for all of it."""
    expired = 60_000
    seed_expired_messages(svc, tenant, expired)
    with_files(svc, tenant, 20)
    child = start_purge(app_config)
    posted, midway, slowest = 0, 0, 0.0
    try:
        assert wait_until(lambda: expired_left(svc) < expired, timeout=60, interval=0.01)
        for _ in range(500):
            started = time.perf_counter()
            send_inbound(client, "guasto in scala B")  # asserts the 200
            slowest = max(slowest, time.perf_counter() - started)
            posted += 1
            if expired_left(svc) == 0:
                break
            midway += 1
        assert child.wait(timeout=120) == 0, child.stderr.read() if child.stderr else ""
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)

    assert midway >= 5, f"only {midway} webhooks were answered while the purge ran"
    assert slowest < 5.0  # generous: a batch lasts tens of milliseconds
    with svc.db.read() as session:
        inbound = select(func.count()).select_from(Message).where(Message.direction == "in")
        assert session.scalar(inbound) == posted
    assert expired_left(svc) == 0 and count(svc, MediaItem) == 0


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_an_office_past_its_export_window_is_deleted_in_batches(svc, tenant):
    seed_expired_messages(svc, tenant, 5_000, days=1)  # recent, as an office's last days
    with svc.db.session() as session:
        session.execute(update(Message).where(Message.id % 2 == 0).values(direction="in"))
    terminate_tenant(svc, tenant.id, utcnow() - timedelta(days=61), actor="test")

    [report] = purge(svc, utcnow())

    assert report.error is None and report.removed["office"] == 1
    assert report.removed["messages"] == 5_000  # unprocessed inbound ones too
    assert report.batches > 2  # not one transaction holding the database for all
    assert count(svc, Message) == 0 and count(svc, Tenant) == 0


def test_the_dry_run_counts_an_office_past_its_window_without_writing(svc, tenant):
    seed_expired_messages(svc, tenant, 300)
    terminate_tenant(svc, tenant.id, utcnow() - timedelta(days=61), actor="test")

    with statements(svc) as seen:
        [counted] = purge(svc, utcnow(), dry_run=True)

    assert counted.removed["messages"] == 300 and counted.error is None
    writes = ("DELETE", "INSERT", "UPDATE")
    assert not [sql for sql, _ in seen if sql.lstrip().upper().startswith(writes)]
    assert count(svc, Message) == 300


def test_a_failed_office_deletion_leaves_the_day_open(svc, tenant):
    message = add_message(svc, make_conversation(svc, tenant), "foto", direction="out")
    stuck = keep_file(svc, tenant, message, b"foto")
    stuck.unlink()
    stuck.mkdir()  # what cannot be unlinked as a file: the deletion fails, loudly
    terminate_tenant(svc, tenant.id, utcnow() - timedelta(days=61), actor="test")

    [report] = purge_if_due(svc, utcnow())

    assert report.error == "OSError"
    stuck.rmdir()
    assert purge_if_due(svc, utcnow()) is not None  # tried again: the day was not lost
    assert purge_if_due(svc, utcnow()) is None
    assert count(svc, FileDeletion) == 0 and count(svc, Tenant) == 0


# -- the daily run -----------------------------------------------------------------------


def test_a_failed_purge_leaves_the_day_open_and_shows_in_readyz(client, svc, tenant):
    other = make_tenant(svc, slug="studio-bianchi", number="+390299999999")
    with svc.db.session() as session:  # stored before terms were validated
        session.get(Tenant, tenant.id).settings = {"retention": {"messages_days": "sempre"}}

    first = {report.tenant: report for report in purge_if_due(svc, utcnow())}

    assert first["studio-rossi"].error == "ValueError"
    assert first["studio-bianchi"].error is None
    offices = client.get("/readyz").get_json()["retention"]["offices"]
    assert offices["studio-rossi"]["failed"] is True
    assert offices["studio-rossi"]["last_success"] is None
    assert offices["studio-bianchi"]["failed"] is False
    assert offices["studio-bianchi"]["last_success"] is not None

    # The next round tries the failed office again, and only that one.
    again = purge_if_due(svc, utcnow())
    assert [report.tenant for report in again] == ["studio-rossi"]

    with svc.db.session() as session:
        session.get(Tenant, tenant.id).settings = {"retention": {"messages_days": 30}}
    [fixed] = purge_if_due(svc, utcnow())
    assert fixed.tenant == "studio-rossi" and fixed.error is None
    assert purge_if_due(svc, utcnow()) is None  # now the day is done
    offices = client.get("/readyz").get_json()["retention"]["offices"]
    assert offices["studio-rossi"]["failed"] is False
    assert offices["studio-rossi"]["last_success"] is not None
    assert other.slug in offices


def test_the_worker_purges_in_a_thread_of_its_own(app, svc):
    from bot.runtime.worker import make_retention_loop

    with app.app_context():
        loop = make_retention_loop()
    loop.start()
    try:
        assert wait_until(lambda: audited(svc, "retention.purge"), timeout=20)
    finally:
        loop.stop()
        loop.join(timeout=30)
    assert loop.name == "portineria-retention" and not loop.is_alive()


def audited(svc, action: str) -> bool:
    with svc.db.read() as session:
        return session.scalar(select(AuditEvent.id).where(AuditEvent.action == action)) is not None


def test_contact_erasure_reads_only_through_indexes(client, svc, tenant, twilio):
    """On SQLite: no statement of the erasure, foreign-key checks included, scans a table
    of messages or of what points at them (it would read the whole office per contact)."""
    consented_with_photo(client, svc, twilio)
    with svc.db.session() as session:
        contact = session.scalar(select(Contact))
    with statements(svc) as seen, svc.db.session(dry_run=True) as session:
        erase_in_session(session, tenant, session.get(Contact, contact.id))
        session.flush()
    with svc.db.read() as session:
        explain = session.connection().exec_driver_sql
        plans = [
            row[3]
            for statement, parameters in seen
            if statement.lstrip().upper().startswith(("SELECT", "DELETE"))
            for row in explain("EXPLAIN QUERY PLAN " + statement, parameters[0])
        ]
    assert any("messages" in plan for plan in plans)
    scans = [plan for plan in plans if plan.startswith("SCAN ") and "CONSTANT ROW" not in plan]
    assert not scans, scans
