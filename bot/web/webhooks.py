"""Twilio's webhooks: validate, store durably, hand off to the workers, answer in milliseconds."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, current_app, request
from redis.exceptions import RedisError
from twilio.request_validator import RequestValidator

from bot.conversation.escalation import MAX_ATTEMPTS, answer_keypress
from bot.conversation.inbound import check_required, encode_payload
from bot.exceptions import InvalidInput, MalformedWebhook
from bot.office.phone import strip_channel
from bot.outbound.send import publish_delivery
from bot.privacy.consent import record_delivery_error
from bot.services import services
from bot.web.numbers import parse_int
from bot.web.twilio_form import parse_form
from storage.delivery import apply_status

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


def _tenant_for(number: str) -> int:
    tenant_id = services().tenants.tenant_for(strip_channel(number))
    if tenant_id is None:
        abort(404, "unknown WhatsApp number")
    return tenant_id


@bp.post("/messages")
def inbound_message() -> Response:
    params = _signed_params()
    try:
        check_required(params)
    except MalformedWebhook as error:
        abort(400, str(error))
    tenant_id = _tenant_for(params["To"])
    svc = services()
    payload = svc.cipher.encrypt(encode_payload(params))
    message_id = svc.inbound_writer.store(tenant_id, params["MessageSid"], payload)
    if message_id is None:
        log.debug("duplicate delivery of an already stored message ignored")
    else:
        try:
            svc.jobs.hand_off(message_id)
        except RedisError:
            # Stored is safe: the sweeper enqueues it once Redis is back.
            log.warning("message %s stored but not handed off: redis unavailable", message_id)
    return Response(EMPTY_TWIML, status=200, mimetype="text/xml")


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
    tenant_id = _tenant_for(params["From"])
    message_id = apply_status(services().db, tenant_id, sid, status, error_code)
    if message_id is not None and error_code is not None:
        record_delivery_error(services(), tenant_id, message_id, error_code)
    if message_id is not None:
        publish_delivery(services(), tenant_id, message_id)
    return Response(status=204)


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
