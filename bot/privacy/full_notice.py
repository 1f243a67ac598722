"""The full privacy notice (art. 13 GDPR): a complete Italian default built from what
is running, and the plain-text format it is written in.

The default is drawn from the office's art. 30 register (:mod:`bot.privacy.register`),
so the notice and the register cannot disagree: the same purposes, legal bases,
recipients, transfers and retention terms (the office's own days), the DPO contact and
the proper channel from the office's settings. The admin edits it as plain text and
publishes it as a new version; ``/privacy/<slug>`` shows it.

Format (kept plain so that nothing typed can become markup): a line ``## Titolo``
starts a section, lines starting with ``- `` are a list, other lines are paragraphs
(consecutive lines join). :func:`blocks` reads it for the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.office.settings import effective_settings
from bot.privacy.register import processing_register
from bot.services import Services
from storage.models import Tenant

GARANTE = (
    "Garante per la protezione dei dati personali, Piazza Venezia 11, 00187 Roma, "
    "www.garanteprivacy.it, protocollo@gpdp.it"
)
DPO_MISSING = (
    "lo studio non ha ancora indicato un contatto per la protezione dei dati: "
    "scriva all'indirizzo dello studio"
)
CHANNEL_MISSING = "i canali ufficiali dello studio (email o PEC)"
# The activities a resident or supplier is the subject of (the operators' accounts
# are in the register, and in the operators' own notice, not in this one).
RESIDENT_ACTIVITIES = ("whatsapp_messages", "consent_ledger", "operator_handoff")


def default_full_text(svc: Services, tenant: Tenant, now: datetime) -> str:
    """A complete full notice for the office, as the service is configured now."""
    register = processing_register(svc, tenant, now)
    settings = effective_settings(tenant)
    activities = [a for a in register["activities"] if a["id"] in RESIDENT_ACTIVITIES]
    dpo = _plain(settings["dpo_contact"] or DPO_MISSING)
    channel = _plain(settings["proper_channel"] or CHANNEL_MISSING)
    lines: list[str] = [
        "Informativa sul trattamento dei dati personali per chi scrive al numero WhatsApp "
        "di {office} (artt. 13 e 14 del Regolamento UE 2016/679, GDPR).",
        "",
        "## Titolare del trattamento",
        f"{{office}}, raggiungibile al numero WhatsApp {tenant.whatsapp_number}.",
        "",
        "## Responsabile della protezione dei dati (DPO) e contatto privacy",
        f"Per ogni domanda sui suoi dati: {dpo}.",
        "",
        "## Dati trattati",
        *_items(_unique(item for a in activities for item in a["personal_data"])),
        "",
        "## Finalità e basi giuridiche",
    ]
    for activity in activities:
        lines += ["", f"{activity['name']}.", "Finalità:", *_items(activity["purposes"])]
        lines += ["Basi giuridiche:", *_items(activity["legal_basis"])]
    lines += [
        "",
        "Il consenso all'uso del canale WhatsApp si dà rispondendo ACCETTO e si revoca in "
        "ogni momento, gratuitamente, scrivendo STOP: la revoca non pregiudica quanto fatto "
        "prima. Senza consenso lo studio non le scrive su WhatsApp, salvo rispondere a un "
        "suo messaggio e dare indicazioni di sicurezza in caso di emergenza.",
        "",
        "## Uso del canale e documenti",
        "WhatsApp serve solo per comunicazioni di servizio (segnalazioni, appuntamenti, "
        "informazioni). Documenti con valore legale o fiscale, dati sanitari e documenti "
        f"d'identità vanno inviati tramite {channel}.",
        "",
        "## Destinatari",
        *_items(_unique(_recipient(r) for a in activities for r in a["recipients"])),
        "",
        "## Trasferimenti verso paesi terzi",
        *_transfers(activities),
        "",
        "## Conservazione",
        *_items(_unique(_term(t) for a in activities for t in a["retention"])),
        "",
        "## Sicurezza",
        *_items(_unique(m for a in activities for m in a["security_measures"])),
        "",
        "## I suoi diritti",
        "Può chiedere in ogni momento l'accesso ai suoi dati e una copia (art. 15), la "
        "rettifica (art. 16), la cancellazione (art. 17), la limitazione (art. 18), la "
        "portabilità (art. 20) e opporsi al trattamento (art. 21). Su WhatsApp basta "
        "scrivere I MIEI DATI per una copia, CANCELLA I MIEI DATI per la cancellazione, "
        "STOP per non ricevere più messaggi; può anche rivolgersi al contatto privacy "
        "indicato sopra. Lo studio risponde entro 30 giorni.",
        "",
        "## Reclamo all'autorità di controllo",
        "Se ritiene che il trattamento violi il GDPR può proporre reclamo (art. 77 GDPR) al "
        f"{GARANTE}, o all'autorità dello Stato in cui vive o lavora.",
        "",
        "## Processo decisionale automatizzato",
        "Un assistente automatico riconosce il tipo di richiesta per smistarla (ticket, "
        "appuntamenti, passaggio a un operatore); non prende decisioni che producano "
        "effetti giuridici su di lei (art. 22 GDPR), e può sempre chiedere un operatore "
        "scrivendo OPERATORE.",
    ]
    return "\n".join(lines).strip() + "\n"


def _plain(value: str) -> str:
    # Braces are the placeholder's ({office}); a typed one would break the notice.
    return value.replace("{", "(").replace("}", ")")


def _items(values: Any) -> list[str]:
    return [f"- {value}" for value in values]


def _unique(values: Any) -> list[str]:
    return list(dict.fromkeys(values))


def _recipient(recipient: dict[str, str]) -> str:
    return f"{recipient['name']}: {recipient['description']}"


def _term(term: dict[str, Any]) -> str:
    return f"{term['data']}: {term['term']}"


def _transfers(activities: list[dict[str, Any]]) -> list[str]:
    transfers = _unique(
        f"{t['recipient']} ({t['destination']}): {t['safeguard']}"
        for a in activities
        for t in a["third_country_transfers"]["transfers"]
    )
    if not transfers:
        return ["I dati non sono trasferiti verso paesi terzi."]
    return ["I dati possono essere trasferiti fuori dall'Unione europea:", *_items(transfers)]


# -- reading the format ---------------------------------------------------------------


@dataclass
class Block:
    """One piece of the page: a heading, a paragraph or a list."""

    kind: str  # "heading", "paragraph", "list"
    text: str = ""
    items: list[str] = field(default_factory=list)


def blocks(text: str) -> list[Block]:
    """The plain-text notice as headings, paragraphs and lists (escaped by the page)."""
    out: list[Block] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            out.append(Block("break"))
        elif line.startswith("## "):
            out.append(Block("heading", line[3:].strip()))
        elif line.startswith("- "):
            if out and out[-1].kind == "list":
                out[-1].items.append(line[2:].strip())
            else:
                out.append(Block("list", items=[line[2:].strip()]))
        elif out and out[-1].kind == "paragraph":
            out[-1].text += " " + line
        else:
            out.append(Block("paragraph", line))
    return [b for b in out if b.kind != "break"]
