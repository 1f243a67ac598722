"""Privacy holes a review found, closed: ids of erased people are never reused and
their ledger never attaches to someone else; the ledger keeps no identifiers; a
replayed delivery creates nothing after an erasure or a purge; what is on disk is
its owner's only."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy.exc
from helpers import (
    RESIDENT,
    drain,
    export_lines,
    make_tenant,
    parse_lines,
    post_signed,
    records,
    send_inbound,
)
from sqlalchemy import func, select, text, update
from test_retention import consented_with_photo

from bot.config import load_config
from bot.console.inbox import conversation_detail
from bot.office.tokens import create_token
from bot.privacy.retention import purge
from bot.services import Services
from storage.db import Database
from storage.migrate import downgrade, upgrade
from storage.models import (
    ConsentEvent,
    Contact,
    Conversation,
    Message,
    SidTombstone,
    Tenant,
    utcnow,
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


# -- 3: an erased person's consent history never attaches to the next contact ----------


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_a_new_person_after_an_erasure_sees_only_their_own_consent_events(
    client, runner, svc, tenant
):
    headers = bearer(svc, tenant)
    send_inbound(client, "buongiorno", sender=FIRST)
    send_inbound(client, "buongiorno", sender=SECOND)
    drain(svc)
    send_inbound(client, "accetto", sender=SECOND)
    drain(svc)
    erased = contact_id(client, headers, SECOND)  # the highest id
    erase(runner, tenant, SECOND)

    own = send_inbound(client, "salve, sono nuovo", sender=NEWCOMER)
    drain(svc)

    newcomer = contact_id(client, headers, NEWCOMER)
    assert newcomer > erased
    events = consent_events(client, headers, newcomer)
    assert [(e["event"], e["evidence"]["message_sid"]) for e in events] == [
        ("notice_sent", own["MessageSid"])
    ]


def test_ledger_rows_of_someone_else_under_a_contact_id_are_never_that_contacts(
    client, svc, tenant
):
    # As if an erased person's id had been reused before ids were never reused.
    headers = bearer(svc, tenant)
    send_inbound(client, "buongiorno", sender=NEWCOMER)
    drain(svc)
    newcomer = contact_id(client, headers, NEWCOMER)
    with svc.db.session() as session:
        session.add(
            ConsentEvent(
                tenant_id=tenant.id,
                contact_id=newcomer,
                subject_ref=svc.cipher.pseudonym(SECOND.lstrip("+")),
                event="granted",
                channel="whatsapp",
                actor="contact",
                evidence_text=svc.cipher.encrypt("accetto"),
            )
        )
        conversation = session.scalar(select(Conversation.id))

    events = consent_events(client, headers, newcomer)
    [own] = records(export_lines(svc, tenant, newcomer), "contact")
    erased = records(export_lines(svc, tenant), "consent_event_of_erased_contact")
    with svc.db.read() as session:
        detail = conversation_detail(session, svc.cipher, tenant.id, conversation)

    assert [e["event"] for e in events] == ["notice_sent"]
    assert [e["event"] for e in own["consent_events"]] == ["notice_sent"]
    assert [e["event"] for e in erased] == ["granted"]
    assert detail is not None and detail.contact.last_consent_event == "notice_sent"


def _sqlite_schema(path: Path, tables: tuple[str, ...]) -> dict[str, object]:
    connection = sqlite3.connect(path)
    try:
        return {
            "indexes": sorted(
                connection.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                ).fetchall()
            ),
            "triggers": sorted(
                connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
            ),
            # (table, from, to, on update, on delete, match), without SQLite's numbering.
            "foreign_keys": {
                t: sorted(row[2:] for row in connection.execute(f"PRAGMA foreign_key_list({t})"))
                for t in tables
            },
        }
    finally:
        connection.close()


PEOPLE_TABLES = ("contacts", "conversations", "messages", "tickets", "events", "bot_log")


def test_the_migration_rebuilds_peoples_tables_keeping_rows_indexes_triggers_and_keys(
    tmp_path,
):
    path = tmp_path / "old.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db.engine, "0005_session_version")  # the schema just before the rebuild
    with db.engine.begin() as connection:
        for statement in (
            "INSERT INTO tenants (id, slug, name, whatsapp_number, created_at, settings) "
            "VALUES (1, 'a', 'A', '+390211111111', '2026-01-01', '{}')",
            "INSERT INTO contacts (id, tenant_id, wa_id, kind, source, consent, created_at) "
            "VALUES (1, 1, 'w1', 'unknown', 'whatsapp_inbound', 'none', '2026-01-01')",
            "INSERT INTO conversations (id, tenant_id, contact_id, mode, priority, "
            "needs_attention, status, clarifications, created_at) "
            "VALUES (1, 1, 1, 'bot', 'normal', 0, 'open', 0, '2026-01-01')",
            "INSERT INTO messages (id, tenant_id, conversation_id, contact_id, direction, "
            "provider_sid, status, status_rank, sensitive_kinds, redacted, created_at, "
            "attempts, sweeps) "
            "VALUES (1, 1, 1, 1, 'in', 'SM1', 'processed', 0, '[]', 0, '2026-01-01', 0, 0)",
            "INSERT INTO bot_log (tenant_id, message_id, at, action, detail) "
            "VALUES (1, 1, '2026-01-01', 'reply', '{}')",
            # Contact 7 was erased before the migration: the ledger still names it.
            "INSERT INTO consent_events (tenant_id, contact_id, subject_ref, event, at, "
            "channel, actor) VALUES (1, 7, 'ref', 'granted', '2026-01-01', 'whatsapp', 'contact')",
        ):
            connection.exec_driver_sql(statement)
    before = _sqlite_schema(path, PEOPLE_TABLES)

    upgrade(db.engine, "0006_ids_never_reused")

    after = _sqlite_schema(path, PEOPLE_TABLES)
    assert after["foreign_keys"] == before["foreign_keys"]
    assert after["triggers"] == before["triggers"]
    assert after["indexes"] == before["indexes"]
    with db.engine.begin() as connection:
        assert [
            connection.exec_driver_sql(f"SELECT COUNT(*) FROM {t}").scalar()  # noqa: S608
            for t in ("contacts", "conversations", "messages", "bot_log", "consent_events")
        ] == [1, 1, 1, 1, 1]
        created = connection.exec_driver_sql(
            "INSERT INTO contacts (tenant_id, wa_id, kind, source, consent, created_at) "
            "VALUES (1, 'w2', 'unknown', 'whatsapp_inbound', 'none', '2026-01-02') RETURNING id"
        ).scalar()
        autoincrement = connection.exec_driver_sql(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND sql LIKE '%AUTOINCREMENT%'"
        ).scalar()
    assert created == 8  # above the erased contact the ledger names
    assert autoincrement == len(PEOPLE_TABLES)
    with pytest.raises(sqlalchemy.exc.DatabaseError), db.engine.begin() as connection:
        connection.execute(text("UPDATE consent_events SET event = 'withdrawn'"))
    db.dispose()


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_the_migrations_go_down_and_up_again(svc, tenant):
    downgrade(svc.db.engine, "0002")
    upgrade(svc.db.engine)

    with svc.db.session() as session:
        session.add(SidTombstone(tenant_id=tenant.id, sid_hash="0" * 64))
        session.add(
            ConsentEvent(
                tenant_id=tenant.id,
                subject_ref="ref",
                event="imported",
                channel="import",
                actor="import",
                evidence_sha256="1" * 64,
            )
        )
    assert count(svc, SidTombstone.sid_hash) == 1


# -- 8: the ledger keeps no identifier and no health data ------------------------------


@pytest.mark.parametrize("redact_sensitive", [True, False])
def test_an_acceptance_with_an_identifier_is_kept_redacted_with_its_hash(
    client, svc, redact_sensitive
):
    tenant = make_tenant(svc, redact_sensitive=redact_sensitive)
    headers = bearer(svc, tenant)
    send_inbound(client, "buongiorno")
    drain(svc)
    body = f"Accetto, il mio codice fiscale è {CODICE_FISCALE}"
    sent = send_inbound(client, body)
    drain(svc)

    [granted] = [e for e in ledger_rows(svc) if e.event == "granted"]
    evidence = svc.cipher.decrypt(granted.evidence_text)
    assert CODICE_FISCALE not in evidence and evidence.startswith("Accetto")
    assert granted.evidence_sha256 == hashlib.sha256(body.encode("utf-8")).hexdigest()
    assert granted.evidence_message_sid == sent["MessageSid"]
    [api_granted] = [
        e
        for e in consent_events(client, headers, contact_id(client, headers, RESIDENT))
        if e["event"] == "granted"
    ]
    assert api_granted["evidence"] == {
        "text": evidence,
        "message_sid": sent["MessageSid"],
        "sha256": granted.evidence_sha256,
    }


def test_after_erasure_the_kept_ledger_rows_hold_no_identifier_or_health_data(client, runner, svc):
    tenant = make_tenant(svc)
    bodies = [
        f"Buongiorno, ho il diabete e il mio IBAN è {IBAN}",
        f"Sì, accetto, ma il mio codice fiscale è {CODICE_FISCALE}",
        "CANCELLA I MIEI DATI",
    ]
    for body in bodies:
        send_inbound(client, body)
        drain(svc)

    erase(runner, tenant, RESIDENT)

    kept = ledger_rows(svc)
    assert [e.event for e in kept] == ["notice_sent", "granted", "erasure_requested"]
    texts = [svc.cipher.decrypt(e.evidence_text) for e in kept]
    for secret in (IBAN, CODICE_FISCALE, "diabete"):
        assert not any(secret in t for t in texts), texts
    assert texts[2] == "cancella i miei dati"
    assert [e.evidence_sha256 for e in kept] == [
        hashlib.sha256(b.encode("utf-8")).hexdigest() for b in bodies
    ]


# -- 14: a replayed delivery creates nothing after an erasure or a purge ---------------


@pytest.mark.parametrize("database_url", BOTH, indirect=True)
def test_a_delivery_replayed_after_erasure_creates_no_contact_and_sends_nothing(
    client, runner, svc, twilio, tenant
):
    captured = send_inbound(client, "buongiorno")
    drain(svc)
    assert len(twilio.messages) == 1
    erase(runner, tenant, RESIDENT)

    replay = post_signed(client, "/webhooks/twilio/messages", captured)
    drain(svc)

    assert replay.status_code == 200
    assert count(svc, Contact.id) == 0
    assert count(svc, Message.id) == 0  # the replay's row and payload are gone too
    assert len(twilio.messages) == 1
    with svc.db.read() as session:
        [tombstone] = session.scalars(select(SidTombstone.sid_hash)).all()
    assert len(tombstone) == 64 and captured["MessageSid"] not in tombstone


def test_a_delivery_replayed_after_the_retention_purge_creates_nothing(client, svc, twilio, tenant):
    send_inbound(client, "buongiorno")
    drain(svc)
    captured = send_inbound(client, "accetto")
    drain(svc)
    assert len(twilio.messages) == 2
    with svc.db.session() as session:
        session.execute(update(Message).values(created_at=utcnow() - timedelta(days=400)))
    purge(svc, utcnow())
    assert count(svc, Message.id) == 0

    replay = post_signed(client, "/webhooks/twilio/messages", captured)
    drain(svc)

    assert replay.status_code == 200
    assert count(svc, Message.id) == 0
    assert count(svc, Contact.id) == 1
    assert len(twilio.messages) == 2
    assert [e.event for e in ledger_rows(svc)] == ["notice_sent", "granted"]


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
                "vapid_private_key",
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
    assert records(parse_lines(svc.cipher.decrypt(export.read_bytes())), "contact")
