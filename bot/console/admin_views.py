"""Admin pages: the audit trail and the bot log. Operators get 403."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import abort, render_template, request, url_for

from bot.console.auth import actor, operator
from bot.console.blueprint import bp
from bot.console.logs import audit_actions, audit_events, bot_log, parse_filter, tenant_users
from bot.privacy.audit import record_actor_audit
from bot.services import services

View = TypeVar("View", bound=Callable[..., Any])


def admin_required(view: View) -> View:
    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if not operator().is_admin:
            abort(403)
        return view(*args, **kwargs)

    return cast(View, guarded)


def _filters_for_audit() -> dict[str, str]:
    # Bounded: the query string is the client's, the audit row is forever.
    return {key[:32]: value[:100] for key, value in list(request.args.items())[:10] if value}


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
        **_pages(page.next_cursor),
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
        record_actor_audit(db, who, "bot_log.view", detail={"filters": _filters_for_audit()})
    return render_template(
        "console/bot_log.html",
        entries=page.rows,
        **_pages(page.next_cursor),
        wanted=wanted,
        args=request.args,
    )


def _pages(cursor: str | None) -> dict[str, str | None]:
    """Links to the next (older) page and back to the newest, the filters kept."""
    args: dict[str, Any] = {key: value for key, value in request.args.items() if key != "prima"}
    endpoint = request.endpoint or ""
    return {
        "next_page": url_for(endpoint, **{**args, "prima": cursor}) if cursor else None,
        "first_page": url_for(endpoint, **args) if "prima" in request.args else None,
    }
