"""Delivery status of outbound messages, applied monotonically."""

from __future__ import annotations

from sqlalchemy import Engine, update

from storage.models import Message, utcnow

# Twilio's callbacks can arrive out of order: a late "sent" must not overwrite
# "delivered" or "read". Failure outranks progress short of delivery.
STATUS_RANK: dict[str, int] = {
    "pending": 0,
    "accepted": 1,
    "scheduled": 1,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "failed": 4,
    "undelivered": 4,
    "canceled": 4,
    "delivered": 5,
    "read": 6,
}

_messages = Message.__table__


def apply_status(
    engine: Engine, tenant_id: int, provider_sid: str, status: str, error_code: int | None
) -> int | None:
    """Record a status if it moves the message forward; returns the message id if it did."""
    rank = STATUS_RANK.get(status)
    if rank is None:
        return None
    statement = (
        update(_messages)
        .where(
            _messages.c.tenant_id == tenant_id,
            _messages.c.provider_sid == provider_sid,
            _messages.c.direction == "out",
            _messages.c.status_rank < rank,
        )
        .values(status=status, status_rank=rank, error_code=error_code, status_at=utcnow())
        .returning(_messages.c.id)
    )
    with engine.begin() as connection:
        return connection.execute(statement).scalar()
