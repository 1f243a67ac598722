"""A reader of messages for engine tests: a few plain rules instead of the trained model.

The engine's behaviour ("a fault opens a ticket", "gas is an urgent handoff") is
tested with this reader passed in as ``Services.understand``, so a retrained model
cannot break those tests; the model itself is measured by the intents tests and a
handful of end-to-end tests marked ``real_model``.
"""

from __future__ import annotations

import re

from bot.conversation.understanding import Reading
from intents.prediction import Entity

MODEL_VERSION = "rules-for-tests"

# (intent, safety rule, pattern), first match wins; patterns over lower-cased text.
RULES: tuple[tuple[str, str | None, str], ...] = (
    ("emergenza", "gas_smell", r"\bgas\b"),
    ("emergenza", "flooding", r"allagat|a fiotti|cascata"),
    ("emergenza", "fire", r"\bincendio|\bfiamme"),
    ("emergenza", "smoke", r"\bfumo\b"),
    ("emergenza", "person_trapped", r"bloccat\w* in ascensore|chius\w* dentro"),
    ("emergenza", "carbon_monoxide", r"monossido|caldaia .*mal di testa"),
    ("emergenza", "break_in", r"\bladri?\b|scassinat|forzat\w* la porta"),
    ("emergenza", "electrical", r"scintille|quadro elettrico .*bruciat|cavi scoperti"),
    ("emergenza", "structural", r"calcinacci|crollat|cornicione"),
    ("emergenza", "person_unresponsive", r"non risponde|svenut"),
    # An emergency the model saw without a safety rule firing: the generic advice.
    ("emergenza", None, r"\bsos\b|pericolo"),
    ("intervento_completato", None, r"intervento completato|ho finito|abbiamo terminato"),
    ("richiesta_operatore", None, r"parlare con|una persona"),
    ("appuntamento", None, r"sopralluogo|appuntamento|fissare"),
    ("fattura_pagamento", None, r"fattura|pagamento|\biban\b|rimborso"),
    ("preventivo", None, r"preventivo"),
    ("documenti", None, r"regolamento|documento|verbale"),
    ("assemblea", None, r"assemblea"),
    ("guasto", None, r"non (si )?(apre|chiude|funziona|va|accende|suona)|rott|guast|perdita"),
    ("saluto_ringraziamento", None, r"^\W*(buongiorno|buonasera|ciao|salve|grazie)\b"),
)


# Streets, as the model's ADDRESS entities: "via Roma 12", "piazza Duomo".
ADDRESS = re.compile(r"\b(?:via|viale|piazza|corso|largo) [A-Z][\w']*(?: [A-Z][\w']*)*(?: \d+)?")


class KeywordReader:
    """First matching rule decides; anything else is ``altro`` with low confidence."""

    def __init__(self) -> None:
        self.read: list[str] = []

    def __call__(self, text: str) -> Reading:
        self.read.append(text)
        lowered = text.lower()
        entities = tuple(
            Entity("ADDRESS", found.group(0), found.start(), found.end())
            for found in ADDRESS.finditer(text)
        )
        for intent, safety_rule, pattern in RULES:
            if re.search(pattern, lowered):
                return Reading(intent, 0.95, safety_rule, entities, model_version=MODEL_VERSION)
        return Reading("altro", 0.3, entities=entities, model_version=MODEL_VERSION)
