"""Data-subject rights and the office's own exports: access, portability, erasure.

Erasure deletes the contact, their conversations, messages, media files, tickets and
events. The consent ledger is kept as it is: it proves what the person agreed to and
when (art. 7(1) GDPR), names them only by a keyed hash once the contact is gone, and
holds the keyword they sent or their message redacted, with its SHA-256 (see
:func:`bot.privacy.consent.message_evidence`).
"""

from __future__ import annotations

import io
import json
import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import CompoundSelect, Select, delete, select, union_all
from sqlalchemy.orm import Session

from bot.crm import forget_contact
from bot.exceptions import NotFound
from bot.office.buildings import place_json
from bot.privacy.audit import record_audit
from bot.services import Services
from storage.db import rows_affected
from storage.files import private_folder
from storage.models import (
    AuditEvent,
    BotLogEntry,
    BuildingLink,
    ConsentEvent,
    Contact,
    Conversation,
    Event,
    InternalNote,
    MediaItem,
    Message,
    NoticeDelivery,
    Tenant,
    Ticket,
    iso_utc,
    utcnow,
)
from storage.queries import contact_by_phone, contacts_ledger, get_contact

log = logging.getLogger(__name__)


EXPORT_FORMAT = "portineria-export/2"
# Contacts read and written per round: their messages, tickets and ledgers are read
# by a handful of indexed queries per round, and only one round is in memory.
CONTACT_BATCH = 200
# Rows of the office-wide records (erased people's ledger, audit trail) per query.
ROW_BATCH = 5_000


@dataclass
class ExportSummary:
    """What an export held, by kind (also its last line, so a cut file shows it is cut)."""

    contacts: int = 0
    messages: int = 0
    tickets: int = 0
    consent_events: int = 0
    consent_events_of_erased_contacts: int = 0
    internal_notes: int = 0
    audit_events: int = 0


def write_export(
    svc: Services,
    tenant: Tenant,
    contact_id: int | None,
    out: IO[str],
    *,
    actor: str,
    user_id: int | None = None,
    ip: str | None = None,
) -> ExportSummary:
    """Write one contact's data (access, portability), or the whole office's, to ``out``
    as JSON Lines, a record a line, as it is read.

    The first line names the office and the format; then one line per contact with
    their ledger, messages and tickets; for the whole office, then, a line per consent
    event of an erased person (kept as proof, under a keyed hash) and per audit event;
    the last line counts what came before it. Everything is read from one snapshot of
    the database, a batch at a time, so memory holds one batch whatever the office's
    size; the export is audited once written.
    """
    summary = ExportSummary()
    with svc.db.read() as session:
        _snapshot(session)
        if contact_id is not None and get_contact(session, tenant, contact_id) is None:
            raise NotFound("no such contact")
        for record in _export_records(svc, session, tenant, contact_id, summary):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.write(json.dumps({"record": "end", **asdict(summary)}) + "\n")
    with svc.db.session() as session:
        record_audit(
            session,
            tenant.id,
            "export",
            actor=actor,
            user_id=user_id,
            ip=ip,
            target_type="contact" if contact_id is not None else "tenant",
            target_id=contact_id if contact_id is not None else tenant.id,
            detail={"contacts": summary.contacts},
        )
    return summary


def encrypted_export(
    svc: Services,
    tenant: Tenant,
    contact_id: int,
    *,
    actor: str,
    user_id: int | None = None,
    ip: str | None = None,
) -> bytes:
    """One person's export (:func:`write_export`), encrypted as a whole: it is small."""
    lines = io.StringIO()
    write_export(svc, tenant, contact_id, lines, actor=actor, user_id=user_id, ip=ip)
    return svc.cipher.encrypt(lines.getvalue())


def exports_folder(svc: Services, tenant_id: int) -> Path:
    """Where an office's exports are kept, owner-only (created on first use)."""
    return private_folder(Path(svc.config["MEDIA_ROOT"]) / str(tenant_id) / "exports")


def chat_export_path(svc: Services, tenant_id: int, contact_id: int, message_id: int) -> Path:
    """Where the export an access request by chat asked for is kept, until delivered."""
    return exports_folder(svc, tenant_id) / f"contact-{contact_id}-message-{message_id}.jsonl.enc"


