"""What the bot says, in Italian. Tenants may override any text in their settings
(``settings["replies"][key]``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TEXTS: dict[str, str] = {
    "welcome": (
        "Buongiorno, questo è il servizio WhatsApp di {office}.\n\n{notice}\n"
        "Informativa completa: {notice_url}\n\n"
        "Regole d'uso: questo canale serve solo per comunicazioni di servizio (segnalazioni, "
        "appuntamenti, informazioni). Documenti con valore legale o fiscale (F24, buste paga, "
        "contratti, dichiarazioni) vanno inviati tramite {proper_channel}, non su WhatsApp.\n\n"
        "Per continuare risponda ACCETTO. Per non ricevere messaggi risponda STOP."
    ),
    "notice": "{notice}\nInformativa completa: {notice_url}\n"
    "Risponda ACCETTO per accettare o STOP per non ricevere messaggi.",
    "reminder": "Prima di procedere abbiamo bisogno del suo consenso: risponda ACCETTO "
    "(oppure PRIVACY per rileggere l'informativa, STOP per non ricevere messaggi).",
    "granted": "Grazie, il suo consenso è registrato. Come possiamo aiutarla?",
    "already_granted": "Il suo consenso è già registrato. Come possiamo aiutarla?",
    "withdrawn": "Va bene: non riceverà più messaggi da {office} su WhatsApp. "
    "Se cambia idea scriva ACCETTO.",
    "help": "Può scriverci per guasti, emergenze, pagamenti, assemblee e appuntamenti. "
    "Parole utili: OPERATORE (parlare con una persona), PRIVACY (informativa), "
    "AVVISI SI / AVVISI NO (avvisi del condominio), "
    "I MIEI DATI (copia dei dati), CANCELLA I MIEI DATI, STOP (non ricevere messaggi).",
    "access_requested": "Abbiamo registrato la sua richiesta di accesso ai dati: "
    "l'amministratore gliela farà avere entro 30 giorni.",
    "erasure_requested": "Abbiamo registrato la sua richiesta di cancellazione dei dati: "
    "l'amministratore la eseguirà e gliene darà conferma.",
    "sensitive": "Per la sua tutela non invii su WhatsApp documenti d'identità, codici fiscali, "
    "IBAN o dati sulla salute: usi {proper_channel}. Il messaggio è stato "
    "{redaction}.",
    "handoff": "La metto in contatto con un operatore dell'ufficio, "
    "le risponderà appena possibile.",
    "ack_guasto": "Grazie, abbiamo registrato la segnalazione n. {ticket}{building} e la "
    "passiamo al tecnico. La aggiorneremo qui a ogni passo.",
    "ack_preventivo": "Grazie, abbiamo registrato la richiesta relativa al preventivo "
    "(n. {ticket}).",
    "ack_fattura_pagamento": "Grazie, l'amministrazione verificherà. Attenzione: le variazioni "
    "di IBAN vengono sempre confermate per telefono dall'ufficio.",
    "ack_appuntamento": "Grazie, abbiamo preso nota dell'appuntamento: l'ufficio lo confermerà.",
    "ack_documenti": "I documenti vanno richiesti e inviati tramite {proper_channel}. "
    "Abbiamo comunque registrato la sua richiesta.",
    "ack_assemblea": "Abbiamo registrato la sua domanda sull'assemblea: le risponderà l'ufficio. "
    "La convocazione dell'assemblea non arriva su WhatsApp: per legge (art. 66 disp. att. "
    "c.c.) la riceve per PEC, raccomandata o consegna a mano.",
    "ack_intervento_completato": "Grazie, abbiamo registrato l'esito dell'intervento.",
    "ack_saluto_ringraziamento": "Grazie a lei! Siamo a disposizione.",
    "clarify": "Non sono sicuro di aver capito: può dirci in poche parole se si tratta di un "
    "guasto, un pagamento, un appuntamento, un documento o altro?",
    "emergency": "Se c'è pericolo per le persone chiami subito il 112. "
    "Abbiamo avvisato l'ufficio con priorità urgente.",
    "emergency_gas": "Odore di gas: non accenda luci né interruttori, non usi fiamme, apra le "
    "finestre, chiuda il contatore se può ed esca. Chiami il 112 o i Vigili del "
    "Fuoco al 115. Abbiamo avvisato l'ufficio con priorità urgente.",
    "emergency_fire": "Incendio o fumo: esca subito senza usare l'ascensore e chiami i Vigili "
    "del Fuoco al 115 o il 112. Abbiamo avvisato l'ufficio con priorità urgente.",
    "emergency_flood": "Allagamento: se può chiuda la valvola generale dell'acqua e stacchi la "
    "corrente solo se è asciutto e sicuro. Abbiamo avvisato l'ufficio con "
    "priorità urgente; se c'è pericolo chiami il 115.",
    "emergency_trapped": "Se una persona è bloccata chiami subito il 112 e il numero di "
    "emergenza in cabina. Abbiamo avvisato l'ufficio con priorità urgente.",
    "emergency_break_in": "Possibile intrusione o furto: non affronti nessuno e non entri "
    "nei locali, resti in un posto sicuro e chiami subito il 112. Non tocchi nulla fino "
    "all'arrivo delle forze dell'ordine. Abbiamo avvisato l'ufficio con priorità urgente.",
    "emergency_electrical": "Scintille, cavi scoperti o odore di bruciato: non tocchi cavi "
    "né apparecchi e non usi acqua. Se può farlo senza rischi stacchi l'interruttore "
    "generale; se c'è fumo o fuoco esca e chiami il 115 o il 112. Abbiamo avvisato "
    "l'ufficio con priorità urgente.",
    "emergency_structural": "Crolli, crepe che si allargano o calcinacci che cadono: si "
    "allontani e tenga lontane le altre persone, non passi sotto balconi e cornicioni. Se "
    "c'è pericolo chiami i Vigili del Fuoco al 115 o il 112. Abbiamo avvisato l'ufficio "
    "con priorità urgente.",
    "emergency_unresponsive": "Se una persona non risponde o potrebbe stare male chiami "
    "subito il 112 e segua le indicazioni dell'operatore: se serve entrare in casa ci "
    "pensano i soccorsi. Abbiamo avvisato l'ufficio con priorità urgente.",
    "emergency_carbon_monoxide": "Possibile monossido di carbonio (mal di testa, nausea, "
    "sonnolenza vicino a caldaia o stufa): apra subito porte e finestre, spenga caldaia e "
    "stufe se può, esca all'aria aperta e chiami il 112 o il 115. Abbiamo avvisato "
    "l'ufficio con priorità urgente.",
    "ack_generic": "Grazie, abbiamo ricevuto il suo messaggio.",
    # The office's world: which building a fault is about, building notices, work orders.
    "ask_building_list": "Grazie, abbiamo registrato la segnalazione n. {ticket}. "
    "Di quale condominio si tratta? Risponda con il numero:\n{choices}",
    "ask_building_address": "Grazie, abbiamo registrato la segnalazione n. {ticket}. "
    "Di quale condominio si tratta? Ci scriva l'indirizzo (via e numero civico).",
    "building_given": "Grazie: la segnalazione n. {ticket} è registrata{building}. "
    "La aggiorneremo qui a ogni passo.",
    "building_not_found": "Non abbiamo riconosciuto il condominio: la segnalazione "
    "n. {ticket} resta registrata e l'ufficio la verificherà.",
    "notices_on": "Fatto: riceverà qui gli avvisi del suo condominio. Per non riceverli "
    "più scriva AVVISI NO.",
    "notices_off": "Fatto: non riceverà più gli avvisi del condominio. Per riceverli di "
    "nuovo scriva AVVISI SI.",
    "work_order_accept": "Grazie, l'ordine di lavoro n. {work_order} risulta accettato. "
    'A lavoro finito ci scriva "ho finito".',
    "work_order_decline": "Grazie, abbiamo registrato che non può occuparsi dell'ordine "
    "n. {work_order}.",
    "work_order_propose": "Grazie, abbiamo registrato la sua proposta{proposed} per "
    "l'ordine n. {work_order}: l'ufficio la confermerà.",
    "work_order_done": "Grazie, l'ordine di lavoro n. {work_order} risulta completato.",
    "work_order_unknown": "Non troviamo un ordine di lavoro aperto a cui riferire la sua "
    "risposta: l'ufficio la verificherà.",
    "office_info": "{answer}",
    "resolved_thanks": "Grazie della conferma: la segnalazione n. {ticket} è chiusa.",
    # To the resident who reported a fault, when its work order moves on.
    "ticket_update_accepted": "Aggiornamento sulla segnalazione n. {ticket}: il tecnico "
    "ha preso in carico l'intervento.",
    "ticket_update_proposed": "Aggiornamento sulla segnalazione n. {ticket}: il tecnico "
    "propone l'intervento{proposed}. L'ufficio le confermerà la data.",
    "ticket_update_declined": "Aggiornamento sulla segnalazione n. {ticket}: stiamo "
    "cercando un altro tecnico.",
    "ticket_update_done": "Aggiornamento sulla segnalazione n. {ticket}: l'intervento è "
    "stato completato. Se il problema è risolto risponda RISOLTO; se no ce lo scriva qui.",
    # Added to an acknowledgement when the office is closed ({reopening} may be empty).
    "out_of_hours": "L'ufficio ora è chiuso{reopening}. In caso di emergenza (gas, fumo, "
    "acqua che esce, persone in pericolo) chiami il 112 o il 115 e ce lo scriva qui: "
    "la segnalazione arriva subito con priorità urgente.",
    # Sent once when no operator answered within the office's handoff.reminder_minutes.
    "handoff_reminder": "Non ci siamo dimenticati di lei: un operatore dell'ufficio le "
    "risponderà appena possibile.{hours} In caso di emergenza chiami il 112.",
}

DEFAULT_PROPER_CHANNEL = "l'email o la PEC dello studio"


def render(key: str, settings: Mapping[str, Any], **values: str) -> str:
    overrides = settings.get("replies") or {}
    template = overrides.get(key) or TEXTS[key]
    values.setdefault("proper_channel", settings.get("proper_channel") or DEFAULT_PROPER_CHANNEL)
    return template.format(**values)
