"""Tenant-scoped reads and writes.

Every function that touches an office's data takes the tenant first and filters on
it, so a caller cannot read across tenants by forgetting a ``where``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, select, tuple_
from sqlalchemy.orm import Session

from storage.crypto import BodyCipher
from storage.models import ConsentEvent, Contact, Conversation, Message, SidTombstone, Tenant
from storage.rows import LeafRows


def contains_text(column: Any, text: str) -> ColumnElement[bool]:
    """``column`` contains ``text``, case-insensitively, wildcards taken literally."""
    escaped = text.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return column.ilike(f"%{escaped}%", escape="!")


def tenant_by_slug(session: Session, slug: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.slug == slug))


def tenant_id_by_number(session: Session, whatsapp_number: str) -> int | None:
    return session.scalar(
        select(Tenant.id).where(
            Tenant.whatsapp_number == whatsapp_number, Tenant.terminated_at.is_(None)
        )
    )


def message_by_idempotency_key(session: Session, tenant: Tenant | int, key: str) -> Message | None:
    return session.scalar(
        select(Message).where(Message.tenant_id == _tid(tenant), Message.idempotency_key == key)
    )


def contact_by_wa_id(session: Session, tenant: Tenant | int, wa_id: str) -> Contact | None:
    return session.scalar(
        select(Contact).where(Contact.tenant_id == _tid(tenant), Contact.wa_id == wa_id)
    )


def contacts_by_wa_id(
    session: Session, tenant: Tenant | int, wa_ids: Sequence[str]
) -> dict[str, Contact]:
    """The office's contacts with these WhatsApp ids, by id (one query for a batch)."""
    if not wa_ids:
        return {}
    found = session.scalars(
        select(Contact).where(Contact.tenant_id == _tid(tenant), Contact.wa_id.in_(set(wa_ids)))
    )
    return {contact.wa_id: contact for contact in found}


def contact_by_phone(session: Session, tenant: Tenant | int, phone: str) -> Contact | None:
    """The contact with this E.164 number (a contact known only by username has none)."""
    return session.scalar(
        select(Contact).where(Contact.tenant_id == _tid(tenant), Contact.phone == phone).limit(1)
    )


def get_contact(session: Session, tenant: Tenant | int, contact_id: int) -> Contact | None:
    return session.scalar(
        select(Contact).where(Contact.tenant_id == _tid(tenant), Contact.id == contact_id)
    )


def get_conversation(
    session: Session, tenant: Tenant | int, conversation_id: int
) -> Conversation | None:
    return session.scalar(
        select(Conversation).where(
            Conversation.tenant_id == _tid(tenant), Conversation.id == conversation_id
        )
    )


def open_conversation_for(
    session: Session, tenant: Tenant | int, contact: Contact
) -> Conversation | None:
    return session.scalar(
        select(Conversation)
        .where(
            Conversation.tenant_id == _tid(tenant),
            Conversation.contact_id == contact.id,
            Conversation.status == "open",
        )
        .order_by(Conversation.id.desc())
        .limit(1)
    )


def open_conversations_for(
    session: Session, tenant: Tenant | int, contact_ids: Sequence[int]
) -> dict[int, Conversation]:
    """Each of these contacts' open conversation (the newest, as
    :func:`open_conversation_for`), by contact id: one query for a batch."""
    if not contact_ids:
        return {}
    found = session.scalars(
        select(Conversation)
        .where(
            Conversation.tenant_id == _tid(tenant),
            Conversation.contact_id.in_(set(contact_ids)),
            Conversation.status == "open",
        )
        .order_by(Conversation.id)
    )
    return {thread.contact_id: thread for thread in found}  # the newest wins


