"""Outbound messages' delivery: the claim before a send, its result, and Twilio's
status callbacks, applied monotonically."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Table, update

from storage.db import Database
from storage.models import Message, utcnow
from storage.vocabulary import Direction, MessageStatus

# Twilio's callbacks can arrive out of order: a late "sent" must not overwrite
# "delivered" or "read". Failure outranks progress short of delivery.
STATUS_RANK: dict[str, int] = {
    MessageStatus.PENDING: 0,
    MessageStatus.ACCEPTED: 1,
    MessageStatus.SCHEDULED: 1,
    MessageStatus.QUEUED: 1,
    MessageStatus.SENDING: 2,
    MessageStatus.SENT: 3,
    MessageStatus.FAILED: 4,
    MessageStatus.UNDELIVERED: 4,
    MessageStatus.CANCELED: 4,
    MessageStatus.DELIVERED: 5,
    MessageStatus.READ: 6,
}

_messages: Table = Message.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class StatusChange:
    """A status that moved an outbound message forward."""

    tenant_id: int
    message_id: int
    conversation_id: int | None
    contact_id: int | None
    status: str
    error_code: int | None


def apply_status(
    db: Database,
    tenant_id: int,
    provider_sid: str,
    status: str,
    error_code: int | None,
    *,
    then: Callable[[Connection, StatusChange], None] | None = None,
) -> int | None:
    """Record a status if it moves the message forward; returns the message id if it did.

    ``then`` runs in the same transaction when it did (the CRM's outbox is written there).
    """
    rank = STATUS_RANK.get(status)
    if rank is None:
        return None
    statement = (
        update(_messages)
        .where(
            _messages.c.tenant_id == tenant_id,
            _messages.c.provider_sid == provider_sid,
            _messages.c.direction == Direction.OUT,
            _messages.c.status_rank < rank,
        )
        .values(status=status, status_rank=rank, error_code=error_code, status_at=utcnow())
        .returning(_messages.c.id, _messages.c.conversation_id, _messages.c.contact_id)
    )
    with db.begin() as connection:
        row = connection.execute(statement).first()
        if row is None:
            return None
        if then is not None:
            change = StatusChange(
                tenant_id, row.id, row.conversation_id, row.contact_id, status, error_code
            )
            then(connection, change)
        return int(row.id)


def claim_for_sending(db: Database, message_id: int) -> bool:
    """Take a recorded message from ``pending`` to ``sending``: only the one attempt
    that wins this may hand it to the provider."""
    with db.begin() as connection:
        result = connection.execute(
            update(_messages)
            .where(_messages.c.id == message_id, _messages.c.status == MessageStatus.PENDING)
            .values(
                status=MessageStatus.SENDING,
                status_rank=STATUS_RANK[MessageStatus.SENDING],
                status_at=utcnow(),
            )
        )
    return bool(result.rowcount == 1)


def record_send_result(
    db: Database,
    message_id: int,
    status: MessageStatus,
    *,
    provider_sid: str | None = None,
    error_code: int | None = None,
) -> None:
    """What the provider answered to a send (or ``pending`` again, to retry later)."""
    values: dict[str, object] = {
        "status": status,
        "status_rank": STATUS_RANK[status],
        "status_at": utcnow(),
    }
    if provider_sid is not None:
        values["provider_sid"] = provider_sid
    if error_code is not None:
        values["error_code"] = error_code
    with db.begin() as connection:
        connection.execute(update(_messages).where(_messages.c.id == message_id).values(**values))
