"""Contacts import, data-subject requests (access, erasure) and exports."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from helpers import RESIDENT, drain, export_lines, parse_lines, records, send_inbound
from sqlalchemy import func, select

from bot.privacy.rights import CONTACT_BATCH
from storage.models import ConsentEvent, Contact, Conversation, MediaItem, Message, utcnow

pytestmark = pytest.mark.usefixtures("tenant")

CSV = """phone,kind,legal_basis,consent_at,consent_method
+39 347 111 2233,condomino,consent,2025-03-01T10:15:00+01:00,modulo cartaceo firmato in assemblea
3471112234,fornitore,contract,,
+393471112235,condomino,,,
+393471112236,condomino,consent,,modulo
+393471112237,condomino,consent,2025-03-01T10:15:00+01:00,
not-a-number,condomino,contract,,
+393471112238,alieno,contract,,
+39 347 111 2233,condomino,contract,,
"""


def test_import_reports_each_row_and_refuses_the_bad_ones(runner, svc, tenant, tmp_path):
    path = tmp_path / "contatti.csv"
    path.write_text(CSV, encoding="utf-8")

    result = runner.invoke(args=["contacts", "import", "--tenant", tenant.slug, str(path)])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "riga 2: +393471112233 imported" in lines
    assert "riga 3: +393471112234 imported" in lines
    assert any(line.startswith("riga 4:") and "base giuridica" in line for line in lines)
    assert any(line.startswith("riga 5:") and "ISO 8601" in line for line in lines)
    assert any(line.startswith("riga 6:") and "modalità" in line for line in lines)
    assert any(line.startswith("riga 7:") and "non valido" in line for line in lines)
    assert any(line.startswith("riga 8:") and "tipo" in line for line in lines)
    assert any(line.startswith("riga 9:") and "ripetuto" in line for line in lines)
    assert lines[-1] == "2 imported or updated, 6 refused"
    with svc.db.session() as session:
        contacts = {c.phone: c for c in session.scalars(select(Contact))}
        imported = session.scalars(select(ConsentEvent)).all()
    assert set(contacts) == {"+393471112233", "+393471112234"}
    assert contacts["+393471112233"].consent == "granted"
    assert contacts["+393471112234"].consent == "none"
    assert contacts["+393471112234"].legal_basis == "contract"
    assert [(e.event, e.actor, e.channel) for e in imported] == [("imported", "import", "import")]
    assert imported[0].at.isoformat().startswith("2025-03-01T09:15:00")
    assert svc.cipher.decrypt(imported[0].evidence_text) == "modulo cartaceo firmato in assemblea"


def test_import_without_required_columns_fails_clearly(runner, tenant, tmp_path):
    path = tmp_path / "contatti.csv"
    path.write_text("telefono\n+393471112233\n", encoding="utf-8")

    result = runner.invoke(args=["contacts", "import", "--tenant", tenant.slug, str(path)])

    assert result.exit_code != 0
    assert "missing column" in result.output


def test_imported_contact_with_contract_basis_can_be_messaged_in_the_window(
    client, runner, svc, tenant, tmp_path
):
    path = tmp_path / "c.csv"
    path.write_text(
        f"phone,kind,legal_basis,consent_at,consent_method\n{RESIDENT},fornitore,contract,,\n"
    )
    runner.invoke(args=["contacts", "import", "--tenant", tenant.slug, str(path)])

    send_inbound(client, "Buongiorno, confermo il sopralluogo di domani alle 9")
    drain(svc)

    with svc.db.session() as session:
        assert session.scalar(select(func.count(ConsentEvent.id))) == 0
        purposes = session.scalars(select(Message.purpose).where(Message.direction == "out")).all()
    assert purposes == ["reply"]  # served at once: the contract is the basis, no welcome gate


def _consented(client, svc) -> None:
    send_inbound(client, "buongiorno")
    drain(svc)
    send_inbound(client, "accetto")
    drain(svc)


def test_access_request_by_chat_is_logged_and_exported_for_the_admin(client, svc, tenant, tmp_path):
    _consented(client, svc)

    send_inbound(client, "I MIEI DATI")
    drain(svc)

    with svc.db.session() as session:
        events = [e.event for e in session.scalars(select(ConsentEvent).order_by(ConsentEvent.id))]
    assert events[-1] == "access_requested"
    exports = list((Path(svc.config["MEDIA_ROOT"]) / str(tenant.id) / "exports").iterdir())
    assert len(exports) == 1
    [contact] = records(parse_lines(svc.cipher.decrypt(exports[0].read_bytes())), "contact")
    assert "accetto" in [m["body"] for m in contact["messages"]]


def test_erasure_request_is_recorded_then_carried_out_by_the_admin(
    client, runner, svc, tenant, twilio
):
    _consented(client, svc)
    url = twilio.add_media(b"\x89PNG foto", "image/png")
    send_inbound(
        client,
        "ecco la foto della crepa",
        NumMedia="1",
        MediaUrl0=url,
        MediaContentType0="image/png",
    )
    drain(svc)
    with svc.db.session() as session:
        media_path = Path(session.scalar(select(MediaItem.path)))
    assert media_path.exists()

    send_inbound(client, "CANCELLA I MIEI DATI")
    drain(svc)
    result = runner.invoke(args=["erase", "--tenant", tenant.slug, "--contact", RESIDENT, "--yes"])

    assert result.exit_code == 0, result.output
    assert not media_path.exists()
    with svc.db.session() as session:
        assert session.scalar(select(func.count(Message.id))) == 0
        assert session.scalar(select(func.count(Contact.id))) == 0
        ledger = session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)).all()
    assert [e.event for e in ledger] == ["notice_sent", "granted", "erasure_requested"]
    assert all(len(e.subject_ref) == 64 for e in ledger)
    verify = runner.invoke(args=["audit", "verify", "--tenant", tenant.slug])
    assert verify.exit_code == 0


def test_export_command_writes_the_contacts_data(client, runner, svc, tenant, tmp_path):
    _consented(client, svc)
    out = tmp_path / "export.json"

    result = runner.invoke(
        args=["export", "--tenant", tenant.slug, "--contact", RESIDENT, "--out", str(out)]
    )

    assert result.exit_code == 0, result.output
    [contact] = records(parse_lines(out.read_text()), "contact")
    assert contact["contact"]["phone"] == RESIDENT
    assert [e["event"] for e in contact["consent_events"]] == ["notice_sent", "granted"]


def test_an_office_export_is_json_lines_from_the_office_to_a_closing_count(
    client, runner, svc, tenant, tmp_path
):
    _consented(client, svc)
    out = tmp_path / "studio.jsonl"

    result = runner.invoke(args=["export", "--tenant", tenant.slug, "--out", str(out)])

    assert result.exit_code == 0, result.output
    lines = parse_lines(out.read_text())
    assert lines[0]["record"] == "office" and lines[0]["format"] == "portineria-export/2"
    assert (lines[0]["slug"], lines[0]["scope"]) == (tenant.slug, "office")
    [contact] = records(lines, "contact")
    audit = records(lines, "audit_event")
    assert lines[-1] == {
        "record": "end",
        "contacts": 1,
        "messages": len(contact["messages"]),
        "tickets": 0,
        "consent_events": 2,
        "consent_events_of_erased_contacts": 0,
        "internal_notes": 0,
        "audit_events": len(audit),
    }
    assert "exported 1 contact(s)" in result.output


def test_an_export_written_by_the_cli_is_owner_only_and_leaves_no_partial_file(
    client, runner, svc, tenant, tmp_path
):
    _consented(client, svc)
    folder = tmp_path / "exports"
    folder.mkdir()
    out = folder / "studio.jsonl"
    previous = os.umask(0o022)
    try:
        result = runner.invoke(args=["export", "--tenant", tenant.slug, "--out", str(out)])
    finally:
        os.umask(previous)

    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in folder.iterdir()] == ["studio.jsonl"]


def test_an_export_that_fails_leaves_no_file(runner, svc, tenant, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    out = folder / "studio.jsonl"
    with svc.db.session() as session:  # a body no key opens: the export stops midway
        contact = Contact(tenant_id=tenant.id, wa_id="393330000001", phone="+393330000001")
        session.add(contact)
        session.flush()
        session.add(
            Message(
                tenant_id=tenant.id,
                contact_id=contact.id,
                direction="in",
                status="processed",
                body=b"not a token",
                created_at=utcnow(),
            )
        )

    result = runner.invoke(args=["export", "--tenant", tenant.slug, "--out", str(out)])

    assert result.exit_code != 0
    assert list(folder.iterdir()) == []


def test_an_export_of_an_unknown_contact_writes_nothing(runner, tenant, tmp_path):
    out = tmp_path / "nobody.jsonl"

    result = runner.invoke(
        args=["export", "--tenant", tenant.slug, "--contact", "+393339999999", "--out", str(out)]
    )

    assert result.exit_code != 0
    assert not out.exists()


def test_an_export_across_many_batches_gives_each_contact_their_own_records(svc, tenant):
    count = CONTACT_BATCH + 7
    now = utcnow()
    with svc.db.session() as session:
        contacts = [
            Contact(tenant_id=tenant.id, wa_id=f"3933300{n:05d}", phone=f"+393330{n:06d}")
            for n in range(count)
        ]
        session.add_all(contacts)
        session.flush()
        threads = [Conversation(tenant_id=tenant.id, contact_id=c.id) for c in contacts]
        session.add_all(threads)
        session.flush()
        session.add_all(
            Message(
                tenant_id=tenant.id,
                conversation_id=thread.id,
                contact_id=thread.contact_id,
                direction="in",
                status="processed",
                body=svc.cipher.encrypt(f"messaggio {thread.contact_id}"),
                created_at=now,
            )
            for thread in threads
        )

    exported = records(export_lines(svc, tenant), "contact")

    assert len(exported) == count
    assert [c["contact"]["id"] for c in exported] == sorted(c.id for c in contacts)
    assert all(
        [m["body"] for m in c["messages"]] == [f"messaggio {c['contact']['id']}"] for c in exported
    )


def test_token_create_prints_the_token_on_the_last_line(runner, client, tenant):
    result = runner.invoke(args=["token", "create", "--tenant", tenant.slug, "--name", "crm"])

    token = result.output.strip().splitlines()[-1]
    assert (
        client.get("/api/v1/contacts", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )


def test_tenant_create_prints_the_slug_on_the_last_line(runner):
    result = runner.invoke(
        args=[
            "tenant",
            "create",
            "--name",
            "Studio Verdi & Figli",
            "--whatsapp",
            "+39 06 9876 5432",
        ]
    )

    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "studio-verdi-figli"
