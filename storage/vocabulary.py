"""The product's one vocabulary: every state, kind and reason that is stored or compared.

Each is a ``StrEnum``, so a member is its stored text (``Consent.GRANTED == "granted"``)
and the database columns stay plain strings; but code that means a state names the
member, and a typo (``Purpose.WELCOM``) is an error where it is written, not a
message refused later. Labels for people (Italian) live with the console; these are
the stored, English words.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "Action",
    "CallOutcome",
    "Channel",
    "ContactKind",
    "Consent",
    "ConversationStatus",
    "DataSource",
    "Direction",
    "Handoff",
    "KeywordKind",
    "LedgerEvent",
    "LegalBasis",
    "MessageStatus",
    "Mode",
    "Priority",
    "Purpose",
    "Refusal",
    "Role",
    "TicketKind",
    "TicketStatus",
    "WebhookDeliveryStatus",
    "WebhookEventType",
]


class Consent(StrEnum):
    """Where a contact stands with this channel."""

    NONE = "none"  # wrote, never shown the notice
    PENDING = "pending"  # shown the notice, not accepted yet
    GRANTED = "granted"
    WITHDRAWN = "withdrawn"


class LegalBasis(StrEnum):
    """Art. 6 GDPR bases a contact's data can rest on."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGITIMATE_INTEREST = "legitimate_interest"
    LEGAL_OBLIGATION = "legal_obligation"
    # Not a contact's standing basis: the one for a safety reply in an emergency
    # (art. 6(1)(d), 9(2)(c)), recorded on that reply and in the ledger.
    VITAL_INTERESTS = "vital_interests"


# What an office may give a contact as their standing basis (imports, console).
CONTACT_BASES = (
    LegalBasis.CONSENT,
    LegalBasis.CONTRACT,
    LegalBasis.LEGITIMATE_INTEREST,
    LegalBasis.LEGAL_OBLIGATION,
)


class ContactKind(StrEnum):
    CONDOMINO = "condomino"
    FORNITORE = "fornitore"
    UNKNOWN = "unknown"


class DataSource(StrEnum):
    """Where a contact's data came from."""

    WHATSAPP_INBOUND = "whatsapp_inbound"
    IMPORT = "import"
    OPERATOR = "operator"


class Mode(StrEnum):
    """Who answers a conversation."""

    BOT = "bot"
    HUMAN = "human"


class Priority(StrEnum):
    NORMAL = "normal"
    URGENT = "urgent"


class ConversationStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class MessageStatus(StrEnum):
    """Inbound: received → handled → processed (or failed). Outbound: Twilio's statuses,
    after our own ``pending`` (recorded, not yet handed to the provider) and ``sending``."""

    RECEIVED = "received"
    HANDLED = "handled"
    PROCESSED = "processed"
    PENDING = "pending"
    SENDING = "sending"
    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    UNDELIVERED = "undelivered"
    CANCELED = "canceled"


class Purpose(StrEnum):
    """Why an outbound message is sent; the outbound gate reads it."""

    REPLY = "reply"
    WELCOME = "welcome"
    NOTICE = "notice"
    SAFETY = "safety"
    RIGHTS = "rights"
    CONSENT_CONFIRMATION = "consent_confirmation"
    WITHDRAWAL_CONFIRMATION = "withdrawal_confirmation"
    OPERATOR = "operator"
    API = "api"


class Refusal(StrEnum):
    """Why the outbound gate refused a message."""

    OPTED_OUT = "opted_out"
    NO_CONSENT = "no_consent"
    OUTSIDE_WINDOW = "outside_window"
    RATE_LIMITED = "rate_limited"
    OFFICE_TERMINATED = "office_terminated"


class LedgerEvent(StrEnum):
    """Rows of the consent ledger."""

    NOTICE_SENT = "notice_sent"
    GRANTED = "granted"
    WITHDRAWN = "withdrawn"
    ACCESS_REQUESTED = "access_requested"
    ERASURE_REQUESTED = "erasure_requested"
    IMPORTED = "imported"


class Channel(StrEnum):
    """How a ledger event reached us."""

    WHATSAPP = "whatsapp"
    TWILIO_ADVANCED_OPT_OUT = "twilio_advanced_opt_out"
    TWILIO_ERROR = "twilio_error"
    IMPORT = "import"
    CONSOLE = "console"


