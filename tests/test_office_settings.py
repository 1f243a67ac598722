"""An office's settings: validated on the way in, used by the code that reads them."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from bot.exceptions import InvalidSetting
from bot.office.settings import parse_assignment, update_settings
from bot.privacy.register import processing_register
from bot.privacy.retention import terms_for
from storage.models import AuditEvent, Tenant, utcnow


def stored(svc, tenant) -> Tenant:
    with svc.db.session() as session:
        return session.get(Tenant, tenant.id)


def settings_cli(app, tenant, *assignments: str):
    args = ["tenant", "settings", "--tenant", tenant.slug]
    for assignment in assignments:
        args += ["--set", assignment]
    return app.test_cli_runner().invoke(args=args)


def test_a_retention_term_set_from_the_cli_is_the_one_the_purge_applies(app, svc, tenant):
    result = settings_cli(app, tenant, "retention.messages_days=90")

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["retention"]["messages_days"] == 90
    assert terms_for(stored(svc, tenant))["messages_days"] == 90


def test_changing_one_term_keeps_the_others_and_the_other_settings(svc, tenant):
    update_settings(svc, tenant.id, {"retention.media_days": 30}, actor="test")
    update_settings(svc, tenant.id, {"retention.messages_days": 90}, actor="test")

    office = stored(svc, tenant)
    assert office.settings["retention"] == {"media_days": 30, "messages_days": 90}
    assert office.settings["send_rate_per_second"] == 20  # set when the office was created


@pytest.mark.parametrize(
    ("assignment", "complaint"),
    [
        ("retention.messages_days=0", "from 1 to 3650"),
        ("retention.messages_days=tre", "whole number"),
        ("send_rate_per_second=500", "from 1 to 80"),
        ("store_profile_name=forse", "true or false"),
        ("retention.forever_days=10", "unknown setting"),
        ("redact_sensitive", "KEY=VALUE"),
    ],
)
def test_an_invalid_setting_is_refused_and_nothing_changes(app, svc, tenant, assignment, complaint):
    before = stored(svc, tenant).settings

    result = settings_cli(app, tenant, "retention.media_days=30", assignment)

    assert result.exit_code != 0
    assert complaint in result.output
    assert stored(svc, tenant).settings == before


@pytest.mark.parametrize(("raw", "value"), [("false", False), ("NO", False), ("on", True)])
def test_yes_and_no_are_read_as_booleans(raw, value):
    assert parse_assignment(f"store_profile_name={raw}") == ("store_profile_name", value)


def test_a_change_is_audited_with_what_changed(svc, tenant):
    update_settings(svc, tenant.id, {"store_profile_name": True}, actor="cli")

    with svc.db.session() as session:
        event = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert (event.action, event.detail) == ("tenant.settings", {"store_profile_name": True})


def test_showing_the_settings_changes_nothing_and_audits_nothing(app, svc, tenant):
    with svc.db.session() as session:
        events_before = len(session.scalars(select(AuditEvent)).all())

    result = settings_cli(app, tenant)

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["redact_sensitive"] is True
    with svc.db.session() as session:
        assert len(session.scalars(select(AuditEvent)).all()) == events_before


def test_the_register_names_the_dpo_the_office_set(svc, tenant):
    update_settings(
        svc, tenant.id, {"dpo_contact": "Avv. Anna Neri, dpo@studiorossi.it"}, actor="t"
    )

    register = processing_register(svc, stored(svc, tenant), utcnow())

    assert register["controller"]["dpo"] == "Avv. Anna Neri, dpo@studiorossi.it"


def test_parse_refuses_an_empty_text():
    with pytest.raises(InvalidSetting):
        parse_assignment("dpo_contact=   ")
