"""The engine's seam for understanding text: one call that says what a message means.

:class:`Reading` is what the conversation needs from the language layer: the intent,
how sure it is, which safety rule fired, the entities and the model's version.
``Services.understand`` is a :class:`Reader`; the default one runs the trained spaCy
pipeline (loaded once per worker). Tests pass their own, so an engine rule ("a fault
opens a ticket") does not hang on a retrained model. Sensitive-data detection is not
behind this seam: it is rules, not training, and always reads the whole body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from intents.prediction import Entity


@dataclass(frozen=True)
class Reading:
    intent: str
    confidence: float
    safety_rule: str | None = None
    entities: tuple[Entity, ...] = ()
    model_version: str | None = None


# What the priority lane's triage read of a message before queueing it: the text it
# read, and its reading (the job uses it instead of reading the same text again).
ReadAhead = tuple[str, Reading]


class Reader(Protocol):
    def __call__(self, text: str) -> Reading: ...


def read_with_model(text: str) -> Reading:
    """The trained pipeline's reading of ``text``."""
    import intents

    prediction = intents.classify(text)
    return Reading(
        intent=prediction.intent,
        confidence=prediction.confidence,
        safety_rule=prediction.safety_rule,
        entities=prediction.entities,
        model_version=prediction.model_version,
    )
