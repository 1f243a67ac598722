"""Browser-facing hardening: cookies, CSRF, and the security headers on every response.

The content security policy allows scripts only from our own origin: no inline
script, no ``eval``, nothing a message body could smuggle in would run even if it
escaped Jinja's autoescape.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, Request, Response, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()


def content_security_policy(connect_origins: list[str]) -> str:
    connect = " ".join(["'self'", *connect_origins])
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "media-src 'self'",
            f"connect-src {connect}",
            # The console's service worker and manifest (an installable PWA).
            "worker-src 'self'",
            "manifest-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


# Paths whose callers authenticate by signature or token, never by cookie.
SESSIONLESS_PREFIXES = ("/webhooks/", "/api/", "/healthz", "/readyz")
TWILIO_ONLY_PREFIX = "/webhooks/"


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Cookie sessions for people; none for Twilio's webhooks and the API.

    Those callers never send a session cookie, and opening one (building the
    signing serializer) would be pure cost on the webhook's hot path.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith(SESSIONLESS_PREFIXES):
            return self.null_session_class()
        return super().open_session(app, request)


def configure_cookies(app: Flask) -> None:
    app.session_interface = ConsoleSessionInterface()
    config = app.config
    # Secure cookies whenever the public address is HTTPS (production); the embedded
    # default on http://127.0.0.1 would otherwise lose its session.
    # (Flask ships its own defaults for these keys, so they are set, not setdefault.)
    secure = str(config.get("PUBLIC_BASE_URL", "")).startswith("https://")
    config["SESSION_COOKIE_SECURE"] = bool(config.get("SESSION_COOKIE_SECURE")) or secure
    config["SESSION_COOKIE_HTTPONLY"] = True
    config["SESSION_COOKIE_SAMESITE"] = config.get("SESSION_COOKIE_SAMESITE") or "Lax"
    config.setdefault("REMEMBER_COOKIE_SECURE", secure)
    config.setdefault("REMEMBER_COOKIE_HTTPONLY", True)
    config.setdefault("REMEMBER_COOKIE_SAMESITE", "Lax")
    # An office workday, not Flask's 31 days.
    if config.get("PERMANENT_SESSION_LIFETIME") == timedelta(days=31):
        config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=12)
    # Operators keep a form open for a while; the token lives as long as the session.
    config.setdefault("WTF_CSRF_TIME_LIMIT", None)


def init_app(app: Flask, *, csrf_exempt: list[Any], connect_origins: list[str]) -> None:
    """Cookies, CSRF on every form (``csrf_exempt``: blueprints whose callers sign or
    carry a token instead), and the security headers of every response."""
    configure_cookies(app)
    csrf.init_app(app)
    for blueprint in csrf_exempt:
        csrf.exempt(blueprint)
    policy = content_security_policy(connect_origins)

    every_response = {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        # Same-origin keeps the full referrer that CSRF's HTTPS check needs.
        "Referrer-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    }

    @app.after_request
    def security_headers(response: Response) -> Response:
        headers = response.headers
        if request.path.startswith(TWILIO_ONLY_PREFIX):
            # Only Twilio reads these answers, and it renders nothing: the browser
            # policies would be pure cost on the webhook's hot path.
            headers.setdefault("X-Content-Type-Options", "nosniff")
            return response
        for name, value in every_response.items():
            headers.setdefault(name, value)
        if request.path.startswith(("/console", "/pusher")):
            # Conversations are personal data: no copies in shared or browser caches.
            headers["Cache-Control"] = "no-store"
        return response
