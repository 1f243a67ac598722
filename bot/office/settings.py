"""An office's own policy knobs, validated before they reach ``Tenant.settings``.

Every key has a parser that refuses what the code reading it could not use, so a
typo on the command line is an error message, not a purge run with the wrong term.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.exceptions import InvalidInput, InvalidSetting, NotFound
from bot.office.phone import e164
from bot.outbound.gate import DEFAULT_SEND_RATE
from bot.privacy.audit import record_audit
from bot.privacy.retention import DEFAULT_TERMS, terms_for
from bot.services import Services
from storage.models import Tenant

# WhatsApp Business senders are capped at 80 messages/s by Twilio.
MAX_SEND_RATE = 80
MAX_RETENTION_DAYS = 3650


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
    # What the events pushed to the office's CRM may carry besides ids (bot.crm).
    "webhooks.include_text": _boolean,
    "webhooks.include_phone": _boolean,
}
# Keys written as GROUP.NAME are kept nested: settings[GROUP][NAME].
NESTED_GROUPS = ("retention", "emergency", "webhooks")


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
        "webhooks": {
            "include_text": bool(webhooks.get("include_text", False)),
            "include_phone": bool(webhooks.get("include_phone", False)),
        },
    }


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
