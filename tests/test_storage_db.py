"""SQLite housekeeping: the one background checkpointer per database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from servers import wait_until

import storage.db
from storage.db import WalCheckpointer


@pytest.fixture
def wal_database(tmp_path: Path) -> Path:
    """A WAL database whose pages are still all in the WAL, not in the main file."""
    path = tmp_path / "wal.db"
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA wal_autocheckpoint=0")
    connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    connection.executemany(
        "INSERT INTO notes (text) VALUES (?)", [("x" * 1000,) for _ in range(500)]
    )
    yield path
    connection.close()


def start(path: Path) -> WalCheckpointer:
    checkpointer = WalCheckpointer(str(path))
    checkpointer.start()
    return checkpointer


def stop(checkpointer: WalCheckpointer) -> None:
    checkpointer.stop()
    checkpointer.join(timeout=10)


def test_the_checkpointer_copies_the_wal_into_the_database_file(wal_database):
    before = wal_database.stat().st_size
    checkpointer = start(wal_database)
    try:
        assert wait_until(lambda: wal_database.stat().st_size > before + 400_000, timeout=10)
    finally:
        stop(checkpointer)


def test_only_one_checkpointer_per_database_does_the_work(wal_database):
    first, second = start(wal_database), start(wal_database)
    try:
        assert wait_until(lambda: first.working or second.working, timeout=10)

        assert [first.working, second.working].count(True) == 1
    finally:
        stop(first)
        stop(second)


def test_a_waiting_checkpointer_takes_over_when_the_working_one_stops(wal_database, monkeypatch):
    monkeypatch.setattr(storage.db, "CHECKPOINT_TAKEOVER_SECONDS", 0.05)
    working = start(wal_database)
    assert wait_until(lambda: working.working, timeout=10)
    waiting = start(wal_database)
    try:
        stop(working)

        assert wait_until(lambda: waiting.working, timeout=10)
    finally:
        stop(waiting)


# -- one write path, one read path ------------------------------------------------------


@pytest.fixture
def database(tmp_path: Path):
    from storage.db import Database
    from storage.migrate import upgrade

    db = Database(f"sqlite:///{tmp_path / 'paths.db'}")
    upgrade(db.engine)
    yield db
    db.dispose()


def test_a_read_inside_a_write_transaction_does_not_wait_for_the_write_lock(database):
    import time

    from sqlalchemy import select

    from storage.models import Tenant

    started = time.monotonic()
    with database.session() as writer:
        writer.add(Tenant(slug="a", name="A", whatsapp_number="+390211111111", settings={}))
        writer.flush()
        with database.read() as reader:
            assert reader.scalars(select(Tenant.slug)).all() == []
    assert time.monotonic() - started < 1.0


def test_a_second_write_transaction_in_the_same_thread_fails_at_once(database):
    from storage.db import NestedWriteTransaction

    with database.session(), pytest.raises(NestedWriteTransaction):  # noqa: SIM117
        with database.session():
            pass


def test_a_read_transaction_refuses_to_write(database):
    import sqlalchemy.exc

    from storage.models import Tenant

    with pytest.raises((sqlalchemy.exc.OperationalError, storage.db.WriteInReadTransaction)):
        with database.read() as reader:
            reader.add(Tenant(slug="b", name="B", whatsapp_number="+390222222222", settings={}))
            reader.flush()


def test_objects_read_stay_usable_after_the_read(database):
    from sqlalchemy import select

    from storage.models import Tenant

    with database.session() as writer:
        writer.add(Tenant(slug="c", name="Studio C", whatsapp_number="+390233333333", settings={}))
    with database.read() as reader:
        tenant = reader.scalar(select(Tenant).where(Tenant.slug == "c"))
    assert tenant is not None and tenant.name == "Studio C"


def test_media_root_and_the_instance_folder_come_from_the_environment(tmp_path):
    from bot.config import instance_folder, load_config

    environ = {"MEDIA_ROOT": str(tmp_path / "media"), "PORTINERIA_INSTANCE_PATH": "var/state"}
    config = load_config(str(tmp_path / "instance"), environ=environ)

    assert config["MEDIA_ROOT"] == str(tmp_path / "media")
    assert instance_folder(environ) == str(Path("var/state").resolve())
