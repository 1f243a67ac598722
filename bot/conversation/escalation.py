"""An emergency nobody acknowledged: call the on-call people, in order, round after round.

How it runs: every ``emergency.ack_seconds`` without an acknowledgement the next
person on the office's rota gets a Twilio voice call that names the hazard and the
building or street (never the resident's name or number) and asks to press 1; after
the last person the rota starts again, up to ``emergency.rounds`` rounds. A call that
Twilio refused lets the next person be called at once. An acknowledgement stops it:
the office's own (console, API) or the callee's 1.

* :func:`plan_escalation` is the rule: pure, over plain values, tested exhaustively.
* :func:`run_escalation` places the calls that are due for a list of unacknowledged
  emergencies. Each call is first claimed by a row (unique per conversation and
  sequence), so two workers never place the same call.
* :func:`escalate_unacknowledged` runs it for every emergency case nobody has
  acknowledged (:func:`bot.conversation.emergency.unacknowledged_emergencies`); the
  worker's housekeeping calls it every few seconds.
* :func:`on_keypress_ack` records a callee's 1 on the call's row, audited, and
  acknowledges the case (:func:`bot.conversation.emergency.acknowledge_emergency`);
  the webhook answers with :func:`answer_keypress`'s TwiML.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from twilio.twiml.voice_response import Gather, VoiceResponse

from bot.conversation.alerts import hazard_label
from bot.conversation.emergency import (
    UnacknowledgedEmergency,
    acknowledge_emergency,
    unacknowledged_emergencies,
)
from bot.exceptions import NotFound
from bot.office.oncall import OnCall, rota
from bot.office.settings import emergency_settings
from bot.privacy.audit import record_audit
from bot.services import Services
from notify import CallRequest, SendError
from storage.models import EscalationCall, Tenant, utcnow
from storage.vocabulary import AckVia, CallOutcome

log = logging.getLogger(__name__)

LANGUAGE = "it-IT"
ACK_DIGIT = "1"
ACK_PATH = "/webhooks/twilio/voice/ack"
# The callee hears the message once more after a wrong key, then the call ends.
MAX_ATTEMPTS = 2
GATHER_TIMEOUT_SECONDS = 8

ACKNOWLEDGED_TEXT = "Presa in carico registrata, grazie."
WRONG_KEY_TEXT = "Tasto non valido."
GOODBYE_TEXT = "Nessuna presa in carico registrata. Arrivederci."
UNKNOWN_CALL_TEXT = "Questa chiamata non risulta più attiva. Arrivederci."


# -- the rule ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallMade:
    """A call of this emergency: when it was placed, and whether Twilio refused it."""

    at: datetime
    failed: bool = False


@dataclass(frozen=True)
class NextCall:
    person: OnCall
    round: int  # 1-based: the first pass over the rota is round 1
    index: int  # how many calls this emergency has had before this one


def plan_escalation(
    now: datetime,
    opened_at: datetime,
    acknowledged: bool,
    rota: Sequence[OnCall],
    ack_seconds: int,
    rounds: int,
    calls_made: Sequence[CallMade],
) -> NextCall | None:
    """The call to place now, or None (acknowledged, nobody on call, every round done,
    or not yet due).

    The first call is due ``ack_seconds`` after the emergency opened; each next one
    ``ack_seconds`` after the previous call (at once if that call failed), so everyone
    called has the same time to answer and a worker that was down for a while does
    not fire the whole rota at once when it comes back.
    """
    if acknowledged or not rota or rounds < 1:
        return None
    index = len(calls_made)
    if index >= len(rota) * rounds:
        return None
    wait = timedelta(seconds=ack_seconds)
    if not calls_made:
        due = opened_at + wait
    else:
        last = calls_made[-1]
        due = last.at if last.failed else last.at + wait
    if now < due:
        return None
    return NextCall(person=rota[index % len(rota)], round=index // len(rota) + 1, index=index)


# -- what the call says -----------------------------------------------------------------------


def where_phrase(place: dict[str, str]) -> str:
    """``presso <building>`` or ``in <street>``, or nothing when the resident said neither."""
    if place.get("building"):
        return f"presso {place['building']}"
    if place.get("street"):
        return f"in {place['street']}"
    return ""


def spoken_summary(office: str, hazard: str | None, where: str) -> str:
    """The call's message: the office, the hazard, the building or street, what to press."""
    where = f", {where}" if where else ""
    return (
        f"Attenzione: emergenza segnalata a {office}: {hazard_label(hazard)}{where}. "
        f"Nessun operatore l'ha ancora presa in carico. "
        f"Premere {ACK_DIGIT} per prenderla in carico."
    )


