"""Normaliser, entity rules and the emergency safety net, without the trained model.

A blank Italian pipeline with the three rule components is built once per module:
these tests do not need (or load) the trained classifier.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intents.normalize import normalize_text, normalize_token
from intents.prediction import EMERGENCY, INTENTS, RULE_CONFIDENCE, SAFETY_SPAN_KEY, decide


@pytest.fixture(scope="module")
def rules_nlp():
    import spacy

    import intents.components  # noqa: F401

    nlp = spacy.blank("it")
    nlp.add_pipe("portineria_normalizer", name="normalizer")
    nlp.add_pipe("portineria_entities", name="entities")
    nlp.add_pipe("portineria_safety", name="safety")
    return nlp


def fired(nlp, text: str) -> list[str]:
    doc = nlp(text)
    return [span.label_ for span in doc.spans[SAFETY_SPAN_KEY]]


def ents(nlp, text: str) -> list[tuple[str, str]]:
    return [(ent.label_, ent.text) for ent in nlp(text).ents]


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("Perché", "perche"),
        ("xké", "perche"),
        ("nn", "non"),
        ("x", "per"),
        ("CMQ", "comunque"),
        ("ciaooooo", "ciao"),
        ("città", "citta"),
        ("perche'", "perche"),
        ("👍🏻", "👍"),
        ("l'", "l'"),
    ],
)
def test_normalizer_maps_chat_forms(raw: str, norm: str) -> None:
    assert normalize_token(raw) == norm


def test_normalize_text_works_word_by_word() -> None:
    assert normalize_text("XKÉ nn funziona") == "perche non funziona"


def test_normalizer_component_sets_norm(rules_nlp) -> None:
    doc = rules_nlp("Xké NN funziona l'ascensore?")
    assert [t.norm_ for t in doc][:2] == ["perche", "non"]
    assert doc[0].text == "Xké"


# --- entities ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "fattura n. 2024/123 del 12/03/2025",
            [("INVOICE_NO", "2024/123"), ("DATE", "12/03/2025")],
        ),
        ("pagata la FT-2024-0012?", [("INVOICE_NO", "FT-2024-0012")]),
        ("fatt. 45 di 1.250,00 € + IVA", [("INVOICE_NO", "45"), ("MONEY", "1.250,00 €")]),
        ("totale 650€ tutto compreso", [("MONEY", "650€")]),
        ("sono euro 300", [("MONEY", "euro 300")]),
        ("passo lunedì 12 marzo alle 10:30", [("DATE", "lunedì 12 marzo"), ("TIME", "10:30")]),
        ("ci vediamo domani alle 9", [("DATE", "domani"), ("TIME", "9")]),
        ("venerdì prossimo va bene?", [("DATE", "venerdì prossimo")]),
        ("abito in via dei Mille 5", [("ADDRESS", "via dei Mille 5")]),
        ("il portone di Viale Europa 3 non chiude", [("ADDRESS", "Viale Europa 3")]),
        ("scrivo da via roma 12", [("ADDRESS", "via roma 12")]),
        ("Condominio Le Betulle, scala B", [("CONDOMINIO", "Condominio Le Betulle")]),
    ],
)
def test_entities_are_found(rules_nlp, text: str, expected: list[tuple[str, str]]) -> None:
    assert ents(rules_nlp, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "vi mando tutto via mail",
        "vado via presto",
        "il condominio è sporco",
        "la fattura di marzo non è arrivata",
    ],
)
def test_entities_stay_quiet_without_a_real_entity(rules_nlp, text: str) -> None:
    labels = [label for label, _ in ents(rules_nlp, text)]
    assert "ADDRESS" not in labels and "CONDOMINIO" not in labels and "INVOICE_NO" not in labels


def test_entity_offsets_point_into_the_text(rules_nlp) -> None:
    text = "Bonifico di 120 euro per la fattura nr 77"
    for ent in rules_nlp(text).ents:
        assert text[ent.start_char : ent.end_char] == ent.text


# --- safety net -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("C'è una forte puzza di gas nelle scale, venite!", "gas_smell"),
        ("sento odore di gas in cantina", "gas_smell"),
        ("AIUTO c'è odore di gas", "gas_smell"),
        ("esce fumo nero dal vano contatori", "smoke"),
        ("c'è fumo in tutto il pianerottolo", "smoke"),
        ("sta andando a fuoco la cantina", "fire"),
        ("INCENDIO NEL GARAGE!!", "fire"),
        ("il garage è allagato", "flooding"),
        ("sta entrando acqua a fiotti dal soffitto del bagno", "flooding"),
        ("è scoppiato un tubo in cantina, acqua ovunque", "flooding"),
        ("piove in casa dal lampadario", "flooding"),
        ("mia madre è rimasta bloccata in ascensore tra due piani", "person_trapped"),
        ("siamo chiusi dentro l'ascensore aiuto", "person_trapped"),
        ("c'è una persona chiusa nell'ascensore, non riesce a uscire", "person_trapped"),
        ("stanno cadendo calcinacci dal cornicione sul marciapiede", "structural"),
        ("si è staccato un pezzo di intonaco dal soffitto delle scale", "structural"),
        ("la presa in cucina fa scintille", "electrical"),
        ("ci sono i ladri in cantina adesso!!", "break_in"),
        ("stanno forzando il portone, chiamate qualcuno", "break_in"),
        ("nn si respira x il gas che esce dal contatore", "gas_smell"),
        ("l'ascensore è bloccato con dentro mio figlio", "person_trapped"),
        ("mio padre è rimasto chiuso nell'ascensore", "person_trapped"),
        ("è venuto giù un pezzo di cornicione", "structural"),
        ("dal quadro elettrico escono scintille", "electrical"),
        ("esce acqua dal lampadario della cucina", "flooding"),
        ("la colonna di scarico è esplosa, liquame dappertutto", "flooding"),
        ("la mia vicina è bloccata in ascensore", "person_trapped"),
    ],
)
def test_safety_rule_fires_on_danger(rules_nlp, text: str, rule: str) -> None:
    assert rule in fired(rules_nlp, text)


@pytest.mark.parametrize(
    "text",
    [
        "c'è una macchia di umidità sul soffitto della camera",
        "il rubinetto del cortile gocciola un po'",
        "ascensore fermo al terzo piano, dentro non c'è nessuno",
        "l'ascensore è bloccato da stamattina",
        "quanto costa la bolletta del gas di marzo?",
        "il contatore del gas è da leggere domani",
        "ho installato il rilevatore di fumo",
        "i vicini fumano sul balcone e il fumo entra in casa mia",
        "non si sente più odore di gas, grazie",
        "rinnovo del certificato prevenzione incendi: vi mando la pratica",
        "quando piove entra acqua dalla finestra delle scale",
        "c'è una piccola crepa nel muro del soggiorno",
        "ieri mi hanno rubato la bici dal cortile",
        "la lampadina delle scale è bruciata",
        "perdita di gas riparata, impianto messo in sicurezza",
        "la grondaia è staccata e l'acqua cade sul balcone quando piove",
        "l'ascensore si è bloccato ma non c'era nessuno",
        "la porta dell'ascensore resta bloccata",
        "sono bloccato fuori dal portone, il badge non va",
        "il tecnico è venuto per il soffitto",
        "vorrei un preventivo per la ricerca perdite gas",
        "abbiamo eliminato la fuga di gas, impianto ok",
        "l'allarme antincendio suona ma non c'è fumo",
        "il termosifone perde acqua, c'è una pozza sotto",
        "nel condominio di via Roma l'ascensore è bloccato",
        "l'ascensore vicino al garage è bloccato",
    ],
)
def test_safety_rule_stays_quiet_on_border_cases(rules_nlp, text: str) -> None:
    assert fired(rules_nlp, text) == []


scores_strategy = st.dictionaries(
    st.sampled_from(INTENTS),
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    min_size=1,
)


@given(scores=scores_strategy, rule=st.sampled_from([None, "gas_smell", "fire"]))
def test_safety_net_never_lowers_urgency(scores: dict[str, float], rule: str | None) -> None:
    intent, confidence = decide(scores, rule)
    top = max(scores, key=scores.__getitem__)
    if top == EMERGENCY:
        assert intent == EMERGENCY
    if rule is None:
        assert (intent, confidence) == (top, scores[top])
    else:
        assert intent == EMERGENCY
        assert confidence in (RULE_CONFIDENCE, scores.get(EMERGENCY))


GATE_WORDS = (
    "c'è puzza odore di gas fumo nero dal quadro ascensore bloccata mia madre dentro nessuno "
    "acqua a fiotti soffitto allagato via Roma 12 viale Europa alle ore 10 10:30 lunedì 12 "
    "marzo domani pomeriggio non più Condominio Le Betulle calcinacci cadono intonaco ladri "
    "stanno forzando portone scintille incendio fuoco preso sono siamo chiusi quando piove "
    "riparato fattura n. 45 euro 300 € il la e"
).split()


@given(words=st.lists(st.sampled_from(GATE_WORDS), min_size=1, max_size=14))
def test_matcher_gate_never_hides_a_match(rules_nlp, words: list[str]) -> None:
    doc = rules_nlp.get_pipe("normalizer")(rules_nlp.make_doc(" ".join(words)))
    for name in ("entities", "safety"):
        gated = rules_nlp.get_pipe(name).matcher
        assert sorted(gated.matches(doc)) == sorted(gated.matcher(doc))
