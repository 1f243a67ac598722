"""Who holds a conversation: the bot's handoff to a human, takeover, assignment,
release, close, automatic release.

Plain functions over a session: the views call them, the tests call them without
HTTP. Each move writes its audit event in the same transaction as the change, so
there is no change without its record. Moves that race (two operators on one
conversation) are decided by a conditional UPDATE and its row count, never by a
read followed by a write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from bot.conversation.emergency import (
    acknowledge_in_session,
    acknowledged_event,
    dismiss_pending_emergencies,
    keeps_urgent,
    pending_emergencies,
    record_on_open_emergencies,
)
from bot.conversation.replies import render
from bot.crm import record_acknowledged
from bot.exceptions import NotFound, Refused
from bot.office.actor import Actor
from bot.office.hours import hours_sentence
from bot.office.settings import handoff_reminder_minutes
from bot.outbound import Envelope, Outgoing, queue_message
from bot.privacy.audit import record_actor_audit, record_audit
from bot.services import Services
from notify.operators import OperatorEvent, tenant_channel, user_channel
from storage.db import rows_affected
from storage.models import BotLogEntry, Conversation, Message, Tenant, Ticket, User, utcnow
from storage.queries import get_contact, get_conversation
from storage.vocabulary import (
    AckVia,
    Action,
    ConversationStatus,
    Direction,
    Handoff,
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

CLOSED = "La conversazione è chiusa."
HELD_BY_COLLEAGUE = "La conversazione è in carico a un collega."
CHANGED_MEANWHILE = "La conversazione è stata appena modificata da un collega: ricarica la pagina."


@dataclass(frozen=True)
class Move:
    """The result of a move: what to tell the operator and what to push to the consoles."""

    message: str
    events: list[OperatorEvent] = field(default_factory=list)


@dataclass(frozen=True)
class Takeover(Move):
    won: bool = False


def load_conversation(session: Session, actor: Actor, conversation_id: int) -> Conversation:
    conversation = get_conversation(session, actor.tenant_id, conversation_id)
    if conversation is None:
        raise NotFound(conversation_id)
    return conversation


def may_act(conversation: Conversation, actor: Actor) -> bool:
    """The holder acts on their conversation; anyone on an unheld one; an admin on all."""
    return actor.is_admin or conversation.assigned_user_id in (None, actor.user_id)


def handoff_to_operator(
    tenant: Tenant, thread: Conversation, reason: Handoff, *, urgent: bool, now: datetime
) -> list[OperatorEvent]:
    """The conversation now needs a human; the bot falls silent until it is released."""
    thread.needs_attention = True
    thread.mode = Mode.HUMAN
    thread.human_since = thread.human_since or now
    # The resident waits for an operator from the first handoff on (see the reminder).
    thread.handoff_at = thread.handoff_at or now
    if urgent:
        thread.priority = Priority.URGENT
    channels = (tenant_channel(tenant.slug),)
    data = {"conversation_id": thread.id, "reason": reason, "priority": thread.priority}
    events = [OperatorEvent(channels, "conversation.needs_attention", data)]
    if urgent:
        events.append(OperatorEvent(channels, "conversation.emergency", data))
    return events


def takeover(session: Session, actor: Actor, conversation_id: int, now: datetime) -> Takeover:
    """Silence the bot and give the conversation to ``actor``; of two at once, one wins."""
    conversation = load_conversation(session, actor, conversation_id)
    if conversation.status != ConversationStatus.OPEN:
        raise Refused(CLOSED)
    taken = (
        rows_affected(
            session.execute(
                update(Conversation)
                .where(
                    Conversation.id == conversation.id,
                    Conversation.tenant_id == actor.tenant_id,
                    Conversation.status == ConversationStatus.OPEN,
                    or_(Conversation.assigned_user_id.is_(None), Conversation.mode == Mode.BOT),
                )
                .values(
                    mode=Mode.HUMAN,
                    assigned_user_id=actor.user_id,
                    needs_attention=False,
                    human_since=now,
                )
                .execution_options(synchronize_session=False)
            )
        )
        == 1
    )
    session.refresh(conversation)
    if not taken:
        if conversation.assigned_user_id == actor.user_id and conversation.mode == Mode.HUMAN:
            return Takeover("La conversazione è già in carico a te.", won=True)
        holder = _email(session, actor.tenant_id, conversation.assigned_user_id)
        return Takeover(f"La conversazione è già stata presa in carico da {holder}.")
    _audit(session, actor, "conversation.takeover", conversation.id)
    # Taking the conversation over is taking charge of its emergency.
    acknowledged = _acknowledge(session, actor, conversation.id, AckVia.TAKEOVER, now)
    record_acknowledged(session, conversation, actor.user_id)
    message = "Hai preso in carico la conversazione: il bot non risponderà più."
    if acknowledged:
        message = "Hai preso in carico la conversazione e l'emergenza: il bot non risponderà più."
    return Takeover(message, events=[_updated(session, conversation, "takeover")], won=True)


def acknowledge(session: Session, actor: Actor, conversation_id: int, now: datetime) -> Move:
    """The console's "Presa in carico": someone has the emergency, with or without a takeover."""
    conversation = load_conversation(session, actor, conversation_id)
    acknowledged = _acknowledge(session, actor, conversation.id, AckVia.CONSOLE, now)
    if not acknowledged:
        return Move("Nessuna emergenza da prendere in carico: qualcuno l'ha già fatto.")
    slug = session.scalar(select(Tenant.slug).where(Tenant.id == actor.tenant_id))
    return Move(
        "Emergenza presa in carico: i colleghi lo vedono.",
        [acknowledged_event(str(slug), conversation.id, acknowledged)],
    )


