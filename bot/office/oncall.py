"""The office's on-call rota: whom to call, in order, when an emergency stays unacknowledged.

People are called in the order they were added (``position``); removing one keeps the
others' order. Every change is audited with the person's name and a masked number:
the audit trail says who was put on call, the rota itself keeps the number.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.exceptions import InvalidInput, NotFound, OnCallExists
from bot.office.phone import e164
from bot.privacy.audit import record_audit
from bot.services import Services
from storage.models import OnCallPerson

MAX_NAME = 200


@dataclass(frozen=True)
class OnCall:
    """A person on the rota, detached from any session."""

    id: int
    position: int
    name: str
    phone: str


def masked(phone: str) -> str:
    """``+39333•••4567``: enough to tell numbers apart in the audit trail, not to call them."""
    return phone[:6] + "•" * max(len(phone) - 10, 3) + phone[-4:] if len(phone) > 10 else "•••"


def rota(session: Session, tenant_id: int) -> list[OnCall]:
    rows = session.scalars(
        select(OnCallPerson)
        .where(OnCallPerson.tenant_id == tenant_id)
        .order_by(OnCallPerson.position, OnCallPerson.id)
    )
    return [OnCall(row.id, row.position, row.name, row.phone) for row in rows]


def list_oncall(svc: Services, tenant_id: int) -> list[OnCall]:
    with svc.db.read() as session:
        return rota(session, tenant_id)


def add_oncall(svc: Services, tenant_id: int, name: str, phone: str, *, actor: str) -> OnCall:
    """Put someone at the end of the rota; raises InvalidInput for a bad name or number."""
    name = " ".join(name.split())
    if not name or len(name) > MAX_NAME:
        raise InvalidInput(f"the name must be 1 to {MAX_NAME} characters")
    number = e164(phone)
    try:
        with svc.db.session() as session:
            last = session.scalar(
                select(func.max(OnCallPerson.position)).where(OnCallPerson.tenant_id == tenant_id)
            )
            person = OnCallPerson(
                tenant_id=tenant_id, position=(last or 0) + 1, name=name, phone=number
            )
            session.add(person)
            session.flush()
            record_audit(
                session,
                tenant_id,
                "oncall.add",
                actor=actor,
                target_type="oncall",
                target_id=person.id,
                detail={"name": name, "phone": masked(number), "position": person.position},
            )
            return OnCall(person.id, person.position, person.name, person.phone)
    except IntegrityError as error:
        raise OnCallExists(f"{masked(number)} is already on call") from error


def remove_oncall(svc: Services, tenant_id: int, phone: str, *, actor: str) -> OnCall:
    """Take the person with this number off the rota; NotFound if nobody has it."""
    number = e164(phone)
    with svc.db.session() as session:
        person = session.scalar(
            select(OnCallPerson).where(
                OnCallPerson.tenant_id == tenant_id, OnCallPerson.phone == number
            )
        )
        if person is None:
            raise NotFound(f"{masked(number)} is not on call")
        removed = OnCall(person.id, person.position, person.name, person.phone)
        session.delete(person)
        session.flush()
        record_audit(
            session,
            tenant_id,
            "oncall.remove",
            actor=actor,
            target_type="oncall",
            target_id=removed.id,
            detail={"name": removed.name, "phone": masked(number)},
        )
        return removed
