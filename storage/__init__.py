"""Persistence: typed models, sessions, tenant-scoped queries, migrations, retention.

Knows nothing above it: no Flask, no business rules.
"""

from storage.crypto import BodyCipher
from storage.db import Database

__all__ = ["BodyCipher", "Database"]
