"""The set-password page a one-time link leads to (no sign-in needed: the link is the
proof). Using it ends every session of the account, then the colleague signs in."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, session, url_for
from flask_login import logout_user
from werkzeug.wrappers import Response

from bot.console.blueprint import bp
from bot.exceptions import InvalidAccount, NotFound
from bot.office import accounts
from bot.privacy.audit import record_audit
from bot.services import services

LINK_GONE = (
    "Il link non è valido: è già stato usato, è scaduto o ne è stato creato uno più recente."
)
MAX_PASSWORD = 1024


@bp.route("/password/<token>", methods=["GET", "POST"])
def set_password(token: str) -> Response | str | tuple[str, int]:
    svc = services()
    with svc.db.read() as db:
        holder = accounts.password_link(db, token)
    if holder is None:
        return render_template("console/error.html", message=LINK_GONE), 404
    if request.method == "GET":
        return render_template("console/admin/set_password.html", holder=holder)
    password = request.form.get("password", "")[:MAX_PASSWORD]
    if password != request.form.get("confirm", "")[:MAX_PASSWORD]:
        flash("Le due password non coincidono.", "error")
        return render_template("console/admin/set_password.html", holder=holder), 400
    try:
        with svc.db.session() as db:
            used = accounts.redeem_password_link(db, token, password)
            record_audit(
                db,
                used.tenant_id,
                "user.password_set",
                actor=f"user:{used.user_id}",
                user_id=used.user_id,
                target_type="user",
                target_id=used.user_id,
                ip=request.remote_addr,
                detail={"purpose": str(used.purpose)},
            )
    except InvalidAccount:
        flash(f"La password deve avere almeno {accounts.MIN_PASSWORD_LENGTH} caratteri.", "error")
        return render_template("console/admin/set_password.html", holder=holder), 400
    except NotFound:
        return render_template("console/error.html", message=LINK_GONE), 404
    # Whoever was signed in in this browser is signed out: the link's account signs in.
    logout_user()
    session.clear()
    g.pop("csrf_token", None)
    flash("Password impostata. Entra con la tua email e la nuova password.", "ok")
    return redirect(url_for("console.login"))