CHAT_EXPORTS_OF = "contact-{contact_id}-message-*.jsonl.enc"  # a glob, by contact


def _snapshot(session: Session) -> None:
    """Make every query of this read see the same moment (PostgreSQL's default is a new
    snapshot per statement; a SQLite read transaction already keeps one)."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def _export_records(
    svc: Services,
    session: Session,
    tenant: Tenant,
    contact_id: int | None,
    summary: ExportSummary,
) -> Iterator[dict[str, Any]]:
    yield {
        "record": "office",
        "format": EXPORT_FORMAT,
        "name": tenant.name,
        "slug": tenant.slug,
        "exported_at": iso_utc(utcnow()),
        "scope": "contact" if contact_id is not None else "office",
    }
    for batch in _contact_batches(session, tenant, contact_id):
        for record in _contacts_data(svc, session, tenant, batch):
            summary.contacts += 1
            summary.messages += len(record["messages"])
            summary.tickets += len(record["tickets"])
            summary.consent_events += len(record["consent_events"])
            yield record
    if contact_id is None:
        for entry in _erased_ledger(svc, session, tenant):
            summary.consent_events_of_erased_contacts += 1
            yield entry
        for note in _internal_notes(svc, session, tenant):
            summary.internal_notes += 1
            yield note
        for event in _audit_log(session, tenant):
            summary.audit_events += 1
            yield event


_CONTACT_FIELDS = (
    Contact.id,
    Contact.wa_id,
    Contact.phone,
    Contact.kind,
    Contact.legal_basis,
    Contact.consent,
    Contact.source,
    Contact.profile_name,
    Contact.created_at,
    Contact.last_contact_at,
    Contact.name,
    Contact.trade,
    Contact.notice_categories,
)


def _contact_batches(
    session: Session, tenant: Tenant, contact_id: int | None
) -> Iterator[Sequence[Any]]:
    """The office's contacts (or the one asked for) by id, a batch at a time."""
    query = select(*_CONTACT_FIELDS).where(Contact.tenant_id == tenant.id)
    if contact_id is not None:
        query = query.where(Contact.id == contact_id)
    last = 0
    while True:
        batch = session.execute(
            query.where(Contact.id > last).order_by(Contact.id).limit(CONTACT_BATCH)
        ).all()
        if batch:
            yield batch
        if len(batch) < CONTACT_BATCH:
            return
        last = batch[-1].id


def _contacts_data(
    svc: Services, session: Session, tenant: Tenant, contacts: Sequence[Any]
) -> Iterator[dict[str, Any]]:
    """Each contact's record: their data, ledger, messages and tickets."""
    ids = [c.id for c in contacts]
    messages: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for m in session.execute(
        select(
            Message.contact_id,
            Message.id,
            Message.direction,
            Message.created_at,
            Message.body,
            Message.status,
            Message.intent,
        )
        .where(Message.tenant_id == tenant.id, Message.contact_id.in_(ids))
        .order_by(Message.id)
    ):
        messages[m.contact_id].append(
            {
                "id": m.id,
                "direction": m.direction,
                "at": iso_utc(m.created_at),
                "body": svc.cipher.decrypt(m.body) if m.body else None,
                "status": m.status,
                "intent": m.intent,
            }
        )
    tickets: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for t in _contacts_tickets(session, tenant, ids):
        tickets[t.owner].append(
            {
                "id": t.id,
                "kind": t.kind,
                "status": t.status,
                "entities": t.entities,
                "created_at": iso_utc(t.created_at),
                "description": svc.cipher.decrypt(t.description) if t.description else None,
            }
        )
    places: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for link in session.scalars(
        select(BuildingLink)
        .where(BuildingLink.tenant_id == tenant.id, BuildingLink.contact_id.in_(ids))
        .order_by(BuildingLink.id)
    ):
        places[link.contact_id].append({**place_json(link), "source": link.source})
    ledgers = contacts_ledger(session, tenant, [(c.id, c.wa_id) for c in contacts], svc.cipher)
    for contact in contacts:
        yield {
            "record": "contact",
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
            "buildings": places[contact.id],
            "consent_events": [_ledger_entry(svc, e) for e in ledgers[contact.id]],
            "messages": messages[contact.id],
            "tickets": tickets[contact.id],
        }


