"""The audit trail: who did what, when, from where; hash-chained per tenant.

Each row's hash covers its own content and the previous row's hash, so editing or
deleting any row breaks every hash after it, which :func:`verify_chain` reports.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session

from bot.office.actor import Actor
from storage.models import AuditEvent, Tenant, utcnow

GENESIS = "0" * 64


# What a row's hash covers, in this order (the order verify_chain reads them in).
HASHED_FIELDS = (
    "tenant_id",
    "at",
    "user_id",
    "actor",
    "action",
    "target_type",
    "target_id",
    "ip",
    "detail",
    "prev_hash",
)
# json.dumps with these options builds an encoder per call; one is enough.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(event: Any) -> str:
    """The hash of an audit event (or anything with its fields as attributes)."""
    return _digest_of([getattr(event, name) for name in HASHED_FIELDS])


def _digest_of(values: Sequence[Any]) -> str:
    """The hash of an event's HASHED_FIELDS values, given in that order."""
    content = dict(zip(HASHED_FIELDS, values, strict=True))
    content["at"] = content["at"].isoformat()
    return hashlib.sha256(_CANONICAL.encode(content).encode("utf-8")).hexdigest()


def record_audit(
    session: Session,
    tenant_id: int,
    action: str,
    *,
    actor: str,
    user_id: int | None = None,
    target_type: str | None = None,
    target_id: int | str | None = None,
    ip: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    # Serialise writers per tenant so two events cannot claim the same predecessor
    # (a row lock on PostgreSQL; SQLite transactions are already exclusive here).
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    previous = session.scalar(
        select(AuditEvent.hash)
        .where(AuditEvent.tenant_id == tenant_id)
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    event = AuditEvent(
        tenant_id=tenant_id,
        at=utcnow(),
        user_id=user_id,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        ip=ip,
        detail=detail or {},
        prev_hash=previous or GENESIS,
    )
    event.hash = _digest(event)
    session.add(event)
    session.flush()
    return event


def record_actor_audit(
    session: Session,
    actor: Actor,
    action: str,
    target_type: str | None = None,
    target_id: int | str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """A person's move in the console or the API, as an audit event: who, from where, what."""
    return record_audit(
        session,
        actor.tenant_id,
        action,
        actor=actor.audit_name,
        user_id=actor.user_id,
        target_type=target_type,
        target_id=target_id,
        ip=actor.ip,
        detail=detail,
    )


@dataclass(frozen=True)
class ChainProblem:
    event_id: int
    reason: str


@dataclass
class ChainReport:
    checked: int = 0
    # The first MAX_PROBLEMS problems, in the chain's order; how many more there were.
    problems: list[ChainProblem] = field(default_factory=list)
    more_problems: int = 0

    def add(self, problem: ChainProblem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.more_problems += 1


VERIFY_BATCH = 5_000
MAX_PROBLEMS = 100


def verify_chain(
    session: Session, tenant_id: int, *, batch_size: int = VERIFY_BATCH
) -> ChainReport:
    """Walk the office's chain in id order, a batch at a time, and report broken links.

    The rows are read as plain rows (no ORM objects, no identity map) in batches by
    id from the (office, id) index, so memory stays that of one batch however long
    the trail, and each row is hashed as it goes by.
    """
    report = ChainReport()
    expected_prev = GENESIS
    table = AuditEvent.__table__
    columns = [
        table.c.id,
        *(_RAW_DETAIL if name == "detail" else table.c[name] for name in HASHED_FIELDS),
        table.c.hash,
    ]
    last_id = 0
    while True:
        batch = session.execute(
            select(*columns)
            .where(table.c.tenant_id == tenant_id, table.c.id > last_id)
            .order_by(table.c.id)
            .limit(batch_size)
        ).all()
        for event_id, *hashed, prev_hash, stored in batch:
            if prev_hash != expected_prev:
                report.add(ChainProblem(event_id, BROKEN_LINK))
            hashed[_DETAIL] = _detail(hashed[_DETAIL])
            if _digest_of([*hashed, prev_hash]) != stored:
                report.add(ChainProblem(event_id, CHANGED_ROW))
            expected_prev = stored
        report.checked += len(batch)
        if len(batch) < batch_size:
            return report
        last_id = batch[-1][0]


# Most events have no detail: their JSON is read as text and only decoded when it
# holds something (decoding "{}" half a million times is a third of the work).
_RAW_DETAIL = cast(AuditEvent.__table__.c.detail, Text)
_DETAIL = HASHED_FIELDS.index("detail")


def _detail(stored: str | None) -> Any:
    """The detail as the JSON column would give it."""
    if stored is None:
        return None
    return {} if stored == "{}" else json.loads(stored)


BROKEN_LINK = "previous hash does not match: a row before it was changed or removed"
CHANGED_ROW = "content does not match its hash: the row was changed"
