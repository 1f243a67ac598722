"""Processing one stored inbound message: the worker's job, carried out in stages.

1. Take the processing lease (one worker at a time; a dead worker's lease expires).
   A delivery whose MessageSid was processed before (a replay, after the first one
   was erased or purged) is deleted there and then: nothing else happens.
   A message of an office terminated since the webhook stored it (the number
   directory caches routes for a while) ends here: processed, nothing created.
2. Understand the text (keywords, sensitive data, intent) outside any transaction.
3. In one transaction: contact, conversation, the message's body, consent ledger,
   handoff, tickets (an emergency's with its timeline) and events, the bot-log row
   that records the plan, and the tombstone of the MessageSid.
4. Send the planned replies through the outbound gate, each under its own
   idempotency key, so a retry resends nothing that already went. Safety advice
   is always the first of them.
5. Keep every media item, encrypted.
6. Mark the message processed and drop the raw webhook payload.

A retry after stage 3 reads the plan back from the bot log instead of deciding again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bot.conversation import rules
from bot.conversation.alerts import alert_operators
from bot.conversation.emergency import open_case, record_ticket_event
from bot.conversation.handoff import handoff_to_operator, publish
from bot.conversation.inbound import InboundMessage, decode_payload
from bot.conversation.keywords import KeywordMatch, keyword_book
from bot.conversation.replies import render
from bot.conversation.understanding import ReadAhead, Reading
from bot.conversation.world import WORLD_DEFAULTS, apply_world, read_world
from bot.crm import record_turn
from bot.exceptions import SendDeferred
from bot.office.hours import OfficeClosed, closed_now
from bot.office.work_orders import ResidentNews, tell_resident
from bot.outbound import Envelope, Outgoing, queue_message, send_message
from bot.privacy.consent import active_notice, message_evidence, record_event
from bot.services import Services
from intents.sensitive import Finding, find_sensitive, redact
from notify import MediaAccount, MediaRefused, download_media
from notify.operators import OperatorEvent, tenant_channel, user_channel
from storage.files import private_folder, write_private
from storage.inbound import (
    ClaimedMessage,
    claim_for_processing,
    database_unavailable,
    mark_processed,
    release_lease,
)
from storage.models import (
    BotLogEntry,
    Contact,
    Conversation,
    Event,
    MediaItem,
    Message,
    Tenant,
    Ticket,
    utcnow,
)
from storage.queries import (
    contact_by_wa_id,
    discard_message,
    open_conversation_for,
    remember_processed_sid,
    sid_already_processed,
)
from storage.vocabulary import (
    Consent,
    ContactKind,
    ConversationStatus,
    DataSource,
    LedgerEvent,
    LegalBasis,
    MessageStatus,
    Mode,
    Priority,
    Purpose,
    Refusal,
    TicketEventKind,
    TicketKind,
    TicketStatus,
)

log = logging.getLogger(__name__)


def process_inbound_batch(
    svc: Services, message_ids: list[int], readings: dict[int, ReadAhead]
) -> None:
    """A job's batch, a message at a time, each on its own: one that fails does not
    hold back the rest, and the job then raises the first failure (RQ retries the
    batch; the messages processed meanwhile are skipped). A database gone away ends
    the batch at once: the rest would fail the same way."""
    failure: Exception | None = None
    for message_id in message_ids:
        try:
            process_inbound(svc, message_id, readings.get(message_id))
        except Exception as error:
            if database_unavailable(error):
                raise
            log.exception("message %s failed in its batch; the batch will be retried", message_id)
            failure = failure or error
    if failure is not None:
        raise failure


def process_inbound(svc: Services, message_id: int, read_ahead: ReadAhead | None = None) -> None:
    config = svc.config
    claimed = claim_for_processing(
        svc.db,
        message_id,
        int(config["PROCESSING_LEASE_SECONDS"]),
        int(config["MAX_PROCESSING_ATTEMPTS"]),
    )
    if claimed is None:
        return
    try:
        _process(svc, claimed, read_ahead)
    except Exception:
        release_lease(svc.db, message_id)
        raise


def _process(svc: Services, claimed: ClaimedMessage, read_ahead: ReadAhead | None) -> None:
    started = time.perf_counter()
    inbound = None
    if claimed.payload is not None:
        inbound = InboundMessage.from_params(decode_payload(svc.cipher.decrypt(claimed.payload)))
    fresh = inbound if inbound is not None and claimed.status != MessageStatus.HANDLED else None
    known = _read_known(svc, claimed, fresh)
    if known is None:
        _drop_for_terminated_office(svc, claimed)
        return
    planned = None
    if fresh is not None:
        if known.replay:
            _discard_replay(svc, claimed)
            return
        handled = _handle(svc, claimed, fresh, started, known, read_ahead)
        if handled is None:
            _drop_for_terminated_office(svc, claimed)
            return
        if LedgerEvent.ACCESS_REQUESTED in handled.ledger:
            _prepare_access_export(svc, handled)
        planned = handled.planned
    # Replies before media: a photo's download must not hold back safety advice.
    fresh_plan = planned is not None
    _send_planned_replies(svc, claimed, planned or _read_planned(svc, claimed), fresh=fresh_plan)
    if inbound is not None:
        _keep_media(svc, claimed, inbound)
    mark_processed(svc.db, claimed.id)


@dataclass(frozen=True)
class Known:
    """What one read finds before deciding: the office, the sender's contact, and
    whether this delivery replays one processed before."""

    tenant: Tenant
    contact: Contact | None
    replay: bool


def _read_known(
    svc: Services, claimed: ClaimedMessage, inbound: InboundMessage | None
) -> Known | None:
    """One read for the checks before deciding; ``None`` if the office is terminated.

    A replay is a delivery processed before, posted again once its message was
    erased or purged (the webhook's SID constraint no longer sees it). Only a
    message not yet handled is checked (``inbound``): a handled one wrote its own
    tombstone.
    """
    with svc.db.read() as session:
        tenant = session.get(Tenant, claimed.tenant_id)
        if tenant is None or tenant.terminated_at is not None:
            return None
        if inbound is None:
            return Known(tenant, None, replay=False)
        sid_hash = svc.cipher.message_sid_ref(inbound.message_sid)
        if sid_already_processed(session, claimed.tenant_id, sid_hash):
            return Known(tenant, None, replay=True)
        return Known(tenant, contact_by_wa_id(session, tenant, inbound.wa_id), replay=False)


def _discard_replay(svc: Services, claimed: ClaimedMessage) -> None:
    """Delete a replayed delivery, payload and row: nothing else happens."""
    with svc.db.session() as session:
        discard_message(session, claimed.tenant_id, claimed.id)
    log.warning("message %s replays a delivery already processed: discarded", claimed.id)


def _drop_for_terminated_office(svc: Services, claimed: ClaimedMessage) -> None:
    # The office's service has ended: no contact, conversation, ledger row or reply
    # for it; the message itself is marked processed and its payload dropped.
    log.info("message %s of a terminated office: processed, nothing created", claimed.id)
    mark_processed(svc.db, claimed.id)


@dataclass(frozen=True)
class Handled:
    """What deciding a message produced, for the stages after the transaction."""

    tenant: Tenant
    contact: Contact
    message_id: int
    ledger: tuple[LedgerEvent, ...]
    planned: Planned


@dataclass(frozen=True)
class Planned:
    """The replies a handled message is to get, and what their texts need."""

    tenant: Tenant
    contact: Contact
    thread: Conversation | None
    notice: Any
    redacted: bool
    detail: dict[str, Any]


def _handle(
    svc: Services,
    claimed: ClaimedMessage,
    inbound: InboundMessage,
    started: float,
    known: Known,
    read_ahead: ReadAhead | None,
) -> Handled | None:
    """Decide and record; ``None`` if the office was terminated meanwhile (nothing written)."""
    now = utcnow()
    # Understanding is CPU work: done before the write transaction, not inside it.
    tenant = known.tenant
    awaiting = known.contact is not None and known.contact.consent == Consent.PENDING
    book = keyword_book(tenant.settings.get("keywords"))
    # A quick-reply button's answer is never read as a keyword ("Accetto" on a work
    # order is not consent to the channel).
    keyword = (
        None
        if inbound.opt_out_type or inbound.button_payload
        else book.match(inbound.body, awaiting_acceptance=awaiting)
    )
    # The intent of what follows a keyword ("sì, ma il citofono non va"); sensitive data
    # in the whole body, which is what is stored and redacted.
    text = keyword.rest if keyword and keyword.rest else ("" if keyword else inbound.body)
    if read_ahead is not None and read_ahead[0] == text:
        reading: Reading | None = read_ahead[1]  # the triage read this very text
    else:
        reading = svc.understand(text) if text.strip() else None
    findings = tuple(find_sensitive(inbound.body)) if inbound.body.strip() else ()
    understanding = (
        rules.Understanding(reading.intent, reading.confidence, reading.safety_rule)
        if reading
        else None
    )
    closed = closed_now(tenant.settings, now)
    with svc.db.session() as session:
        # Checked again inside the transaction that creates the data. On PostgreSQL
        # the shared row lock makes a termination wait for this message's
        # transaction (SQLite's single writer already orders them).
        locked = session.get(Tenant, claimed.tenant_id, with_for_update={"read": True})
        if locked is None or locked.terminated_at is not None:
            return None
        tenant = locked
        contact, first_contact = _contact_for(session, tenant, inbound, now)
        thread = _conversation_for(session, tenant, contact, now)
        world = read_world(
            session,
            tenant,
            contact,
            thread,
            inbound,
            keyword,
            text,
            reading,
            now,
            first_contact=first_contact,
        )
        if world.work_order is not None and keyword is not None:
            keyword = None  # "accetto" to a work order answers it
        turn = rules.Turn(
            consent=contact.consent,
            legal_basis=contact.legal_basis,
            mode=thread.mode,
            clarifications=thread.clarifications,
            keyword=keyword,
            opt_out_type=inbound.opt_out_type,
            sensitive_kinds=tuple(sorted({f.kind for f in findings})),
            understanding=understanding,
            has_text=bool(inbound.body.strip()),
            office_open=closed is None,
            building_question=world.building_question,
            awaiting_building=world.awaiting_building,
            building_found=world.building is not None,
            work_order_answer=world.answer,
            office_topic=world.office_topic,
            confirms_solved=world.solved is not None,
        )
        plan = rules.plan_turn(turn)
        message = session.get(Message, claimed.id)
        assert message is not None
        _store_body(svc, tenant, message, inbound, contact, thread, findings, reading)
        message.status = MessageStatus.HANDLED  # flushed with the body: one UPDATE
        notice = active_notice(session, tenant) if plan.ledger or plan.replies else None
        _apply_ledger(svc, session, tenant, contact, plan, inbound, keyword, findings, notice)
        events = _apply_plan(session, tenant, thread, message, plan, reading, now)
        values = apply_world(session, tenant, contact, thread, message, world, plan, now)
        remember_processed_sid(session, tenant, svc.cipher.message_sid_ref(inbound.message_sid))
        detail = {**_log_detail(plan, turn, keyword, closed), **values}
        session.add(
            BotLogEntry(
                tenant_id=tenant.id,
                message_id=message.id,
                at=now,
                intent=reading.intent if reading else None,
                confidence=reading.confidence if reading else None,
                action=plan.action,
                model_version=reading.model_version if reading else None,
                safety_rule=reading.safety_rule if reading else None,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                detail=detail,
            )
        )
        session.flush()
        events.append(_message_event(tenant, thread, message))
        record_turn(svc, session, tenant, contact, thread, message, plan, reading, now)
    publish(svc, events)
    alert_operators(svc, tenant.id, events, reading)
    planned = Planned(tenant, contact, thread, notice, bool(message.redacted), detail)
    return Handled(tenant, contact, claimed.id, tuple(plan.ledger), planned)


def _log_detail(
    plan: rules.Plan, turn: rules.Turn, keyword: Any, closed: OfficeClosed | None
) -> dict[str, Any]:
    """The bot log's record of the plan: the replies (and their texts' keys) to send."""
    detail: dict[str, Any] = {
        "replies": [
            [r.key, r.purpose] if r.suffix is None else [r.key, r.purpose, r.suffix]
            for r in plan.replies
        ],
        "keyword": keyword.kind if keyword else None,
        "sensitive": list(turn.sensitive_kinds),
        "handoff": plan.handoff,
    }
    if plan.vital_interests:
        # Why someone without consent was written to: the ledger has the same event.
        detail["legal_basis"] = LegalBasis.VITAL_INTERESTS
    if closed is not None:
        detail["reopening"] = closed.reopening
    return detail


def _contact_for(
    session: Any, tenant: Tenant, inbound: InboundMessage, now: Any
) -> tuple[Contact, bool]:
    """The sender's contact, and whether this message created it."""
    contact = contact_by_wa_id(session, tenant, inbound.wa_id)
    created = contact is None
    if contact is None:
        contact = Contact(
            tenant_id=tenant.id,
            wa_id=inbound.wa_id,
            phone=inbound.phone,
            source=DataSource.WHATSAPP_INBOUND,
            kind=ContactKind.UNKNOWN,
            consent=Consent.NONE,
        )
        session.add(contact)
    elif inbound.phone and not contact.phone:
        contact.phone = inbound.phone
    if tenant.settings.get("store_profile_name"):
        contact.profile_name = inbound.profile_name
    contact.last_contact_at = now
    # Only the contact's own messages open the 24-hour window.
    contact.last_inbound_at = now
    session.flush()
    return contact, created


