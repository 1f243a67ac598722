"""The office's register of processing activities (art. 30(1) GDPR), generated on demand.

The register is built from what is running, not from a document someone must remember
to edit: the WhatsApp transport and the operator notifier actually configured decide
which providers are recipients (and so which transfers abroad exist), the office's own
retention terms and settings decide the terms and the data kept, and the privacy
notice is the one in force. Keys are English for machines; the values are Italian,
because the office's DPO reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from bot.crm.endpoints import endpoint_hosts
from bot.office.lifecycle import EXPORT_WINDOW
from bot.office.settings import effective_settings
from bot.office.throttle import POLICIES
from bot.privacy.audit import record_audit
from bot.privacy.consent import active_notice
from bot.services import Services
from storage.models import ApiToken, Tenant, iso_utc

FORMAT = "portineria.processing-register"
FORMAT_VERSION = 1

PROCESSOR = {
    "name": "Fornitore del servizio Portineria",
    "role": "Responsabile del trattamento (art. 28 GDPR), secondo il contratto con lo studio",
    "service": (
        "Assistente WhatsApp per lo studio: ricezione e risposta ai messaggi, registro dei "
        "consensi, ticket ed eventi, console per gli operatori, API verso i gestionali"
    ),
}
DPO_TO_COMPLETE = (
    "Da indicare a cura del titolare (responsabile della protezione dei dati, se designato)"
)

# -- recipients and transfers ----------------------------------------------------------

RECIPIENTS: dict[str, dict[str, str]] = {
    "operators": {
        "name": "Operatori e amministratori dello studio",
        "description": (
            "Personale autorizzato dal titolare (art. 29 GDPR e art. 2-quaterdecies Codice "
            "privacy), con accesso alla console secondo il ruolo"
        ),
    },
    "admins": {
        "name": "Amministratori dello studio",
        "description": "Utenti della console con ruolo di amministratore",
    },
    "processor": {
        "name": PROCESSOR["name"],
        "description": "Responsabile del trattamento: ospita ed eroga il servizio",
    },
    "meta": {
        "name": "Meta Platforms (WhatsApp)",
        "description": (
            "Fornitore della piattaforma WhatsApp Business attraverso cui i messaggi sono "
            "scambiati con il numero dello studio"
        ),
    },
    "twilio": {
        "name": "Twilio",
        "description": (
            "Fornitore WhatsApp Business: inoltra i messaggi, gli allegati e gli esiti di "
            "consegna tra WhatsApp e il servizio"
        ),
    },
    "pusher": {
        "name": "Pusher (notifiche in tempo reale)",
        "description": (
            "Inoltra agli operatori le notifiche della console; riceve solo identificativi "
            "tecnici di conversazione e messaggio, priorità e categoria della richiesta, "
            "mai il testo dei messaggi"
        ),
    },
    "crm": {
        "name": "Gestionale dello studio collegato tramite API",
        "description": (
            "Sistemi dello studio autorizzati con un token API dello studio: leggono "
            "contatti, conversazioni, messaggi, ticket ed eventi di consenso"
        ),
    },
    "crm_webhooks": {
        "name": "Gestionale dello studio che riceve gli eventi (webhook)",
        "description": (
            "Sistemi dello studio a cui il servizio invia eventi firmati (messaggi ricevuti, "
            "esiti di consegna, ticket, consensi, richieste di operatore, emergenze) agli "
            "indirizzi configurati, elencati per host: identificativi di messaggi, "
            "conversazioni, contatti e ticket, stati e un breve riepilogo; {extra}; mai gli "
            "allegati"
        ),
    },
}
WEBHOOK_EXTRA = {
    (False, False): "senza il testo dei messaggi né il numero del contatto",
    (True, False): "con il testo dei messaggi (scelta dello studio), senza il numero del contatto",
    (False, True): "con il numero del contatto (scelta dello studio), senza il testo dei messaggi",
    (True, True): "con il testo dei messaggi e il numero del contatto (scelta dello studio)",
}

THIRD_COUNTRY_SAFEGUARD = (
    "Decisione di adeguatezza della Commissione europea (EU-US Data Privacy Framework) per "
    "i fornitori certificati; altrimenti clausole contrattuali tipo (art. 46(2)(c) GDPR) "
    "previste dall'accordo sul trattamento dei dati del fornitore"
)
TRANSFERS: dict[str, dict[str, str]] = {
    "meta": {"destination": "Stati Uniti d'America e altri paesi in cui opera il fornitore"},
    "twilio": {"destination": "Stati Uniti d'America"},
    "pusher": {"destination": "Paesi terzi secondo il cluster configurato del fornitore"},
}
NO_TRANSFERS = "Nessun trasferimento verso paesi terzi da parte dei destinatari di questa attività"
TRANSFERS_IN_USE = "Sì, tramite i fornitori indicati, con le garanzie riportate"

# -- technical and organisational measures ---------------------------------------------

MEASURES: dict[str, str] = {
    "encryption_at_rest": (
        "Cifratura a riposo di testi dei messaggi, payload dei webhook, prove di consenso e "
        "file multimediali con chiavi Fernet (AES e HMAC-SHA256) fornite dall'ambiente e "
        "ruotabili senza perdere i dati già cifrati"
    ),
    "signed_webhooks": (
        "I webhook in ingresso sono accettati solo con una firma valida del fornitore, "
        "verificata sull'URL pubblico; senza firma sono rifiutati e nulla è conservato"
    ),
    "https": "Cifratura in transito: il servizio è esposto su HTTPS",
    "tenant_segregation": (
        "Segregazione tra studi: ogni interrogazione è limitata allo studio; i token API "
        "sono per studio e conservati solo come hash SHA-256"
    ),
    "audit_chain": (
        "Registro di audit con catena di hash SHA-256 per studio: visualizzazioni di "
        "conversazioni, prese in carico, risposte, esportazioni e cancellazioni sono "
        "registrate con autore, ora e indirizzo IP; ogni manomissione è rilevabile "
        "(portineria audit verify)"
    ),
    "consent_append_only": (
        "Registro dei consensi in sola aggiunta: il database stesso rifiuta modifiche e "
        "cancellazioni; l'interessato è indicato con un hash con chiave del suo "
        "identificativo WhatsApp"
    ),
    "console_access": (
        "Password degli operatori conservate con hash argon2; accessi falliti rallentati "
        "con attese progressive per indirizzo, account e studio (fino a {ip_wait_minutes} "
        "minuti), senza blocchi che un terzo possa provocare; sessioni revocate dal server "
        "all'uscita, al cambio password e alla disattivazione dell'account; ruoli operatore "
        "e amministratore; protezione CSRF su ogni modulo della console"
    ),
    "outbound_gate": (
        "Nessun messaggio a chi ha revocato il consenso o non ha accettato il canale; "
        "fuori dalla finestra di 24 ore solo modelli approvati; limite di invio per studio"
    ),
    "payload_dropped": "Il payload grezzo del webhook è cancellato appena il messaggio è elaborato",
    "profile_name_not_stored": (
        "Minimizzazione: il nome del profilo WhatsApp non è conservato (impostazione dello studio)"
    ),
    "sensitive_redacted": (
        "Dati particolari e identificativi (salute, codice fiscale, partita IVA, IBAN, "
        "documenti d'identità) riconosciuti automaticamente, oscurati nel testo conservato "
        "e seguiti dall'invito a usare i canali appropriati"
    ),
    "sensitive_flagged": (
        "Dati particolari e identificativi (salute, codice fiscale, partita IVA, IBAN, "
        "documenti d'identità) riconosciuti automaticamente, segnalati e seguiti "
        "dall'invito a usare i canali appropriati (l'oscuramento è disattivato dallo studio)"
    ),
    "media_limits": "Allegati accettati solo dei tipi ammessi e fino a {media_max} ciascuno",
    "retention_purge": (
        "Cancellazione automatica giornaliera secondo i termini di conservazione dello "
        "studio, file multimediali compresi, con traccia nel registro di audit"
    ),
    "human_mode_silence": (
        "Quando un operatore prende in carico la conversazione il bot tace; la conversazione "
        "torna al bot dopo {human_timeout} minuti di inattività"
    ),
    "pusher_private_channels": (
        "Notifiche su canali privati autorizzati solo per lo studio dell'operatore"
    ),
    "signed_outbound_webhooks": (
        "Eventi verso il gestionale dello studio firmati con HMAC-SHA256 e un segreto per "
        "indirizzo, inviati solo su HTTPS a indirizzi pubblici salvo eccezione esplicita "
        "dello studio (stessa macchina o rete privata), con il minimo dei dati"
    ),
}

# -- what the office's settings and the running configuration say ---------------------


@dataclass(frozen=True)
class _Context:
    twilio: bool
    pusher: bool
    api_tokens: int
    # Hosts of the office's CRM webhook endpoints, and what their events carry.
    webhook_hosts: tuple[str, ...]
    webhook_text: bool
    webhook_phone: bool
    https: bool
    store_profile_name: bool
    redact_sensitive: bool
    terms: dict[str, int]
    media_max: str
    human_timeout_minutes: int

    def uses(self, recipient: str) -> bool:
        return {
            "twilio": self.twilio,
            "pusher": self.pusher,
            "crm": self.api_tokens > 0,
            "crm_webhooks": bool(self.webhook_hosts),
        }.get(recipient, True)


def _context(
    svc: Services,
    settings: dict[str, Any],
    api_tokens: int,
    webhook_hosts: tuple[str, ...],
    webhook_options: dict[str, Any],
) -> _Context:
    return _Context(
        # The live objects, built from WHATSAPP_TRANSPORT and the Pusher settings, are
        # what actually sends: the register follows them, not the raw variables.
        twilio=svc.transport.name == "twilio",
        pusher=svc.notifier.name == "pusher",
        api_tokens=api_tokens,
        webhook_hosts=webhook_hosts,
        webhook_text=bool(webhook_options.get("include_text")),
        webhook_phone=bool(webhook_options.get("include_phone")),
        https=str(svc.config.get("PUBLIC_BASE_URL", "")).startswith("https://"),
        store_profile_name=settings["store_profile_name"],
        redact_sensitive=settings["redact_sensitive"],
        terms=settings["retention"],
        media_max=_size(int(svc.config.get("MEDIA_MAX_BYTES") or 0)),
        human_timeout_minutes=int(svc.config["HUMAN_MODE_TIMEOUT_MINUTES"]),
    )


def _size(size: int) -> str:
    return f"{size // 1024**2} MB" if size >= 1024**2 else f"{size // 1024} KB"


def _measure(key: str, ctx: _Context) -> str | None:
    if key == "https" and not ctx.https:
        return None
    if key == "pusher_private_channels" and not ctx.pusher:
        return None
    if key == "signed_outbound_webhooks" and not ctx.webhook_hosts:
        return None
    if key == "profile_name_not_stored" and ctx.store_profile_name:
        return None
    if key == "sensitive":
        key = "sensitive_redacted" if ctx.redact_sensitive else "sensitive_flagged"
    return MEASURES[key].format(
        ip_wait_minutes=int(POLICIES["ip"].cap // 60),
        media_max=ctx.media_max,
        human_timeout=ctx.human_timeout_minutes,
    )


# -- the activities --------------------------------------------------------------------


def _term(data: str, days: int | None, term: str) -> dict[str, Any]:
    return {"data": data, "days": days, "term": term}


def _termination_term() -> dict[str, Any]:
    days = EXPORT_WINDOW.days
    return _term(
        "Tutti i dati dell'attività, alla cessazione del servizio per lo studio",
        days,
        f"Esportabili dallo studio per {days} giorni dalla cessazione, poi cancellati "
        "(art. 28(3)(g) GDPR)",
    )


def _messages_retention(t: dict[str, int]) -> list[dict[str, Any]]:
    return [
        _term(
            "Testo dei messaggi ricevuti e inviati, esiti di consegna",
            t["messages_days"],
            f"{t['messages_days']} giorni dalla ricezione o dall'invio (i messaggi in "
            "entrata non ancora elaborati restano fino all'elaborazione)",
        ),
        _term(
            "Allegati multimediali",
            t["media_days"],
            f"{t['media_days']} giorni dalla ricezione, file compresi",
        ),
        _term(
            "Registro del bot (richiesta riconosciuta, affidabilità, azione)",
            t["bot_log_days"],
            f"{t['bot_log_days']} giorni",
        ),
        _term(
            "Eventi per il gestionale dello studio (webhook) e registro delle consegne",
            min(t["webhook_days"], t["messages_days"]),
            f"{min(t['webhook_days'], t['messages_days'])} giorni dall'evento; cancellati "
            "prima con il contatto a cui si riferiscono",
        ),
        _term(
            "Contatti che hanno scritto senza mai accettare e senza altra base giuridica",
            t["never_consented_days"],
            f"{t['never_consented_days']} giorni dal primo messaggio, poi cancellati con "
            "tutti i loro dati",
        ),
        _term(
            "Anagrafica del contatto, conversazioni, ticket ed eventi",
            t["inactive_contact_days"],
            f"{t['inactive_contact_days']} giorni dall'ultimo contatto, poi cancellati con "
            "tutti i loro dati; prima, se l'interessato ne chiede la cancellazione",
        ),
    ]


def _consent_retention(_t: dict[str, int]) -> list[dict[str, Any]]:
    return [
        _term(
            "Eventi del registro dei consensi",
            None,
            "Nessuna cancellazione automatica durante il servizio: provano informativa, "
            "consenso e revoca (art. 7(1) GDPR); dopo la cancellazione del contatto "
            "restano solo con l'hash con chiave dell'identificativo e la parola chiave "
            "ricevuta, senza messaggi",
        ),
    ]


def _handoff_retention(t: dict[str, int]) -> list[dict[str, Any]]:
    return [
        _term(
            "Stato delle conversazioni e presa in carico",
            t["inactive_contact_days"],
            f"Cancellati con il contatto, {t['inactive_contact_days']} giorni dopo "
            "l'ultimo contatto o su richiesta dell'interessato",
        ),
        _term(
            "Risposte degli operatori",
            t["messages_days"],
            f"{t['messages_days']} giorni dall'invio, come gli altri messaggi",
        ),
    ]


def _office_world_retention(t: dict[str, int]) -> list[dict[str, Any]]:
    return [
        _term(
            "Collegamenti ai condomìni (scala, interno, ruolo)",
            t["inactive_contact_days"],
            "Cancellati con il contatto, "
            f"{t['inactive_contact_days']} giorni dopo l'ultimo contatto o su richiesta",
        ),
        _term(
            "Ordini di lavoro conclusi",
            t["work_orders_days"],
            f"{t['work_orders_days']} giorni dall'ultima risposta",
        ),
        _term(
            "Note interne dei ticket",
            t["ticket_notes_days"],
            f"{t['ticket_notes_days']} giorni dalla scrittura",
        ),
        _term(
            "Avvisi di condominio e loro consegne",
            t["notices_days"],
            f"{t['notices_days']} giorni dall'invio",
        ),
    ]


def _accounts_retention(_t: dict[str, int]) -> list[dict[str, Any]]:
    return [
        _term(
            "Account degli operatori",
            None,
            "Per la durata del rapporto con l'operatore; l'amministratore disattiva "
            "l'account quando il rapporto cessa",
        ),
        _term(
            "Registro di audit",
            None,
            "Nessuna cancellazione automatica durante il servizio, perché la catena di hash "
            "resti verificabile dal primo evento",
        ),
    ]


@dataclass(frozen=True)
class _Activity:
    id: str
    name: str
    purposes: tuple[str, ...]
    legal_basis: tuple[str, ...]
    data_subjects: tuple[str, ...]
    personal_data: tuple[str, ...]
    recipients: tuple[str, ...]
    retention: Callable[[dict[str, int]], list[dict[str, Any]]]
    measures: tuple[str, ...]
    # Whether the WhatsApp profile name would be among the data, when the office keeps it.
    holds_contact_identity: bool = False


_RESIDENTS_AND_SUPPLIERS = (
    "Condòmini (proprietari e inquilini)",
    "Fornitori e loro incaricati",
    "Altre persone che scrivono al numero WhatsApp dello studio",
)

ACTIVITIES: tuple[_Activity, ...] = (
    _Activity(
        id="whatsapp_messages",
        name=(
            "Gestione delle comunicazioni WhatsApp di condòmini e fornitori "
            "(segnalazioni, ticket, appuntamenti)"
        ),
        purposes=(
            "Ricevere e gestire segnalazioni di guasti ed emergenze, richieste "
            "amministrative, preventivi, fatture e documenti",
            "Aprire ticket e proporre appuntamenti per sopralluoghi e interventi",
            "Rispondere con comunicazioni di servizio dal numero dello studio",
            "Trasferire ticket ed eventi nei sistemi gestionali dello studio",
        ),
        legal_basis=(
            "Art. 6(1)(b) GDPR: esecuzione del mandato di amministrazione e dei contratti "
            "di fornitura",
            "Art. 6(1)(c) GDPR: obblighi di legge dell'amministratore (art. 1130 c.c.)",
            "Art. 6(1)(a) GDPR: consenso all'uso del canale WhatsApp, raccolto con parola "
            "chiave dopo l'informativa",
            "Art. 6(1)(f) GDPR: legittimo interesse a rispondere a chi scrive senza un "
            "rapporto con lo studio",
            "Art. 6(1)(d) e 9(2)(c) GDPR: interessi vitali, per le sole indicazioni di "
            "sicurezza in un'emergenza, anche a chi non ha accettato il canale o ha revocato "
            "il consenso",
        ),
        data_subjects=_RESIDENTS_AND_SUPPLIERS,
        personal_data=(
            "Numero di telefono e identificativo WhatsApp",
            "Contenuto dei messaggi",
            "Allegati multimediali (foto, documenti, audio, video)",
            "Tipo di contatto (condòmino, fornitore), base giuridica, origine del dato, "
            "data dell'ultimo contatto",
            "Ticket ed eventi con i dati estratti dai messaggi (date, orari, importi, "
            "indirizzi, numeri di fattura)",
            "Registro del bot: richiesta riconosciuta, affidabilità, azione svolta",
            "Eventuali dati particolari o identificativi inviati spontaneamente "
            "dall'interessato (trattati come indicato nelle misure)",
        ),
        recipients=("operators", "processor", "meta", "twilio", "pusher", "crm", "crm_webhooks"),
        retention=_messages_retention,
        measures=(
            "encryption_at_rest",
            "signed_webhooks",
            "https",
            "tenant_segregation",
            "outbound_gate",
            "payload_dropped",
            "profile_name_not_stored",
            "sensitive",
            "media_limits",
            "retention_purge",
            "signed_outbound_webhooks",
        ),
        holds_contact_identity=True,
    ),
    _Activity(
        id="consent_ledger",
        name="Registro dei consensi e delle richieste degli interessati",
        purposes=(
            "Dimostrare l'informativa fornita, il consenso all'uso del canale e la sua revoca",
            "Dare seguito a opposizione, revoca e richieste di accesso e cancellazione "
            "(artt. 15-21 GDPR)",
        ),
        legal_basis=(
            "Art. 6(1)(c) GDPR: obbligo di dimostrare il consenso (art. 7(1)) e principio "
            "di responsabilizzazione (art. 5(2))",
        ),
        data_subjects=(*_RESIDENTS_AND_SUPPLIERS, "Contatti importati dallo studio"),
        personal_data=(
            "Hash con chiave dell'identificativo WhatsApp",
            "Evento (informativa inviata, consenso, revoca, richiesta di accesso o di "
            "cancellazione, importazione) con data e ora UTC e canale",
            "Prova: testo ricevuto e identificativo del messaggio, o modalità di raccolta "
            "dichiarata all'importazione",
            "Versione e impronta SHA-256 dell'informativa mostrata",
            "Autore dell'evento (interessato, operatore, importazione, fornitore)",
        ),
        recipients=("admins", "processor", "crm", "crm_webhooks"),
        retention=_consent_retention,
        measures=("consent_append_only", "encryption_at_rest", "tenant_segregation", "https"),
    ),
    _Activity(
        id="operator_handoff",
        name="Passaggio delle conversazioni agli operatori e console dello studio",
        purposes=(
            "Affidare a un operatore le conversazioni che lo richiedono (richiesta "
            "esplicita, emergenza, richiesta non compresa)",
            "Avvisare gli operatori in tempo reale e rispondere dal numero dello studio, "
            "non da telefoni personali",
        ),
        legal_basis=(
            "Art. 6(1)(b) e (c) GDPR, come per la gestione delle comunicazioni",
            "Art. 6(1)(d) GDPR: interessi vitali, per le segnalazioni di emergenza",
        ),
        data_subjects=_RESIDENTS_AND_SUPPLIERS,
        personal_data=(
            "Conversazione: modalità (bot o operatore), priorità, operatore assegnato, "
            "ultimo messaggio",
            "Messaggi mostrati all'operatore e sue risposte",
            "Notifiche agli operatori: identificativi di conversazione e messaggio, motivo, "
            "priorità",
        ),
        recipients=("operators", "processor", "meta", "twilio", "pusher", "crm_webhooks"),
        retention=_handoff_retention,
        measures=(
            "human_mode_silence",
            "outbound_gate",
            "audit_chain",
            "pusher_private_channels",
            "encryption_at_rest",
            "https",
        ),
        holds_contact_identity=True,
    ),
    _Activity(
        id="office_world",
        name=("Anagrafica dei condomìni, ordini di lavoro ai fornitori e avvisi di condominio"),
        purposes=(
            "Collegare condòmini e fornitori ai condomìni amministrati (scala, interno, ruolo) "
            "per registrare le segnalazioni sotto il condominio giusto",
            "Inviare ordini di lavoro ai fornitori e seguirne le risposte fino alla chiusura, "
            "informando chi ha segnalato il guasto",
            "Inviare avvisi di servizio ai soli condòmini che li hanno chiesti (AVVISI SI), "
            "uno per uno, senza mostrare il numero di nessuno agli altri",
        ),
        legal_basis=(
            "Art. 6(1)(b) GDPR: esecuzione del mandato di amministrazione e dei contratti "
            "di fornitura",
            "Art. 6(1)(c) GDPR: obblighi di legge dell'amministratore (art. 1130 c.c., "
            "anagrafe condominiale)",
            "Art. 6(1)(a) GDPR: consenso al canale e adesione agli avvisi (AVVISI SI / NO)",
        ),
        data_subjects=(
            "Condòmini (proprietari e inquilini)",
            "Fornitori e loro incaricati",
        ),
        personal_data=(
            "Condominio, scala, interno e ruolo (solo se forniti dallo studio o "
            "dall'interessato); nome solo se fornito dallo studio o dall'interessato",
            "Fornitori: nome, mestiere, numero di telefono",
            "Ticket: descrizione (le parole del condòmino, oscurate come i messaggi), "
            "priorità, operatore assegnato, fornitore, scadenza, note interne",
            "Ordini di lavoro: stato, data proposta, nota, cronologia delle risposte",
            "Avvisi di condominio: categoria, destinatari e stato di consegna",
        ),
        recipients=("operators", "processor", "meta", "twilio", "crm"),
        retention=_office_world_retention,
        measures=(
            "outbound_gate",
            "encryption_at_rest",
            "audit_chain",
            "tenant_segregation",
            "https",
        ),
    ),
    _Activity(
        id="operator_accounts_audit",
        name="Account degli operatori e registro di audit",
        purposes=(
            "Autenticare gli operatori e limitarne l'accesso secondo il ruolo",
            "Tracciare accessi e operazioni sui dati (visualizzazioni, prese in carico, "
            "risposte, esportazioni, cancellazioni) per sicurezza e responsabilizzazione",
        ),
        legal_basis=(
            "Art. 6(1)(c) GDPR: sicurezza del trattamento (art. 32) e responsabilizzazione "
            "(art. 5(2))",
            "Art. 6(1)(f) GDPR: legittimo interesse alla sicurezza dei sistemi; gli "
            "operatori ne sono informati (art. 13 GDPR e art. 4, c. 3, L. 300/1970)",
        ),
        data_subjects=("Operatori e amministratori dello studio",),
        personal_data=(
            "Email, ruolo, stato dell'account",
            "Hash della password, tentativi di accesso falliti e blocchi",
            "Eventi di audit: data e ora, utente, azione, oggetto, indirizzo IP",
        ),
        recipients=("admins", "processor"),
        retention=_accounts_retention,
        measures=("console_access", "audit_chain", "tenant_segregation", "https"),
    ),
)

# -- assembling the register -----------------------------------------------------------


def _personal_data(activity: _Activity, ctx: _Context) -> list[str]:
    data = list(activity.personal_data)
    if activity.holds_contact_identity and ctx.store_profile_name:
        data.insert(1, "Nome del profilo WhatsApp (conservato per scelta dello studio)")
    return data


def _transfers(recipients: list[str]) -> dict[str, Any]:
    abroad = [
        {
            "recipient": RECIPIENTS[key]["name"],
            "destination": TRANSFERS[key]["destination"],
            "safeguard": THIRD_COUNTRY_SAFEGUARD,
        }
        for key in recipients
        if key in TRANSFERS
    ]
    return {"summary": TRANSFERS_IN_USE if abroad else NO_TRANSFERS, "transfers": abroad}


def _recipient(key: str, ctx: _Context) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": key, **RECIPIENTS[key]}
    if key == "crm_webhooks":
        extra = WEBHOOK_EXTRA[(ctx.webhook_text, ctx.webhook_phone)]
        entry["description"] = entry["description"].format(extra=extra)
        entry["hosts"] = list(ctx.webhook_hosts)
    return entry


def _activity(activity: _Activity, ctx: _Context) -> dict[str, Any]:
    recipients = [key for key in activity.recipients if ctx.uses(key)]
    measures = [_measure(key, ctx) for key in activity.measures]
    return {
        "id": activity.id,
        "name": activity.name,
        "purposes": list(activity.purposes),
        "legal_basis": list(activity.legal_basis),
        "data_subjects": list(activity.data_subjects),
        "personal_data": _personal_data(activity, ctx),
        "recipients": [_recipient(key, ctx) for key in recipients],
        "third_country_transfers": _transfers(recipients),
        "retention": [*activity.retention(ctx.terms), _termination_term()],
        "security_measures": [m for m in measures if m is not None],
    }


def _stored_state(
    svc: Services, tenant: Tenant
) -> tuple[dict[str, Any] | None, int, tuple[str, ...]]:
    """The notice in force, how many API tokens can read the office's data, and the
    hosts its events are pushed to."""
    with svc.db.read() as session:
        hosts = tuple(endpoint_hosts(session, tenant.id))
        notice = active_notice(session, tenant)
        tokens = session.scalar(
            select(func.count(ApiToken.id)).where(
                ApiToken.tenant_id == tenant.id, ApiToken.revoked_at.is_(None)
            )
        )
        in_force = (
            {
                "version": notice.version,
                "sha256": notice.sha256,
                "full_notice_url": notice.full_notice_url,
                "published_at": iso_utc(notice.created_at),
            }
            if notice is not None
            else None
        )
    return in_force, int(tokens or 0), hosts


def _service_state(tenant: Tenant) -> dict[str, str | None]:
    ended = tenant.terminated_at
    return {
        "terminated_at": iso_utc(ended),
        "data_deleted_after": iso_utc(ended + EXPORT_WINDOW) if ended else None,
    }


def processing_register(svc: Services, tenant: Tenant, now: datetime) -> dict[str, Any]:
    """The office's art. 30(1) register, as the service is configured right now."""
    notice, api_tokens, webhook_hosts = _stored_state(svc, tenant)
    settings = effective_settings(tenant)
    webhook_options = (tenant.settings or {}).get("webhooks") or {}
    ctx = _context(svc, settings, api_tokens, webhook_hosts, webhook_options)
    activities = [_activity(activity, ctx) for activity in ACTIVITIES]
    measures = list(dict.fromkeys(m for a in activities for m in a["security_measures"]))
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generated_at": iso_utc(now),
        "controller": {
            "name": tenant.name,
            "role": "Titolare del trattamento",
            "whatsapp_number": tenant.whatsapp_number,
            "dpo": settings["dpo_contact"] or DPO_TO_COMPLETE,
        },
        "processor": dict(PROCESSOR),
        "service": _service_state(tenant),
        "privacy_notice": notice,
        "configuration": {
            "whatsapp_transport": svc.transport.name,
            "operator_notifications": svc.notifier.name,
            "api_tokens_active": ctx.api_tokens,
            "crm_webhook_hosts": list(ctx.webhook_hosts),
            "store_profile_name": ctx.store_profile_name,
            "redact_sensitive": ctx.redact_sensitive,
        },
        "retention_terms": dict(ctx.terms),
        "activities": activities,
        "security_measures": measures,
    }


def export_register(
    svc: Services,
    tenant: Tenant,
    now: datetime,
    *,
    actor: str,
    user_id: int | None = None,
    ip: str | None = None,
) -> dict[str, Any]:
    """The register, with the export written to the office's audit trail."""
    register = processing_register(svc, tenant, now)
    with svc.db.session() as session:
        record_audit(
            session,
            tenant.id,
            "register.export",
            actor=actor,
            user_id=user_id,
            ip=ip,
            target_type="tenant",
            target_id=tenant.id,
            detail={"format_version": FORMAT_VERSION, "activities": len(register["activities"])},
        )
    return register
