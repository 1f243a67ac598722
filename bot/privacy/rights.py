"""Data-subject rights and the office's own exports: access, portability, erasure.

Erasure deletes the contact, their conversations, messages, media files, tickets and
events. The consent ledger is kept as it is: it proves what the person agreed to and
when (art. 7(1) GDPR), names them only by a keyed hash once the contact is gone, and
holds the keyword they sent or their message redacted, with its SHA-256 (see
:func:`bot.privacy.consent.message_evidence`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bot.exceptions import NotFound
from bot.office.buildings import place_json
from bot.privacy.audit import record_audit
from bot.services import Services
from storage.db import rows_affected
from storage.models import (
    AuditEvent,
    BotLogEntry,
    BuildingLink,
    ConsentEvent,
    Contact,
    Conversation,
    Event,
    MediaItem,
    Message,
    NoticeDelivery,
    Tenant,
    Ticket,
    iso_utc,
    utcnow,
)
from storage.queries import contact_by_phone, contact_ledger

log = logging.getLogger(__name__)


def _contact_data(
    svc: Services, session: Session, tenant: Tenant, contact: Contact
) -> dict[str, Any]:
    threads = session.scalars(
        select(Conversation).where(
            Conversation.tenant_id == tenant.id, Conversation.contact_id == contact.id
        )
    ).all()
    thread_ids = [t.id for t in threads]
    messages = session.scalars(
        select(Message)
        .where(Message.tenant_id == tenant.id, Message.contact_id == contact.id)
        .order_by(Message.id)
    ).all()
    tickets = session.scalars(
        select(Ticket).where(
            Ticket.tenant_id == tenant.id,
            Ticket.conversation_id.in_(thread_ids) | (Ticket.contact_id == contact.id),
        )
    ).all()
    links = session.scalars(
        select(BuildingLink).where(
            BuildingLink.tenant_id == tenant.id, BuildingLink.contact_id == contact.id
        )
    ).all()
    ledger = contact_ledger(session, tenant, contact, svc.cipher)
    return {
        "contact": {
            "id": contact.id,
            "whatsapp_id": contact.wa_id,
            "phone": contact.phone,
            "kind": contact.kind,
            "legal_basis": contact.legal_basis,
            "consent": contact.consent,
            "source": contact.source,
            "profile_name": contact.profile_name,
            "created_at": iso_utc(contact.created_at),
            "last_contact_at": iso_utc(contact.last_contact_at),
            "name": contact.name,
            "trade": contact.trade,
            "notice_categories": list(contact.notice_categories or []),
        },
        "buildings": [{**place_json(link), "source": link.source} for link in links],
        "consent_events": [_ledger_entry(svc, e) for e in ledger],
        "messages": [
            {
                "id": m.id,
                "direction": m.direction,
                "at": iso_utc(m.created_at),
                "body": svc.cipher.decrypt(m.body) if m.body else None,
                "status": m.status,
                "intent": m.intent,
            }
            for m in messages
        ],
        "tickets": [
            {
                "id": t.id,
                "kind": t.kind,
                "status": t.status,
                "entities": t.entities,
                "created_at": iso_utc(t.created_at),
                "description": svc.cipher.decrypt(t.description) if t.description else None,
            }
            for t in tickets
        ],
    }


def _ledger_entry(svc: Services, event: ConsentEvent) -> dict[str, Any]:
    return {
        "event": event.event,
        "at": iso_utc(event.at),
        "channel": event.channel,
        "evidence_text": svc.cipher.decrypt(event.evidence_text) if event.evidence_text else None,
        "evidence_sha256": event.evidence_sha256,
        "notice_version": event.notice_version,
        "notice_sha256": event.notice_sha256,
    }


def _office_records(
    svc: Services, session: Session, tenant: Tenant, contacts: Sequence[Contact]
) -> dict[str, Any]:
    """What a whole-office export adds to the contacts: the records no contact holds."""
    # The ledger cannot be updated, so an erased contact's rows keep its old id, which
    # before ids were never reused may name a live contact now: a row is a live
    # contact's only when both its id and its keyed hash are that contact's.
    live = {(c.id, svc.cipher.pseudonym(c.wa_id)) for c in contacts}
    erased = [
        e
        for e in session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.tenant_id == tenant.id)
            .order_by(ConsentEvent.id)
        )
        if (e.contact_id, e.subject_ref) not in live
    ]
    audit = session.scalars(
        select(AuditEvent).where(AuditEvent.tenant_id == tenant.id).order_by(AuditEvent.id)
    ).all()
    return {
        # Kept after erasure as proof of consent, under a keyed hash instead of the number.
        "consent_events_of_erased_contacts": [
            {"subject_ref": e.subject_ref, **_ledger_entry(svc, e)} for e in erased
        ],
        "audit_log": [
            {
                "at": iso_utc(a.at),
                "actor": a.actor,
                "user_id": a.user_id,
                "action": a.action,
                "target_type": a.target_type,
                "target_id": a.target_id,
                "detail": a.detail,
                "hash": a.hash,
            }
            for a in audit
        ],
    }


def export_data(
    svc: Services,
    tenant: Tenant,
    contact_id: int | None,
    *,
    actor: str,
    user_id: int | None = None,
    ip: str | None = None,
) -> dict[str, Any]:
    """One contact's data (access, portability), or the whole office's."""
    with svc.db.session() as session:
        query = select(Contact).where(Contact.tenant_id == tenant.id).order_by(Contact.id)
        if contact_id is not None:
            query = query.where(Contact.id == contact_id)
        contacts = session.scalars(query).all()
        if contact_id is not None and not contacts:
            raise NotFound("no such contact")
        data = {
            "office": {"name": tenant.name, "slug": tenant.slug},
            "exported_at": iso_utc(utcnow()),
            "contacts": [_contact_data(svc, session, tenant, c) for c in contacts],
        }
        if contact_id is None:
            data.update(_office_records(svc, session, tenant, contacts))
        record_audit(
            session,
            tenant.id,
            "export",
            actor=actor,
            user_id=user_id,
            ip=ip,
            target_type="contact" if contact_id is not None else "tenant",
            target_id=contact_id if contact_id is not None else tenant.id,
            detail={"contacts": len(contacts)},
        )
    return data


def erase_contact(
    svc: Services,
    tenant: Tenant,
    contact_phone: str,
    *,
    actor: str,
    user_id: int | None = None,
) -> dict[str, int]:
    """Carry out an erasure request; returns what was removed, by kind."""
    with svc.db.session() as session:
        contact = contact_by_phone(session, tenant, contact_phone)
        if contact is None:
            raise NotFound("no contact with this number")
        contact_id = contact.id
        removed, files = erase_audited(session, tenant, contact, actor=actor, user_id=user_id)
    delete_files(files)
    log.info("contact %s erased: %s", contact_id, removed)
    return removed


def erase_audited(
    session: Session,
    tenant: Tenant,
    contact: Contact,
    *,
    actor: str,
    user_id: int | None = None,
    ip: str | None = None,
) -> tuple[dict[str, int], list[str]]:
    """:func:`erase_in_session` with its audit row; the caller deletes the files after
    the commit (:func:`delete_files`)."""
    contact_id = contact.id
    removed, files = erase_in_session(session, tenant, contact)
    record_audit(
        session,
        tenant.id,
        "erasure",
        actor=actor,
        user_id=user_id,
        ip=ip,
        target_type="contact",
        target_id=contact_id,
        detail=removed,
    )
    return removed, files


def erase_in_session(
    session: Session, tenant: Tenant, contact: Contact
) -> tuple[dict[str, int], list[str]]:
    """Delete a contact and everything of theirs; returns counts and the media files.

    The caller deletes the files after its transaction commits (:func:`delete_files`),
    so a rolled-back erasure keeps rows and files together.
    """
    thread_ids = list(
        session.scalars(
            select(Conversation.id).where(
                Conversation.tenant_id == tenant.id, Conversation.contact_id == contact.id
            )
        )
    )
    message_ids = list(
        session.scalars(
            select(Message.id).where(
                Message.tenant_id == tenant.id, Message.contact_id == contact.id
            )
        )
    )
    files = media_files(session, tenant, MediaItem.message_id.in_(message_ids))
    removed = {
        "media": len(files),
        # Their tickets (a fault they reported, or one the office filed for them) with
        # their notes, work orders and timelines (ON DELETE CASCADE).
        "tickets": delete_rows(
            session,
            Ticket,
            tenant,
            Ticket.conversation_id.in_(thread_ids) | (Ticket.contact_id == contact.id),
        ),
        "building_links": delete_rows(
            session, BuildingLink, tenant, BuildingLink.contact_id == contact.id
        ),
        # A supplier's work orders stay the office's (the supplier link goes, SET NULL);
        # a resident's copies of building notices go with them.
        "notice_deliveries": delete_rows(
            session, NoticeDelivery, tenant, NoticeDelivery.contact_id == contact.id
        ),
        "events": delete_rows(session, Event, tenant, Event.conversation_id.in_(thread_ids)),
        "bot_log": delete_rows(
            session, BotLogEntry, tenant, BotLogEntry.message_id.in_(message_ids)
        ),
    }
    delete_rows(session, MediaItem, tenant, MediaItem.message_id.in_(message_ids))
    removed["messages"] = delete_rows(session, Message, tenant, Message.id.in_(message_ids))
    removed["conversations"] = delete_rows(
        session, Conversation, tenant, Conversation.id.in_(thread_ids)
    )
    session.delete(contact)
    return removed, files


def media_files(session: Session, tenant: Tenant, condition: Any) -> list[str]:
    return [
        path
        for path in session.scalars(
            select(MediaItem.path).where(MediaItem.tenant_id == tenant.id, condition)
        )
        if path
    ]


def delete_files(paths: list[str]) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)


def delete_rows(session: Session, model: Any, tenant: Tenant, condition: Any) -> int:
    result = session.execute(delete(model).where(model.tenant_id == tenant.id, condition))
    return rows_affected(result)
