"""Consent: the privacy notice, the append-only ledger, and the contact's consent state.

Every change of a contact's consent writes a ledger row in the same transaction, so
the state can always be proved from the ledger.

The ledger outlives the person's erasure, so what it keeps of a message is minimised
(:func:`message_evidence`): the keyword phrase, or the message with identifiers and
health data redacted, its MessageSid and the SHA-256 of the message as received.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.conversation.keywords import normalise
from bot.services import Services
from intents.sensitive import Finding, redact
from storage.models import ConsentEvent, Contact, Message, PrivacyNotice, Tenant, utcnow
from storage.queries import get_contact
from storage.rows import LeafRows
from storage.vocabulary import Channel, Consent, LedgerEvent, LegalBasis

log = logging.getLogger(__name__)

# Twilio error codes meaning the person opted out or blocked the business.
OPT_OUT_ERROR_CODES = frozenset({21610, 63014})

DEFAULT_NOTICE_TEXT = (
    "Informativa breve: {office} tratta i dati che ci invia su WhatsApp (numero, messaggi, "
    "allegati) solo per gestire le sue segnalazioni e le comunicazioni di servizio del "
    "condominio. I dati sono conservati per il tempo necessario e poi cancellati; può "
    "chiederne copia o cancellazione e revocare il consenso in ogni momento scrivendo STOP."
)


def notice_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


MAX_VERSION = 32
MAX_SHORT_TEXT = 1500  # it travels inside the welcome, a WhatsApp message (1,600 max)
MAX_FULL_TEXT = 60_000


def notice_problems(
    session: Session, tenant: Tenant, version: str, text: str, full_text: str | None
) -> list[str]:
    """Why a new notice version cannot be published, in Italian (none: it can)."""
    problems = []
    if not version.strip() or len(version.strip()) > MAX_VERSION:
        problems.append(f"La versione va indicata (al massimo {MAX_VERSION} caratteri).")
    elif session.scalar(
        select(PrivacyNotice.id).where(
            PrivacyNotice.tenant_id == tenant.id, PrivacyNotice.version == version.strip()
        )
    ):
        problems.append("Questa versione esiste già: ogni versione pubblicata resta com'è.")
    if not text.strip() or len(text) > MAX_SHORT_TEXT:
        problems.append(
            f"L'informativa breve va scritta (al massimo {MAX_SHORT_TEXT} caratteri: "
            "viaggia nel messaggio di benvenuto)."
        )
    if full_text is not None and (not full_text.strip() or len(full_text) > MAX_FULL_TEXT):
        problems.append(
            f"L'informativa completa va scritta (al massimo {MAX_FULL_TEXT} caratteri)."
        )
    for body in (text, full_text or ""):
        try:
            # The welcome fills in the office's name; any other brace would break it.
            body.format(office="")
        except (KeyError, IndexError, ValueError):
            problems.append(
                "Le parentesi graffe sono riservate a {office} (il nome dello studio): "
                "toglile dal testo."
            )
            break
    return problems


def publish_notice(
    session: Session,
    tenant: Tenant,
    version: str,
    text: str,
    full_url: str,
    full_text: str | None = None,
) -> PrivacyNotice:
    """Add an immutable notice version (the short text and, if given, the full one)
    and make it the active one. Check it first with :func:`notice_problems`."""
    for notice in session.scalars(
        select(PrivacyNotice).where(PrivacyNotice.tenant_id == tenant.id)
    ):
        notice.active = False
    notice = PrivacyNotice(
        tenant_id=tenant.id,
        version=version,
        text=text,
        full_text=full_text,
        full_sha256=notice_sha256(full_text) if full_text is not None else None,
        full_notice_url=full_url,
        sha256=notice_sha256(text),
        active=True,
    )
    session.add(notice)
    session.flush()
    return notice


def notice_versions(session: Session, tenant: Tenant) -> Sequence[PrivacyNotice]:
    """Every version the office published, newest first."""
    return session.scalars(
        select(PrivacyNotice)
        .where(PrivacyNotice.tenant_id == tenant.id)
        .order_by(PrivacyNotice.id.desc())
    ).all()


def active_notice(session: Session, tenant: Tenant) -> PrivacyNotice | None:
    return session.scalar(
        select(PrivacyNotice).where(PrivacyNotice.tenant_id == tenant.id, PrivacyNotice.active)
    )


@dataclass(frozen=True)
class Evidence:
    text: str | None = None
    message_sid: str | None = None
    # Hex SHA-256 of the message as received, when the evidence is a message.
    sha256: str | None = None


def message_evidence(
    body: str,
    message_sid: str,
    *,
    keyword_only: bool,
    findings: Sequence[Finding],
    opt_out_type: str | None = None,
) -> Evidence:
    """What the ledger keeps of a message that changed (or asked about) consent.

    A message that is a keyword and nothing else is kept as its normalised phrase
    ("accetto"); any other message ("Sì, accetto, ma il mio IBAN è ...") with its
    identifiers and health data redacted, whatever the office's policy for stored
    bodies, because the ledger outlives the erasure of everything else. The hash of
    the body as received lets whoever holds the original prove it is this one.
    """
    text = normalise(body) if keyword_only else redact(body, list(findings))
    if opt_out_type:
        text = f"{opt_out_type}: {text}"
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    return Evidence(text=text, message_sid=message_sid, sha256=digest)


def record_event(
    svc: Services,
    session: Session,
    tenant: Tenant,
    contact: Contact,
    event: LedgerEvent,
    *,
    channel: Channel,
    actor: str,
    evidence: Evidence | None = None,
    notice: PrivacyNotice | None = None,
    at: datetime | None = None,
    rows: LeafRows | None = None,
) -> None:
    """A ledger event of the contact, in the session's transaction (with ``rows``,
    written with the batch's other rows), and the consent it makes the contact's."""
    notice = notice or active_notice(session, tenant)
    evidence = evidence or Evidence()
    values = dict(
        tenant_id=tenant.id,
        contact_id=contact.id,
        subject_ref=svc.cipher.pseudonym(contact.wa_id),
        event=event,
        at=at or utcnow(),
        channel=channel,
        actor=actor,
        evidence_text=svc.cipher.encrypt(evidence.text) if evidence.text is not None else None,
        evidence_message_sid=evidence.message_sid,
        evidence_sha256=evidence.sha256,
        notice_version=notice.version if notice else None,
        notice_sha256=notice.sha256 if notice else None,
    )
    if rows is None:
        session.add(ConsentEvent(**values))
    else:
        rows.add(ConsentEvent, **values)
    _apply(contact, event)


def _apply(contact: Contact, event: LedgerEvent) -> None:
    imported_consent = event == LedgerEvent.IMPORTED and contact.legal_basis == LegalBasis.CONSENT
    if event == LedgerEvent.GRANTED or imported_consent:
        contact.consent = Consent.GRANTED
        if contact.legal_basis is None:
            contact.legal_basis = LegalBasis.CONSENT
    elif event == LedgerEvent.WITHDRAWN:
        contact.consent = Consent.WITHDRAWN
    elif event == LedgerEvent.NOTICE_SENT and contact.consent == Consent.NONE:
        contact.consent = Consent.PENDING


def record_delivery_error(svc: Services, tenant_id: int, message_id: int, error_code: int) -> None:
    """Twilio says the person opted out or blocked us: they are withdrawn from now on."""
    if error_code not in OPT_OUT_ERROR_CODES:
        return
    with svc.db.session() as session:
        tenant = session.get(Tenant, tenant_id)
        message = session.get(Message, message_id)
        if tenant is None or message is None or message.contact_id is None:
            return
        contact = get_contact(session, tenant, message.contact_id)
        if contact is None or contact.consent == Consent.WITHDRAWN:
            return
        record_event(
            svc,
            session,
            tenant,
            contact,
            LedgerEvent.WITHDRAWN,
            channel=Channel.TWILIO_ERROR,
            actor="provider",
            evidence=Evidence(text=f"error {error_code}", message_sid=message.provider_sid),
        )
        log.info("contact %s marked withdrawn after provider error %s", contact.id, error_code)
