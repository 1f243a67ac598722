"""Italian language understanding for Portineria: intents, entities, safety net, sensitive data.

`classify(text)` runs the trained spaCy pipeline shipped in `intents/model/`
(normaliser, rule-based entities, emergency safety rules, text classifier over
the eleven intents) and returns a `Prediction`. spaCy is imported only when a
pipeline is first needed, so importing this package is cheap. Training and
evaluation live in `intents.training` and `intents.evaluation`; the corpus in
`intents/data/corpus/`. No Flask, no database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from intents.pipeline import classify, classify_many, load_pipeline, model_version
from intents.prediction import INTENTS, Entity, Prediction

if TYPE_CHECKING:
    from intents.sensitive import Finding, find_sensitive, redact

__all__ = [
    "INTENTS",
    "Entity",
    "Finding",
    "Prediction",
    "classify",
    "classify_many",
    "find_sensitive",
    "load_pipeline",
    "model_version",
    "redact",
]

# Sensitive-data detection lives in intents.sensitive; it is resolved on first
# use so that importing `intents` never pulls in spaCy through it.
_SENSITIVE_NAMES = frozenset({"find_sensitive", "Finding", "redact"})


def __getattr__(name: str) -> Any:
    if name in _SENSITIVE_NAMES:
        from intents import sensitive

        value = getattr(sensitive, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'intents' has no attribute {name!r}")
