"""Italian words for the values the console shows; stored values stay in English."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.conversation.alerts import HAZARDS
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
    "work_order": "ordine di lavoro",
    "ticket_update": "aggiornamento del ticket",
    "building_notice": "avviso di condominio",
}
WORK_ORDER_STATUS = {
    "sent": "inviato",
    "accepted": "accettato",
    "declined": "rifiutato",
    "proposed": "data proposta",
    "done": "completato",
}
BUILDING_ROLE = {"proprietario": "proprietario", "inquilino": "inquilino", "fornitore": "fornitore"}
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
    "updated": "modificata",
    "note_added": "nota interna",
    "building_set": "condominio indicato",
    "work_order": "ordine di lavoro",
    "resident_told": "condòmino aggiornato",
    "confirmed_solved": "risolto, confermato dal condòmino",
}
ACK_VIA = {
    "takeover": "presa della conversazione",
    "console": "pulsante Presa in carico",
    "api": "gestionale (API)",
    "voice": "telefonata al reperibile",
}


DATA_SOURCE = {
    "whatsapp_inbound": "ha scritto su WhatsApp",
    "import": "importato dallo studio",
    "operator": "inserito da un operatore",
}
INTENT = {
    "guasto": "guasto",
    "emergenza": "emergenza",
    "intervento_completato": "intervento completato",
    "preventivo": "preventivo",
    "fattura_pagamento": "fatture e pagamenti",
    "appuntamento": "appuntamento",
    "documenti": "documenti",
    "assemblea": "assemblea",
    "richiesta_operatore": "richiesta di un operatore",
    "saluto_ringraziamento": "saluto o ringraziamento",
    "altro": "altro",
}
TICKET_KIND = {
    "guasto": "guasto",
    "preventivo": "preventivo",
    "amministrazione": "amministrazione",
    "documenti": "documenti",
    "assemblea": "assemblea",
    "intervento": "intervento",
    "emergency": "emergenza",
}
EVENT_STATUS = {"proposed": "proposto", "confirmed": "confermato", "canceled": "annullato"}
ENTITY = {
    "DATE": "data",
    "TIME": "ora",
    "ADDRESS": "indirizzo",
    "CONDOMINIO": "condominio",
    "MONEY": "importo",
    "INVOICE_NO": "fattura n.",
}
# The hazards the console names (the conversation layer's words), and the safety
# net's other rule names (intents.safety).
SAFETY_RULE = {
    **HAZARDS,
    "carbon_monoxide": "monossido di carbonio",
    "electrical": "guasto elettrico pericoloso",
    "structural": "danno strutturale",
    "person_unresponsive": "persona che non risponde",
}
BOT_ACTION = {
    "consent_withdrawn": "consenso revocato",
    "consent_granted": "consenso dato",
    "already_granted": "consenso già dato",
    "access_requested": "richiesta di accesso ai dati",
    "erasure_requested": "richiesta di cancellazione",
    "stored_withdrawn": "conservato (contatto che ha revocato)",
    "notice_resent": "informativa inviata di nuovo",
    "help": "aiuto",
    "provider_keyword": "parola chiave gestita da Twilio",
    "welcome": "benvenuto",
    "consent_reminder": "promemoria del consenso",
    "emergency_before_consent": "emergenza prima del consenso",
    "emergency_handoff": "emergenza passata all'operatore",
    "emergency_in_human_mode": "emergenza con operatore in carico",
    "human_mode": "conversazione con un operatore",
    "handoff": "passata a un operatore",
    "handoff_after_clarification": "passata a un operatore dopo un chiarimento",
    "clarify": "domanda di chiarimento",
    "stored": "conservato",
    "media_received": "allegato ricevuto",
    "ticket_guasto": "ticket guasto",
    "ticket_preventivo": "ticket preventivo",
    "ticket_amministrazione": "ticket amministrazione",
    "ticket_documenti": "ticket documenti",
    "ticket_assemblea": "ticket assemblea",
    "ticket_work_done": "intervento completato",
    "event": "appuntamento proposto",
    "acknowledged": "risposta di cortesia",
    "notices_on": "avvisi attivati",
    "notices_off": "avvisi disattivati",
    "building_asked": "chiesto il condominio",
    "building_given": "condominio indicato",
    "work_order_answer": "risposta a un ordine di lavoro",
    "office_info": "informazioni sullo studio",
    "resolved_confirmed": "risolto, confermato",
}
AUDIT_ACTION = {
    "login": "accesso alla console",
    "login.failed": "accesso non riuscito",
    "logout": "uscita dalla console",
    "conversation.view": "conversazione aperta",
    "conversation.takeover": "conversazione presa in carico",
    "conversation.release": "conversazione restituita al bot",
    "conversation.auto_release": "conversazione restituita al bot per inattività",
    "conversation.close": "conversazione chiusa",
    "conversation.assign": "conversazione assegnata",
    "conversation.reply": "risposta inviata",
    "conversation.reply_refused": "risposta rifiutata",
    "ticket.view": "ticket aperto",
    "ticket.status": "stato del ticket cambiato",
    "audit_log.view": "registro accessi consultato",
    "audit_log.export": "registro accessi esportato",
    "audit.verify": "catena del registro verificata",
    "bot_log.view": "registro del bot consultato",
    "bot_log.export": "registro del bot esportato",
    "export": "esportazione dei dati",
    "erasure": "cancellazione di un contatto",
    "register.export": "registro dei trattamenti esportato",
    "retention.purge": "cancellazione periodica",
    "retention.preview": "anteprima della cancellazione periodica",
    "tenant.settings": "impostazioni dello studio cambiate",
    "tenant.terminated": "servizio cessato",
    "oncall.add": "reperibile aggiunto",
    "oncall.remove": "reperibile tolto",
    "escalation.call": "chiamata al reperibile",
    "escalation.acknowledged": "emergenza confermata al telefono",
    "push.subscribe": "notifiche attivate",
    "push.unsubscribe": "notifiche disattivate",
    "push.sent": "notifica inviata",
    "user.invite": "utente invitato",
    "user.disable": "utente disattivato",
    "user.enable": "utente riattivato",
    "user.role": "ruolo cambiato",
    "user.password_link": "link per la password creato",
    "user.password_set": "password impostata con il link",
    "users.view": "elenco utenti consultato",
    "notice.publish": "informativa pubblicata",
    "contacts.view": "contatti consultati",
    "contact.view": "scheda contatto aperta",
    "contacts.import": "contatti importati",
    "data_request.open": "richiesta dell'interessato registrata",
    "data_request.export_prepared": "esportazione preparata",
    "data_request.export_download": "esportazione scaricata",
    "data_request.close": "richiesta dell'interessato chiusa",
    "reports.view": "rapporti consultati",
    "reports.export": "rapporti esportati",
    "conversation.note": "nota interna aggiunta",
    "conversation.template": "modello approvato inviato",
    "canned_response.create": "risposta pronta creata",
    "canned_response.update": "risposta pronta modificata",
    "canned_response.delete": "risposta pronta eliminata",
}
TARGET_TYPE = {
    "conversation": "conversazione",
    "ticket": "ticket",
    "contact": "contatto",
    "user": "utente",
    "tenant": "studio",
    "oncall": "reperibile",
    "push_subscription": "dispositivo",
    "data_request": "richiesta",
    "notice": "informativa",
}
REQUEST_KIND = {"access": "accesso ai dati", "erasure": "cancellazione"}
REQUEST_STATUS = {"open": "aperta", "done": "evasa", "refused": "respinta"}
REQUEST_ORIGIN = {"chat": "WhatsApp", "console": "inserita dallo studio"}
CHANNEL = {
    "whatsapp": "WhatsApp",
    "twilio_advanced_opt_out": "opt-out di Twilio",
    "twilio_error": "errore di consegna",
    "import": "importazione",
    "console": "console",
}
IMPORT_OUTCOME = {"imported": "importato", "updated": "aggiornato", "refused": "rifiutato"}
PURGE_KIND = {
    "media": "allegati",
    "messages": "messaggi",
    "bot_log": "voci del registro del bot",
    "never_consented_contacts": "contatti che non hanno mai accettato",
    "inactive_contacts": "contatti inattivi",
    "work_orders": "ordini di lavoro conclusi",
    "ticket_notes": "note interne dei ticket",
    "notices": "avvisi di condominio",
}
# The office's settings: a label (and a hint) per key; groups by the key's prefix.
SETTING = {
    "send_rate_per_second": ("Messaggi al secondo (massimo)", "Da 1 a 80."),
    "redact_sensitive": ("Oscura i dati sensibili nei messaggi conservati", ""),
    "store_profile_name": ("Conserva il nome del profilo WhatsApp", "Di norma no: non serve."),
    "proper_channel": (
        "Canale ufficiale per i documenti",
        "Indicato nel benvenuto, ad es. «l'email info@studio.it o la PEC studio@pec.it».",
    ),
    "dpo_contact": ("Contatto del DPO o referente privacy", "Nel registro e nell'informativa."),
    "retention.messages_days": ("Messaggi", "Giorni dalla ricezione o dall'invio."),
    "retention.media_days": ("Allegati", "Giorni dalla ricezione."),
    "retention.bot_log_days": ("Registro del bot", "Giorni."),
    "retention.never_consented_days": (
        "Contatti che non hanno mai accettato",
        "Giorni dal primo messaggio.",
    ),
    "retention.inactive_contact_days": ("Contatti inattivi", "Giorni dall'ultimo contatto."),
    "retention.work_orders_days": ("Ordini di lavoro conclusi", "Giorni dall'ultima risposta."),
    "retention.ticket_notes_days": ("Note interne dei ticket", "Giorni dalla scrittura."),
    "retention.notices_days": ("Avvisi di condominio", "Giorni dall'invio."),
    "notices_daily_cap": (
        "Destinatari al giorno dei messaggi avviati dallo studio",
        "Il livello di Meta: 250 all'inizio.",
    ),
    "office.address": ("Indirizzo dello studio", "Lo dice il bot a chi lo chiede."),
    "office.pec": ("PEC dello studio", ""),
    "office.email": ("E-mail dello studio", ""),
    "office.lift_emergency": (
        "Numero di emergenza degli ascensori",
        "Se un condominio non ha il suo (colonna «ascensore» dei condomìni).",
    ),
    "office.gas_emergency": (
        "Pronto intervento gas",
        "Se un condominio non ha il suo (colonna «gas» dei condomìni).",
    ),
    "emergency.ack_seconds": (
        "Attesa prima di chiamare il reperibile",
        "Secondi senza presa in carico, da 10 a 86400.",
    ),
    "emergency.call_from": (
        "Numero da cui partono le chiamate",
        "Un numero vocale Twilio; vuoto: quello dello studio.",
    ),
    "emergency.rounds": ("Giri di chiamate ai reperibili", "Da 1 a 10."),
    "templates.work_order": (
        "Modello per gli ordini di lavoro ai fornitori",
        "ContentSid (HX…) del modello approvato, con i pulsanti accetta/rifiuta/proponi.",
    ),
    "templates.ticket_update": (
        "Modello per gli aggiornamenti dei ticket",
        "ContentSid (HX…) del modello approvato.",
    ),
    "approved_templates": (
        "Modelli approvati per l'operatore",
        "Uno per riga: Nome | ContentSid (HX…). Offerti dopo le 24 ore.",
    ),
    "hours.mon": ("Lunedì", "Es. 09:00-13:00,14:30-18:00; «chiuso» se chiuso."),
    "hours.tue": ("Martedì", ""),
    "hours.wed": ("Mercoledì", ""),
    "hours.thu": ("Giovedì", ""),
    "hours.fri": ("Venerdì", ""),
    "hours.sat": ("Sabato", ""),
    "hours.sun": ("Domenica", ""),
    "closed_days": ("Giorni di chiusura", "Date AAAA-MM-GG separate da virgole."),
    "handoff.reminder_minutes": (
        "Promemoria al residente in attesa dell'operatore",
        "Minuti dopo il passaggio all'operatore; 0: nessun promemoria.",
    ),
}
SETTING_GROUP = {
    "": "Generali",
    "hours": "Orari dello studio",
    "closed_days": "Orari dello studio",
    "handoff": "Passaggio all'operatore",
    "retention": "Conservazione dei dati (giorni)",
    "emergency": "Emergenze",
    "templates": "Modelli WhatsApp (Twilio)",
    "approved_templates": "Modelli WhatsApp (Twilio)",
    "notices_daily_cap": "Avvisi di condominio",
    "office": "Lo studio (risposte del bot)",
}
# What the settings' validation says (English, for the CLI), as the console says it.
_SETTING_ERRORS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"expected true or false"), "Scegli sì o no."),
    (re.compile(r"expected a number from (\d+) to (\d+)"), r"Serve un numero da \1 a \2."),
    (re.compile(r"expected a whole number"), "Serve un numero intero."),
    (re.compile(r"expected a text of 1 to (\d+)"), r"Serve un testo da 1 a \1 caratteri."),
    (re.compile(r"expected a phone number"), "Serve un numero di telefono, ad es. +390212345678."),
    (
        re.compile(r"expected a ContentSid"),
        "Serve un ContentSid: HX seguito da 32 cifre esadecimali.",
    ),
    (re.compile(r"expected NAME\|ContentSid"), "Scrivi un modello per riga: Nome | HX…"),
    (re.compile(r"same name"), "Due modelli hanno lo stesso nome."),
    (re.compile(r"at most (\d+) templates"), r"Al massimo \1 modelli."),
    (
        re.compile(r"HH:MM|times go from"),
        "Scrivi gli orari come 09:00-13:00,14:30-18:00, o «chiuso».",
    ),
    (re.compile(r"end must come after"), "Ogni fascia deve finire dopo l'inizio."),
    (re.compile(r"overlap"), "Le fasce orarie si sovrappongono."),
    (re.compile(r"not a date"), "Scrivi le date come AAAA-MM-GG, separate da virgole."),
    (re.compile(r"at most (\d+) closing days"), r"Al massimo \1 giorni di chiusura."),
)


def setting_error(message: str) -> str:
    """The Italian for a setting's validation error (a generic one if it is new)."""
    for pattern, italian in _SETTING_ERRORS:
        found = pattern.search(message)
        if found:
            return found.expand(italian)
    return "Valore non valido."


