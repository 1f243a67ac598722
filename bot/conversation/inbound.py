"""An inbound WhatsApp message as plain data: Twilio's fields, parsed once.

The webhook stores the delivery's fields encrypted; the worker turns them into an
:class:`InboundMessage`. Nothing past this module reads Twilio's field names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bot.exceptions import InvalidInput, MalformedWebhook
from bot.office.phone import phone_from_address, strip_channel
from bot.web.numbers import parse_int

REQUIRED_FIELDS = ("MessageSid", "From", "To")
# Twilio sends at most 10 media with a message; more is not a delivery of theirs.
MAX_MEDIA = 20


def check_required(params: dict[str, str]) -> None:
    """What the webhook itself needs; the worker parses the rest (:class:`InboundMessage`)."""
    missing = [name for name in REQUIRED_FIELDS if not params.get(name)]
    if missing:
        raise MalformedWebhook(f"missing field(s): {', '.join(missing)}")
    media_count(params)


def media_count(params: dict[str, str]) -> int:
    """``NumMedia``, checked by the webhook before the message is stored, so the worker
    never holds a message it cannot read."""
    try:
        return parse_int(params.get("NumMedia") or "0", "NumMedia", low=0, high=MAX_MEDIA)
    except InvalidInput as error:
        raise MalformedWebhook(str(error)) from error


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
    # A quick-reply button's answer names the message it answers (our template's SID).
    replied_sid: str | None = None

    @classmethod
    def from_params(cls, params: dict[str, str]) -> InboundMessage:
        check_required(params)
        from_address = params["From"]
        media = tuple(
            Media(url=params[f"MediaUrl{i}"], content_type=params.get(f"MediaContentType{i}", ""))
            for i in range(media_count(params))
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
            replied_sid=params.get("OriginalRepliedMessageSid") or None,
        )


def encode_payload(params: dict[str, str]) -> str:
    return json.dumps(params, ensure_ascii=False, separators=(",", ":"))


def decode_payload(text: str) -> dict[str, str]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise MalformedWebhook("stored payload is not an object")
    return {str(k): str(v) for k, v in data.items()}