def _conversation_for(session: Any, tenant: Tenant, contact: Contact, now: Any) -> Conversation:
    thread = open_conversation_for(session, tenant, contact)
    if thread is None:
        thread = Conversation(
            tenant_id=tenant.id,
            contact_id=contact.id,
            mode=Mode.BOT,
            priority=Priority.NORMAL,
            needs_attention=False,
            status=ConversationStatus.OPEN,
            clarifications=0,
        )
        session.add(thread)
    thread.last_message_at = now
    session.flush()
    return thread


def _store_body(
    svc: Services,
    tenant: Tenant,
    message: Message,
    inbound: InboundMessage,
    contact: Contact,
    thread: Conversation,
    findings: tuple[Finding, ...],
    reading: Reading | None,
) -> None:
    body = inbound.body
    if findings and tenant.settings.get("redact_sensitive", True):
        body = redact(body, list(findings))
        message.redacted = True
    message.body = svc.cipher.encrypt(body)
    message.contact_id = contact.id
    message.conversation_id = thread.id
    message.sensitive_kinds = sorted({f.kind for f in findings})
    if reading is not None:
        message.intent = reading.intent
        message.confidence = reading.confidence


def _apply_ledger(
    svc: Services,
    session: Any,
    tenant: Tenant,
    contact: Contact,
    plan: rules.Plan,
    inbound: InboundMessage,
    keyword: KeywordMatch | None,
    findings: tuple[Finding, ...],
    notice: Any,
) -> None:
    if not plan.ledger:
        return
    evidence = message_evidence(
        inbound.body,
        inbound.message_sid,
        keyword_only=keyword is not None and not keyword.rest,
        findings=findings,
        opt_out_type=inbound.opt_out_type,
    )
    for event in plan.ledger:
        record_event(
            svc,
            session,
            tenant,
            contact,
            event,
            channel=plan.ledger_channel,
            actor="contact",
            # The ledger outlives the messages: a vital-interests reply is proved by the
            # report's SID and hash and its hazard, not its words (someone's health...).
            evidence=replace(evidence, text=f"emergenza: {plan.hazard or 'non specificata'}")
            if event == LedgerEvent.VITAL_INTERESTS_REPLY
            else evidence,
            notice=notice,
        )


