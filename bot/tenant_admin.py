"""Creating offices and their first privacy notice."""

from __future__ import annotations

from sqlalchemy import select

from bot.consent import DEFAULT_NOTICE_TEXT, publish_notice
from bot.services import Services
from storage.models import Tenant


class TenantExists(Exception):
    pass


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
