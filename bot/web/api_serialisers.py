"""The JSON API's shapes: one function per resource, used by every view that shows it.

The shapes are a contract with the office's CRM (the design's table of calls): fields
may be added, never renamed or dropped. Times are ISO 8601 UTC with a ``Z``; bodies and
evidence are decrypted here, at the last moment, and nowhere else in the API.
"""

from __future__ import annotations

from typing import Any

from bot.office.buildings import place_json
from storage.crypto import BodyCipher
from storage.models import (
    BotLogEntry,
    Building,
    ConsentEvent,
    Contact,
    Conversation,
    Message,
    Ticket,
    WorkOrder,
    iso_utc,
)

__all__ = [
    "bot_log_json",
    "building_json",
    "consent_event_json",
    "contact_json",
    "conversation_json",
    "message_json",
    "ticket_json",
    "work_order_json",
]


def contact_json(contact: Contact) -> dict[str, Any]:
    return {
        "id": contact.id,
        "phone": contact.phone,
        "kind": contact.kind,
        "legal_basis": contact.legal_basis,
        "consent": contact.consent,
        "source": contact.source,
        "last_contact_at": iso_utc(contact.last_contact_at),
        "name": contact.name,
        "trade": contact.trade,
        "buildings": [link.building.code for link in contact.building_links],
        # The person's role: the first one the office gave for a building.
        "role": next((link.role for link in contact.building_links if link.role), None),
        "places": [place_json(link) for link in contact.building_links],
    }


def building_json(building: Building) -> dict[str, Any]:
    return {
        "id": building.id,
        "code": building.code,
        "name": building.name,
        "address": building.address,
    }


def consent_event_json(event: ConsentEvent, cipher: BodyCipher) -> dict[str, Any]:
    return {
        "id": event.id,
        "event": event.event,
        "at": iso_utc(event.at),
        "channel": event.channel,
        "actor": event.actor,
        "evidence": {
            "text": cipher.decrypt(event.evidence_text) if event.evidence_text else None,
            "message_sid": event.evidence_message_sid,
            "sha256": event.evidence_sha256,
        },
        "notice_version": event.notice_version,
        "notice_sha256": event.notice_sha256,
    }


def conversation_json(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "contact_id": conversation.contact_id,
        "mode": conversation.mode,
        "priority": conversation.priority,
        "needs_attention": conversation.needs_attention,
        "status": conversation.status,
        "last_message_at": iso_utc(conversation.last_message_at),
    }


def message_json(message: Message, cipher: BodyCipher) -> dict[str, Any]:
    return {
        "id": message.id,
        "provider_sid": message.provider_sid,
        "direction": message.direction,
        "body": cipher.decrypt(message.body) if message.body else None,
        "status": message.status,
        "intent": message.intent,
        "sensitive": message.sensitive_kinds,
        "at": iso_utc(message.created_at),
    }


def ticket_json(ticket: Ticket, cipher: BodyCipher) -> dict[str, Any]:
    return {
        "id": ticket.id,
        "kind": ticket.kind,
        "intent": ticket.intent,
        "status": ticket.status,
        "conversation_id": ticket.conversation_id,
        "entities": ticket.entities,
        # An emergency's: the safety rule that fired, and when someone took charge.
        "hazard": ticket.hazard,
        "acknowledged_at": iso_utc(ticket.acknowledged_at),
        "created_at": iso_utc(ticket.created_at),
        "updated_at": iso_utc(ticket.updated_at),
        # The office's work item.
        "contact_id": ticket.contact_id,
        "building": ticket.building.code if ticket.building else None,
        "scala": ticket.unit.scala if ticket.unit else None,
        "interno": ticket.unit.interno if ticket.unit else None,
        "description": cipher.decrypt(ticket.description) if ticket.description else None,
        "priority": ticket.priority,
        "assignee": ticket.assignee.email if ticket.assignee else None,
        "supplier": ticket.supplier.phone if ticket.supplier else None,
        "due_at": iso_utc(ticket.due_at),
        "work_orders": [{"id": w.id, "status": w.status} for w in ticket.work_orders],
    }


def work_order_json(order: WorkOrder, events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": order.id,
        "ticket_id": order.ticket_id,
        "supplier": order.supplier.phone if order.supplier else None,
        "status": order.status,
        "proposed_at": iso_utc(order.proposed_at),
        "created_at": iso_utc(order.created_at),
        "updated_at": iso_utc(order.updated_at),
        "events": events,
    }


def bot_log_json(entry: BotLogEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": iso_utc(entry.at),
        "message_id": entry.message_id,
        "intent": entry.intent,
        "confidence": entry.confidence,
        "action": entry.action,
        "model_version": entry.model_version,
        "safety_rule": entry.safety_rule,
        "duration_ms": entry.duration_ms,
    }
