"""Building notices (avvisi) instead of condominium WhatsApp groups.

One-to-one template messages from the office's number to the residents of a building
(or of one staircase) who accepted the channel and opted into the notice's category
(``AVVISI SI``); never to anyone withdrawn, and no resident ever sees another's
number. :func:`create_notice` chooses the recipients and checks the office's daily
cap of distinct recipients of business-initiated messages (Meta's messaging tier,
default 250); :func:`send_notice` (a job) sends the copies at the office's send rate.

A convocation of the condominium assembly is refused: WhatsApp is not a valid channel
to convene one (art. 66 disp. att. c.c.: PEC, registered letter or hand delivery).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.exceptions import InvalidInput, NotFound, Refused, SendDeferred
from bot.office.buildings import building_by_code
from bot.outbound import Envelope, Outgoing, Template, send_message
from bot.privacy.audit import record_audit
from bot.services import Services
from storage.models import (
    BuildingLink,
    BuildingNotice,
    Contact,
    Message,
    NoticeDelivery,
    Tenant,
    Unit,
    utcnow,
)
from storage.queries import open_conversation_for
from storage.vocabulary import (
    BuildingRole,
    Consent,
    Direction,
    NoticeCategory,
    Purpose,
    Refusal,
)

log = logging.getLogger(__name__)

DEFAULT_DAILY_CAP = 250  # Meta's first messaging tier: distinct recipients a rolling day
BUSINESS_INITIATED_WINDOW = timedelta(hours=24)
# How long one copy may wait for the send rate before the job is retried later.
MAX_RATE_WAITS = 20


def daily_cap(tenant: Tenant) -> int:
    return int((tenant.settings or {}).get("notices_daily_cap", DEFAULT_DAILY_CAP))


def recipients_of(
    session: Session, tenant_id: int, building_id: int, scala: str | None, category: str
) -> list[Contact]:
    """The building's (staircase's) residents who accepted the channel and opted in."""
    query = (
        select(Contact)
        .join(BuildingLink, BuildingLink.contact_id == Contact.id)
        .where(
            Contact.tenant_id == tenant_id,
            BuildingLink.building_id == building_id,
            Contact.consent == Consent.GRANTED,
            (BuildingLink.role.is_(None)) | (BuildingLink.role != BuildingRole.FORNITORE),
        )
        .order_by(Contact.id)
    )
    if scala:
        query = query.join(Unit, Unit.id == BuildingLink.unit_id).where(Unit.scala == scala)
    # The categories are a short JSON list: filtered here, the same on every backend.
    return [c for c in session.scalars(query) if category in (c.notice_categories or [])]


def recent_business_recipients(session: Session, tenant_id: int) -> set[int]:
    """Contacts sent a template (business-initiated) in the last rolling day."""
    since = utcnow() - BUSINESS_INITIATED_WINDOW
    return set(
        session.scalars(
            select(Message.contact_id)
            .where(
                Message.tenant_id == tenant_id,
                Message.direction == Direction.OUT,
                Message.template_sid.is_not(None),
                Message.created_at >= since,
                Message.contact_id.is_not(None),
            )
            .distinct()
        )
    )


def create_notice(
    svc: Services,
    tenant: Tenant,
    *,
    building_code: str,
    scala: str | None,
    category: str,
    content_sid: str,
    variables: dict[str, str],
    actor: str,
    user_id: int | None = None,
    ip: str | None = None,
) -> tuple[int, int]:
    """Record a notice and its copies, then queue their sending: ``(id, recipients)``."""
    if category == NoticeCategory.CONVOCAZIONE_ASSEMBLEA:
        raise Refused(
            "WhatsApp non è un canale valido per convocare l'assemblea (art. 66 disp. att. "
            "c.c.): la convocazione va inviata per PEC, raccomandata o consegna a mano.",
            "not_a_valid_convocation_channel",
        )
    if category not in set(NoticeCategory):
        raise InvalidInput(f"unknown category {category!r}")
    with svc.db.session() as session:
        building = building_by_code(session, tenant.id, building_code)
        if building is None:
            raise NotFound("no such building")
        people = recipients_of(session, tenant.id, building.id, scala, category)
        already = recent_business_recipients(session, tenant.id)
        newcomers = {p.id for p in people} - already
        if len(already) + len(newcomers) > daily_cap(tenant):
            raise Refused(
                "Limite giornaliero di destinatari raggiunto: l'avviso non è partito.",
                "daily_cap_exceeded",
            )
        notice = BuildingNotice(
            tenant_id=tenant.id,
            building_id=building.id,
            scala=scala or None,
            category=category,
            content_sid=content_sid,
            variables=variables,
            recipients=len(people),
            actor=actor,
        )
        session.add(notice)
        session.flush()
        for person in people:
            session.add(
                NoticeDelivery(tenant_id=tenant.id, notice_id=notice.id, contact_id=person.id)
            )
        record_audit(
            session,
            tenant.id,
            "notice.created",
            actor=actor,
            user_id=user_id,
            target_type="notice",
            target_id=notice.id,
            ip=ip,
            detail={"building": building.code, "scala": scala, "recipients": len(people)},
        )
        notice_id, count = notice.id, len(people)
    svc.jobs.enqueue_notice(notice_id)
    return notice_id, count


def send_notice(svc: Services, notice_id: int) -> None:
    """Send each copy not sent yet, under its own idempotency key, at the send rate."""
    with svc.db.read() as session:
        notice = session.get(BuildingNotice, notice_id)
        if notice is None:
            return
        tenant = session.get(Tenant, notice.tenant_id)
        waiting = session.scalars(
            select(NoticeDelivery)
            .where(
                NoticeDelivery.notice_id == notice_id,
                NoticeDelivery.message_id.is_(None),
                NoticeDelivery.refusal.is_(None),
                NoticeDelivery.contact_id.is_not(None),
            )
            .order_by(NoticeDelivery.id)
        ).all()
    assert tenant is not None
    template = Template(notice.content_sid, dict(notice.variables or {}))
    for copy in waiting:
        _send_copy(svc, tenant, notice_id, copy, template)


def _send_copy(
    svc: Services, tenant: Tenant, notice_id: int, copy: NoticeDelivery, template: Template
) -> None:
    with svc.db.read() as session:
        contact = session.get(Contact, copy.contact_id)
        if contact is None:
            return
        thread = open_conversation_for(session, tenant, contact)
    envelope = Envelope(tenant, contact, thread, f"notice:{notice_id}:{contact.id}")
    outgoing = Outgoing(template=template, purpose=Purpose.BUILDING_NOTICE)
    for _ in range(MAX_RATE_WAITS):
        outcome = send_message(svc, envelope, outgoing)
        if outcome.refusal is None or outcome.refusal.reason != Refusal.RATE_LIMITED:
            break
        # Over the office's send rate: the next second's budget.
        time.sleep(1.0 - time.time() % 1.0 + 0.01)
    else:
        raise SendDeferred(f"notice {notice_id} over the send rate")
    with svc.db.session() as session:
        stored = session.get(NoticeDelivery, copy.id)
        if stored is None:
            return
        stored.message_id = outcome.message_id
        stored.refusal = str(outcome.refusal.reason) if outcome.refusal else None


def notice_counts(session: Session, notice: BuildingNotice) -> dict[str, Any]:
    """A notice's copies by delivery status (``refused`` for those the gate kept back)."""
    rows = session.execute(
        select(Message.status, func.count())
        .join(NoticeDelivery, NoticeDelivery.message_id == Message.id)
        .where(NoticeDelivery.notice_id == notice.id)
        .group_by(Message.status)
    ).all()
    counts: dict[str, int] = {str(status): int(n) for status, n in rows}
    refused = session.scalar(
        select(func.count())
        .select_from(NoticeDelivery)
        .where(NoticeDelivery.notice_id == notice.id, NoticeDelivery.refusal.is_not(None))
    )
    if refused:
        counts["refused"] = int(refused)
    queued = session.scalar(
        select(func.count())
        .select_from(NoticeDelivery)
        .where(
            NoticeDelivery.notice_id == notice.id,
            NoticeDelivery.refusal.is_(None),
            NoticeDelivery.message_id.is_(None),
        )
    )
    if queued:
        counts["queued_here"] = int(queued)
    return counts


def notice_json(
    session: Session, notice: BuildingNotice, building_code: str | None
) -> dict[str, Any]:
    from storage.models import iso_utc

    return {
        "id": notice.id,
        "building": building_code,
        "scala": notice.scala,
        "category": notice.category,
        "recipients": notice.recipients,
        "created_at": iso_utc(notice.created_at),
        "counts": notice_counts(session, notice),
    }


def notices_for(session: Session, tenant_id: int) -> Sequence[BuildingNotice]:
    return session.scalars(
        select(BuildingNotice)
        .where(BuildingNotice.tenant_id == tenant_id)
        .order_by(BuildingNotice.id.desc())
        .limit(50)
    ).all()
