"""Retention: each office's terms per data category, applied by a scheduled purge.

The purge runs on its own schedule (the worker's housekeeping, once a day, or
``portineria purge``), not when new messages happen to arrive; it deletes media
files as well as rows, and records what it removed in the audit trail. The consent
ledger is not purged: it proves consent for as long as anything of the person is
kept, and it holds no message bodies. The audit log is not purged either, so its
hash chain stays verifiable from the first row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from redis.exceptions import RedisError
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bot.office.lifecycle import delete_expired_tenants
from bot.privacy.audit import record_audit
from bot.privacy.rights import delete_files, delete_rows, erase_in_session, media_files
from bot.services import Services
from storage.models import (
    BotLogEntry,
    BuildingNotice,
    Contact,
    MediaItem,
    Message,
    NoticeDelivery,
    Tenant,
    TicketNote,
    WorkOrder,
)
from storage.vocabulary import OPEN_WORK_ORDERS

log = logging.getLogger(__name__)

# Days; an office overrides any of them in ``settings["retention"]``.
DEFAULT_TERMS: dict[str, int] = {
    "messages_days": 365,
    "media_days": 180,
    "bot_log_days": 365,
    # Wrote once, never accepted, no other legal basis: nothing justifies keeping them.
    "never_consented_days": 30,
    "inactive_contact_days": 730,
    # The office's world: finished work orders, ticket notes, building notices.
    "work_orders_days": 730,
    "ticket_notes_days": 730,
    "notices_days": 365,
}
PURGE_EVERY = timedelta(days=1)
_LAST_RUN_KEY = "portineria:retention:last-run"


@dataclass
class PurgeReport:
    tenant: str
    removed: dict[str, int] = field(default_factory=dict)


def terms_for(tenant: Tenant) -> dict[str, int]:
    overrides = tenant.settings.get("retention") or {}
    return {key: int(overrides.get(key, days)) for key, days in DEFAULT_TERMS.items()}


def purge(svc: Services, now: datetime, *, dry_run: bool = False) -> list[PurgeReport]:
    """Apply every office's terms, and delete the offices whose export window closed;
    with ``dry_run`` count what would go and keep it.

    A terminated office's own terms no longer apply: everything is kept, unchanged,
    for it to export until its window closes.
    """
    with svc.db.read() as session:
        tenants = session.scalars(select(Tenant).where(Tenant.terminated_at.is_(None))).all()
    reports = [_purge_tenant(svc, tenant, now, dry_run) for tenant in tenants]
    deleted = delete_expired_tenants(svc, now, dry_run=dry_run)
    reports += [PurgeReport(slug, {"office": 1, **removed}) for slug, removed in deleted.items()]
    return reports


def preview_purge(svc: Services, tenant: Tenant, now: datetime) -> PurgeReport:
    """What the next purge would delete of this office (nothing is deleted)."""
    return _purge_tenant(svc, tenant, now, dry_run=True)


def _purge_tenant(svc: Services, tenant: Tenant, now: datetime, dry_run: bool) -> PurgeReport:
    terms = terms_for(tenant)
    report = PurgeReport(tenant.slug)
    files: list[str] = []
    with svc.db.session(dry_run=dry_run) as session:
        files += _old_media(session, tenant, now - timedelta(days=terms["media_days"]), report)
        files += _old_messages(
            session, tenant, now - timedelta(days=terms["messages_days"]), report
        )
        report.removed["bot_log"] = delete_rows(
            session,
            BotLogEntry,
            tenant,
            BotLogEntry.at < now - timedelta(days=terms["bot_log_days"]),
        )
        _old_office_records(session, tenant, now, terms, report)
        files += _expired_contacts(session, tenant, now, terms, report)
        if not dry_run:
            record_audit(
                session,
                tenant.id,
                "retention.purge",
                actor="system",
                target_type="tenant",
                target_id=tenant.id,
                detail=report.removed,
            )
    if dry_run:
        return report
    delete_files(files)
    if any(report.removed.values()):
        log.info("retention purge of %s removed %s", tenant.slug, report.removed)
    return report


def _old_office_records(
    session: Session, tenant: Tenant, now: datetime, terms: dict[str, int], report: PurgeReport
) -> None:
    """Finished work orders, ticket notes and building notices past their terms."""
    report.removed["work_orders"] = delete_rows(
        session,
        WorkOrder,
        tenant,
        WorkOrder.status.not_in(OPEN_WORK_ORDERS)
        & (WorkOrder.updated_at < now - timedelta(days=terms["work_orders_days"])),
    )
    report.removed["ticket_notes"] = delete_rows(
        session,
        TicketNote,
        tenant,
        TicketNote.created_at < now - timedelta(days=terms["ticket_notes_days"]),
    )
    old_notices = BuildingNotice.created_at < now - timedelta(days=terms["notices_days"])
    ids = list(
        session.scalars(
            select(BuildingNotice.id).where(BuildingNotice.tenant_id == tenant.id, old_notices)
        )
    )
    delete_rows(session, NoticeDelivery, tenant, NoticeDelivery.notice_id.in_(ids))
    report.removed["notices"] = delete_rows(
        session, BuildingNotice, tenant, BuildingNotice.id.in_(ids)
    )


def _old_media(
    session: Session, tenant: Tenant, cutoff: datetime, report: PurgeReport
) -> list[str]:
    condition = MediaItem.created_at < cutoff
    files = media_files(session, tenant, condition)
    report.removed["media"] = delete_rows(session, MediaItem, tenant, condition)
    return files


def _old_messages(
    session: Session, tenant: Tenant, cutoff: datetime, report: PurgeReport
) -> list[str]:
    # Unprocessed inbound messages are kept whatever their age: nothing is lost
    # before it has been handled.
    old = select(Message.id).where(
        Message.tenant_id == tenant.id,
        Message.created_at < cutoff,
        or_(Message.direction == "out", Message.processed_at.is_not(None)),
    )
    ids = list(session.scalars(old))
    files = media_files(session, tenant, MediaItem.message_id.in_(ids))
    delete_rows(session, MediaItem, tenant, MediaItem.message_id.in_(ids))
    report.removed["messages"] = delete_rows(session, Message, tenant, Message.id.in_(ids))
    return files


def _expired_contacts(
    session: Session, tenant: Tenant, now: datetime, terms: dict[str, int], report: PurgeReport
) -> list[str]:
    never_consented = session.scalars(
        select(Contact).where(
            Contact.tenant_id == tenant.id,
            Contact.consent.in_(("none", "pending")),
            Contact.legal_basis.is_(None),
            Contact.created_at < now - timedelta(days=terms["never_consented_days"]),
        )
    ).all()
    inactive = session.scalars(
        select(Contact).where(
            Contact.tenant_id == tenant.id,
            Contact.last_contact_at < now - timedelta(days=terms["inactive_contact_days"]),
        )
    ).all()
    report.removed["never_consented_contacts"] = len(never_consented)
    expired = {c.id: c for c in [*never_consented, *inactive]}
    report.removed["inactive_contacts"] = len(expired) - len(never_consented)
    files: list[str] = []
    for contact in expired.values():
        _removed, contact_files = erase_in_session(session, tenant, contact)
        files += contact_files
    return files


def purge_if_due(svc: Services, now: datetime) -> list[PurgeReport] | None:
    """The daily purge, run by whichever worker claims the day first."""
    try:
        claimed = svc.redis.set(
            _LAST_RUN_KEY, now.isoformat(), nx=True, ex=int(PURGE_EVERY.total_seconds())
        )
    except RedisError:
        return None  # no shared clock: the next housekeeping round tries again
    if not claimed:
        return None
    return purge(svc, now)


def report_lines(reports: list[PurgeReport]) -> list[str]:
    return [
        f"{r.tenant}: " + ", ".join(f"{kind} {count}" for kind, count in r.removed.items())
        for r in reports
    ]