class KeywordKind(StrEnum):
    """The channel's keywords (see ``bot.conversation.keywords``)."""

    ACCEPT = "accept"
    WITHDRAW = "withdraw"
    PRIVACY = "privacy"
    HELP = "help"
    OPERATOR = "operator"
    ACCESS = "access"
    ERASURE = "erasure"


class Role(StrEnum):
    OPERATOR = "operator"
    ADMIN = "admin"


class TicketKind(StrEnum):
    GUASTO = "guasto"
    PREVENTIVO = "preventivo"
    AMMINISTRAZIONE = "amministrazione"
    DOCUMENTI = "documenti"
    ASSEMBLEA = "assemblea"
    INTERVENTO = "intervento"
    EMERGENCY = "emergency"


class TicketStatus(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    DONE = "done"


class Handoff(StrEnum):
    """Why the bot asked for a human."""

    EMERGENCY = "emergency"
    OPERATOR_REQUEST = "operator_request"
    NOT_UNDERSTOOD = "not_understood"


class Action(StrEnum):
    """What the bot decided for one message (the bot log's ``action``; an acceptance
    that carried a message records two, joined by ``+``)."""

    CONSENT_WITHDRAWN = "consent_withdrawn"
    CONSENT_GRANTED = "consent_granted"
    ALREADY_GRANTED = "already_granted"
    ACCESS_REQUESTED = "access_requested"
    ERASURE_REQUESTED = "erasure_requested"
    STORED_WITHDRAWN = "stored_withdrawn"
    NOTICE_RESENT = "notice_resent"
    HELP = "help"
    PROVIDER_KEYWORD = "provider_keyword"
    WELCOME = "welcome"
    CONSENT_REMINDER = "consent_reminder"
    EMERGENCY_BEFORE_CONSENT = "emergency_before_consent"
    EMERGENCY_HANDOFF = "emergency_handoff"
    EMERGENCY_IN_HUMAN_MODE = "emergency_in_human_mode"
    HUMAN_MODE = "human_mode"
    HANDOFF = "handoff"
    HANDOFF_AFTER_CLARIFICATION = "handoff_after_clarification"
    CLARIFY = "clarify"
    STORED = "stored"
    MEDIA_RECEIVED = "media_received"
    TICKET_GUASTO = "ticket_guasto"
    TICKET_PREVENTIVO = "ticket_preventivo"
    TICKET_AMMINISTRAZIONE = "ticket_amministrazione"
    TICKET_DOCUMENTI = "ticket_documenti"
    TICKET_ASSEMBLEA = "ticket_assemblea"
    TICKET_WORK_DONE = "ticket_work_done"
    EVENT = "event"
    ACKNOWLEDGED = "acknowledged"


class CallOutcome(StrEnum):
    """What became of one escalation call to an on-call person."""

    CLAIMED = "claimed"  # the row is written, the call not yet placed
    PLACED = "placed"  # Twilio took the call
    FAILED = "failed"  # Twilio refused it or could not be reached
    ACKNOWLEDGED = "acknowledged"  # the callee pressed 1


class WebhookEventType(StrEnum):
    """What the office's CRM can be told (``bot.crm``); adding a type is one line here,
    plus the call that records it where the change happens."""

    MESSAGE_RECEIVED = "message.received"
    MESSAGE_STATUS = "message.status"
    CONVERSATION_NEEDS_ATTENTION = "conversation.needs_attention"
    CONVERSATION_ACKNOWLEDGED = "conversation.acknowledged"
    TICKET_CREATED = "ticket.created"
    TICKET_UPDATED = "ticket.updated"
    CONSENT_CHANGED = "consent.changed"
    EMERGENCY_OPENED = "emergency.opened"
    CONTACT_ERASED = "contact.erased"


class WebhookDeliveryStatus(StrEnum):
    """One event's delivery to one CRM endpoint."""

    PENDING = "pending"  # to be attempted (or being attempted, under a lease)
    DELIVERED = "delivered"  # the CRM answered 2xx
    FAILED = "failed"  # given up: the retry window passed without a 2xx
