"""``/dev/simulator`` (dev mode only): write as a resident, see the bot's replies.

It posts to the real webhook over HTTP, signed exactly as Twilio signs, so the page
exercises the whole inbound path.
"""

from __future__ import annotations

import uuid

import requests
from flask import Blueprint, Response, abort, jsonify, render_template, request
from sqlalchemy import select

from bot.office.phone import phone_from_address
from bot.services import services
from storage.models import Tenant
from storage.queries import contact_by_wa_id, conversation_messages, open_conversation_for

bp = Blueprint("simulator", __name__, url_prefix="/dev/simulator")


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
    phone = request.args.get("phone", "")
    tenant = _demo_tenant()
    with svc.db.read() as session:
        contact = contact_by_wa_id(session, tenant, phone.lstrip("+"))
        thread = open_conversation_for(session, tenant, contact) if contact else None
        rows = conversation_messages(session, tenant, thread.id) if thread else []
        items = [
            {
                "id": m.id,
                "direction": m.direction,
                "status": m.status,
                "intent": m.intent,
                "body": svc.cipher.decrypt(m.body) if m.body else "",
            }
            for m in rows
        ]
        state = {
            "consent": contact.consent if contact else "none",
            "mode": thread.mode if thread else None,
        }
    return jsonify(messages=items, **state)
