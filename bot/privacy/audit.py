"""The audit trail: who did what, when, from where; hash-chained per tenant.

Each row's hash covers its own content and the previous row's hash, so editing or
deleting any row breaks every hash after it, which :func:`verify_chain` reports.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.office.actor import Actor
from storage.models import AuditEvent, Tenant, utcnow

GENESIS = "0" * 64


def _digest(event: AuditEvent) -> str:
    content = {
        "tenant_id": event.tenant_id,
        "at": event.at.isoformat(),
        "user_id": event.user_id,
        "actor": event.actor,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "ip": event.ip,
        "detail": event.detail,
        "prev_hash": event.prev_hash,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


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


def verify_chain(session: Session, tenant_id: int) -> list[ChainProblem]:
    problems: list[ChainProblem] = []
    expected_prev = GENESIS
    for event in session.scalars(
        select(AuditEvent).where(AuditEvent.tenant_id == tenant_id).order_by(AuditEvent.id)
    ):
        if event.prev_hash != expected_prev:
            problems.append(
                ChainProblem(
                    event.id, "previous hash does not match: a row before it was changed or removed"
                )
            )
        if _digest(event) != event.hash:
            problems.append(
                ChainProblem(event.id, "content does not match its hash: the row was changed")
            )
        expected_prev = event.hash
    return problems
