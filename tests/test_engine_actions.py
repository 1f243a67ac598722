"""Actions per intent through the real webhook, worker and fake Twilio.

The engine reads messages with the tests' rule reader (``tests/readers.py``); the
trained model's part is in ``test_real_model_end_to_end.py`` and the intents tests.
"""

from __future__ import annotations

import pytest
from helpers import drain, send_inbound
from sqlalchemy import select

from bot.office.tokens import create_token
from bot.services import Services
from storage.models import BotLogEntry, Conversation, Event, Ticket

pytestmark = pytest.mark.usefixtures("tenant")


@pytest.fixture
def consented(client, svc, twilio):
    send_inbound(client, "buongiorno")
    drain(svc)
    send_inbound(client, "accetto")
    drain(svc)
    twilio.reset()
    return client


def say(client, svc: Services, text: str) -> None:
    send_inbound(client, text)
    drain(svc)


def tickets(svc: Services) -> list[Ticket]:
    with svc.db.session() as session:
        return list(session.scalars(select(Ticket).order_by(Ticket.id)))


def conversation(svc: Services) -> Conversation:
    with svc.db.session() as session:
        return session.scalar(select(Conversation))


def test_fault_opens_a_ticket_and_acknowledges(consented, svc, twilio):
    say(consented, svc, "Buongiorno, la luce delle scale della palazzina B non si accende da ieri")

    assert [(t.kind, t.status) for t in tickets(svc)] == [("guasto", "open")]
    assert "segnalazione" in twilio.messages[-1]["Body"]


def test_gas_smell_is_an_urgent_handoff_with_safety_advice(consented, svc, twilio):
    say(consented, svc, "c'è una forte puzza di gas in cantina, venite subito")

    thread = conversation(svc)
    assert (thread.priority, thread.needs_attention, thread.mode) == ("urgent", True, "human")
    assert "112" in twilio.messages[-1]["Body"] or "115" in twilio.messages[-1]["Body"]
    with svc.db.session() as session:
        entry = session.scalars(select(BotLogEntry).order_by(BotLogEntry.id.desc())).first()
    assert entry.intent == "emergenza"
    assert entry.safety_rule == "gas_smell"
    assert entry.model_version


def test_work_done_closes_the_open_ticket(consented, svc):
    say(consented, svc, "Il citofono della scala A è rotto, non suona più")
    say(
        consented,
        svc,
        "Intervento completato: ho sostituito la pulsantiera del citofono, ora funziona",
    )

    assert [t.status for t in tickets(svc)][0] == "done"


def test_appointment_records_an_event(consented, svc):
    say(consented, svc, "Possiamo fissare il sopralluogo per martedì 12 alle 15:30?")

    with svc.db.session() as session:
        assert session.scalar(select(Event)) is not None


def test_operator_request_hands_the_conversation_over(consented, svc, twilio):
    say(consented, svc, "Vorrei parlare con una persona dell'ufficio, non con un bot")

    thread = conversation(svc)
    assert thread.needs_attention and thread.mode == "human"
    assert "operatore" in twilio.messages[-1]["Body"]


def test_human_mode_keeps_the_bot_silent(consented, svc, twilio):
    say(consented, svc, "OPERATORE")
    sent = len(twilio.messages)

    say(consented, svc, "il cancello non si chiude")

    assert len(twilio.messages) == sent


def test_sensitive_data_is_redacted_and_answered_with_the_proper_channel(consented, svc, twilio):
    say(consented, svc, "Vi mando il mio IBAN IT60 X054 2811 1010 0000 0123 456 per il rimborso")

    from storage.models import Message

    with svc.db.session() as session:
        message = session.scalars(
            select(Message).where(Message.direction == "in").order_by(Message.id.desc())
        ).first()
        stored = svc.cipher.decrypt(message.body)
    assert "IT60" not in stored
    assert message.sensitive_kinds == ["iban"] and message.redacted
    assert any("IBAN" in m["Body"] for m in twilio.messages)


def test_an_acceptance_carrying_sensitive_data_is_stored_without_any_of_it(client, svc, twilio):
    send_inbound(client, "buongiorno")
    drain(svc)
    say(
        client,
        svc,
        "Sì, accetto. Il mio codice fiscale è RSSMRA80A01H501U, "
        "IBAN IT60 X054 2811 1010 0000 0123 456 e ho il diabete",
    )

    from storage.models import Message

    with svc.db.session() as session:
        message = session.scalars(
            select(Message).where(Message.direction == "in").order_by(Message.id.desc())
        ).first()
        stored = svc.cipher.decrypt(message.body)
    for fragment in ("RSSMRA", "80A01", "H501U", "IT60", "0123", "diabete"):
        assert fragment not in stored, stored
    assert set(message.sensitive_kinds) >= {"codice_fiscale", "iban", "health"}


def test_engine_behaviour_is_read_by_the_test_reader_not_the_trained_model(consented, svc):
    say(consented, svc, "Il cancello non si apre")

    with svc.db.session() as session:
        entry = session.scalars(select(BotLogEntry).order_by(BotLogEntry.id.desc())).first()
    assert entry.model_version == "rules-for-tests"
    assert "Il cancello non si apre" in svc.understand.read


def test_tickets_and_bot_logs_api(consented, svc, tenant):
    say(consented, svc, "Il portone d'ingresso non si chiude più bene, la serratura è rotta")
    with svc.db.session() as session:
        token = create_token(session, tenant, "crm")
    headers = {"Authorization": f"Bearer {token}"}

    listed = consented.get("/api/v1/tickets?since=2020-01-01T00:00:00Z", headers=headers).get_json()
    logs = consented.get("/api/v1/bot-logs?since=2020-01-01T00:00:00Z", headers=headers).get_json()

    assert listed["tickets"][0]["intent"] == "guasto"
    assert {"id", "kind", "intent", "status", "conversation_id", "entities", "created_at"} <= set(
        listed["tickets"][0]
    )
    assert all(e["model_version"] for e in logs["entries"] if e["intent"])
    assert consented.get("/api/v1/tickets?since=ieri", headers=headers).status_code == 400
