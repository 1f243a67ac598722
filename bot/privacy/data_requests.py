"""The admin's queue of data-subject requests: access (art. 15) and erasure (art. 17).

A request comes from chat (``I MIEI DATI``, ``CANCELLA I MIEI DATI``: the ledger's
``access_requested`` and ``erasure_requested`` events, each opened here once, by its
ledger id) or is entered by hand (a letter, an email, at the desk). Each is due 30
days after it was received (art. 12(3) GDPR) and is closed with its outcome.

An access request's export is the encrypted JSON Lines the engine prepared when the request
arrived by chat (``<media>/<office>/exports/contact-<id>-message-<id>.jsonl.enc``), or one
the admin prepares here; it is decrypted only when the admin downloads it, and the
download is audited. Erasure deletes the person's data and their exports, and closes
the request in the same transaction; the request itself stays, naming the person only
by the ledger's keyed hash and a masked number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot.exceptions import NotFound, Refused
from bot.office.actor import Actor
from bot.office.oncall import masked
from bot.privacy.audit import record_actor_audit
from bot.privacy.rights import (
    CHAT_EXPORTS_OF,
    chat_export_path,
    delete_files,
    encrypted_export,
    erase_audited,
    exports_folder,
)
from bot.services import Services
from storage.files import write_private
from storage.models import ConsentEvent, Contact, DataRequest, Message, Tenant, User, utcnow
from storage.queries import contact_by_phone, get_contact
from storage.vocabulary import LedgerEvent, RequestKind, RequestOrigin, RequestStatus

DUE_AFTER = timedelta(days=30)
MAX_OUTCOME = 2000
MAX_RECEIVED_VIA = 200
_FROM_LEDGER = {
    LedgerEvent.ACCESS_REQUESTED: RequestKind.ACCESS,
    LedgerEvent.ERASURE_REQUESTED: RequestKind.ERASURE,
}


# -- opening -------------------------------------------------------------------------


def sync_chat_requests(svc: Services, tenant_id: int) -> int:
    """Open a request for every chat request on the ledger not yet in the queue; how
    many were opened. Cheap when there is nothing new (one indexed read)."""
    with svc.db.read() as session:
        fresh = _unqueued_events(session, tenant_id)
    if not fresh:
        return 0
    opened = 0
    with svc.db.session() as session:
        # Read again under the write lock: another request may have opened them.
        for event in _unqueued_events(session, tenant_id):
            session.add(_from_event(svc, session, event))
            opened += 1
    return opened


def _unqueued_events(session: Session, tenant_id: int) -> Sequence[ConsentEvent]:
    last = session.scalar(
        select(func.max(DataRequest.ledger_event_id)).where(DataRequest.tenant_id == tenant_id)
    )
    return session.scalars(
        select(ConsentEvent)
        .where(
            ConsentEvent.tenant_id == tenant_id,
            ConsentEvent.id > (last or 0),
            ConsentEvent.event.in_(list(_FROM_LEDGER)),
        )
        .order_by(ConsentEvent.id)
        .limit(500)
    ).all()


def _from_event(svc: Services, session: Session, event: ConsentEvent) -> DataRequest:
    contact = get_contact(session, event.tenant_id, event.contact_id) if event.contact_id else None
    if contact is not None and svc.cipher.pseudonym(contact.wa_id) != event.subject_ref:
        contact = None  # the id names someone else now: the ledger row is an erased person's
    kind = _FROM_LEDGER[LedgerEvent(event.event)]
    return DataRequest(
        tenant_id=event.tenant_id,
        contact_id=contact.id if contact else None,
        subject_ref=event.subject_ref,
        masked_phone=_masked(contact),
        kind=kind,
        origin=RequestOrigin.CHAT,
        ledger_event_id=event.id,
        received_via="WhatsApp",
        received_at=event.at,
        due_at=event.at + DUE_AFTER,
        export_path=(
            _chat_export(svc, session, event, contact) if kind == RequestKind.ACCESS else None
        ),
    )


def _chat_export(
    svc: Services, session: Session, event: ConsentEvent, contact: Contact | None
) -> str | None:
    """The file the engine prepared for this request (see its ``_prepare_access_export``)."""
    if contact is None or not event.evidence_message_sid:
        return None
    message_id = session.scalar(
        select(Message.id).where(
            Message.tenant_id == event.tenant_id,
            Message.provider_sid == event.evidence_message_sid,
        )
    )
    if message_id is None:
        return None
    return str(chat_export_path(svc, event.tenant_id, contact.id, message_id))


def _masked(contact: Contact | None) -> str | None:
    if contact is None:
        return None
    return masked(contact.phone or f"+{contact.wa_id}")


def open_request(
    svc: Services,
    who: Actor,
    phone: str,
    kind: RequestKind,
    received_via: str,
    received_at: datetime,
) -> int:
    """A request entered by hand for the contact with this number; its id."""
    received_via = " ".join(received_via.split())[:MAX_RECEIVED_VIA] or "non indicato"
    if received_at > utcnow() + timedelta(minutes=5):
        raise Refused("La data di ricezione non può essere nel futuro.")
    with svc.db.session() as session:
        contact = contact_by_phone(session, who.tenant_id, phone)
        if contact is None:
            raise Refused("Nessun contatto con questo numero.")
        request = DataRequest(
            tenant_id=who.tenant_id,
            contact_id=contact.id,
            subject_ref=svc.cipher.pseudonym(contact.wa_id),
            masked_phone=_masked(contact),
            kind=kind,
            origin=RequestOrigin.CONSOLE,
            received_via=received_via,
            received_at=received_at,
            due_at=received_at + DUE_AFTER,
            created_by_user_id=who.user_id,
        )
        session.add(request)
        session.flush()
        record_actor_audit(
            session,
            who,
            "data_request.open",
            "data_request",
            request.id,
            detail={"kind": str(kind), "contact_id": contact.id},
        )
        return request.id


# -- reading the queue ------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRow:
    """One request as the queue and its page show it."""

    id: int
    kind: str
    origin: str
    status: str
    contact_id: int | None
    subject: str
    received_via: str | None
    received_at: datetime
    due_at: datetime
    overdue: bool
    has_export: bool
    closed_at: datetime | None
    closed_by: str | None
    outcome: str | None


def request_rows(
    session: Session, tenant_id: int, status: RequestStatus | None = None, limit: int = 200
) -> list[RequestRow]:
    """Open requests first by due date, then the closed ones, newest first."""
    query = (
        select(DataRequest, User.email)
        .outerjoin(User, User.id == DataRequest.closed_by_user_id)
        .where(DataRequest.tenant_id == tenant_id)
    )
    if status is not None:
        query = query.where(DataRequest.status == status)
    query = query.order_by(
        (DataRequest.status != RequestStatus.OPEN), DataRequest.due_at, DataRequest.id.desc()
    )
    now = utcnow()
    return [_row(request, email, now) for request, email in session.execute(query.limit(limit))]


def request_row(session: Session, tenant_id: int, request_id: int) -> RequestRow:
    found = session.execute(
        select(DataRequest, User.email)
        .outerjoin(User, User.id == DataRequest.closed_by_user_id)
        .where(DataRequest.tenant_id == tenant_id, DataRequest.id == request_id)
    ).first()
    if found is None:
        raise NotFound(request_id)
    return _row(found[0], found[1], utcnow())


def _row(request: DataRequest, closed_by: str | None, now: datetime) -> RequestRow:
    return RequestRow(
        id=request.id,
        kind=str(request.kind),
        origin=str(request.origin),
        status=str(request.status),
        contact_id=request.contact_id,
        subject=request.masked_phone or "contatto cancellato",
        received_via=request.received_via,
        received_at=request.received_at,
        due_at=request.due_at,
        overdue=request.status == RequestStatus.OPEN and request.due_at < now,
        has_export=bool(request.export_path and Path(request.export_path).exists()),
        closed_at=request.closed_at,
        closed_by=closed_by,
        outcome=request.outcome,
    )


def open_count(session: Session, tenant_id: int) -> int:
    return int(
        session.scalar(
            select(func.count(DataRequest.id)).where(
                DataRequest.tenant_id == tenant_id, DataRequest.status == RequestStatus.OPEN
            )
        )
        or 0
    )


# -- the export -------------------------------------------------------------------------


def _request(session: Session, tenant_id: int, request_id: int) -> DataRequest:
    request = session.scalar(
        select(DataRequest).where(DataRequest.tenant_id == tenant_id, DataRequest.id == request_id)
    )
    if request is None:
        raise NotFound(request_id)
    return request


def prepare_export(svc: Services, who: Actor, request_id: int) -> None:
    """Export the person's data now, encrypted, for the admin to download."""
    with svc.db.read() as session:
        request = _request(session, who.tenant_id, request_id)
        tenant = session.get(Tenant, who.tenant_id)
        assert tenant is not None
    if request.contact_id is None:
        raise Refused("Il contatto non esiste più: non c'è nulla da esportare.")
    data = encrypted_export(
        svc, tenant, request.contact_id, actor=f"user:{who.user_id}", user_id=who.user_id, ip=who.ip
    )
    stamp = utcnow().strftime("%Y%m%dT%H%M%S")
    target = exports_folder(svc, who.tenant_id) / f"request-{request.id}-{stamp}.jsonl.enc"
    write_private(target, data)
    with svc.db.session() as session:
        stored = _request(session, who.tenant_id, request_id)
        old = stored.export_path
        stored.export_path = str(target)
        record_actor_audit(session, who, "data_request.export_prepared", "data_request", request_id)
    if old and old != str(target) and Path(old).name.startswith("request-"):
        delete_files([old])


