"""Console sign-in: Flask-Login over :mod:`bot.office.accounts`, limited by
:mod:`bot.office.throttle`, audited.

A failed attempt tells the client nothing: an unknown email, a wrong password and an
attempt held back by the limits get the same screen, and (but for a client whose own
address is held back, which learns only that) the same argon2 work, so neither the
text nor the time says whether an account exists or is being held back.

The audit trail gets a row per success, per wrong password of a real account and
per attempt on a terminated office's account; failures that are not about one real
account (unknown emails, attempts held back) are counted per office and written as
one row per office, reason and window, with nothing the client typed.

Redis down: the limits by address, office and device cannot be kept; each real
account falls back to its own progressive delay in the database (``failed_logins``,
``locked_until``), and the first failure of each office, reason and window is
audited by each web process, uncounted. Sign-in keeps working.

Sessions: the session stores ``<user id>.<session version>`` (Flask-Login's
"alternative token"); the user loader accepts it only while the version is the
account's current one, so logout, a password change or disabling the account ends
every copy of the cookie. Sessions are not ``permanent``, so Flask-Login's
``strong`` protection stays on (a permanent session silently downgrades it to
``basic``): a cookie replayed from another address or browser is dropped too.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote, urlsplit

from flask import Flask, current_app, jsonify, redirect, request, url_for
from flask_login import LoginManager, UserMixin, current_user
from redis import RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from bot.office.accounts import (
    count_failure,
    end_sessions,
    find_account,
    held_back,
    signed_in,
    verify_password,
)
from bot.office.actor import Actor
from bot.office.throttle import FailureCount, LoginThrottle, ThrottleKey
from bot.privacy.audit import record_audit
from bot.services import Services, services
from storage.models import Tenant, User

log = logging.getLogger(__name__)

LOGIN_FAILED = (
    "Email o password non validi, oppure troppi tentativi ravvicinati: "
    "attendi qualche minuto e riprova."
)
THROTTLE_EXTENSION = "portineria.login_throttle"
DEVICE_COOKIE = "portineria_device"


@dataclass(frozen=True, eq=False)
class Operator(UserMixin):
    """The signed-in console user, detached from any database session."""

    id: int
    tenant_id: int
    tenant_slug: str
    tenant_name: str
    email: str
    role: str
    session_version: int

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def get_id(self) -> str:
        # What Flask-Login keeps in the session: the version makes it revocable.
        return f"{self.id}.{self.session_version}"

    @classmethod
    def of(cls, user: User, tenant: Tenant) -> Operator:
        return cls(
            id=user.id,
            tenant_id=tenant.id,
            tenant_slug=tenant.slug,
            tenant_name=tenant.name,
            email=user.email,
            role=user.role,
            session_version=user.session_version,
        )


def operator() -> Operator:
    """The signed-in operator (every console view runs behind the login check)."""
    return current_user._get_current_object()


def actor() -> Actor:
    who = operator()
    return Actor(user_id=who.id, tenant_id=who.tenant_id, role=who.role, ip=request.remote_addr)


def login_throttle() -> LoginThrottle:
    return current_app.extensions[THROTTLE_EXTENSION]


# -- signing in -------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginAttempt:
    studio: str | None
    email: str
    password: str
    ip: str | None
    device_token: str | None = None


@dataclass(frozen=True)
class SignIn:
    """What an attempt came to: the operator, and a device token for the browser."""

    operator: Operator | None
    device_token: str | None = None


@dataclass(frozen=True)
class _Account:
    """What the attempt needs of the account, read before any password work."""

    user_id: int
    tenant_id: int
    password_hash: str
    terminated: bool
    held_back: bool


def sign_in(svc: Services, throttle: LoginThrottle, attempt: LoginAttempt) -> SignIn:
    """Check one sign-in attempt against the limits and the password; audit it.

    The argon2 work runs outside any database transaction: a burst of attempts must
    never hold the SQLite write lock that the webhooks need.
    """
    email = attempt.email.strip().lower()
    now = throttle.now()
    account, office_id = _look_up(svc, attempt.studio, email, now)
    device = throttle.trusted_device(attempt.device_token, email)
    keys = throttle.keys_for(ip=attempt.ip, email=email, office_id=office_id, device=device)
    try:
        blocked, redis_up = throttle.claim(keys), True
    except RedisError:
        log.warning("login throttle unavailable (Redis); using the accounts' own counters")
        blocked, redis_up = ({"account"} if account and account.held_back else set()), False
    # A client whose own address is held back learns only that: no password work for it.
    password_ok = "ip" not in blocked and verify_password(
        account.password_hash if account else None, attempt.password
    )
    who: Operator | None = None
    if account is not None and not blocked:
        who = _record_checked(svc, throttle, account, attempt, password_ok, redis_up)
    elif office_id is not None:
        reason = "throttled" if blocked else "unknown_account"
        _count_failure(svc, throttle, office_id, reason, attempt.ip, redis_up)
    elif not blocked:  # (a flood from a held-back address is not logged line by line)
        log.info("failed console login for an unknown account and office")
    if redis_up:
        _after_attempt(svc, throttle, keys, succeeded=who is not None)
    if who is None:
        return SignIn(None)
    return SignIn(who, throttle.device_token(email))


def _look_up(
    svc: Services, studio: str | None, email: str, now: datetime
) -> tuple[_Account | None, int | None]:
    """The account (if any) and the office the attempt concerns (if one)."""
    with svc.db.read() as session:
        user = find_account(session, studio, email)
        if user is None:
            if not studio:
                return None, None
            return None, session.scalar(select(Tenant.id).where(Tenant.slug == studio))
        tenant = session.get(Tenant, user.tenant_id)
        assert tenant is not None
        account = _Account(
            user_id=user.id,
            tenant_id=user.tenant_id,
            password_hash=user.password_hash,
            terminated=tenant.terminated_at is not None,
            held_back=held_back(user, now),
        )
        return account, user.tenant_id


def _record_checked(
    svc: Services,
    throttle: LoginThrottle,
    account: _Account,
    attempt: LoginAttempt,
    password_ok: bool,
    redis_up: bool,
) -> Operator | None:
    """An attempt whose password was checked against a real account: audit it and,
    without Redis, keep the account's own counter."""
    with svc.db.session() as session:
        user = session.get(User, account.user_id)
        tenant = session.get(Tenant, account.tenant_id)
        if user is None or tenant is None or not user.active:
            return None
        if password_ok and not account.terminated:
            signed_in(user, attempt.password)
            _audit_user(session, user, "login", attempt.ip)
            return Operator.of(user, tenant)
        if not redis_up:
            count_failure(user, throttle.now())
        reason = "office_terminated" if password_ok else "bad_password"
        _audit_user(session, user, "login.failed", attempt.ip, {"reason": reason})
        return None


