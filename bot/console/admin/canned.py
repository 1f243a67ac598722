"""Canned responses: the office's ready answers, which operators pick in a conversation.

The admin writes, changes and deletes them; each change is audited (its title, not
its text, which the page shows anyway).
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from bot.console.admin.access import admin_required
from bot.console.auth import actor
from bot.console.blueprint import bp
from bot.console.notes import (
    MAX_CANNED_CHARS,
    MAX_TITLE_CHARS,
    canned_responses,
    delete_canned,
    save_canned,
)
from bot.exceptions import Refused
from bot.services import services


@bp.get("/admin/canned")
@admin_required
def admin_canned() -> str:
    with services().db.read() as db:
        items = canned_responses(db, actor().tenant_id)
    return render_template(
        "console/admin/canned.html",
        items=items,
        max_title=MAX_TITLE_CHARS,
        max_body=MAX_CANNED_CHARS,
    )


def _save(canned_id: int | None) -> Response:
    try:
        save_canned(
            services(),
            actor(),
            request.form.get("title", ""),
            request.form.get("body", ""),
            canned_id,
        )
    except Refused as refusal:
        flash(refusal.message, "error")
    else:
        flash("Risposta pronta salvata.", "ok")
    return redirect(url_for("console.admin_canned"))


@bp.post("/admin/canned")
@admin_required
def admin_canned_create() -> Response:
    return _save(None)


@bp.post("/admin/canned/<id:canned_id>")
@admin_required
def admin_canned_update(canned_id: int) -> Response:
    return _save(canned_id)


@bp.post("/admin/canned/<id:canned_id>/delete")
@admin_required
def admin_canned_delete(canned_id: int) -> Response:
    delete_canned(services(), actor(), canned_id)
    flash("Risposta pronta eliminata.", "ok")
    return redirect(url_for("console.admin_canned"))
