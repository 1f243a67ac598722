"""Console sign-in: Flask-Login over :mod:`bot.office.accounts`, audited.

Successful and failed logins are audit events of the account's office. A failed
attempt tells the screen nothing about whether the email exists or is locked out,
so the form cannot be used to find accounts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Flask, jsonify, redirect, request, url_for
from flask_login import LoginManager, UserMixin, current_user
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from bot.office.accounts import check_login
from bot.office.actor import Actor
from bot.privacy.audit import record_audit
from bot.services import services
from storage.models import Tenant, User, utcnow

log = logging.getLogger(__name__)

LOGIN_FAILED = (
    "Email o password non validi, oppure account temporaneamente bloccato per troppi tentativi."
)


@dataclass(frozen=True, eq=False)
class Operator(UserMixin):
    """The signed-in console user, detached from any database session."""

    id: int
    tenant_id: int
    tenant_slug: str
    tenant_name: str
    email: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @classmethod
    def of(cls, user: User, tenant: Tenant) -> Operator:
        return cls(user.id, tenant.id, tenant.slug, tenant.name, user.email, user.role)


def operator() -> Operator:
    """The signed-in operator (every console view runs behind the login check)."""
    return current_user._get_current_object()


def actor() -> Actor:
    who = operator()
    return Actor(user_id=who.id, tenant_id=who.tenant_id, role=who.role, ip=request.remote_addr)


def attempt_login(
    session: Session, tenant_slug: str | None, email: str, password: str, ip: str | None
) -> Operator | None:
    """Check the password (counting failures towards the lockout) and audit the attempt."""
    candidate = _account(session, tenant_slug, email)
    user = check_login(session, tenant_slug, email, password)
    if user is not None:
        tenant = session.get(Tenant, user.tenant_id)
        assert tenant is not None
        if tenant.terminated_at is None:
            record_audit(
                session,
                tenant.id,
                "login",
                actor=f"user:{user.id}",
                user_id=user.id,
                target_type="user",
                target_id=user.id,
                ip=ip,
            )
            return Operator.of(user, tenant)
        candidate = user
    _audit_failure(session, tenant_slug, email, candidate, ip)
    return None


def _account(session: Session, tenant_slug: str | None, email: str) -> User | None:
    # The same account check_login will look at, so a failure is recorded against it.
    query = select(User).where(User.email == email.strip().lower(), User.active)
    if tenant_slug:
        query = query.join(Tenant, Tenant.id == User.tenant_id).where(Tenant.slug == tenant_slug)
    return session.scalar(query.limit(1))


def _audit_failure(
    session: Session, tenant_slug: str | None, email: str, account: User | None, ip: str | None
) -> None:
    if account is not None:
        locked = account.locked_until is not None and account.locked_until > utcnow()
        record_audit(
            session,
            account.tenant_id,
            "login.failed",
            actor=f"user:{account.id}",
            user_id=account.id,
            target_type="user",
            target_id=account.id,
            ip=ip,
            detail={"reason": "locked" if locked else "bad_password"},
        )
        return
    tenant_id = (
        session.scalar(select(Tenant.id).where(Tenant.slug == tenant_slug)) if tenant_slug else None
    )
    if tenant_id is None:
        log.info("failed console login for an unknown account from %s", ip)
        return
    record_audit(
        session,
        tenant_id,
        "login.failed",
        actor="unknown",
        target_type="user",
        ip=ip,
        detail={"reason": "unknown_account", "email": email.strip().lower()[:254]},
    )


def audit_logout(session: Session, who: Operator, ip: str | None) -> None:
    record_audit(
        session,
        who.tenant_id,
        "logout",
        actor=f"user:{who.id}",
        user_id=who.id,
        target_type="user",
        target_id=who.id,
        ip=ip,
    )


def load_operator(user_id: str) -> Operator | None:
    if not user_id.isdigit():
        return None
    with services().db.read() as session:
        row = session.execute(
            select(User, Tenant)
            .join(Tenant, Tenant.id == User.tenant_id)
            .where(User.id == int(user_id), User.active, Tenant.terminated_at.is_(None))
        ).first()
        return Operator.of(*row) if row else None


def safe_next(target: str | None) -> str:
    """Where to go after login: only back into the console, never to another site."""
    default = url_for("console.inbox")
    if not target or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console"):
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
