"""Typed SQLAlchemy 2.0 models.

Every table that holds an office's data carries ``tenant_id``; queries for that data
go through the functions in :mod:`storage.queries`, which take the tenant first.
Message bodies, webhook payloads and consent evidence are stored as Fernet tokens
(see :mod:`storage.crypto`); nothing here decrypts them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from storage.vocabulary import (
    BuildingRole,
    CallOutcome,
    Channel,
    Consent,
    ContactKind,
    ConversationStatus,
    DataSource,
    DeliveryFailure,
    Direction,
    LedgerEvent,
    LegalBasis,
    MessageStatus,
    Mode,
    PasswordLinkPurpose,
    Priority,
    Purpose,
    RequestKind,
    RequestOrigin,
    RequestStatus,
    Role,
    TicketEventKind,
    TicketKind,
    TicketStatus,
    WebhookDeliveryStatus,
    WebhookEventType,
    WorkOrderStatus,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Tables whose rows are deleted while their office lives (erasure, retention) and whose
# ids live on outside them: in the ledger, the audit trail, the office's CRM and its
# API cursors. SQLite would hand the highest such id to the next row (its rowid without
# AUTOINCREMENT reuses it); an id must always name one record. PostgreSQL's sequences
# never go back.
IDS_NEVER_REUSED = {"sqlite_autoincrement": True}


# The predicates of the messages' partial indexes. Queries that must use an index
# put the same text in their WHERE clause: a bound parameter (``direction = $1``)
# does not prove the index's predicate to PostgreSQL's generic plans.
UNPROCESSED_IN = "processed_at IS NULL AND direction = 'in'"
PENDING_OUT = "status = 'pending' AND direction = 'out'"
SENDING_OUT = "status = 'sending' AND direction = 'out'"
UNCONFIRMED_OUT = "failure_reason IS NOT NULL"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso_utc(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, as the API and the exports write times."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class StoredWord(TypeDecorator[StrEnum]):
    """A column holding one word of :mod:`storage.vocabulary`: text in the database,
    the enum member in Python, and a word outside the vocabulary refused on write."""

    impl = String
    cache_ok = True

    def __init__(self, vocabulary: type[StrEnum], length: int) -> None:
        super().__init__(length)
        self.vocabulary = vocabulary

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else str(self.vocabulary(value))

    def process_result_value(self, value: str | None, dialect: Any) -> StrEnum | None:
        return None if value is None else self.vocabulary(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    whatsapp_number: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Per-tenant policy knobs (send rate, profile-name storage, redaction, channels...).
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    terminated_at: Mapped[datetime | None]


class Contact(Base):
    """A person writing to the office, keyed on their WhatsApp id, not their phone."""

    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "wa_id"),
        Index(None, "tenant_id", "phone"),
        # The API's list and the export walk an office's contacts by id.
        Index("ix_contacts_tenant_id_id", "tenant_id", "id"),
        IDS_NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    wa_id: Mapped[str] = mapped_column(String(128))
    phone: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[ContactKind] = mapped_column(
        StoredWord(ContactKind, 16), default=ContactKind.UNKNOWN
    )
    legal_basis: Mapped[LegalBasis | None] = mapped_column(StoredWord(LegalBasis, 32))
    source: Mapped[DataSource] = mapped_column(
        StoredWord(DataSource, 32), default=DataSource.WHATSAPP_INBOUND
    )
    consent: Mapped[Consent] = mapped_column(StoredWord(Consent, 16), default=Consent.NONE)
    profile_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_contact_at: Mapped[datetime | None]
    last_inbound_at: Mapped[datetime | None]
    # Only when the office provides it (its import, the console) or the person gives it.
    name: Mapped[str | None] = mapped_column(String(200))
    # A supplier's trade (idraulico, elettricista, ascensorista...).
    trade: Mapped[str | None] = mapped_column(String(64))
    # The building-notice categories the person opted into (``AVVISI SI``).
    notice_categories: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")

    building_links: Mapped[list[BuildingLink]] = relationship(
        viewonly=True, order_by="BuildingLink.id"
    )


class Conversation(Base):
    __tablename__ = "conversations"
    # The inbox lists a filter's conversations newest first and counts them: each filter
    # has an index whose leading columns are its conditions and whose last ones are the
    # order (needing attention first, then by last message), so a page reads its rows
    # in order and a count reads no more than it counts.
    __table_args__ = (
        Index(None, "tenant_id", "needs_attention", "last_message_at"),
        # The reports' date ranges ("conversations opened between ...").
        Index("ix_conversations_tenant_id_created_at", "tenant_id", "created_at"),
        Index(
            "ix_conversations_inbox_status",
            "tenant_id",
            "status",
            "needs_attention",
            "last_message_at",
            "id",
        ),
        Index(
            "ix_conversations_inbox_mode",
            "tenant_id",
            "status",
            "mode",
            "needs_attention",
            "last_message_at",
            "id",
        ),
        Index(
            "ix_conversations_inbox_holder",
            "assigned_user_id",
            "status",
            "needs_attention",
            "last_message_at",
            "id",
        ),
        # The API's list, newest first, a page at a time.
        Index("ix_conversations_tenant_id_id", "tenant_id", "id"),
        # A contact's threads: the engine's open thread, exports, erasure (and the
        # foreign key's check when a contact is deleted).
        Index("ix_conversations_contact_id", "contact_id"),
        IDS_NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    mode: Mapped[Mode] = mapped_column(StoredWord(Mode, 8), default=Mode.BOT)
    priority: Mapped[Priority] = mapped_column(StoredWord(Priority, 8), default=Priority.NORMAL)
    needs_attention: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[ConversationStatus] = mapped_column(
        StoredWord(ConversationStatus, 8), default=ConversationStatus.OPEN
    )
    assigned_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    clarifications: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_message_at: Mapped[datetime | None]
    human_since: Mapped[datetime | None]
    # When the bot first told the resident that an operator will answer (cleared when
    # the conversation goes back to the bot), and when it reminded them, once.
    handoff_at: Mapped[datetime | None]
    handoff_reminded_at: Mapped[datetime | None]
    # A fault whose building the bot asked for, and the buildings it offered by number
    # (empty: it asked for the address). No foreign key: a cleared question is a NULL.
    pending_ticket_id: Mapped[int | None] = mapped_column(Integer)
    building_choices: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")

    contact: Mapped[Contact] = relationship()


class Message(Base):
    """One WhatsApp message, inbound or outbound.

    Inbound rows are written by the webhook with only the encrypted payload; the
    worker fills in the contact, the conversation and the encrypted body.
    Outbound rows carry an ``idempotency_key`` so that a retried job finds the row
    it already wrote instead of sending twice.
    """

    __tablename__ = "messages"
    # Partial indexes: the webhook's insert (no conversation, no idempotency key yet)
    # touches only the SID constraint and the small index of unprocessed messages,
    # which the sweeper scans and which shrinks as messages are processed.
    __table_args__ = (
        UniqueConstraint("tenant_id", "provider_sid"),
        Index(
            "uq_messages_tenant_id_idempotency_key",
            "tenant_id",
            "idempotency_key",
            unique=True,
            sqlite_where=text("idempotency_key IS NOT NULL"),
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index(
            "ix_messages_conversation_id_id",
            "conversation_id",
            "id",
            sqlite_where=text("conversation_id IS NOT NULL"),
            postgresql_where=text("conversation_id IS NOT NULL"),
        ),
        Index(
            "ix_messages_unprocessed",
            "created_at",
            sqlite_where=text(UNPROCESSED_IN),
            postgresql_where=text(UNPROCESSED_IN),
        ),
        Index(
            "ix_messages_pending_out",
            "created_at",
            sqlite_where=text(PENDING_OUT),
            postgresql_where=text(PENDING_OUT),
        ),
        # Replies caught mid-send: /readyz counts them, the sweeper reconciles them.
        Index(
            "ix_messages_sending_out",
            "created_at",
            sqlite_where=text(SENDING_OUT),
            postgresql_where=text(SENDING_OUT),
        ),
        # Sends we failed ourselves (never confirmed): few, and each wants an operator.
        Index(
            "ix_messages_failure_reason",
            "tenant_id",
            "id",
            sqlite_where=text(UNCONFIRMED_OUT),
            postgresql_where=text(UNCONFIRMED_OUT),
        ),
        # Retention walks an office's oldest messages a batch at a time, each batch
        # starting where the last one ended (id breaks ties and is in the index, so
        # PostgreSQL starts there instead of stepping over the dead rows of the last).
        Index("ix_messages_tenant_id_created_at", "tenant_id", "created_at", "id"),
        # Erasure of one contact; partial, so the webhook's insert does not touch it.
        Index(
            "ix_messages_contact_id",
            "contact_id",
            sqlite_where=text("contact_id IS NOT NULL"),
            postgresql_where=text("contact_id IS NOT NULL"),
        ),
        IDS_NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    direction: Mapped[Direction] = mapped_column(StoredWord(Direction, 3))
    provider_sid: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    payload: Mapped[bytes | None] = mapped_column(LargeBinary)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    template_sid: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[MessageStatus] = mapped_column(StoredWord(MessageStatus, 16))
    status_rank: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[int | None]
    intent: Mapped[str | None] = mapped_column(String(32))
    confidence: Mapped[float | None] = mapped_column(Float)
    sensitive_kinds: Mapped[list[Any]] = mapped_column(default=list)
    redacted: Mapped[bool] = mapped_column(Boolean, default=False)
    purpose: Mapped[Purpose | None] = mapped_column(StoredWord(Purpose, 32))
    sender_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_at: Mapped[datetime | None]
    processed_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sweeps: Mapped[int] = mapped_column(Integer, default=0)
    # Outbound only: a send we marked failed ourselves, and why (for an operator).
    failure_reason: Mapped[DeliveryFailure | None] = mapped_column(StoredWord(DeliveryFailure, 32))
    # Outbound only: how often the provider's list was searched for a stale send.
    reconcile_looks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class MediaItem(Base):
    __tablename__ = "media_items"
    __table_args__ = (
        UniqueConstraint("message_id", "position"),
        Index("ix_media_items_tenant_id_created_at", "tenant_id", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int | None]
    sha256: Mapped[str | None] = mapped_column(String(64))
    path: Mapped[str | None] = mapped_column(String(500))
    # Why a media item was not kept (too large, refused type, download error).
    refused: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConversationRead(Base):
    """How far an operator has read a conversation: what the resident wrote after
    ``last_read_message_id`` is unread for them (each operator has their own)."""

    __tablename__ = "conversation_reads"
    # Deleting a conversation finds its read marks (the key leads with the user).
    __table_args__ = (Index("ix_conversation_reads_conversation_id", "conversation_id"),)

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    last_read_message_id: Mapped[int] = mapped_column(Integer, default=0)
    read_at: Mapped[datetime] = mapped_column(default=utcnow)


class CannedResponse(Base):
    """An office's ready answer, chosen by an operator and edited before it goes.

    Plain text: it is the office's own wording, not anybody's personal data."""

    __tablename__ = "canned_responses"
    __table_args__ = (UniqueConstraint("tenant_id", "title"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(80))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class InternalNote(Base):
    """An operator's note on a conversation, for colleagues only: it never goes to the
    resident (no outbound row, no transport), is in the office's export but not in the
    resident's, and is erased with the contact. The text is encrypted like a body."""

    __tablename__ = "internal_notes"
    __table_args__ = (
        Index("ix_internal_notes_conversation_id", "conversation_id", "id"),
        Index("ix_internal_notes_contact_id", "contact_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(254))
    role: Mapped[Role] = mapped_column(StoredWord(Role, 16))
    password_hash: Mapped[str] = mapped_column(String(255))
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Console sessions carry the version they were signed in under; bumping it
    # (logout, password change, disabling the account) ends every one of them.
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class PrivacyNotice(Base):
    """An immutable version of a tenant's privacy notice: the short text the welcome
    carries (``text``, whose SHA-256 the ledger records) and the full notice that
    ``/privacy/<slug>`` shows (``full_text``; None for versions published before the
    full text was kept, which then show the short one)."""

    __tablename__ = "privacy_notices"
    __table_args__ = (UniqueConstraint("tenant_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    full_text: Mapped[str | None] = mapped_column(Text)
    # Hex SHA-256 of the full text, listed with the version (None without a full text).
    full_sha256: Mapped[str | None] = mapped_column(String(64))
    full_notice_url: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsentEvent(Base):
    """Append-only consent ledger row (the database refuses UPDATE and DELETE).

    It outlives the person's erasure, so it keeps only what proves consent: the
    evidence is the keyword phrase they sent, or their message with identifiers and
    health data redacted, its MessageSid, and the SHA-256 of the message as received
    (anyone holding the original can show it is the one recorded). Rows written before
    the ledger was minimised (migration 0004) hold the message as received, and keep it
    until their office is deleted: the database refuses to update the ledger.

    A row names its person twice: ``contact_id`` while the contact exists, and
    ``subject_ref`` always. Read a live contact's rows by both
    (:func:`storage.queries.contact_ledger`).
    """

    __tablename__ = "consent_events"
    __table_args__ = (Index(None, "tenant_id", "contact_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    # No foreign key on purpose: the row must outlive the contact's erasure
    # unchanged, and an ON DELETE action would be an UPDATE the ledger refuses.
    contact_id: Mapped[int | None] = mapped_column(Integer)
    # A keyed hash of the WhatsApp id: names the person after erasure without their number.
    subject_ref: Mapped[str] = mapped_column(String(64))
    event: Mapped[LedgerEvent] = mapped_column(StoredWord(LedgerEvent, 32))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    channel: Mapped[Channel] = mapped_column(StoredWord(Channel, 32))
    evidence_text: Mapped[bytes | None] = mapped_column(LargeBinary)
    evidence_message_sid: Mapped[str | None] = mapped_column(String(64))
    # Hex SHA-256 of the message body as received (UTF-8), when the evidence is a message.
    evidence_sha256: Mapped[str | None] = mapped_column(String(64))
    notice_version: Mapped[str | None] = mapped_column(String(32))
    notice_sha256: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(64))


class SidTombstone(Base):
    """A tombstone of an inbound delivery already processed, by a keyed hash of its SID.

    Written in the transaction that marks the message handled and kept beyond the
    message's erasure or purge (only the office's deletion removes it), so that a
    captured, signed delivery posted again creates nothing: no contact, no reply.
    """

    __tablename__ = "sid_tombstones"

    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    sid_hash: Mapped[str] = mapped_column(String(64), primary_key=True)


class BotLogEntry(Base):
    __tablename__ = "bot_log"
    # Read newest first by time (the console, a page at a time, from a cursor of time
    # and id), by time and intent, and oldest first by id (the API).
    __table_args__ = (
        Index(None, "tenant_id", "at", "id"),
        Index("ix_bot_log_tenant_id_intent", "tenant_id", "intent", "at", "id"),
        # (the time is there for the API's "since", checked without reading the row)
        Index("ix_bot_log_tenant_id_id", "tenant_id", "id", "at"),
        # Deleting a message sets its entries' message_id to NULL: found by this index.
        Index("ix_bot_log_message_id", "message_id"),
        # The console's totals of a filtered log (by intent and action, mean confidence
        # and duration) read from the index alone, in its order: no table, no sort.
        Index(
            "ix_bot_log_totals", "tenant_id", "intent", "action", "confidence", "duration_ms", "at"
        ),
        IDS_NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    intent: Mapped[str | None] = mapped_column(String(32))
    confidence: Mapped[float | None] = mapped_column(Float)
    action: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str | None] = mapped_column(String(32))
    safety_rule: Mapped[str | None] = mapped_column(String(64))
    duration_ms: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AuditEvent(Base):
    """Hash-chained per tenant: each row's hash covers its content and the previous hash."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index(None, "tenant_id", "id"),
        # "When was this conversation first taken over?" (the reports), per action.
        Index("ix_audit_events_tenant_id_action", "tenant_id", "action", "target_id"),
        Index("ix_audit_events_tenant_id_at", "tenant_id", "at", "id"),
        Index("ix_audit_events_tenant_id_action_at", "tenant_id", "action", "at", "id"),
        Index("ix_audit_events_tenant_id_user_id", "tenant_id", "user_id", "at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    user_id: Mapped[int | None]
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Building(Base):
    """A condominio the office administers, known to the office by its own code."""

    __tablename__ = "buildings"
    __table_args__ = (UniqueConstraint("tenant_id", "code"), IDS_NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(300))
    # The building's own emergency numbers (``ascensore``, ``gas``), over the office's.
    emergency_numbers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Unit(Base):
    """A flat or a shop: its staircase (scala) and number (interno), '' where none."""

    __tablename__ = "units"
    __table_args__ = (UniqueConstraint("building_id", "scala", "interno"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    building_id: Mapped[int] = mapped_column(ForeignKey("buildings.id", ondelete="CASCADE"))
    scala: Mapped[str] = mapped_column(String(16), default="")
    interno: Mapped[str] = mapped_column(String(16), default="")


class BuildingLink(Base):
    """A contact's place in a building: owner, tenant or supplier, and their unit.

    ``role`` is None when the person only told the bot which building they write about.
    Deleted with the contact (erasure) or the building.
    """

    __tablename__ = "building_links"
    __table_args__ = (
        UniqueConstraint("contact_id", "building_id"),
        Index(None, "tenant_id", "building_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    building_id: Mapped[int] = mapped_column(ForeignKey("buildings.id", ondelete="CASCADE"))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id", ondelete="SET NULL"))
    role: Mapped[BuildingRole | None] = mapped_column(StoredWord(BuildingRole, 16))
    source: Mapped[DataSource] = mapped_column(StoredWord(DataSource, 32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    building: Mapped[Building] = relationship()
    unit: Mapped[Unit | None] = relationship()


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        UniqueConstraint("tenant_id", "source_message_id"),
        Index(None, "tenant_id", "created_at"),
        # The escalation's question, asked every few seconds: which emergencies
        # nobody has acknowledged yet. Only those rows are in the index.
        Index(
            "ix_tickets_unacknowledged",
            "created_at",
            sqlite_where=text("kind = 'emergency' AND acknowledged_at IS NULL"),
            postgresql_where=text("kind = 'emergency' AND acknowledged_at IS NULL"),
        ),
        # For the foreign keys' ON DELETE SET NULL when messages and conversations go.
        Index("ix_tickets_source_message_id", "source_message_id"),
        Index("ix_tickets_conversation_id", "conversation_id"),
        # Lists newest (console) or oldest (API) first by id, all or by status (the
        # creation time is there for the API's "since", checked without reading the row).
        Index("ix_tickets_tenant_id_id", "tenant_id", "id", "created_at"),
        Index("ix_tickets_tenant_id_status", "tenant_id", "status", "id"),
        # Erasing a person finds the tickets filed for them, and those they supply.
        Index("ix_tickets_contact_id", "contact_id"),
        Index("ix_tickets_supplier_contact_id", "supplier_contact_id"),
        IDS_NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL")
    )
    source_message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL")
    )
    kind: Mapped[TicketKind] = mapped_column(StoredWord(TicketKind, 32))
    intent: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[TicketStatus] = mapped_column(
        StoredWord(TicketStatus, 16), default=TicketStatus.OPEN
    )
    entities: Mapped[list[Any]] = mapped_column(default=list)
    # An emergency's hazard: the safety rule that fired (``gas_smell``...), if any.
    hazard: Mapped[str | None] = mapped_column(String(32))
    # When an operator took charge of an emergency; until then it stays urgent.
    acknowledged_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The office's work item: who reported it, where, what (the resident's words,
    # redacted as the message was, encrypted), how urgent, who works it, by when.
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    building_id: Mapped[int | None] = mapped_column(ForeignKey("buildings.id", ondelete="SET NULL"))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id", ondelete="SET NULL"))
    description: Mapped[bytes | None] = mapped_column(LargeBinary)
    priority: Mapped[Priority] = mapped_column(
        StoredWord(Priority, 8), default=Priority.NORMAL, server_default="normal"
    )
    assignee_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    supplier_contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL")
    )
    due_at: Mapped[datetime | None]

    building: Mapped[Building | None] = relationship()
    unit: Mapped[Unit | None] = relationship()
    supplier: Mapped[Contact | None] = relationship(foreign_keys=[supplier_contact_id])
    assignee: Mapped[User | None] = relationship()
    work_orders: Mapped[list[WorkOrder]] = relationship(viewonly=True, order_by="WorkOrder.id")


class TicketNote(Base):
    """An operator's internal note on a ticket (encrypted; never sent to anyone)."""

    __tablename__ = "ticket_notes"
    __table_args__ = (Index(None, "ticket_id", "id"), IDS_NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkOrder(Base):
    """An ordine di lavoro: a ticket's job sent to a supplier as a quick-reply template.

    ``message_id`` is the outbound template message: the supplier's button reply names
    its provider SID (``OriginalRepliedMessageSid``). ``note`` is encrypted.
    """

    __tablename__ = "work_orders"
    __table_args__ = (
        Index(None, "tenant_id", "supplier_contact_id", "status"),
        Index("ix_work_orders_ticket_id", "ticket_id"),
        # The foreign keys' ON DELETE SET NULL when a supplier or a message goes.
        Index("ix_work_orders_supplier_contact_id", "supplier_contact_id"),
        Index("ix_work_orders_message_id", "message_id"),
        IDS_NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    supplier_contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL")
    )
    status: Mapped[WorkOrderStatus] = mapped_column(StoredWord(WorkOrderStatus, 16))
    note: Mapped[bytes | None] = mapped_column(LargeBinary)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    proposed_at: Mapped[datetime | None]
    created_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    supplier: Mapped[Contact | None] = relationship()


class BuildingNotice(Base):
    """An avviso to a building's (or a staircase's) residents who opted into its category."""

    __tablename__ = "building_notices"
    __table_args__ = (Index(None, "tenant_id", "id"), IDS_NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    building_id: Mapped[int | None] = mapped_column(ForeignKey("buildings.id", ondelete="SET NULL"))
    scala: Mapped[str | None] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(32))
    content_sid: Mapped[str] = mapped_column(String(64))
    variables: Mapped[dict[str, Any]] = mapped_column(default=dict)
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    actor: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NoticeDelivery(Base):
    """One resident's copy of a notice: the message it went as (or why it did not)."""

    __tablename__ = "notice_deliveries"
    __table_args__ = (
        UniqueConstraint("notice_id", "contact_id"),
        # Erasure takes a person's copies; a purged message's copy loses its link.
        Index("ix_notice_deliveries_contact_id", "contact_id"),
        Index("ix_notice_deliveries_message_id", "message_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    notice_id: Mapped[int] = mapped_column(ForeignKey("building_notices.id", ondelete="CASCADE"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    refusal: Mapped[str | None] = mapped_column(String(32))


class TicketEvent(Base):
    """One entry of a ticket's timeline: what happened, when, by whom.

    ``actor`` is ``user:<id>``, ``system``, ``api``, ``contact`` or another named
    part; ``detail`` holds ids and short facts, never a message body or a phone number.
    """

    __tablename__ = "ticket_events"
    __table_args__ = (Index(None, "ticket_id", "id"), IDS_NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[TicketEventKind] = mapped_column(StoredWord(TicketEventKind, 32))
    actor: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The work order a step concerns (its own timeline is these rows).
    work_order_id: Mapped[int | None] = mapped_column(
        ForeignKey("work_orders.id", ondelete="SET NULL")
    )


class Event(Base):
    """A visit or an access to schedule (from an ``appuntamento`` message)."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "source_message_id"),
        Index("ix_events_source_message_id", "source_message_id"),
        Index("ix_events_conversation_id", "conversation_id"),
        IDS_NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL")
    )
    source_message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(String(16), default="proposed")
    entities: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PushSubscription(Base):
    """One browser's Web Push subscription (RFC 8030), for a console user.

    The endpoint is the push service's URL for that browser (FCM, Mozilla, Apple):
    unique, because a browser that subscribes again under another operator is the
    same device changing hands. ``p256dh`` and ``auth`` are the browser's keys that
    each message is encrypted for (RFC 8291).
    """

    __tablename__ = "push_subscriptions"
    __table_args__ = (Index(None, "tenant_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    endpoint: Mapped[str] = mapped_column(String(1024), unique=True)
    p256dh: Mapped[str] = mapped_column(String(128))
    auth: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_success_at: Mapped[datetime | None]
    # Consecutive failed deliveries; reset by a success.
    failures: Mapped[int] = mapped_column(Integer, default=0)


class OnCallPerson(Base):
    """Someone the office calls when an emergency stays unacknowledged, in ``position`` order."""

    __tablename__ = "oncall_people"
    __table_args__ = (UniqueConstraint("tenant_id", "phone"), Index(None, "tenant_id", "position"))

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EscalationCall(Base):
    """One voice call of an emergency's escalation.

    ``sequence`` numbers the calls of one conversation's emergency (0, 1, ...): the
    unique constraint on it is the claim that stops two workers placing the same call.
    ``hazard`` and ``place`` (``presso <building>`` or ``in <street>``) are what the call
    said, never the resident's name or number, kept to say it again after a wrong key.
    """

    __tablename__ = "escalation_calls"
    __table_args__ = (UniqueConstraint("conversation_id", "sequence"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    oncall_id: Mapped[int | None] = mapped_column(
        ForeignKey("oncall_people.id", ondelete="SET NULL")
    )
    sequence: Mapped[int] = mapped_column(Integer)
    round: Mapped[int] = mapped_column(Integer)
    call_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    hazard: Mapped[str | None] = mapped_column(String(64))
    place: Mapped[str | None] = mapped_column(String(200))
    placed_at: Mapped[datetime] = mapped_column(default=utcnow)
    outcome: Mapped[CallOutcome] = mapped_column(
        StoredWord(CallOutcome, 16), default=CallOutcome.CLAIMED
    )
    acknowledged_at: Mapped[datetime | None]


class PasswordLink(Base):
    """A one-time link to set a console password (an invitation or a reset).

    Only the SHA-256 of the link's token is kept: the admin sees the link once, and a
    copy of the database cannot be turned into a working link. It works once
    (``used_at``) and until ``expires_at``; a newer link for the same account
    replaces the older ones.
    """

    __tablename__ = "password_links"
    __table_args__ = (Index(None, "tenant_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    purpose: Mapped[PasswordLinkPurpose] = mapped_column(StoredWord(PasswordLinkPurpose, 16))
    created_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class DataRequest(Base):
    """A data-subject request (access or erasure) in the admin's queue, due in 30 days.

    From chat it is opened from the ledger event that recorded it (``ledger_event_id``,
    unique per office, so it is opened once); entered by hand it has none. It outlives
    an erasure as the record that the request was answered: the contact link goes
    (SET NULL) and the person stays named only by the ledger's keyed hash and a masked
    number.
    """

    __tablename__ = "data_requests"
    __table_args__ = (
        UniqueConstraint("tenant_id", "ledger_event_id"),
        Index(None, "tenant_id", "status", "due_at"),
        # Erasure (the foreign key's ON DELETE SET NULL) finds the person's requests.
        Index("ix_data_requests_contact_id", "contact_id"),
        IDS_NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    subject_ref: Mapped[str] = mapped_column(String(64))
    masked_phone: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[RequestKind] = mapped_column(StoredWord(RequestKind, 16))
    origin: Mapped[RequestOrigin] = mapped_column(StoredWord(RequestOrigin, 16))
    status: Mapped[RequestStatus] = mapped_column(
        StoredWord(RequestStatus, 16), default=RequestStatus.OPEN
    )
    ledger_event_id: Mapped[int | None] = mapped_column(Integer)
    # How a request entered by hand arrived (a letter, an email, at the desk).
    received_via: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime]
    due_at: Mapped[datetime]
    # The encrypted export prepared for an access request (by chat, or by the admin).
    export_path: Mapped[str | None] = mapped_column(String(500))
    created_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    closed_at: Mapped[datetime | None]
    closed_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    outcome: Mapped[str | None] = mapped_column(Text)


# -- the office's CRM: outbound webhooks ---------------------------------------------------

_PENDING_DELIVERY = text("status = 'pending'")


class WebhookEndpoint(Base):
    """A URL of the office's CRM that receives signed events (``bot.crm``).

    The signing secret is stored encrypted, not hashed: every delivery is signed with
    it. During a rotation the previous secret signs too, until ``previous_secret_until``.
    ``events`` lists the types it receives; empty means every type. An endpoint failing
    for the whole retry window is disabled (``disabled_at``): its deliveries wait,
    recorded, until an admin enables it again.
    """

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index(None, "tenant_id"), IDS_NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[Any]] = mapped_column(default=list)
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    previous_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_until: Mapped[datetime | None]
    # Explicit exceptions to "public HTTPS only", chosen when the endpoint was added.
    allow_loopback: Mapped[bool] = mapped_column(Boolean, default=False)
    allow_private: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # First failed attempt since the last success: the clock of the disabling rule.
    failing_since: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(String(200))


class WebhookEvent(Base):
    """The outbox: one event for the office's CRM, written in the transaction of the
    change it reports, so that no change goes untold and nothing untrue is told.

    ``uid`` is the id receivers see (and dedupe on). ``data`` holds ids and a short
    summary; what the office chose to add (the message's text, the contact's number)
    is kept apart, encrypted, in ``private``. ``conversation_id`` orders deliveries;
    it and ``contact_id`` are plain ids (no foreign key) so that erasure finds the
    events of the person it erases.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (
        Index(None, "tenant_id", "created_at"),
        Index("ix_webhook_events_tenant_id_contact_id", "tenant_id", "contact_id"),
        IDS_NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    uid: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[WebhookEventType] = mapped_column(StoredWord(WebhookEventType, 64))
    conversation_id: Mapped[int | None] = mapped_column(Integer)
    contact_id: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    private: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event's delivery to one endpoint, and its log (attempts, latency, last error).

    Due when pending, ``next_attempt_at`` has come and no earlier pending delivery of
    the same conversation waits for the same endpoint; a worker claims it with a lease
    (``lease_until``), so a dead worker's claim expires and the delivery is retried.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index(None, "tenant_id", "id"),
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_event_id", "event_id"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            sqlite_where=_PENDING_DELIVERY,
            postgresql_where=_PENDING_DELIVERY,
        ),
        Index(
            "ix_webhook_deliveries_pending_order",
            "endpoint_id",
            "conversation_id",
            "id",
            sqlite_where=_PENDING_DELIVERY,
            postgresql_where=_PENDING_DELIVERY,
        ),
        IDS_NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    conversation_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[WebhookDeliveryStatus] = mapped_column(
        StoredWord(WebhookDeliveryStatus, 16), default=WebhookDeliveryStatus.PENDING
    )
    replay: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Where its retry window starts (written, replayed, or its endpoint enabled again):
    # a delivery still failing a window later is given up.
    retry_from: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(200))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    delivered_at: Mapped[datetime | None]

    event: Mapped[WebhookEvent] = relationship(lazy="joined")


class FileDeletion(Base):
    """A media file whose row is gone and which is still to be unlinked.

    Written in the same transaction that deletes the media rows, and removed once the
    file is unlinked: a process that dies between the commit and the unlink leaves the
    path here, and the next purge unlinks it. Paths only; no office data.
    """

    __tablename__ = "file_deletions"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
