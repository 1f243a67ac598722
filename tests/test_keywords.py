"""Keyword recognition: examples in Italian and English, and properties (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.conversation.keywords import DEFAULT_PHRASES, KeywordBook, normalise

book = KeywordBook()


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("ACCETTO", "accept"),
        ("accetto.", "accept"),
        ("Accetto!!", "accept"),
        ("sì", "accept"),
        ("SI", "accept"),
        ("Sì, accetto", "accept"),
        ("acceto", "accept"),
        ("accettoo", "accept"),
        ("ok accetto 👍", "accept"),
        ("START", "accept"),
        ("I agree", "accept"),
        ("STOP", "withdraw"),
        ("stop.", "withdraw"),
        ("Basta", "withdraw"),
        ("REVOCA", "withdraw"),
        ("cancellami", "withdraw"),
        ("Disiscrivimi grazie", "withdraw"),
        ("unsubscribe", "withdraw"),
        ("stoooop", "withdraw"),
        ("🛑 STOP 🛑", "withdraw"),
        ("non scrivetemi più", "withdraw"),
        ("PRIVACY", "privacy"),
        ("informativa", "privacy"),
        ("Informatva", "privacy"),
        ("AIUTO", "help"),
        ("help", "help"),
        ("OPERATORE", "operator"),
        ("voglio un operatore", "operator"),
        ("operatore per favore", "operator"),
        ("I MIEI DATI", "access"),
        ("i miei dati?", "access"),
        ("CANCELLA I MIEI DATI", "erasure"),
        ("cancellate i miei dati per favore", "erasure"),
    ],
)
def test_keyword_is_recognised(text, kind):
    match = book.match(text)
    assert match is not None and match.kind == kind


@pytest.mark.parametrize(
    "text",
    [
        "stop alla perdita d'acqua?",
        "AIUTO c'è odore di gas",
        "basta con questi rumori di notte",
        "ok",
        "grazie",
        "👍",
        "il citofono non va",
        "info sulla riunione di giovedì",
        "pasta",
        "revocate la delibera sul cortile",
        "si è rotto il cancello",
        "start del cantiere lunedì?",
    ],
)
def test_keyword_does_not_fire_inside_ordinary_sentences(text):
    assert book.match(text) is None


def test_acceptance_with_a_message_needs_a_pending_request():
    assert book.match("sì ma il citofono non va") is None
    match = book.match("sì ma il citofono non va", awaiting_acceptance=True)
    assert match is not None
    assert (match.kind, match.rest) == ("accept", "ma il citofono non va")


def test_withdrawal_is_never_read_out_of_a_longer_message():
    assert book.match("stop alla perdita", awaiting_acceptance=True) is None


def test_tenant_additions_extend_the_defaults():
    custom = KeywordBook({"accept": ["va benissimo"], "withdraw": ["non disturbatemi"]})
    assert custom.match("Va benissimo!").kind == "accept"
    assert custom.match("non disturbatemi").kind == "withdraw"
    assert custom.match("STOP").kind == "withdraw"


def test_unknown_kind_in_tenant_additions_is_rejected():
    with pytest.raises(ValueError):
        KeywordBook({"dance": ["balla"]})


ALL_PHRASES = [(p, k) for k, phrases in DEFAULT_PHRASES.items() for p in phrases]
decoration = st.text(alphabet=" .,;:!?¡¿-_*\"'()[]👍🙏😊🛑\n\t", max_size=6)


@given(
    st.sampled_from(ALL_PHRASES),
    decoration,
    decoration,
    st.sampled_from(["lower", "upper", "title"]),
)
@settings(max_examples=300, deadline=None)
def test_any_keyword_survives_case_and_surrounding_punctuation(item, before, after, case):
    phrase, kind = item
    text = before + getattr(phrase, case)() + after
    assert book.match(text).kind == kind


@given(
    st.sampled_from(DEFAULT_PHRASES["withdraw"]),
    st.lists(
        st.sampled_from(
            [
                "la",
                "perdita",
                "cantina",
                "acqua",
                "scale",
                "luce",
                "vicino",
                "rumore",
                "cortile",
                "garage",
            ]
        ),
        min_size=2,
        max_size=6,
    ),
)
@settings(max_examples=200, deadline=None)
def test_withdraw_words_inside_a_sentence_never_withdraw(phrase, words):
    text = " ".join([phrase, *words])
    match = book.match(text, awaiting_acceptance=True)
    assert match is None or match.kind != "withdraw"


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_matching_never_raises(text):
    book.match(text, awaiting_acceptance=True)
    assert normalise(text) == normalise(normalise(text))
