"""The outbound gate: whether a message may go to a contact, and if not, why.

:class:`Outgoing` is what someone wants to send; :func:`evaluate` is the rule, a
plain function over plain data; :func:`check_outbound` feeds it the contact's state
and adds the tenant's send-rate limit.

One exception reaches a contact who withdrew beyond the confirmation of their
withdrawal: the safety advice answering an emergency they have just reported, once
per emergency message. Its basis is their vital interests (art. 6(1)(d), 9(2)(c)
GDPR), recorded in the consent ledger (``vital_interests_reply``) and the bot log.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Contact, Message, Tenant, utcnow
from storage.vocabulary import Consent, Direction, LegalBasis, Purpose, Refusal

if TYPE_CHECKING:
    from bot.outbound.attachments import Attachment
    from bot.services import Services

log = logging.getLogger(__name__)

SERVICE_WINDOW = timedelta(hours=24)
DEFAULT_SEND_RATE = 20

EXPLANATIONS: dict[Refusal, str] = {
    Refusal.OPTED_OUT: "Il contatto ha revocato il consenso: non è possibile inviargli messaggi.",
    Refusal.NO_CONSENT: (
        "Il contatto non ha accettato l'informativa e non ha un'altra base giuridica: "
        "non è possibile scrivergli."
    ),
    Refusal.OUTSIDE_WINDOW: (
        "Sono passate più di 24 ore dall'ultimo messaggio del contatto: "
        "si può inviare solo un modello approvato."
    ),
    Refusal.RATE_LIMITED: "Limite di invio dello studio raggiunto: riprova tra qualche secondo.",
    Refusal.OFFICE_TERMINATED: (
        "Il servizio WhatsApp dello studio è cessato: nessun messaggio parte."
    ),
}

# Messages that may answer a contact who has not accepted the channel (yet): the
# notice itself, safety advice in an emergency (vital interests, art. 6(1)(d) GDPR)
# and the answer to a data-subject request (a legal obligation).
PRE_CONSENT_PURPOSES = frozenset({Purpose.WELCOME, Purpose.NOTICE, Purpose.SAFETY, Purpose.RIGHTS})
# After a withdrawal: the one confirmation, and answers to their own rights requests.
WITHDRAWN_PURPOSES = frozenset({Purpose.WITHDRAWAL_CONFIRMATION, Purpose.RIGHTS})


@dataclass(frozen=True)
class Template:
    """An approved WhatsApp template (Twilio Content), the only thing that may go
    outside the 24-hour window."""

    content_sid: str
    variables: dict[str, str]


@dataclass(frozen=True)
class Outgoing:
    """What to say: free text, or an approved template outside the 24-hour window."""

    text: str | None = None
    template: Template | None = None
    # A file that goes with the text (free-form: the 24-hour window applies).
    attachment: Attachment | None = None
    # Why it is sent: the gate reads it.
    purpose: Purpose = Purpose.REPLY
    # The inbound message this answers (the bot's replies): a safety reply to a
    # contact who withdrew must answer an emergency they reported.
    answers: int | None = None


@dataclass(frozen=True)
class GateDecision:
    allowed: bool
    reason: Refusal | None = None

    @property
    def explanation(self) -> str | None:
        return EXPLANATIONS.get(self.reason) if self.reason else None


ALLOW = GateDecision(allowed=True)


def evaluate(
    *,
    consent: Consent,
    legal_basis: LegalBasis | None,
    last_inbound_at: datetime | None,
    purpose: Purpose,
    is_template: bool,
    now: datetime,
    answers_unanswered_emergency: bool = False,
) -> GateDecision:
    """``answers_unanswered_emergency``: this is the first safety reply to an emergency
    message the contact just sent (what :func:`check_outbound` checks in the database)."""
    if consent == Consent.WITHDRAWN:
        if purpose in WITHDRAWN_PURPOSES and not is_template:
            return _within_window(last_inbound_at, now)
        if purpose == Purpose.SAFETY and answers_unanswered_emergency and not is_template:
            return _within_window(last_inbound_at, now)
        return GateDecision(False, Refusal.OPTED_OUT)
    if (
        consent != Consent.GRANTED
        and legal_basis in (None, LegalBasis.CONSENT)
        and purpose not in PRE_CONSENT_PURPOSES
    ):
        return GateDecision(False, Refusal.NO_CONSENT)
    if is_template:
        return ALLOW
    return _within_window(last_inbound_at, now)


def _within_window(last_inbound_at: datetime | None, now: datetime) -> GateDecision:
    if last_inbound_at is None or now - last_inbound_at > SERVICE_WINDOW:
        return GateDecision(False, Refusal.OUTSIDE_WINDOW)
    return ALLOW


def check_outbound(
    svc: Services,
    tenant: Tenant,
    contact: Contact,
    outgoing: Outgoing,
    now: datetime | None = None,
    *,
    paced: bool = False,
    session: Session | None = None,
) -> GateDecision:
    """May this message go now? ``paced``: it will wait for its slot of the office's
    send rate when it is sent (:mod:`bot.outbound.senders`), so the rate is not
    checked here. ``session``: the caller's transaction, whose own writes (the
    emergency being answered) the checks must see."""
    if tenant.terminated_at is not None:
        # Jobs already queued when the contract ended must not speak for the office.
        return GateDecision(False, Refusal.OFFICE_TERMINATED)
    vital = (
        contact.consent == Consent.WITHDRAWN
        and outgoing.purpose == Purpose.SAFETY
        and _answers_unanswered_emergency(svc, tenant, contact, outgoing.answers, session)
    )
    decision = evaluate(
        consent=contact.consent,
        legal_basis=contact.legal_basis,
        last_inbound_at=contact.last_inbound_at,
        purpose=outgoing.purpose,
        is_template=outgoing.template is not None,
        now=now or utcnow(),
        answers_unanswered_emergency=vital,
    )
    # Safety advice is counted against the office's rate but never held back by it:
    # a deferred job would wait seconds, and Twilio's own cap is far above ours.
    if (
        decision.allowed
        and not paced
        and not within_send_rate(svc, tenant)
        and outgoing.purpose != Purpose.SAFETY
    ):
        return GateDecision(False, Refusal.RATE_LIMITED)
    return decision


def _answers_unanswered_emergency(
    svc: Services,
    tenant: Tenant,
    contact: Contact,
    message_id: int | None,
    session: Session | None,
) -> bool:
    """The message answered is this contact's emergency, and no safety reply went since."""
    if message_id is None:
        return False
    if session is None:
        with svc.db.read() as reading:
            return _unanswered_emergency(reading, tenant, contact, message_id)
    return _unanswered_emergency(session, tenant, contact, message_id)


