"""Console pages: sign-in, inbox, conversation and the moves on it.

Views are thin: parse the form, call one rule of :mod:`bot.conversation.handoff` (or
:mod:`bot.console.reply`), publish its events after the commit, flash the rule's
Italian message and redirect.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import (
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_user, logout_user
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from bot.console.auth import (
    DEVICE_COOKIE,
    LOGIN_FAILED,
    LoginAttempt,
    SignIn,
    actor,
    end_session,
    login_throttle,
    operator,
    safe_next,
    sign_in,
)
from bot.console.blueprint import bp
from bot.console.inbox import (
    CALL_INSTEAD,
    COUNT_CAP,
    DEFAULT_FILTER,
    FILTERS,
    MAX_SEARCH,
    contact_phone,
    conversation_detail,
    inbox_counts,
    mark_read,
    next_waiting,
    operator_may_write,
    service_window,
    unread_total,
)
from bot.console.inbox import inbox as inbox_rows
from bot.console.notes import add_note, canned_responses
from bot.console.paging import id_cursor
from bot.console.reply import (
    TEMPLATE_VARIABLES,
    ReplyResult,
    new_form_key,
    send_operator_reply,
    send_operator_template,
)
from bot.conversation import handoff
from bot.exceptions import InvalidInput, NotFound, Refused
from bot.office.actor import Actor
from bot.office.throttle import DEVICE_TOKEN_MAX_AGE
from bot.outbound.attachments import Attachment, read_attachment
from bot.privacy.audit import record_actor_audit
from bot.services import services
from bot.web.numbers import parse_id
from storage.models import Tenant, utcnow
from storage.vocabulary import ConversationStatus, Mode, Refusal

# Refusals that retrying will not cure: the operator is told to phone instead.
LASTING_REFUSALS = frozenset({Refusal.OPTED_OUT, Refusal.NO_CONSENT, Refusal.OUTSIDE_WINDOW})
OPEN_ENDPOINTS = frozenset({"console.login", "console.set_password"})
MAX_EMAIL = 254
MAX_PASSWORD = 1024
NOT_A_COLLEAGUE = "Collega non valido: sceglilo dall'elenco."


@bp.before_request
def require_login() -> Response | None:
    """Every console page needs a signed-in operator; only the login page does not."""
    if request.endpoint in OPEN_ENDPOINTS or current_user.is_authenticated:
        return None
    return current_app.login_manager.unauthorized()  # type: ignore[attr-defined]


# -- sign-in ----------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(url_for("console.inbox"))
    if request.method == "GET":
        return render_template("console/login.html", studio=request.args.get("studio", ""))
    email = request.form.get("email", "").strip()[:MAX_EMAIL]
    password = request.form.get("password", "")[:MAX_PASSWORD]
    studio = request.form.get("studio", "").strip()[:64] or None
    result = SignIn(None)
    if email and password:
        attempt = LoginAttempt(
            studio, email, password, request.remote_addr, request.cookies.get(DEVICE_COOKIE)
        )
        result = sign_in(services(), login_throttle(), attempt)
    if result.operator is None:
        flash(LOGIN_FAILED, "error")
        return render_template("console/login.html", studio=studio or "", email=email), 401
    # A fresh session on sign-in: nothing from before it (CSRF token included) survives.
    # Not permanent: a permanent session turns Flask-Login's strong protection off.
    session.clear()
    g.pop("csrf_token", None)
    login_user(result.operator)
    response = redirect(safe_next(request.args.get("next")))
    if result.device_token:
        # Lets this browser's next sign-ins to the account skip limits others caused.
        response.set_cookie(
            DEVICE_COOKIE,
            result.device_token,
            max_age=DEVICE_TOKEN_MAX_AGE,
            path=url_for("console.login"),
            secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")),
            httponly=True,
            samesite="Strict",
        )
    return response


@bp.post("/logout")
def logout() -> Response:
    # Every session of the account ends on the server, not only this cookie.
    end_session(services(), operator(), request.remote_addr)
    logout_user()
    session.clear()
    g.pop("csrf_token", None)
    flash("Sei uscito dalla console.", "ok")
    return redirect(url_for("console.login"))


# -- inbox ------------------------------------------------------------------------------


def _filter_name() -> str:
    name = request.args.get("filtro", DEFAULT_FILTER)
    return name if name in FILTERS else DEFAULT_FILTER


def _inbox_context() -> dict[str, object]:
    svc, who, name = services(), operator(), _filter_name()
    search = request.args.get("q", "").strip()[:MAX_SEARCH]
    after = request.args.get("dopo")
    with svc.db.read() as db:
        page = inbox_rows(db, svc.cipher, who.tenant_id, who.id, name, after=after, search=search)
        counts = inbox_counts(db, who.tenant_id, who.id)
        unread = unread_total(db, who.tenant_id, who.id)
    return {
        "rows": page.rows,
        "next_cursor": page.next_cursor,
        "after": after,
        "counts": counts,
        "count_cap": COUNT_CAP,
        "filter_name": name,
        "filters": FILTERS,
        "search": search,
        "unread_total": unread,
    }


@bp.get("/")
def inbox() -> str:
    return render_template("console/inbox.html", **_inbox_context())


@bp.get("/inbox/list")
def inbox_list() -> str:
    """The inbox list alone, for the page to refresh itself when an event arrives."""
    return render_template("console/_inbox_list.html", **_inbox_context())


@bp.get("/next")
def next_conversation() -> Response:
    """The keyboard's "next urgent": the first conversation waiting, urgent first."""
    svc, who = services(), operator()
    after = request.args.get("dopo", "")
    with svc.db.read() as db:
        found = next_waiting(db, who.tenant_id, who.id, int(after) if after.isdigit() else None)
    if found is None:
        flash("Nessuna conversazione in attesa.", "ok")
        return redirect(url_for("console.inbox"))
    return redirect(url_for("console.conversation", conversation_id=found))