def _apply_plan(
    session: Any,
    tenant: Tenant,
    thread: Conversation,
    message: Message,
    plan: rules.Plan,
    reading: Reading | None,
    now: datetime,
) -> list[OperatorEvent]:
    events: list[OperatorEvent] = []
    entities = [asdict(e) for e in (reading.entities if reading else ())]
    if plan.clarification:
        thread.clarifications += 1
    elif plan.ticket or plan.appointment or plan.work_done:
        thread.clarifications = 0
    if plan.handoff:
        events.extend(
            handoff_to_operator(tenant, thread, plan.handoff, urgent=plan.urgent, now=now)
        )
    for request in (LedgerEvent.ACCESS_REQUESTED, LedgerEvent.ERASURE_REQUESTED):
        if request in plan.ledger:
            # The admin carries rights requests out; the inbox shows who is waiting.
            thread.needs_attention = True
            events.append(
                OperatorEvent(
                    (tenant_channel(tenant.slug),),
                    "conversation.needs_attention",
                    {"conversation_id": thread.id, "reason": request, "priority": thread.priority},
                )
            )
    if plan.ticket:
        ticket = Ticket(
            tenant_id=tenant.id,
            conversation_id=thread.id,
            source_message_id=message.id,
            kind=plan.ticket,
            intent=message.intent,
            status=TicketStatus.OPEN,
            entities=entities,
            hazard=plan.hazard,
            contact_id=thread.contact_id,
            # The resident's words, redacted and encrypted as the message's body is.
            description=message.body,
            priority=Priority.URGENT if plan.urgent else Priority.NORMAL,
        )
        session.add(ticket)
        session.flush()
        if ticket.kind == TicketKind.EMERGENCY:
            open_case(session, ticket, message, [event.name for event in events], now)
        else:
            record_ticket_event(
                session,
                ticket,
                TicketEventKind.OPENED,
                actor="contact",
                at=now,
                detail={"message_id": message.id},
            )
        events.append(
            OperatorEvent(
                (tenant_channel(tenant.slug),),
                "ticket.created",
                {"ticket_id": ticket.id, "conversation_id": thread.id, "kind": ticket.kind},
            )
        )
    if plan.appointment:
        session.add(
            Event(
                tenant_id=tenant.id,
                conversation_id=thread.id,
                source_message_id=message.id,
                status="proposed",
                entities=entities,
            )
        )
    if plan.work_done:
        _close_open_ticket(session, tenant, thread, message, entities, now)
    return events


