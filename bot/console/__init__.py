"""The operator console: sign-in, inbox, handoff, tickets, admin logs, real-time events.

``init_app(app)`` wires it into the app factory: Flask-Login, CSRF protection
(webhooks and the JSON API are exempt: they authenticate by signature and token),
secure cookies, security headers on every response, the console and real-time
blueprints, and the Italian labels the templates use.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from bot.console import admin_views, ticket_views, views  # noqa: F401  (routes)
from bot.console.auth import init_login
from bot.console.blueprint import bp
from bot.console.demo import seed_demo_operator
from bot.console.labels import JINJA_FILTERS, JINJA_TABLES, label
from bot.console.security import csrf, init_security, pusher_origins
from bot.conversation.handoff import DEFAULT_HUMAN_MODE_TIMEOUT_MINUTES
from bot.exceptions import NotFound
from bot.services import services
from notify.operators import PusherNotifier, tenant_channel, user_channel

__all__ = ["bp", "csrf", "init_app", "seed_demo_operator"]

ERROR_TEXT = {
    400: "Richiesta non valida.",
    403: "Non hai i permessi per questa pagina.",
    404: "Pagina non trovata.",
    405: "Operazione non consentita.",
    413: "Richiesta troppo grande.",
}


def init_app(app: Flask) -> None:
    from bot.web import api, realtime, simulator, webhooks

    app.config.setdefault("HUMAN_MODE_TIMEOUT_MINUTES", DEFAULT_HUMAN_MODE_TIMEOUT_MINUTES)
    # The simulator's page posts JSON from our own origin in dev mode only.
    init_security(app, exempt=[webhooks.bp, api.bp, simulator.bp])
    init_login(app)
    app.register_blueprint(bp)
    app.register_blueprint(realtime.bp)
    app.jinja_env.filters.update(JINJA_FILTERS)
    app.jinja_env.globals.update(JINJA_TABLES)
    app.jinja_env.globals["label"] = label


@bp.context_processor
def realtime_settings() -> dict[str, Any]:
    """What console.js needs to subscribe, as data- attributes (no inline script)."""
    if not current_user.is_authenticated:
        return {"realtime": None}
    svc = services()
    config = svc.config
    settings: dict[str, Any] = {
        "mode": "pusher" if isinstance(svc.notifier, PusherNotifier) else "stream",
        "channels": " ".join(
            (tenant_channel(current_user.tenant_slug), user_channel(current_user.id))
        ),
    }
    if settings["mode"] == "pusher":
        settings.update(
            key=config.get("PUSHER_KEY"),
            cluster=config.get("PUSHER_CLUSTER") or "",
            host=config.get("PUSHER_HOST") or "",
            port=config.get("PUSHER_PORT") or "",
            tls="true" if config.get("PUSHER_SSL", True) else "false",
            origins=" ".join(pusher_origins(config)),
        )
    return {"realtime": settings}


@bp.errorhandler(NotFound)
def not_found(_error: NotFound) -> tuple[str, int]:
    # Another office's ids land here too: the same 404 as ids that do not exist.
    return render_template("console/error.html", message=ERROR_TEXT[404]), 404


@bp.errorhandler(CSRFError)
def csrf_failed(_error: CSRFError) -> Response | tuple[str, int]:
    message = "Il modulo è scaduto o non è valido: ricarica la pagina e riprova."
    if request.endpoint == "console.login":
        flash(message, "error")
        return redirect(url_for("console.login"))
    return render_template("console/error.html", message=message), 400


@bp.errorhandler(HTTPException)
def http_error(error: HTTPException) -> tuple[str, int]:
    code = error.code or 500
    return render_template(
        "console/error.html", message=ERROR_TEXT.get(code, "Si è verificato un errore.")
    ), code
