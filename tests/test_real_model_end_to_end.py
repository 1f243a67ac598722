"""A handful of conversations end to end on the trained pipeline shipped in intents/model/.

Everything else about the engine runs on the tests' rule reader; these say that the
model and the engine fit together: what the model reads is what the engine acts on.
"""

from __future__ import annotations

import pytest
from helpers import drain, send_inbound
from sqlalchemy import select

from bot.services import Services
from storage.models import BotLogEntry, Conversation, Ticket

pytestmark = [pytest.mark.real_model, pytest.mark.usefixtures("tenant")]


@pytest.fixture
def consented(client, svc, twilio):
    for text in ("buongiorno", "accetto"):
        send_inbound(client, text)
        drain(svc)
    twilio.reset()
    return client


def say(client, svc: Services, text: str) -> None:
    send_inbound(client, text)
    drain(svc)


def test_a_fault_read_by_the_model_opens_a_ticket(consented, svc, twilio):
    say(consented, svc, "Buongiorno, la luce delle scale della palazzina B non si accende da ieri")

    with svc.db.session() as session:
        tickets = list(session.scalars(select(Ticket)))
        entry = session.scalars(select(BotLogEntry).order_by(BotLogEntry.id.desc())).first()
    assert [(t.kind, t.intent) for t in tickets] == [("guasto", "guasto")]
    assert entry.model_version and entry.model_version != "rules-for-tests"


def test_gas_read_by_the_model_is_an_urgent_handoff_with_safety_advice(consented, svc, twilio):
    say(consented, svc, "c'è una forte puzza di gas in cantina, venite subito")

    with svc.db.session() as session:
        thread = session.scalar(select(Conversation))
    assert (thread.priority, thread.mode) == ("urgent", "human")
    assert "112" in twilio.messages[-1]["Body"] or "115" in twilio.messages[-1]["Body"]


def test_an_appointment_read_by_the_model_is_acknowledged(consented, svc, twilio):
    say(consented, svc, "Possiamo fissare il sopralluogo per martedì 12 alle 15:30?")

    with svc.db.session() as session:
        entry = session.scalars(select(BotLogEntry).order_by(BotLogEntry.id.desc())).first()
    assert entry.intent == "appuntamento" and entry.action == "event"
