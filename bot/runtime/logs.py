"""Logging for the entry points (``portineria``, ``wsgi.py``), never for the factory.

A library or a test that builds the app keeps its own logging; only a process we
start decides where its lines go.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format=FORMAT)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # The twilio SDK logs every request line at INFO, with the resident's number in it.
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
