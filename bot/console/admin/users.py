"""Users: list, invite, disable and enable, change role, reset password.

An invitation and a reset give the admin a one-time link to hand over (shown once,
never stored in clear): the colleague sets their own password through it.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import flash, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from bot.console.admin.access import admin_required, office
from bot.console.auth import actor
from bot.console.blueprint import bp
from bot.exceptions import InvalidAccount, Refused
from bot.office import accounts
from bot.privacy.audit import record_actor_audit
from bot.services import services
from storage.models import PasswordLink, User, utcnow
from storage.vocabulary import PasswordLinkPurpose

MAX_EMAIL = 254


def _users() -> list[dict[str, object]]:
    who, now = actor(), utcnow()
    with services().db.read() as db:
        users = db.scalars(
            select(User).where(User.tenant_id == who.tenant_id).order_by(User.email)
        ).all()
        pending = set(
            db.scalars(
                select(PasswordLink.user_id).where(
                    PasswordLink.tenant_id == who.tenant_id,
                    PasswordLink.used_at.is_(None),
                    PasswordLink.expires_at > now,
                )
            )
        )
    return [
        {"user": user, "link_pending": user.id in pending, "is_me": user.id == who.user_id}
        for user in users
    ]


@bp.get("/admin/users")
@admin_required
def admin_users() -> str:
    return render_template("console/admin/users.html", rows=_users())


def _link_page(email: str, token: str, purpose: PasswordLinkPurpose) -> str:
    url = url_for("console.set_password", token=token, _external=True)
    hours = int(accounts.LINK_LIFETIME[purpose].total_seconds() // 3600)
    return render_template(
        "console/admin/user_link.html", email=email, url=url, purpose=str(purpose), hours=hours
    )


@bp.post("/admin/users")
@admin_required
def admin_user_invite() -> Response | str:
    email = request.form.get("email", "").strip()[:MAX_EMAIL]
    role = request.form.get("role", "")
    if "@" not in email or role not in accounts.ROLES:
        flash("Indica un'email valida e il ruolo.", "error")
        return redirect(url_for("console.admin_users"))
    who = actor()
    try:
        with services().db.session() as db:
            user, token = accounts.invite_user(db, office(db), email, role, by_user_id=who.user_id)
            record_actor_audit(db, who, "user.invite", "user", user.id, detail={"role": role})
    except InvalidAccount:
        flash("Esiste già un utente con questa email.", "error")
        return redirect(url_for("console.admin_users"))
    return _link_page(user.email, token, PasswordLinkPurpose.INVITE)


@bp.post("/admin/users/<id:user_id>/reset")
@admin_required
def admin_user_reset(user_id: int) -> str:
    who = actor()
    with services().db.session() as db:
        user = accounts.account_in_office(db, who.tenant_id, user_id)
        token = accounts.issue_password_link(
            db, who.tenant_id, user.id, PasswordLinkPurpose.RESET, by_user_id=who.user_id
        )
        record_actor_audit(db, who, "user.password_link", "user", user.id)
        email = user.email
    return _link_page(email, token, PasswordLinkPurpose.RESET)


def _account_move(
    user_id: int, action: str, message: str, move: Callable[[Session, int, int], None]
) -> Response:
    who = actor()
    try:
        with services().db.session() as db:
            move(db, who.tenant_id, user_id)
            record_actor_audit(db, who, action, "user", user_id)
    except Refused as refusal:
        flash(refusal.message, "error")
    else:
        flash(message, "ok")
    return redirect(url_for("console.admin_users"))


@bp.post("/admin/users/<id:user_id>/disable")
@admin_required
def admin_user_disable(user_id: int) -> Response:
    return _account_move(
        user_id,
        "user.disable",
        "Utente disattivato: le sue sessioni sono terminate.",
        accounts.disable_user,
    )


@bp.post("/admin/users/<id:user_id>/enable")
@admin_required
def admin_user_enable(user_id: int) -> Response:
    return _account_move(
        user_id,
        "user.enable",
        "Utente riattivato: se non ricorda la password, crea un link per reimpostarla.",
        accounts.enable_user,
    )


@bp.post("/admin/users/<id:user_id>/role")
@admin_required
def admin_user_role(user_id: int) -> Response:
    role = request.form.get("role", "")
    if role not in accounts.ROLES:
        flash("Ruolo non valido.", "error")
        return redirect(url_for("console.admin_users"))
    who = actor()
    try:
        with services().db.session() as db:
            accounts.set_role(db, who.tenant_id, user_id, role)
            record_actor_audit(db, who, "user.role", "user", user_id, detail={"role": role})
    except Refused as refusal:
        flash(refusal.message, "error")
    else:
        flash("Ruolo cambiato: l'utente rientra con il nuovo ruolo.", "ok")
    return redirect(url_for("console.admin_users"))
