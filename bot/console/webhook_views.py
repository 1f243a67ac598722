"""Admin pages for the CRM's webhooks: endpoints, their secrets, the delivery log, replays.

A new secret (an endpoint added, a secret rotated) is shown once, in the answer to the
form that made it: never flashed, since flashed messages travel in the session cookie,
which is signed but not encrypted. A disabled endpoint is announced on every console
page an admin opens (the menu's mark) and explained on these pages.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from bot.console.admin_views import admin_required
from bot.console.auth import actor
from bot.console.blueprint import bp
from bot.console.labels import OFFICE_ZONE
from bot.crm.endpoints import (
    DEFAULT_OVERLAP_HOURS,
    EVENT_TYPES,
    By,
    NewSecret,
    add_endpoint,
    disabled_count,
    enable_endpoint,
    get_endpoint,
    list_endpoints,
    remove_endpoint,
    rotate_secret,
)
from bot.crm.history import recent_deliveries, replay
from bot.exceptions import InvalidInput, NotFound, PortineriaError
from bot.services import services

DELIVERY_STATUS = {"pending": "in attesa", "delivered": "consegnato", "failed": "non riuscito"}


def _by() -> By:
    who = actor()
    return By(who.audit_name, who.user_id, who.ip)


@bp.context_processor
def webhook_alert() -> dict[str, int]:
    """How many of the office's CRM endpoints are disabled, for an admin's menu."""
    if not (current_user.is_authenticated and current_user.is_admin):
        return {"crm_disabled": 0}
    with services().db.read() as session:
        return {"crm_disabled": disabled_count(session, current_user.tenant_id)}


def _list_page(made: NewSecret | None = None, status: int = 200) -> tuple[str, int]:
    endpoints = list_endpoints(services(), actor().tenant_id)
    return render_template(
        "console/webhooks.html",
        endpoints=endpoints,
        event_types=EVENT_TYPES,
        made=made,
        form=request.form,
    ), status


@bp.get("/admin/webhooks")
@admin_required
def webhooks() -> tuple[str, int]:
    return _list_page()


@bp.post("/admin/webhooks")
@admin_required
def webhook_add() -> tuple[str, int]:
    try:
        made = add_endpoint(
            services(),
            actor().tenant_id,
            request.form.get("url", "")[:2100],
            request.form.getlist("events"),
            allow_loopback=request.form.get("allow_loopback") == "1",
            allow_private=request.form.get("allow_private") == "1",
            by=_by(),
        )
    except InvalidInput as refused:
        flash(f"Indirizzo non accettato: {refused}", "error")
        return _list_page(status=422)
    return _list_page(made)


def _detail_page(endpoint_id: int, made: NewSecret | None = None) -> str:
    svc, who = services(), actor()
    endpoint = get_endpoint(svc, who.tenant_id, endpoint_id)
    with svc.db.read() as session:
        deliveries = recent_deliveries(session, who.tenant_id, endpoint.id)
    return render_template(
        "console/webhook.html",
        endpoint=endpoint,
        deliveries=deliveries,
        made=made,
        statuses=DELIVERY_STATUS,
        overlap_hours=DEFAULT_OVERLAP_HOURS,
    )


@bp.get("/admin/webhooks/<id:endpoint_id>")
@admin_required
def webhook(endpoint_id: int) -> str:
    return _detail_page(endpoint_id)


@bp.post("/admin/webhooks/<id:endpoint_id>/rotate")
@admin_required
def webhook_rotate(endpoint_id: int) -> str | Response:
    raw = request.form.get("overlap_hours", "").strip().replace(",", ".")
    try:
        overlap = float(raw) if raw else DEFAULT_OVERLAP_HOURS
        made = rotate_secret(services(), actor().tenant_id, endpoint_id, overlap, by=_by())
    except (ValueError, InvalidInput):
        flash("Sovrapposizione non valida: indica le ore (da 0 a 720).", "error")
        return redirect(url_for("console.webhook", endpoint_id=endpoint_id))
    return _detail_page(endpoint_id, made)


@bp.post("/admin/webhooks/<id:endpoint_id>/remove")
@admin_required
def webhook_remove(endpoint_id: int) -> Response:
    removed = remove_endpoint(services(), actor().tenant_id, endpoint_id, by=_by())
    flash(f"Endpoint {removed.host} rimosso.", "ok")
    return redirect(url_for("console.webhooks"))


@bp.post("/admin/webhooks/<id:endpoint_id>/enable")
@admin_required
def webhook_enable(endpoint_id: int) -> Response:
    enable_endpoint(services(), actor().tenant_id, endpoint_id, by=_by())
    flash("Endpoint riattivato: gli eventi in attesa partono per primi.", "ok")
    return redirect(url_for("console.webhook", endpoint_id=endpoint_id))


def _local_moment(raw: str) -> datetime | None:
    """A ``datetime-local`` field (the office's time) as UTC; None if empty."""
    if not raw.strip():
        return None
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError as error:
        raise InvalidInput("data e ora non valide") from error
    return moment.replace(tzinfo=OFFICE_ZONE).astimezone(UTC)


@bp.post("/admin/webhooks/<id:endpoint_id>/replay")
@admin_required
def webhook_replay(endpoint_id: int) -> Response:
    get_endpoint(services(), actor().tenant_id, endpoint_id)  # another office's: 404
    event_uid = request.form.get("event", "").strip()[:40] or None
    try:
        since = None if event_uid else _local_moment(request.form.get("since", ""))
        if event_uid is None and since is None:
            raise InvalidInput("indica da quando")
        queued = replay(
            services(),
            actor().tenant_id,
            by=_by(),
            event_uid=event_uid,
            since=since,
            until=None if event_uid else _local_moment(request.form.get("until", "")),
            endpoint_id=endpoint_id,
        )
    except NotFound:
        flash("Evento non trovato (forse già cancellato per la conservazione).", "error")
    except PortineriaError as refused:
        flash(f"Reinvio non possibile: {refused}", "error")
    else:
        flash(f"Reinvio in coda: {queued} consegne.", "ok")
    return redirect(url_for("console.webhook", endpoint_id=endpoint_id))
