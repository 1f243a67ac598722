"""The outbound gate's rule, as a plain function."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.outbound.gate import evaluate
from storage.models import utcnow

NOW = utcnow()
RECENT = NOW - timedelta(hours=1)
OLD = NOW - timedelta(hours=25)


def decide(consent="granted", basis="consent", last=RECENT, purpose="reply", template=False):
    return evaluate(
        consent=consent,
        legal_basis=basis,
        last_inbound_at=last,
        purpose=purpose,
        is_template=template,
        now=NOW,
    )


def test_granted_contact_within_the_window_may_be_answered():
    assert decide().allowed


def test_withdrawn_contact_is_refused():
    assert decide(consent="withdrawn").reason == "opted_out"


def test_withdrawn_contact_gets_the_confirmation_of_the_withdrawal():
    assert decide(consent="withdrawn", purpose="withdrawal_confirmation").allowed


def test_withdrawn_contact_is_refused_even_a_template():
    assert decide(consent="withdrawn", template=True).reason == "opted_out"


@pytest.mark.parametrize("purpose", ["reply", "operator", "api"])
def test_contact_who_never_accepted_is_refused(purpose):
    assert decide(consent="pending", basis=None, purpose=purpose).reason == "no_consent"


@pytest.mark.parametrize("purpose", ["welcome", "notice"])
def test_welcome_and_notice_answer_a_contact_who_has_not_accepted_yet(purpose):
    assert decide(consent="none", basis=None, purpose=purpose).allowed


@pytest.mark.parametrize("basis", ["contract", "legitimate_interest", "legal_obligation"])
def test_another_legal_basis_allows_service_messages(basis):
    assert decide(consent="none", basis=basis).allowed


def test_free_text_outside_the_24_hour_window_is_refused():
    decision = decide(last=OLD)
    assert decision.reason == "outside_window"
    assert "24 ore" in decision.explanation


def test_template_outside_the_window_may_go():
    assert decide(last=OLD, template=True).allowed


def test_contact_who_never_wrote_has_no_window():
    assert decide(last=None).reason == "outside_window"


def test_the_window_edge_is_24_hours():
    assert decide(last=NOW - timedelta(hours=23, minutes=59)).allowed
    assert not decide(last=NOW - timedelta(hours=24, seconds=1)).allowed


@pytest.mark.parametrize("purpose", ["safety", "rights"])
def test_safety_advice_and_rights_answers_reach_a_contact_without_consent(purpose):
    assert decide(consent="pending", basis=None, purpose=purpose).allowed


def test_withdrawn_contact_gets_the_answer_to_their_own_rights_request():
    assert decide(consent="withdrawn", purpose="rights").allowed