def setting_label(key: str) -> tuple[str, str]:
    """A setting's label and hint; a key added later without a label gets a readable one."""
    if key in SETTING:
        return SETTING[key]
    return key.rpartition(".")[2].replace("_", " ").capitalize(), ""


def setting_group(key: str) -> str:
    group = key.partition(".")[0] if "." in key else key
    return SETTING_GROUP.get(group, SETTING_GROUP[""] if "." not in key else "Altre impostazioni")


def bot_action(value: str | None) -> str:
    """A bot-log action in Italian; two joined by ``+`` are both said."""
    if not value:
        return "—"
    return " + ".join(label(BOT_ACTION, part) for part in value.split("+"))


def duration(seconds: float | None) -> str:
    """A time span as people say it: "45 s", "12 min", "3 h 20 min", "2 giorni"."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{int(seconds)} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{hours // 24} giorni"


def share(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


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


def until(moment: datetime | None) -> str:
    """How long from now ("3 h 12 min"), in the same words as :func:`waited`."""
    return "—" if moment is None else waited(utcnow(), moment)


def confidence(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}".replace(".", ",")


def local_day(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(OFFICE_ZONE).strftime("%d/%m/%Y")


# Delivery as WhatsApp shows it: one tick sent, two delivered, two blue read.
TICKS = {
    "pending": ("pending", "…"),
    "sending": ("pending", "…"),
    "accepted": ("pending", "…"),
    "scheduled": ("pending", "…"),
    "queued": ("pending", "…"),
    "sent": ("sent", "✓"),
    "delivered": ("delivered", "✓✓"),
    "read": ("read", "✓✓"),
    "failed": ("failed", "✗"),
    "undelivered": ("failed", "✗"),
    "canceled": ("failed", "✗"),
}
# Twilio's error codes for WhatsApp sends, as an operator needs to read them.
TWILIO_ERRORS = {
    21610: "Il contatto ha scritto STOP: non riceve più messaggi da questo numero.",
    30003: "Telefono del destinatario non raggiungibile (spento o senza rete).",
    30005: "Numero sconosciuto o non più attivo.",
    30006: "Numero fisso o non raggiungibile dall'operatore telefonico.",
    30007: "Messaggio filtrato dall'operatore o da WhatsApp.",
    30008: "Errore sconosciuto della consegna: riprova più tardi.",
    63003: "Il numero non usa WhatsApp.",
    63005: "WhatsApp non ha accettato il contenuto del messaggio.",
    63013: "Il messaggio viola le regole di WhatsApp.",
    63014: "Il contatto ha bloccato il numero dello studio.",
    63016: "Fuori dalla finestra di 24 ore: si può inviare solo un modello approvato.",
    63018: "Troppi messaggi in poco tempo: limite di WhatsApp superato.",
    63019: "L'allegato non si è potuto scaricare: il collegamento era scaduto o irraggiungibile.",
    63024: "Destinatario non valido per WhatsApp.",
    63032: "WhatsApp non consegna a questo numero per una sua sperimentazione.",
    63049: "WhatsApp ha scelto di non consegnare questo messaggio.",
}


def delivery_error(code: int | None) -> str:
    """Why Twilio did not deliver, in Italian; an unknown code says which it was."""
    if code is None:
        return ""
    return TWILIO_ERRORS.get(code, f"Errore {code} di Twilio.")


def ticks(status: str) -> tuple[str, str]:
    """``(css class, symbol)`` of a message's delivery state."""
    return TICKS.get(status, ("pending", "…"))


