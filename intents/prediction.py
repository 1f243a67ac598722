"""The values `intents.classify` returns, and how they are read off a processed Doc.

No spaCy import here: the web process imports these types without loading spaCy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spacy.tokens import Doc

# The eleven intents, in the order of the design's table.
INTENTS: tuple[str, ...] = (
    "guasto",
    "emergenza",
    "intervento_completato",
    "preventivo",
    "fattura_pagamento",
    "appuntamento",
    "documenti",
    "assemblea",
    "richiesta_operatore",
    "saluto_ringraziamento",
    "altro",
)

EMERGENCY = "emergenza"

ENTITY_LABELS: tuple[str, ...] = ("DATE", "TIME", "MONEY", "ADDRESS", "CONDOMINIO", "INVOICE_NO")

# Where the safety component leaves the names of the rules that matched.
SAFETY_SPAN_KEY = "portineria_safety"

# Confidence reported when a safety rule, not the classifier, decided the intent:
# a rule is not a probability, and a low figure would make the engine ask a
# clarifying question during an emergency. The classifier's own view stays in
# `Prediction.scores`.
RULE_CONFIDENCE = 1.0


@dataclass(frozen=True)
class Entity:
    """A span found by the rule-based entity component (character offsets)."""

    label: str
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Prediction:
    """What `intents.classify` says about one message.

    `safety_rule` names the hazard (see `intents.safety.HAZARDS`): the rule that
    fired, or, when the classifier alone chose `emergenza`, the hazard a weaker
    cue points to (then `rule_fired` is False). None when neither applies.
    """

    intent: str
    confidence: float
    scores: dict[str, float] = field(compare=False)
    entities: tuple[Entity, ...] = ()
    safety_rule: str | None = None
    model_version: str = ""
    rule_fired: bool = False

    @property
    def classifier_intent(self) -> str:
        """The classifier's own top intent, before the safety net."""
        return max(self.scores, key=self.scores.__getitem__) if self.scores else self.intent

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form for logs and the API."""
        return {
            "intent": self.intent,
            "confidence": self.confidence,
            "scores": dict(self.scores),
            "entities": [asdict(entity) for entity in self.entities],
            "safety_rule": self.safety_rule,
            "rule_fired": self.rule_fired,
            "model_version": self.model_version,
        }


def decide(scores: dict[str, float], safety_rule: str | None) -> tuple[str, float]:
    """Combine classifier scores and the safety net: a rule only ever raises.

    Returns the intent and its confidence. Without a rule the classifier decides;
    with one the answer is `emergenza`, whatever the classifier preferred.
    """
    if not scores:
        return ("altro", 0.0) if safety_rule is None else (EMERGENCY, RULE_CONFIDENCE)
    top = max(scores, key=scores.__getitem__)
    if safety_rule is None or top == EMERGENCY:
        return top, float(scores[top])
    return EMERGENCY, RULE_CONFIDENCE


def prediction_from_doc(doc: Doc, model_version: str) -> Prediction:
    """Build the Prediction for a Doc that went through the whole pipeline."""
    if not doc.text.strip():
        # Nothing to classify (spaCy also skips the model for an all-empty batch).
        scores = dict.fromkeys(INTENTS, 0.0)
        return Prediction("altro", 0.0, scores, (), None, model_version)
    scores = {intent: float(doc.cats.get(intent, 0.0)) for intent in INTENTS}
    rules = doc.spans[SAFETY_SPAN_KEY] if SAFETY_SPAN_KEY in doc.spans else None
    fired = rules[0].label_ if rules is not None and len(rules) else None
    intent, confidence = decide(scores, fired)
    safety_rule = fired
    if fired is None and intent == EMERGENCY:
        # Imported here: intents.safety imports spaCy, which a Doc implies anyway.
        from intents.safety import hazard_cue

        safety_rule = hazard_cue(doc)
    entities = tuple(
        Entity(label=ent.label_, text=ent.text, start=ent.start_char, end=ent.end_char)
        for ent in doc.ents
    )
    return Prediction(
        intent=intent,
        confidence=confidence,
        scores=scores,
        entities=entities,
        safety_rule=safety_rule,
        model_version=model_version,
        rule_fired=fired is not None,
    )