# -- one conversation -------------------------------------------------------------------


def _conversation_context(conversation_id: int, live: bool = False) -> dict[str, object]:
    """What the conversation page shows; reading it marks it read for this operator."""
    svc, who, now = services(), actor(), utcnow()
    with svc.db.session() as db:
        tenant = db.get(Tenant, who.tenant_id)
        settings = (tenant.settings if tenant else None) or {}
        names = {t["content_sid"]: t["name"] for t in settings.get("approved_templates") or []}
        # The "older messages" cursor: the oldest message of the page shown before.
        before = id_cursor(request.args.get("prima"))
        detail = conversation_detail(
            db, svc.cipher, who.tenant_id, conversation_id, before, templates=names
        )
        if detail is None:
            raise NotFound(conversation_id)
        new = mark_read(db, who.tenant_id, who.user_id, conversation_id)
        canned = [(c.title, c.body) for c in canned_responses(db, who.tenant_id)]
        # A live refresh that shows new messages is an access like the first view; one
        # for a delivery tick or a colleague's move shows nothing not seen before.
        if new or not live:
            audit = {"live": True} if live else None
            record_actor_audit(db, who, "conversation.view", "conversation", conversation_id, audit)
    thread = detail.conversation
    return {
        "detail": detail,
        "form_key": new_form_key(),
        "template_key": new_form_key(),
        "holds_it": thread.mode == Mode.HUMAN and thread.assigned_user_id == who.user_id,
        "may_act": thread.status == ConversationStatus.OPEN and handoff.may_act(thread, who),
        "writable": operator_may_write(detail.contact_state, now),
        "window": service_window(detail.contact_state, settings, now),
        "canned": canned,
        "max_attachment_mb": int(svc.config["ATTACHMENT_MAX_BYTES"]) // (1024 * 1024),
    }


@bp.get("/conversations/<id:conversation_id>")
def conversation(conversation_id: int) -> str:
    return render_template("console/conversation.html", **_conversation_context(conversation_id))


@bp.get("/conversations/<id:conversation_id>/live")
def conversation_live(conversation_id: int) -> str:
    """The parts of the page an event changes (state, messages, the window), for the
    page to replace in place: the reply being written is not among them."""
    return render_template(
        "console/_conversation_live.html", **_conversation_context(conversation_id, live=True)
    )


def _move(
    conversation_id: int,
    run: Callable[[Session, Actor], handoff.Move],
    back_to: str | None = None,
) -> Response:
    svc = services()
    try:
        with svc.db.session() as db:
            move = run(db, actor())
    except Refused as refusal:
        flash(refusal.message, "error")
    else:
        handoff.publish(svc, move.events)
        lost = isinstance(move, handoff.Takeover) and not move.won
        flash(move.message, "error" if lost else "ok")
    if back_to == "inbox":
        return redirect(url_for("console.inbox"))
    return redirect(url_for("console.conversation", conversation_id=conversation_id))