def _close_open_ticket(
    session: Any,
    tenant: Tenant,
    thread: Conversation,
    message: Message,
    entities: list[Any],
    now: Any,
) -> None:
    ticket = session.scalar(
        select(Ticket)
        .where(
            Ticket.tenant_id == tenant.id,
            Ticket.conversation_id == thread.id,
            Ticket.status.in_((TicketStatus.OPEN, TicketStatus.IN_PROGRESS)),
        )
        .order_by(Ticket.id.desc())
        .limit(1)
    )
    if ticket is None:
        # The report may concern a ticket opened elsewhere: record it for the office to match.
        session.add(
            Ticket(
                tenant_id=tenant.id,
                conversation_id=thread.id,
                source_message_id=message.id,
                kind=TicketKind.INTERVENTO,
                intent=message.intent,
                status=TicketStatus.DONE,
                entities=entities,
            )
        )
        return
    ticket.status = TicketStatus.DONE
    ticket.updated_at = now


def _message_event(tenant: Tenant, thread: Conversation, message: Message) -> OperatorEvent:
    channels = [tenant_channel(tenant.slug)]
    if thread.assigned_user_id:
        channels.append(user_channel(thread.assigned_user_id))
    return OperatorEvent(
        tuple(channels),
        "message.created",
        {
            "conversation_id": thread.id,
            "message_id": message.id,
            "direction": message.direction,
            "intent": message.intent,
        },
    )


