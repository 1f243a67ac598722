"""Retention: the scheduled purge deletes rows and files, per office terms, and says so."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from helpers import drain, send_inbound
from sqlalchemy import func, select, update

from bot.privacy.retention import purge, purge_if_due
from storage.models import AuditEvent, ConsentEvent, Contact, MediaItem, Message, utcnow

pytestmark = pytest.mark.usefixtures("tenant")


def count(svc, model) -> int:
    with svc.db.session() as session:
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
