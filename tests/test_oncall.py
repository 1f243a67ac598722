"""The on-call rota (``portineria oncall``) and the emergency settings of an office."""

from __future__ import annotations

import json

import pytest
from helpers import OFFICE_NUMBER, make_tenant
from sqlalchemy import select

from bot.office.oncall import add_oncall, list_oncall, masked
from bot.office.settings import emergency_settings, parse_assignment, update_settings
from storage.models import AuditEvent, Tenant

MARIO, LUCIA, PIERO = "+393331112222", "+393334445555", "+393337778888"


def oncall(app, *args: str):
    return app.test_cli_runner().invoke(args=["oncall", *args])


def audits(svc, prefix: str) -> list[AuditEvent]:
    with svc.db.read() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        return [row for row in rows if row.action.startswith(prefix)]


def test_people_are_listed_in_the_order_they_were_added(app, svc, tenant):
    for name, phone in (
        ("Mario Rossi", MARIO),
        ("Lucia Bianchi", "333 444 5555"),
        ("Piero", PIERO),
    ):
        result = oncall(app, "add", "--tenant", tenant.slug, "--name", name, "--phone", phone)
        assert result.exit_code == 0, result.output

    listed = oncall(app, "list", "--tenant", tenant.slug)

    assert listed.output.splitlines() == [
        f"1. Mario Rossi {MARIO}",
        f"2. Lucia Bianchi {LUCIA}",
        f"3. Piero {PIERO}",
    ]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_removing_someone_keeps_the_order_of_the_others(app, svc, tenant):
    for name, phone in (("Mario", MARIO), ("Lucia", LUCIA), ("Piero", PIERO)):
        add_oncall(svc, tenant.id, name, phone, actor="test")

    result = oncall(app, "remove", "--tenant", tenant.slug, "--phone", LUCIA)
    add_oncall(svc, tenant.id, "Anna", "+393339990000", actor="test")

    assert result.exit_code == 0, result.output
    assert [p.name for p in list_oncall(svc, tenant.id)] == ["Mario", "Piero", "Anna"]


def test_an_empty_rota_says_so(app, tenant):
    assert oncall(app, "list", "--tenant", tenant.slug).output.strip() == "nobody is on call"


@pytest.mark.parametrize(
    ("phone", "complaint"), [("12", "phone number"), ("+39 333 111", "phone number")]
)
def test_a_number_that_cannot_be_called_is_refused(app, svc, tenant, phone, complaint):
    result = oncall(app, "add", "--tenant", tenant.slug, "--name", "Mario", "--phone", phone)

    assert result.exit_code != 0
    assert complaint in result.output
    assert list_oncall(svc, tenant.id) == []


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_the_same_number_twice_is_refused(app, svc, tenant):
    add_oncall(svc, tenant.id, "Mario", MARIO, actor="test")

    result = oncall(app, "add", "--tenant", tenant.slug, "--name", "Mario bis", "--phone", MARIO)

    assert result.exit_code != 0
    assert "already on call" in result.output
    assert len(list_oncall(svc, tenant.id)) == 1


def test_removing_a_number_not_on_call_is_an_error(app, tenant):
    result = oncall(app, "remove", "--tenant", tenant.slug, "--phone", MARIO)

    assert result.exit_code != 0
    assert "not on call" in result.output


def test_the_rota_is_per_office(svc, tenant):
    other = make_tenant(svc, slug="studio-bianchi", number="+390698765432")
    add_oncall(svc, other.id, "Bea", MARIO, actor="test")

    assert list_oncall(svc, tenant.id) == []
    add_oncall(svc, tenant.id, "Mario", MARIO, actor="test")  # the same person, another office
    assert [p.name for p in list_oncall(svc, tenant.id)] == ["Mario"]


def test_every_change_is_audited_with_a_masked_number(app, svc, tenant):
    oncall(app, "add", "--tenant", tenant.slug, "--name", "Mario", "--phone", MARIO)
    oncall(app, "remove", "--tenant", tenant.slug, "--phone", MARIO)

    added, removed = audits(svc, "oncall.")
    assert (added.action, removed.action) == ("oncall.add", "oncall.remove")
    assert added.actor == "cli"
    assert added.detail == {"name": "Mario", "phone": masked(MARIO), "position": 1}
    assert MARIO not in json.dumps(added.detail) + json.dumps(removed.detail)
    assert masked(MARIO) == "+39333•••2222"


# -- emergency settings ---------------------------------------------------------------------


def stored(svc, tenant) -> Tenant:
    with svc.db.read() as session:
        return session.get(Tenant, tenant.id)


def test_emergency_settings_default_to_five_minutes_two_rounds_from_the_office_number(svc, tenant):
    assert emergency_settings(stored(svc, tenant)) == {
        "ack_seconds": 300,
        "call_from": OFFICE_NUMBER,
        "rounds": 2,
    }


def test_emergency_settings_are_set_from_the_cli_and_audited(app, svc, tenant):
    result = app.test_cli_runner().invoke(
        args=[
            "tenant", "settings", "--tenant", tenant.slug,
            "--set", "emergency.ack_seconds=60",
            "--set", "emergency.call_from=02 1234 5679",
            "--set", "emergency.rounds=3",
        ]
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["emergency"] == {
        "ack_seconds": 60,
        "call_from": "+390212345679",
        "rounds": 3,
    }
    office = stored(svc, tenant)
    assert office.settings["emergency"] == {
        "ack_seconds": 60,
        "call_from": "+390212345679",
        "rounds": 3,
    }
    (event,) = audits(svc, "tenant.settings")
    assert event.detail["emergency.rounds"] == 3


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_changing_one_emergency_setting_keeps_the_others(svc, tenant):
    update_settings(svc, tenant.id, {"emergency.rounds": 4}, actor="test")
    update_settings(svc, tenant.id, {"emergency.ack_seconds": 30}, actor="test")

    assert stored(svc, tenant).settings["emergency"] == {"rounds": 4, "ack_seconds": 30}


@pytest.mark.parametrize(
    ("assignment", "complaint"),
    [
        ("emergency.ack_seconds=5", "from 10 to 86400"),
        ("emergency.ack_seconds=cinque", "whole number"),
        ("emergency.rounds=0", "from 1 to 10"),
        ("emergency.call_from=12", "phone number"),
        ("emergency.sirens=1", "unknown setting"),
    ],
)
def test_an_impossible_emergency_setting_is_refused(assignment, complaint):
    from bot.exceptions import InvalidSetting

    with pytest.raises(InvalidSetting, match=complaint):
        parse_assignment(assignment)