def _prepare_access_export(svc: Services, handled: Handled) -> None:
    """An access request by chat: the contact's data, exported (JSON Lines, encrypted
    as a whole: one person's data is small) for the admin to deliver."""
    from bot.privacy.rights import chat_export_path, encrypted_export

    tenant, contact = handled.tenant, handled.contact
    target = chat_export_path(svc, tenant.id, contact.id, handled.message_id)
    write_private(target, encrypted_export(svc, tenant, contact.id, actor="contact"))


def _keep_media(svc: Services, claimed: ClaimedMessage, inbound: InboundMessage) -> None:
    if not inbound.media:
        return
    with svc.db.read() as session:
        kept = set(
            session.scalars(select(MediaItem.position).where(MediaItem.message_id == claimed.id))
        )
    allowed = frozenset(t.strip() for t in str(svc.config["MEDIA_ALLOWED_TYPES"]).split(","))
    credentials = svc.twilio_auth
    # Only this account's media under the configured API base is fetched, and only
    # there do the credentials go (notify.media).
    account = (
        MediaAccount(str(svc.config["TWILIO_API_BASE_URL"]), *credentials) if credentials else None
    )
    root = Path(svc.config["MEDIA_ROOT"]) / str(claimed.tenant_id)
    for position, media in enumerate(inbound.media):
        if position in kept:
            continue
        item = MediaItem(
            tenant_id=claimed.tenant_id,
            message_id=claimed.id,
            position=position,
            content_type=media.content_type or "application/octet-stream",
        )
        try:
            downloaded = download_media(
                media.url,
                account=account,
                max_bytes=int(svc.config["MEDIA_MAX_BYTES"]),
                allowed_types=allowed,
                deadline_seconds=float(svc.config["MEDIA_FETCH_DEADLINE_SECONDS"]),
            )
        except MediaRefused as refusal:
            item.refused = refusal.reason
        else:
            digest = hashlib.sha256(downloaded.content).hexdigest()
            path = private_folder(root) / f"{claimed.id}-{position}-{digest[:16]}.bin"
            write_private(path, svc.cipher.encrypt_bytes(downloaded.content))
            item.content_type, item.size, item.sha256 = (
                downloaded.content_type,
                len(downloaded.content),
                digest,
            )
            item.path = str(path)
        with svc.db.session() as session:
            session.add(item)


