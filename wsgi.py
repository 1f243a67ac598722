from bot import create_app
from bot.runtime.logs import configure_logging

configure_logging()
app = create_app()
