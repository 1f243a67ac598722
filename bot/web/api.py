"""JSON API v1 for the office's CRM: one bearer token per tenant, every query scoped.

Views parse, call one function of the core, and shape the answer. Another tenant's
ids answer 404, exactly like ids that do not exist.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, g, jsonify, request
from sqlalchemy import select

from bot.exceptions import InvalidPhoneNumber
from bot.office.phone import e164
from bot.office.tokens import tenant_for_token
from bot.outbound import Outgoing, Template, queue_message
from bot.privacy.register import export_register
from bot.services import services
from bot.web.errors import error_response
from storage.models import (
    BotLogEntry,
    Contact,
    Conversation,
    Message,
    Tenant,
    Ticket,
    iso_utc,
    utcnow,
)
from storage.queries import (
    contact_by_phone,
    contact_ledger,
    get_contact,
    get_conversation,
    open_conversation_for,
)
from storage.vocabulary import Purpose

bp = Blueprint("api", __name__, url_prefix="/api/v1")
REFUSAL_STATUS = {"opted_out": 409, "no_consent": 409, "outside_window": 422, "rate_limited": 429}


@bp.before_request
def authenticate() -> Response | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized()
    with services().db.read() as session:
        tenant = tenant_for_token(session, token)
    if tenant is None:
        return _unauthorized()
    if tenant.terminated_at is not None and request.method != "GET":
        # Until its data is deleted a terminated office may read it back, nothing more.
        return error_response(403, "office_terminated", "this office's service has ended")
    g.tenant = tenant
    return None


def _unauthorized() -> Response:
    response = error_response(401, "unauthorized", "a valid bearer token is required")
    response.headers["WWW-Authenticate"] = 'Bearer realm="portineria"'
    return response


def _since() -> datetime:
    raw = request.args.get("since")
    if not raw:
        return datetime(1970, 1, 1, tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        abort(400, "since must be an ISO 8601 time")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _e164(value: str) -> str:
    try:
        return e164(value)
    except InvalidPhoneNumber as error:
        abort(400, str(error))


def contact_json(contact: Contact) -> dict[str, Any]:
    return {
        "id": contact.id,
        "phone": contact.phone,
        "kind": contact.kind,
        "legal_basis": contact.legal_basis,
        "consent": contact.consent,
        "source": contact.source,
        "last_contact_at": iso_utc(contact.last_contact_at),
    }


@bp.get("/contacts")
def contacts() -> Response:
    tenant: Tenant = g.tenant
    query = select(Contact).where(Contact.tenant_id == tenant.id).order_by(Contact.id)
    if request.args.get("phone"):
        query = query.where(Contact.phone == _e164(request.args["phone"]))
    with services().db.read() as session:
        rows = session.scalars(query.limit(500)).all()
        return jsonify(contacts=[contact_json(c) for c in rows])


@bp.get("/contacts/<int:contact_id>/consent-events")
def consent_events(contact_id: int) -> Response:
    svc = services()
    tenant: Tenant = g.tenant
    with svc.db.read() as session:
        contact = get_contact(session, tenant, contact_id)
        if contact is None:
            abort(404, "no such contact")
        rows = contact_ledger(session, tenant, contact, svc.cipher)
        events = [
            {
                "event": e.event,
                "at": iso_utc(e.at),
                "channel": e.channel,
                "actor": e.actor,
                "evidence": {
                    "text": svc.cipher.decrypt(e.evidence_text) if e.evidence_text else None,
                    "message_sid": e.evidence_message_sid,
                    "sha256": e.evidence_sha256,
                },
                "notice_version": e.notice_version,
                "notice_sha256": e.notice_sha256,
            }
            for e in rows
        ]
    return jsonify(events=events)


@bp.get("/conversations")
def conversations() -> Response:
    tenant: Tenant = g.tenant
    query = select(Conversation).where(Conversation.tenant_id == tenant.id)
    flag = request.args.get("needs_attention")
    if flag is not None:
        query = query.where(Conversation.needs_attention == (flag.lower() in ("1", "true", "yes")))
    if request.args.get("contact_id"):
        if not request.args["contact_id"].isdigit():
            abort(400, "contact_id must be a number")
        query = query.where(Conversation.contact_id == int(request.args["contact_id"]))
    with services().db.read() as session:
        rows = session.scalars(query.order_by(Conversation.id.desc()).limit(500)).all()
        return jsonify(
            conversations=[
                {
                    "id": c.id,
                    "contact_id": c.contact_id,
                    "mode": c.mode,
                    "priority": c.priority,
                    "needs_attention": c.needs_attention,
                    "status": c.status,
                    "last_message_at": iso_utc(c.last_message_at),
                }
                for c in rows
            ]
        )


@bp.get("/conversations/<int:conversation_id>/messages")
def conversation_messages(conversation_id: int) -> Response:
    svc = services()
    tenant: Tenant = g.tenant
    with svc.db.read() as session:
        if get_conversation(session, tenant, conversation_id) is None:
            abort(404, "no such conversation")
        rows = session.scalars(
            select(Message)
            .where(Message.tenant_id == tenant.id, Message.conversation_id == conversation_id)
            .order_by(Message.id)
        ).all()
        return jsonify(
            messages=[
                {
                    "id": m.id,
                    "provider_sid": m.provider_sid,
                    "direction": m.direction,
                    "body": svc.cipher.decrypt(m.body) if m.body else None,
                    "status": m.status,
                    "intent": m.intent,
                    "sensitive": m.sensitive_kinds,
                    "at": iso_utc(m.created_at),
                }
                for m in rows
            ]
        )


@bp.get("/tickets")
def tickets() -> Response:
    tenant: Tenant = g.tenant
    with services().db.read() as session:
        rows = session.scalars(
            select(Ticket)
            .where(Ticket.tenant_id == tenant.id, Ticket.created_at >= _since())
            .order_by(Ticket.id)
            .limit(1000)
        ).all()
        return jsonify(
            tickets=[
                {
                    "id": t.id,
                    "kind": t.kind,
                    "intent": t.intent,
                    "status": t.status,
                    "conversation_id": t.conversation_id,
                    "entities": t.entities,
                    "created_at": iso_utc(t.created_at),
                    "updated_at": iso_utc(t.updated_at),
                }
                for t in rows
            ]
        )


@bp.get("/bot-logs")
def bot_logs() -> Response:
    tenant: Tenant = g.tenant
    with services().db.read() as session:
        rows = session.scalars(
            select(BotLogEntry)
            .where(BotLogEntry.tenant_id == tenant.id, BotLogEntry.at >= _since())
            .order_by(BotLogEntry.id)
            .limit(1000)
        ).all()
        return jsonify(
            entries=[
                {
                    "at": iso_utc(e.at),
                    "message_id": e.message_id,
                    "intent": e.intent,
                    "confidence": e.confidence,
                    "action": e.action,
                    "model_version": e.model_version,
                    "safety_rule": e.safety_rule,
                    "duration_ms": e.duration_ms,
                }
                for e in rows
            ]
        )


@bp.get("/register")
def processing_register() -> Response:
    """The office's art. 30 register, for the DPO's tools; the export is audited."""
    register = export_register(services(), g.tenant, utcnow(), actor="api", ip=request.remote_addr)
    return jsonify(register)


def _outgoing(data: dict[str, Any]) -> Outgoing:
    body, template = data.get("body"), data.get("template")
    if template is not None:
        if (
            not isinstance(template, dict)
            or not isinstance(template.get("content_sid"), str)
            or not isinstance(template.get("variables", {}), dict)
        ):
            abort(400, "template needs content_sid and an object of variables")
        variables = {str(k): str(v) for k, v in template.get("variables", {}).items()}
        return Outgoing(template=Template(template["content_sid"], variables), purpose=Purpose.API)
    if not isinstance(body, str) or not body.strip() or len(body) > 4096:
        abort(400, "body must be a non-empty string of at most 4096 characters")
    return Outgoing(text=body, purpose=Purpose.API)


@bp.post("/messages")
def send() -> tuple[Response, int] | Response:
    svc = services()
    tenant: Tenant = g.tenant
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or not isinstance(data.get("to"), str):
        abort(400, "a JSON object with 'to' and 'body' or 'template' is required")
    outgoing = _outgoing(data)
    phone = _e164(data["to"])
    key = "api:" + (request.headers.get("Idempotency-Key") or uuid.uuid4().hex)[:100]
    with svc.db.read() as session:
        contact = contact_by_phone(session, tenant, phone)
        if contact is None:
            return error_response(404, "unknown_contact", "no contact with this number")
        thread = open_conversation_for(session, tenant, contact)
    outcome = queue_message(svc, tenant, contact, thread, outgoing, key)
    if outcome.refusal is not None:
        reason = outcome.refusal.reason or "refused"
        return error_response(
            REFUSAL_STATUS.get(reason, 409), reason, outcome.refusal.explanation or ""
        )
    assert outcome.message_id is not None
    if outcome.status == "pending":
        svc.jobs.enqueue_delivery(outcome.message_id)
    return jsonify(id=outcome.message_id, status=outcome.status), 202
