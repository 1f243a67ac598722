"""The webhook's edge: Twilio's form parsed into plain data, nothing past here sees a form."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qsl

import phonenumbers

REQUIRED_FIELDS = ("MessageSid", "From", "To")
WHATSAPP_PREFIX = "whatsapp:"


class MalformedWebhook(ValueError):
    """The request is not a Twilio webhook we can accept (answered 400)."""


def parse_form(raw: bytes) -> dict[str, str]:
    """Decode an ``application/x-www-form-urlencoded`` body strictly as UTF-8.

    Werkzeug would replace undecodable bytes silently; a body that is not UTF-8
    did not come from Twilio and must not be stored half-garbled.
    """
    try:
        text = raw.decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=500
        )
    except (UnicodeDecodeError, ValueError) as error:
        raise MalformedWebhook("body is not valid UTF-8 form data") from error
    return dict(pairs)


def check_required(params: dict[str, str]) -> None:
    """What the webhook itself needs; the worker parses the rest (:class:`InboundMessage`)."""
    missing = [name for name in REQUIRED_FIELDS if not params.get(name)]
    if missing:
        raise MalformedWebhook(f"missing field(s): {', '.join(missing)}")
    count = params.get("NumMedia") or "0"
    if not count.isdigit():
        raise MalformedWebhook("NumMedia is not a number")


def strip_channel(address: str) -> str:
    return address[len(WHATSAPP_PREFIX) :] if address.startswith(WHATSAPP_PREFIX) else address


def phone_from_address(address: str) -> str | None:
    """The E.164 phone number of a ``whatsapp:+39...`` address, if it is one.

    WhatsApp usernames put a business-scoped user id there instead.
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


@dataclass(frozen=True)
class Media:
    url: str
    content_type: str


@dataclass(frozen=True)
class InboundMessage:
    message_sid: str
    from_address: str
    to_address: str
    wa_id: str
    phone: str | None
    body: str
    profile_name: str | None
    media: tuple[Media, ...]
    button_payload: str | None
    opt_out_type: str | None

    @classmethod
    def from_params(cls, params: dict[str, str]) -> InboundMessage:
        check_required(params)
        from_address = params["From"]
        count = min(int(params.get("NumMedia") or 0), 20)
        media = tuple(
            Media(url=params[f"MediaUrl{i}"], content_type=params.get(f"MediaContentType{i}", ""))
            for i in range(count)
            if params.get(f"MediaUrl{i}")
        )
        return cls(
            message_sid=params["MessageSid"],
            from_address=from_address,
            to_address=params["To"],
            wa_id=params.get("WaId") or strip_channel(from_address),
            phone=phone_from_address(from_address),
            body=params.get("Body", ""),
            profile_name=params.get("ProfileName") or None,
            media=media,
            button_payload=params.get("ButtonPayload") or None,
            opt_out_type=(params.get("OptOutType") or "").upper() or None,
        )


def encode_payload(params: dict[str, str]) -> str:
    return json.dumps(params, ensure_ascii=False, separators=(",", ":"))


def decode_payload(text: str) -> dict[str, str]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise MalformedWebhook("stored payload is not an object")
    return {str(k): str(v) for k, v in data.items()}
