"""The conversation's rules as one plain function: given what we know, what to do.

:func:`plan_turn` reads plain data (the contact's consent, the conversation's mode,
the keyword, the prediction, the sensitive findings) and returns a :class:`Plan`.
It does no I/O, so every rule here is tested without HTTP, database or model;
:mod:`bot.conversation.engine` carries the plan out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.conversation.keywords import KeywordMatch

# Below this the classifier is not trusted with an action.
LOW_CONFIDENCE = 0.5

TICKET_KIND = {
    "guasto": "guasto",
    "preventivo": "preventivo",
    "fattura_pagamento": "amministrazione",
    "documenti": "documenti",
    "assemblea": "assemblea",
}

# Safety rules of intents.safety -> the advice that fits them.
EMERGENCY_REPLY = {
    "gas_smell": "emergency_gas",
    "fire": "emergency_fire",
    "smoke": "emergency_fire",
    "flooding": "emergency_flood",
    "person_trapped": "emergency_trapped",
}


@dataclass(frozen=True)
class Understanding:
    intent: str
    confidence: float
    safety_rule: str | None = None


@dataclass(frozen=True)
class Turn:
    """One inbound message, reduced to what the rules need."""

    consent: str  # none, pending, granted, withdrawn
    legal_basis: str | None
    mode: str  # bot or human
    clarifications: int
    keyword: KeywordMatch | None
    opt_out_type: str | None  # Twilio Advanced Opt-Out: STOP, START, HELP
    sensitive_kinds: tuple[str, ...] = ()
    understanding: Understanding | None = None
    has_text: bool = True


@dataclass(frozen=True)
class Reply:
    key: str  # a text in bot.conversation.replies
    purpose: str  # what the outbound gate is told


@dataclass
class Plan:
    action: str
    replies: list[Reply] = field(default_factory=list)
    ledger: list[str] = field(default_factory=list)
    ledger_channel: str = "whatsapp"
    handoff: str | None = None  # why a human is needed
    urgent: bool = False
    ticket: str | None = None  # ticket kind to open
    appointment: bool = False
    work_done: bool = False
    clarification: bool = False
    understand_rest: bool = False  # an acceptance carried a message: handle it too

    def say(self, key: str, purpose: str = "reply") -> None:
        self.replies.append(Reply(key, purpose))


def may_be_served(consent: str, legal_basis: str | None) -> bool:
    """Whether the bot may act on the contact's messages beyond consent keywords."""
    if consent == "withdrawn":
        return False
    return consent == "granted" or legal_basis not in (None, "consent")


def plan_turn(turn: Turn) -> Plan:
    if turn.opt_out_type:
        return _provider_opt_out(turn)
    keyword = turn.keyword.kind if turn.keyword else None
    if keyword == "withdraw":
        plan = Plan(action="consent_withdrawn", ledger=["withdrawn"])
        if turn.consent != "withdrawn":
            plan.say("withdrawn", "withdrawal_confirmation")
        return plan
    if keyword == "accept":
        return _accept(turn)
    if keyword in ("access", "erasure"):
        plan = Plan(action=f"{keyword}_requested", ledger=[f"{keyword}_requested"])
        plan.say(f"{keyword}_requested", "rights")
        return plan
    if turn.consent == "withdrawn":
        # They may write; we may not answer. Operators still see it.
        return Plan(action="stored_withdrawn")
    if keyword == "privacy":
        plan = Plan(action="notice_resent", ledger=["notice_sent"])
        plan.say("notice", "notice")
        return plan
    if keyword == "help":
        plan = Plan(action="help")
        plan.say("help", "notice")
        return plan
    if not may_be_served(turn.consent, turn.legal_basis):
        return _before_consent(turn)
    return _served(turn, keyword)


