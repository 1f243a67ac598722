"""Building notices from the console: the list with counts, and a new notice from one of
the office's approved templates to a building's (or staircase's) opted-in residents."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from bot.console.auth import actor
from bot.console.blueprint import bp
from bot.exceptions import InvalidInput, NotFound, Refused
from bot.office.buildings import tenant_buildings
from bot.office.notices import create_notice, notice_json, notices_for
from bot.services import services
from storage.models import Tenant
from storage.vocabulary import NoticeCategory

MAX_VARIABLE = 500


@bp.get("/notices")
def notices() -> str:
    who = actor()
    with services().db.read() as db:
        tenant = db.get(Tenant, who.tenant_id)
        assert tenant is not None
        buildings = tenant_buildings(db, who.tenant_id)
        codes = {b.id: b.code for b in buildings}
        rows = [
            notice_json(db, n, codes.get(n.building_id or 0))
            for n in notices_for(db, who.tenant_id)
        ]
    return render_template(
        "console/notices.html",
        notices=rows,
        buildings=buildings,
        templates=(tenant.settings or {}).get("approved_templates") or [],
        categories=list(NoticeCategory),
    )


@bp.post("/notices")
def notice_send() -> Response:
    who = actor()
    svc = services()
    form = request.form
    with svc.db.read() as db:
        tenant = db.get(Tenant, who.tenant_id)
    assert tenant is not None
    approved = {t["content_sid"] for t in (tenant.settings or {}).get("approved_templates") or []}
    sid = form.get("content_sid", "")
    text = form.get("text", "").strip()[:MAX_VARIABLE]
    try:
        if sid not in approved:
            raise Refused("Scegli uno dei modelli approvati dello studio.")
        notice_id, count = create_notice(
            svc,
            tenant,
            building_code=form.get("building", ""),
            scala=form.get("scala", "").strip() or None,
            category=form.get("category", ""),
            content_sid=sid,
            variables={"1": text} if text else {},
            actor=who.audit_name,
            user_id=who.user_id,
            ip=who.ip,
        )
    except (Refused, InvalidInput, NotFound) as refusal:
        flash(getattr(refusal, "message", "Condominio o categoria non validi."), "error")
    else:
        flash(f"Avviso n. {notice_id} in invio a {count} condòmini.", "ok")
    return redirect(url_for("console.notices"))
