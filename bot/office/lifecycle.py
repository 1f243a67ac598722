"""Offices: creating them with their first privacy notice, and ending their contract.

Termination stops the service at once (the number is no longer routed, console logins
and API writes are refused) but keeps every record for ``EXPORT_WINDOW``, during which
the office can take its data back (``portineria export``, the API's read calls). When
the window closes, the daily purge deletes the office and everything of it, the
consent ledger and the audit trail included (art. 28(3)(g) GDPR).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Table, delete, func, select

from bot.exceptions import NotFound, TenantExists
from bot.privacy.audit import record_audit
from bot.privacy.consent import DEFAULT_NOTICE_TEXT, publish_notice
from bot.privacy.rights import delete_files, media_files
from bot.services import Services
from storage.db import rows_affected
from storage.models import Base, MediaItem, Tenant, iso_utc

log = logging.getLogger(__name__)

EXPORT_WINDOW = timedelta(days=60)


def create_tenant(
    svc: Services,
    *,
    name: str,
    whatsapp_number: str,
    slug: str,
    notice_url: str | None = None,
) -> Tenant:
    with svc.db.session() as session:
        clash = session.scalar(
            select(Tenant).where(
                (Tenant.slug == slug) | (Tenant.whatsapp_number == whatsapp_number)
            )
        )
        if clash is not None:
            raise TenantExists(f"an office with slug {slug!r} or number {whatsapp_number} exists")
        tenant = Tenant(
            name=name,
            slug=slug,
            whatsapp_number=whatsapp_number,
            settings={
                "send_rate_per_second": 20,
                "redact_sensitive": True,
                "store_profile_name": False,
            },
        )
        session.add(tenant)
        session.flush()
        url = notice_url or f"{svc.config['PUBLIC_BASE_URL']}/privacy/{slug}"
        publish_notice(session, tenant, "1", DEFAULT_NOTICE_TEXT, url)
    svc.tenants.forget()
    return tenant


def terminate_tenant(svc: Services, tenant_id: int, now: datetime, *, actor: str) -> datetime:
    """End the office's service now; returns when its data will be deleted.

    Terminating twice changes nothing: the first termination sets the deadline.
    """
    with svc.db.session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFound("no such office")
        if tenant.terminated_at is not None:
            return tenant.terminated_at + EXPORT_WINDOW
        tenant.terminated_at = now
        record_audit(
            session,
            tenant.id,
            "tenant.terminated",
            actor=actor,
            target_type="tenant",
            target_id=tenant.id,
            detail={"delete_after": iso_utc(now + EXPORT_WINDOW)},
        )
    # This process stops routing its number now; the others within the cache's TTL.
    svc.tenants.forget()
    return now + EXPORT_WINDOW


def expired_tenants(svc: Services, now: datetime) -> dict[int, str]:
    """The offices whose export window has closed: id -> slug."""
    with svc.db.read() as session:
        rows = session.execute(
            select(Tenant.id, Tenant.slug)
            .where(Tenant.terminated_at.is_not(None), Tenant.terminated_at <= now - EXPORT_WINDOW)
            .order_by(Tenant.id)
        ).all()
    return {tenant_id: slug for tenant_id, slug in rows}


def _office_tables() -> list[Table]:
    # Children before parents; every table holding office data has tenant_id.
    return [
        table
        for table in reversed(Base.metadata.sorted_tables)
        if table.name != Tenant.__tablename__ and "tenant_id" in table.c
    ]


def count_tenant_rows(svc: Services, tenant_id: int) -> dict[str, int]:
    """What :func:`delete_tenant` would remove, per table, counted by the database."""
    with svc.db.read() as session:
        return {
            table.name: int(
                session.scalar(
                    select(func.count()).select_from(table).where(table.c.tenant_id == tenant_id)
                )
                or 0
            )
            for table in _office_tables()
        }


def delete_tenant(svc: Services, tenant_id: int) -> dict[str, int]:
    """Delete the office and whatever of it is left: rows removed per table.

    One transaction, so the office is there whole or gone; the retention purge first
    deletes its large tables in batches (:mod:`bot.privacy.retention`), and what this
    transaction finds is the small rest.
    """
    removed: dict[str, int] = {}
    with svc.db.session() as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        files = media_files(session, tenant, MediaItem.path.is_not(None))
        for table in _office_tables():
            result = session.execute(delete(table).where(table.c.tenant_id == tenant_id))
            removed[table.name] = rows_affected(result)
        session.delete(tenant)
        session.flush()
    delete_files(files)
    log.info("office %d deleted at the end of its export window", tenant_id)
    return removed
