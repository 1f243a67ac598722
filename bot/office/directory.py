"""Routing a webhook's ``To`` number to the tenant that owns it, cached per process."""

from __future__ import annotations

import threading
import time

from storage import Database
from storage.queries import tenant_id_by_number


class TenantDirectory:
    """Number -> tenant id, with a short TTL so a new tenant is found within seconds.

    Unknown numbers are cached too (briefly), so junk traffic cannot turn every
    request into a database query.
    """

    def __init__(self, db: Database, ttl: float = 30.0, miss_ttl: float = 5.0) -> None:
        self._db = db
        self._ttl = ttl
        self._miss_ttl = miss_ttl
        self._entries: dict[str, tuple[int | None, float]] = {}
        self._lock = threading.Lock()

    def tenant_for(self, whatsapp_number: str) -> int | None:
        now = time.monotonic()
        entry = self._entries.get(whatsapp_number)
        if entry is not None and entry[1] > now:
            return entry[0]
        with self._db.read() as session:
            tenant_id = tenant_id_by_number(session, whatsapp_number)
        expiry = now + (self._ttl if tenant_id is not None else self._miss_ttl)
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[whatsapp_number] = (tenant_id, expiry)
        return tenant_id

    def forget(self) -> None:
        with self._lock:
            self._entries.clear()
