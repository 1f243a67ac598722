"""The emergency safety net: rules that can raise a message to `emergenza`.

A spaCy component (`portineria_safety`) runs a `Matcher` over the normalised
tokens and stores the rules that matched in `doc.spans["portineria_safety"]`,
each span labelled with its rule name. `intents.prediction.decide` then raises
the intent to `emergenza` when a rule fired; a rule never lowers anything.

Rules: gas_smell, smoke, fire, flooding, person_trapped, falling_masonry,
sparks, break_in. Each is written to stay quiet on the usual border cases: a
damp stain or slow drip, a lift stopped with nobody inside, "gas" in a bill
question, a smoke detector being installed, a past theft. A match is dropped
when a negation sits just before it ("non c'è più odore di gas") and a whole
message is left alone when it reports the danger as solved ("perdita riparata").
"""

from __future__ import annotations

from dataclasses import dataclass

from spacy.language import Language
from spacy.matcher import Matcher
from spacy.tokens import Doc, Span

from intents.matching import GatedMatcher
from intents.prediction import SAFETY_SPAN_KEY

RULE_NAMES: tuple[str, ...] = (
    "gas_smell",
    "smoke",
    "fire",
    "flooding",
    "person_trapped",
    "falling_masonry",
    "sparks",
    "break_in",
)

NEGATIONS = frozenset("non nessun nessuna nessuno niente nulla senza".split())
# Words that end the look-back for a negation (a new clause starts).
_CLAUSE_BREAKS = frozenset(", . ; : ! ? ma pero".split())
_NEGATION_WINDOW = 4

Pattern = list[dict[str, object]]


def _re(regex: str, op: str | None = None) -> dict[str, object]:
    token: dict[str, object] = {"NORM": {"REGEX": regex}}
    if op:
        token["OP"] = op
    return token


def _in(*words: str, op: str | None = None) -> dict[str, object]:
    token: dict[str, object] = {"NORM": {"IN": list(words)}}
    if op:
        token["OP"] = op
    return token


def _gap(most: int) -> dict[str, object]:
    return {"OP": f"{{0,{most}}}"}


