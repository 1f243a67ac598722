"""An office's own policy knobs, validated before they reach ``Tenant.settings``.

Every key has a parser that refuses what the code reading it could not use, so a
typo on the command line is an error message, not a purge run with the wrong term.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from bot.exceptions import InvalidInput, InvalidSetting, NotFound
from bot.office.hours import WEEKDAYS, parse_closed_days, parse_day_hours
from bot.office.phone import e164
from bot.outbound.gate import DEFAULT_SEND_RATE
from bot.privacy.audit import record_audit
from bot.privacy.retention import DEFAULT_TERMS, terms_for
from bot.services import Services
from storage.models import Tenant

# WhatsApp Business senders are capped at 80 messages/s by Twilio.
MAX_SEND_RATE = 80
MAX_RETENTION_DAYS = 3650
# After a handoff, how long the resident waits for an operator before one reminder.
DEFAULT_HANDOFF_REMINDER_MINUTES = 15
MAX_HANDOFF_REMINDER_MINUTES = 24 * 60


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise InvalidSetting("expected true or false")


def _whole_number(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError as error:
            raise InvalidSetting("expected a whole number") from error
        if not low <= value <= high:
            raise InvalidSetting(f"expected a number from {low} to {high}")
        return value

    return parse


def _text(limit: int) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        if not value or len(value) > limit:
            raise InvalidSetting(f"expected a text of 1 to {limit} characters")
        return value

    return parse


# -- emergency escalation (on-call calls) -----------------------------------------------
# Kept in one block: the escalation reads these through ``emergency_settings``.

DEFAULT_ACK_SECONDS = 300
MIN_ACK_SECONDS = 10  # shorter and a call could not even ring before the next one
MAX_ACK_SECONDS = 24 * 3600
DEFAULT_ROUNDS = 2
MAX_ROUNDS = 10


def _e164_number(raw: str) -> str:
    try:
        return e164(raw)
    except InvalidInput as error:
        raise InvalidSetting("expected a phone number, e.g. +390212345678") from error


EMERGENCY_PARSERS: dict[str, Callable[[str], Any]] = {
    # How long an emergency may wait for an operator before the next on-call call.
    "emergency.ack_seconds": _whole_number(MIN_ACK_SECONDS, MAX_ACK_SECONDS),
    # The number the calls come from (a Twilio voice number); unset, the office's own.
    "emergency.call_from": _e164_number,
    # How many times the whole rota is called before the escalation gives up.
    "emergency.rounds": _whole_number(1, MAX_ROUNDS),
}


def emergency_settings(tenant: Tenant) -> dict[str, Any]:
    """What the escalation runs with: the office's values, or the defaults."""
    own = (tenant.settings or {}).get("emergency") or {}
    return {
        "ack_seconds": int(own.get("ack_seconds", DEFAULT_ACK_SECONDS)),
        "call_from": own.get("call_from") or tenant.whatsapp_number,
        "rounds": int(own.get("rounds", DEFAULT_ROUNDS)),
    }


# -- WhatsApp templates (Twilio Content API) ----------------------------------------------

_CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")
MAX_TEMPLATES = 50
MAX_TEMPLATE_NAME = 80


def _content_sid(raw: str) -> str:
    value = raw.strip()
    if not _CONTENT_SID.fullmatch(value):
        raise InvalidSetting("expected a ContentSid: HX followed by 32 hexadecimal digits")
    return value


def _template_list(raw: str) -> list[dict[str, str]]:
    """``Name|HX…`` items, one per line or separated by ``;``: the approved templates
    an operator may send once the 24-hour window has closed."""
    items: list[dict[str, str]] = []
    for part in re.split(r"[;\n]", raw):
        if not part.strip():
            continue
        name, sep, sid = part.rpartition("|")
        name = " ".join(name.split())
        if not sep or not name or len(name) > MAX_TEMPLATE_NAME:
            raise InvalidSetting(
                f"expected NAME|ContentSid, the name 1 to {MAX_TEMPLATE_NAME} long"
            )
        items.append({"name": name, "content_sid": _content_sid(sid)})
    if len(items) > MAX_TEMPLATES:
        raise InvalidSetting(f"at most {MAX_TEMPLATES} templates")
    if len({item["name"].lower() for item in items}) < len(items):
        raise InvalidSetting("two templates have the same name")
    return items


TEMPLATE_PARSERS: dict[str, Callable[[str], Any]] = {
    # The approved template a supplier's work order goes out with (quick replies).
    "templates.work_order": _content_sid,
    # The approved template that tells a resident their ticket moved on.
    "templates.ticket_update": _content_sid,
    "approved_templates": _template_list,
}


# -- every key ------------------------------------------------------------------------------

