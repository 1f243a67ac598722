"""Processing stored inbound messages: the worker's job, carried out in stages, a
job's batch at a time.

1. Take the processing leases, the batch's in one statement (one worker at a time;
   a dead worker's lease expires).
2. Read what the understanding needs (the offices, the senders' contacts, the replay
   tombstones) and understand each text (keywords, sensitive data, intent) outside
   any write transaction. A delivery whose MessageSid was processed before (a
   replay, after the first one was erased or purged) is deleted: nothing else
   happens. A message of an office terminated since the webhook stored it (the
   number directory caches routes for a while) is marked processed, nothing created.
3. Decide and record the batch in one transaction (should one message fail, again
   with a savepoint each, so that it is rolled back alone): contact, conversation,
   the message's body, consent ledger, handoff, tickets (an emergency's with its
   timeline) and events, the bot-log row that records the plan, the tombstone of the
   MessageSid, and the planned replies, each under its own idempotency key, so a
   retry resends nothing that already went. Safety advice is always the first of
   them. With the worker's senders to hand the replies to, a message with nothing
   left to do is marked processed in the same transaction.
4. After the commit: notify the consoles, hand the replies to the senders (or send
   them now), keep every media item, encrypted, and mark the message processed
   (dropping the raw webhook payload).

A retry after stage 3 reads the plan back from the bot log instead of deciding again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.conversation import rules
from bot.conversation.alerts import alert_operators
from bot.conversation.emergency import open_case, record_ticket_event
from bot.conversation.handoff import handoff_to_operator, publish
from bot.conversation.inbound import InboundMessage, decode_payload
from bot.conversation.keywords import KeywordMatch, keyword_book
from bot.conversation.replies import render
from bot.conversation.understanding import ReadAhead, Reading
from bot.conversation.world import WORLD_DEFAULTS, apply_world, has_buildings, read_world
from bot.crm import Endpoint, office_endpoints, record_turn
from bot.exceptions import SendDeferred
from bot.office.hours import OfficeClosed, closed_now
from bot.office.work_orders import ResidentNews, tell_resident
from bot.outbound import (
    Envelope,
    Outgoing,
    ReadySend,
    check_outbound,
    deliver,
    queue_message,
    ready_send,
    record_outgoing,
)
from bot.outbound.gate import within_send_rate
from bot.privacy.consent import active_notice, message_evidence, record_event
from bot.services import Services
from intents.sensitive import Finding, find_sensitive, redact
from notify import MediaAccount, MediaRefused, WaitTurn, download_media
from notify.operators import OperatorEvent, tenant_channel, user_channel
from storage.files import private_folder, write_private
from storage.inbound import (
    ClaimedMessage,
    claim_for_processing,
    database_unavailable,
    mark_processed,
    processed_values,
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
    contacts_by_wa_id,
    discard_message,
    open_conversations_for,
    processed_sids,
    remember_processed_sid,
)
from storage.rows import LeafRows
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
    TicketEventKind,
    TicketKind,
    TicketStatus,
)

log = logging.getLogger(__name__)


def process_inbound_batch(
    svc: Services, message_ids: list[int], readings: dict[int, ReadAhead]
) -> None:
    """A job's batch: claimed in one statement, decided in one transaction, then
    answered a message at a time.

    A message that fails does not hold back the rest: the job then raises the first
    failure (RQ retries the batch; the messages processed meanwhile are skipped). A
    database gone away ends the batch at once: the rest would fail the same way."""
    config = svc.config
    claims = claim_for_processing(
        svc.db,
        message_ids,
        int(config["PROCESSING_LEASE_SECONDS"]),
        int(config["MAX_PROCESSING_ATTEMPTS"]),
    )
    if not claims:
        return
    try:
        steps = _decide(svc, claims, readings)
    except Exception:
        release_lease(svc.db, [claimed.id for claimed in claims])
        raise
    # The consoles hear of the whole batch at once: one request to the backend.
    publish(svc, [e for step in steps.values() if step.handled for e in step.handled.events])
    failure: Exception | None = None
    for claimed in claims:
        try:
            _answer(svc, claimed, steps[claimed.id])
        except Exception as error:
            release_lease(svc.db, [claimed.id])
            if database_unavailable(error):
                raise
            if len(claims) > 1:
                log.exception("message %s failed in its batch; it will be retried", claimed.id)
            failure = failure or error
    if failure is not None:
        raise failure


def process_inbound(svc: Services, message_id: int, read_ahead: ReadAhead | None = None) -> None:
    """One message: a batch of one."""
    process_inbound_batch(svc, [message_id], {message_id: read_ahead} if read_ahead else {})


@dataclass(frozen=True)
class Step:
    """What deciding left to do for one claimed message, after the commit.

    ``handled``: decided in this attempt (``None``: dropped, discarded, or decided by
    an earlier attempt, whose plan is read back). ``processed``: marked so in the
    deciding transaction already. ``failure``: reading or deciding it failed (it was
    rolled back alone, the rest of the batch went on)."""

    inbound: InboundMessage | None
    handled: Handled | None = None
    processed: bool = False
    failure: Exception | None = None


def _answer(svc: Services, claimed: ClaimedMessage, step: Step) -> None:
    """After the commit: alert, send (or hand to the senders), keep media, mark processed."""
    if step.failure is not None:
        raise step.failure
    handled = step.handled
    if handled is not None:
        alert_operators(svc, handled.tenant.id, handled.events, handled.reading)
        if LedgerEvent.ACCESS_REQUESTED in handled.ledger:
            _prepare_access_export(svc, handled)
        _deliver_replies(svc, [_recorded(svc, handled, *reply) for reply in handled.replies])
        _tell_residents(svc, handled.planned)
    elif not step.processed:
        planned = _read_planned(svc, claimed)
        if planned is not None:
            _deliver_replies(svc, _queue_replies(svc, claimed.id, planned))
            _tell_residents(svc, planned)
    # Replies before media: a photo's download must not hold back safety advice.
    if step.inbound is not None:
        _keep_media(svc, claimed, step.inbound)
    if not step.processed:
        mark_processed(svc.db, [claimed.id])


@dataclass(frozen=True)
class Known:
    """What one read before deciding finds, for the understanding done outside the
    write transaction: the offices and the senders' contacts as they stand, and which
    deliveries replay one processed before."""

    tenants: dict[int, Tenant]  # the offices not terminated
    contacts: dict[tuple[int, str], Contact]
    replays: set[int]


def _decode(svc: Services, claimed: ClaimedMessage) -> InboundMessage | None:
    if claimed.payload is None:
        return None
    return InboundMessage.from_params(decode_payload(svc.cipher.decrypt(claimed.payload)))


def _read_known(
    svc: Services, claims: list[ClaimedMessage], fresh: dict[int, InboundMessage]
) -> Known:
    """One read for the checks before deciding, a few queries per office in the batch.

    A replay is a delivery processed before, posted again once its message was
    erased or purged (the webhook's SID constraint no longer sees it). Only messages
    not yet handled are checked (``fresh``): a handled one wrote its own tombstone.
    """
    known = Known({}, {}, set())
    with svc.db.read() as session:
        for tenant_id in {claimed.tenant_id for claimed in claims}:
            tenant = session.get(Tenant, tenant_id)
            if tenant is None or tenant.terminated_at is not None:
                continue
            known.tenants[tenant_id] = tenant
            mine = {c.id: fresh[c.id] for c in claims if c.tenant_id == tenant_id and c.id in fresh}
            hashes = {i: svc.cipher.message_sid_ref(m.message_sid) for i, m in mine.items()}
            seen = processed_sids(session, tenant_id, list(hashes.values()))
            known.replays.update(i for i, sid_hash in hashes.items() if sid_hash in seen)
            contacts = contacts_by_wa_id(session, tenant_id, [m.wa_id for m in mine.values()])
            known.contacts.update(((tenant_id, w), c) for w, c in contacts.items())
    return known


@dataclass(frozen=True)
class Heard:
    """A message understood before its transaction: CPU work, done outside it."""

    seconds: float  # spent understanding it
    keyword: KeywordMatch | None
    text: str
    reading: Reading | None
    findings: tuple[Finding, ...]
    closed: OfficeClosed | None


def _understand(
    svc: Services,
    tenant: Tenant,
    contact: Contact | None,
    inbound: InboundMessage,
    read_ahead: ReadAhead | None,
) -> Heard:
    started = time.perf_counter()
    awaiting = contact is not None and contact.consent == Consent.PENDING
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
    closed = closed_now(tenant.settings, utcnow())
    return Heard(time.perf_counter() - started, keyword, text, reading, findings, closed)


class Batch:
    """The deciding transaction's view of a batch: what it read once for all of its
    messages (the offices, locked; their notices, CRM endpoints and whether they have
    buildings; the senders' contacts and open conversations; the messages' rows)."""

    def __init__(
        self, session: Session, claims: list[ClaimedMessage], fresh: dict[int, InboundMessage]
    ) -> None:
        self.session = session
        # One moment for the whole batch (decided in one transaction, in milliseconds):
        # a newcomer's contact and conversation are then written with the times their
        # first message's turn gives them, not written and then updated.
        self.now = utcnow()
        # The bot log lines, ledger events and tombstones of its messages.
        self.rows = LeafRows()
        self.offices: dict[int, Tenant] = {}
        self.contacts: dict[tuple[int, str], Contact] = {}
        self.threads: dict[int, Conversation] = {}
        # Contacts the batch created, until their first message is decided.
        self.newcomers: set[tuple[int, str]] = set()
        self._notices: dict[int, Any] = {}
        self._endpoints: dict[int, list[Endpoint]] = {}
        self._buildings: dict[int, bool] = {}
        tenant_ids = {claimed.tenant_id for claimed in claims}
        # The shared row lock makes an office's termination wait for this transaction
        # on PostgreSQL (SQLite's single writer already orders them).
        for tenant in session.scalars(
            select(Tenant).where(Tenant.id.in_(tenant_ids)).with_for_update(read=True)
        ):
            if tenant.terminated_at is None:
                self.offices[tenant.id] = tenant
        # All read up front, before anything changes: a query in between would first
        # flush what the messages decided so far, a statement per row again.
        for tenant in self.offices.values():
            mine = [fresh[c.id] for c in claims if c.tenant_id == tenant.id and c.id in fresh]
            if not mine:
                continue
            found = contacts_by_wa_id(session, tenant.id, [message.wa_id for message in mine])
            self.contacts.update(((tenant.id, w), c) for w, c in found.items())
            threads = open_conversations_for(session, tenant.id, [c.id for c in found.values()])
            self.threads.update(threads)
            self._notices[tenant.id] = active_notice(session, tenant)
            self._endpoints[tenant.id] = office_endpoints(session, tenant.id)
            self._buildings[tenant.id] = has_buildings(session, tenant.id)
        # Held here: the session's identity map only keeps what someone refers to.
        self.messages = list(session.scalars(select(Message).where(Message.id.in_(list(fresh)))))

    def notice(self, tenant: Tenant) -> Any:
        return self._notices[tenant.id]

    def endpoints(self, tenant: Tenant) -> list[Endpoint]:
        return self._endpoints[tenant.id]

    def has_buildings(self, tenant: Tenant) -> bool:
        return self._buildings[tenant.id]

    def forget(self, tenant_id: int, wa_id: str) -> None:
        """A message's savepoint was rolled back: what it created is gone, and what it
        changed is read again."""
        self.rows.drop()
        contact = self.contacts.pop((tenant_id, wa_id), None)
        if contact is not None:
            self.threads.pop(contact.id, None)


@dataclass(frozen=True)
class Arrived:
    """A batch's messages as read before its transactions: the decoded deliveries
    (``fresh``: those to decide now), what was read for them, and how each reads."""

    inbound: dict[int, InboundMessage | None]
    fresh: dict[int, InboundMessage]
    known: Known
    heard: dict[int, Heard]


def _decide(
    svc: Services, claims: list[ClaimedMessage], readings: dict[int, ReadAhead]
) -> dict[int, Step]:
    """Understand the batch's new messages, then decide and record them in one
    transaction."""
    # One message that cannot be read (a payload that does not decrypt, a text that
    # breaks the reader) fails alone; the rest of the batch goes on.
    steps: dict[int, Step] = {}
    inbound: dict[int, InboundMessage | None] = {}
    for claimed in claims:
        try:
            inbound[claimed.id] = _decode(svc, claimed)
        except Exception as error:
            steps[claimed.id] = Step(None, failure=error)
    fresh = {
        claimed.id: message
        for claimed in claims
        if (message := inbound.get(claimed.id)) is not None
        and claimed.status != MessageStatus.HANDLED
    }
    known = _read_known(svc, claims, fresh) if fresh else Known({}, {}, set())
    heard: dict[int, Heard] = {}
    for claimed in claims:
        tenant = known.tenants.get(claimed.tenant_id)
        message = fresh.get(claimed.id)
        if tenant is None or message is None or claimed.id in known.replays:
            continue
        contact = known.contacts.get((claimed.tenant_id, message.wa_id))
        try:
            heard[claimed.id] = _understand(svc, tenant, contact, message, readings.get(claimed.id))
        except Exception as error:
            steps[claimed.id] = Step(message, failure=error)
    arrived = Arrived(inbound, fresh, known, heard)
    steps.update(_decide_together(svc, [c for c in claims if c.id not in steps], arrived))
    return steps


def _decide_together(
    svc: Services, claims: list[ClaimedMessage], arrived: Arrived
) -> dict[int, Step]:
    """The batch in one transaction. Savepoints cost statements (round trips, on
    PostgreSQL), so it first goes without them; should any message fail, the
    transaction is rolled back and the batch decided again with a savepoint each, so
    that only the failing one is left out."""
    if not claims:
        return {}
    try:
        return _record(svc, claims, arrived, isolated=False)
    except Exception as error:
        if database_unavailable(error):
            raise
    return _record(svc, claims, arrived, isolated=True)


def _record(
    svc: Services, claims: list[ClaimedMessage], arrived: Arrived, *, isolated: bool
) -> dict[int, Step]:
    with svc.db.session() as session:
        batch = Batch(session, claims, arrived.fresh)
        if not isolated:
            _welcome_newcomers(batch, claims, arrived)
        steps = {
            claimed.id: _decide_one(svc, batch, claimed, arrived, isolated=isolated)
            for claimed in claims
        }
        # The batch's rows go out together (one statement per table, not per message);
        # in a savepoint each, every message's went out as its savepoint ended.
        session.flush()
        batch.rows.write(session)
        return steps


def _decide_one(
    svc: Services, batch: Batch, claimed: ClaimedMessage, arrived: Arrived, *, isolated: bool
) -> Step:
    session = batch.session
    tenant = batch.offices.get(claimed.tenant_id)
    if tenant is None:
        # The office's service has ended: no contact, conversation, ledger row or reply
        # for it; the message itself is marked processed and its payload dropped.
        log.info("message %s of a terminated office: processed, nothing created", claimed.id)
        mark_processed(session, [claimed.id])
        return Step(None, processed=True)
    if claimed.id not in arrived.fresh:
        # Decided before (or nothing to decide): the plan is read back.
        return Step(arrived.inbound.get(claimed.id))
    if claimed.id in arrived.known.replays:
        # A replayed delivery: its row and payload are deleted, nothing else happens.
        discard_message(session, claimed.tenant_id, claimed.id)
        log.warning("message %s replays a delivery already processed: discarded", claimed.id)
        return Step(None, processed=True)
    message = arrived.fresh[claimed.id]
    heard = arrived.heard.get(claimed.id) or _understand(svc, tenant, None, message, None)
    if not isolated:
        handled = _handle(svc, batch, tenant, claimed, message, heard)
        return Step(message, handled, processed=handled.processed)
    try:
        with session.begin_nested():
            handled = _handle(svc, batch, tenant, claimed, message, heard)
            batch.rows.write(session)
    except Exception as error:
        if database_unavailable(error):
            raise
        batch.forget(claimed.tenant_id, message.wa_id)
        return Step(message, failure=error)
    return Step(message, handled, processed=handled.processed)


@dataclass(frozen=True)
class Handled:
    """What deciding a message produced, for the stages after the transaction."""

    tenant: Tenant
    contact: Contact
    message_id: int
    ledger: tuple[LedgerEvent, ...]
    planned: Planned
    events: list[OperatorEvent]
    reading: Reading | None
    replies: list[tuple[Message, Outgoing]]  # recorded in the transaction: ids once flushed
    processed: bool


@dataclass(frozen=True)
class Planned:
    """The replies a handled message is to get, and what their texts need."""

    tenant: Tenant
    contact: Contact
    thread: Conversation | None
    notice: Any
    redacted: bool
    detail: dict[str, Any]


@dataclass(frozen=True)
class Pending:
    """A recorded reply waiting to be sent: its row, whether it is safety advice, and,
    when it was recorded in this attempt, what its send needs (not read back then)."""

    message_id: int
    safety: bool
    ready: ReadySend | None = None


def _recorded(svc: Services, handled: Handled, message: Message, outgoing: Outgoing) -> Pending:
    return Pending(
        message.id,
        outgoing.purpose == Purpose.SAFETY,
        ready_send(svc, message, handled.tenant, handled.contact, outgoing),
    )


def _handle(
    svc: Services,
    batch: Batch,
    tenant: Tenant,
    claimed: ClaimedMessage,
    inbound: InboundMessage,
    heard: Heard,
) -> Handled:
    """Decide and record one message, its replies with it, in the batch's transaction."""
    started, session, now = time.perf_counter(), batch.session, batch.now
    keyword, text, reading, findings = heard.keyword, heard.text, heard.reading, heard.findings
    understanding = (
        rules.Understanding(reading.intent, reading.confidence, reading.safety_rule)
        if reading
        else None
    )
    contact, first_contact = _contact_for(session, batch, tenant, inbound, now)
    thread = _conversation_for(session, batch, tenant, contact, now)
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
        office_has_buildings=batch.has_buildings(tenant),
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
        office_open=heard.closed is None,
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
    notice = batch.notice(tenant) if plan.ledger or plan.replies else None
    _apply_ledger(svc, batch, tenant, contact, plan, inbound, keyword, findings, notice)
    events = _apply_plan(session, tenant, thread, message, plan, reading, now)
    values = apply_world(session, tenant, contact, thread, message, world, plan, now)
    remember_processed_sid(batch.rows, tenant, svc.cipher.message_sid_ref(inbound.message_sid))
    detail = {**_log_detail(plan, turn, keyword, heard.closed), **values}
    planned = Planned(tenant, contact, thread, notice, bool(message.redacted), detail)
    replies = _record_replies(svc, session, claimed.id, planned)
    # With the senders to hand the replies to, a message with nothing left to do after
    # the commit (no media to fetch, no export, no resident to tell) is done now.
    processed = (
        svc.senders is not None
        and not inbound.media
        and LedgerEvent.ACCESS_REQUESTED not in plan.ledger
        and not detail.get("tell")
    )
    if processed:
        for name, value in processed_values().items():
            setattr(message, name, value)
    batch.rows.add(
        BotLogEntry,
        tenant_id=tenant.id,
        message_id=message.id,
        at=now,
        intent=reading.intent if reading else None,
        confidence=reading.confidence if reading else None,
        action=plan.action,
        model_version=reading.model_version if reading else None,
        safety_rule=reading.safety_rule if reading else None,
        duration_ms=round((heard.seconds + time.perf_counter() - started) * 1000, 2),
        detail=detail,
    )
    events.append(_message_event(tenant, thread, message))
    record_turn(
        svc,
        session,
        tenant,
        contact,
        thread,
        message,
        plan,
        reading,
        now,
        endpoints=batch.endpoints(tenant),
    )
    return Handled(
        tenant,
        contact,
        claimed.id,
        tuple(plan.ledger),
        planned,
        events,
        reading,
        replies,
        processed,
    )


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


def _new_contact(tenant: Tenant, inbound: InboundMessage) -> Contact:
    return Contact(
        tenant_id=tenant.id,
        wa_id=inbound.wa_id,
        phone=inbound.phone,
        source=DataSource.WHATSAPP_INBOUND,
        kind=ContactKind.UNKNOWN,
        consent=Consent.NONE,
    )


def _new_conversation(tenant_id: int, contact_id: int) -> Conversation:
    return Conversation(
        tenant_id=tenant_id,
        contact_id=contact_id,
        mode=Mode.BOT,
        priority=Priority.NORMAL,
        needs_attention=False,
        status=ConversationStatus.OPEN,
        clarifications=0,
    )


def _contact_for(
    session: Session, batch: Batch, tenant: Tenant, inbound: InboundMessage, now: datetime
) -> tuple[Contact, bool]:
    """The sender's contact, and whether this message created it (the batch may have
    created it for this message already)."""
    key = (tenant.id, inbound.wa_id)
    created = key in batch.newcomers
    batch.newcomers.discard(key)  # a second message of theirs in the batch finds it made
    contact = batch.contacts.get(key)
    if contact is None:
        contact = batch.contacts[key] = _new_contact(tenant, inbound)
        session.add(contact)
        session.flush()  # its id, for its conversation
        created = True
    elif inbound.phone and not contact.phone:
        contact.phone = inbound.phone
    if tenant.settings.get("store_profile_name"):
        contact.profile_name = inbound.profile_name
    contact.last_contact_at = now
    # Only the contact's own messages open the 24-hour window.
    contact.last_inbound_at = now
    return contact, created


def _conversation_for(
    session: Session,
    batch: Batch,
    tenant: Tenant,
    contact: Contact,
    now: datetime,
) -> Conversation:
    """The contact's open conversation, or a new one."""
    thread = batch.threads.get(contact.id)
    if thread is None or thread.status != ConversationStatus.OPEN:
        thread = batch.threads[contact.id] = _new_conversation(tenant.id, contact.id)
        session.add(thread)
        session.flush()  # its id, for the message
    thread.last_message_at = now
    return thread


def _welcome_newcomers(batch: Batch, claims: list[ClaimedMessage], arrived: Arrived) -> None:
    """The contacts the batch's senders do not have yet, and the conversations they
    and the others lack, created for the whole batch at once: a statement per table
    instead of one per message."""
    session, now = batch.session, batch.now
    deciding = [
        (tenant, arrived.fresh[claimed.id])
        for claimed in claims
        if (tenant := batch.offices.get(claimed.tenant_id)) is not None
        and claimed.id in arrived.fresh
        and claimed.id not in arrived.known.replays
    ]
    for tenant, inbound in deciding:
        key = (tenant.id, inbound.wa_id)
        if key not in batch.contacts:
            contact = batch.contacts[key] = _new_contact(tenant, inbound)
            contact.last_contact_at = contact.last_inbound_at = now
            session.add(contact)
            batch.newcomers.add(key)
    session.flush()
    for tenant, inbound in deciding:
        contact = batch.contacts[(tenant.id, inbound.wa_id)]
        if contact.id not in batch.threads:
            thread = batch.threads[contact.id] = _new_conversation(tenant.id, contact.id)
            thread.last_message_at = now
            session.add(thread)
    session.flush()


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
    batch: Batch,
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
            batch.session,
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
            rows=batch.rows,
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


def _replies(planned: Planned, message_id: int) -> list[tuple[str, Envelope, Outgoing]]:
    """The planned replies' keys, addresses and texts, each under its idempotency key
    (so a retry resends nothing that already went). Safety advice comes first."""
    tenant, contact, thread = planned.tenant, planned.contact, planned.thread
    notice, detail = planned.notice, planned.detail
    values = {
        "office": tenant.name,
        "notice": notice.text.format(office=tenant.name) if notice else "",
        "notice_url": notice.full_notice_url if notice else "",
        "redaction": "conservato senza quei dati" if planned.redacted else "segnalato all'ufficio",
        "reopening": detail.get("reopening", ""),
        **WORLD_DEFAULTS,
        **detail.get("values", {}),
    }
    replies = []
    for index, (key, purpose, *suffix) in enumerate(detail.get("replies", [])):
        text = render(key, tenant.settings, **values)
        if suffix:
            text += "\n\n" + render(suffix[0], tenant.settings, **values)
        envelope = Envelope(tenant, contact, thread, idempotency_key=f"reply:{message_id}:{index}")
        replies.append((key, envelope, Outgoing(text=text, purpose=purpose, answers=message_id)))
    return replies


def _record_replies(
    svc: Services, session: Session, message_id: int, planned: Planned
) -> list[tuple[Message, Outgoing]]:
    """A plan decided in this transaction: its replies recorded in it too. None can be
    recorded yet (an earlier attempt that recorded any had committed the plan, and
    this one would have read it back), so they are not looked for first. The office's
    send rate is kept when they are sent, not here."""
    recorded = []
    for key, envelope, outgoing in _replies(planned, message_id):
        decision = check_outbound(
            svc, planned.tenant, planned.contact, outgoing, paced=True, session=session
        )
        if decision.allowed:
            recorded.append((record_outgoing(svc, session, envelope, outgoing), outgoing))
        else:
            log.info("reply %s to message %s refused: %s", key, message_id, decision.reason)
    return recorded


def _queue_replies(svc: Services, message_id: int, planned: Planned) -> list[Pending]:
    """A plan read back: its replies recorded now, those an earlier attempt recorded found."""
    pending = []
    for key, envelope, outgoing in _replies(planned, message_id):
        outcome = queue_message(svc, envelope, outgoing, paced=True)
        if outcome.refusal is not None:
            log.info("reply %s to message %s refused: %s", key, message_id, outcome.refusal.reason)
        elif outcome.message_id is not None and outcome.status == MessageStatus.PENDING:
            pending.append(Pending(outcome.message_id, outgoing.purpose == Purpose.SAFETY))
    return pending


def _deliver_replies(svc: Services, pending: list[Pending]) -> None:
    """Hand the recorded replies to the worker's senders (sent at the office's pace), or
    send them now, in order. Over the office's send rate, a reply that is not safety
    advice waits for a retry (SendDeferred), not never; the ones sent keep their rows."""
    if not pending:
        return
    if svc.senders is not None:
        svc.senders.submit(
            [p.ready or p.message_id for p in pending], urgent=any(p.safety for p in pending)
        )
        return
    for reply in pending:
        deliver(svc, reply.ready or reply.message_id, None if reply.safety else _within_rate(svc))


def _within_rate(svc: Services) -> Callable[[Tenant], WaitTurn | None]:
    def check(tenant: Tenant) -> WaitTurn | None:
        if not within_send_rate(svc, tenant):
            raise SendDeferred(f"a reply of office {tenant.id} over its send rate")
        return None  # sent now; a 429 waits for the transport's backoff

    return check


def _tell_residents(svc: Services, planned: Planned) -> None:
    # The resident who reported a fault hears of its work order's step (once per step).
    for ticket_id, order_id, status in planned.detail.get("tell", []):
        tell_resident(svc, planned.tenant, ResidentNews(ticket_id, order_id, status))
