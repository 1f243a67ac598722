"""Phone numbers and WhatsApp addresses: the one place that parses them.

Offices type numbers the Italian way (``333 123 4567``), Twilio sends
``whatsapp:+393331234567``, and WhatsApp usernames put a business-scoped id where
a number used to be. Everything is stored and compared in E.164.
"""

from __future__ import annotations

import phonenumbers

from bot.exceptions import InvalidPhoneNumber

WHATSAPP_PREFIX = "whatsapp:"
DEFAULT_REGION = "IT"


def strip_channel(address: str) -> str:
    """``whatsapp:+39...`` -> ``+39...``; anything else unchanged."""
    return address.removeprefix(WHATSAPP_PREFIX)


def e164(number: str, region: str = DEFAULT_REGION) -> str:
    """A number as an office or a CRM writes it, in E.164; raises :class:`InvalidPhoneNumber`.

    Numbers without a country code are read as Italian. Only numbers that can be
    assigned (``is_valid_number``) pass: a typo must not become a contact.
    """
    try:
        parsed = phonenumbers.parse(strip_channel(number.strip()), region)
    except phonenumbers.NumberParseException as error:
        raise InvalidPhoneNumber(f"not a phone number: {number}") from error
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber(f"not a valid phone number: {number}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def phone_from_address(address: str) -> str | None:
    """The E.164 number of a ``whatsapp:+39...`` address; ``None`` for a username.

    Looser than :func:`e164` on purpose: Twilio already routed this sender, so a
    number that is merely possible (new ranges the library does not know yet) is kept.
    """
    candidate = strip_channel(address)
    if not candidate.startswith("+"):
        return None
    try:
        number = phonenumbers.parse(candidate, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
