"""Internal notes and canned responses: what the office writes for itself.

A note stays inside the office: it is stored (encrypted) next to the conversation and
shown to colleagues, and no code path turns it into an outbound message, so the gate
and the transport never see it. Canned responses are the office's ready answers,
managed by the admin (every change audited); an operator picks one, edits it and
sends it as an ordinary reply, through the gate.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.conversation.handoff import load_conversation
from bot.exceptions import NotFound, Refused
from bot.office.actor import Actor
from bot.privacy.audit import record_actor_audit
from bot.services import Services
from storage.models import CannedResponse, InternalNote, utcnow

MAX_NOTE_CHARS = 4000
MAX_TITLE_CHARS = 80
MAX_CANNED_CHARS = 2000


def add_note(svc: Services, actor: Actor, conversation_id: int, text: str) -> int:
    """Record an operator's note on a conversation of their office; returns its id."""
    text = text.strip()
    if not text:
        raise Refused("Scrivi la nota prima di salvarla.")
    if len(text) > MAX_NOTE_CHARS:
        raise Refused(f"La nota è troppo lunga (al massimo {MAX_NOTE_CHARS} caratteri).")
    with svc.db.session() as session:
        conversation = load_conversation(session, actor, conversation_id)
        note = InternalNote(
            tenant_id=actor.tenant_id,
            conversation_id=conversation.id,
            contact_id=conversation.contact_id,
            author_user_id=actor.user_id,
            body=svc.cipher.encrypt(text),
        )
        session.add(note)
        session.flush()
        # The audit row says a note was written, never what it says.
        record_actor_audit(
            session, actor, "conversation.note", "conversation", conversation.id, {"note": note.id}
        )
        return note.id


def canned_responses(session: Session, tenant_id: int) -> list[CannedResponse]:
    return list(
        session.scalars(
            select(CannedResponse)
            .where(CannedResponse.tenant_id == tenant_id)
            .order_by(CannedResponse.title)
        )
    )


def _checked(title: str, body: str) -> tuple[str, str]:
    title, body = " ".join(title.split()), body.strip()
    if not title or len(title) > MAX_TITLE_CHARS:
        raise Refused(f"Dai un titolo da 1 a {MAX_TITLE_CHARS} caratteri.")
    if not body or len(body) > MAX_CANNED_CHARS:
        raise Refused(f"Il testo va da 1 a {MAX_CANNED_CHARS} caratteri.")
    return title, body


def save_canned(
    svc: Services, actor: Actor, title: str, body: str, canned_id: int | None = None
) -> int:
    """Create (``canned_id`` None) or change one of the office's ready answers."""
    title, body = _checked(title, body)
    try:
        with svc.db.session() as session:
            if canned_id is None:
                item = CannedResponse(tenant_id=actor.tenant_id, title=title, body=body)
                session.add(item)
                action = "canned_response.create"
            else:
                item = _own(session, actor.tenant_id, canned_id)
                item.title, item.body, item.updated_at = title, body, utcnow()
                action = "canned_response.update"
            session.flush()
            record_actor_audit(session, actor, action, "canned_response", item.id, {"title": title})
            return item.id
    except IntegrityError as error:
        raise Refused("Esiste già una risposta pronta con questo titolo.") from error


def delete_canned(svc: Services, actor: Actor, canned_id: int) -> None:
    with svc.db.session() as session:
        item = _own(session, actor.tenant_id, canned_id)
        record_actor_audit(
            session,
            actor,
            "canned_response.delete",
            "canned_response",
            item.id,
            {"title": item.title},
        )
        session.delete(item)


def _own(session: Session, tenant_id: int, canned_id: int) -> CannedResponse:
    item = session.get(CannedResponse, canned_id)
    if item is None or item.tenant_id != tenant_id:
        raise NotFound(canned_id)
    return item