def _gather(public_base_url: str, summary: str, attempt: int) -> Gather:
    gather = Gather(
        num_digits=1,
        action=f"{public_base_url}{ACK_PATH}?attempt={attempt}",
        method="POST",
        timeout=GATHER_TIMEOUT_SECONDS,
    )
    gather.say(summary, language=LANGUAGE)
    return gather


def call_twiml(public_base_url: str, summary: str) -> str:
    """The call's TwiML: the message and its key, said twice if nobody presses, then goodbye."""
    response = VoiceResponse()
    response.append(_gather(public_base_url, summary, attempt=1))
    response.append(_gather(public_base_url, summary, attempt=2))
    response.say(GOODBYE_TEXT, language=LANGUAGE)
    return str(response)


def _said(text: str) -> str:
    response = VoiceResponse()
    response.say(text, language=LANGUAGE)
    response.hangup()
    return str(response)


# -- placing the calls ----------------------------------------------------------------------


@dataclass(frozen=True)
class OpenEmergency:
    """An emergency still waiting for a person (the caller decides which are)."""

    tenant_id: int
    conversation_id: int
    opened_at: datetime
    acknowledged: bool = False
    hazard: str | None = None
    place: dict[str, str] = field(default_factory=dict)  # {"building": ...} or {"street": ...}


@dataclass(frozen=True)
class PlacedCall:
    conversation_id: int
    oncall_id: int
    round: int
    sequence: int
    call_sid: str | None
    outcome: CallOutcome


@dataclass(frozen=True)
class _Claim:
    row_id: int
    call: NextCall
    call_from: str
    summary: str


def run_escalation(
    svc: Services, now: datetime, emergencies: Iterable[OpenEmergency]
) -> list[PlacedCall]:
    """Place every call that is due now for ``emergencies``; returns what was placed."""
    placed: list[PlacedCall] = []
    for emergency in emergencies:
        claim = _claim_next_call(svc, now, emergency)
        if claim is not None:
            placed.append(_place(svc, emergency, claim))
    return placed


def _claim_next_call(svc: Services, now: datetime, emergency: OpenEmergency) -> _Claim | None:
    try:
        with svc.db.session() as session:
            tenant = session.get(Tenant, emergency.tenant_id)
            if tenant is None or tenant.terminated_at is not None:
                return None
            settings = emergency_settings(tenant)
            rows = list(
                session.scalars(
                    select(EscalationCall)
                    .where(
                        EscalationCall.tenant_id == emergency.tenant_id,
                        EscalationCall.conversation_id == emergency.conversation_id,
                    )
                    .order_by(EscalationCall.sequence)
                )
            )
            # Calls before this emergency opened belong to an earlier one.
            this_one = [row for row in rows if row.placed_at >= emergency.opened_at]
            acknowledged = emergency.acknowledged or any(
                row.outcome == CallOutcome.ACKNOWLEDGED for row in this_one
            )
            call = plan_escalation(
                now,
                emergency.opened_at,
                acknowledged,
                rota(session, emergency.tenant_id),
                settings["ack_seconds"],
                settings["rounds"],
                [CallMade(row.placed_at, row.outcome == CallOutcome.FAILED) for row in this_one],
            )
            if call is None:
                return None
            row = EscalationCall(
                tenant_id=emergency.tenant_id,
                conversation_id=emergency.conversation_id,
                oncall_id=call.person.id,
                sequence=(rows[-1].sequence + 1) if rows else 0,
                round=call.round,
                hazard=emergency.hazard,
                place=where_phrase(emergency.place) or None,
                placed_at=now,
                outcome=CallOutcome.CLAIMED,
            )
            session.add(row)
            session.flush()
            summary = spoken_summary(tenant.name, emergency.hazard, row.place or "")
            return _Claim(row.id, call, settings["call_from"], summary)
    except IntegrityError:
        log.info("escalation call for conversation %s claimed elsewhere", emergency.conversation_id)
        return None


