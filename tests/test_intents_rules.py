"""Normaliser, entity rules and the emergency safety net, without the trained model.

A blank Italian pipeline with the three rule components is built once per module:
these tests do not need (or load) the trained classifier.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import intents.safety as safety
from intents.normalize import (
    EXTRA_TYPOS,
    TYPO_LEXICON,
    TYPOS,
    normalize_text,
    normalize_token,
    typo_variants,
)
from intents.prediction import (
    EMERGENCY,
    INTENTS,
    RULE_CONFIDENCE,
    SAFETY_SPAN_KEY,
    decide,
    prediction_from_doc,
)
from intents.safety import HAZARDS, hazard_cue
from intents.training import CORPUS_DIR


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


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("alagato", "allagato"),
        ("Allagatto", "allagato"),
        ("ascenzore", "ascensore"),
        ("asensore", "ascensore"),
        ("incedio", "incendio"),
        ("scopiato", "scoppiato"),
        ("sofito", "soffitto"),
        ("crolata", "crollata"),
        ("monoxido", "monossido"),
        ("nun", "non"),
    ],
)
def test_normalizer_undoes_typos_of_danger_words(typed: str, meant: str) -> None:
    assert normalize_token(typed) == meant


@pytest.mark.parametrize("word", ["allegato", "allargata", "bruciano", "fummo", "casata", "pizza"])
def test_normalizer_leaves_real_words_near_danger_words_alone(word: str) -> None:
    assert normalize_token(word) == word


# The corpus's own deliberate misspellings, written as residents type them.
CORPUS_TYPOS = {"alagamento", "ascenzore", "crolato", "incendo", "sofito", "fumm"}


def test_no_typo_variant_is_a_real_word_of_the_corpus() -> None:
    words: set[str] = set()
    for file in CORPUS_DIR.glob("*.jsonl"):
        for line in file.read_text(encoding="utf-8").splitlines():
            words.update(re.findall(r"[^\W\d_]+", json.loads(line)["text"].lower()))
    assert sorted((words & set(TYPOS)) - CORPUS_TYPOS) == []


def test_every_typo_variant_comes_from_the_lexicon() -> None:
    generated = {variant for word in TYPO_LEXICON for variant in typo_variants(word)}
    assert set(TYPOS) - generated <= set(EXTRA_TYPOS)


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


# Wordings without the obvious keywords, in regional Italian, with typos: each
# family of danger is raised and named.
@pytest.mark.parametrize(
    ("text", "hazard"),
    [
        ("odore di gas fortissimo nel sottoscala", "gas_smell"),
        ("se sente puzza de metano vicino ar contatore", "gas_smell"),
        ("il tubo del gas in cantina fischia", "gas_smell"),
        ("c'è un odore di uova marce in androne", "gas_smell"),
        ("l'allarme del monossido in camera suona da dieci minuti", "carbon_monoxide"),
        ("con la stufetta accesa ci è venuto mal di testa a tutti", "carbon_monoxide"),
        ("la caldaia è accesa e mia figlia ha la nausea", "carbon_monoxide"),
        ("incedio in soffitta!!", "fire"),
        ("ha preso foco il cassonetto", "fire"),
        ("sta bruciando la tettoia del cortile", "fire"),
        ("si è incendiata la cappa del ristorante", "fire"),
        ("la presa del corridoio sfrigola e puzza di bruciato", "electrical"),
        ("dal contatore escono faville", "electrical"),
        ("il quadro elettrico fa scintille", "electrical"),
        ("cortocircuito in cantina, esce fumo dalla scatola", "electrical"),
        ("una nebbia grigia e acre riempie il pianerottolo", "smoke"),
        ("c'è fumo nero che esce dalle cantine", "smoke"),
        ("puzza di plastica bruciata in tutto il palazzo", "smoke"),
        ("il motore dell'autoclave fuma", "smoke"),
        ("il seminterrato è alagato", "flooding"),
        ("sembra un fiume in cantina", "flooding"),
        ("l'acqua esce a fiotti dal muro del bagno", "flooding"),
        ("tubo scopiato sotto il lavello", "flooding"),
        ("scende una cascata dal soffitto", "flooding"),
        ("il box è un lago", "flooding"),
        ("cadono calcinacci dal balcone del quarto piano", "structural"),
        ("la crepa sul muro del garage si allarga", "structural"),
        ("è venuto giù un pezzo di cornicione", "structural"),
        ("il solaio scricchiola e la trave è spezzata", "structural"),
        ("sono bloccato in ascenzore tra due piani", "person_trapped"),
        ("mio figlio è rimasto chiuso dentro la cantina e non riesce a uscire", "person_trapped"),
        ("c'è un signore incastrato nel cancello", "person_trapped"),
        ("la cabina è ferma con dentro una signora", "person_trapped"),
        ("la signora del terzo piano non risponde da due giorni", "person_unresponsive"),
        ("la vicina anziana non apre e si sente la tv", "person_unresponsive"),
        ("sento lamenti dall'appartamento accanto", "person_unresponsive"),
        ("un uomo è svenuto nell'androne", "person_unresponsive"),
        ("ci sono i ladri in cantina", "break_in"),
        ("hanno spaccato il portone e c'è gente dentro", "break_in"),
        ("qualcuno è entrato nel mio box", "break_in"),
        ("la porta è stata forzata e sento rumori dentro", "break_in"),
        # Evacuating, or a word that merely starts like "asciugato", is no report.
        ("puzza di gas in scala, ho fatto uscire i bambini", "gas_smell"),
        ("fumo nero dalla lavanderia, forse l'asciugatrice", "smoke"),
        ("URGENTE gas scala B", "gas_smell"),
        ("acqua dal soffitto sulle prese, aiuto", "flooding"),
        ("la porta si è chiusa con dentro mio figlio", "person_trapped"),
    ],
)
def test_each_hazard_is_raised_and_named(rules_nlp, text: str, hazard: str) -> None:
    assert fired(rules_nlp, text)[:1] == [hazard]


# Near misses: the danger words are there, the danger is not.
@pytest.mark.parametrize(
    "text",
    [
        "piccola perdita sotto il lavandino",
        "ascensore fermo da ieri, dentro non c'è nessuno",
        "fumo di sigaretta in scala",
        "la luce delle scale non va",
        "infiltrazione dal tetto quando piove",
        "la bolletta del gas è troppo alta",
        "il rilevatore di monossido ha la batteria scarica",
        "preventivo per rifare il cornicione che è caduto",
        "la signora del primo non risponde alle mie email da giorni",
        "mia suocera è rimasta chiusa fuori",
        "il gatto è rimasto chiuso in cantina e non riesce a uscire",
        "un fiume di messaggi nel gruppo del condominio",
        "abbiamo sostituito la presa che faceva scintille",
        "fattura per il tubo scoppiato a marzo",
        "i vicini fanno il barbecue e arriva fumo",
        "ieri sera sono venuti i pompieri per un controllo",
        "la mia bici è rimasta chiusa nel locale bici, chi ha la chiave?",
        "il corrimano si è staccato dal muro",
        "si stacca un po' di pittura dal soffitto",
        "grazie per l'intervento di stanotte sull'allagamento",
        "il tecnico ha tirato fuori la signora dall'ascensore",
        "c'è odore di fogna in cortile",
        "la porta della cantina è rotta e non chiude",
        "un filo d'acqua scende lungo il muro del box",
        "infiltrazione d'acqua dal soffitto della mansarda",
        "quanto costa sistemare il muro che si sgretola?",
        "c'è il fuoco nel camino del vicino e fa caldo",
    ],
)
def test_near_misses_raise_no_hazard(rules_nlp, text: str) -> None:
    assert fired(rules_nlp, text) == []


def test_hazard_names_are_the_documented_ones() -> None:
    assert {rule.hazard for rule in safety.RULES} == set(HAZARDS)
    assert set(safety.CUES) == set(HAZARDS)
    for hazard in HAZARDS:
        assert f"`{hazard}`" in (safety.__doc__ or "")


@pytest.mark.parametrize(
    ("text", "hazard"),
    [
        ("la caldaia fa un rumore strano, veniteee", "carbon_monoxide"),
        ("ascensore!!! aiuto", "person_trapped"),
        ("acqua acqua acqua", "flooding"),
        ("ci sono ladri?", "break_in"),
        ("venite subito per favore", None),
    ],
)
def test_hazard_cue_names_the_danger_from_a_single_word(rules_nlp, text: str, hazard) -> None:
    assert hazard_cue(rules_nlp(text)) == hazard


def test_classifier_emergency_is_named_from_a_cue_without_raising(rules_nlp) -> None:
    doc = rules_nlp("la caldaia fa un rumore strano, veniteee")
    doc.cats = {intent: 0.02 for intent in INTENTS} | {EMERGENCY: 0.8}
    prediction = prediction_from_doc(doc, "")
    assert (prediction.intent, prediction.confidence) == (EMERGENCY, pytest.approx(0.8))
    assert (prediction.safety_rule, prediction.rule_fired) == ("carbon_monoxide", False)


def test_no_hazard_is_named_when_the_classifier_sees_no_emergency(rules_nlp) -> None:
    doc = rules_nlp("la caldaia fa un rumore strano")
    doc.cats = {intent: 0.02 for intent in INTENTS} | {"guasto": 0.8}
    prediction = prediction_from_doc(doc, "")
    assert (prediction.intent, prediction.safety_rule, prediction.rule_fired) == (
        "guasto",
        None,
        False,
    )


def test_rule_raises_the_classifier_choice_and_says_so(rules_nlp) -> None:
    doc = rules_nlp("sembra un fiume in cantina")
    doc.cats = {intent: 0.02 for intent in INTENTS} | {"guasto": 0.8}
    prediction = prediction_from_doc(doc, "")
    assert (prediction.intent, prediction.confidence) == (EMERGENCY, RULE_CONFIDENCE)
    assert (prediction.safety_rule, prediction.rule_fired) == ("flooding", True)
    assert prediction.classifier_intent == "guasto"


scores_strategy = st.dictionaries(
    st.sampled_from(INTENTS),
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    min_size=1,
)


@given(scores=scores_strategy, rule=st.sampled_from([None, *HAZARDS]))
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
    "riparato fattura n. 45 euro 300 € il la e sembra un fiume cascata monossido caldaia "
    "mal testa signora risponde da giorni tv accesa crepa si allarga tubo scoppiato"
).split()


# No deadline: the reference (ungated) Matcher tries every safety pattern, which
# on a busy machine can outlast Hypothesis's default 200 ms for one example.
@settings(deadline=None)
@given(words=st.lists(st.sampled_from(GATE_WORDS), min_size=1, max_size=14))
def test_matcher_gate_never_hides_a_match(rules_nlp, words: list[str]) -> None:
    doc = rules_nlp.get_pipe("normalizer")(rules_nlp.make_doc(" ".join(words)))
    safety_net = rules_nlp.get_pipe("safety")
    for gated in (
        rules_nlp.get_pipe("entities").matcher,
        safety_net.matcher,
        safety_net.conditions,
        safety_net.quiet,
    ):
        assert sorted(gated.matches(doc)) == sorted(set(gated.matcher(doc)))