def _acknowledge(
    session: Session, actor: Actor, conversation_id: int, via: AckVia, now: datetime
) -> list[int]:
    return acknowledge_in_session(
        session,
        actor.tenant_id,
        conversation_id,
        actor=actor.audit_name,
        user_id=actor.user_id,
        via=via,
        now=now,
        ip=actor.ip,
    )


def assign(
    session: Session, actor: Actor, conversation_id: int, colleague_id: int, now: datetime
) -> Move:
    conversation = load_conversation(session, actor, conversation_id)
    _check_can_act(conversation, actor)
    colleague = session.scalar(
        select(User).where(User.id == colleague_id, User.tenant_id == actor.tenant_id, User.active)
    )
    if colleague is None:
        raise Refused("Collega non trovato.")
    moved: dict[str, Any] = {
        "mode": Mode.HUMAN,
        "assigned_user_id": colleague.id,
        "needs_attention": False,
        "human_since": now,
    }
    # Handing it to a colleague is not taking charge: an emergency keeps waiting.
    _compare_and_set(session, conversation, **{**moved, **keeps_urgent(session, conversation)})
    _audit(
        session, actor, "conversation.assign", conversation.id, detail={"to_user_id": colleague.id}
    )
    events = [_updated(session, conversation, "assign")]
    events.append(
        OperatorEvent(
            (user_channel(colleague.id),),
            "conversation.assigned",
            {"conversation_id": conversation.id, "by_user_id": actor.user_id},
        )
    )
    return Move(f"Conversazione assegnata a {colleague.email}.", events)


def release(session: Session, actor: Actor, conversation_id: int) -> Move:
    """Give the conversation back to the bot."""
    conversation = load_conversation(session, actor, conversation_id)
    _check_can_act(conversation, actor)
    if conversation.mode != Mode.HUMAN:
        raise Refused("La conversazione è già gestita dal bot.")
    holder = conversation.assigned_user_id
    # An emergency nobody acknowledged stays urgent and waiting, whoever answers.
    kept = keeps_urgent(session, conversation)
    _compare_and_set(session, conversation, **{**_BACK_TO_BOT, **kept})
    now = utcnow()
    record_on_open_emergencies(
        session, conversation, TicketEventKind.RELEASED, actor=actor.audit_name, at=now
    )
    _audit(
        session, actor, "conversation.release", conversation.id, detail={"holder_user_id": holder}
    )
    message = "Conversazione restituita al bot."
    if kept:
        message += " L'emergenza non è ancora stata presa in carico: resta urgente."
    return Move(message, [_updated(session, conversation, "release", holder)])


