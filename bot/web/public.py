"""Pages anyone may open: the office's full privacy notice."""

from __future__ import annotations

from flask import Blueprint, abort, render_template

from bot.privacy.consent import active_notice
from bot.services import services
from storage.queries import tenant_by_slug

bp = Blueprint("public", __name__)


@bp.get("/privacy/<slug>")
def privacy_notice(slug: str) -> str:
    with services().db.read() as session:
        tenant = tenant_by_slug(session, slug)
        notice = active_notice(session, tenant) if tenant else None
        if tenant is None or notice is None:
            abort(404)
        text = notice.text.format(office=tenant.name)
        return render_template(
            "privacy.html",
            office=tenant.name,
            text=text,
            version=notice.version,
            sha256=notice.sha256,
        )
