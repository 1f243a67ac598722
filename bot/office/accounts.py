"""Console accounts: argon2 password hashes, roles, and the session version that lets
the server end every session of an account.

A console session is valid only while it carries the account's current
``session_version`` (``bot.console.auth`` checks it on every request); logout, a
password change and disabling the account bump it. The limits on failed sign-ins
live in Redis (:mod:`bot.office.throttle`); the account's own failure counter
here (``failed_logins``, ``locked_until``) is their fallback while Redis is down.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.exceptions import InvalidAccount, NotFound
from bot.office.throttle import POLICIES
from storage.models import Tenant, User

ROLES = ("operator", "admin")
MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidAccount(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")


def create_user(session: Session, tenant: Tenant, email: str, role: str, password: str) -> User:
    if role not in ROLES:
        raise InvalidAccount(f"role must be one of {', '.join(ROLES)}")
    _check_password(password)
    user = User(
        tenant_id=tenant.id,
        email=email.strip().lower(),
        role=role,
        password_hash=hash_password(password),
    )
    session.add(user)
    session.flush()
    return user


# -- signing in -------------------------------------------------------------------------


def find_account(session: Session, tenant_slug: str | None, email: str) -> User | None:
    """The active account with this email (in the office ``tenant_slug``, if given)."""
    query = select(User).where(User.email == email.strip().lower(), User.active)
    if tenant_slug:
        query = query.join(Tenant, Tenant.id == User.tenant_id).where(Tenant.slug == tenant_slug)
    return session.scalar(query.order_by(User.id).limit(1))


@cache
def _dummy_hash() -> str:
    # Made once per process, with the hasher's current parameters: verifying against
    # it costs what verifying a real account's password costs.
    return _hasher.hash(secrets.token_urlsafe(16))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Always one argon2 verification: against the account's hash, or, for an unknown
    account (``None``), against a dummy hash, so the time taken tells nothing."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def signed_in(user: User, password: str) -> None:
    """After a successful sign-in: the fallback counter starts afresh; a hash made with
    older parameters is replaced."""
    user.failed_logins, user.locked_until = 0, None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)


def held_back(user: User, now: datetime) -> bool:
    """Whether the fallback counter (Redis down) still makes this account wait."""
    return user.locked_until is not None and user.locked_until > now


def count_failure(user: User, now: datetime) -> None:
    """The fallback counter (Redis down): the account's own progressive delay.

    ``locked_until`` is when the account may try again (the last failure when there
    is no wait yet); after the policy's quiet window the count starts again.
    """
    policy = POLICIES["account"]
    quiet = user.locked_until is None or (now - user.locked_until).total_seconds() > policy.window
    user.failed_logins = 1 if quiet else user.failed_logins + 1
    user.locked_until = now + timedelta(seconds=policy.delay(user.failed_logins))


# -- ending sessions --------------------------------------------------------------------


def account_in_office(session: Session, tenant_id: int, user_id: int) -> User:
    user = session.scalar(select(User).where(User.id == user_id, User.tenant_id == tenant_id))
    if user is None:
        raise NotFound(user_id)
    return user


def end_sessions(session: Session, user_id: int) -> None:
    """Every console session of the account ends (on every browser), at once."""
    # In SQL, so that two concurrent bumps cannot fold into one.
    session.execute(
        update(User)
        .where(User.id == user_id)
        .values(session_version=User.session_version + 1)
        .execution_options(synchronize_session="fetch")
    )


def change_password(session: Session, tenant_id: int, user_id: int, new_password: str) -> None:
    """Set a new password; every session of the account ends, the caller's own
    included (a console page signs its user in again afterwards)."""
    _check_password(new_password)
    user = account_in_office(session, tenant_id, user_id)
    user.password_hash = hash_password(new_password)
    user.failed_logins, user.locked_until = 0, None
    end_sessions(session, user.id)


def disable_user(session: Session, tenant_id: int, user_id: int) -> None:
    """The account can no longer sign in, and every session it has ends now."""
    user = account_in_office(session, tenant_id, user_id)
    user.active = False
    end_sessions(session, user.id)
