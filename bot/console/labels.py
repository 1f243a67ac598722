"""Italian words for the values the console shows; stored values stay in English."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from storage.models import utcnow

CONSENT = {
    "none": "nessun consenso",
    "pending": "in attesa di accettazione",
    "granted": "consenso dato",
    "withdrawn": "consenso revocato",
}
LEGAL_BASIS = {
    "consent": "consenso",
    "contract": "contratto",
    "legitimate_interest": "legittimo interesse",
    "legal_obligation": "obbligo di legge",
    "vital_interests": "interessi vitali (emergenza)",
}
CONTACT_KIND = {"condomino": "condomino", "fornitore": "fornitore", "unknown": "non indicato"}
MODE = {"bot": "bot", "human": "operatore"}
PRIORITY = {"normal": "normale", "urgent": "urgente"}
CONVERSATION_STATUS = {"open": "aperta", "closed": "chiusa"}
DIRECTION = {"in": "ricevuto", "out": "inviato"}
MESSAGE_STATUS = {
    "received": "ricevuto",
    "handled": "elaborato",
    "processed": "elaborato",
    "pending": "in coda",
    "sending": "in invio",
    "accepted": "accettato",
    "scheduled": "programmato",
    "queued": "accodato",
    "sent": "inviato",
    "delivered": "consegnato",
    "read": "letto",
    "failed": "non consegnato",
    "undelivered": "non consegnato",
    "canceled": "annullato",
}
TICKET_STATUS = {"open": "aperto", "in_progress": "in lavorazione", "done": "completato"}
SENSITIVE = {
    "codice_fiscale": "codice fiscale",
    "partita_iva": "partita IVA",
    "iban": "IBAN",
    "health": "dati sanitari",
    "identity_document": "documento d'identità",
    "email": "email",
    "phone": "telefono",
}
PURPOSE = {
    "reply": "risposta del bot",
    "welcome": "benvenuto",
    "notice": "informativa",
    "safety": "indicazioni di sicurezza",
    "rights": "diritti privacy",
    "consent_confirmation": "conferma consenso",
    "withdrawal_confirmation": "conferma revoca",
    "operator": "operatore",
    "api": "gestionale (API)",
}
OFFICE_ZONE = ZoneInfo("Europe/Rome")
ROLE = {"operator": "operatore", "admin": "amministratore"}
CONSENT_EVENT = {
    "notice_sent": "informativa inviata",
    "granted": "consenso dato",
    "withdrawn": "consenso revocato",
    "access_requested": "richiesta di accesso",
    "erasure_requested": "richiesta di cancellazione",
    "imported": "importato",
    "vital_interests_reply": "indicazioni di sicurezza (interessi vitali)",
}
TICKET_EVENT = {
    "opened": "aperta",
    "notified": "operatori avvisati",
    "acknowledged": "presa in carico",
    "released": "restituita al bot",
    "closed": "chiusa",
}
ACK_VIA = {
    "takeover": "presa della conversazione",
    "console": "pulsante Presa in carico",
    "api": "gestionale (API)",
    "voice": "telefonata al reperibile",
}


def label(table: dict[str, str], value: str | None, missing: str = "—") -> str:
    """The Italian word for ``value``; an unknown value is shown as it is, never hidden."""
    if value is None:
        return missing
    return table.get(value, value)


def local_time(moment: datetime | None) -> str:
    # The office reads Italian local time; the database keeps UTC.
    if moment is None:
        return "—"
    return moment.astimezone(OFFICE_ZONE).strftime("%d/%m/%Y %H:%M")


def waited(since: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in the words an operator would use ("3 min", "2 h 5 min")."""
    if since is None:
        return "—"
    minutes = max(0, int(((now or utcnow()) - since).total_seconds() // 60))
    if minutes < 1:
        return "meno di un minuto"
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{hours // 24} giorni"


def confidence(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}".replace(".", ",")


JINJA_FILTERS = {
    "local_time": local_time,
    "waited": waited,
    "confidence": confidence,
}
JINJA_TABLES = {
    "CONSENT": CONSENT,
    "LEGAL_BASIS": LEGAL_BASIS,
    "CONTACT_KIND": CONTACT_KIND,
    "MODE": MODE,
    "PRIORITY": PRIORITY,
    "CONVERSATION_STATUS": CONVERSATION_STATUS,
    "DIRECTION": DIRECTION,
    "MESSAGE_STATUS": MESSAGE_STATUS,
    "TICKET_STATUS": TICKET_STATUS,
    "SENSITIVE": SENSITIVE,
    "PURPOSE": PURPOSE,
    "ROLE": ROLE,
    "CONSENT_EVENT": CONSENT_EVENT,
    "TICKET_EVENT": TICKET_EVENT,
    "ACK_VIA": ACK_VIA,
}
