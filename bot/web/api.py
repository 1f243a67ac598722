"""JSON API v1 for the office's CRM: one bearer token per tenant, every query scoped.

Views parse, call one function of the core, and shape the answer. Another tenant's
ids answer 404, exactly like ids that do not exist. Every list is paged the same way
(:mod:`bot.web.paging`: ``limit`` and an ``after`` cursor, ``next_cursor`` in the
answer) and every resource has one shape (:mod:`bot.web.api_serialisers`); a view
only says which rows, in which order. Numbers from the caller go through
:mod:`bot.web.numbers`; a bad one is a 400 (a 404 in a path).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from flask import Blueprint, Response, abort, g, jsonify, request
from sqlalchemy import Select, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session, selectinload

from bot.conversation.emergency import acknowledge_emergency, open_emergencies
from bot.crm.history import deliveries_query, delivery_json
from bot.exceptions import InvalidInput, NotFound, Refused
from bot.office.notices import create_notice, notice_json
from bot.office.phone import e164
from bot.office.tokens import tenant_for_token
from bot.office.work_orders import MAX_NOTE, send_work_order, work_order_events
from bot.outbound import Envelope, Outgoing, Template, queue_message
from bot.privacy.register import export_register
from bot.services import services
from bot.web.api_serialisers import (
    bot_log_json,
    building_json,
    consent_event_json,
    contact_json,
    conversation_json,
    message_json,
    ticket_json,
    work_order_json,
)
from bot.web.errors import error_response
from bot.web.numbers import parse_id
from bot.web.paging import PageRequest, fetch_page
from storage.models import (
    BotLogEntry,
    Building,
    BuildingLink,
    BuildingNotice,
    ConsentEvent,
    Contact,
    Conversation,
    Message,
    Tenant,
    Ticket,
    WebhookDelivery,
    WorkOrder,
    utcnow,
)
from storage.queries import (
    contact_by_phone,
    contact_ledger_query,
    get_contact,
    get_conversation,
    open_conversation_for,
)
from storage.vocabulary import AckVia, Purpose

bp = Blueprint("api", __name__, url_prefix="/api/v1")
REFUSAL_STATUS = {"opted_out": 409, "no_consent": 409, "outside_window": 422, "rate_limited": 429}
# Reads that take their question in a body, so that it stays out of URLs and logs.
READ_ONLY_POSTS = frozenset({"api.contact_lookup"})
# RFC 9745: the moment ``GET /contacts?phone=`` was deprecated (2026-12-01T00:00:00Z).
PHONE_QUERY_DEPRECATED = "@1796083200"
Row = TypeVar("Row")
# What the shapes show of a row's links, loaded for a whole page in a few queries.
TICKET_LINKS = tuple(
    selectinload(link)
    for link in (Ticket.building, Ticket.unit, Ticket.assignee, Ticket.supplier, Ticket.work_orders)
)
CONTACT_PLACES = selectinload(Contact.building_links).options(
    selectinload(BuildingLink.building), selectinload(BuildingLink.unit)
)


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
    if (
        tenant.terminated_at is not None
        and request.method != "GET"
        and request.endpoint not in READ_ONLY_POSTS
    ):
        # Until its data is deleted a terminated office may read it back, nothing more.
        return error_response(403, "office_terminated", "this office's service has ended")
    g.tenant = tenant
    return None


def _unauthorized() -> Response:
    response = error_response(401, "unauthorized", "a valid bearer token is required")
    response.headers["WWW-Authenticate"] = 'Bearer realm="portineria"'
    return response


@bp.errorhandler(InvalidInput)
def invalid_input(error: InvalidInput) -> Response:
    return error_response(400, "bad_request", str(error))


def _since() -> datetime:
    raw = request.args.get("since")
    if not raw:
        return datetime(1970, 1, 1, tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        abort(400, "since must be an ISO 8601 time")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _listing(
    name: str,
    query: Select[Row],
    key: InstrumentedAttribute[int],
    shape: Callable[[Row], dict[str, Any]],
    *,
    newest_first: bool = False,
) -> Response:
    """Every list of the API: one page of ``query`` as ``{name: [...], "next_cursor"}``."""
    wanted = PageRequest.from_args(request.args)
    with services().db.read() as session:
        page = fetch_page(session, query, key, wanted, newest_first=newest_first)
        items = [shape(row) for row in page.items]
    return jsonify({name: items, "next_cursor": page.next_cursor})


def _require(
    lookup: Callable[[Session, Tenant, int], object | None], row_id: int, what: str
) -> None:
    """404 unless the row is the caller's office's (another office's ids look unknown)."""
    with services().db.read() as session:
        if lookup(session, g.tenant, row_id) is None:
            abort(404, f"no such {what}")


def _contacts(phone: str | None) -> Response:
    query = select(Contact).where(Contact.tenant_id == g.tenant.id).options(CONTACT_PLACES)
    if phone is not None:
        query = query.where(Contact.phone == phone)
    return _listing("contacts", query, Contact.id, contact_json)


@bp.get("/contacts")
def contacts() -> Response:
    """Oldest first. ``?phone=`` is deprecated: the number ends up in access logs."""
    phone = request.args.get("phone")
    response = _contacts(e164(phone) if phone else None)
    if phone:
        response.headers["Deprecation"] = PHONE_QUERY_DEPRECATED
        response.headers["Link"] = '</api/v1/contacts/lookup>; rel="alternate"'
    return response


@bp.post("/contacts/lookup")
def contact_lookup() -> Response:
    """The contacts with this number, the number travelling in the body, not the URL."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or not isinstance(data.get("phone"), str):
        abort(400, "a JSON object with 'phone' is required")
    return _contacts(e164(data["phone"]))


@bp.get("/contacts/<id:contact_id>/consent-events")
def consent_events(contact_id: int) -> Response:
    """Oldest first; only the rows that are this person's (by id and keyed hash)."""
    svc = services()
    with svc.db.read() as session:
        contact = get_contact(session, g.tenant, contact_id)
        if contact is None:
            abort(404, "no such contact")
        query = contact_ledger_query(g.tenant, contact, svc.cipher)
    shape = partial(consent_event_json, cipher=svc.cipher)
    return _listing("events", query, ConsentEvent.id, shape)


@bp.get("/conversations")
def conversations() -> Response:
    """Newest first."""
    query = select(Conversation).where(Conversation.tenant_id == g.tenant.id)
    flag = request.args.get("needs_attention")
    if flag is not None:
        query = query.where(Conversation.needs_attention == (flag.lower() in ("1", "true", "yes")))
    contact_id = request.args.get("contact_id")
    if contact_id:
        query = query.where(Conversation.contact_id == parse_id(contact_id, "contact_id"))
    return _listing("conversations", query, Conversation.id, conversation_json, newest_first=True)


@bp.post("/conversations/<id:conversation_id>/acknowledge")
def acknowledge(conversation_id: int) -> Response:
    """The office's systems take charge of the conversation's emergency (audited)."""
    svc = services()
    tenant: Tenant = g.tenant
    try:
        acknowledged = acknowledge_emergency(
            svc,
            tenant.id,
            conversation_id,
            actor="api",
            user_id=None,
            via=AckVia.API,
            ip=request.remote_addr,
        )
    except NotFound:
        abort(404, "no such conversation")
    with svc.db.read() as session:
        thread = get_conversation(session, tenant, conversation_id)
        assert thread is not None
        emergencies = open_emergencies(session, tenant.id, conversation_id)
        return jsonify(
            **conversation_json(thread),
            conversation_id=thread.id,
            acknowledged=acknowledged,
            emergencies=[ticket_json(t, svc.cipher) for t in emergencies],
        )


@bp.get("/conversations/<id:conversation_id>/messages")
def conversation_messages(conversation_id: int) -> Response:
    """Oldest first, as the conversation was written."""
    _require(get_conversation, conversation_id, "conversation")
    query = select(Message).where(
        Message.tenant_id == g.tenant.id, Message.conversation_id == conversation_id
    )
    return _listing("messages", query, Message.id, partial(message_json, cipher=services().cipher))


def _from_since(model: Any, at: InstrumentedAttribute[datetime]) -> Select[Any]:
    """The office's rows of ``model`` from ``since`` on, oldest first by id.

    Rows are listed by id but asked for by time: walking the ids from the oldest row
    would read the whole history before the first row of last week. So the first page
    starts at the smallest id written since then, read from the (office, time, id)
    index as a range (``min(id + 0)``: a plain ``min(id)`` would be planned as that
    very walk of the primary key); the time is still checked on every row.
    """
    since = _since()
    query = select(model).where(model.tenant_id == g.tenant.id, at >= since)
    if "since" in request.args and not request.args.get("after"):
        first = select(func.min(model.id + 0)).where(model.tenant_id == g.tenant.id, at >= since)
        query = query.where(model.id >= first.scalar_subquery())
    return query


@bp.get("/tickets")
def tickets() -> Response:
    """Oldest first; ``since`` keeps those created from then on."""
    return _listing(
        "tickets",
        _from_since(Ticket, Ticket.created_at).options(*TICKET_LINKS),
        Ticket.id,
        partial(ticket_json, cipher=services().cipher),
    )


@bp.get("/buildings")
def buildings() -> Response:
    """The office's buildings, oldest first."""
    query = select(Building).where(Building.tenant_id == g.tenant.id)
    return _listing("buildings", query, Building.id, building_json)


@bp.get("/bot-logs")
def bot_logs() -> Response:
    """Oldest first; ``since`` keeps the entries written from then on."""
    query = _from_since(BotLogEntry, BotLogEntry.at)
    return _listing("entries", query, BotLogEntry.id, bot_log_json)


@bp.get("/webhook-deliveries")
def webhook_deliveries() -> Response:
    """The CRM delivery log, oldest first; ``endpoint_id``, ``status`` and ``since`` filter it."""
    endpoint_id = request.args.get("endpoint_id")
    query = deliveries_query(
        g.tenant.id,
        endpoint_id=parse_id(endpoint_id, "endpoint_id") if endpoint_id else None,
        status=request.args.get("status") or None,
        since=_since() if request.args.get("since") else None,
    )
    return _listing("deliveries", query, WebhookDelivery.id, delivery_json)


@bp.get("/register")
def processing_register() -> Response:
    """The office's art. 30 register, for the DPO's tools; the export is audited."""
    register = export_register(services(), g.tenant, utcnow(), actor="api", ip=request.remote_addr)
    return jsonify(register)


@bp.post("/tickets/<id:ticket_id>/work-orders")
def create_work_order(ticket_id: int) -> tuple[Response, int] | Response:
    """Send an ordine di lavoro for the ticket to a supplier (the office's template)."""
    svc = services()
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or not isinstance(data.get("supplier"), str):
        abort(400, "a JSON object with 'supplier' (a phone number) is required")
    note = data.get("note", "")
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        abort(400, f"note must be a string of at most {MAX_NOTE} characters")
    try:
        order = send_work_order(
            svc,
            g.tenant,
            ticket_id,
            e164(data["supplier"]),
            note,
            actor="api",
            ip=request.remote_addr,
        )
    except NotFound as missing:
        code = "unknown_contact" if "supplier" in str(missing) else "not_found"
        return error_response(404, code, str(missing))
    except Refused as refusal:
        return error_response(REFUSAL_STATUS.get(refusal.code, 422), refusal.code, refusal.message)
    return jsonify(id=order.id, status=order.status), 201


@bp.get("/work-orders/<id:order_id>")
def work_order(order_id: int) -> Response:
    with services().db.read() as session:
        order = session.scalar(
            select(WorkOrder).where(WorkOrder.tenant_id == g.tenant.id, WorkOrder.id == order_id)
        )
        if order is None:
            abort(404, "no such work order")
        return jsonify(work_order_json(order, list(work_order_events(session, order))))


@bp.post("/notices")
def create_building_notice() -> tuple[Response, int] | Response:
    """A building notice to its consented, opted-in residents (202: being sent)."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or not isinstance(data.get("building"), str):
        abort(400, "a JSON object with 'building', 'category' and 'template' is required")
    scala, category = data.get("scala"), data.get("category", "avvisi")
    if (scala is not None and not isinstance(scala, str)) or not isinstance(category, str):
        abort(400, "scala and category must be strings")
    outgoing = _outgoing({"template": data.get("template")})
    assert outgoing.template is not None
    try:
        notice_id, recipients = create_notice(
            services(),
            g.tenant,
            building_code=data["building"],
            scala=scala,
            category=category,
            content_sid=outgoing.template.content_sid,
            variables=outgoing.template.variables,
            actor="api",
            ip=request.remote_addr,
        )
    except NotFound:
        abort(404, "no such building")
    except Refused as refusal:
        status = 429 if refusal.code == "daily_cap_exceeded" else 422
        return error_response(status, refusal.code, refusal.message)
    return jsonify(id=notice_id, recipients=recipients), 202


@bp.get("/notices/<id:notice_id>")
def building_notice(notice_id: int) -> Response:
    with services().db.read() as session:
        notice = session.scalar(
            select(BuildingNotice).where(
                BuildingNotice.tenant_id == g.tenant.id, BuildingNotice.id == notice_id
            )
        )
        if notice is None:
            abort(404, "no such notice")
        building = session.get(Building, notice.building_id) if notice.building_id else None
        return jsonify(notice_json(session, notice, building.code if building else None))


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
    phone = e164(data["to"])
    key = "api:" + (request.headers.get("Idempotency-Key") or uuid.uuid4().hex)[:100]
    with svc.db.read() as session:
        contact = contact_by_phone(session, tenant, phone)
        if contact is None:
            return error_response(404, "unknown_contact", "no contact with this number")
        thread = open_conversation_for(session, tenant, contact)
    outcome = queue_message(svc, Envelope(tenant, contact, thread, key), outgoing)
    if outcome.refusal is not None:
        reason = outcome.refusal.reason or "refused"
        return error_response(
            REFUSAL_STATUS.get(reason, 409), reason, outcome.refusal.explanation or ""
        )
    assert outcome.message_id is not None
    if outcome.status == "pending":
        svc.jobs.enqueue_delivery(outcome.message_id)
    return jsonify(id=outcome.message_id, status=outcome.status), 202