_GAS = _in("gas", "metano", "gpl")
_WATER = _in("acqua", "acque", "liquame", "liquami")
_LIFT = _re(r"^(ascensor|elevator|montacaric|cabina)")
_PERSON = _re(
    r"^(qualcun|persona|persone|gente|bambin|anzian|signor|madre|padre|mamma|papa|figli|"
    r"nonn|vicin[aie]$|ragazz|donna|uomo|marito|moglie|sorella|fratello|zi[ao]$|disabil|"
    r"inquilin|condomin[oaie]$|corriere|postino|badante)"
)
_STUCK = _re(r"^(bloccat|chius[oaie]$|rimast|intrappolat|incastrat)")
_MASONRY = _re(
    r"^(intonac|cornicion|mattone|mattoni$|calcinacc|frontalin|tegol|soffitt|controsoffitt|"
    r"balcon|cemento|muratur|pietr|marmo|facciat|parete|pareti$|muro$|muri$|solaio|"
    r"gronda|comignol|cornice|lastr|pavimento|terrazz|tetto|trave|travi$|gradin|ringhiera|"
    r"parapett)"
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
_FALLING = _re(
    r"^(cad[eo]$|cadono|cadut|cadend|crollat|crolla$|crollano|crollo$|precipit|staccat|"
    r"ceduto|ceduta|cede$|cedend)"
)
_COMING = _re(r"^(venut[oaie]$|vien[e]?$|vengono|venendo)")
_DOWN = _in("giu", "giu'", "addosso")


@dataclass(frozen=True)
class SafetyRule:
    name: str
    patterns: tuple[Pattern, ...]
    # A match is ignored when a word just before it is one of these ("rilevatore
    # di fumo", "prevenzione incendi").
    not_after: frozenset[str] = frozenset()
    # The rule stays quiet for the whole message when one of these appears.
    vetoes: tuple[Pattern, ...] = ()
    # Some rules need a second ingredient anywhere in the message.
    requires: tuple[Pattern, ...] = ()


RULES: tuple[SafetyRule, ...] = (
    SafetyRule(
        "gas_smell",
        (
            [_re(r"^(puzz|odor|tanf|fuga$|fughe$|perdit|esalazion|fuoriuscit)"), _gap(3), _GAS],
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
                ),
                _gap(2),
                _GAS,
            ],
            [_GAS, _gap(3), _re(r"^(puzz|odor|tanf|esce$|fuoriesc|perde$)")],
            [_GAS, _gap(3), _in("si"), _re(r"^sent")],
        ),
        not_after=frozenset({"bolletta", "bollette", "lettura", "ricerca"}),
        vetoes=([_in("bolletta", "bollette", "fattura", "lettura", "tariffa", "conguaglio")],),
    ),
    SafetyRule(
        "smoke",
        (
            [
                _re(
                    r"^(esce$|uscito|usciva|escono|uscendo|fuoriesce|vedo|vede$|pien[oaie]$|"
                    r"invas[oa]$|sale$|salendo|entra$|entrando|tanto|molto|parecchio)"
                ),
                _gap(3),
                _in("fumo", "fumi", "fumata"),
            ],
            [_in("c'", "ce", "c"), _in("e", "era"), _gap(3), _in("fumo", "fumi")],
            [
                _in("fumo", "fumi"),
                _in(
                    "nero",
                    "denso",
                    "grigio",
                    "bianco",
                    "acre",
                    "dal",
                    "dalla",
                    "dallo",
                    "dai",
                    "dalle",
                    "dagli",
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
            [
                _re(r"^(puzz|odor|tanf)"),
                _in("di", "forte", "fortissimo", "forte di"),
                _re(r"^(bruciat|plastica|fumo)"),
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
            }
        ),
        vetoes=([_re(r"^(sigarett|fumator|fumare$|fumano$|fuma$|fumava|barbecue|grigliat)")],),
    ),
    SafetyRule(
        "fire",
        (
            [_in("incendio", "incendi", "fiamme", "fiamma", "rogo", "divampato", "divampata")],
            [_re(r"^(pres[oa]$|prende$|prendendo|preso$|andato$|andata$|dato$)"), _in("fuoco")],
            [_in("a", "in"), _in("fuoco", "fiamme")],
            [_in("vigili"), _in("del"), _in("fuoco")],
            [_in("pompieri")],
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
        vetoes=(
            [
                _re(
                    r"^(cpi$|scia$|esercitazion|collaud|prevenzion|estintor|antincendi|"
                    r"sopralluog|assicurazion|polizz)"
                )
            ],
        ),
    ),
    SafetyRule(
        "flooding",
        (
            [_re(r"^(allag|inond|alluvion|sommers)")],
            [
                _WATER,
                _gap(4),
                _re(
                    r"^(fiott|cascat|fium|torrent|secchi|scroscia|ovunque|"
                    r"dappertutto|dovunque|getto|zampill|valanga|ginocchi|caviglie)"
                ),
            ],
            [_re(r"^(fiott|cascat|fium|torrent|secchiat|getto|zampill)"), _gap(3), _WATER],
            [_re(r"^(piove|piovendo)$"), _in("in", "dentro", "dal", "nel", "nella", "dalla")],
            [
                _re(
                    r"^(entra|entrando|esce|uscendo|sgorga|sgorgando|zampilla|schizza|scende|"
                    r"scendendo|arriva|arrivando|invade|invadendo|venendo|viene|cade|cadendo)$"
                ),
                _gap(2),
                _WATER,
                _gap(4),
                _re(
                    r"^(soffitt|muro|muri|pareti|parete|porta|finestr|lampadar|scale|"
                    r"vano|ascensor|quadro|tetto|sotto|sopra|pavimento)"
                ),
            ],
            [
                _re(r"^(scoppiat|esplos|saltat)"),
                _gap(2),
                _re(r"^(tub|condott|flessibil|colonna|autoclave|boiler|scaldabagno)"),
            ],
            [_re(r"^(tub|condott|flessibil|colonna)"), _gap(3), _re(r"^(scoppiat|esplos|saltat)")],
            [_re(r"^pien[oaie]$"), _in("d'", "di", "de"), _WATER],
            [_in("sott'", "sotto"), _WATER],
        ),
        vetoes=(
            [_re(r"^(gocciol|goccia|gocce|macchi|umid|condensa|muffa|alone$|aloni$|lentament)")],
        ),
    ),
    SafetyRule(
        "person_trapped",
        (
            [_re(r"^(intrappolat|incastrat)")],
            [_STUCK, _gap(2), _in("dentro", "tra", "fra")],
            [_PERSON, _gap(4), _STUCK],
            [_in("sono", "siamo", "stiamo", "sto"), _gap(1), _STUCK],
            [
                _in("non"),
                _re(r"^(riesc|riusc|pu[oò]$)"),
                _in("a", "ad", "uscire"),
                _re(r"^usci", op="?"),
            ],
            [_PERSON, _gap(3), _in("dentro")],
        ),
        requires=([_LIFT],),
        vetoes=(
            [_in("nessuno"), _gap(3), _in("dentro", "bloccato", "bloccata", "rimasto", "rimasta")],
            [_in("dentro"), _gap(3), _in("nessuno")],
            [_in("vuoto", "vuota", "vuote")],
        ),
    ),
    SafetyRule(
        "falling_masonry",
        (
            [_re(r"^(calcinacc|crollo$|crollat|cedimento)")],
            [_FALLING, _NOT_PLACE, _MASONRY],
            [_MASONRY, _gap(3), _FALLING],
            [_COMING, _DOWN, _gap(3), _MASONRY],
            [_MASONRY, _gap(3), _COMING, _DOWN],
        ),
        vetoes=([_re(r"^(prezz|borsa|gocciol|goccia|gocce)")],),
    ),
    SafetyRule(
        "sparks",
        (
            [_re(r"^(scintill|sfavill)")],
            [_in("arco"), _in("elettrico")],
            [_re(r"^(fiammat)")],
            [
                _re(r"^(prend|pres|da$|danno|dava|fa$|fanno)"),
                _in("la", "le", "una", "delle"),
                _re(r"^scoss"),
            ],
        ),
    ),
    SafetyRule(
        "break_in",
        (
            [
                _in("stanno", "sta", "stava", "stavano", "qualcuno"),
                _gap(2),
                _re(r"^(forzand|scassinand|sfondand|scavalcand|rubando)"),
            ],
            [
                _re(r"^(ladr|malvivent|intrus|qualcun|sconosciut|tizi$)"),
                _gap(3),
                _in("sta", "stanno", "prova", "provano", "cerca", "cercano", "tenta", "tentano"),
                _gap(2),
                _re(r"^(entra|forza|scassin|sfonda|apri|scavalc)"),
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
                    "garage",
                    "cortile",
                ),
            ],
            [_in("ci"), _in("sono"), _gap(2), _re(r"^(ladr|malvivent|intrus)")],
            [_in("furto", "effrazione", "scasso"), _in("in"), _in("corso", "atto")],
        ),
        vetoes=(
            [
                _re(
                    r"^(denunci|ieri|stati$|scorsa|scorso|settimana|stanotte|assicurazion|"
                    r"videosorveglianz|telecamer|preventiv|rubat|trovat)"
                )
            ],
        ),
    ),
)

# Phrases that report the danger as over: the message is a report, not an alarm.
_RESOLVED: tuple[Pattern, ...] = (
    [
        _re(
            r"^(risolt|riparat|sistemat|ripristin|eliminat|rientrat|domat|bonificat|sostituit|"
            r"eseguit|completat|terminat|ultimat|asciugat|aspirat|sigillat)"
        )
    ],
    [_re(r"^mess[oaie]$"), _in("in"), _in("sicurezza")],
    [_in("tutto"), _in("a"), _in("posto")],
    [_in("tutto"), _in("ok", "okay", "risolto", "sistemato")],
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
    [_in("tutte", "tutti"), _in("le", "i"), _in("volte", "giorni", "notti", "mattine")],
)


class SafetyNet:
    """The `portineria_safety` component."""

    def __init__(self, nlp: Language, name: str = "safety") -> None:
        self.name = name
        self.matcher = GatedMatcher(nlp.vocab)
        self.conditions = Matcher(nlp.vocab)
        self.quiet = Matcher(nlp.vocab)
        self.rules = {rule.name: rule for rule in RULES}
        for rule in RULES:
            self.matcher.add(rule.name, list(rule.patterns))
            if rule.vetoes:
                self.conditions.add(f"veto:{rule.name}", list(rule.vetoes))
            if rule.requires:
                self.conditions.add(f"needs:{rule.name}", list(rule.requires))
        self.quiet.add("resolved", list(_RESOLVED))
        self.quiet.add("recurring", list(_RECURRING))

    def __call__(self, doc: Doc) -> Doc:
        doc.spans[SAFETY_SPAN_KEY] = self.fired(doc)
        return doc

    def fired(self, doc: Doc) -> list[Span]:
        """The rule matches that stand, in the order of the rule list."""
        matches = self.matcher(doc)
        if not matches or self._is_report_or_recurring(doc):
            return []
        present = {span.label_ for span in self.conditions(doc, as_spans=True)}
        kept: dict[str, Span] = {}
        for span in sorted(matches, key=lambda s: (s.start, s.end)):
            rule = self.rules[span.label_]
            if rule.name in kept or f"veto:{rule.name}" in present:
                continue
            if rule.requires and f"needs:{rule.name}" not in present:
                continue
            if self._negated(span) or self._after_excluded_word(span, rule):
                continue
            kept[rule.name] = span
        return [kept[name] for name in RULE_NAMES if name in kept]

    def _is_report_or_recurring(self, doc: Doc) -> bool:
        """The danger is reported as solved, or as something that happens now and then."""
        return any(not self._negated(span) for span in self.quiet(doc, as_spans=True))

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
