from bot import create_app
from bot.runtime.logs import configure_logging
from bot.runtime.spool import ensure_web_drain

configure_logging()
app = create_app()
# Drain what this host's earlier web processes spooled, now rather than at the first request.
ensure_web_drain(app.extensions["portineria"])
