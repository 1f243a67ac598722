"""The conversation's rules as one plain function: given what we know, what to do.

:func:`plan_turn` reads plain data (the contact's consent, the conversation's mode,
the keyword, the prediction, the sensitive findings) and returns a :class:`Plan`.
It does no I/O, so every rule here is tested without HTTP, database or model;
:mod:`bot.conversation.engine` carries the plan out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bot.conversation.keywords import KeywordMatch
from storage.vocabulary import (
    Action,
    Channel,
    Consent,
    Handoff,
    KeywordKind,
    LedgerEvent,
    LegalBasis,
    Mode,
    Purpose,
    TicketKind,
    WorkOrderAnswer,
)

# Below this the classifier is not trusted with an action.
LOW_CONFIDENCE = 0.5

TICKET_KIND = {
    "guasto": TicketKind.GUASTO,
    "preventivo": TicketKind.PREVENTIVO,
    "fattura_pagamento": TicketKind.AMMINISTRAZIONE,
    "documenti": TicketKind.DOCUMENTI,
    "assemblea": TicketKind.ASSEMBLEA,
}
TICKET_ACTION = {
    TicketKind.GUASTO: Action.TICKET_GUASTO,
    TicketKind.PREVENTIVO: Action.TICKET_PREVENTIVO,
    TicketKind.AMMINISTRAZIONE: Action.TICKET_AMMINISTRAZIONE,
    TicketKind.DOCUMENTI: Action.TICKET_DOCUMENTI,
    TicketKind.ASSEMBLEA: Action.TICKET_ASSEMBLEA,
}

# Safety rules of intents.safety -> the advice that fits them; a rule missing here
# (a new one, or none at all) gets the generic emergency advice.
EMERGENCY_REPLY = {
    "gas_smell": "emergency_gas",
    "fire": "emergency_fire",
    "smoke": "emergency_fire",
    "flooding": "emergency_flood",
    "person_trapped": "emergency_trapped",
    "break_in": "emergency_break_in",
    "electrical": "emergency_electrical",
    "sparks": "emergency_electrical",
    "structural": "emergency_structural",
    "falling_masonry": "emergency_structural",
    "person_unresponsive": "emergency_unresponsive",
    "carbon_monoxide": "emergency_carbon_monoxide",
}
GENERIC_EMERGENCY_REPLY = "emergency"

# Replies that acknowledge a request: out of hours they also say when the office
# reopens and what to do in an emergency. (A greeting or a question is not one.)
ACKNOWLEDGEMENTS = frozenset(
    {
        "handoff",
        "ack_generic",
        "ack_guasto",
        "ack_preventivo",
        "ack_fattura_pagamento",
        "ack_appuntamento",
        "ack_documenti",
        "ack_assemblea",
        "ack_intervento_completato",
        "ask_building_list",
        "ask_building_address",
        "building_given",
        "building_not_found",
    }
)
# How the bot asks a fault's building: from the contact's buildings by number, or
# (knowing none of theirs) by the address. None: known, or the office has no buildings.
ASK_FROM_LIST, ASK_ADDRESS = "list", "address"
OUT_OF_HOURS = "out_of_hours"


@dataclass(frozen=True)
class Understanding:
    intent: str
    confidence: float
    safety_rule: str | None = None


@dataclass(frozen=True)
class Turn:
    """One inbound message, reduced to what the rules need."""

    consent: Consent
    legal_basis: LegalBasis | None
    mode: Mode
    clarifications: int
    keyword: KeywordMatch | None
    opt_out_type: str | None  # Twilio Advanced Opt-Out: STOP, START, HELP
    sensitive_kinds: tuple[str, ...] = ()
    understanding: Understanding | None = None
    has_text: bool = True
    office_open: bool = True  # False: out of the office's hours (bot.office.hours)
    # The office's world: how a fault's building would be asked (ASK_*), whether the bot
    # asked it and the answer named one, a supplier's answer to a work order, and a
    # question about the office (bot.conversation.office_info).
    building_question: str | None = None
    awaiting_building: bool = False
    building_found: bool = False
    work_order_answer: WorkOrderAnswer | None = None
    office_topic: str | None = None
    confirms_solved: bool = False  # "risolto" after their fault's work was done


@dataclass(frozen=True)
class Reply:
    key: str  # a text in bot.conversation.replies
    purpose: str  # what the outbound gate is told
    suffix: str | None = None  # another text added to the same message (out of hours)


@dataclass
class Plan:
    actions: list[Action]
    replies: list[Reply] = field(default_factory=list)
    ledger: list[LedgerEvent] = field(default_factory=list)
    ledger_channel: Channel = Channel.WHATSAPP
    handoff: Handoff | None = None  # why a human is needed
    urgent: bool = False
    ticket: TicketKind | None = None  # ticket kind to open
    hazard: str | None = None  # an emergency's safety rule, recorded on its ticket
    # The safety reply goes to someone without consent: its basis is vital interests.
    vital_interests: bool = False
    appointment: bool = False
    work_done: bool = False
    clarification: bool = False
    understand_rest: bool = False  # an acceptance carried a message: handle it too
    ask_building: bool = False  # the fault's ticket waits for the resident's building
    building_answer: bool | None = None  # True: filed under it; False: not found
    notices: bool | None = None  # AVVISI SI (True) / AVVISI NO (False)
    work_order_answer: WorkOrderAnswer | None = None
    office_topic: str | None = None
    confirmed_solved: bool = False

    @property
    def action(self) -> str:
        """What the bot log records: one action, or two joined by ``+``."""
        return "+".join(self.actions)

    def say(self, key: str, purpose: Purpose = Purpose.REPLY) -> None:
        self.replies.append(Reply(key, purpose))

    def merge(self, rest: Plan) -> None:
        """Add what the message after an acceptance asks for to the acceptance's plan."""
        self.actions.extend(rest.actions)
        self.replies.extend(rest.replies)
        self.handoff = rest.handoff or self.handoff
        self.urgent = self.urgent or rest.urgent
        self.ticket = rest.ticket or self.ticket
        self.hazard = rest.hazard or self.hazard
        self.appointment = self.appointment or rest.appointment
        self.work_done = self.work_done or rest.work_done
        self.clarification = self.clarification or rest.clarification
        self.ask_building = self.ask_building or rest.ask_building
        self.building_answer = rest.building_answer
        self.notices = rest.notices
        self.work_order_answer = rest.work_order_answer
        self.office_topic = rest.office_topic
        self.confirmed_solved = rest.confirmed_solved


