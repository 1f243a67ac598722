"""Console accounts: argon2 password hashes, roles, lockout after repeated failures."""

from __future__ import annotations

from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.exceptions import InvalidAccount
from storage.models import Tenant, User, utcnow

ROLES = ("operator", "admin")
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def create_user(session: Session, tenant: Tenant, email: str, role: str, password: str) -> User:
    if role not in ROLES:
        raise InvalidAccount(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 10:
        raise InvalidAccount("the password must be at least 10 characters long")
    user = User(
        tenant_id=tenant.id,
        email=email.strip().lower(),
        role=role,
        password_hash=hash_password(password),
    )
    session.add(user)
    session.flush()
    return user


def check_login(
    session: Session, tenant_slug: str | None, email: str, password: str
) -> User | None:
    """The user if the password is right and the account is not locked; counts failures."""
    query = select(User).where(User.email == email.strip().lower(), User.active)
    if tenant_slug:
        query = query.join(Tenant, Tenant.id == User.tenant_id).where(Tenant.slug == tenant_slug)
    user = session.scalar(query.limit(1))
    if user is None:
        _hasher.hash(password)  # same cost as a real check: no timing oracle for emails
        return None
    now = utcnow()
    if user.locked_until and user.locked_until > now:
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        user.failed_logins += 1
        if user.failed_logins >= MAX_FAILED_LOGINS:
            user.locked_until, user.failed_logins = now + LOCKOUT, 0
        return None
    user.failed_logins, user.locked_until = 0, None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user