PARSERS: dict[str, Callable[[str], Any]] = {
    "send_rate_per_second": _whole_number(1, MAX_SEND_RATE),
    "redact_sensitive": _boolean,
    "store_profile_name": _boolean,
    # Named in the bot's replies: where documents with legal value must go instead.
    "proper_channel": _text(200),
    # The office's data protection officer (or privacy contact), for its Art. 30 register.
    "dpo_contact": _text(200),
    **{f"retention.{term}": _whole_number(1, MAX_RETENTION_DAYS) for term in DEFAULT_TERMS},
    **EMERGENCY_PARSERS,
    # Opening hours per weekday (Europe/Rome): "09:00-13:00,14:30-18:00" or "closed".
    **{f"hours.{day}": parse_day_hours for day in WEEKDAYS},
    # Days the office is closed whatever the weekday: "2026-12-24,2026-12-25".
    "closed_days": parse_closed_days,
    # 0 turns the reminder off.
    "handoff.reminder_minutes": _whole_number(0, MAX_HANDOFF_REMINDER_MINUTES),
    **TEMPLATE_PARSERS,
    # What the events pushed to the office's CRM may carry besides ids (bot.crm).
    "webhooks.include_text": _boolean,
    "webhooks.include_phone": _boolean,
    # Distinct recipients of business-initiated messages a rolling day (Meta's tier).
    "notices_daily_cap": _whole_number(1, 100_000),
    # What the bot answers about the office (bot.conversation.office_info).
    "office.address": _text(300),
    "office.pec": _text(254),
    "office.email": _text(254),
    "office.lift_emergency": _text(40),
    "office.gas_emergency": _text(40),
}
# Keys written as GROUP.NAME are kept nested: settings[GROUP][NAME].
NESTED_GROUPS = (
    "retention",
    "emergency",
    "hours",
    "handoff",
    "templates",
    "webhooks",
    "office",
)


def parse_assignment(assignment: str) -> tuple[str, Any]:
    """``key=value`` as given on the command line, validated."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep:
        raise InvalidSetting(f"{assignment!r}: expected KEY=VALUE")
    parser = PARSERS.get(key)
    if parser is None:
        raise InvalidSetting(f"unknown setting {key!r}; known: {', '.join(sorted(PARSERS))}")
    try:
        return key, parser(raw)
    except InvalidSetting as error:
        raise InvalidSetting(f"{key}: {error}") from error


def effective_settings(tenant: Tenant) -> dict[str, Any]:
    """What the office's bot runs with: its own values, or the defaults."""
    settings = tenant.settings or {}
    webhooks = settings.get("webhooks") or {}
    return {
        "send_rate_per_second": int(settings.get("send_rate_per_second", DEFAULT_SEND_RATE)),
        "redact_sensitive": bool(settings.get("redact_sensitive", True)),
        "store_profile_name": bool(settings.get("store_profile_name", False)),
        "proper_channel": settings.get("proper_channel"),
        "dpo_contact": settings.get("dpo_contact"),
        "retention": terms_for(tenant),
        "emergency": emergency_settings(tenant),
        "hours": {day: (settings.get("hours") or {}).get(day, []) for day in WEEKDAYS},
        "closed_days": list(settings.get("closed_days") or []),
        "handoff": {"reminder_minutes": handoff_reminder_minutes(settings)},
        "templates": dict(settings.get("templates") or {}),
        "approved_templates": list(settings.get("approved_templates") or []),
        "webhooks": {
            "include_text": bool(webhooks.get("include_text", False)),
            "include_phone": bool(webhooks.get("include_phone", False)),
        },
        "notices_daily_cap": int(settings.get("notices_daily_cap", 250)),
        "office": dict(settings.get("office") or {}),
    }


def handoff_reminder_minutes(settings: dict[str, Any] | None) -> int:
    """Minutes after a handoff before the resident is reminded (0: never)."""
    handoff = (settings or {}).get("handoff") or {}
    return int(handoff.get("reminder_minutes", DEFAULT_HANDOFF_REMINDER_MINUTES))


def update_settings(
    svc: Services, tenant_id: int, changes: dict[str, Any], *, actor: str
) -> dict[str, Any]:
    """Apply validated changes (see :func:`parse_assignment`); returns the effective settings."""
    with svc.db.session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFound("no such office")
        # A new dict, not an in-place edit: the JSON column only notices reassignment.
        settings = {**(tenant.settings or {})}
        for key, value in changes.items():
            group, _, name = key.partition(".")
            if name and group in NESTED_GROUPS:
                settings[group] = {**(settings.get(group) or {}), name: value}
            else:
                settings[key] = value
        tenant.settings = settings
        if changes:
            record_audit(
                session,
                tenant.id,
                "tenant.settings",
                actor=actor,
                target_type="tenant",
                target_id=tenant.id,
                detail=changes,
            )
        return effective_settings(tenant)