def _contacts_tickets(session: Session, tenant: Tenant, ids: list[int]) -> list[Any]:
    """The tickets of these contacts, by id: a fault they reported in a conversation, or
    one the office filed for them. Two queries, each read by its own index (an OR of
    the two is a walk of the whole table on PostgreSQL); a ticket filed for someone
    in their own conversation is theirs once."""
    fields = (
        Ticket.id,
        Ticket.kind,
        Ticket.status,
        Ticket.entities,
        Ticket.created_at,
        Ticket.description,
    )
    reported = session.execute(
        select(Conversation.contact_id.label("owner"), *fields)
        .join(Conversation, Conversation.id == Ticket.conversation_id)
        .where(Ticket.tenant_id == tenant.id, Conversation.contact_id.in_(ids))
    ).all()
    filed = session.execute(
        select(Ticket.contact_id.label("owner"), *fields).where(
            Ticket.tenant_id == tenant.id, Ticket.contact_id.in_(ids)
        )
    ).all()
    # A ticket filed for one person in another's conversation is the filed person's.
    by_id = {t.id: t for t in reported} | {t.id: t for t in filed}
    return [by_id[key] for key in sorted(by_id)]


def _ledger_entry(svc: Services, event: Any) -> dict[str, Any]:
    return {
        "event": event.event,
        "at": iso_utc(event.at),
        "channel": event.channel,
        "evidence_text": svc.cipher.decrypt(event.evidence_text) if event.evidence_text else None,
        "evidence_sha256": event.evidence_sha256,
        "notice_version": event.notice_version,
        "notice_sha256": event.notice_sha256,
    }


def _erased_ledger(svc: Services, session: Session, tenant: Tenant) -> Iterator[dict[str, Any]]:
    """The ledger rows no live contact owns: kept after erasure as proof of consent,
    under a keyed hash instead of the number.

    The ledger cannot be updated, so an erased contact's rows keep its old id, which
    before ids were never reused may name a live contact now: a row is a live
    contact's only when both its id and its keyed hash are that contact's.
    """
    ledger = ConsentEvent.__table__
    owner = select(Contact.wa_id).where(
        Contact.tenant_id == tenant.id, Contact.id == ledger.c.contact_id
    )
    query = select(ledger, owner.scalar_subquery().label("owner_wa_id")).where(
        ledger.c.tenant_id == tenant.id
    )
    for row in _by_id(session, query, ledger.c.id):
        if row.owner_wa_id is not None and svc.cipher.pseudonym(row.owner_wa_id) == row.subject_ref:
            continue
        yield {
            "record": "consent_event_of_erased_contact",
            "subject_ref": row.subject_ref,
            **_ledger_entry(svc, row),
        }


def _internal_notes(svc: Services, session: Session, tenant: Tenant) -> Iterator[dict[str, Any]]:
    """The operators' notes: the office's own records, not the resident's data as they
    gave it, so in the office's export and not in a resident's access export."""
    notes = InternalNote.__table__
    query = select(notes).where(notes.c.tenant_id == tenant.id)
    for n in _by_id(session, query, notes.c.id):
        yield {
            "record": "internal_note",
            "id": n.id,
            "conversation_id": n.conversation_id,
            "contact_id": n.contact_id,
            "author_user_id": n.author_user_id,
            "at": iso_utc(n.created_at),
            "body": svc.cipher.decrypt(n.body),
        }


def _audit_log(session: Session, tenant: Tenant) -> Iterator[dict[str, Any]]:
    audit = AuditEvent.__table__
    query = select(audit).where(audit.c.tenant_id == tenant.id)
    for a in _by_id(session, query, audit.c.id):
        yield {
            "record": "audit_event",
            "at": iso_utc(a.at),
            "actor": a.actor,
            "user_id": a.user_id,
            "action": a.action,
            "target_type": a.target_type,
            "target_id": a.target_id,
            "detail": a.detail,
            "hash": a.hash,
        }