def conversation_messages(
    session: Session,
    tenant: Tenant | int,
    conversation_id: int,
    limit: int = 500,
    *,
    before: int | None = None,
) -> Sequence[Message]:
    """A conversation's newest ``limit`` messages (before the message ``before``, if
    given), in the order they were written.

    The page's ids are read first, backwards along the (conversation, id) index alone,
    then their rows by id: a long conversation costs no more than a short one. The
    conversation is named as a range of that index, ``(conversation, id)`` from
    ``(c, 0)`` up to ``(c, before)`` or ``(c + 1, 0)``, not as ``conversation_id = c``:
    given the equality, PostgreSQL sees that the primary key yields the same order and
    may walk it from the newest message of the office down to the conversation's, when
    it holds many messages and the planner takes them to be spread evenly (an old
    conversation's are all far back: 195,000 rows read for a page at 200,000 messages).
    Only the (conversation, id) index yields the order ``conversation_id, id``. The ids
    then travel as a list, not a subquery: given ``id IN (subquery) ORDER BY id``,
    PostgreSQL again walks the primary key to spare itself sorting the page.
    """
    key = tuple_(Message.conversation_id, Message.id)
    upper = (conversation_id, before) if before is not None else (conversation_id + 1, 0)
    page = select(Message.id).where(
        Message.conversation_id >= conversation_id,
        key < tuple_(*upper),
    )
    ordered = page.order_by(Message.conversation_id.desc(), Message.id.desc()).limit(limit)
    ids = session.scalars(ordered).all()
    if not ids:
        return []
    query = select(Message).where(Message.tenant_id == _tid(tenant), Message.id.in_(ids))
    return session.scalars(query.order_by(Message.id)).all()


def contact_ledger(
    session: Session,
    tenant: Tenant | int,
    contact: Contact,
    cipher: BodyCipher,
    *,
    newest_first: bool = False,
    limit: int | None = None,
) -> Sequence[ConsentEvent]:
    """A live contact's consent ledger: its rows by id *and* by the keyed hash of its
    WhatsApp id.

    Ledger rows outlive an erasure with the erased contact's id in them; should that
    id ever name another contact (SQLite reused the highest id before migration
    0006_ids_never_reused), the erased person's rows must not become the new person's history.
    """
    query = contact_ledger_query(tenant, contact, cipher)
    order = ConsentEvent.id.desc() if newest_first else ConsentEvent.id
    return session.scalars(query.order_by(order).limit(limit)).all()


def contact_ledger_query(
    tenant: Tenant | int, contact: Contact, cipher: BodyCipher
) -> Select[ConsentEvent]:
    """The rows of :func:`contact_ledger`, as a query a caller can order and page."""
    return select(ConsentEvent).where(
        ConsentEvent.tenant_id == _tid(tenant),
        ConsentEvent.contact_id == contact.id,
        ConsentEvent.subject_ref == cipher.pseudonym(contact.wa_id),
    )


def contacts_ledger(
    session: Session,
    tenant: Tenant | int,
    contacts: Sequence[tuple[int, str]],
    cipher: BodyCipher,
) -> dict[int, list[Any]]:
    """The ledgers of several live contacts, given as ``(id, wa_id)``: by contact id, each
    oldest first, as plain rows of the ledger's table.

    The rule of :func:`contact_ledger` (a row is a contact's when both its contact id and
    its keyed hash are that contact's), for a batch of contacts in one query.
    """
    owners = {(contact_id, cipher.pseudonym(wa_id)) for contact_id, wa_id in contacts}
    ledger: dict[int, list[Any]] = {contact_id: [] for contact_id, _ in contacts}
    if not contacts:
        return ledger
    rows = session.execute(
        select(ConsentEvent.__table__)
        .where(
            ConsentEvent.tenant_id == _tid(tenant),
            ConsentEvent.contact_id.in_([contact_id for contact_id, _ in contacts]),
        )
        .order_by(ConsentEvent.id)
    )
    for row in rows:
        if (row.contact_id, row.subject_ref) in owners:
            ledger[row.contact_id].append(row)
    return ledger


def processed_sids(session: Session, tenant: Tenant | int, sid_hashes: Sequence[str]) -> set[str]:
    """Which of these (keyed hashes of) MessageSids were processed before."""
    if not sid_hashes:
        return set()
    return set(
        session.scalars(
            select(SidTombstone.sid_hash).where(
                SidTombstone.tenant_id == _tid(tenant), SidTombstone.sid_hash.in_(set(sid_hashes))
            )
        )
    )


def remember_processed_sid(rows: LeafRows, tenant: Tenant | int, sid_hash: str) -> None:
    """Keep the tombstone of a delivery being handled, with the rows its transaction
    writes when the batch ends."""
    rows.add(SidTombstone, tenant_id=_tid(tenant), sid_hash=sid_hash)


def discard_message(session: Session, tenant: Tenant | int, message_id: int) -> None:
    """Delete a stored inbound message that nothing refers to yet (a replayed delivery)."""
    session.execute(
        delete(Message).where(Message.tenant_id == _tid(tenant), Message.id == message_id)
    )


def _tid(tenant: Tenant | int) -> int:
    return tenant if isinstance(tenant, int) else tenant.id
