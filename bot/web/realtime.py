"""Real-time events for the console: Pusher channel authorisation, or our own stream.

With Pusher configured, the browser subscribes to ``private-tenant-<slug>`` and
``private-user-<id>`` and :func:`pusher_auth` signs those two channels only. Without
it, :func:`events` answers with the events since the browser's last visit, as
server-sent events, and closes: ``EventSource`` comes back after ``retry`` with the
``Last-Event-ID`` it was given. No request stays open, so twenty open consoles cost
ten short requests a second instead of twenty web workers that Twilio needs.
"""

from __future__ import annotations

import json
import logging
import re

from flask import Blueprint, Response, current_app, jsonify, request
from flask_login import current_user
from redis.exceptions import RedisError

from bot.services import services
from bot.web.errors import error_response
from notify.operators import tenant_channel, user_channel

log = logging.getLogger(__name__)

bp = Blueprint("realtime", __name__)

# Pusher socket ids look like "123.456".
_SOCKET_ID = re.compile(r"^\d{1,20}\.\d{1,20}$")
DEFAULT_RETRY_MS = 2000
# Longer when Redis is away: there is nothing to read until it is back.
OUTAGE_RETRY_MS = 10_000


@bp.before_request
def require_login() -> Response | None:
    if current_user.is_authenticated:
        return None
    return current_app.login_manager.unauthorized()  # type: ignore[attr-defined]


def own_channels() -> tuple[str, str]:
    """The only channels the signed-in operator may hear: their office's and their own."""
    return tenant_channel(current_user.tenant_slug), user_channel(current_user.id)


@bp.post("/pusher/auth")
def pusher_auth() -> Response:
    socket_id = request.form.get("socket_id", "")
    channel = request.form.get("channel_name", "")
    if not _SOCKET_ID.match(socket_id) or not channel or len(channel) > 164:
        return error_response(400, "bad_request", "socket_id e channel_name non validi.")
    if channel not in own_channels():
        return error_response(403, "forbidden", "Canale non consentito.")
    try:
        signed = services().notifier.authorise(channel, socket_id)
    except ValueError:
        return error_response(400, "bad_request", "socket_id e channel_name non validi.")
    if signed is None:
        return error_response(
            404, "pusher_not_configured", "Le notifiche Pusher non sono configurate."
        )
    return jsonify(signed)


@bp.get("/console/events")
def events() -> Response:
    svc = services()
    retry = int(svc.config.get("EVENTS_RETRY_MS", DEFAULT_RETRY_MS))
    cursor = request.headers.get("Last-Event-ID") or request.args.get("after")
    try:
        batch = svc.notifier.read(own_channels(), cursor)
    except RedisError:
        # The browser comes back later; the inbox still shows everything on load.
        log.warning("console events unavailable: redis unavailable")
        return _event_stream(f"retry: {OUTAGE_RETRY_MS}\n\n")
    if batch is None:
        return error_response(404, "not_found", "Gli eventi arrivano tramite Pusher.")
    parts = [f"retry: {retry}\n\n"]
    parts += [f"data: {_line(event)}\n\n" for event in batch.events]
    # An id with no data moves the browser's Last-Event-ID without firing an event.
    parts.append(f"id: {batch.cursor}\n\n")
    return _event_stream("".join(parts))


def _line(event: dict[str, object]) -> str:
    # Re-encoded compactly: one line, so it cannot forge SSE fields.
    return json.dumps(
        {"id": event.get("id"), "event": event.get("event"), "data": event.get("data")},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _event_stream(body: str) -> Response:
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    # Proxies such as nginx would otherwise hold events back in their buffer.
    response.headers["X-Accel-Buffering"] = "no"
    return response
