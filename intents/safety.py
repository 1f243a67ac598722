"""The emergency safety net: rules that can raise a message to `emergenza`.

A spaCy component (`portineria_safety`) runs a `Matcher` over the normalised
tokens (see `intents.normalize`: lower case, no accents, chat abbreviations and
common misspellings of danger words undone) and stores the hazards whose rules
matched in `doc.spans["portineria_safety"]`, each span labelled with the hazard's
name. `intents.prediction.decide` then raises the intent to `emergenza` when a
rule fired; a rule never lowers anything. When the classifier alone chose
`emergenza`, `hazard_cue` names the hazard from weaker cues (a single word such
as "caldaia" or "ascensore") so that the reply can still fit the danger.

Hazard names, in the order of precedence used when several fire (the first is
`Prediction.safety_rule`; the conversation layer maps each to its advice):

- `gas_smell`: smell of gas or a hissing gas pipe ("puzza de gas", "odore di metano").
- `carbon_monoxide`: a CO alarm sounding, or headache, nausea, drowsiness around a
  boiler, water heater, stove or flue.
- `fire`: flames, something burning or catching fire ("incedio", "c'è foco").
- `electrical`: sparks, flashes, crackling, smoke or a burning smell from a socket,
  plug, wire, meter or electrical panel.
- `smoke`: smoke or a burning smell without a named fire ("nebbia grigia che puzza").
- `flooding`: water pouring, rising or flooding, burst pipes, water described as a
  river, a waterfall, a lake ("scende una cascata dal soffitto", "tubo scoppiato").
- `structural`: falling masonry, plaster, cornices, tiles; collapse; cracks that
  widen; structures bending, creaking or hanging loose.
- `person_trapped`: someone stuck in a lift, a room, a gate ("rimasto chiuso dentro").
- `person_unresponsive`: someone not answering the door or phone for a long time,
  calling for help, found collapsed or motionless.
- `break_in`: intruders now, a door or lock just forced, a burglary just found.

Each rule is written to stay quiet on the usual border cases: a damp stain or a
slow drip, a lift stopped with nobody inside, "gas" in a bill question, smoke from
a neighbour's cigarette, a smoke detector being installed, a past theft, an old
crack, a neighbour who does not answer about a parcel. A match is dropped when a
negation sits just before it ("non c'è più odore di gas"); no gap inside a pattern
may hold a negation, unless the rule says so; and a whole message is left alone
when it reports the danger as solved ("perdita riparata") or as recurring ("quando
piove entra acqua").
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.vocab import Vocab

from intents.matching import GatedMatcher
from intents.prediction import SAFETY_SPAN_KEY

HAZARDS: tuple[str, ...] = (
    "gas_smell",
    "carbon_monoxide",
    "fire",
    "electrical",
    "smoke",
    "flooding",
    "structural",
    "person_trapped",
    "person_unresponsive",
    "break_in",
)
# Kept for callers that knew the hazards as rule names.
RULE_NAMES = HAZARDS

NEGATIONS = frozenset("non nessun nessuna nessuno niente nulla senza mica".split())
# Words that end the look-back for a negation (a new clause starts).
_CLAUSE_BREAKS = frozenset(", . ; : ! ? ma pero".split())
_NEGATION_WINDOW = 4

Pattern = list[dict[str, Any]]
Token = dict[str, Any]


def _re(regex: str, op: str | None = None) -> Token:
    token: Token = {"NORM": {"REGEX": regex}}
    if op:
        token["OP"] = op
    return token


def _in(*words: str, op: str | None = None) -> Token:
    token: Token = {"NORM": {"IN": list(words)}}
    if op:
        token["OP"] = op
    return token


def _gap(most: int, negations: bool = False) -> Token:
    """Up to `most` tokens; by default none of them a negation ("non si ferma")."""
    if negations:
        return {"OP": f"{{0,{most}}}"}
    return {"NORM": {"NOT_IN": sorted(NEGATIONS)}, "OP": f"{{0,{most}}}"}


_NOT = _in("non", "mica")

# --- shared vocabulary -------------------------------------------------------------

_GAS = _in("gas", "gasse", "metano", "gpl")
_SMELL = _re(r"^(s?pu(zz|ss)|odor|tanf|fet[oi]?$|fetore|fiet|olezz|miasm|sentore|addor)")
_WATER = _in("acqua", "acque", "liquame", "liquami", "l'acqua", "d'acqua")
_LIFT = _re(r"^(ascen[sz]or|elevator|montacaric|montascal|servoscal|cabina)")
_PERSON = _re(
    r"^(qualcun|persona|persone|gente|bambin|bimb|anzian|signor|madre|padre|mamma|papa|"
    r"figli|fij|nonn|vicin[aie]$|ragazz|donna|uomo|marito|moglie|sorella|fratello|zi[ao]$|"
    r"disabil|inquilin|condomin[oaie]$|corriere|postino|badante|suocer|nipot|operai|"
    r"collega|amic[oaie]$|vecch|creatur|pupo$|pupa$|guaglion|picciriddu)"
)
# People whose silence worries (residents, not a supplier or a shop).
_RESIDENT = _re(
    r"^(signor|anzian|vecch|nonn|vicin[aie]$|zi[ao]$|madre|padre|mamma|papa|inquilin|"
    r"condomin[oaie]$|uomo|donna|suocer|sorella|fratello|marito|moglie)"
)
_STUCK = _re(r"^(bloccat|chius[oaie]$|rimast|intrappolat|incastrat)")
_MASONRY = _re(
    r"^(intonac|cornicion|mattone|mattoni$|calcinacc|frontalin|tegol|soffitt|controsoffitt|"
    r"balcon|cemento|muratur|pietr|marmo|facciat|parete|pareti$|muro$|muri$|muretto|solaio|"
    r"gronda|comignol|cornice|lastr|pavimento|terrazz|tetto|trave|travi$|gradin|ringhiera|"
    r"parapett|volta$|volte$|recinzion|architrav|davanzal|camino|vetr[oi]$|vetrat|lucernar)"
)
# Between a falling verb and its subject: not a place ("cade sul balcone").
_NOT_PLACE = {
    "NORM": {
        "NOT_IN": "su sul sulla sullo sui sulle nel nella nello nei nelle in dentro a al "
        "alla ai alle addosso per sopra sotto vicino davanti da dal dalla dallo "
        "dai dalle".split()
    },
    "OP": "{0,3}",
}
_FROM = _in("da", "dal", "dalla", "dallo", "dai", "dalle", "dagli", "dall'")
_FALLING = _re(
    r"^(cad[eo]$|cadono|cadut|cadend|crollat|crolla$|crollano|crollo$|precipit|staccat|"
    r"ceduto|ceduta|cede$|cedend|stacca$|staccano|staccando|franat|frana$|franano|sprofond)"
)
_COMING = _re(r"^(venut[oaie]$|vien[e]?$|vengono|venendo|volat[oaie]$|vegn)")
_DOWN = _in("giu", "giu'", "addosso", "zo", "abbasso")
_ELECTRIC = _re(
    r"^(pres[ae]$|spina|spine$|quadro|quadri$|contator|interruttor|cav[oi]$|fil[oi]$|"
    r"scatol|centralin|salvavita|differenzial|ciabatt|multipres|elettric|enel$|citofon|"
    r"pulsant|prolung|fusibil|misurator|morsett)"
)
_TUBE = _re(
    r"^(tub|condott|flessibil|colonna|autoclave|boiler|scaldabagno|raccord|manicott|radiator|"
    r"termosifon|calorifer|collettor)"
)
_BURST = _re(
    r"^(scoppiat|scop+i|esplos|saltat|spaccat|squarciat|rutt[oa]$|partit[oa]$|sfondat|"
    r"ceduto$|ceduta$)"
)
_BURNT = _re(
    r"^(bruciat|bruciacc|bruciatic|brusa|brusato|abbrustol|plastica$|gomma$|fus[oaie]$|"
    r"sciolt|fumo$|fumi$|cavi$|elettric|cott[oaie]$)"
)
_PLACE = _re(
    r"^(soffitt|muro|muri|pareti|parete|porta|finestr|lampad|plafonier|scale|scala$|vano|"
    r"ascen[sz]or|quadro|tetto|sotto|sopra|pavimento|prese|presa|pulsantier|contator|"
    r"gradin|pianerottol|androne|corridoi|cantin|garage|box|piano$|piani$|vicin|interruttor|"
    r"cabina)"
)
_PRESENCE = _re(
    r"^(dentro|ancora|rumor|passi$|sento|sentiamo|sentito|torcia|appena|rientrat|tornat|"
    r"sottosopra|rovesciat|soqquadro|paura|scappat|scappando)"
)
_DOOR = _re(
    r"^(porta|porte$|portone|blindat|serratur|cilindr|lucchett|cancell|finestr|vetr|"
    r"basculant|saracinesc|tapparell|inferriat|grat[ae]$|box$|cantin|catena|sbarr|"
    r"chiavistell|nottolin|portoncin)"
)
# Forced by someone: "hanno spaccato il portone" (not "rotto", which a ball can do).
_FORCED_BY = _re(
    r"^(forzat|scassinat|scassat|sfondat|scardinat|divelt|manomess|tranciat|spaccat|sfasciat|"
    r"tagliat)"
)
_FORCED = _re(
    r"^(forzat|scassinat|scassat|sfondat|scardinat|divelt|manomess|tranciat|spaccat|sfasciat|"
    r"rott[oaie]$)"
)

# Where an administrative context makes a danger word a report: documents,
# meetings, money. Insurance and police reports are left out on purpose: "chiamo
# l'assicurazione?" is written while the water is still coming in.
_DOCUMENTS: tuple[Pattern, ...] = (
    [
        _re(
            r"^(perizia|perit[oi]$|verbale|certificat|libretto|relazione|rapporto|assemblea|"
            r"riunione)"
        )
    ],
    [_in("ordine"), _in("del"), _in("giorno")],
)
_PAPERWORK: tuple[Pattern, ...] = (
    *_DOCUMENTS,
    [
        _re(
            r"^(fattur|preventiv|prezz|quota$|quote$|rata$|rate$|bollett|rendicont|bilanci|"
            r"millesim|conguagli|costerebb|costo$|costa$|offerta|rimbors|pagar|pagament|"
            r"pagato|spesa$|spese$|stima$|stime$|votar|votazion)"
        )
    ],
)
_PAST: tuple[Pattern, ...] = (
    [_re(r"^(scors[oaie]$|passat[oa]$|ieri$|stanotte|settimana|mese$|mesi$|anno$)")],
)

# Phrases that report the danger as over: the message is a report, not an alarm.
_RESOLVED: tuple[Pattern, ...] = (
    [
        # Whole participles: "asciugatrice" and "aspiratore" report nothing.
        _re(
            r"^(risolt|riparat|sistemat|ripristinat|eliminat|domat|bonificat|sostituit|"
            r"eseguit|completat|terminat|ultimat|asciugat|aspirat|sigillat|liberat|"
            r"rimoss)[oaie]$"
        )
    ],
    [_re(r"^(mess|rimess)[oaie]$"), _in("in"), _in("sicurezza", "tensione", "funzione")],
    # "rientrato" alone may be someone coming home to a break-in.
    [_re(r"^(allarm|emergenz|situazion|perdit|acqua)"), _gap(2), _re(r"^rientrat")],
    [_in("tutto"), _in("a"), _in("posto")],
    [_in("tutto"), _in("ok", "okay", "risolto", "sistemato")],
    [_in("nella", "nei", "entro", "nelle"), _in("norma", "limiti", "norme")],
    [_re(r"^(verific|controll|intervent|lavor)"), _re(r"^(fatt[oaie]$|conclus|finit)")],
    # "l'hanno tirata fuori"; not "ho fatto uscire i bambini", said while evacuating.
    [_re(r"^tirat[oaie]$"), _gap(2), _in("fuori")],
    # Thanks for help already given.
    [_in("grazie"), _in("per", "dell'", "del"), _gap(2), _re(r"^(intervent|aiuto|venut|soccors)")],
)

# A recurring condition ("quando piove entra acqua") is a fault to fix, not an
# emergency in progress: no rule fires on such a message.
_RECURRING: tuple[Pattern, ...] = (
    [
        _in("quando", "se", "appena"),
        _gap(1),
        _re(
            r"^(piove|pioveva|nevica|parte|partono|apro|apri|apre|accend|tira|uso|usa|usiamo|"
            r"scarica|scarico|lavo|lava|faccio|fa$)"
        ),
    ],
    [_in("ogni"), _in("volta")],
    [_in("d'", "di", "in"), _in("inverno")],
    [_in("tutte", "tutti"), _in("le", "i"), _in("volte", "giorni", "notti", "mattine")],
)


@dataclass(frozen=True)
class SafetyRule:
    """Patterns that name one hazard, with the conditions under which they count."""

    hazard: str
    patterns: tuple[Pattern, ...]
    # A match is ignored when a word just before it is one of these ("rilevatore
    # di fumo", "prevenzione incendi").
    not_after: frozenset[str] = frozenset()
    # The rule stays quiet for the whole message when one of these appears.
    vetoes: tuple[Pattern, ...] = ()
    # Groups of patterns: each group needs one match anywhere in the message.
    requires: tuple[tuple[Pattern, ...], ...] = ()


def _gas_rules() -> tuple[SafetyRule, ...]:
    return (
        SafetyRule(
            "gas_smell",
            (
                [_SMELL, _gap(3), _GAS],
                [_re(r"^(fuga$|fughe$|perdit|esalazion|fuoriuscit)"), _gap(3), _GAS],
                [
                    _in(
                        "sento",
                        "sentiamo",
                        "sente",
                        "senti",
                        "sentito",
                        "sa",
                        "perde",
                        "perdono",
                        "esce",
                        "fuoriesce",
                        "odoro",
                    ),
                    _gap(3),
                    _GAS,
                ],
                [_GAS, _gap(3), _re(r"^(puzz|odor|tanf|esce$|fuoriesc|perde$)")],
                [_GAS, _gap(3), _in("si", "se"), _re(r"^sent")],
                # A hissing gas pipe or meter.
                [_GAS, _gap(4), _re(r"^(sibil|fisch|soffia)")],
                [_re(r"^(sibil|fisch|soffia)"), _gap(5), _GAS],
                # "URGENTE gas scala B", "gas!!!": the word alone, shouted.
                [_re(r"^(urgent|aiut|emergenz|venite|correte)"), _gap(2), _GAS],
                [_GAS, _re(r"^!{2,}$")],
                # A gas detector going off.
                [_GAS, _gap(4), _re(r"^(suona|suonando|scattat|fischia|allarm)")],
                [_re(r"^(rilevator|sensor|allarm)"), _gap(2), _GAS, _gap(4), _re(r"^(suon|scatt)")],
                # The odorant's rotten-egg smell, named without the word gas.
                [_SMELL, _gap(2), _re(r"^uov"), _re(r"^(marc|andat)")],
            ),
            not_after=frozenset({"bolletta", "bollette", "lettura", "ricerca"}),
            # Gas is the one danger never to miss: only bills and documents quiet it.
            vetoes=(
                [_in("bolletta", "bollette", "fattura", "lettura", "tariffa", "conguaglio")],
                *_DOCUMENTS,
            ),
        ),
    )


_CO_SYMPTOM: tuple[Pattern, ...] = (
    [_in("mal", "dolor"), _in("di"), _in("testa")],
    [_re(r"^(gira|girava|girano)$"), _gap(1), _in("testa")],
    [_in("testa"), _re(r"^(pesant|gira$)")],
    [_in("cerchio"), _in("alla"), _in("testa")],
    [
        _re(
            r"^(nause|vomit|sonnolen|intontit|stordit|confus[oa]$|svenir|svenut|vertigin|"
            r"giramenti|assonnat|rintronat|malor|addormentat)"
        )
    ],
    [
        _in("sentiamo", "sente", "sento", "sentono", "sentita", "sentito"),
        _gap(1),
        _re(r"^(strani|strano|strana|male|svenire|mancare)$"),
    ],
    [_in("non"), _in("si"), _re(r"^sveglia")],
)
# Appliances that burn fuel indoors.
_CO_SOURCE = _re(
    r"^(caldai|scaldabagn|scaldino|stufa$|stufe$|stufetta|boiler|braciere|camino|fumaria|"
    r"fumi$|monossido|fuliggin|generatore|riscaldament|fornellett)"
)


def _carbon_monoxide_rules() -> tuple[SafetyRule, ...]:
    alarm = _re(r"^(suon|fisch|scattat|lampegg|allarm|squill|bip|rosso|rossa|impazzit|segna$)")
    detector_quiet = (
        [_re(r"^(batteri|pila|pile$|scaric[ao]$|install|montat|mettere|comprare|acquist)")],
    )
    return (
        SafetyRule(
            "carbon_monoxide",
            (
                [_in("monossido", "co"), _gap(4), alarm],
                [alarm, _gap(4), _in("monossido")],
            ),
            vetoes=(*detector_quiet, *_PAPERWORK),
        ),
        # Symptoms near a combustion appliance: the classic silent poisoning.
        SafetyRule(
            "carbon_monoxide",
            (
                *_CO_SYMPTOM,
                [_re(r"^(fumi|fumo)$"), _gap(2), _re(r"^(rientr|torna|ritorn)")],
            ),
            requires=(([_CO_SOURCE],),),
            vetoes=([_re(r"^(sigarett|fumator)")], *_PAPERWORK),
        ),
    )


_FIRE_VETO = (
    [
        _re(
            r"^(cpi$|scia$|esercitazion|collaud|prevenzion|estintor|antincendi|"
            r"sopralluog|assicurazion|polizz|evacuazion)"
        )
    ],
)


def _fire_rules() -> tuple[SafetyRule, ...]:
    fuoco = _in("fuoco", "foco", "focu", "fuoc")
    return (
        SafetyRule(
            "fire",
            (
                [_in("incendio", "incendi", "fiamme", "fiamma", "rogo", "divampato", "divampata")],
                [_re(r"^(incendiat|incendiando)")],
                [
                    _re(
                        r"^(pres[oa]$|prende$|prendendo|preso$|andato$|andata$|dato$|pij|pigli|"
                        r"piglia)"
                    ),
                    fuoco,
                ],
                [_in("a", "in", "'n"), fuoco],
                [_in("lingue", "lingua"), _in("di"), fuoco],
                [_in("c'", "ce", "c"), _in("e", "sta"), _gap(1), fuoco],
                [_in("sta", "stanno", "stava"), _re(r"^bruciand")],
                [fuoco, _in("nel", "nella", "nei", "nelle", "sul", "sulla", "in", "dal", "dalla")],
                [
                    _re(r"^(brucia|bruciano)$"),
                    {"NORM": {"NOT_IN": ["la", "gola", "gli", "occhi", "mi", "ti", "ci"]}},
                ],
            ),
            not_after=frozenset(
                {
                    "prevenzione",
                    "rischio",
                    "polizza",
                    "antincendio",
                    "porta",
                    "porte",
                    "certificato",
                    "pratica",
                }
            ),
            # A fire that belongs where it is: "fuoco nel camino", "nel barbecue".
            vetoes=(
                *_FIRE_VETO,
                [_re(r"^(camino|caminett|barbecue|grigli|brace$|forno|stufa|fuochi|falo$)")],
            ),
        ),
        # Calling the fire brigade is an alarm; their visit yesterday is a report.
        SafetyRule(
            "fire",
            ([_in("vigili"), _in("del"), fuoco], [_in("pompieri")]),
            not_after=frozenset({"venuti", "intervenuti", "passati", "stati", "arrivati"}),
            vetoes=(*_FIRE_VETO, *_PAST, *_PAPERWORK),
        ),
    )


def _electrical_rules() -> tuple[SafetyRule, ...]:
    symptom = _re(
        r"^(sfrigol|frigg|crepit|friz|lamp[oi]$|flash|bagliori|bollent|rovent|scotta|annerit|"
        r"carbonizz|sciolt|fus[oaie]$|fumo$|fuma$|fumano|fumando|botto|scoppi|esplos|"
        r"schiocc|fiamm|caldissim|favill|vampat|arco$)"
    )
    return (
        SafetyRule(
            "electrical",
            (
                [_re(r"^(scintill|sfavill|favill)")],
                [_in("arco"), _in("elettrico")],
                [_re(r"^(fiammat|cortocircuit)")],
                [
                    _re(r"^(prend|pres|da$|danno|dava|fa$|fanno)"),
                    _in("la", "le", "una", "delle"),
                    _re(r"^scoss"),
                ],
                [_in("corto"), _in("circuito")],
            ),
            # "la presa che faceva scintille" is the one just replaced.
            not_after=frozenset({"faceva", "facevano", "dopo"}),
        ),
        # Crackling, flashes, heat, smoke or a burnt smell at a socket, a wire, a panel.
        SafetyRule(
            "electrical",
            ([_ELECTRIC, _gap(6), symptom], [symptom, _gap(5), _ELECTRIC]),
            requires=(([_ELECTRIC],),),
            vetoes=(
                [_re(r"^(sigarett|fumator|fumare$|lampadin|spia$|spie$|rilevator|sensor|install)")],
                *_PAPERWORK,
            ),
        ),
        SafetyRule(
            "electrical",
            (
                [_SMELL, _gap(3), _BURNT, _gap(5), _ELECTRIC],
                [_ELECTRIC, _gap(5), _SMELL, _gap(3), _BURNT],
            ),
            vetoes=_PAPERWORK,
        ),
    )


_SMOKE_VETO = (
    [
        _re(
            r"^(sigarett|fumator|fumare$|barbecue|grigliat|spinell|svap|brace$|bracier|"
            r"castagn|legna$|caminett|falo$|fuochi|pipa$|sigar[oi]$)"
        )
    ],
    # A joint, not a flue: "canna fumaria" is where smoke should not come from.
    [_in("canna", "canne"), {"NORM": {"NOT_IN": ["fumaria", "fumarie"]}}],
    # People smoking, not things: "i vicini fumano sul balcone".
    [
        _re(r"^(vicin|ragazz|gente$|qualcun|inquilin|signor|tizi|lui$|lei$)"),
        _gap(3),
        _in("fuma", "fumano", "fumava", "fumavano"),
    ],
    [
        _in("fuma", "fumano", "fumava", "fumavano"),
        _in("sul", "sulla", "in", "nel", "nella", "dal", "dalla", "sulle", "a", "ci", "dentro"),
    ],
)


def _smoke_rules() -> tuple[SafetyRule, ...]:
    smoke = _in("fumo", "fumi", "fumata", "fumaccio", "fumazza")
    return (
        SafetyRule(
            "smoke",
            (
                [
                    _re(
                        r"^(esce$|uscito|usciva|escono|uscendo|uscire|fuoriesce|vedo|vede$|"
                        r"pien[oaie]$|invas[oa]$|sale$|salendo|entra$|entrando|tanto|molto|"
                        r"parecchio|fa$|fanno)"
                    ),
                    _gap(3),
                    smoke,
                ],
                [_in("c'", "ce", "c"), _in("e", "era"), _gap(3), _in("fumo", "fumi", "fumaccio")],
                [
                    smoke,
                    _in(
                        "nero",
                        "denso",
                        "densissimo",
                        "densa",
                        "grigio",
                        "grigia",
                        "bianco",
                        "bianca",
                        "nera",
                        "scura",
                        "scuro",
                        "acre",
                        "dal",
                        "dalla",
                        "dallo",
                        "dai",
                        "dalle",
                        "dagli",
                        "dall'",
                        "ovunque",
                        "dappertutto",
                        "che",
                        "nel",
                        "nella",
                        "nelle",
                        "negli",
                        "in",
                    ),
                ],
                [_in("fumaccio", "fumazza")],
                # Smoke that spreads: "il fumo arriva al primo piano".
                [
                    smoke,
                    _gap(1),
                    _re(
                        r"^(arriva|arrivando|sale|salendo|entra|entrando|invade|invadendo|esce|"
                        r"uscendo|riempie|riempiendo)$"
                    ),
                ],
                [_SMELL, _gap(3), _BURNT],
                # Smoke described without the word: a grey, acrid, choking haze.
                [
                    _re(r"^(nebbi|foschi|nuvol|nube|caligin|fumaccio|sbuff)"),
                    _gap(3),
                    _re(
                        r"^(grigi|ner[oaie]$|scur|acre|dens|puzz|tossi|pizzic|brucia|bruciat|"
                        r"soffoc|irrespirab|plastica)"
                    ),
                ],
                [_re(r"^(brucia|bruciano|pizzica|pizzicano)$"), _gap(2), _in("gola", "occhi")],
                # Something that is not a person smoking ("il vano ascensore fuma").
                [
                    _re(
                        r"^(vano|motore|cofano|cassonett|tetto|sottotetto|caldai|lavatric|"
                        r"asciugatric|forno|frigo|stufa|lampad|ascen[sz]or|contator|quadro)"
                    ),
                    _gap(4),
                    _in("fuma", "fumano", "fumando", "fumava"),
                ],
            ),
            not_after=frozenset(
                {
                    "rilevatore",
                    "rilevatori",
                    "sensore",
                    "sensori",
                    "allarme",
                    "canna",
                    "antifumo",
                    "sigaretta",
                    "sigarette",
                    "rilevazione",
                    "analisi",
                    "controllo",
                }
            ),
            vetoes=_SMOKE_VETO,
        ),
    )


def _flooding_rules() -> tuple[SafetyRule, ...]:
    # A place turned into a body of water; a flow compared to one.
    pool = _re(r"^(lago|palud|acquitrin|fium|torrent)")
    flow = _re(r"^(piscin|cascat|fontan|doccia|geyser|fium|torrent|lago)")
    article = _in("un", "una", "'na", "na", "nu", "'n", "n'", "un'")
    # "un fiume di messaggi", "una cascata di email": the image is not about water.
    figurative = [
        _re(r"^(fium|cascat|valang|mare$|torrent|pioggia)"),
        _in("di", "de", "d'"),
        {"NORM": {"NOT_IN": ["acqua", "acque", "liquame", "fango", "l'acqua"]}},
    ]
    slow = (
        [
            _re(
                r"^(gocciol|goccia|gocce|macchi[ae]$|macchiat|umid|condensa|muffa|alone$|aloni$|"
                r"lentament)"
            )
        ],
        # "un filo d'acqua", "scende piano piano": a trickle.
        [_in("filo", "filino", "velo"), _in("d'", "di"), _WATER],
        [_in("piano"), _in("piano")],
    )
    return (
        SafetyRule(
            "flooding",
            (
                [_re(r"^(allag|inond|alluvion|sommers|al+ag)")],
                [
                    _WATER,
                    _gap(4),
                    _re(
                        r"^(fiott|cascat|fium|torrent|secchi|scroscia|ovunque|"
                        r"dappertutto|dovunque|getto|zampill|valanga|ginocchi|caviglie|ruote|"
                        r"polpacc|fontan|geyser)"
                    ),
                ],
                [_re(r"^(fiott|cascat|fium|torrent|secchiat|getto|zampill)"), _gap(3), _WATER],
                [
                    _re(r"^(piove|piovendo)$"),
                    _in(
                        "in",
                        "dentro",
                        "dal",
                        "nel",
                        "nella",
                        "dalla",
                        "come",
                        "dall'",
                        "sul",
                        "sulla",
                        "sui",
                        "sulle",
                        "acqua",
                    ),
                ],
                [
                    _re(
                        r"^(entra|entrando|esce|uscendo|sgorga|sgorgando|zampilla|schizza|scende|"
                        r"scendendo|arriva|arrivando|invade|invadendo|venendo|viene|vien|cade|"
                        r"cadendo|cola|colando|scorre|scorrendo)$"
                    ),
                    _gap(2),
                    _WATER,
                    _gap(4),
                    _PLACE,
                ],
                [
                    _WATER,
                    _gap(2),
                    _re(
                        r"^(entra|entrando|sgorga|sgorgando|zampilla|schizza|scende|scendendo|"
                        r"invade|invadendo|venendo|viene|vien|cola|colando|scorre|scorrendo|"
                        r"cade|cadendo)$"
                    ),
                    _DOWN,
                    _gap(3),
                    _PLACE,
                ],
                [
                    _WATER,
                    _gap(4),
                    _re(
                        r"^(cola|colando|scorre|scorrendo|invade|invadendo|sgorga|sgorgando|"
                        r"scende|scendendo|entra|entrando|esce|uscendo)$"
                    ),
                    _gap(3),
                    _PLACE,
                ],
                [_WATER, _gap(4), _in("litri")],
                # Spraying everywhere, whatever broke.
                [
                    _re(r"^(spruzz|zampill|schizz)"),
                    _gap(3),
                    _re(r"^(dappertutto|ovunque|dovunque)$"),
                ],
                [_re(r"^(spruzz|zampill|schizz)"), _gap(1), _WATER],
                [_re(r"^(pien|chin)[oaie]$"), _in("d'", "di", "de"), _WATER],
                [_re(r"^riemp"), _gap(1), _in("d'", "di", "de"), _WATER],
                # Water rising from drains and floors.
                [
                    _WATER,
                    _gap(2),
                    _re(r"^(sale|salendo|risale|risalendo)$"),
                    _gap(2),
                    _re(r"^(scarich|tombin|pozzett|wc$|water$|doccia|lavandin|pavimento|fogn)"),
                ],
                [_in("sott'", "sotto"), _WATER],
                [_re(r"^(metr|centimetr|cm$|dita$|palm|spann)"), _gap(1), _WATER],
                [_WATER, _gap(2), _in("alta", "alle", "al", "fino"), _in("caviglie", "ginocchia")],
                # "il garage sembra una piscina", "come una doccia dal soffitto".
                [
                    _re(r"^(sembra|pare|diventat[oa]|come|tipo)$"),
                    _in("da", "proprio", "quasi", "ormai", "praticamente", op="*"),
                    article,
                    flow,
                ],
                [_in("e"), _in("ormai", "tutto", "tutta", "proprio", op="*"), article, pool],
                # A waterfall or a river named without the word water.
                [
                    _re(r"^(vien|scend|cade|arriv|esce|scroscia|entra)"),
                    _gap(2),
                    article,
                    _re(r"^(cascat|fium|torrent)"),
                ],
                [_re(r"^(cascat|fium|torrent)"), _gap(3), _FROM, _gap(2), _PLACE],
            ),
            # "dopo l'allagamento", "i danni dell'allagamento": an event already over.
            not_after=frozenset({"dopo", "danni", "danno", "post"}),
            vetoes=(*slow, figurative, *_PAPERWORK),
        ),
        # A pipe that burst or gave way ("tubo scopiato", "è partita la colonna").
        SafetyRule(
            "flooding",
            (
                [_BURST, _gap(2), _TUBE],
                [_TUBE, _gap(3), _BURST],
                [_re(r"^(rott[oa]$|rompe|rotto)"), _gap(2), _re(r"^flessibil")],
                [_re(r"^flessibil"), _gap(3), _re(r"^(rott[oa]$|rompe)")],
            ),
            vetoes=(*slow, *_PAPERWORK, *_PAST),
        ),
        # Water coming through a ceiling, a lamp, a socket: "acqua dal soffitto".
        SafetyRule(
            "flooding",
            (
                [
                    _WATER,
                    _gap(2),
                    _FROM,
                    _re(
                        r"^(soffitt|tetto|lampadar|plafonier|controsoffitt|muro$|parete|pareti$|"
                        r"prese$|presa$|interruttor|quadro)"
                    ),
                ],
            ),
            # An infiltration is a slow fault unless something else says otherwise.
            vetoes=(*slow, *_PAPERWORK, [_re(r"^(infiltrazion|filtrazion)")]),
        ),
        # "già alta 20 cm": a depth of water.
        SafetyRule(
            "flooding",
            ([{"LIKE_NUM": True}, _re(r"^(cm|centimetri|dita)$")],),
            requires=(([_WATER],),),
            vetoes=(*slow, *_PAPERWORK),
        ),
    )


def _structural_rules() -> tuple[SafetyRule, ...]:
    crack = _re(r"^(crep|fessur|spaccatur|lesion|crepacc|fenditur)")
    widening = _re(r"^(allarg|cresc|aument|allung|spalanc|ingrand)")
    opening = _re(r"^(apre$|aprendo|apert[ao]$|aprono)")
    creaking_part = _re(
        r"^(solaio|soffitt|trave|travi$|tetto|scale$|scala$|balcon|muro$|muri$|parete|"
        r"pareti$|terrazz|pianerottol|volta$)"
    )
    watery = ([_WATER], [_re(r"^(gocciol|goccia|gocce|pioggia|piove)")])
    # Fixtures and finishes, not masonry: "il corrimano si è staccato dal muro",
    # "si stacca un po' di pittura".
    fixtures = (
        [
            _re(
                r"^(corrimano|targa|targhetta|cartello|mensola|lampada|specchio|cassetta|"
                r"campanello|battiscopa|zoccolino|piastrell|mattonell|tenda|quadro|pensile|"
                r"antenna|parabola|pannell|pittur|vernic|scagli|tinteggiatur|canalin|plafonier|"
                r"lampadar|neon$|faretto)"
            )
        ],
    )
    return (
        SafetyRule(
            "structural",
            (
                [_re(r"^(calcinacc|crollo$|crollat|cedimento|voragine|crol+at)")],
                [_FALLING, _NOT_PLACE, _MASONRY],
                [_MASONRY, _gap(5), _FALLING],
                [_COMING, _DOWN, _gap(3), _MASONRY],
                [_MASONRY, _gap(3), _COMING, _DOWN],
                # Cracks that widen while one watches.
                [crack, _gap(7), widening],
                [crack, _gap(2), opening],
                [_re(r"^(aprendo|apert[ao]$|allargat|allargando)"), _gap(2), crack],
                # Creaking, bending, hanging loose.
                [_re(r"^scricchiol"), _gap(4), creaking_part],
                [creaking_part, _gap(3), _re(r"^scricchiol")],
                [
                    _re(
                        r"^(muro$|muri$|muretto|parapett|ringhiera|balcon|trave|travi$|solaio|"
                        r"recinzion|cornicion|gronda|facciat|pavimento|soffitt|parete)"
                    ),
                    _gap(5),
                    _re(
                        r"^(bilico|pend[eo]$|pendono|dondol|piegat|inclinat|oscill|appes|abbassat|"
                        r"spanciat|sbriciol|sgretol)"
                    ),
                ],
                [_re(r"^(trave|travi$|architrav)"), _gap(2), _re(r"^(spezzat|rott[aei]$|crepat)")],
                [crack, _gap(7), _in("piu"), _re(r"^(larg|grand|lung|apert)")],
                [_in("sta", "stanno"), _in("per"), _re(r"^(cader|crollar|staccar|venir)")],
            ),
            vetoes=(
                [_re(r"^(prezz|borsa$|gocciol|goccia|gocce)")],
                *_PAPERWORK,
                [_re(r"^(scors[oaie]$|passat[oa]$)")],
                *fixtures,
            ),
        ),
        # Pieces falling or being lost, where masonry is named.
        SafetyRule(
            "structural",
            (
                [_re(r"^(pezz|frammenti|blocc[oh]i?$)"), _gap(3), _FALLING],
                [_FALLING, _gap(2), _re(r"^(pezz|frammenti)")],
                [_re(r"^(perde$|perdendo|perdono)$"), _gap(1), _re(r"^(pezz|calcinacc)")],
            ),
            requires=(([_MASONRY],),),
            vetoes=(
                [_re(r"^(prezz|borsa$|gocciol|goccia|gocce)")],
                *_PAPERWORK,
                [_re(r"^(scors[oaie]$|passat[oa]$)")],
            ),
        ),
        # Something came off a wall or a ceiling: "pezzi staccati dalla facciata".
        SafetyRule(
            "structural",
            (
                [
                    _FALLING,
                    _gap(3),
                    _FROM,
                    _re(
                        r"^(facciat|cornicion|soffitt|tetto|balcon|volta$|controsoffitt|muro$|"
                        r"parete|terrazz|gronda|solaio|cornice|cornicione)"
                    ),
                ],
            ),
            vetoes=(
                *watery,
                *_PAPERWORK,
                [_re(r"^(scors[oaie]$|passat[oa]$)")],
                *fixtures,
            ),
        ),
    )


def _person_trapped_rules() -> tuple[SafetyRule, ...]:
    lift_quiet = (
        # "qualcuno ci fuma dentro" is about smoking in the lift.
        [_re(r"^(fuma|fumano|fumato|sigarett|mozzicon)")],
        [
            _in("nessuno"),
            _gap(3, negations=True),
            _in("dentro", "bloccato", "bloccata", "rimasto", "rimasta"),
        ],
        [_in("dentro"), _gap(3, negations=True), _in("nessuno")],
        [_in("vuoto", "vuota", "vuote")],
    )
    room = _re(
        r"^(bagno|cantin|locale|balcon|terrazz|stanza|camera|soffitt|garage|box$|sgabuzzin|"
        r"ripostigl|vano|magazzin|cella|cabina|sottoscala|lavanderia)"
    )
    cannot_open = (
        [_NOT, _gap(2, negations=True), _re(r"^(riesc|riusc|apr|apre|usci|esce|esc[eo]$|pu[oò])")],
        [_re(r"^(serratur|maniglia|chiave)")],
        [_in("porta"), _gap(3), _re(r"^(bloccat|incastrat)")],
    )
    return (
        SafetyRule(
            "person_trapped",
            (
                [_re(r"^intrappolat")],
                [_STUCK, _gap(2), _in("dentro", "tra", "fra")],
                [_PERSON, _gap(4), _STUCK],
                [
                    _PERSON,
                    _gap(1),
                    _re(r"^ferm[oa]$"),
                    _in("in", "nel", "nell'", "sul", "sulla", "dentro"),
                    _gap(1),
                    _LIFT,
                ],
                [_in("sono", "siamo", "stiamo", "sto", "so"), _gap(1), _STUCK],
                [
                    _in("sono", "siamo", "sto", "stiamo", "so", "resto", "restiamo"),
                    _re(r"^(nel|nell'|nella|dentro|chius|bloccat|ferm|rimast|intrappolat)"),
                    _gap(3),
                    _LIFT,
                ],
                [_in("sono", "siamo", "so"), _in("in"), _LIFT],
                [
                    _in("sono", "siamo", "so"),
                    _in("in"),
                    _re(r"^(\d+|due|tre|quattro|cinque|sei|sette|otto)$"),
                    _gap(1),
                    _LIFT,
                ],
                [_NOT, _re(r"^(riesc|riusc|pu[oò]$)"), _in("a", "ad", op="?"), _re(r"^usci")],
                [_PERSON, _gap(3), _in("dentro")],
                [_in("con", "co"), _in("dentro")],
                [_STUCK, _in("in", "nel", "nell'", "nella", "dentro"), _gap(1), _LIFT],
                [_PERSON, _gap(3), _in("nella", "nel", "nell'", "in"), _LIFT],
                [
                    _re(r"^(ferm|bloccat|piantat)"),
                    _gap(3),
                    _in("con", "co"),
                    _gap(1),
                    _PERSON,
                ],
            ),
            requires=(([_LIFT],),),
            vetoes=lift_quiet,
        ),
        # Shut in a room, a cellar, a gate: someone who cannot get out.
        SafetyRule(
            "person_trapped",
            (
                [_PERSON, _gap(4), _STUCK, _gap(3), room],
                [_in("sono", "siamo", "so"), _gap(1), _STUCK, _gap(3), room],
                [_PERSON, _gap(2), _STUCK, _in("dentro")],
            ),
            requires=(cannot_open,),
            # Locked out, or a bike, a car, a pet locked in.
            vetoes=(
                [_in("fuori")],
                [
                    _re(
                        r"^(bici|biciclett|auto$|macchina|moto$|motorino|pacco|pacchi|gatt[oi]|"
                        r"cane|cani|cagnolin|uccell|piccion|chiavi)$"
                    )
                ],
            ),
        ),
        # Caught in something: "un ragazzo incastrato nel cancello"; shut in with
        # someone inside: "si è chiusa con dentro mio figlio".
        SafetyRule(
            "person_trapped",
            (
                [_PERSON, _gap(4), _re(r"^(incastrat|intrappolat|schiacciat)")],
                [_in("con", "co"), _in("dentro"), _gap(1), _PERSON],
            ),
        ),
    )


def _person_unresponsive_rules() -> tuple[SafetyRule, ...]:
    answers = _re(r"^(rispond|risponn|rispunn|rispost|apre$|aprono|apriva|rapre|apr[ei]$)")
    no_answer = (
        [_NOT, _gap(1), answers],
        [_in("nessuno", "nisciuno"), _gap(1), answers],
        [_in("unn'", "un'"), answers],
        [_NOT, _in("da", "dà"), _in("segni", "segno")],
        [
            _NOT,
            _in("lo", "la", "li", "le", "l'"),
            _gap(1),
            _re(r"^(vede|vediamo|vedo|vedono|sent[eo]$|sentiamo)$"),
        ],
        [_NOT, _re(r"^(vediamo|vedo|vede)$"), _gap(2), _RESIDENT],
        [_NOT, _in("si"), _in("fa"), _in("vedere", "sentire")],
        [_re(r"^squill"), _gap(1), _in("a"), _in("vuoto")],
        [
            _NOT,
            _re(r"^(viene|vengono)$"),
            _gap(1),
            _in("ad", "a", "alla"),
            _re(r"^(aprire|porta)$"),
        ],
    )
    duration = (
        [
            _in("da", "d'"),
            _gap(1),
            _re(
                r"^(ieri|aieri|ajeri|giorni|stamattina|stamane|stanotte|"
                r"lunedi|martedi|mercoledi|giovedi|venerdi|sabato|"
                r"domenica|settimana|ore$|due$|tre$|quattro$|cinque$)"
            ),
        ],
        [_re(r"^(giorni|settimana)$")],
    )
    worry = (
        [_re(r"^(tv|televisi|radio|luci?$)"), _gap(3), _re(r"^(acces|sent)")],
        [_re(r"^(sent[eo]$|sentiamo|si)"), _gap(2), _re(r"^(tv|televisi|radio)")],
        [_re(r"^(tapparell|persian)"), _gap(3), _re(r"^(giu|abbassat|chius)")],
        [_in("posta"), _gap(3), _re(r"^(accumul|piena)")],
        [_re(r"^(cane|gatto)$"), _gap(3), _re(r"^(abbai|piange|miagol|ulul)")],
        [_re(r"^(vive|abita)$"), _in("da", op="?"), _re(r"^sol[oa]$")],
        [_re(r"^(odore|puzza|cattivo)"), _gap(3), _in("porta", "casa", "appartamento")],
        [_re(r"^(anzian|vecch|diabet|malat|cardiopat)")],
        [_in("ha", "aveva"), {"LIKE_NUM": True}, _in("anni")],
        [_in("per", "a"), _in("terra")],
    )
    # "vicino" is also "near": only "il vicino", "mio vicino" is a neighbour.
    someone = (
        [_RESIDENT],
        [_PERSON],
        [_in("il", "mio", "al", "del", "nostro", "un", "dal", "col", "suo"), _in("vicino")],
    )
    # Not answering about a parcel or an email is no cause for alarm; nor is a
    # supplier or an office that does not pick up.
    transactional = (
        [
            _re(
                r"^(pacco|pacchi|messaggi|email|mail|e-mail|spese|parcheggio|lettur|contator|"
                r"fattur|bonifico|mai$|whatsapp|sms|chat|corriere|postino|tecnico|ditta|"
                r"idraulico|fornitor|impresa|numero|ufficio|studio|centralino|amministrazion)"
            )
        ],
    )
    distress = _re(r"^(lament|gem[eo]|gemit|rantol)")
    unwell = _re(r"^(svenut|accasciat|incoscient|esanime|immobil[ei]$|collass|malore)")
    return (
        SafetyRule(
            "person_unresponsive",
            no_answer,
            requires=(someone, (*duration, *worry)),
            vetoes=transactional,
        ),
        # Someone heard calling for help or moaning behind a door.
        SafetyRule(
            "person_unresponsive",
            (
                [_re(r"^(chiama|chiamare|grida|gridare|urla|urlare|invoca)"), _in("aiuto")],
                [_re(r"^(sent|sento)"), _gap(4), distress],
                [_re(r"^(gem[eo]|gemit|rantol)"), _gap(3), _re(r"^(dentro|porta|casa)")],
                [
                    _re(r"^(arriv|provengon|vengono|escono)"),
                    _gap(2),
                    _re(r"^(gemit|lamenti|rantol)"),
                ],
            ),
        ),
        # Found collapsed, motionless, on the floor and not getting up.
        SafetyRule(
            "person_unresponsive",
            (
                [_PERSON, _gap(5), unwell],
                [_in("vicino"), _gap(8), unwell],
                [unwell, _gap(4), _PERSON],
                [_re(r"^(privo|priva)$"), _in("di"), _re(r"^(sensi|conoscenza)$")],
                [
                    _re(r"^(stes[oa]|distes[oa]|sdraiat[oa]|riverso|riversa)$"),
                    _in("sul", "per", "a", "in"),
                    _re(r"^(pavimento|terra)$"),
                ],
            ),
            vetoes=([_re(r"^(gatto|cane|cagnolin|micio)$")], *_PAST),
        ),
        # On the floor and not getting up.
        SafetyRule(
            "person_unresponsive",
            ([_NOT, _gap(3), _re(r"^(rialz|alz|respira$|reagisc|muove$)")],),
            requires=(someone, ([_in("terra")], [_re(r"^cadut[oa]$")])),
            vetoes=([_re(r"^(gatto|cane|cagnolin|micio)$")], *_PAST),
        ),
    )


def _break_in_rules() -> tuple[SafetyRule, ...]:
    intruder = _re(
        r"^(ladr|malvivent|intrus|qualcun|sconosciut|tizi$|tipo$|tipi$|gente$|uno$|due$|"
        r"incappucciat|passamontagn|malintenzionat|individu|estrane|uom[oi]$|uomini$)"
    )
    acting = _re(
        r"^(armegg|forzand|scassin|sfondand|scavalc|arrampic|rubando|rubano|entrat[oaie]$|"
        r"saltat[oaie]$|saltano|scardin|manomett|scappat[oaie]$)"
    )
    trying = _re(
        r"^(prova|provano|provando|provato|cerca|cercano|cercando|tenta|tentano|tentando)$"
    )
    entering = _re(r"^(entra|forza|scassin|sfonda|apri|scavalc)")
    breaking = _re(r"^(tagliand|segand|rompend|spaccand|svitand|sfondand|scardinand|buttand)")
    past = (
        [
            _re(
                r"^(denunci|ieri|stati$|scorsa|scorso|settimana|stanotte|assicurazion|"
                r"videosorveglianz|telecamer|preventiv|mese$|mesi$|antifurt|allarm|install|"
                r"costerebb|impiant)"
            )
        ],
        [_in("contro"), _in("i"), _in("ladri")],
        *_PAPERWORK,
    )
    return (
        SafetyRule(
            "break_in",
            (
                [
                    _in("stanno", "sta", "stava", "stavano", "qualcuno"),
                    _gap(2),
                    _re(r"^(forzand|scassinand|sfondand|scavalcand|rubando|armeggiand)"),
                ],
                [_in("stanno", "sta", "stava", "stavano"), _gap(1), breaking, _gap(3), _DOOR],
                [_in("stanno", "sta", "stava"), _gap(1), _in("facendo"), _in("leva")],
                [_in("piede"), _in("di"), _in("porco")],
                [_in("sta", "stanno"), _in("a"), _re(r"^(sfond|forz|scassin|rubb|rub)")],
                [intruder, _gap(5, negations=True), acting],
                [intruder, _gap(7, negations=True), trying, _gap(2), entering],
                [
                    intruder,
                    _gap(7, negations=True),
                    trying,
                    _gap(2),
                    _re(r"^(maniglie|maniglia|porte$|porta$|serratur|finestr)"),
                ],
                [
                    _re(r"^(ladr|malvivent|intrus|scassinator)"),
                    _gap(4),
                    _in(
                        "dentro",
                        "adesso",
                        "ora",
                        "momento",
                        "entrando",
                        "rubando",
                        "scappando",
                        "stanno",
                        "sta",
                        "casa",
                        "palazzo",
                        "cantina",
                        "cantine",
                        "garage",
                        "cortile",
                    ),
                ],
                [_in("ci"), _in("sono"), _gap(2), _re(r"^(ladr|malvivent|intrus)")],
                [_re(r"^entrat"), _gap(2), _re(r"^(ladr|malvivent|intrus)")],
                [_in("furto", "effrazione", "scasso"), _in("in"), _in("corso", "atto")],
                [_in("in"), _in("corso"), _re(r"^(furt|effrazion|scass)")],
                [_in("hanno", "han"), _gap(1), _FORCED_BY, _gap(3), _DOOR],
            ),
            vetoes=past,
        ),
        # A door or lock found forced, with a sign that it is happening or just happened.
        SafetyRule(
            "break_in",
            ([_FORCED_BY, _gap(3), _DOOR], [_DOOR, _gap(5), _FORCED_BY]),
            requires=(([_PRESENCE],),),
            vetoes=past,
        ),
        # Merely broken ("cilindro rotto") needs the signs of a burglary.
        SafetyRule(
            "break_in",
            ([_FORCED, _gap(3), _DOOR], [_DOOR, _gap(5), _FORCED]),
            requires=(([_re(r"^(sottosopra|rovesciat|soqquadro|torcia|passi$|rumor|scappat)")],),),
            vetoes=past,
        ),
    )


RULES: tuple[SafetyRule, ...] = (
    *_gas_rules(),
    *_carbon_monoxide_rules(),
    *_fire_rules(),
    *_electrical_rules(),
    *_smoke_rules(),
    *_flooding_rules(),
    *_structural_rules(),
    *_person_trapped_rules(),
    *_person_unresponsive_rules(),
    *_break_in_rules(),
)

# Weaker cues: words that say which danger an emergency is about, too common to
# raise a message on their own. Used only to name the hazard of a message the
# classifier already took for an emergency.
CUES: dict[str, tuple[Pattern, ...]] = {
    "gas_smell": ([_GAS],),
    "carbon_monoxide": (
        [_re(r"^(monossido|caldai|scaldabagn|stufa|stufetta|boiler|fuliggin)")],
        *_CO_SYMPTOM,
    ),
    "fire": ([_re(r"^(fuoco|foco|fiamm|brucia|incendi|rogo|pompier|115$)")],),
    "electrical": (
        [_re(r"^(scintill|scossa|elettric|corto|cortocircuito|salvavita|interruttor)")],
        [_ELECTRIC],
    ),
    "smoke": ([_re(r"^(fumo|fumi|bruciat|nebbi|foschi|acre|soffoc)")],),
    "flooding": (
        [
            _re(
                r"^(acqua|l'acqua|d'acqua|tub[oi]$|tubatur|tubazion|allag|perdit|perde$|cascat|"
                r"fium|lago|piscin|bagnat|colonna|scarico|fogna|liquam|inond)"
            )
        ],
    ),
    "structural": (
        [
            _re(
                r"^(crep|intonac|cornicion|calcinacc|soffitt|facciat|balcon|croll|tegol|cede|"
                r"ceduto|muro|solaio|lesion|spaccatur|fession|voragine)"
            )
        ],
    ),
    "person_trapped": ([_LIFT], [_re(r"^(intrappol|incastr|bloccat|chius[oa]$)")]),
    "person_unresponsive": (
        [_NOT, _gap(1), _re(r"^(rispond|apre$)")],
        [_re(r"^(svenut|malore|accasciat|aiuto|anzian|vecchiett)")],
    ),
    "break_in": ([_re(r"^(ladr|scass|forzat|intrus|sconosciut|rubando|furto|effrazion)")],),
}


class SafetyNet:
    """The `portineria_safety` component."""

    def __init__(self, nlp: Language, name: str = "safety") -> None:
        self.name = name
        self.matcher = GatedMatcher(nlp.vocab, per_pattern=True)
        # Vetoes, requirements and the quiet phrases are asked only when a rule
        # matched, but there are many of them: they are gated pattern by pattern too.
        self.conditions = GatedMatcher(nlp.vocab, per_pattern=True)
        self.quiet = GatedMatcher(nlp.vocab, per_pattern=True)
        # Matcher keys are "hazard#index": one hazard has several rules, each
        # with its own vetoes and requirements.
        self.rules: dict[str, SafetyRule] = {}
        for index, rule in enumerate(RULES):
            key = f"{rule.hazard}#{index}"
            self.rules[key] = rule
            self.matcher.add(key, list(rule.patterns))
            if rule.vetoes:
                self.conditions.add(f"veto:{key}", list(rule.vetoes))
            for group, patterns in enumerate(rule.requires):
                self.conditions.add(f"needs:{key}:{group}", list(patterns))
        self.quiet.add("resolved", list(_RESOLVED))
        self.quiet.add("recurring", list(_RECURRING))

    def __call__(self, doc: Doc) -> Doc:
        doc.spans[SAFETY_SPAN_KEY] = self.fired(doc)
        return doc

    def fired(self, doc: Doc) -> list[Span]:
        """One span per hazard whose rule stands, in the order of HAZARDS."""
        matches = self.matcher(doc)
        if not matches or self._is_report_or_recurring(doc):
            return []
        present = {span.label_ for span in self.conditions(doc)}
        kept: dict[str, Span] = {}
        for span in sorted(matches, key=lambda s: (s.start, s.end)):
            key = span.label_
            rule = self.rules[key]
            if rule.hazard in kept or not self._conditions_hold(key, rule, present):
                continue
            if self._negated(span) or self._after_excluded_word(span, rule):
                continue
            kept[rule.hazard] = Span(doc, span.start, span.end, label=rule.hazard)
        return [kept[name] for name in HAZARDS if name in kept]

    @staticmethod
    def _conditions_hold(key: str, rule: SafetyRule, present: set[str]) -> bool:
        if f"veto:{key}" in present:
            return False
        return all(f"needs:{key}:{group}" in present for group in range(len(rule.requires)))

    def _is_report_or_recurring(self, doc: Doc) -> bool:
        """The danger is reported as solved, or as something that happens now and then."""
        return any(not self._negated(span) for span in self.quiet(doc))

    @staticmethod
    def _negated(span: Span) -> bool:
        """A negation in the few words before the match, within the same clause."""
        doc = span.doc
        for i in range(span.start - 1, max(span.start - 1 - _NEGATION_WINDOW, -1), -1):
            norm = doc[i].norm_
            if norm in NEGATIONS:
                return True
            if norm in _CLAUSE_BREAKS:
                return False
        return False

    @staticmethod
    def _after_excluded_word(span: Span, rule: SafetyRule) -> bool:
        doc = span.doc
        before = {doc[i].norm_ for i in range(max(span.start - 2, 0), span.start)}
        return bool(before & rule.not_after)


@Language.factory("portineria_safety")
def make_safety_net(nlp: Language, name: str) -> SafetyNet:
    return SafetyNet(nlp, name)


# The cue matcher is built on first use for each vocabulary (one per loaded
# pipeline): most messages are not emergencies and never need it. A Vocab takes
# no weak reference, so the few most recent are kept by id, with the vocabulary
# itself to keep its id from being reused.
_CUE_MATCHERS_KEPT = 8
_cue_matchers: dict[int, tuple[Vocab, GatedMatcher]] = {}
_cue_lock = threading.Lock()


def _cue_matcher(vocab: Vocab) -> GatedMatcher:
    entry = _cue_matchers.get(id(vocab))
    if entry is None or entry[0] is not vocab:
        with _cue_lock:
            entry = _cue_matchers.get(id(vocab))
            if entry is None or entry[0] is not vocab:
                matcher = GatedMatcher(vocab)
                for hazard, patterns in CUES.items():
                    matcher.add(f"cue:{hazard}", list(patterns))
                while len(_cue_matchers) >= _CUE_MATCHERS_KEPT:
                    del _cue_matchers[next(iter(_cue_matchers))]
                entry = _cue_matchers[id(vocab)] = (vocab, matcher)
    return entry[1]


def hazard_cue(doc: Doc) -> str | None:
    """The hazard a weaker cue points to, first in the order of HAZARDS, or None.

    For a message the classifier took for an emergency without any rule firing:
    "la caldaia... ci sentiamo strani" still gets `carbon_monoxide`.
    """
    found = {span.label_.removeprefix("cue:") for span in _cue_matcher(doc.vocab)(doc)}
    return next((hazard for hazard in HAZARDS if hazard in found), None)
