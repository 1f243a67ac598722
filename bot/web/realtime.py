"""Real-time events for the console: Pusher channel authorisation, or our own stream.

With Pusher configured, the browser subscribes to ``private-tenant-<slug>`` and
``private-user-<id>`` and :func:`pusher_auth` signs those two channels only. Without
it, :func:`events` relays the same events from Redis pub/sub as server-sent events.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator

from flask import Blueprint, Response, abort, current_app, jsonify, request
from flask_login import current_user
from redis import ConnectionPool, Redis
from redis.exceptions import RedisError

from bot.services import services
from bot.web.errors import error_response
from notify.operators import STREAM_PREFIX, PusherNotifier, tenant_channel, user_channel

log = logging.getLogger(__name__)

bp = Blueprint("realtime", __name__)

# Pusher socket ids look like "123.456".
_SOCKET_ID = re.compile(r"^\d{1,20}\.\d{1,20}$")
HEARTBEAT_SECONDS = 15.0
# Each stream ends after a while and EventSource reconnects: a bounded request, and
# a signed-out or deactivated operator stops receiving within that time.
STREAM_MAX_SECONDS = 300.0
POLL_SECONDS = 1.0


@bp.before_request
def require_login() -> Response | None:
    if current_user.is_authenticated:
        return None
    return current_app.login_manager.unauthorized()  # type: ignore[attr-defined, no-any-return]


def own_channels() -> tuple[str, str]:
    """The only channels the signed-in operator may hear: their office's and their own."""
    return tenant_channel(current_user.tenant_slug), user_channel(current_user.id)


@bp.post("/pusher/auth")
def pusher_auth() -> Response:
    notifier = services().notifier
    if not isinstance(notifier, PusherNotifier):
        return error_response(
            404, "pusher_not_configured", "Le notifiche Pusher non sono configurate."
        )
    socket_id = request.form.get("socket_id", "")
    channel = request.form.get("channel_name", "")
    if not _SOCKET_ID.match(socket_id) or not channel or len(channel) > 164:
        return error_response(400, "bad_request", "socket_id e channel_name non validi.")
    if channel not in own_channels():
        return error_response(403, "forbidden", "Canale non consentito.")
    try:
        signed = notifier.authenticate(channel, socket_id)
    except ValueError:
        return error_response(400, "bad_request", "socket_id e channel_name non validi.")
    return jsonify(signed)


@bp.get("/console/events")
def events() -> Response:
    svc = services()
    if isinstance(svc.notifier, PusherNotifier):
        abort(404, "events come through Pusher")
    config = svc.config
    stream = relay(
        _stream_client(svc.redis),
        own_channels(),
        heartbeat=float(config.get("SSE_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS)),
        max_seconds=float(config.get("SSE_MAX_SECONDS", STREAM_MAX_SECONDS)),
    )
    response = Response(stream, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    # Proxies such as nginx would otherwise hold events back in their buffer.
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _stream_client(shared: Redis) -> Redis:
    """A client of its own for one stream: it outlives this request's context, and
    closing the app's shared pool must not pull the socket from under a stream."""
    pool = shared.connection_pool
    return Redis(
        connection_pool=ConnectionPool(
            connection_class=pool.connection_class, **pool.connection_kwargs
        )
    )


def relay(
    redis: Redis,
    channels: tuple[str, ...],
    *,
    heartbeat: float = HEARTBEAT_SECONDS,
    max_seconds: float = STREAM_MAX_SECONDS,
) -> Iterator[str]:
    """Server-sent events from Redis pub/sub, with heartbeats, for a bounded time.

    A heartbeat is a write, and a write to a closed connection makes the server close
    this generator: a client that went away is noticed within one heartbeat, and the
    ``finally`` releases the Redis connection.
    """
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(*(STREAM_PREFIX + channel for channel in channels))
        yield "retry: 3000\n: connesso\n\n"
        started = last_write = time.monotonic()
        while time.monotonic() - started < max_seconds:
            message = pubsub.get_message(timeout=min(POLL_SECONDS, heartbeat))
            if message is not None and message.get("type") == "message":
                yield _event(message["data"])
                last_write = time.monotonic()
            elif time.monotonic() - last_write >= heartbeat:
                yield ": heartbeat\n\n"
                last_write = time.monotonic()
    except RedisError:
        # The browser reconnects after "retry"; the inbox still shows everything on load.
        log.warning("event stream ended: redis unavailable")
    finally:
        pubsub.close()
        redis.close()


def _event(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        # Re-encoded compactly: one line, so it cannot forge SSE fields.
        line = json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
    except ValueError:
        return ""
    return f"data: {line}\n\n"
