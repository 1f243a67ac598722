"""Console accounts: argon2 password hashes, roles, the session version that lets
the server end every session of an account, and one-time set-password links.

A console session is valid only while it carries the account's current
``session_version`` (``bot.console.auth`` checks it on every request); logout, a
password change and disabling the account bump it. The limits on failed sign-ins
live in Redis (:mod:`bot.office.throttle`); the account's own failure counter
here (``failed_logins``, ``locked_until``) is their fallback while Redis is down.

Admins manage the office's accounts from the console: an invitation or a password
reset is a one-time link (:func:`issue_password_link`), kept only as the SHA-256 of
its token, valid once and for a limited time; setting the password through it ends
every other session of the account. No change may leave the office without an
active admin (:func:`set_role`, :func:`disable_user` refuse it).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot.exceptions import InvalidAccount, NotFound, Refused
from bot.office.throttle import POLICIES
from storage.db import rows_affected
from storage.models import PasswordLink, Tenant, User, utcnow
from storage.vocabulary import PasswordLinkPurpose, Role

ROLES = ("operator", "admin")
MIN_PASSWORD_LENGTH = 10
# An invitation may wait for a colleague's first morning; a reset is used at once.
LINK_LIFETIME = {
    PasswordLinkPurpose.INVITE: timedelta(days=3),
    PasswordLinkPurpose.RESET: timedelta(hours=24),
}
LAST_ADMIN = (
    "Lo studio resterebbe senza un amministratore attivo: nomina prima un altro amministratore."
)
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
    """The account can no longer sign in, and every session it has ends now.

    Refused (:class:`Refused`) for the office's last active admin."""
    user = account_in_office(session, tenant_id, user_id)
    if user.active and user.role == Role.ADMIN:
        _keep_an_admin(session, tenant_id, user.id)
    user.active = False
    end_sessions(session, user.id)


def enable_user(session: Session, tenant_id: int, user_id: int) -> None:
    """A disabled account may sign in again (with its password, or a new link)."""
    user = account_in_office(session, tenant_id, user_id)
    user.active = True
    user.failed_logins, user.locked_until = 0, None


def set_role(session: Session, tenant_id: int, user_id: int, role: str) -> User:
    """Change an account's role; its sessions end, so the new role applies at once.

    Refused for the office's last active admin being made an operator."""
    if role not in ROLES:
        raise InvalidAccount(f"role must be one of {', '.join(ROLES)}")
    user = account_in_office(session, tenant_id, user_id)
    if user.role == role:
        return user
    if user.role == Role.ADMIN and user.active:
        _keep_an_admin(session, tenant_id, user.id)
    user.role = Role(role)
    end_sessions(session, user.id)
    return user


def _keep_an_admin(session: Session, tenant_id: int, leaving: int) -> None:
    # Row locks on PostgreSQL first, so that two admins demoting each other at the same
    # moment cannot both pass (SQLite's write transactions are already exclusive).
    session.execute(
        select(User.id)
        .where(User.tenant_id == tenant_id, User.role == Role.ADMIN)
        .with_for_update()
    )
    others = session.scalar(
        select(func.count(User.id)).where(
            User.tenant_id == tenant_id,
            User.role == Role.ADMIN,
            User.active,
            User.id != leaving,
        )
    )
    if not others:
        raise Refused(LAST_ADMIN)


# -- one-time set-password links -----------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def invite_user(
    session: Session, tenant: Tenant, email: str, role: str, *, by_user_id: int | None
) -> tuple[User, str]:
    """A new account with no usable password, and the one-time link's token to set it."""
    email = email.strip().lower()
    if session.scalar(select(User.id).where(User.tenant_id == tenant.id, User.email == email)):
        raise InvalidAccount("an account with this email exists")
    # A random password nobody knows: the account is usable only through the link.
    user = create_user(session, tenant, email, role, secrets.token_urlsafe(32))
    token = issue_password_link(
        session, tenant.id, user.id, PasswordLinkPurpose.INVITE, by_user_id=by_user_id
    )
    return user, token


def issue_password_link(
    session: Session,
    tenant_id: int,
    user_id: int,
    purpose: PasswordLinkPurpose,
    *,
    by_user_id: int | None,
    now: datetime | None = None,
) -> str:
    """A new one-time link's token for the account (shown once, stored as a hash);
    the account's older unused links stop working."""
    user = account_in_office(session, tenant_id, user_id)
    now = now or _now()
    session.execute(
        update(PasswordLink)
        .where(PasswordLink.user_id == user.id, PasswordLink.used_at.is_(None))
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
    token = secrets.token_urlsafe(32)
    session.add(
        PasswordLink(
            tenant_id=tenant_id,
            user_id=user.id,
            token_hash=_token_hash(token),
            purpose=purpose,
            created_by_user_id=by_user_id,
            created_at=now,
            expires_at=now + LINK_LIFETIME[purpose],
        )
    )
    session.flush()
    return token


@dataclass(frozen=True)
class LinkHolder:
    """Whose link it is, for the set-password page and its audit row."""

    link_id: int
    user_id: int
    tenant_id: int
    email: str
    purpose: PasswordLinkPurpose


def password_link(session: Session, token: str, now: datetime | None = None) -> LinkHolder | None:
    """The account a still-valid, unused link belongs to, or None."""
    if not token or len(token) > 128:
        return None
    row = session.execute(
        select(PasswordLink, User)
        .join(User, User.id == PasswordLink.user_id)
        .where(
            PasswordLink.token_hash == _token_hash(token),
            PasswordLink.used_at.is_(None),
            PasswordLink.expires_at > (now or _now()),
            User.active,
        )
    ).first()
    if row is None:
        return None
    link, user = row
    return LinkHolder(link.id, user.id, user.tenant_id, user.email, link.purpose)


def redeem_password_link(
    session: Session, token: str, new_password: str, now: datetime | None = None
) -> LinkHolder:
    """Set the password through a link, once; every session of the account ends.

    Raises :class:`NotFound` for a link that is unknown, used, expired or replaced,
    :class:`InvalidAccount` for a password the rules refuse (the link stays usable).
    """
    now = now or _now()
    holder = password_link(session, token, now)
    if holder is None:
        raise NotFound("no such link")
    _check_password(new_password)
    # Conditional, so that two submissions of one link cannot both set a password.
    claimed = session.execute(
        update(PasswordLink)
        .where(PasswordLink.id == holder.link_id, PasswordLink.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if not rows_affected(claimed):
        raise NotFound("no such link")
    change_password(session, holder.tenant_id, holder.user_id, new_password)
    return holder


def _now() -> datetime:
    return utcnow()
