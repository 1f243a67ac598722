"""``/dev/simulator`` (dev mode only): write as a resident, see the bot's replies.

It posts to the real webhook over HTTP, signed exactly as Twilio signs, so the page
exercises the whole inbound path.

It shows only its own conversations: the numbers this browser wrote from, kept in
its signed session with the time of its first message, and only the messages from
that time on. Another contact's conversation is never served (not even after
writing once from that contact's number: what came before stays hidden), so the page
needs no console login, and the README's first step stays one click. Why not the
console login: the simulator plays a resident, not an operator, and an operator
reads conversations in the console, where every view is audited.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import requests
from flask import Blueprint, Response, abort, jsonify, render_template, request, session
from sqlalchemy import select

from bot.office.phone import phone_from_address
from bot.services import services
from storage.models import Tenant, utcnow
from storage.queries import contact_by_wa_id, conversation_messages, open_conversation_for

bp = Blueprint("simulator", __name__, url_prefix="/dev/simulator")

SESSION_KEY = "simulator_numbers"
MAX_NUMBERS = 10  # a cookie is small; the oldest number is forgotten first


def _remember(phone: str, since: datetime) -> None:
    """This browser writes from ``phone``: it may read what happens from ``since`` on."""
    numbers = dict(session.get(SESSION_KEY, {}))
    if phone in numbers:
        return
    numbers[phone] = since.isoformat()
    session[SESSION_KEY] = dict(list(numbers.items())[-MAX_NUMBERS:])


def _since(phone: str) -> datetime | None:
    """From when this browser may read ``phone``'s conversation (None: not its own)."""
    value = session.get(SESSION_KEY, {}).get(phone)
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _demo_tenant() -> Tenant:
    with services().db.read() as session:
        tenant = session.scalar(select(Tenant).order_by(Tenant.id).limit(1))
    if tenant is None:
        abort(404, "no office yet: run `portineria tenant create`")
    return tenant


@bp.get("")
def page() -> str:
    return render_template("simulator.html", tenant=_demo_tenant())


@bp.post("/send")
def send() -> Response:
    svc = services()
    data = request.get_json(silent=True) or {}
    phone, body = str(data.get("phone", "")).strip(), str(data.get("body", ""))
    if phone_from_address(phone) is None or not body.strip():
        abort(400, "phone (E.164) and body are required")
    tenant = _demo_tenant()
    _remember(phone, utcnow())
    params = {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "AccountSid": "AC" + "0" * 32,
        "From": f"whatsapp:{phone}",
        "To": f"whatsapp:{tenant.whatsapp_number}",
        "Body": body,
        "NumMedia": "0",
        "WaId": phone.lstrip("+"),
        "ApiVersion": "2010-04-01",
    }
    url = svc.config["PUBLIC_BASE_URL"] + "/webhooks/twilio/messages"
    assert svc.request_validator is not None
    signature = svc.request_validator.compute_signature(url, params)
    answer = requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)
    return jsonify(status=answer.status_code, message_sid=params["MessageSid"])


@bp.get("/messages")
def messages() -> Response:
    svc = services()
    phone = request.args.get("phone", "").strip()
    tenant = _demo_tenant()
    since = _since(phone)
    if since is None:
        # Not a number this browser wrote from: the same answer as a number nobody used.
        return jsonify(messages=[], consent="none", mode=None)
    with svc.db.read() as db:
        contact = contact_by_wa_id(db, tenant, phone.lstrip("+"))
        thread = open_conversation_for(db, tenant, contact) if contact else None
        rows = conversation_messages(db, tenant, thread.id) if thread else []
        items = [
            {
                "id": m.id,
                "direction": m.direction,
                "status": m.status,
                "intent": m.intent,
                "body": svc.cipher.decrypt(m.body) if m.body else "",
            }
            for m in rows
            if m.created_at >= since
        ]
        state = {
            "consent": contact.consent if contact else "none",
            "mode": thread.mode if thread else None,
        }
    return jsonify(messages=items, **state)