def close(session: Session, actor: Actor, conversation_id: int, reason: str | None = None) -> Move:
    """Close it; the contact's next message opens a new conversation with the bot.

    An emergency nobody acknowledged is closed only with the operator's reason (a false
    alarm, handled by phone...), which its timeline keeps.
    """
    conversation = load_conversation(session, actor, conversation_id)
    _check_can_act(conversation, actor)
    reason = (reason or "").strip()[:MAX_REASON_CHARS]
    pending = pending_emergencies(session, actor.tenant_id, conversation.id)
    if pending and not reason:
        raise Refused(NEEDS_A_REASON)
    holder = conversation.assigned_user_id
    # The holder stays recorded: it says who handled the conversation last.
    _compare_and_set(
        session,
        conversation,
        status=ConversationStatus.CLOSED,
        mode=Mode.BOT,
        needs_attention=False,
        human_since=None,
        handoff_at=None,
        handoff_reminded_at=None,
    )
    dismissed = dismiss_pending_emergencies(
        session, conversation, actor=actor.audit_name, reason=reason, at=utcnow()
    )
    detail = {"reason": reason, "unacknowledged_emergencies": dismissed} if dismissed else None
    _audit(session, actor, "conversation.close", conversation.id, detail=detail)
    return Move("Conversazione chiusa.", [_updated(session, conversation, "close", holder)])


NEEDS_A_REASON = (
    "L'emergenza non è stata presa in carico: per chiudere la conversazione indica il motivo."
)
MAX_REASON_CHARS = 500

_BACK_TO_BOT: dict[str, Any] = {
    "mode": Mode.BOT,
    "assigned_user_id": None,
    "needs_attention": False,
    "human_since": None,
    # An acknowledged emergency was a human's to handle; the bot starts afresh.
    "priority": Priority.NORMAL,
    "clarifications": 0,
    "handoff_at": None,
    "handoff_reminded_at": None,
}


def human_mode_timeout(config: dict[str, Any]) -> timedelta:
    return timedelta(minutes=float(config["HUMAN_MODE_TIMEOUT_MINUTES"]))