def _plan(action: Action, *ledger: LedgerEvent, channel: Channel = Channel.WHATSAPP) -> Plan:
    return Plan(actions=[action], ledger=list(ledger), ledger_channel=channel)


def may_be_served(consent: Consent, legal_basis: LegalBasis | None) -> bool:
    """Whether the bot may act on the contact's messages beyond consent keywords."""
    if consent == Consent.WITHDRAWN:
        return False
    return consent == Consent.GRANTED or legal_basis not in (None, LegalBasis.CONSENT)


def plan_turn(turn: Turn) -> Plan:
    """What to do with one message: replies, ledger events, handoff, ticket, event."""
    plan = _plan_keyword_or_message(turn)
    if plan.understand_rest:
        # "Sì, ma il citofono non va": accepted, then the rest is a message like any other.
        plan.merge(_plan_keyword_or_message(replace(turn, consent=Consent.GRANTED, keyword=None)))
    # Safety advice is the first thing that goes out, before a welcome, a notice, a
    # consent confirmation or a reminder about sensitive data (a stable sort).
    plan.replies.sort(key=lambda reply: reply.purpose != Purpose.SAFETY)
    if not turn.office_open:
        plan.replies = [
            replace(reply, suffix=OUT_OF_HOURS) if reply.key in ACKNOWLEDGEMENTS else reply
            for reply in plan.replies
        ]
    return plan


def _plan_keyword_or_message(turn: Turn) -> Plan:
    if turn.opt_out_type:
        return _provider_opt_out(turn)
    keyword = turn.keyword.kind if turn.keyword else None
    if keyword == KeywordKind.WITHDRAW:
        plan = _plan(Action.CONSENT_WITHDRAWN, LedgerEvent.WITHDRAWN)
        if turn.consent != Consent.WITHDRAWN:
            plan.say("withdrawn", Purpose.WITHDRAWAL_CONFIRMATION)
        return plan
    if keyword == KeywordKind.ACCEPT:
        return _accept(turn)
    if keyword == KeywordKind.ACCESS:
        plan = _plan(Action.ACCESS_REQUESTED, LedgerEvent.ACCESS_REQUESTED)
        plan.say("access_requested", Purpose.RIGHTS)
        return plan
    if keyword == KeywordKind.ERASURE:
        plan = _plan(Action.ERASURE_REQUESTED, LedgerEvent.ERASURE_REQUESTED)
        plan.say("erasure_requested", Purpose.RIGHTS)
        return plan
    if turn.consent == Consent.WITHDRAWN:
        if _is_emergency(turn.understanding):
            return _emergency_after_withdrawal(turn)
        # They may write; we may not answer. Operators still see it.
        return _plan(Action.STORED_WITHDRAWN)
    if keyword == KeywordKind.PRIVACY:
        plan = _plan(Action.NOTICE_RESENT, LedgerEvent.NOTICE_SENT)
        plan.say("notice", Purpose.NOTICE)
        return plan
    if keyword == KeywordKind.HELP:
        plan = _plan(Action.HELP)
        plan.say("help", Purpose.NOTICE)
        return plan
    if not may_be_served(turn.consent, turn.legal_basis):
        return _before_consent(turn)
    return _served(turn, keyword)


