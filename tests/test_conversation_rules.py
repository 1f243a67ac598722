"""The conversation's rules (bot.conversation.plan_turn): plain data in, plan out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.conversation.keywords import KeywordMatch
from bot.conversation.replies import TEXTS
from bot.conversation.rules import EMERGENCY_REPLY, Turn, Understanding, plan_turn

SERVED = Turn(
    consent="granted",
    legal_basis="consent",
    mode="bot",
    clarifications=0,
    keyword=None,
    opt_out_type=None,
)


def understood(intent: str, confidence: float = 0.9, rule: str | None = None) -> Turn:
    return replace(SERVED, understanding=Understanding(intent, confidence, rule))


@pytest.mark.parametrize(
    ("intent", "ticket"),
    [
        ("guasto", "guasto"),
        ("preventivo", "preventivo"),
        ("fattura_pagamento", "amministrazione"),
        ("documenti", "documenti"),
        ("assemblea", "assemblea"),
    ],
)
def test_ticket_intents_open_a_ticket_and_acknowledge(intent, ticket):
    plan = plan_turn(understood(intent))
    assert plan.ticket == ticket
    assert [r.key for r in plan.replies] == [f"ack_{intent}"]
    assert plan.handoff is None


def test_appointment_records_an_event():
    plan = plan_turn(understood("appuntamento"))
    assert plan.appointment and not plan.ticket


def test_work_done_closes_the_ticket():
    assert plan_turn(understood("intervento_completato")).work_done


def test_emergency_hands_off_urgently_with_the_safety_reply():
    plan = plan_turn(understood("emergenza", rule="gas_smell"))
    assert (plan.handoff, plan.urgent) == ("emergency", True)
    assert [r.key for r in plan.replies] == ["emergency_gas"]
    assert plan.replies[0].purpose == "safety"


def test_operator_request_hands_off():
    plan = plan_turn(understood("richiesta_operatore"))
    assert plan.handoff == "operator_request"


def test_operator_keyword_hands_off():
    plan = plan_turn(replace(SERVED, keyword=KeywordMatch("operator")))
    assert plan.handoff == "operator_request"


def test_low_confidence_asks_once_then_hands_off():
    first = plan_turn(understood("guasto", confidence=0.3))
    assert first.clarification and first.handoff is None
    second = plan_turn(replace(understood("altro"), clarifications=1))
    assert second.handoff == "not_understood"


def test_greeting_gets_a_short_answer():
    plan = plan_turn(understood("saluto_ringraziamento"))
    assert [r.key for r in plan.replies] == ["ack_saluto_ringraziamento"]
    assert not plan.ticket and not plan.handoff


def test_human_mode_silences_the_bot():
    plan = plan_turn(replace(understood("guasto"), mode="human"))
    assert plan.replies == [] and plan.ticket is None


def test_emergency_in_human_mode_alerts_but_says_nothing():
    plan = plan_turn(replace(understood("emergenza", rule="fire"), mode="human"))
    assert plan.replies == []
    assert plan.urgent and plan.handoff == "emergency"


def test_sensitive_data_gets_the_proper_channel_reminder_first():
    plan = plan_turn(replace(understood("documenti"), sensitive_kinds=("codice_fiscale",)))
    assert [r.key for r in plan.replies] == ["sensitive", "ack_documenti"]


def test_first_message_gets_the_welcome_and_a_notice_event():
    plan = plan_turn(
        replace(
            SERVED, consent="none", legal_basis=None, understanding=Understanding("guasto", 0.9)
        )
    )
    assert [r.key for r in plan.replies] == ["welcome"]
    assert plan.ledger == ["notice_sent"]
    assert plan.ticket is None


def test_emergency_before_consent_gets_safety_first_then_the_welcome_and_a_human():
    plan = plan_turn(
        replace(
            SERVED,
            consent="none",
            legal_basis=None,
            understanding=Understanding("emergenza", 0.95, "gas_smell"),
        )
    )
    assert [r.key for r in plan.replies] == ["emergency_gas", "welcome"]
    assert plan.ledger == ["vital_interests_reply", "notice_sent"]
    assert plan.urgent and plan.handoff == "emergency" and plan.ticket == "emergency"


def test_accept_before_any_notice_shows_the_notice_first():
    plan = plan_turn(
        replace(SERVED, consent="none", legal_basis=None, keyword=KeywordMatch("accept"))
    )
    assert plan.ledger == ["notice_sent"]


def test_accept_after_the_notice_grants():
    plan = plan_turn(
        replace(SERVED, consent="pending", legal_basis=None, keyword=KeywordMatch("accept"))
    )
    assert plan.ledger == ["granted"]
    assert plan.replies[0].purpose == "consent_confirmation"


def test_withdraw_confirms_once():
    first = plan_turn(replace(SERVED, keyword=KeywordMatch("withdraw")))
    again = plan_turn(replace(SERVED, consent="withdrawn", keyword=KeywordMatch("withdraw")))
    assert [r.purpose for r in first.replies] == ["withdrawal_confirmation"]
    assert again.replies == []


def test_withdrawn_contact_gets_no_answer():
    plan = plan_turn(replace(understood("guasto"), consent="withdrawn"))
    assert plan.replies == [] and plan.ticket is None


@pytest.mark.parametrize("kind", ["access", "erasure"])
def test_data_subject_requests_are_recorded_and_confirmed(kind):
    plan = plan_turn(replace(SERVED, keyword=KeywordMatch(kind)))
    assert plan.ledger == [f"{kind}_requested"]
    assert plan.replies[0].purpose == "rights"


def test_provider_opt_out_is_recorded_without_a_reply():
    plan = plan_turn(replace(SERVED, opt_out_type="STOP"))
    assert plan.ledger == ["withdrawn"] and plan.replies == []
    assert plan.ledger_channel == "twilio_advanced_opt_out"


# -- emergencies: hazard-specific advice, safety first, vital interests ---------------


@pytest.mark.parametrize(
    ("rule", "advice"),
    [
        ("gas_smell", "emergency_gas"),
        ("fire", "emergency_fire"),
        ("smoke", "emergency_fire"),
        ("flooding", "emergency_flood"),
        ("person_trapped", "emergency_trapped"),
        ("break_in", "emergency_break_in"),
        ("electrical", "emergency_electrical"),
        ("structural", "emergency_structural"),
        ("person_unresponsive", "emergency_unresponsive"),
        ("carbon_monoxide", "emergency_carbon_monoxide"),
        ("a_rule_added_later", "emergency"),
        (None, "emergency"),
    ],
)
def test_each_hazard_gets_its_own_safety_advice(rule, advice):
    plan = plan_turn(replace(SERVED, understanding=Understanding("emergenza", 1.0, rule)))
    assert [(r.key, r.purpose) for r in plan.replies] == [(advice, "safety")]
    assert (plan.ticket, plan.hazard) == ("emergency", rule)


@pytest.mark.parametrize("key", sorted(set(EMERGENCY_REPLY.values()) | {"emergency"}))
def test_every_safety_advice_names_the_emergency_number(key):
    assert "112" in TEXTS[key] or "115" in TEXTS[key]


def test_safety_advice_comes_before_the_sensitive_data_reminder():
    turn = replace(
        SERVED,
        understanding=Understanding("emergenza", 1.0, "flooding"),
        sensitive_kinds=("health",),
    )
    assert [r.key for r in plan_turn(turn).replies] == ["emergency_flood", "sensitive"]


def test_an_acceptance_carrying_an_emergency_gives_the_advice_first():
    turn = replace(
        SERVED,
        consent="pending",
        keyword=KeywordMatch("accept", rest="c'è odore di gas"),
        understanding=Understanding("emergenza", 1.0, "gas_smell"),
    )
    assert [r.key for r in plan_turn(turn).replies] == ["emergency_gas", "granted"]


def test_a_withdrawn_contacts_emergency_plans_one_safety_reply_on_vital_interests():
    turn = replace(
        SERVED, consent="withdrawn", understanding=Understanding("emergenza", 1.0, "fire")
    )
    plan = plan_turn(turn)
    assert [(r.key, r.purpose) for r in plan.replies] == [("emergency_fire", "safety")]
    assert plan.ledger == ["vital_interests_reply"] and plan.vital_interests
    assert (plan.handoff, plan.urgent, plan.ticket) == ("emergency", True, "emergency")


def test_a_withdrawn_contacts_ordinary_message_plans_nothing_to_send():
    plan = plan_turn(
        replace(SERVED, consent="withdrawn", understanding=Understanding("guasto", 0.9))
    )
    assert plan.replies == [] and plan.ticket is None


def test_a_pending_contacts_emergency_gets_the_advice_without_a_consent_reminder():
    plan = plan_turn(
        replace(
            SERVED,
            consent="pending",
            legal_basis=None,
            understanding=Understanding("emergenza", 1.0, "gas_smell"),
        )
    )
    assert [r.key for r in plan.replies] == ["emergency_gas"]
    assert plan.ledger == ["vital_interests_reply"]


def test_every_hazard_the_safety_net_names_has_its_own_advice_and_words():
    from bot.conversation.alerts import HAZARDS
    from intents.safety import HAZARDS as NAMED

    assert set(NAMED) <= set(EMERGENCY_REPLY) and set(NAMED) <= set(HAZARDS)
    assert all(EMERGENCY_REPLY[name] != "emergency" for name in NAMED)
