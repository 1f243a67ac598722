"""An operator's reply: through the outbound gate, like every message that leaves.

The form carries a one-time key so that a double click or a resubmitted form sends
one message, not two (the gate records messages under their idempotency key).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from bot.conversation.handoff import CLOSED, load_conversation
from bot.exceptions import Refused
from bot.office.actor import Actor
from bot.outbound import Envelope, Outgoing, Template, queue_message
from bot.outbound.attachments import Attachment
from bot.privacy.audit import record_actor_audit
from bot.services import Services
from storage.models import Contact, Conversation, Tenant
from storage.queries import get_contact
from storage.vocabulary import Purpose

MAX_REPLY_CHARS = 4096
MAX_VARIABLE_CHARS = 200
TEMPLATE_VARIABLES = 3  # the console's fields for a template's {{1}}, {{2}}, {{3}}
_FORM_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


@dataclass(frozen=True)
class ReplyResult:
    sent: bool
    message: str
    message_id: int | None = None
    refusal_reason: str | None = None


def new_form_key() -> str:
    return uuid.uuid4().hex


def send_operator_reply(
    svc: Services,
    actor: Actor,
    conversation_id: int,
    text: str,
    form_key: str,
    attachment: Attachment | None = None,
) -> ReplyResult:
    """Queue the reply (with its attachment, if any) for delivery, or say in Italian
    why the gate refused it."""
    text = text.strip()
    if not text and attachment is None:
        raise Refused("Scrivi un messaggio prima di inviare.")
    if len(text) > MAX_REPLY_CHARS:
        raise Refused(f"Il messaggio è troppo lungo (al massimo {MAX_REPLY_CHARS} caratteri).")
    outgoing = Outgoing(text=text, purpose=Purpose.OPERATOR, attachment=attachment)
    detail = {"attachment": attachment.content_type} if attachment else {}
    return _send(svc, actor, conversation_id, form_key, outgoing, "conversation.reply", detail)


def send_operator_template(
    svc: Services,
    actor: Actor,
    conversation_id: int,
    content_sid: str,
    variables: list[str],
    form_key: str,
) -> ReplyResult:
    """Once the 24-hour window has closed: one of the office's approved templates."""
    with svc.db.read() as session:
        tenant = session.get(Tenant, actor.tenant_id)
        approved = {
            t["content_sid"]: t["name"]
            for t in ((tenant.settings if tenant else {}) or {}).get("approved_templates") or []
        }
    if content_sid not in approved:
        raise Refused("Scegli uno dei modelli approvati dello studio.")
    values = {
        str(i): v.strip()[:MAX_VARIABLE_CHARS] for i, v in enumerate(variables, 1) if v.strip()
    }
    outgoing = Outgoing(template=Template(content_sid, values), purpose=Purpose.OPERATOR)
    detail = {"template": approved[content_sid]}
    return _send(svc, actor, conversation_id, form_key, outgoing, "conversation.template", detail)


def _send(
    svc: Services,
    actor: Actor,
    conversation_id: int,
    form_key: str,
    outgoing: Outgoing,
    action: str,
    detail: dict[str, str],
) -> ReplyResult:
    tenant, contact, conversation = _held_conversation(svc, actor, conversation_id)
    key = form_key if _FORM_KEY.match(form_key or "") else new_form_key()
    envelope = Envelope(
        tenant,
        contact,
        conversation,
        idempotency_key=f"operator:{conversation.id}:{key}",
        sender_user_id=actor.user_id,
    )
    outcome = queue_message(svc, envelope, outgoing)
    refusal = outcome.refusal
    with svc.db.session() as session:
        record_actor_audit(
            session,
            actor,
            "conversation.reply_refused" if refusal else action,
            "conversation",
            conversation.id,
            {
                "message_id": outcome.message_id,
                "reason": refusal.reason if refusal else None,
                **detail,
            },
        )
    if refusal is not None:
        explanation = refusal.explanation or "Il messaggio non può essere inviato."
        return ReplyResult(
            False, f"Messaggio non inviato. {explanation}", refusal_reason=refusal.reason
        )
    assert outcome.message_id is not None
    if outcome.status == "pending":
        svc.jobs.enqueue_delivery(outcome.message_id)
    return ReplyResult(True, "Messaggio in invio.", message_id=outcome.message_id)


def _held_conversation(
    svc: Services, actor: Actor, conversation_id: int
) -> tuple[Tenant, Contact, Conversation]:
    with svc.db.read() as session:
        conversation = load_conversation(session, actor, conversation_id)
        if conversation.status != "open":
            raise Refused(CLOSED)
        # Only the holder writes: otherwise the bot or a colleague may talk over them.
        if conversation.mode != "human" or conversation.assigned_user_id != actor.user_id:
            raise Refused("Prendi in carico la conversazione prima di rispondere.")
        tenant = session.get(Tenant, actor.tenant_id)
        contact = get_contact(session, actor.tenant_id, conversation.contact_id)
        assert tenant is not None and contact is not None
    return tenant, contact, conversation