def _provider_opt_out(turn: Turn) -> Plan:
    # Twilio has already answered the keyword itself: record, never answer twice.
    kind = turn.opt_out_type
    if kind == "STOP":
        return _plan(
            Action.CONSENT_WITHDRAWN, LedgerEvent.WITHDRAWN, channel=Channel.TWILIO_ADVANCED_OPT_OUT
        )
    if kind == "START":
        return _plan(
            Action.CONSENT_GRANTED, LedgerEvent.GRANTED, channel=Channel.TWILIO_ADVANCED_OPT_OUT
        )
    return _plan(Action.PROVIDER_KEYWORD)


def _accept(turn: Turn) -> Plan:
    if turn.consent == Consent.NONE:
        # Acceptance must be informed: show the notice first, then ask again.
        plan = _plan(Action.WELCOME, LedgerEvent.NOTICE_SENT)
        plan.say("welcome", Purpose.WELCOME)
        return plan
    carries_message = bool(turn.keyword and turn.keyword.rest)
    if turn.consent == Consent.GRANTED:
        plan = _plan(Action.ALREADY_GRANTED)
        if not carries_message:
            plan.say("already_granted")
    else:
        plan = _plan(Action.CONSENT_GRANTED, LedgerEvent.GRANTED)
        plan.say("granted", Purpose.CONSENT_CONFIRMATION)
    plan.understand_rest = carries_message
    return plan


def _is_emergency(understanding: Understanding | None) -> bool:
    return understanding is not None and understanding.intent == "emergenza"


def _safety_reply(understanding: Understanding) -> str:
    return EMERGENCY_REPLY.get(understanding.safety_rule or "", GENERIC_EMERGENCY_REPLY)


def _raise_emergency(plan: Plan, understanding: Understanding) -> Plan:
    """An urgent handoff and an emergency ticket: the case an operator must acknowledge."""
    plan.handoff, plan.urgent = Handoff.EMERGENCY, True
    plan.ticket, plan.hazard = TicketKind.EMERGENCY, understanding.safety_rule
    return plan


def _vital_interests_advice(plan: Plan, understanding: Understanding) -> None:
    # Someone who has not accepted the channel (or withdrew) gets the safety advice on
    # the basis of their vital interests (art. 6(1)(d), 9(2)(c) GDPR): the ledger says so.
    plan.say(_safety_reply(understanding), Purpose.SAFETY)
    plan.ledger.append(LedgerEvent.VITAL_INTERESTS_REPLY)
    plan.vital_interests = True


def _emergency_in_human_mode(understanding: Understanding) -> Plan:
    # A human holds the conversation: alert them, the bot stays silent.
    return _raise_emergency(_plan(Action.EMERGENCY_IN_HUMAN_MODE), understanding)


def _emergency_after_withdrawal(turn: Turn) -> Plan:
    """A withdrawn contact reports an emergency: the one safety reply, nothing else."""
    assert turn.understanding is not None
    if turn.mode == Mode.HUMAN:
        return _emergency_in_human_mode(turn.understanding)
    plan = _plan(Action.EMERGENCY_AFTER_WITHDRAWAL)
    _vital_interests_advice(plan, turn.understanding)
    return _raise_emergency(plan, turn.understanding)


def _before_consent(turn: Turn) -> Plan:
    understanding = turn.understanding
    if understanding is not None and _is_emergency(understanding):
        if turn.mode == Mode.HUMAN:
            return _emergency_in_human_mode(understanding)
        plan = _plan(Action.EMERGENCY_BEFORE_CONSENT)
        _vital_interests_advice(plan, understanding)
        if turn.consent == Consent.NONE:
            # The notice is still due on a first contact; it follows the advice. (A
            # reminder to accept would read as "no help until you do": not sent.)
            plan.ledger.append(LedgerEvent.NOTICE_SENT)
            plan.say("welcome", Purpose.WELCOME)
        return _raise_emergency(plan, understanding)
    if turn.consent == Consent.NONE:
        plan = _plan(Action.WELCOME, LedgerEvent.NOTICE_SENT)
        plan.say("welcome", Purpose.WELCOME)
    else:
        plan = _plan(Action.CONSENT_REMINDER)
        plan.say("reminder", Purpose.NOTICE)
    return plan