def read_export(svc: Services, who: Actor, request_id: int) -> tuple[str, bytes]:
    """The decrypted export (file name, JSON bytes); the download is audited."""
    with svc.db.session() as session:
        request = _request(session, who.tenant_id, request_id)
        path = Path(request.export_path) if request.export_path else None
        if path is None or not path.exists():
            raise NotFound("no export for this request")
        data = svc.cipher.decrypt(path.read_bytes())
        record_actor_audit(session, who, "data_request.export_download", "data_request", request_id)
    return f"richiesta-{request_id}-dati.jsonl", data.encode("utf-8")


# -- erasure and closing ----------------------------------------------------------------


def erase_for_request(svc: Services, who: Actor, request_id: int) -> dict[str, int]:
    """Carry out the erasure, delete the person's exports, close the request as done:
    one transaction (the files go after it commits)."""
    with svc.db.session() as session:
        request = _request(session, who.tenant_id, request_id)
        if request.status != RequestStatus.OPEN:
            raise Refused("La richiesta è già chiusa.")
        if request.contact_id is None:
            raise Refused("Il contatto non esiste più: i suoi dati sono già stati cancellati.")
        tenant = session.get(Tenant, who.tenant_id)
        contact = get_contact(session, who.tenant_id, request.contact_id)
        assert tenant is not None and contact is not None
        exports = _exports_of(svc, session, who.tenant_id, contact.id)
        removed, files = erase_audited(
            session, tenant, contact, actor=f"user:{who.user_id}", user_id=who.user_id, ip=who.ip
        )
        session.flush()  # the contact goes; its requests keep their keyed hash
        request.contact_id, request.export_path = None, None
        _close(session, request, who, RequestStatus.DONE, _erasure_outcome(removed))
    delete_files(files + exports)
    return removed