def release_idle_conversations(svc: Services, now: datetime) -> int:
    """Give back to the bot every held conversation with no activity for the timeout.

    Activity is any message in either direction or the takeover itself: a conversation
    where the resident keeps writing is not idle. Conversations still waiting for an
    operator (``needs_attention``) are never released: the resident asked for a human
    and the inbox keeps showing them. Returns how many were released.
    """
    cutoff = now - human_mode_timeout(svc.config)
    events: list[OperatorEvent] = []
    with svc.db.session() as session:
        for conversation, slug in session.execute(_idle_query(cutoff)).all():
            holder = conversation.assigned_user_id
            released = (
                rows_affected(
                    session.execute(
                        update(Conversation)
                        .where(
                            Conversation.id == conversation.id,
                            Conversation.mode == Mode.HUMAN,
                            Conversation.status == ConversationStatus.OPEN,
                            Conversation.needs_attention.is_(False),
                            _holder_is(holder),
                        )
                        .values(**_BACK_TO_BOT)
                        .execution_options(synchronize_session=False)
                    )
                )
                == 1
            )
            if not released:
                continue
            record_audit(
                session,
                conversation.tenant_id,
                "conversation.auto_release",
                actor="system",
                target_type="conversation",
                target_id=conversation.id,
                detail={
                    "holder_user_id": holder,
                    "idle_minutes": int(human_mode_timeout(svc.config).total_seconds() // 60),
                },
            )
            channels = [tenant_channel(slug)] + ([user_channel(holder)] if holder else [])
            events.append(
                OperatorEvent(
                    tuple(channels),
                    "conversation.updated",
                    {"conversation_id": conversation.id, "change": "auto_release"},
                )
            )
    publish(svc, events)
    return len(events)


def _idle_query(cutoff: datetime) -> Any:
    return (
        select(Conversation, Tenant.slug)
        .join(Tenant, Tenant.id == Conversation.tenant_id)
        .where(
            Conversation.mode == Mode.HUMAN,
            Conversation.status == ConversationStatus.OPEN,
            Conversation.needs_attention.is_(False),
            ~_has_pending_emergency(),
            or_(Conversation.human_since.is_(None), Conversation.human_since < cutoff),
            or_(Conversation.last_message_at.is_(None), Conversation.last_message_at < cutoff),
            # Asked of each held conversation through its own messages' index: a
            # grouping of every operator reply of every office grew with the history.
            ~_operator_wrote_since(cutoff),
        )
        .order_by(Conversation.id)
    )


def _operator_wrote_since(moment: Any) -> Any:
    """Whether an operator wrote in the conversation at or after ``moment`` (a time, or
    a column of the conversation such as its handoff's)."""
    return (
        select(Message.id)
        .where(
            Message.conversation_id == Conversation.id,
            Message.direction == Direction.OUT,
            Message.purpose == Purpose.OPERATOR,
            Message.created_at >= moment,
        )
        .exists()
    )


def _has_pending_emergency() -> Any:
    return (
        select(Ticket.id)
        .where(
            Ticket.conversation_id == Conversation.id,
            Ticket.kind == TicketKind.EMERGENCY,
            Ticket.acknowledged_at.is_(None),
            Ticket.status != TicketStatus.DONE,
        )
        .exists()
    )


# -- the reminder after a handoff ---------------------------------------------------------


@dataclass(frozen=True)
class _Waiting:
    conversation_id: int
    tenant_id: int
    handoff_at: datetime


def send_handoff_reminders(svc: Services, now: datetime) -> int:
    """Tell residents still waiting for an operator, once, that one will answer.

    A conversation qualifies when the bot handed it to a human, no operator has
    written since, and the office's ``handoff.reminder_minutes`` have passed. Each is
    claimed by a conditional UPDATE (several workers run this), and the reminder goes
    through the outbound gate like any message. Returns how many were sent.
    """
    sent = 0
    for waiting in _waiting_for_an_operator(svc, now):
        if not _claim_reminder(svc, waiting, now):
            continue
        if _send_reminder(svc, waiting, now):
            sent += 1
    return sent


def _waiting_for_an_operator(svc: Services, now: datetime) -> list[_Waiting]:
    operator_wrote = _operator_wrote_since(Conversation.handoff_at)
    with svc.db.read() as session:
        rows = session.execute(
            select(
                Conversation.id, Conversation.tenant_id, Conversation.handoff_at, Tenant.settings
            )
            .join(Tenant, Tenant.id == Conversation.tenant_id)
            .where(
                Conversation.mode == Mode.HUMAN,
                Conversation.status == ConversationStatus.OPEN,
                Conversation.handoff_at.is_not(None),
                Conversation.handoff_reminded_at.is_(None),
                Tenant.terminated_at.is_(None),
                ~operator_wrote,
            )
            .order_by(Conversation.handoff_at)
            .limit(REMINDER_BATCH)
        ).all()
    due = []
    for conversation_id, tenant_id, handoff_at, settings in rows:
        minutes = handoff_reminder_minutes(settings)
        if minutes and now - handoff_at >= timedelta(minutes=minutes):
            due.append(_Waiting(conversation_id, tenant_id, handoff_at))
    return due


def _claim_reminder(svc: Services, waiting: _Waiting, now: datetime, undo: bool = False) -> bool:
    with svc.db.session() as session:
        claimed = rows_affected(
            session.execute(
                update(Conversation)
                .where(
                    Conversation.id == waiting.conversation_id,
                    Conversation.handoff_at == waiting.handoff_at,
                    Conversation.handoff_reminded_at.is_not(None)
                    if undo
                    else Conversation.handoff_reminded_at.is_(None),
                )
                .values(handoff_reminded_at=None if undo else now)
                .execution_options(synchronize_session=False)
            )
        )
    return claimed == 1


def _send_reminder(svc: Services, waiting: _Waiting, now: datetime) -> bool:
    with svc.db.read() as session:
        tenant = session.get(Tenant, waiting.tenant_id)
        conversation = session.get(Conversation, waiting.conversation_id)
        assert tenant is not None and conversation is not None
        contact = get_contact(session, tenant, conversation.contact_id)
        assert contact is not None
    text = render("handoff_reminder", tenant.settings, hours=hours_sentence(tenant.settings, now))
    key = f"handoff-reminder:{conversation.id}:{int(waiting.handoff_at.timestamp())}"
    outcome = queue_message(
        svc,
        Envelope(tenant, contact, conversation, idempotency_key=key),
        Outgoing(text=text, purpose=Purpose.REPLY),
    )
    refusal = outcome.refusal.reason if outcome.refusal else None
    if refusal == Refusal.RATE_LIMITED:
        # Over the office's send rate: the next pass tries again.
        _claim_reminder(svc, waiting, now, undo=True)
        return False
    with svc.db.session() as session:
        session.add(
            BotLogEntry(
                tenant_id=tenant.id,
                at=now,
                action=Action.HANDOFF_REMINDER,
                detail={"conversation_id": conversation.id, "refused": refusal},
            )
        )
    if outcome.message_id is not None and outcome.status == MessageStatus.PENDING:
        svc.jobs.enqueue_delivery(outcome.message_id)
    return refusal is None


REMINDER_BATCH = 200


def publish(svc: Services, events: Iterable[OperatorEvent]) -> None:
    """Push to the consoles after the commit, in as few requests as the backend
    allows; a lost push costs a refresh, not data."""
    batch = list(events)
    if not batch:
        return
    try:
        svc.notifier.publish_all(batch)
    except Exception:
        log.exception("operator notifications failed: %s", ", ".join(e.name for e in batch))


def _check_can_act(conversation: Conversation, actor: Actor) -> None:
    if conversation.status != ConversationStatus.OPEN:
        raise Refused(CLOSED)
    if not may_act(conversation, actor):
        raise Refused(HELD_BY_COLLEAGUE)


def _holder_is(user_id: int | None) -> ColumnElement[bool]:
    if user_id is None:
        return Conversation.assigned_user_id.is_(None)
    return Conversation.assigned_user_id == user_id


def _compare_and_set(session: Session, conversation: Conversation, **values: Any) -> None:
    """Apply ``values`` only if nobody changed the holder or the status since we read them."""
    changed = (
        rows_affected(
            session.execute(
                update(Conversation)
                .where(
                    Conversation.id == conversation.id,
                    Conversation.status == conversation.status,
                    Conversation.mode == conversation.mode,
                    _holder_is(conversation.assigned_user_id),
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        )
        == 1
    )
    if not changed:
        raise Refused(CHANGED_MEANWHILE)
    session.refresh(conversation)


def _audit(
    session: Session,
    actor: Actor,
    action: str,
    conversation_id: int,
    detail: dict[str, Any] | None = None,
) -> None:
    record_actor_audit(session, actor, action, "conversation", conversation_id, detail)


def updated_event(session: Session, conversation: Conversation, change: str) -> OperatorEvent:
    """``conversation.updated`` for a change outside these moves (a note, say)."""
    return _updated(session, conversation, change)


def _updated(
    session: Session, conversation: Conversation, change: str, previous_holder: int | None = None
) -> OperatorEvent:
    """Tell every console of the office that the inbox changed (and the old holder, if any)."""
    slug = session.scalar(select(Tenant.slug).where(Tenant.id == conversation.tenant_id))
    channels = [tenant_channel(str(slug))]
    if previous_holder:
        channels.append(user_channel(previous_holder))
    return OperatorEvent(
        tuple(channels),
        "conversation.updated",
        {
            "conversation_id": conversation.id,
            "change": change,
            "mode": conversation.mode,
            "status": conversation.status,
            "assigned_user_id": conversation.assigned_user_id,
        },
    )


def _email(session: Session, tenant_id: int, user_id: int | None) -> str:
    if user_id is None:
        return "un collega"
    email = session.scalar(
        select(User.email).where(User.id == user_id, User.tenant_id == tenant_id)
    )
    return email or "un collega"
