"""The demo operator ``portineria dev`` seeds and prints."""

from __future__ import annotations

import base64
import hashlib
import hmac

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from bot.office.accounts import create_user, hash_password
from bot.services import Services
from storage.models import Tenant, User


def demo_credentials(secret_key: str, tenant: Tenant) -> tuple[str, str]:
    """Derived from the instance's secret key: stable across restarts, unique per install."""
    digest = hmac.new(
        secret_key.encode(), f"portineria-demo-operator:{tenant.slug}".encode(), hashlib.sha256
    ).digest()
    password = base64.b32encode(digest).decode().lower()[:16]
    return f"operatore@{tenant.slug}.example", password


def seed_demo_operator(svc: Services, tenant: Tenant, role: str = "operator") -> tuple[str, str]:
    """Make sure the demo operator exists, active, unlocked, with the derived password.

    Idempotent: a second call finds the account and returns the same credentials.
    """
    email, password = demo_credentials(str(svc.config["SECRET_KEY"]), tenant)
    with svc.db.session() as session:
        user = session.scalar(select(User).where(User.tenant_id == tenant.id, User.email == email))
        if user is None:
            create_user(session, tenant, email, role, password)
            return email, password
        if not _matches(user.password_hash, password):
            user.password_hash = hash_password(password)
        user.active, user.failed_logins, user.locked_until = True, 0, None
    return email, password


def _matches(password_hash: str, password: str) -> bool:
    try:
        return PasswordHasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
