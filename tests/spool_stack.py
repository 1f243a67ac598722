"""The processes of a real deployment, for ``tests/test_spool.py``: web servers and a
worker, each built from the JSON configuration in ``PORTINERIA_TEST_CONFIG``.

    python tests/spool_stack.py web PORT      # one werkzeug process (threaded)
    python tests/spool_stack.py worker        # portineria worker, with the test reader
    gunicorn --chdir tests 'spool_stack:web_app()'

A web process starts its spool drain at start, as ``wsgi.py`` does.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from flask import Flask

CONFIG_VARIABLE = "PORTINERIA_TEST_CONFIG"


def _config() -> dict[str, Any]:
    return dict(json.loads(os.environ[CONFIG_VARIABLE]))


def web_app() -> Flask:
    from bot import create_app
    from bot.runtime.logs import configure_logging
    from bot.runtime.spool import ensure_web_drain

    configure_logging()
    app = create_app(_config())
    ensure_web_drain(app.extensions["portineria"])
    return app


def serve(port: int) -> None:
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", port, web_app(), threaded=True, use_reloader=False)


def work() -> None:
    from readers import KeywordReader

    from bot import create_app
    from bot.runtime.logs import configure_logging
    from bot.runtime.worker import run_worker

    configure_logging()
    app = create_app(_config())
    app.extensions["portineria"].understand = KeywordReader()
    with app.app_context():
        run_worker(app)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if sys.argv[1] == "web":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "worker":
        work()
    else:
        raise SystemExit(f"unknown process {sys.argv[1]!r}")
