"""Alembic migrations, run from code (``portineria db upgrade``) with no ini file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    _run(engine, command.upgrade, revision)
    analyze(engine)


def downgrade(engine: Engine, revision: str) -> None:
    _run(engine, command.downgrade, revision)


def analyze(engine: Engine) -> None:
    """Give the query planners fresh statistics of every table and index.

    Run after migrations, which may add indexes the planner has never weighed.
    SQLite has no statistics until ``ANALYZE`` writes them (and never refreshes them by
    itself); PostgreSQL's autovacuum refreshes them, but only later. On SQLite this
    reads every index once, which at millions of rows takes seconds under the write
    lock: fine while migrating, too long for a running office (the worker refreshes
    them with a bounded sample instead: :func:`storage.db.Database.refresh_statistics`).
    """
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")


def _run(engine: Engine, step: Any, revision: str) -> None:
    config = alembic_config(engine)
    with engine.connect() as connection, _foreign_key_actions_off(connection):
        with connection.begin():
            config.attributes["connection"] = connection
            step(config, revision)
            _check_foreign_keys(connection)


@contextmanager
def _foreign_key_actions_off(connection: Connection) -> Iterator[None]:
    """SQLite rebuilds a table to change it (create, copy, drop, rename): with foreign
    keys on, dropping the old table would first delete its rows and cascade the
    deletion to every table that refers to it. The pragma only takes effect outside
    a transaction, so it is set on the driver's connection before the migration's
    transaction begins, and set back after it ends."""
    if connection.dialect.name != "sqlite":
        yield
        return
    driver = connection.connection.driver_connection
    assert driver is not None
    driver.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        driver.execute("PRAGMA foreign_keys=ON")


def _check_foreign_keys(connection: Connection) -> None:
    """What foreign keys would have refused while they were off: refuse it now."""
    if connection.dialect.name != "sqlite":
        return
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"migration left rows with broken foreign keys: {broken[:5]}")


def revision(engine: Engine, message: str) -> None:
    """Autogenerate a migration from the models (a developer's tool)."""
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)