def _served(turn: Turn, keyword: KeywordKind | None) -> Plan:
    understanding = turn.understanding
    if turn.mode == Mode.HUMAN:
        if understanding is not None and _is_emergency(understanding):
            return _emergency_in_human_mode(understanding)
        return _plan(Action.HUMAN_MODE)
    plan = Plan(actions=[])
    if turn.sensitive_kinds:
        plan.say("sensitive")
    if keyword in (KeywordKind.NOTICES_ON, KeywordKind.NOTICES_OFF):
        plan.notices = keyword == KeywordKind.NOTICES_ON
        plan.actions = [Action.NOTICES_ON if plan.notices else Action.NOTICES_OFF]
        plan.say("notices_on" if plan.notices else "notices_off")
        return plan
    if turn.work_order_answer is not None:
        # A supplier answers an ordine di lavoro (a button, or typed words).
        plan.actions, plan.work_order_answer = [Action.WORK_ORDER_ANSWER], turn.work_order_answer
        plan.say(f"work_order_{turn.work_order_answer}")
        return plan
    if turn.confirms_solved:
        plan.actions, plan.confirmed_solved = [Action.RESOLVED_CONFIRMED], True
        plan.say("resolved_thanks")
        return plan
    if turn.awaiting_building and _answers_building_question(turn):
        plan.building_answer = turn.building_found
        if turn.building_found:
            plan.actions = [Action.BUILDING_GIVEN]
            plan.say("building_given")
        else:
            plan.actions = [Action.STORED]
            plan.say("building_not_found")
        return plan
    if keyword == KeywordKind.OPERATOR:
        plan.actions, plan.handoff = [Action.HANDOFF], Handoff.OPERATOR_REQUEST
        plan.say("handoff")
        return plan
    if understanding is None:
        plan.actions = [Action.STORED if turn.has_text else Action.MEDIA_RECEIVED]
        if not turn.has_text:
            plan.say("ack_generic")
        return plan
    _act_on_intent(plan, turn, understanding)
    return plan


def _answers_building_question(turn: Turn) -> bool:
    """After "which building?": a building named, or words that are no request of their
    own (an emergency or a clear new request is handled as such)."""
    if turn.building_found:
        return True
    understanding = turn.understanding
    return understanding is None or (
        understanding.intent == "altro" or understanding.confidence < LOW_CONFIDENCE
    )


def _act_on_intent(plan: Plan, turn: Turn, understanding: Understanding) -> None:
    intent = understanding.intent
    if turn.office_topic is not None:
        # Asked about the office (its hours, address, PEC, a building's emergency
        # number): answered from its settings. office_info never reads a hazard so.
        plan.actions, plan.office_topic = [Action.OFFICE_INFO], turn.office_topic
        plan.say("office_info")
        return
    if _is_emergency(understanding):
        plan.actions = [Action.EMERGENCY_HANDOFF]
        plan.say(_safety_reply(understanding), Purpose.SAFETY)
        _raise_emergency(plan, understanding)
        return
    if intent == "richiesta_operatore":
        plan.actions, plan.handoff = [Action.HANDOFF], Handoff.OPERATOR_REQUEST
        plan.say("handoff")
        return
    if intent == "altro" or understanding.confidence < LOW_CONFIDENCE:
        if turn.clarifications >= 1:
            plan.actions = [Action.HANDOFF_AFTER_CLARIFICATION]
            plan.handoff = Handoff.NOT_UNDERSTOOD
            plan.say("handoff")
        else:
            plan.actions, plan.clarification = [Action.CLARIFY], True
            plan.say("clarify")
        return
    if intent in TICKET_KIND:
        plan.ticket = TICKET_KIND[intent]
        plan.actions = [TICKET_ACTION[plan.ticket]]
        if plan.ticket == TicketKind.GUASTO and turn.building_question is not None:
            plan.ask_building = True
            plan.say(f"ask_building_{turn.building_question}")
            return
    elif intent == "appuntamento":
        plan.actions, plan.appointment = [Action.EVENT], True
    elif intent == "intervento_completato":
        plan.actions, plan.work_done = [Action.TICKET_WORK_DONE], True
    else:
        plan.actions = [Action.ACKNOWLEDGED]
    plan.say(f"ack_{intent}")
