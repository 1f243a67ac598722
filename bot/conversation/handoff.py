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

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from bot.crm import record_acknowledged
from bot.exceptions import NotFound, Refused
from bot.office.actor import Actor
from bot.privacy.audit import record_actor_audit, record_audit
from bot.services import Services
from notify.operators import OperatorEvent, tenant_channel, user_channel
from storage.db import rows_affected
from storage.models import Conversation, Message, Tenant, User
from storage.queries import get_conversation
from storage.vocabulary import ConversationStatus, Direction, Handoff, Mode, Priority, Purpose

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
    record_acknowledged(session, conversation, actor.user_id)
    return Takeover(
        "Hai preso in carico la conversazione: il bot non risponderà più.",
        events=[_updated(session, conversation, "takeover")],
        won=True,
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
    _compare_and_set(
        session,
        conversation,
        mode=Mode.HUMAN,
        assigned_user_id=colleague.id,
        needs_attention=False,
        human_since=now,
    )
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
    _compare_and_set(session, conversation, **_BACK_TO_BOT)
    _audit(
        session, actor, "conversation.release", conversation.id, detail={"holder_user_id": holder}
    )
    return Move(
        "Conversazione restituita al bot.", [_updated(session, conversation, "release", holder)]
    )


def close(session: Session, actor: Actor, conversation_id: int) -> Move:
    """Close it; the contact's next message opens a new conversation with the bot."""
    conversation = load_conversation(session, actor, conversation_id)
    _check_can_act(conversation, actor)
    holder = conversation.assigned_user_id
    # The holder stays recorded: it says who handled the conversation last.
    _compare_and_set(
        session,
        conversation,
        status=ConversationStatus.CLOSED,
        mode=Mode.BOT,
        needs_attention=False,
        human_since=None,
    )
    _audit(session, actor, "conversation.close", conversation.id)
    return Move("Conversazione chiusa.", [_updated(session, conversation, "close", holder)])


_BACK_TO_BOT: dict[str, Any] = {
    "mode": Mode.BOT,
    "assigned_user_id": None,
    "needs_attention": False,
    "human_since": None,
    # The emergency was a human's to handle; the bot starts afresh.
    "priority": Priority.NORMAL,
    "clarifications": 0,
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
    last_operator_reply = (
        select(Message.conversation_id, func.max(Message.created_at).label("at"))
        .where(Message.direction == Direction.OUT, Message.purpose == Purpose.OPERATOR)
        .group_by(Message.conversation_id)
        .subquery()
    )
    return (
        select(Conversation, Tenant.slug)
        .join(Tenant, Tenant.id == Conversation.tenant_id)
        .outerjoin(last_operator_reply, last_operator_reply.c.conversation_id == Conversation.id)
        .where(
            Conversation.mode == Mode.HUMAN,
            Conversation.status == ConversationStatus.OPEN,
            Conversation.needs_attention.is_(False),
            or_(Conversation.human_since.is_(None), Conversation.human_since < cutoff),
            or_(Conversation.last_message_at.is_(None), Conversation.last_message_at < cutoff),
            or_(last_operator_reply.c.at.is_(None), last_operator_reply.c.at < cutoff),
        )
        .order_by(Conversation.id)
    )


def publish(svc: Services, events: Iterable[OperatorEvent]) -> None:
    """Push to the consoles after the commit; a lost push costs a refresh, not data."""
    for event in events:
        try:
            svc.notifier.publish(event)
        except Exception:
            log.exception("operator notification %s failed", event.name)


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
