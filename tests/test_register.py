"""The art. 30 register of processing: generated from the running configuration and the
office's own settings, served by the CLI and the API, and every export audited."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import timedelta
from typing import Any

import pytest
from helpers import make_tenant
from sqlalchemy import select

from bot.office.lifecycle import create_tenant, terminate_tenant
from bot.office.tokens import create_token
from bot.privacy.consent import DEFAULT_NOTICE_TEXT, publish_notice
from bot.privacy.register import processing_register
from bot.services import Services
from storage.models import AuditEvent, Tenant, utcnow

# What art. 30(1)(b)-(g) GDPR asks of each activity, written out here rather than taken
# from the module, so that dropping a field there fails here.
REQUIRED_FIELDS = (
    "name",
    "purposes",
    "legal_basis",
    "data_subjects",
    "personal_data",
    "recipients",
    "third_country_transfers",
    "retention",
    "security_measures",
)
PUSHER_CONFIGURED = {
    "PUSHER_APP_ID": "4242",
    "PUSHER_KEY": "test-key",
    "PUSHER_SECRET": "test-secret",
    "PUSHER_HOST": "127.0.0.1",
    "PUSHER_PORT": "9",
    "PUSHER_SSL": "false",
}
OTHER_NUMBER = "+390698765432"


def register_of(svc: Services, tenant: Tenant) -> dict[str, Any]:
    return processing_register(svc, tenant, utcnow())


def activity(register: dict[str, Any], activity_id: str) -> dict[str, Any]:
    return next(a for a in register["activities"] if a["id"] == activity_id)


def recipient_ids(register: dict[str, Any]) -> set[str]:
    return {r["id"] for a in register["activities"] for r in a["recipients"]}


def transfer_recipients(register: dict[str, Any]) -> set[str]:
    return {
        t["recipient"]
        for a in register["activities"]
        for t in a["third_country_transfers"]["transfers"]
    }


def token_for(svc: Services, tenant: Tenant) -> str:
    with svc.db.session() as session:
        return create_token(session, tenant, "dpo")


def audit_events(svc: Services, action: str) -> list[AuditEvent]:
    with svc.db.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_register_carries_the_office_retention_overrides(svc):
    tenant = make_tenant(svc, retention={"messages_days": 90, "media_days": 45})

    register = register_of(svc, tenant)

    assert register["retention_terms"]["messages_days"] == 90
    assert register["retention_terms"]["media_days"] == 45
    assert register["retention_terms"]["inactive_contact_days"] == 730  # not overridden
    terms = {t["days"]: t["term"] for t in activity(register, "whatsapp_messages")["retention"]}
    assert terms[90].startswith("90 giorni")
    assert terms[45].startswith("45 giorni")
    assert 365 not in {t["days"] for t in activity(register, "operator_handoff")["retention"]}


def test_twilio_is_a_recipient_and_a_transfer_with_the_twilio_transport(svc, tenant):
    register = register_of(svc, tenant)

    assert "twilio" in {r["id"] for r in activity(register, "whatsapp_messages")["recipients"]}
    assert "Twilio" in transfer_recipients(register)
    assert register["configuration"]["whatsapp_transport"] == "twilio"


@pytest.mark.parametrize("app_config_extra", [{"WHATSAPP_TRANSPORT": "console"}], indirect=True)
def test_twilio_is_absent_with_the_console_transport(svc, tenant):
    register = register_of(svc, tenant)

    assert "twilio" not in recipient_ids(register)
    assert "Twilio" not in json.dumps(register, ensure_ascii=False)
    # WhatsApp itself is still the channel, and still goes abroad.
    assert "meta" in recipient_ids(register)
    assert "Meta Platforms (WhatsApp)" in transfer_recipients(register)


def test_pusher_is_absent_when_not_configured(svc, tenant):
    register = register_of(svc, tenant)

    assert "pusher" not in recipient_ids(register)
    assert not any("Pusher" in t for t in transfer_recipients(register))
    assert register["configuration"]["operator_notifications"] == "stream"


@pytest.mark.parametrize("app_config_extra", [PUSHER_CONFIGURED], indirect=True)
def test_pusher_is_a_recipient_and_a_transfer_when_configured(svc, tenant):
    register = register_of(svc, tenant)

    handoff = {r["id"] for r in activity(register, "operator_handoff")["recipients"]}
    assert "pusher" in handoff
    assert any("Pusher" in t for t in transfer_recipients(register))
    # Operator accounts never reach Pusher, whatever is configured.
    assert "pusher" not in {
        r["id"] for r in activity(register, "operator_accounts_audit")["recipients"]
    }


def test_every_activity_has_every_art30_field_filled(svc, tenant):
    register = register_of(svc, tenant)

    assert {a["id"] for a in register["activities"]} >= {
        "whatsapp_messages",
        "consent_ledger",
        "operator_handoff",
        "operator_accounts_audit",
    }
    for entry in register["activities"]:
        for field in REQUIRED_FIELDS:
            assert entry.get(field), f"{entry['id']} has no {field}"
        assert entry["third_country_transfers"]["summary"], entry["id"]
        assert all(r["name"] and r["description"] for r in entry["recipients"]), entry["id"]
        assert all(t["data"] and t["term"] for t in entry["retention"]), entry["id"]
        assert all(
            t["destination"] and t["safeguard"]
            for t in entry["third_country_transfers"]["transfers"]
        ), entry["id"]


def test_register_names_the_controller_and_its_number(svc, tenant):
    now = utcnow()

    register = processing_register(svc, tenant, now)

    assert register["controller"]["name"] == "Studio Rossi"
    assert register["controller"]["whatsapp_number"] == tenant.whatsapp_number
    assert register["generated_at"] == now.isoformat().replace("+00:00", "Z")
    assert register["format_version"] == 1


def test_register_follows_the_privacy_notice_in_force(svc, tenant):
    first = register_of(svc, tenant)["privacy_notice"]
    new_text = DEFAULT_NOTICE_TEXT + " Versione aggiornata."
    with svc.db.session() as session:
        publish_notice(session, tenant, "2", new_text, "https://studio.example.it/privacy")

    second = register_of(svc, tenant)["privacy_notice"]

    assert first["version"] == "1"
    assert first["sha256"] == hashlib.sha256(DEFAULT_NOTICE_TEXT.encode("utf-8")).hexdigest()
    assert second["version"] == "2"
    assert second["sha256"] == hashlib.sha256(new_text.encode("utf-8")).hexdigest()
    assert second["full_notice_url"] == "https://studio.example.it/privacy"


def test_profile_name_is_listed_only_when_the_office_stores_it(svc):
    default = make_tenant(svc)
    keeps_it = make_tenant(svc, slug="studio-verdi", number=OTHER_NUMBER, store_profile_name=True)

    def mentions_profile_name(tenant: Tenant) -> bool:
        data = activity(register_of(svc, tenant), "whatsapp_messages")["personal_data"]
        return any("profilo WhatsApp" in item for item in data)

    assert not mentions_profile_name(default)
    assert mentions_profile_name(keeps_it)


def test_office_crm_is_a_recipient_once_it_has_an_api_token(svc, tenant):
    assert "crm" not in recipient_ids(register_of(svc, tenant))

    token_for(svc, tenant)

    assert "crm" in recipient_ids(register_of(svc, tenant))


def test_register_of_a_terminated_office_states_when_its_data_goes(svc, tenant):
    ended = utcnow() - timedelta(days=5)
    assert register_of(svc, tenant)["service"]["data_deleted_after"] is None
    terminate_tenant(svc, tenant.id, ended, actor="cli")
    with svc.db.session() as session:
        stored = session.get(Tenant, tenant.id)

    register = register_of(svc, stored)

    deadline = (ended + timedelta(days=60)).isoformat().replace("+00:00", "Z")
    assert register["service"]["data_deleted_after"] == deadline
    for entry in register["activities"]:
        assert 60 in {t["days"] for t in entry["retention"]}, entry["id"]


def test_api_register_without_a_token_answers_401(client, tenant):
    response = client.get("/api/v1/register")

    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"


def test_api_register_is_the_callers_own_office(client, svc, tenant):
    other = create_tenant(
        svc, name="Studio Bianchi", whatsapp_number=OTHER_NUMBER, slug="studio-bianchi"
    )
    token = token_for(svc, other)

    response = client.get("/api/v1/register", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200
    body = response.get_json()
    assert body["controller"]["name"] == "Studio Bianchi"
    assert body["controller"]["whatsapp_number"] == OTHER_NUMBER
    assert "Studio Rossi" not in response.get_data(as_text=True)
    [event] = audit_events(svc, "register.export")
    assert (event.tenant_id, event.actor) == (other.id, "api")


def test_cli_writes_a_private_json_file_and_audits_the_export(runner, svc, tenant, tmp_path):
    out = tmp_path / "registro.json"

    result = runner.invoke(args=["register", "--tenant", tenant.slug, "--out", str(out)])

    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["controller"]["name"] == "Studio Rossi"
    assert "condòmini" in out.read_text(encoding="utf-8").lower()  # not \u-escaped
    [event] = audit_events(svc, "register.export")
    assert (event.tenant_id, event.actor, event.target_type) == (tenant.id, "cli", "tenant")
    verify = runner.invoke(args=["audit", "verify", "--tenant", tenant.slug])
    assert verify.exit_code == 0, verify.output


def test_cli_without_out_prints_the_register(runner, tenant):
    result = runner.invoke(args=["register", "--tenant", tenant.slug])

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["controller"]["name"] == "Studio Rossi"


def test_cli_refuses_an_unknown_office(runner, svc, tenant):
    result = runner.invoke(args=["register", "--tenant", "nessuno"])

    assert result.exit_code != 0
    assert "nessuno" in result.output
    assert audit_events(svc, "register.export") == []