JINJA_FILTERS = {
    "delivery_error": delivery_error,
    "ticks": ticks,
    "local_time": local_time,
    "local_day": local_day,
    "waited": waited,
    "until": until,
    "confidence": confidence,
    "duration": duration,
    "share": share,
    "bot_action": bot_action,
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
    "WORK_ORDER_STATUS": WORK_ORDER_STATUS,
    "BUILDING_ROLE": BUILDING_ROLE,
    "ACK_VIA": ACK_VIA,
    "DATA_SOURCE": DATA_SOURCE,
    "INTENT": INTENT,
    "TICKET_KIND": TICKET_KIND,
    "EVENT_STATUS": EVENT_STATUS,
    "ENTITY": ENTITY,
    "SAFETY_RULE": SAFETY_RULE,
    "BOT_ACTION": BOT_ACTION,
    "AUDIT_ACTION": AUDIT_ACTION,
    "TARGET_TYPE": TARGET_TYPE,
    "REQUEST_KIND": REQUEST_KIND,
    "REQUEST_STATUS": REQUEST_STATUS,
    "REQUEST_ORIGIN": REQUEST_ORIGIN,
    "CHANNEL": CHANNEL,
    "IMPORT_OUTCOME": IMPORT_OUTCOME,
    "PURGE_KIND": PURGE_KIND,
}