def _read_planned(svc: Services, claimed: ClaimedMessage) -> Planned | None:
    """A retry's plan, read back from the bot log (``None``: nothing was decided)."""
    with svc.db.read() as session:
        message = session.get(Message, claimed.id)
        entry = session.scalar(
            select(BotLogEntry)
            .where(BotLogEntry.message_id == claimed.id)
            .order_by(BotLogEntry.id.desc())
            .limit(1)
        )
        if message is None or entry is None or message.contact_id is None:
            return None
        tenant = session.get(Tenant, claimed.tenant_id)
        contact = session.get(Contact, message.contact_id)
        thread = session.get(Conversation, message.conversation_id)
        notice = active_notice(session, tenant) if tenant else None
        assert tenant is not None and contact is not None
        return Planned(tenant, contact, thread, notice, bool(message.redacted), entry.detail)


def _send_planned_replies(
    svc: Services, claimed: ClaimedMessage, planned: Planned | None, *, fresh: bool
) -> None:
    """Record and send (or hand to the senders) a handled message's replies.

    ``fresh``: decided in this attempt, so none of its replies can be recorded yet
    (an earlier attempt that recorded any had committed the plan, and this one would
    have read it back): they are recorded without looking for them first."""
    if planned is None:
        return
    tenant, contact, thread = planned.tenant, planned.contact, planned.thread
    notice, redacted, detail = planned.notice, planned.redacted, planned.detail
    values = {
        "office": tenant.name,
        "notice": notice.text.format(office=tenant.name) if notice else "",
        "notice_url": notice.full_notice_url if notice else "",
        "redaction": "conservato senza quei dati" if redacted else "segnalato all'ufficio",
        "reopening": detail.get("reopening", ""),
        **WORLD_DEFAULTS,
        **detail.get("values", {}),
    }
    senders = svc.senders
    handed: list[int] = []
    urgent = False
    for index, (key, purpose, *suffix) in enumerate(detail.get("replies", [])):
        text = render(key, tenant.settings, **values)
        if suffix:
            text += "\n\n" + render(suffix[0], tenant.settings, **values)
        envelope = Envelope(tenant, contact, thread, idempotency_key=f"reply:{claimed.id}:{index}")
        outgoing = Outgoing(text=text, purpose=purpose, answers=claimed.id)
        if senders is not None:
            # Recorded now, sent by the worker's sender threads at the office's pace.
            outcome = queue_message(svc, envelope, outgoing, paced=True, new=fresh)
            if outcome.message_id is not None and outcome.status == MessageStatus.PENDING:
                handed.append(outcome.message_id)
                urgent = urgent or purpose == Purpose.SAFETY
        else:
            outcome = send_message(svc, envelope, outgoing, new=fresh)
            if outcome.refusal is not None and outcome.refusal.reason == Refusal.RATE_LIMITED:
                # Over the office's send rate: try again shortly, not never. Replies
                # already sent keep their idempotency keys and are not sent again.
                raise SendDeferred(f"reply {index} to message {claimed.id} over the send rate")
        if outcome.refusal is not None:
            log.info("reply %s to message %s refused: %s", key, claimed.id, outcome.refusal.reason)
    # The resident who reported a fault hears of its work order's step (once per step).
    for ticket_id, order_id, status in detail.get("tell", []):
        tell_resident(svc, tenant, ResidentNews(ticket_id, order_id, status))
    if senders is not None:
        senders.submit(handed, urgent=urgent)
