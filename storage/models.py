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
    Channel,
    Consent,
    ContactKind,
    ConversationStatus,
    DataSource,
    Direction,
    LedgerEvent,
    LegalBasis,
    MessageStatus,
    Mode,
    Priority,
    Purpose,
    Role,
    TicketKind,
    TicketStatus,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


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
    __table_args__ = (UniqueConstraint("tenant_id", "wa_id"), Index(None, "tenant_id", "phone"))

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


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        Index(None, "tenant_id", "needs_attention", "last_message_at"),
        # Erasing a contact finds their threads (and its foreign key check does too).
        Index("ix_conversations_contact_id", "contact_id"),
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
            sqlite_where=text("processed_at IS NULL AND direction = 'in'"),
            postgresql_where=text("processed_at IS NULL AND direction = 'in'"),
        ),
        Index(
            "ix_messages_pending_out",
            "created_at",
            sqlite_where=text("status = 'pending' AND direction = 'out'"),
            postgresql_where=text("status = 'pending' AND direction = 'out'"),
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


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class PrivacyNotice(Base):
    """An immutable version of a tenant's short privacy notice."""

    __tablename__ = "privacy_notices"
    __table_args__ = (UniqueConstraint("tenant_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    full_notice_url: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsentEvent(Base):
    """Append-only consent ledger row (the database refuses UPDATE and DELETE)."""

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
    notice_version: Mapped[str | None] = mapped_column(String(32))
    notice_sha256: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(64))


class BotLogEntry(Base):
    __tablename__ = "bot_log"
    __table_args__ = (
        # The API reads it by time; retention walks it in (at, id) order.
        Index(None, "tenant_id", "at", "id"),
        # Deleting a message sets its entries' message_id to NULL: found by this index,
        # not by a scan of the whole log per message.
        Index("ix_bot_log_message_id", "message_id"),
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
    __table_args__ = (Index(None, "tenant_id", "id"),)

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


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        UniqueConstraint("tenant_id", "source_message_id"),
        Index(None, "tenant_id", "created_at"),
        # For the foreign keys' ON DELETE SET NULL when messages and conversations go.
        Index("ix_tickets_source_message_id", "source_message_id"),
        Index("ix_tickets_conversation_id", "conversation_id"),
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
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Event(Base):
    """A visit or an access to schedule (from an ``appuntamento`` message)."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "source_message_id"),
        Index("ix_events_source_message_id", "source_message_id"),
        Index("ix_events_conversation_id", "conversation_id"),
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