def _by_id(session: Session, query: Select[Any], key: Any) -> Iterator[Any]:
    """Every row of ``query`` in ``key`` order, ROW_BATCH rows per statement."""
    last = 0
    while True:
        batch = session.execute(query.where(key > last).order_by(key).limit(ROW_BATCH)).all()
        yield from batch
        if len(batch) < ROW_BATCH:
            return
        last = batch[-1].id


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
    so a rolled-back erasure keeps rows and files together. Every statement names the
    contact's rows by subquery on indexed columns (``contact_id``, ``conversation_id``,
    ``message_id``): no list of ids travels as bound parameters, however much they wrote,
    and nothing scans the office's other messages.
    """
    threads = contact_threads(tenant.id, contact.id)
    messages = contact_messages(tenant.id, contact.id)
    files = media_files(session, tenant, MediaItem.message_id.in_(messages))
    # The CRM's events name conversations by plain id: found while those still exist.
    crm_events = forget_contact(session, tenant.id, contact.id, threads)
    removed = {
        "media": len(files),
        # Their tickets (a fault they reported, or one the office filed for them) with
        # their notes, work orders and timelines (ON DELETE CASCADE).
        # Two statements, each by its own index: PostgreSQL read an OR of the two by a
        # walk of every ticket of the office.
        "tickets": delete_rows(session, Ticket, tenant, Ticket.conversation_id.in_(threads))
        + delete_rows(session, Ticket, tenant, Ticket.contact_id == contact.id),
        "building_links": delete_rows(
            session, BuildingLink, tenant, BuildingLink.contact_id == contact.id
        ),
        # A supplier's work orders stay the office's (the supplier link goes, SET NULL);
        # a resident's copies of building notices go with them.
        "notice_deliveries": delete_rows(
            session, NoticeDelivery, tenant, NoticeDelivery.contact_id == contact.id
        ),
        "events": delete_rows(session, Event, tenant, Event.conversation_id.in_(threads)),
        "bot_log": delete_rows(session, BotLogEntry, tenant, BotLogEntry.message_id.in_(messages)),
    }
    delete_rows(session, MediaItem, tenant, MediaItem.message_id.in_(messages))
    # Notes about the person go with them, like the conversations they annotate.
    removed["internal_notes"] = delete_rows(
        session, InternalNote, tenant, InternalNote.contact_id == contact.id
    )
    removed["messages"] = delete_rows(session, Message, tenant, Message.id.in_(messages))
    removed["conversations"] = delete_rows(
        session, Conversation, tenant, Conversation.id.in_(threads)
    )
    removed["webhook_events"] = crm_events
    session.delete(contact)
    return removed, files


def contact_threads(tenant_id: int, contact_id: int) -> Select[int]:
    """The ids of a contact's conversations, as a subquery."""
    return (
        select(Conversation.id)
        .where(Conversation.tenant_id == tenant_id, Conversation.contact_id == contact_id)
        .correlate(None)
    )


def contact_messages(tenant_id: int, contact_id: int) -> CompoundSelect:
    """The ids of a contact's messages, as a subquery: theirs, or in their conversations
    (which the conversations' deletion would cascade to, files and all).

    Two selects, each served by its own index (the contact's, the conversation's): an
    OR of the two conditions is read, on PostgreSQL, by a walk of the whole table. The
    second names no office of its own (its conversations are the office's): beside
    the office's id, SQLite walked every message of the office by its (tenant, time)
    index instead of the conversations' few."""
    theirs = select(Message.id).where(
        Message.tenant_id == tenant_id, Message.contact_id == contact_id
    )
    in_threads = select(Message.id).where(
        Message.conversation_id.is_not(None),
        Message.conversation_id.in_(contact_threads(tenant_id, contact_id)),
    )
    return union_all(theirs, in_threads)


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
    # No session synchronisation: it would fetch every deleted id first, and the callers
    # hold none of the rows they delete this way.
    statement = delete(model).where(model.tenant_id == tenant.id, condition)
    result = session.execute(statement.execution_options(synchronize_session=False))
    return rows_affected(result)
