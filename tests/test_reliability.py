"""What survives what: a message whose office was terminated after it was stored."""

from __future__ import annotations

import pytest
from helpers import (
    drain,
    send_inbound,
)
from sqlalchemy import func, select

from bot.office.lifecycle import terminate_tenant
from storage.models import ConsentEvent, Contact, Conversation, Message, utcnow

pytestmark = pytest.mark.usefixtures("tenant")

RESIDENTS = ("+393331000001", "+393331000002", "+393331000003")


def inbound(svc) -> list[Message]:
    with svc.db.read() as session:
        return list(
            session.scalars(select(Message).where(Message.direction == "in").order_by(Message.id))
        )


def outbound(svc) -> list[Message]:
    with svc.db.read() as session:
        return list(
            session.scalars(select(Message).where(Message.direction == "out").order_by(Message.id))
        )


def all_processed(svc, count: int) -> bool:
    messages = inbound(svc)
    return len(messages) == count and all(m.processed_at is not None for m in messages)


# -- an office terminated after the webhook stored its message ---------------------------


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_message_of_an_office_terminated_after_storing_creates_nothing(
    client, svc, tenant, twilio
):
    send_inbound(client, "Buongiorno, il cancello non si apre")
    terminate_tenant(svc, tenant.id, utcnow(), actor="test")

    drain(svc)

    [message] = inbound(svc)
    assert message.processed_at is not None
    assert message.payload is None
    assert (message.contact_id, message.conversation_id, message.body) == (None, None, None)
    with svc.db.read() as session:
        for model in (Contact, Conversation, ConsentEvent):
            assert session.scalar(select(func.count()).select_from(model)) == 0
    assert outbound(svc) == []
    assert twilio.create_attempts == 0
