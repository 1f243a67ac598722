"""The Flask application: app factory, webhooks, conversation engine, outbound gate,
console, JSON API, CLI and RQ jobs.

The tree tells the design: ``web`` (HTTP edges), ``conversation`` (what a message
means and what the bot does), ``outbound`` (the gate and sending), ``privacy``
(consent, rights, retention, register, audit), ``office`` (tenants and their people),
``runtime`` (queue, worker, CLI, dev stack) and ``console`` (the operators' UI).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

__all__ = ["create_app"]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then the environment, then ``config`` (tests pass theirs)."""
    from bot import console, services
    from bot.config import instance_folder, load_config
    from bot.runtime import cli
    from bot.web import api, errors, health, public, realtime, security, simulator, webhooks
    from bot.web.numbers import IdConverter

    app = Flask(__name__, instance_path=instance_folder(), instance_relative_config=True)
    app.config.from_mapping(load_config(app.instance_path, config))
    # Before any blueprint: routes take row ids as <id:...>, bounded ASCII digits only.
    app.url_map.converters["id"] = IdConverter

    svc = services.init_app(app)
    errors.init_app(app)
    # Twilio signs its webhooks, the CRM carries a token, and the simulator posts
    # JSON from our own page in dev mode only: none of them is a browser form.
    security.init_app(
        app,
        csrf_exempt=[webhooks.bp, api.bp, simulator.bp],
        connect_origins=svc.notifier.connect_origins(),
    )
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(public.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(realtime.bp)
    console.init_app(app)
    if app.config["DEV_MODE"]:
        app.register_blueprint(simulator.bp)
    cli.init_app(app)
    proxies = int(app.config["TRUSTED_PROXIES"])
    if proxies:
        # Behind the README's TLS proxy: the real client address and scheme.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]
    return app
