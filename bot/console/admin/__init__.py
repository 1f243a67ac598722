"""The office's administration in the console (admin role only), a module per task:
users, office settings, canned responses (with the on-call rota and templates), the privacy notice,
contacts, data-subject requests, data and logs (exports, register, audit chain,
retention), reports. Every change goes through the core function that owns the rule
and is written to the audit trail; every form carries the CSRF token.
"""

from bot.console.admin import (  # noqa: F401  (routes)
    canned,
    contacts,
    data,
    home,
    notice,
    office_settings,
    password,
    reports,
    requests,
    users,
)
