"""Outbound webhooks to the office's CRM: signed, retried, ordered, replayable.

* :mod:`bot.crm.endpoints`: the office's endpoints, the URL and address rules, secrets
  and their rotation.
* :mod:`bot.crm.events`: the outbox; :func:`record_event` and the emitters that the
  engine, the status callbacks and the console call inside their transactions.
* :mod:`bot.crm.delivery`: the workers' dispatcher (leases, backoff, order per
  conversation, disabling an endpoint that keeps failing).
* :mod:`bot.crm.history`: the delivery log and replays.

The HTTP request and its signature are :mod:`notify.crm`'s.
"""

from __future__ import annotations

from bot.crm.events import (
    Endpoint,
    events_past_term,
    forget_contact,
    office_endpoints,
    purge_events,
    record_acknowledged,
    record_event,
    record_message_status,
    record_ticket_change,
    record_turn,
)

__all__ = [
    "Endpoint",
    "forget_contact",
    "office_endpoints",
    "events_past_term",
    "purge_events",
    "record_acknowledged",
    "record_event",
    "record_message_status",
    "record_ticket_change",
    "record_turn",
]
