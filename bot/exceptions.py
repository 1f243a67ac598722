"""Every error the application raises on purpose, in one tree.

::

    PortineriaError
    ├── InvalidInput (ValueError)        input from outside that we will not take
    │   ├── MalformedWebhook             not a Twilio webhook we can accept (400)
    │   ├── InvalidPhoneNumber           not a valid E.164 / Italian number
    │   ├── InvalidSetting               an office setting that cannot be stored
    │   ├── InvalidAccount               a console account that cannot be created
    │   ├── InvalidSubscription          a browser's push subscription we will not store
    │   ├── InvalidEndpoint              a CRM webhook URL we will not post to
    │   ├── OnCallExists                 that number is already on the office's rota
    │   └── InvalidImport                a contacts file that cannot be read
    ├── NotFound (LookupError)           no such record *in the caller's office*
    ├── Refused                          a move not allowed now (Italian ``message``)
    ├── TenantExists                     the slug or number belongs to another office
    └── SendDeferred                     the provider said "later": the job retries

``NotFound`` is raised alike for ids that do not exist and for another office's
ids, so every edge answers 404 for both and nothing leaks across tenants.
``Refused.message`` is Italian and meant for the operator's screen. Errors of the
outside world's pipes (``notify.SendError``, ``notify.MediaRefused``) belong to
``notify`` and are translated where they are caught.
"""

from __future__ import annotations

__all__ = [
    "InvalidAccount",
    "InvalidEndpoint",
    "InvalidImport",
    "InvalidInput",
    "InvalidPhoneNumber",
    "InvalidSetting",
    "InvalidSubscription",
    "MalformedWebhook",
    "NotFound",
    "OnCallExists",
    "PortineriaError",
    "Refused",
    "SendDeferred",
    "TenantExists",
]


class PortineriaError(Exception):
    """The root: catching it catches every deliberate error of the application."""


class InvalidInput(PortineriaError, ValueError):
    """Input from outside (a form, a CSV, a CLI option) that we will not take."""


class MalformedWebhook(InvalidInput):
    """The request is not a Twilio webhook we can accept (answered 400)."""


class InvalidPhoneNumber(InvalidInput):
    """Not a phone number we can write to (E.164, Italian numbers without +39 too)."""


class InvalidSetting(InvalidInput):
    """An office setting that cannot be stored; the message names the key and why."""


class InvalidAccount(InvalidInput):
    """A console account that cannot be created as asked (role, password)."""


class InvalidSubscription(InvalidInput):
    """A Web Push subscription we will not store: not HTTPS, or keys that are not keys."""


class InvalidEndpoint(InvalidInput):
    """A CRM webhook URL we will not post to: not HTTPS, or an address not allowed."""


class OnCallExists(InvalidInput):
    """That number is already on the office's on-call rota."""


class InvalidImport(InvalidInput):
    """A contacts file that cannot be read at all (as opposed to a refused row)."""


class NotFound(PortineriaError, LookupError):
    """No such conversation, contact, ticket, user or office in the caller's own office."""


class Refused(PortineriaError):
    """The move is not allowed now; ``message`` tells the operator why, in Italian, and
    ``code`` names the reason for the API (``opted_out``, ``no_template``...)."""

    def __init__(self, message: str, code: str = "refused") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class TenantExists(PortineriaError):
    """Another office already has this slug or WhatsApp number."""


class SendDeferred(PortineriaError):
    """The provider is temporarily unavailable or over its rate: retry the job later."""