@bp.post("/conversations/<id:conversation_id>/takeover")
def takeover(conversation_id: int) -> Response:
    return _move(
        conversation_id, lambda db, who: handoff.takeover(db, who, conversation_id, utcnow())
    )


@bp.post("/conversations/<id:conversation_id>/release")
def release(conversation_id: int) -> Response:
    return _move(conversation_id, lambda db, who: handoff.release(db, who, conversation_id))


@bp.post("/conversations/<id:conversation_id>/close")
def close(conversation_id: int) -> Response:
    reason = request.form.get("reason", "")
    return _move(conversation_id, lambda db, who: handoff.close(db, who, conversation_id, reason))


@bp.post("/conversations/<id:conversation_id>/acknowledge")
def acknowledge(conversation_id: int) -> Response:
    """ "Presa in carico": someone has the emergency (from the page or the inbox)."""
    return _move(
        conversation_id,
        lambda db, who: handoff.acknowledge(db, who, conversation_id, utcnow()),
        back_to="inbox" if request.form.get("from") == "inbox" else None,
    )


@bp.post("/conversations/<id:conversation_id>/assign")
def assign(conversation_id: int) -> Response:
    try:
        colleague = parse_id(request.form.get("user_id", ""), "user_id")
    except InvalidInput:
        flash(NOT_A_COLLEAGUE, "error")
        return redirect(url_for("console.conversation", conversation_id=conversation_id))
    return _move(
        conversation_id,
        lambda db, who: handoff.assign(db, who, conversation_id, colleague, utcnow()),
    )


def _attachment() -> Attachment | None:
    upload = request.files.get("attachment")
    if upload is None or not upload.filename:
        return None
    limit = int(services().config["ATTACHMENT_MAX_BYTES"])
    return read_attachment(upload.stream.read(limit + 1), limit)


def _sent(conversation_id: int, send: Callable[[], ReplyResult]) -> Response:
    try:
        result = send()
    except Refused as refusal:
        flash(refusal.message, "error")
    else:
        if result.sent:
            flash(result.message, "ok")
        elif result.refusal_reason in LASTING_REFUSALS:
            flash(result.message + _call_instead(conversation_id), "error")
        else:
            flash(result.message, "error")
    return redirect(url_for("console.conversation", conversation_id=conversation_id))


@bp.post("/conversations/<id:conversation_id>/reply")
def reply(conversation_id: int) -> Response:
    return _sent(
        conversation_id,
        lambda: send_operator_reply(
            services(),
            actor(),
            conversation_id,
            request.form.get("body", ""),
            request.form.get("form_key", ""),
            _attachment(),
        ),
    )


@bp.post("/conversations/<id:conversation_id>/template")
def send_template(conversation_id: int) -> Response:
    """After the 24-hour window: an approved template instead of free text."""
    return _sent(
        conversation_id,
        lambda: send_operator_template(
            services(),
            actor(),
            conversation_id,
            request.form.get("content_sid", ""),
            [request.form.get(f"var{i}", "") for i in range(1, TEMPLATE_VARIABLES + 1)],
            request.form.get("form_key", ""),
        ),
    )


@bp.post("/conversations/<id:conversation_id>/notes")
def add_internal_note(conversation_id: int) -> Response:
    svc = services()
    try:
        add_note(svc, actor(), conversation_id, request.form.get("note", ""))
    except Refused as refusal:
        flash(refusal.message, "error")
    else:
        flash("Nota interna salvata: la vedono solo i colleghi dello studio.", "ok")
        # Colleagues with the conversation open see the note arrive.
        with svc.db.read() as db:
            thread = handoff.load_conversation(db, actor(), conversation_id)
            event = handoff.updated_event(db, thread, "note")
        handoff.publish(svc, [event])
    return redirect(url_for("console.conversation", conversation_id=conversation_id))


def _call_instead(conversation_id: int) -> str:
    """A refused reply says how to reach the resident anyway: by phone."""
    svc, who = services(), actor()
    with svc.db.read() as db:
        phone = contact_phone(db, who.tenant_id, conversation_id)
    return f" {CALL_INSTEAD.format(phone=phone)}" if phone else ""
