"""The single way out: the outbound gate (may this message go?) and the sending of
recorded messages, exactly once, through a transport."""

from bot.outbound.gate import GateDecision, Outgoing, Template, check_outbound, evaluate
from bot.outbound.send import (
    Envelope,
    ReadySend,
    SendOutcome,
    deliver,
    queue_message,
    ready_send,
    record_outgoing,
    send_message,
)

__all__ = [
    "Envelope",
    "GateDecision",
    "Outgoing",
    "ReadySend",
    "SendOutcome",
    "Template",
    "check_outbound",
    "deliver",
    "evaluate",
    "queue_message",
    "ready_send",
    "record_outgoing",
    "send_message",
]