def _exports_of(svc: Services, session: Session, tenant_id: int, contact_id: int) -> list[str]:
    """Every export file holding this contact's data: by chat, and prepared here."""
    folder = exports_folder(svc, tenant_id)
    paths = [str(p) for p in folder.glob(CHAT_EXPORTS_OF.format(contact_id=contact_id))]
    paths += [
        path
        for path in session.scalars(
            select(DataRequest.export_path).where(
                DataRequest.tenant_id == tenant_id, DataRequest.contact_id == contact_id
            )
        )
        if path
    ]
    session.execute(
        update(DataRequest)
        .where(DataRequest.tenant_id == tenant_id, DataRequest.contact_id == contact_id)
        .values(export_path=None)
        .execution_options(synchronize_session=False)
    )
    return list(dict.fromkeys(paths))


def _erasure_outcome(removed: dict[str, int]) -> str:
    return (
        "Dati cancellati: "
        f"{removed.get('messages', 0)} messaggi, {removed.get('media', 0)} allegati, "
        f"{removed.get('conversations', 0)} conversazioni, {removed.get('tickets', 0)} ticket, "
        f"{removed.get('events', 0)} appuntamenti, e le esportazioni preparate. "
        "Restano, senza numero, gli eventi del registro dei consensi."
    )


def close_request(
    svc: Services, who: Actor, request_id: int, status: RequestStatus, outcome: str
) -> None:
    """Close a request as done or refused, with its outcome (required)."""
    outcome = outcome.strip()[:MAX_OUTCOME]
    if status == RequestStatus.OPEN:
        raise Refused("Scegli l'esito: evasa o respinta.")
    if not outcome:
        raise Refused("Scrivi l'esito: cosa è stato fatto, o perché la richiesta è respinta.")
    with svc.db.session() as session:
        request = _request(session, who.tenant_id, request_id)
        if request.status != RequestStatus.OPEN:
            raise Refused("La richiesta è già chiusa.")
        _close(session, request, who, status, outcome)


def _close(
    session: Session, request: DataRequest, who: Actor, status: RequestStatus, outcome: str
) -> None:
    request.status = status
    request.outcome = outcome
    request.closed_at = utcnow()
    request.closed_by_user_id = who.user_id
    record_actor_audit(
        session,
        who,
        "data_request.close",
        "data_request",
        request.id,
        detail={"status": str(status)},
    )
