"""API tokens: one or more per office, stored only as a SHA-256 hash, shown once."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import ApiToken, Tenant

TOKEN_PREFIX = "ptk_"  # noqa: S105 - a prefix, not a secret


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(session: Session, tenant: Tenant, name: str) -> str:
    """A new token for the office; only its hash is stored, so it is shown once."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(tenant_id=tenant.id, name=name, token_hash=hash_token(token)))
    return token


def tenant_for_token(session: Session, token: str) -> Tenant | None:
    """The office a live (not revoked) token belongs to."""
    return session.scalar(
        select(Tenant)
        .join(ApiToken, ApiToken.tenant_id == Tenant.id)
        .where(ApiToken.token_hash == hash_token(token.strip()), ApiToken.revoked_at.is_(None))
    )
