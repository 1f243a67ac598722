"""An emergency's alert to the operators' devices, and the words it (and a call) uses.

The engine hands :func:`alert_operators` the events it has just published; for each
``conversation.emergency`` the push to every operator's devices is queued at the
front of the queue, so it goes out as soon as a worker is free, after the safety
reply of the message being handled, never before it and never behind a burst of
ordinary messages. The payload names the hazard and the building or street the
resident gave, never their words, name or number.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from redis.exceptions import RedisError

from bot.conversation.understanding import Reading
from bot.services import Services
from notify.operators import OperatorEvent

log = logging.getLogger(__name__)

EMERGENCY_EVENT = "conversation.emergency"

# The safety rules of intents.safety, as an operator says them.
HAZARDS: dict[str, str] = {
    "gas_smell": "odore di gas",
    "smoke": "fumo",
    "fire": "incendio",
    "flooding": "allagamento",
    "person_trapped": "persona bloccata",
    "falling_masonry": "caduta di calcinacci",
    "sparks": "scintille o cortocircuito",
    "break_in": "effrazione",
    "electrical": "pericolo elettrico",
    "structural": "crollo o cedimento",
    "person_unresponsive": "persona che non risponde",
    "carbon_monoxide": "monossido di carbonio",
}
GENERIC_HAZARD = "emergenza"
MAX_PLACE = 80
# Entity labels of intents.entities, and the payload key each one fills.
_PLACES = (("CONDOMINIO", "building"), ("ADDRESS", "street"))


def hazard_label(hazard: str | None) -> str:
    return HAZARDS.get(hazard or "", GENERIC_HAZARD)


def place_of(reading: Reading | None) -> dict[str, str]:
    """``{"building": ...}`` or ``{"street": ...}`` from the message's entities, or ``{}``."""
    return place_in([(e.label, e.text) for e in reading.entities] if reading else [])


def place_in(entities: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The same from ``(label, text)`` pairs (a ticket keeps its entities as data)."""
    found = list(entities)
    for label, key in _PLACES:
        for entity_label, text in found:
            if entity_label == label and text.strip():
                return {key: " ".join(text.split())[:MAX_PLACE]}
    return {}


def emergency_payload(
    conversation_id: int, hazard: str | None, place: dict[str, str]
) -> dict[str, Any]:
    """What a push says: ids, the hazard, the place, the Italian summary and the link."""
    where = place.get("building") or place.get("street")
    label = hazard_label(hazard)
    return {
        "type": "emergency",
        "conversation_id": conversation_id,
        "hazard": hazard or GENERIC_HAZARD,
        **place,
        "title": f"Emergenza: {label}",
        "body": f"{where}: apri la conversazione." if where else "Apri la conversazione.",
        "url": f"/console/conversations/{conversation_id}",
    }


def alert_operators(
    svc: Services, tenant_id: int, events: Iterable[OperatorEvent], reading: Reading | None
) -> None:
    """After the commit: push every emergency among ``events`` to the operators' devices."""
    for event in events:
        if event.name != EMERGENCY_EVENT:
            continue
        payload = emergency_payload(
            int(event.data["conversation_id"]),
            reading.safety_rule if reading else None,
            place_of(reading),
        )
        try:
            svc.jobs.enqueue_push(tenant_id, payload)
        except RedisError:
            # The worker runs, so Redis was there a moment ago; push from here rather
            # than not at all.
            log.warning("push job not queued (redis unavailable): pushing inline")
            from bot.office.push import push_to_operators

            push_to_operators(svc, tenant_id, payload)
