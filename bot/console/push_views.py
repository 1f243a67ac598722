"""The console as an installable PWA, and its browsers' push subscriptions.

``pwa`` serves the service worker (``/console/sw.js``, so its scope is the console)
and the web app manifest without a sign-in: the browser fetches them on its own, to
install the app and to update the worker, whether or not a session is open.

The push endpoints are JSON, called by ``console.js`` with the page's CSRF token in
``X-CSRFToken``; the signed-in operator subscribes and unsubscribes their own browser.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory, url_for
from flask_login import current_user

from bot.console.auth import actor
from bot.console.blueprint import bp
from bot.exceptions import InvalidSubscription
from bot.office.push import subscribe, unsubscribe
from bot.services import services
from bot.web.errors import error_response

pwa = Blueprint("console_pwa", __name__, url_prefix="/console")

APP_NAME = "Portineria"
THEME_COLOUR = "#1f4e79"


@pwa.get("/sw.js")
def service_worker() -> Response:
    static = current_app.static_folder
    assert static is not None
    response = send_from_directory(static, "sw.js", mimetype="text/javascript", max_age=0)
    response.headers["Service-Worker-Allowed"] = "/console/"
    return response


@pwa.get("/manifest.webmanifest")
def manifest() -> Response:
    icon = "icons/portineria-{}.png"
    response = jsonify(
        {
            "name": f"{APP_NAME} · Console",
            "short_name": APP_NAME,
            "lang": "it",
            "start_url": "/console/",
            "scope": "/console/",
            "display": "standalone",
            "background_color": "#ffffff",
            "theme_color": THEME_COLOUR,
            "icons": [
                *(
                    {
                        "src": url_for("static", filename=icon.format(size)),
                        "sizes": f"{size}x{size}",
                        "type": "image/png",
                        "purpose": "any",
                    }
                    for size in (192, 512)
                ),
                {
                    "src": url_for("static", filename="icons/portineria.svg"),
                    "sizes": "any",
                    "type": "image/svg+xml",
                },
            ],
        }
    )
    response.mimetype = "application/manifest+json"
    return response


@bp.context_processor
def push_settings() -> dict[str, Any]:
    """The VAPID public key for the page's "Ricevi notifiche" (a data- attribute)."""
    if not current_user.is_authenticated:
        return {"push_key": None}
    svc = services()
    # With Beams the devices register with Beams' own clients, not with our key.
    return {"push_key": None if svc.beams is not None else svc.push.public_key}


@bp.get("/push/key")
def push_key() -> Response:
    svc = services()
    return jsonify(
        {"key": svc.push.public_key, "via": "beams" if svc.beams is not None else "webpush"}
    )


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


@bp.post("/push/subscribe")
def push_subscribe() -> Response | tuple[Response, int]:
    """``PushSubscription.toJSON()``: ``{"endpoint", "keys": {"p256dh", "auth"}}``."""
    body = _json_body()
    found = body.get("keys")
    keys: dict[str, Any] = found if isinstance(found, dict) else {}
    try:
        subscribe(
            services(),
            actor(),
            _text(body.get("endpoint")),
            _text(keys.get("p256dh")),
            _text(keys.get("auth")),
        )
    except InvalidSubscription as error:
        return error_response(400, "invalid_subscription", str(error))
    return jsonify({"subscribed": True}), 201


@bp.post("/push/unsubscribe")
def push_unsubscribe() -> Response:
    removed = unsubscribe(services(), actor(), _text(_json_body().get("endpoint")))
    return jsonify({"unsubscribed": removed})
