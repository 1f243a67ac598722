"""Privacy holes a review found, closed: ids of erased people are never reused and
their ledger never attaches to someone else; the ledger keeps no identifiers; a
replayed delivery creates nothing after an erasure or a purge; what is on disk is
its owner's only."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import drain, send_inbound
from sqlalchemy import func, select
from test_retention import consented_with_photo

from bot.config import load_config
from bot.office.tokens import create_token
from bot.services import Services
from storage.db import Database
from storage.migrate import upgrade
from storage.models import (
    ConsentEvent,
    Tenant,
)

FIRST = "+393331110001"
SECOND = "+393331110002"
NEWCOMER = "+393331110003"
CODICE_FISCALE = "RSSMRA80A01H501U"
IBAN = "IT60X0542811101000000123456"
BOTH = ["sqlite", "postgresql"]


def bearer(svc: Services, tenant: Tenant) -> dict[str, str]:
    with svc.db.session() as session:
        return {"Authorization": f"Bearer {create_token(session, tenant, 'crm')}"}


def contact_id(client, headers: dict[str, str], phone: str) -> int:
    listed = client.get(f"/api/v1/contacts?phone={phone}", headers=headers).get_json()
    [contact] = listed["contacts"]
    return int(contact["id"])


def consent_events(client, headers: dict[str, str], contact: int) -> list[dict]:
    answer = client.get(f"/api/v1/contacts/{contact}/consent-events", headers=headers)
    assert answer.status_code == 200
    return list(answer.get_json()["events"])


def erase(runner, tenant: Tenant, phone: str) -> None:
    result = runner.invoke(args=["erase", "--tenant", tenant.slug, "--contact", phone, "--yes"])
    assert result.exit_code == 0, result.output


def count(svc: Services, column) -> int:
    with svc.db.read() as session:
        return int(session.scalar(select(func.count(column))) or 0)


def ledger_rows(svc: Services) -> list[ConsentEvent]:
    with svc.db.read() as session:
        return list(session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)))


# -- 16: the database, its WAL, media and exports are their owner's only ---------------


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The common 022 umask, so owner-only modes come from the code, not the test run."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_fresh_instance_folder_its_keys_and_its_database_are_owner_only(usual_umask, tmp_path):
    instance = tmp_path / "deploy" / "instance"
    config = load_config(str(instance), environ={})
    db = Database(config["DATABASE_URL"])
    try:
        upgrade(db.engine)
        database = Path(db.engine.url.database or "")
        assert {p.name: mode(p) for p in instance.iterdir() if p.is_file()} == {
            name: 0o600
            for name in (
                "secret_key",
                "encryption_keys",
                "portineria.db",
                "portineria.db-wal",
                "portineria.db-shm",
            )
        }
        assert database.parent == instance
        assert mode(instance) == mode(instance.parent) == 0o700
    finally:
        db.dispose()


def test_database_wal_media_and_an_access_export_by_chat_are_owner_only(
    usual_umask, client, svc, twilio, tenant
):
    photo = consented_with_photo(client, svc, twilio)
    send_inbound(client, "I MIEI DATI")
    drain(svc)

    database = Path(svc.db.engine.url.database or "")
    media_root = Path(svc.config["MEDIA_ROOT"])
    files = sorted(database.parent.glob(database.name + "*"))  # with its WAL and locks
    assert {f"{database.name}-wal", f"{database.name}-shm"} <= {p.name for p in files}
    kept = [p for p in media_root.rglob("*") if p.is_file()]
    assert len(kept) == 2 and photo in kept  # the photo and the export
    files += kept
    folders = [media_root, *(p for p in media_root.rglob("*") if p.is_dir())]
    assert {str(p): mode(p) for p in files} == {str(p): 0o600 for p in files}
    assert {str(p): mode(p) for p in folders} == {str(p): 0o700 for p in folders}
    export = next(p for p in files if p.parent.name == "exports")
    assert json.loads(svc.cipher.decrypt(export.read_bytes()))["contacts"]
