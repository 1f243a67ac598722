"""Who is acting in the console, as the rules and the audit trail need it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    user_id: int
    tenant_id: int
    role: str
    ip: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def audit_name(self) -> str:
        return f"user:{self.user_id}"