def _provider_opt_out(turn: Turn) -> Plan:
    # Twilio has already answered the keyword itself: record, never answer twice.
    kind = turn.opt_out_type
    if kind == "STOP":
        return Plan(
            action="consent_withdrawn",
            ledger=["withdrawn"],
            ledger_channel="twilio_advanced_opt_out",
        )
    if kind == "START":
        return Plan(
            action="consent_granted", ledger=["granted"], ledger_channel="twilio_advanced_opt_out"
        )
    return Plan(action="provider_keyword")


def _accept(turn: Turn) -> Plan:
    if turn.consent == "none":
        # Acceptance must be informed: show the notice first, then ask again.
        plan = Plan(action="welcome", ledger=["notice_sent"])
        plan.say("welcome", "welcome")
        return plan
    if turn.consent == "granted":
        plan = Plan(action="already_granted")
        if not (turn.keyword and turn.keyword.rest):
            plan.say("already_granted")
        plan.understand_rest = bool(turn.keyword and turn.keyword.rest)
        return plan
    plan = Plan(action="consent_granted", ledger=["granted"])
    plan.say("granted", "consent_confirmation")
    plan.understand_rest = bool(turn.keyword and turn.keyword.rest)
    return plan


def _before_consent(turn: Turn) -> Plan:
    if turn.consent == "none":
        plan = Plan(action="welcome", ledger=["notice_sent"])
        plan.say("welcome", "welcome")
    else:
        plan = Plan(action="consent_reminder")
        plan.say("reminder", "notice")
    emergency = turn.understanding and turn.understanding.intent == "emergenza"
    if emergency:
        # Vital interests (art. 6(1)(d) GDPR): safety advice and a human, consent or not.
        assert turn.understanding is not None
        plan.say(EMERGENCY_REPLY.get(turn.understanding.safety_rule or "", "emergency"), "safety")
        plan.handoff, plan.urgent, plan.action = "emergency", True, "emergency_before_consent"
    return plan


def _served(turn: Turn, keyword: str | None) -> Plan:
    understanding = turn.understanding
    emergency = understanding is not None and understanding.intent == "emergenza"
    if turn.mode == "human" and not emergency:
        return Plan(action="human_mode")
    plan = Plan(action="")
    if turn.sensitive_kinds:
        plan.say("sensitive")
    if keyword == "operator":
        plan.action, plan.handoff = "handoff", "operator_request"
        plan.say("handoff")
        return plan
    if understanding is None:
        plan.action = "stored" if turn.has_text else "media_received"
        if not turn.has_text:
            plan.say("ack_generic")
        return plan
    if turn.mode == "human":
        # A human holds the conversation: alert them, the bot stays silent.
        return Plan(action="emergency_in_human_mode", handoff="emergency", urgent=True)
    _act_on_intent(plan, turn, understanding)
    return plan


def _act_on_intent(plan: Plan, turn: Turn, understanding: Understanding) -> None:
    intent = understanding.intent
    if intent == "emergenza":
        plan.action, plan.handoff, plan.urgent = "emergency_handoff", "emergency", True
        plan.say(EMERGENCY_REPLY.get(understanding.safety_rule or "", "emergency"), "safety")
        return
    if intent == "richiesta_operatore":
        plan.action, plan.handoff = "handoff", "operator_request"
        plan.say("handoff")
        return
    if intent == "altro" or understanding.confidence < LOW_CONFIDENCE:
        if turn.clarifications >= 1:
            plan.action, plan.handoff = "handoff_after_clarification", "not_understood"
            plan.say("handoff")
        else:
            plan.action, plan.clarification = "clarify", True
            plan.say("clarify")
        return
    if intent in TICKET_KIND:
        plan.action, plan.ticket = f"ticket_{TICKET_KIND[intent]}", TICKET_KIND[intent]
    elif intent == "appuntamento":
        plan.action, plan.appointment = "event", True
    elif intent == "intervento_completato":
        plan.action, plan.work_done = "ticket_work_done", True
    else:
        plan.action = "acknowledged"
    plan.say(f"ack_{intent}")
