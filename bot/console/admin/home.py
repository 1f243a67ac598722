"""The administration's index, and what every console page needs from it: whether
the office is live (the banner), the larger upload limit of the admin's forms."""

from __future__ import annotations

import re
from typing import Any

from flask import render_template, request
from flask.blueprints import BlueprintSetupState
from flask_login import current_user

from bot.console.admin.access import admin_required
from bot.console.auth import operator
from bot.console.blueprint import bp
from bot.console.labels import setting_label
from bot.office.readiness import Missing, missing_for_live
from bot.privacy.data_requests import open_count, sync_chat_requests
from bot.services import services
from storage.models import Tenant

# The app's body limit is 64 KiB (webhooks); these forms carry a file or a notice.
LARGER_BODIES = {
    "/console/admin/contacts/import": 3 * 1024 * 1024,
    "/console/admin/notice/preview": 256 * 1024,
    "/console/admin/notice/publish": 256 * 1024,
    "/console/admin/notice/edit": 256 * 1024,
}


# An operator's reply may carry an attachment (the limit is the app's setting).
_REPLY_PATH = re.compile(r"^/console/conversations/\d{1,18}/reply$")


def _raise_body_limit() -> None:
    limit = LARGER_BODIES.get(request.path)
    if limit is None and _REPLY_PATH.match(request.path):
        limit = int(services().config["ATTACHMENT_MAX_BYTES"]) + 64 * 1024
    if limit is not None and request.method == "POST":
        # Before the CSRF check reads the form (it runs first among the app's hooks).
        request.max_content_length = limit
        request.max_form_memory_size = limit


@bp.record_once
def _first_hook(state: BlueprintSetupState) -> None:
    state.app.before_request_funcs.setdefault(None, []).insert(0, _raise_body_limit)


@bp.context_processor
def office_readiness() -> dict[str, Any]:
    def live_missing() -> list[Missing]:
        if not current_user.is_authenticated:
            return []
        with services().db.read() as db:
            tenant = db.get(Tenant, operator().tenant_id)
            return missing_for_live(tenant.settings if tenant else None)

    return {"live_missing": live_missing, "setting_label": setting_label}


@bp.get("/admin/")
@admin_required
def admin_home() -> str:
    svc, who = services(), operator()
    sync_chat_requests(svc, who.tenant_id)
    with svc.db.read() as db:
        pending = open_count(db, who.tenant_id)
    return render_template("console/admin/home.html", pending_requests=pending)
