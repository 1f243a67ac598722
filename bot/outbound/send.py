"""The single way out: every outbound WhatsApp message passes :func:`queue_message`.

It asks the outbound gate first and records the message under an idempotency key
before anything touches the network. :func:`deliver` then claims the recorded row
and hands it to the transport; a retried job finds the row it already wrote and
never sends the same message twice.

At most once, even when a worker dies mid-send: the row stays ``sending`` with no
SID, and nothing sends it again. :func:`reconcile_stale_sends` (the sweeper's) then
asks the provider's own list whether it went: found, its SID and status are
recorded; not found twice, a lease apart, it is marked failed for an operator.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.exceptions import SendDeferred
from bot.outbound.attachments import media_urls, store_attachment
from bot.outbound.gate import GateDecision, Outgoing, check_outbound
from bot.services import Services
from notify import (
    OutboundRequest,
    ProviderMessage,
    ProviderUnavailable,
    SendError,
    WaitTurn,
)
from notify.operators import OperatorEvent, tenant_channel
from storage.delivery import (
    STATUS_RANK,
    StaleSend,
    claim_for_sending,
    confirm_send,
    known_provider_sids,
    mark_never_confirmed,
    note_reconcile_look,
    record_send_result,
    stale_sends,
)
from storage.models import Contact, Conversation, Message, Tenant
from storage.queries import get_contact, message_by_idempotency_key
from storage.vocabulary import Direction, MessageStatus, Purpose

# How much earlier than our row the provider's DateSent may read: clocks differ.
CLOCK_SKEW = timedelta(minutes=2)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Envelope:
    """Where a message goes and on whose behalf: the office, the contact, the
    conversation it belongs to, the idempotency key that makes a retry find the row it
    already wrote, and the operator who wrote it (``None`` for the bot and the API)."""

    tenant: Tenant
    contact: Contact
    conversation: Conversation | None
    idempotency_key: str
    sender_user_id: int | None = None


@dataclass(frozen=True)
class SendOutcome:
    message_id: int | None
    status: MessageStatus | None  # None: refused by the gate, or no such message
    refusal: GateDecision | None = None

    @property
    def refused(self) -> bool:
        return self.refusal is not None


def send_message(
    svc: Services, envelope: Envelope, outgoing: Outgoing, *, new: bool = False
) -> SendOutcome:
    """Gate, record and deliver now (the worker's way)."""
    outcome = queue_message(svc, envelope, outgoing, new=new)
    if outcome.refused or outcome.message_id is None or outcome.status != MessageStatus.PENDING:
        return outcome
    return deliver(svc, outcome.message_id)


def queue_message(
    svc: Services,
    envelope: Envelope,
    outgoing: Outgoing,
    *,
    paced: bool = False,
    new: bool = False,
) -> SendOutcome:
    """Gate and record; delivery is :func:`deliver`'s (now, or from a job).

    ``paced``: the send will wait for its slot of the office's rate (the sender
    pool's way), so the gate does not refuse it for the rate. ``new``: the caller
    knows nothing was recorded under this key yet, so it is not looked up first
    (a concurrent record is still caught by the key's unique constraint)."""
    tenant, key = envelope.tenant, envelope.idempotency_key
    if not new:
        with svc.db.read() as session:
            existing = message_by_idempotency_key(session, tenant, key)
        if existing is not None:
            return SendOutcome(message_id=existing.id, status=existing.status)
    decision = check_outbound(svc, tenant, envelope.contact, outgoing, paced=paced)
    if not decision.allowed:
        log.info("outbound refused by the gate: %s", decision.reason)
        return SendOutcome(message_id=None, status=None, refusal=decision)
    message = _record(svc, envelope, outgoing)
    return SendOutcome(message_id=message.id, status=message.status)


def _record(svc: Services, envelope: Envelope, outgoing: Outgoing) -> Message:
    try:
        with svc.db.session() as session:
            message = record_outgoing(svc, session, envelope, outgoing)
    except IntegrityError:
        # A concurrent attempt recorded it first; use theirs.
        with svc.db.session() as session:
            existing = message_by_idempotency_key(
                session, envelope.tenant, envelope.idempotency_key
            )
        assert existing is not None
        return existing
    return message


def record_outgoing(
    svc: Services, session: Session, envelope: Envelope, outgoing: Outgoing
) -> Message:
    """The pending row of a message the gate let through, in the caller's transaction."""
    tenant, conversation, key = envelope.tenant, envelope.conversation, envelope.idempotency_key
    text = outgoing.text if outgoing.template is None else json.dumps(outgoing.template.variables)
    message = Message(
        tenant_id=tenant.id,
        conversation_id=conversation.id if conversation else None,
        contact_id=envelope.contact.id,
        direction=Direction.OUT,
        idempotency_key=key,
        body=svc.cipher.encrypt(text or ""),
        template_sid=outgoing.template.content_sid if outgoing.template else None,
        status=MessageStatus.PENDING,
        status_rank=0,
        purpose=outgoing.purpose,
        sender_user_id=envelope.sender_user_id,
    )
    session.add(message)
    if outgoing.attachment is not None:
        session.flush()  # the file is named after the message
        store_attachment(svc, session, message, outgoing.attachment)
    return message


@dataclass(frozen=True)
class ReadySend:
    """A recorded message with what its send needs, from the transaction that recorded
    it: its sender claims it without reading the row back (the claim still decides
    who sends it, and only a pending row can be claimed)."""

    message_id: int
    tenant: Tenant
    request: OutboundRequest
    purpose: Purpose


def ready_send(
    svc: Services, message: Message, tenant: Tenant, contact: Contact, outgoing: Outgoing
) -> ReadySend | None:
    """What sending a message just recorded needs; ``None`` for one with an attachment
    (its signed address is made when it is sent)."""
    if outgoing.attachment is not None:
        return None
    template = outgoing.template
    return ReadySend(
        message.id,
        tenant,
        _request(
            svc,
            tenant,
            contact,
            json.dumps(template.variables) if template else outgoing.text or "",
            template.content_sid if template else None,
        ),
        outgoing.purpose,
    )


def deliver(
    svc: Services,
    message: int | ReadySend,
    paced_by: Callable[[Tenant], WaitTurn | None] | None = None,
) -> SendOutcome:
    """Send a recorded message once: only the attempt that claims it may send.

    ``paced_by`` holds the send to the office's rate (SendDeferred: not now) and may
    give the waits for the send slots of its attempts: the transport then waits right
    before each attempt goes out, and retries a 429 in a new slot, not after its
    backoff."""
    message_id = message.message_id if isinstance(message, ReadySend) else message
    ready = message if isinstance(message, ReadySend) else _read_for_sending(svc, message)
    if ready is None or not claim_for_sending(svc.db, message_id):
        with svc.db.read() as session:
            status = session.scalar(select(Message.status).where(Message.id == message_id))
        # Already sent, failed, or claimed by an attempt that may have reached the
        # provider: sending again could duplicate it, so we do not.
        return SendOutcome(message_id=message_id, status=status)
    tenant, request = ready.tenant, ready.request
    try:
        # Safety advice is never held back by the office's rate.
        safety = ready.purpose == Purpose.SAFETY
        wait_turn = paced_by(tenant) if paced_by is not None and not safety else None
        receipt = svc.transport.send(request, wait_turn=wait_turn)
    except SendDeferred:
        # Not sent (no slot soon enough; Twilio took none of the attempts): pending again.
        record_send_result(svc.db, message_id, MessageStatus.PENDING)
        raise
    except SendError as error:
        if error.retryable:
            record_send_result(svc.db, message_id, MessageStatus.PENDING)
            raise SendDeferred(str(error)) from error
        record_send_result(svc.db, message_id, MessageStatus.FAILED, error_code=error.code)
        if error.code is not None:
            from bot.privacy.consent import record_delivery_error

            record_delivery_error(svc, tenant.id, message_id, error.code)
        return SendOutcome(message_id=message_id, status=MessageStatus.FAILED)
    status = _provider_status(receipt.status)
    record_send_result(svc.db, message_id, status, provider_sid=receipt.provider_sid)
    return SendOutcome(message_id=message_id, status=status)


def _read_for_sending(svc: Services, message_id: int) -> ReadySend | None:
    """A pending message's send, read in one statement (its office, its addressee) and
    its attachments' signed addresses; ``None`` if it is not pending."""
    with svc.db.read() as session:
        row = session.execute(
            select(Message.body, Message.template_sid, Message.purpose, Tenant, Contact)
            .join(Tenant, Tenant.id == Message.tenant_id)
            .join(
                Contact,
                (Contact.id == Message.contact_id) & (Contact.tenant_id == Message.tenant_id),
            )
            .where(Message.id == message_id, Message.status == MessageStatus.PENDING)
        ).first()
        if row is None:
            return None
        media = media_urls(svc, session, message_id)
    body = svc.cipher.decrypt(row.body) if row.body else ""
    request = _request(svc, row.Tenant, row.Contact, body, row.template_sid, media)
    return ReadySend(message_id, row.Tenant, request, row.purpose)


def _request(
    svc: Services,
    tenant: Tenant,
    contact: Contact,
    body: str,
    template_sid: str | None,
    media: tuple[str, ...] = (),
) -> OutboundRequest:
    """The provider's request for a message: free text, or a template's variables."""
    from_address, to_address = _addresses(tenant, contact)
    return OutboundRequest(
        from_address=from_address,
        to_address=to_address,
        body=None if template_sid else body,
        content_sid=template_sid,
        content_variables=body if template_sid else None,
        media_urls=media,
        status_callback=(
            svc.config["PUBLIC_BASE_URL"] + "/webhooks/twilio/status"
            if svc.transport.name == "twilio"
            else None
        ),
    )


def publish_delivery(svc: Services, tenant_id: int, message_id: int) -> None:
    """Tell the office's consoles that a sent message's delivery moved on (its ticks);
    called after Twilio's status callback is recorded."""
    with svc.db.read() as session:
        found = session.execute(
            select(Message.conversation_id, Message.status, Tenant.slug)
            .join(Tenant, Tenant.id == Message.tenant_id)
            .where(Message.id == message_id, Message.tenant_id == tenant_id)
        ).first()
    if found is None or found.conversation_id is None:
        return
    event = OperatorEvent(
        (tenant_channel(found.slug),),
        "message.status",
        {
            "conversation_id": found.conversation_id,
            "message_id": message_id,
            "status": found.status,
        },
    )
    try:
        svc.notifier.publish(event)
    except Exception:  # a lost tick costs a refresh, not data; Twilio gets its 204
        log.exception("operator notification message.status failed")


def _addresses(tenant: Tenant, contact: Contact) -> tuple[str, str]:
    """``(from, to)`` as the provider writes them."""
    return f"whatsapp:{tenant.whatsapp_number}", f"whatsapp:{contact.phone or contact.wa_id}"


def _provider_status(status: str) -> MessageStatus:
    return MessageStatus(status) if status in STATUS_RANK else MessageStatus.QUEUED


def reconcile_stale_sends(svc: Services, now: datetime) -> int:
    """Settle the sends a dead worker left ``sending``; returns how many were settled.

    Nothing is ever sent from here: a send the provider never shows is marked
    failed (``never_confirmed``) for an operator, who can tell whether the resident
    got it. Two looks a lease apart, since the provider lists a message by the time
    it went out, and one still queued there shows only later.
    """
    lease = timedelta(seconds=float(svc.config["SENDING_LEASE_SECONDS"]))
    settled = 0
    for stale in stale_sends(svc.db, now - lease):
        try:
            settled += _reconcile(svc, stale)
        except ProviderUnavailable:
            log.warning("stale sends not reconciled: the provider could not be asked")
            break
    return settled


def _reconcile(svc: Services, stale: StaleSend) -> bool:
    with svc.db.read() as session:
        tenant = session.get(Tenant, stale.tenant_id)
        contact = (
            get_contact(session, stale.tenant_id, stale.contact_id) if stale.contact_id else None
        )
    found = None
    if tenant is not None and contact is not None:
        found = _find_on_provider(svc, stale, *_addresses(tenant, contact))
    if found is not None:
        if confirm_send(svc.db, stale.id, found.provider_sid, _provider_status(found.status)):
            log.info("stale send %s confirmed by the provider (%s)", stale.id, found.status)
            return True
        return False
    if stale.reconcile_looks == 0:
        note_reconcile_look(svc.db, stale.id, 0)
        return False
    if mark_never_confirmed(svc.db, stale.id):
        log.error(
            "outbound message %s was never confirmed by the provider: "
            "marked failed for an operator, not resent",
            stale.id,
        )
        return True
    return False


def _find_on_provider(
    svc: Services, stale: StaleSend, from_address: str, to_address: str
) -> ProviderMessage | None:
    """The provider's record of this send: same sender, recipient and (for free text)
    body, sent after the row was written, and not already another row's."""
    listed = svc.transport.sent_messages(
        to_address=to_address, from_address=from_address, sent_after=stale.created_at - CLOCK_SKEW
    )
    taken = known_provider_sids(svc.db, stale.tenant_id, [m.provider_sid for m in listed])
    candidates = [m for m in listed if m.provider_sid not in taken]
    if stale.template_sid is None:
        text = svc.cipher.decrypt(stale.body) if stale.body else ""
        candidates = [m for m in candidates if m.body == text]
        # Newest first: the oldest match is this send; a later twin is another's.
        return candidates[-1] if candidates else None
    # A template's rendered text is not ours to compare: only an unambiguous match.
    return candidates[0] if len(candidates) == 1 else None
