"""The outside world's pipes: WhatsApp transports (Twilio REST, console), media download,
operator notifications. No business rules live here."""

from notify.media import DownloadedMedia, MediaAccount, MediaRefused, download_media
from notify.whatsapp import (
    CallRequest,
    ConsoleTransport,
    OutboundRequest,
    ProviderMessage,
    ProviderUnavailable,
    SendError,
    SendReceipt,
    TwilioTransport,
    WaitTurn,
    WhatsAppTransport,
)

__all__ = [
    "CallRequest",
    "ConsoleTransport",
    "DownloadedMedia",
    "MediaAccount",
    "MediaRefused",
    "OutboundRequest",
    "ProviderMessage",
    "ProviderUnavailable",
    "SendError",
    "SendReceipt",
    "TwilioTransport",
    "WaitTurn",
    "WhatsAppTransport",
    "download_media",
]
