"""An office's opening hours and closing days, in Europe/Rome time.

Stored in ``Tenant.settings`` (validated by :mod:`bot.office.settings`)::

    "hours": {"mon": [["09:00", "13:00"], ["14:30", "18:00"]], "sat": [], ...}
    "closed_days": ["2026-12-24", "2026-12-25"]

An office that set no hours is never said to be closed: the bot makes no claim it
cannot back. Once any weekday has hours, a weekday without them is a closed day.
Plain functions over plain data: the conversation rules and the handoff reminder
ask them, and the tests call them with any moment they like.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.exceptions import InvalidSetting

OFFICE_ZONE = ZoneInfo("Europe/Rome")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("lunedì", "martedì", "mercoledì", "giovedì", "venerdì", "sabato", "domenica")
MONTH_NAMES = (
    "gennaio",
    "febbraio",
    "marzo",
    "aprile",
    "maggio",
    "giugno",
    "luglio",
    "agosto",
    "settembre",
    "ottobre",
    "novembre",
    "dicembre",
)
CLOSED_WORDS = frozenset({"closed", "chiuso", "-"})
# How far ahead the next opening is looked for (closing days are at most a year's).
LOOKAHEAD_DAYS = 400
MAX_CLOSED_DAYS = 366

Span = tuple[time, time]
_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def _clock(hours: str, minutes: str) -> time:
    hour, minute = int(hours), int(minutes)
    if hour > 23 or minute > 59:
        raise InvalidSetting("times go from 00:00 to 23:59")
    return time(hour, minute)


def parse_day_hours(raw: str) -> list[list[str]]:
    """``09:00-13:00,14:30-18:00`` (or ``closed``) as stored: sorted, non-overlapping."""
    if raw.strip().lower() in CLOSED_WORDS:
        return []
    spans: list[Span] = []
    for part in raw.split(","):
        found = _SPAN.match(part)
        if not found:
            raise InvalidSetting("expected HH:MM-HH:MM[,HH:MM-HH:MM...] or closed")
        start, end = _clock(*found.group(1, 2)), _clock(*found.group(3, 4))
        if end <= start:
            raise InvalidSetting(f"{part.strip()}: the end must come after the start")
        spans.append((start, end))
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise InvalidSetting("the time spans overlap")
    return [[start.strftime("%H:%M"), end.strftime("%H:%M")] for start, end in spans]


def parse_closed_days(raw: str) -> list[str]:
    """``2026-12-24,2026-12-25`` as stored: ISO dates, sorted, without repeats."""
    if raw.strip().lower() in CLOSED_WORDS | {"none", ""}:
        return []
    days: set[date] = set()
    for part in raw.split(","):
        try:
            days.add(date.fromisoformat(part.strip()))
        except ValueError as error:
            raise InvalidSetting(f"{part.strip()!r} is not a date (YYYY-MM-DD)") from error
    if len(days) > MAX_CLOSED_DAYS:
        raise InvalidSetting(f"at most {MAX_CLOSED_DAYS} closing days")
    return [day.isoformat() for day in sorted(days)]


def _spans(stored: Any) -> tuple[Span, ...]:
    return tuple((time.fromisoformat(start), time.fromisoformat(end)) for start, end in stored)


def _hhmm(moment: time) -> str:
    return f"{moment.hour}:{moment.minute:02d}"


@dataclass(frozen=True)
class OfficeHours:
    week: Mapping[int, tuple[Span, ...]]  # weekday (0 = Monday) -> opening spans
    closed_days: frozenset[date]

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None) -> OfficeHours | None:
        """The office's hours, or None when it set none (then it is never "closed")."""
        stored = (settings or {}).get("hours") or {}
        if not any(stored.get(day) for day in WEEKDAYS):
            return None
        week = {index: _spans(stored.get(day) or ()) for index, day in enumerate(WEEKDAYS)}
        closed = frozenset(date.fromisoformat(d) for d in (settings or {}).get("closed_days", ()))
        return cls(week=week, closed_days=closed)

    def spans_on(self, day: date) -> tuple[Span, ...]:
        return () if day in self.closed_days else self.week.get(day.weekday(), ())

    def is_open(self, moment: datetime) -> bool:
        local = moment.astimezone(OFFICE_ZONE)
        now = local.time()
        return any(start <= now < end for start, end in self.spans_on(local.date()))

    def next_opening(self, moment: datetime) -> datetime | None:
        """The next time the office opens after ``moment`` (aware, office time)."""
        local = moment.astimezone(OFFICE_ZONE)
        for offset in range(LOOKAHEAD_DAYS):
            day = local.date() + timedelta(days=offset)
            for start, _ in self.spans_on(day):
                opening = datetime.combine(day, start, tzinfo=OFFICE_ZONE)
                if opening > local:
                    return opening
        return None

    def describe_week(self) -> str:
        """``lunedì-venerdì 9:00-13:00 e 14:30-18:00; sabato 9:00-12:00`` (open days only)."""
        groups: list[tuple[int, int, tuple[Span, ...]]] = []
        for index in range(7):
            spans = self.week.get(index, ())
            if groups and groups[-1][2] == spans and groups[-1][1] == index - 1:
                groups[-1] = (groups[-1][0], index, spans)
            else:
                groups.append((index, index, spans))
        parts = []
        for first, last, spans in groups:
            if not spans:
                continue
            days = DAY_NAMES[first] if first == last else f"{DAY_NAMES[first]}-{DAY_NAMES[last]}"
            times = " e ".join(f"{_hhmm(start)}-{_hhmm(end)}" for start, end in spans)
            parts.append(f"{days} {times}")
        return "; ".join(parts)


def when_in_words(moment: datetime, now: datetime) -> str:
    """``oggi alle 14:30``, ``domani alle 9:00``, ``lunedì 14 dicembre alle 9:00``."""
    local, today = moment.astimezone(OFFICE_ZONE), now.astimezone(OFFICE_ZONE).date()
    at = f"alle {_hhmm(local.time())}"
    if local.date() == today:
        return f"oggi {at}"
    if local.date() == today + timedelta(days=1):
        return f"domani {at}"
    day = local.date()
    return f"{DAY_NAMES[day.weekday()]} {day.day} {MONTH_NAMES[day.month - 1]} {at}"


@dataclass(frozen=True)
class OfficeClosed:
    """What the bot says about a closed office: when it reopens (empty if unknown)."""

    reopening: str  # " e riapre domani alle 9:00", or ""


def closed_now(settings: Mapping[str, Any] | None, now: datetime) -> OfficeClosed | None:
    """None when the office is open now (or set no hours); else when it reopens."""
    hours = OfficeHours.from_settings(settings)
    if hours is None or hours.is_open(now):
        return None
    opening = hours.next_opening(now)
    return OfficeClosed(f" e riapre {when_in_words(opening, now)}" if opening else "")


def hours_sentence(settings: Mapping[str, Any] | None, now: datetime) -> str:
    """The office's hours for a reminder (`` Orari dell'ufficio: …``), or "" if unset."""
    hours = OfficeHours.from_settings(settings)
    if hours is None:
        return ""
    sentence = f" Orari dell'ufficio: {hours.describe_week()}."
    closed = closed_now(settings, now)
    if closed is not None:
        sentence += f" Ora l'ufficio è chiuso{closed.reopening}."
    return sentence
