"""The Flask application: app factory, webhooks, conversation engine, outbound gate,
console, JSON API, CLI and RQ jobs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

__all__ = ["create_app"]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then the environment, then ``config`` (tests pass theirs)."""
    from bot import console, services
    from bot.config import load_config
    from bot.runtime import cli
    from bot.web import api, errors, health, public, webhooks

    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(load_config(app.instance_path, config))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)

    services.init_app(app)
    errors.init_app(app)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(public.bp)
    app.register_blueprint(api.bp)
    cli.init_app(app)
    console.init_app(app)
    if app.config["DEV_MODE"]:
        from bot.web import simulator

        app.register_blueprint(simulator.bp)
    return app