def _place(svc: Services, emergency: OpenEmergency, claim: _Claim) -> PlacedCall:
    twiml = call_twiml(str(svc.config["PUBLIC_BASE_URL"]), claim.summary)
    call_sid: str | None = None
    try:
        receipt = svc.transport.call(CallRequest(claim.call.person.phone, claim.call_from, twiml))
    except SendError as error:
        log.warning("escalation call refused (status %s, code %s)", error.status, error.code)
        outcome = CallOutcome.FAILED
    else:
        call_sid, outcome = receipt.provider_sid, CallOutcome.PLACED
    with svc.db.session() as session:
        row = session.get(EscalationCall, claim.row_id)
        assert row is not None
        row.call_sid = call_sid
        row.outcome = outcome
        record_audit(
            session,
            emergency.tenant_id,
            "escalation.call",
            actor="system",
            target_type="conversation",
            target_id=emergency.conversation_id,
            detail={
                "oncall_id": claim.call.person.id,
                "round": claim.call.round,
                "sequence": row.sequence,
                "outcome": outcome,
                "call_sid": call_sid,
            },
        )
        sequence = row.sequence
    return PlacedCall(
        conversation_id=emergency.conversation_id,
        oncall_id=claim.call.person.id,
        round=claim.call.round,
        sequence=sequence,
        call_sid=call_sid,
        outcome=outcome,
    )


def escalate_unacknowledged(svc: Services, now: datetime) -> list[PlacedCall]:
    """Call the on-call people about every emergency nobody has acknowledged (the
    worker's housekeeping runs this every few seconds; each call is placed once)."""
    with svc.db.read() as session:
        waiting = unacknowledged_emergencies(session, now)
    oldest: dict[int, UnacknowledgedEmergency] = {}
    for emergency in waiting:
        # Two reports on one conversation are one case to call about, from the first.
        if emergency.conversation_id is not None:
            oldest.setdefault(emergency.conversation_id, emergency)
    return run_escalation(
        svc,
        now,
        [
            OpenEmergency(
                tenant_id=e.tenant_id,
                conversation_id=conversation_id,
                opened_at=e.opened_at,
                hazard=e.hazard,
                place=e.place,
            )
            for conversation_id, e in oldest.items()
        ],
    )


# -- the callee's key ---------------------------------------------------------------------------


def on_keypress_ack(svc: Services, call_sid: str, digits: str) -> bool:
    """The callee of ``call_sid`` pressed ``digits``: True if that acknowledges its emergency.

    Recorded on the call's row and audited once, however often Twilio repeats the press.
    """
    if digits.strip() != ACK_DIGIT:
        return False
    with svc.db.session() as session:
        row = session.scalar(select(EscalationCall).where(EscalationCall.call_sid == call_sid))
        if row is None:
            return False
        tenant_id, conversation_id = row.tenant_id, row.conversation_id
        who = f"oncall:{row.oncall_id}" if row.oncall_id else "oncall"
        if row.outcome != CallOutcome.ACKNOWLEDGED:
            row.outcome = CallOutcome.ACKNOWLEDGED
            row.acknowledged_at = utcnow()
            record_audit(
                session,
                row.tenant_id,
                "escalation.acknowledged",
                actor=f"oncall:{row.oncall_id}" if row.oncall_id else "oncall",
                target_type="conversation",
                target_id=row.conversation_id,
                detail={
                    "call_sid": call_sid,
                    "oncall_id": row.oncall_id,
                    "round": row.round,
                    "sequence": row.sequence,
                },
            )
    # The case itself: acknowledged, on its timeline, for the console and everyone else.
    try:
        acknowledge_emergency(
            svc, tenant_id, conversation_id, actor=who, user_id=None, via=AckVia.VOICE
        )
    except NotFound:
        log.info("keypress for conversation %s, which no longer exists", conversation_id)
    return True


def answer_keypress(svc: Services, call_sid: str, digits: str, attempt: int) -> str:
    """The TwiML that answers a press: thanks for a 1, the message once more for a wrong
    key, goodbye after that or for a call we do not know."""
    if on_keypress_ack(svc, call_sid, digits):
        return _said(ACKNOWLEDGED_TEXT)
    with svc.db.read() as session:
        found = session.execute(
            select(EscalationCall.hazard, EscalationCall.place, Tenant.name)
            .join(Tenant, Tenant.id == EscalationCall.tenant_id)
            .where(EscalationCall.call_sid == call_sid)
        ).first()
    if found is None:
        return _said(UNKNOWN_CALL_TEXT)
    if attempt >= MAX_ATTEMPTS:
        return _said(GOODBYE_TEXT)
    hazard, place, office = found
    summary = spoken_summary(office, hazard, place or "")
    response = VoiceResponse()
    response.say(WRONG_KEY_TEXT, language=LANGUAGE)
    response.append(_gather(str(svc.config["PUBLIC_BASE_URL"]), summary, attempt + 1))
    response.say(GOODBYE_TEXT, language=LANGUAGE)
    return str(response)
