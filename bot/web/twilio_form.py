"""Twilio's form-encoded webhook bodies, decoded strictly."""

from __future__ import annotations

from urllib.parse import parse_qsl

from bot.exceptions import MalformedWebhook


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
