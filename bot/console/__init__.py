"""The operator console (UI only): sign-in, inbox, conversations, tickets, admin pages.

``init_app(app)`` adds Flask-Login, the console's blueprint and the Italian labels its
templates use. App-wide concerns (CSRF, cookies, security headers, the real-time
endpoints) are wired by the app factory.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from bot.console import (  # noqa: F401  (routes)
    admin_views,
    notice_views,
    push_views,
    ticket_views,
    views,
    webhook_views,
)
from bot.console.auth import init_login
from bot.console.blueprint import bp
from bot.console.labels import JINJA_FILTERS, JINJA_TABLES, label
from bot.console.tickets import supplier_label
from bot.exceptions import NotFound
from bot.services import services
from notify.operators import tenant_channel, user_channel

__all__ = ["bp", "init_app"]

ERROR_TEXT = {
    400: "Richiesta non valida.",
    403: "Non hai i permessi per questa pagina.",
    404: "Pagina non trovata.",
    405: "Operazione non consentita.",
    413: "Richiesta troppo grande.",
}


def init_app(app: Flask) -> None:
    init_login(app)
    app.register_blueprint(bp)
    app.register_blueprint(push_views.pwa)
    app.jinja_env.filters.update(JINJA_FILTERS)
    app.jinja_env.globals.update(JINJA_TABLES)
    app.jinja_env.globals["label"] = label
    app.jinja_env.globals["supplier_label"] = supplier_label


@bp.context_processor
def realtime_settings() -> dict[str, Any]:
    """What console.js needs to subscribe, as data- attributes (no inline script)."""
    if not current_user.is_authenticated:
        return {"realtime": None}
    notifier = services().notifier
    settings: dict[str, Any] = {
        "mode": notifier.name,
        "channels": " ".join(
            (tenant_channel(current_user.tenant_slug), user_channel(current_user.id))
        ),
        **notifier.browser_settings(),
    }
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
