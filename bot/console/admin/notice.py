"""The privacy notice: edit the short and the full text as a new version, preview,
publish. Published versions are immutable and stay listed with their SHA-256."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from bot.console.admin.access import admin_required, office
from bot.console.auth import actor
from bot.console.blueprint import bp
from bot.privacy.audit import record_actor_audit
from bot.privacy.consent import (
    active_notice,
    notice_problems,
    notice_sha256,
    notice_versions,
    publish_notice,
)
from bot.privacy.full_notice import blocks, default_full_text
from bot.services import services
from storage.models import utcnow


def _next_version(versions: list[str]) -> str:
    numbers = [int(v) for v in versions if v.isdigit()]
    return str(max(numbers) + 1) if numbers else str(len(versions) + 1)


def _editor(version: str, text: str, full_text: str, problems: list[str]) -> str:
    svc = services()
    with svc.db.read() as db:
        tenant = office(db)
        published = notice_versions(db, tenant)
        current = active_notice(db, tenant)
    return render_template(
        "console/admin/notice.html",
        version=version,
        text=text,
        full_text=full_text,
        problems=problems,
        published=published,
        current=current,
        slug=tenant.slug,
    )


def _form() -> tuple[str, str, str]:
    return (
        request.form.get("version", "").strip(),
        request.form.get("text", "").replace("\r\n", "\n").strip(),
        request.form.get("full_text", "").replace("\r\n", "\n").strip(),
    )


@bp.get("/admin/notice")
@admin_required
def admin_notice() -> str:
    svc = services()
    with svc.db.read() as db:
        tenant = office(db)
        current = active_notice(db, tenant)
        versions = [n.version for n in notice_versions(db, tenant)]
    regenerate = request.args.get("predefinito") == "1"
    full = (current.full_text if current and not regenerate else None) or default_full_text(
        svc, tenant, utcnow()
    )
    return _editor(_next_version(versions), current.text if current else "", full, [])


@bp.post("/admin/notice/preview")
@admin_required
def admin_notice_preview() -> str | tuple[str, int]:
    version, text, full_text = _form()
    svc = services()
    with svc.db.read() as db:
        tenant = office(db)
        problems = notice_problems(db, tenant, version, text, full_text)
        name = tenant.name
    if problems:
        return _editor(version, text, full_text, problems), 400
    return render_template(
        "console/admin/notice_preview.html",
        version=version,
        text=text,
        full_text=full_text,
        short_shown=text.replace("{office}", name),
        blocks=blocks(full_text.replace("{office}", name)),
        sha256=notice_sha256(text),
        full_sha256=notice_sha256(full_text),
    )


@bp.post("/admin/notice/edit")
@admin_required
def admin_notice_edit() -> str:
    """Back from the preview to the editor, with the texts as they were."""
    return _editor(*_form(), [])


@bp.post("/admin/notice/publish")
@admin_required
def admin_notice_publish() -> Response | tuple[str, int]:
    version, text, full_text = _form()
    svc, who = services(), actor()
    with svc.db.session() as db:
        tenant = office(db)
        problems = notice_problems(db, tenant, version, text, full_text)
        if not problems:
            url = f"{svc.config['PUBLIC_BASE_URL']}/privacy/{tenant.slug}"
            notice = publish_notice(db, tenant, version, text, url, full_text)
            record_actor_audit(
                db,
                who,
                "notice.publish",
                "notice",
                notice.id,
                detail={
                    "version": version,
                    "sha256": notice.sha256,
                    "full_sha256": notice.full_sha256,
                },
            )
    if problems:
        return _editor(version, text, full_text, problems), 400
    flash(
        f"Informativa versione {version} pubblicata: da ora il benvenuto e la pagina "
        "pubblica usano questa versione.",
        "ok",
    )
    return redirect(url_for("console.admin_notice"))