def _unanswered_emergency(
    session: Session, tenant: Tenant, contact: Contact, message_id: int
) -> bool:
    reported = session.scalar(
        select(Message.created_at).where(
            Message.tenant_id == tenant.id,
            Message.id == message_id,
            Message.contact_id == contact.id,
            Message.direction == Direction.IN,
            Message.intent == "emergenza",
        )
    )
    if reported is None:
        return False
    answered = session.scalar(
        select(Message.id)
        .where(
            Message.tenant_id == tenant.id,
            Message.contact_id == contact.id,
            Message.direction == Direction.OUT,
            Message.purpose == Purpose.SAFETY,
            Message.created_at >= reported,
        )
        .limit(1)
    )
    return answered is None


def within_send_rate(svc: Services, tenant: Tenant) -> bool:
    """A fixed one-second window per tenant in Redis, shared by every process."""
    limit = int(tenant.settings.get("send_rate_per_second", DEFAULT_SEND_RATE))
    key = f"portineria:rate:{tenant.id}:{int(time.time())}"
    try:
        pipe = svc.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, 5)
        count = pipe.execute()[0]
    except RedisError:
        # Without Redis there is no shared counter; replies to residents matter more.
        log.warning("send-rate check skipped: redis unavailable")
        return True
    return int(count) <= limit