def _audit_user(
    session: Session,
    user: User | Operator,
    action: str,
    ip: str | None,
    detail: dict[str, str] | None = None,
) -> None:
    record_audit(
        session,
        user.tenant_id,
        action,
        actor=f"user:{user.id}",
        user_id=user.id,
        target_type="user",
        target_id=user.id,
        ip=ip,
        detail=detail,
    )


def _count_failure(
    svc: Services,
    throttle: LoginThrottle,
    office_id: int,
    reason: str,
    ip: str | None,
    redis_up: bool,
) -> None:
    if redis_up:
        try:
            throttle.count_failure(office_id, reason, ip)
            return
        except RedisError:
            pass
    first = throttle.first_without_redis(office_id, reason)
    if first is not None:
        _write_counts(svc, [first])


def _after_attempt(
    svc: Services, throttle: LoginThrottle, keys: list[ThrottleKey], succeeded: bool
) -> None:
    try:
        if succeeded:
            throttle.succeeded(keys)
        due = throttle.due()
    except RedisError:
        log.warning("login throttle unavailable (Redis) after an attempt")
        return
    if due:
        _write_counts(svc, due)


def flush_failed_logins(svc: Services, throttle: LoginThrottle) -> int:
    """Write the counts of finished windows to the audit trail (also done after every
    sign-in attempt); the number of rows written."""
    due = throttle.due()
    _write_counts(svc, due)
    return len(due)


def _write_counts(svc: Services, counts: list[FailureCount]) -> None:
    with svc.db.session() as session:
        for count in counts:
            if session.get(Tenant, count.office_id) is None:
                continue  # the office was deleted meanwhile
            record_audit(
                session,
                count.office_id,
                "login.failed",
                actor="unknown",
                target_type="user",
                detail=count.audit_detail(),
            )


# -- signing out, loading the session's user ------------------------------------------


def end_session(svc: Services, who: Operator, ip: str | None) -> None:
    """Logout: every session of the account ends (the version moves on), audited."""
    with svc.db.session() as session:
        end_sessions(session, who.id)
        _audit_user(session, who, "logout", ip)


_SESSION_TOKEN = re.compile(r"([0-9]{1,18})\.([0-9]{1,18})")


def load_operator(token: str) -> Operator | None:
    """The session's user, only while the session's version is the account's own."""
    found = _SESSION_TOKEN.fullmatch(token)
    if found is None:
        return None
    user_id, version = int(found.group(1)), int(found.group(2))
    with services().db.read() as session:
        row = session.execute(
            select(User, Tenant)
            .join(Tenant, Tenant.id == User.tenant_id)
            .where(
                User.id == user_id,
                User.active,
                User.session_version == version,
                Tenant.terminated_at.is_(None),
            )
        ).first()
        return Operator.of(*row) if row else None


# -- where to go after signing in -----------------------------------------------------

# Control characters (a CR/LF would break the Location header) and backslashes
# (which browsers read as slashes).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")


def safe_next(target: str | None) -> str:
    """Where to go after login: only a path inside the console, never another site.

    Anything else gives the inbox: control characters, backslashes or non-ASCII
    (also percent-encoded), a scheme or a host, a path outside ``/console``, dot
    segments (browsers resolve ``..`` and ``%2e%2e`` alike).
    """
    default = url_for("console.inbox")
    if not target or len(target) > 2048 or not target.isascii() or _UNSAFE.search(target):
        return default
    parts = urlsplit(target)
    path = unquote(parts.path)
    segments = path.split("/")
    if (
        parts.scheme
        or parts.netloc
        or segments[:2] != ["", "console"]
        or any(segment in (".", "..") for segment in segments)
        or not path.isascii()
        or _UNSAFE.search(path)
    ):
        return default
    return target


# Endpoints that scripts call; they get a 401 to act on instead of a login page.
SCRIPT_ENDPOINTS = frozenset({"console.inbox_list", "realtime.events", "realtime.pusher_auth"})


def _unauthorized() -> Response:
    if request.endpoint in SCRIPT_ENDPOINTS or request.headers.get("X-Requested-With") == "fetch":
        response = jsonify(error="unauthorized", message="Accesso richiesto.")
        response.status_code = 401
        return response
    target = request.full_path.rstrip("?") if request.method == "GET" else None
    return redirect(url_for("console.login", next=target))


def init_login(app: Flask) -> None:
    manager = LoginManager()
    manager.session_protection = "strong"
    manager.user_loader(load_operator)
    manager.unauthorized_handler(_unauthorized)
    manager.init_app(app)
    svc: Services = app.extensions["portineria"]
    app.extensions[THROTTLE_EXTENSION] = LoginThrottle(svc.redis, str(app.config["SECRET_KEY"]))
