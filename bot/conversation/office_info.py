"""Questions about the office itself (opening hours, address, PEC or e-mail, a
building's lift or gas emergency number), recognised by plain rules and answered
from the office's settings, not mistaken for appointments or faults.

:func:`office_topic` reads a message; :func:`office_answer` writes the answer from
the settings (and the building's own numbers). Both are plain functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bot.conversation.keywords import normalise
from bot.office.hours import DAY_NAMES, WEEKDAYS

HOURS, ADDRESS, PEC, LIFT, GAS = "hours", "address", "pec", "lift", "gas"
CHANNELS = (("pec", "PEC"), ("email", "e-mail"))
# topic -> the building's key, the office's key, what the number is, the safety advice.
EMERGENCY_NUMBERS = {
    LIFT: (
        "ascensore",
        "lift_emergency",
        "Numero di emergenza dell'ascensore",
        "Se una persona è bloccata in ascensore chiami anche il 112.",
    ),
    GAS: (
        "gas",
        "gas_emergency",
        "Pronto intervento gas",
        "Se sente odore di gas non accenda luci, esca e chiami il 112.",
    ),
}

# A hazard described is an emergency, whatever else the message asks.
_HAZARD = re.compile(r"\b(odore|puzza|perdita|fuga|sento|bloccat\w*|fumo|fiamm\w*|incendio)\b")
_ASKS = re.compile(r"\b(qual|quale|quali|come|dove|quando|mi (da|date|dite|puo|potete)|avere)\b")
_TOPICS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        LIFT,
        re.compile(
            r"\b(numero|telefono|pronto intervento)\b.*\bascensor|\bascensor\w*\b.*\bnumero\b"
        ),
    ),
    (GAS, re.compile(r"\b(numero|telefono|pronto intervento)\b.*\bgas\b|\bgas\b.*\bnumero\b")),
    (PEC, re.compile(r"\b(pec|posta certificata|e ?mail|mail|posta elettronica)\b")),
    (
        HOURS,
        re.compile(
            r"\b(orari\w*|a che ora|siete aperti|aprite|chiudete|apre|chiude)\b.*"
            r"|\bquando\b.*\b(aperto|aperti|ufficio|studio)\b"
        ),
    ),
    (ADDRESS, re.compile(r"\b(indirizzo|dove si trova|dove siete|dove vi trovate|sede)\b")),
)
_ABOUT_OFFICE = re.compile(r"\b(ufficio|studio|vostr\w*|voi|amministrator\w*|siete)\b")


def office_topic(text: str) -> str | None:
    """The office question a message asks, or ``None``."""
    plain = normalise(text)
    if not plain or _HAZARD.search(plain):
        return None
    question = "?" in text or _ASKS.search(plain) is not None
    for topic, pattern in _TOPICS:
        if not pattern.search(plain):
            continue
        if topic in (LIFT, GAS, PEC) and question:
            return topic
        if topic in (HOURS, ADDRESS) and (question or _ABOUT_OFFICE.search(plain)):
            # "Il portone non chiude" is a fault: the office's hours need the office.
            if topic == HOURS and not _ABOUT_OFFICE.search(plain) and "orari" not in plain:
                continue
            return topic
    return None


def _hours_text(hours: Mapping[str, Any]) -> str:
    days = []
    for day, name in zip(WEEKDAYS, DAY_NAMES, strict=True):
        spans = hours.get(day) or []
        if spans:
            days.append(f"{name} " + ", ".join(f"{a}-{b}" for a, b in spans))
    return "; ".join(days)


def office_answer(
    topic: str, settings: Mapping[str, Any], building: Mapping[str, Any] | None = None
) -> str:
    """The answer in Italian, from ``settings`` (``hours``, ``office.address``,
    ``office.pec``, ``office.email``, ``office.lift_emergency``, ``office.gas_emergency``)
    and the building's own ``emergency_numbers`` (``ascensore``, ``gas``) over them."""
    office = settings.get("office") or {}
    own = (building or {}).get("emergency_numbers") or {}
    where = f" del {building['name']}" if building else ""
    unknown = "Non abbiamo questo dato qui: le risponderà un operatore dell'ufficio."
    if topic == HOURS:
        hours = _hours_text(settings.get("hours") or {})
        return f"Orari dell'ufficio: {hours}." if hours else unknown
    if topic == ADDRESS:
        address = office.get("address")
        return f"L'ufficio si trova in {address}." if address else unknown
    if topic == PEC:
        parts = [f"{label}: {office[key]}" for key, label in CHANNELS if office.get(key)]
        return ("Può scriverci qui: " + "; ".join(parts) + ".") if parts else unknown
    if topic in EMERGENCY_NUMBERS:
        own_key, office_key, name, advice = EMERGENCY_NUMBERS[topic]
        number = own.get(own_key) or office.get(office_key)
        if not number:
            return f"{advice} {unknown}"
        return f"{name}{where}: {number}. {advice}"
    return unknown
