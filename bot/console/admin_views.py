"""Admin pages: the audit trail and the bot log here; the rest of the administration
(users, settings, notice, contacts, requests, data, reports) in :mod:`bot.console.admin`.
Operators get 403 on every one of them."""

from __future__ import annotations

from flask import render_template, request

from bot.console.admin.access import admin_required
from bot.console.admin.access import filters_for_audit as _filters_for_audit
from bot.console.auth import actor
from bot.console.blueprint import bp
from bot.console.logs import (
    audit_actions,
    audit_events,
    bot_log,
    bot_log_totals,
    parse_filter,
    tenant_users,
)
from bot.console.paging import page_links
from bot.privacy.audit import record_actor_audit
from bot.services import services

__all__ = ["admin_required"]


@bp.get("/admin/audit")
@admin_required
def audit_log() -> str:
    who, wanted = actor(), parse_filter(request.args)
    with services().db.session() as db:
        page = audit_events(db, who.tenant_id, wanted, request.args.get("prima"))
        users = tenant_users(db, who.tenant_id)
        actions = audit_actions(db, who.tenant_id)
        # Reading the trail is itself an access to personal data.
        record_actor_audit(db, who, "audit_log.view", detail={"filters": _filters_for_audit()})
    return render_template(
        "console/audit_log.html",
        events=page.rows,
        **page_links(page.next_cursor),
        users=users,
        actions=actions,
        wanted=wanted,
        args=request.args,
    )


@bp.get("/admin/bot-log")
@admin_required
def bot_log_page() -> str:
    who, wanted = actor(), parse_filter(request.args)
    with services().db.session() as db:
        page = bot_log(db, who.tenant_id, wanted, request.args.get("prima"))
        totals = bot_log_totals(db, who.tenant_id, wanted)
        record_actor_audit(db, who, "bot_log.view", detail={"filters": _filters_for_audit()})
    return render_template(
        "console/bot_log.html",
        entries=page.rows,
        **page_links(page.next_cursor),
        totals=totals,
        wanted=wanted,
        args=request.args,
    )


from bot.console import admin  # noqa: E402, F401  (the administration's routes)
