"""Twilio's webhooks: validate, store durably, hand off to the workers, answer in milliseconds.

When the database cannot take a delivery (down, failing over, locked past the
writer's timeout, full, read-only), it is kept in the spool (:mod:`bot.runtime.spool`)
and answered as if stored; only when no spool can keep it the answer is 503 with
``Retry-After``. The hot path, when the database answers, is unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from flask import Blueprint, Response, abort, current_app, request
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from twilio.request_validator import RequestValidator

from bot.conversation.escalation import MAX_ATTEMPTS, answer_keypress
from bot.conversation.inbound import check_required, encode_payload
from bot.crm import record_message_status
from bot.exceptions import InvalidInput, MalformedWebhook
from bot.office.phone import strip_channel
from bot.outbound.send import publish_delivery
from bot.privacy.consent import record_delivery_error
from bot.runtime.spool import SpooledDelivery, ensure_web_drain
from bot.services import services
from bot.web.errors import error_response
from bot.web.numbers import parse_int
from bot.web.twilio_form import parse_form
from storage.delivery import apply_status
from storage.inbound import StoreUnavailable, database_unavailable
from storage.models import utcnow
from storage.vocabulary import SpoolKind

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks/twilio")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
ERROR_CODE_MAX = 999_999


def _signed_params() -> dict[str, str]:
    """The form, if and only if Twilio signed it for our public URL (403 otherwise)."""
    try:
        params = parse_form(request.get_data(cache=False))
    except MalformedWebhook as error:
        abort(400, str(error))
    signature = request.headers.get("X-Twilio-Signature", "")
    validator: RequestValidator | None = services().request_validator
    # Behind a proxy the request host is not what Twilio signed: use the public URL.
    url = current_app.config["PUBLIC_BASE_URL"] + request.full_path.rstrip("?")
    if validator is None or not signature or not validator.validate(url, params, signature):
        log.warning("webhook %s refused: bad or missing signature", request.path)
        abort(403, "invalid signature")
    return params


def _tenant_for(number: str) -> int | None:
    """The office that owns ``number`` (404 if none); ``None`` when the database cannot
    be asked now: the delivery is then spooled and routed when it is drained."""
    try:
        tenant_id = services().tenants.tenant_for(number)
    except SQLAlchemyError as error:
        if not database_unavailable(error):
            raise
        return None
    if tenant_id is None:
        abort(404, "unknown WhatsApp number")
    return tenant_id


def _spooled(record: SpooledDelivery, answer: Response) -> Response:
    """``answer`` once the delivery is kept durably elsewhere; 503 if it could not be."""
    spool = services().spool
    place = spool.keep(record)
    if place is not None:
        log.warning("database unavailable: a %s delivery was spooled (%s)", record.kind, place)
        return answer
    log.error("database unavailable and no spool could keep a %s delivery: 503", record.kind)
    refused = error_response(503, "service_unavailable", "retry later")
    refused.headers["Retry-After"] = str(spool.retry_after)
    return refused


@bp.before_app_request
def _drain_in_this_process() -> None:
    # A web process drains its own spool file (no other process can while it lives);
    # a test drives draining itself.
    if not current_app.testing:
        ensure_web_drain(services())


@bp.post("/messages")
def inbound_message() -> Response:
    params = _signed_params()
    try:
        check_required(params)
    except MalformedWebhook as error:
        abort(400, str(error))
    number = strip_channel(params["To"])
    tenant_id = _tenant_for(number)
    svc = services()
    payload = svc.cipher.encrypt(encode_payload(params))
    answer = Response(EMPTY_TWIML, status=200, mimetype="text/xml")
    if tenant_id is None:
        return _spooled(_message_record(number, None, params, payload), answer)
    try:
        message_id = svc.inbound_writer.store(tenant_id, params["MessageSid"], payload)
    except StoreUnavailable:
        return _spooled(_message_record(number, tenant_id, params, payload), answer)
    svc.spool.database_answered()
    if message_id is None:
        log.debug("duplicate delivery of an already stored message ignored")
    else:
        try:
            svc.jobs.hand_off(message_id)
        except RedisError:
            # Stored is safe: the sweeper enqueues it once Redis is back.
            log.warning("message %s stored but not handed off: redis unavailable", message_id)
    return answer


def _message_record(
    number: str, tenant_id: int | None, params: dict[str, str], payload: bytes
) -> SpooledDelivery:
    return SpooledDelivery(
        kind=SpoolKind.MESSAGE,
        number=number,
        tenant_id=tenant_id,
        sid=params["MessageSid"],
        received_at=utcnow(),
        payload=payload,
    )


def _error_code(raw: str | None) -> int | None:
    """Twilio's error codes have five digits; anything else is not Twilio's (400)."""
    try:
        return parse_int(raw, "ErrorCode", low=0, high=ERROR_CODE_MAX) if raw else None
    except InvalidInput as error:
        abort(400, str(error))


@bp.post("/status")
def delivery_status() -> Response:
    params = _signed_params()
    sid, status = params.get("MessageSid"), (params.get("MessageStatus") or "").lower()
    if not sid or not status or not params.get("From"):
        abort(400, "missing MessageSid, MessageStatus or From")
    error_code = _error_code(params.get("ErrorCode"))
    number = strip_channel(params["From"])
    tenant_id = _tenant_for(number)
    record = SpooledDelivery(
        kind=SpoolKind.STATUS,
        number=number,
        tenant_id=tenant_id,
        sid=sid,
        received_at=utcnow(),
        status=status,
        error_code=error_code,
    )
    answer = Response(status=204)
    if tenant_id is None:
        return _spooled(record, answer)
    svc = services()
    message_id = None
    try:
        # Bounded like a message's insert: a callback must not hold a web worker long.
        with svc.db.deadline(svc.config["WEBHOOK_DB_TIMEOUT_SECONDS"]):
            message_id = apply_status(
                svc.db, tenant_id, sid, status, error_code, then=record_message_status
            )
            if message_id is not None and error_code is not None:
                record_delivery_error(svc, tenant_id, message_id, error_code)
    except Exception as error:
        if not database_unavailable(error):
            raise
        # Applied already? Then only the delivery error is left to record on drain.
        return _spooled(replace(record, message_id=message_id), answer)
    svc.spool.database_answered()
    if message_id is not None:
        publish_delivery(svc, tenant_id, message_id)
    return answer


@bp.post("/voice/ack")
def voice_ack() -> Response:
    """A Gather's action on an escalation call: the on-call person pressed a key."""
    params = _signed_params()
    call_sid = params.get("CallSid", "")
    if not call_sid:
        abort(400, "missing CallSid")
    raw_attempt = request.args.get("attempt", "1")
    attempt = int(raw_attempt) if raw_attempt.isdigit() else MAX_ATTEMPTS
    twiml = answer_keypress(services(), call_sid, params.get("Digits", ""), attempt)
    return Response(twiml, status=200, mimetype="text/xml")
