"""Console actions as audit events: who (user and IP), what, on which record."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from bot.audit import record_audit
from bot.console.actor import Actor


def audit(
    session: Session,
    actor: Actor,
    action: str,
    target_type: str | None = None,
    target_id: int | str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    record_audit(
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
