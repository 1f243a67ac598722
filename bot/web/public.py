"""Pages anyone may open: the office's full privacy notice, ``/`` (to the console), and
an operator's attachment behind its signed, expiring address (for Twilio to fetch)."""

from __future__ import annotations

from flask import Blueprint, Response, abort, redirect, render_template, url_for
from werkzeug.wrappers import Response as BaseResponse

from bot.exceptions import NotFound
from bot.outbound.attachments import open_signed
from bot.privacy.consent import active_notice
from bot.privacy.full_notice import blocks
from bot.services import services
from storage.queries import tenant_by_slug

bp = Blueprint("public", __name__)


@bp.get("/")
def home() -> BaseResponse:
    # Nothing public lives at the root: whoever opens it is looking for the console.
    return redirect(url_for("console.inbox"))


@bp.get("/privacy/<slug>")
def privacy_notice(slug: str) -> str:
    """The full notice of the version in force (its short text, for a version
    published before full texts were kept)."""
    with services().db.read() as session:
        tenant = tenant_by_slug(session, slug)
        notice = active_notice(session, tenant) if tenant else None
        if tenant is None or notice is None:
            abort(404)
        full = notice.full_text is not None
        text = (notice.full_text if full else notice.text) or ""
        return render_template(
            "privacy.html",
            office=tenant.name,
            blocks=blocks(text.replace("{office}", tenant.name)),
            short_text=notice.text.replace("{office}", tenant.name),
            full=full,
            version=notice.version,
            sha256=notice.sha256,
            full_sha256=notice.full_sha256,
            published_at=notice.created_at,
        )


@bp.get("/media/<token>")
def outbound_media(token: str) -> Response:
    """An attachment an operator sent, while its signed address is valid (else 404)."""
    try:
        data, content_type = open_signed(services(), token[:512])
    except NotFound:
        abort(404)
    response = Response(data, mimetype=content_type)
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["Content-Disposition"] = "inline"
    return response
