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
    "AckVia",
    "Action",
    "BuildingRole",
    "CallOutcome",
    "Channel",
    "ContactKind",
    "Consent",
    "ConversationStatus",
    "DataSource",
    "DeliveryFailure",
    "Direction",
    "Handoff",
    "KeywordKind",
    "LedgerEvent",
    "LegalBasis",
    "MessageStatus",
    "Mode",
    "NoticeCategory",
    "Priority",
    "Purpose",
    "PasswordLinkPurpose",
    "Refusal",
    "RequestKind",
    "RequestOrigin",
    "RequestStatus",
    "Role",
    "TicketEventKind",
    "SpoolKind",
    "SpoolOutcome",
    "TicketKind",
    "TicketStatus",
    "WebhookDeliveryStatus",
    "WebhookEventType",
    "WorkOrderAnswer",
    "WorkOrderStatus",
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


class DeliveryFailure(StrEnum):
    """Why we marked an outbound message failed ourselves, without a provider's error."""

    # The worker died while handing it to the provider, and the provider's own list
    # of messages never showed it: perhaps sent, perhaps not; never resent by itself.
    NEVER_CONFIRMED = "never_confirmed"


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
    # The office's own world: an ordine di lavoro to a supplier, a resident told that
    # their ticket moved on, a building notice (avviso) to the residents who opted in.
    WORK_ORDER = "work_order"
    TICKET_UPDATE = "ticket_update"
    BUILDING_NOTICE = "building_notice"


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
    # A safety reply in an emergency to someone who never accepted or who withdrew:
    # its basis is their vital interests (art. 6(1)(d), 9(2)(c) GDPR), not consent.
    # The evidence is the emergency message it answers. It changes no consent state.
    VITAL_INTERESTS_REPLY = "vital_interests_reply"


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
    NOTICES_ON = "notices_on"  # AVVISI SI: building notices wanted
    NOTICES_OFF = "notices_off"  # AVVISI NO


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


class TicketEventKind(StrEnum):
    """A ticket's timeline (``ticket_events``): what happened to it, in order."""

    OPENED = "opened"
    NOTIFIED = "notified"  # operators were alerted
    ACKNOWLEDGED = "acknowledged"  # an operator took charge of an emergency
    RELEASED = "released"  # its conversation went back to the bot
    CLOSED = "closed"
    UPDATED = "updated"  # fields changed by hand (detail: which, old and new)
    NOTE_ADDED = "note_added"  # an internal note (its text is in ticket_notes)
    BUILDING_SET = "building_set"  # filed under a building (by the bot or by hand)
    WORK_ORDER = "work_order"  # a work order was sent or answered (detail: status)
    RESIDENT_TOLD = "resident_told"  # the reporting resident was told of a step
    CONFIRMED_SOLVED = "confirmed_solved"  # the resident confirmed it is solved


class BuildingRole(StrEnum):
    """A contact's place in a building (condominio)."""

    PROPRIETARIO = "proprietario"
    INQUILINO = "inquilino"
    FORNITORE = "fornitore"


class WorkOrderStatus(StrEnum):
    """An ordine di lavoro: sent, then accepted, declined or proposed (a date), then done."""

    SENT = "sent"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    PROPOSED = "proposed"
    DONE = "done"


# What a supplier may still answer or report on.
OPEN_WORK_ORDERS = (WorkOrderStatus.SENT, WorkOrderStatus.ACCEPTED, WorkOrderStatus.PROPOSED)


class WorkOrderAnswer(StrEnum):
    """A supplier's answer: the quick-reply button ids of ``templates.work_order``, and
    the report of work done."""

    ACCEPT = "accept"
    DECLINE = "decline"
    PROPOSE = "propose"
    DONE = "done"


class NoticeCategory(StrEnum):
    """What a building notice is about; residents opt into ``avvisi``."""

    AVVISI = "avvisi"
    # Never sent: WhatsApp is not a valid channel to convene an assembly (art. 66
    # disp. att. c.c.: PEC, registered letter or hand delivery are).
    CONVOCAZIONE_ASSEMBLEA = "convocazione_assemblea"


class AckVia(StrEnum):
    """How an emergency was acknowledged."""

    TAKEOVER = "takeover"  # an operator took the conversation over in the console
    CONSOLE = "console"  # the console's "Presa in carico" button
    API = "api"  # POST /api/v1/conversations/<id>/acknowledge
    VOICE = "voice"  # an on-call person pressed 1 on the escalation call


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
    # A contact who withdrew reports an emergency: one safety reply, nothing more.
    EMERGENCY_AFTER_WITHDRAWAL = "emergency_after_withdrawal"
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
    # Not a message's decision: the housekeeping's "an operator will answer" reminder.
    HANDOFF_REMINDER = "handoff_reminder"
    NOTICES_ON = "notices_on"
    NOTICES_OFF = "notices_off"
    BUILDING_ASKED = "building_asked"  # a fault's building is unknown: the bot asks
    BUILDING_GIVEN = "building_given"  # the answer named one: the ticket is filed under it
    WORK_ORDER_ANSWER = "work_order_answer"  # a supplier answered an ordine di lavoro
    OFFICE_INFO = "office_info"  # a question about the office, answered from its settings
    RESOLVED_CONFIRMED = "resolved_confirmed"  # a resident confirmed their fault is solved


class CallOutcome(StrEnum):
    """What became of one escalation call to an on-call person."""

    CLAIMED = "claimed"  # the row is written, the call not yet placed
    PLACED = "placed"  # Twilio took the call
    FAILED = "failed"  # Twilio refused it or could not be reached
    ACKNOWLEDGED = "acknowledged"  # the callee pressed 1


class RequestKind(StrEnum):
    """A data-subject request the office must answer (artt. 15 and 17 GDPR)."""

    ACCESS = "access"
    ERASURE = "erasure"


class RequestOrigin(StrEnum):
    """Where a data-subject request came from."""

    CHAT = "chat"  # a keyword on WhatsApp (the ledger's access/erasure_requested)
    CONSOLE = "console"  # entered by an admin (a letter, an email, at the desk)


class RequestStatus(StrEnum):
    OPEN = "open"
    DONE = "done"  # carried out: the export handed over, the data erased
    REFUSED = "refused"  # not carried out, with the reason in the outcome


class PasswordLinkPurpose(StrEnum):
    """Why a one-time set-password link was made."""

    INVITE = "invite"
    RESET = "reset"


class SpoolKind(StrEnum):
    """What a spooled webhook delivery was (kept while the database could not take it)."""

    MESSAGE = "message"
    STATUS = "status"


class SpoolOutcome(StrEnum):
    """What draining did with one spooled delivery."""

    STORED = "stored"  # a new inbound message, handed on to the workers
    DUPLICATE = "duplicate"  # its MessageSid was already stored: nothing to do
    APPLIED = "applied"  # a status callback, applied by the monotonic rule
    UNROUTED = "unrouted"  # the number no longer belongs to that office: dropped
    REJECTED = "rejected"  # unreadable, or refused by the database for good: set aside


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
