"""Rule-based entities: dates, times, euro amounts, addresses, condominiums, invoices.

A spaCy component (`portineria_entities`) that sets `doc.ents`. Word-shaped
entities ("lunedì 12 marzo", "via dei Mille 5", "Condominio Le Betulle") are
found by a `Matcher` over the normalised tokens; identifier-shaped ones
("12/03/2025", "10:30", "1.250,00 €", "fattura n. 2024/123") by regular
expressions over the text, mapped back to tokens with `Doc.char_span`, because
the Italian tokenizer splits them inconsistently ("03-04-25", "FT-2024-0012").
Overlaps keep the longest span. Runs after the normalizer (patterns read NORM).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from intents.matching import GatedMatcher

MONTH_NAMES = (
    "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre dicembre"
).split()
# Abbreviations only count next to a day number ("3 giu"): alone they are words.
MONTHS = MONTH_NAMES + "gen feb mar apr mag giu lug ago set sett ott nov dic".split()
WEEKDAYS = (
    "lunedi martedi mercoledi giovedi venerdi sabato domenica lun mar mer gio ven sab dom"
).split()
RELATIVE_DAYS = ("oggi domani dopodomani ieri stamattina stamani stasera stanotte stamane").split()
DAY_PARTS = ("mattina", "mattinata", "pomeriggio", "sera", "serata", "notte")
# Street types, normalised ("v.le" and "p.zza" included as typed).
STREET_TYPES = (
    "via viale v.le piazza p.za p.zza pza piazzale p.le corso c.so largo vicolo vico "
    "strada lungomare lungotevere contrada c.da borgo salita calle traversa"
).split()
BUILDING_WORDS = (
    "condominio cond. supercondominio residence residenza palazzina palazzo complesso parco"
).split()
# Lower-case words that may sit inside a proper name ("via dei Mille", "Le Betulle").
NAME_CONNECTORS = (
    "di de del della dello dei degli delle d' dell' san santa santo sant' s. il la le lo i gli l'"
).split()
# After "via", these mean "by means of", not a street.
NOT_STREET_NAMES = frozenset(
    "mail email e-mail pec whatsapp sms posta telefono fax web internet app bonifico".split()
)

_DIGIT = re.compile(r"\d")
_NUMBER = r"\d{1,3}(?:\.\d{3})+(?:,\d{1,2})?|\d+(?:[.,]\d{1,2})?"
_REGEXES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "INVOICE_NO",
        re.compile(
            r"(?i)\b(?:fattur[ae]|fatt\.?|ft\.?|nota\s+di\s+credito|proforma|pro-forma)"
            r"\s*(?:n(?:r|um(?:ero)?)?\s*[.°º:]?|n°|no\.|#)?\s*"
            r"(?P<id>[a-z]{0,4}[-/]?\d[\w/\-.]*\w|\d)"
        ),
    ),
    ("INVOICE_NO", re.compile(r"\b(?P<id>FT[-/]?\d{2,}(?:[-/]\w+)*)\b")),
    (
        "MONEY",
        re.compile(
            rf"(?i)(?P<id>(?:€|eur(?:o|i)?\b)\s*(?:{_NUMBER})(?:\s*(?:mila|k)\b)?"
            rf"|(?:{_NUMBER})\s*(?:mila\s*|k\s*)?(?:€|eur(?:o|i)?\b))"
        ),
    ),
    (
        "DATE",
        re.compile(
            r"(?<![\d/.:,-])(?P<id>(?:[12]\d|3[01]|0?[1-9])[/-](?:1[0-2]|0?[1-9])"
            r"(?:[/-](?:\d{4}|\d{2}))?|(?:[12]\d|3[01]|0?[1-9])\.(?:1[0-2]|0?[1-9])\.(?:\d{4}|\d{2}))"
            r"(?![\d/.,-]*\d)"
        ),
    ),
    (
        "TIME",
        re.compile(
            r"(?i)(?<![\d/.,:-])(?P<id>(?:[01]?\d|2[0-3])[:.][0-5]\d(?:\s*h\b)?"
            r"|h\s?(?:[01]?\d|2[0-3])\b|(?:[01]?\d|2[0-3])h\b)(?![\d/.,:-]*\d)"
        ),
    ),
)

TokenPattern = list[dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    """Matcher patterns for one label; `trim` leading tokens are cues, not entity."""

    label: str
    patterns: tuple[TokenPattern, ...]
    trim: int = 0
    check: Callable[[Span], bool] | None = None


def _norm_in(words: Iterable[str], op: str | None = None) -> dict[str, Any]:
    token: dict[str, Any] = {"NORM": {"IN": list(words)}}
    if op:
        token["OP"] = op
    return token


# A word of a proper name: capitalised, a Roman numeral, a day number ("XX
# Settembre", "4 Novembre") or a lower-case connector ("dei", "della").
_NAME_WORD = {
    "TEXT": {
        "REGEX": r"^(?:[A-ZÀ-Þ][\wà-ÿ'’.-]*|[IVXL]+|\d{1,2}|d[ei]|de[il]|dell[aeo']?|degli|delle)$"
    },
}
_CIVIC = {"TEXT": {"REGEX": r"^\d{1,4}[a-zA-Z]?$"}}
_CIVIC_SUFFIX: TokenPattern = [{"ORTH": "/"}, {"TEXT": {"REGEX": r"^[a-zA-Z]$"}}]


def _has_title_word(span: Span, skip: int = 1) -> bool:
    """A proper name needs at least one capitalised word after the cue."""
    return any(tok.text[:1].isupper() and tok.is_alpha for tok in span[skip:])


def _is_street(span: Span) -> bool:
    return _is_lower_street(span) and _has_title_word(span)


def _is_lower_street(span: Span) -> bool:
    return len(span) > 1 and span[1].norm_ not in NOT_STREET_NAMES


def _is_building(span: Span) -> bool:
    # "Condominio di Via Roma 5" is an address: leave it to the ADDRESS rule.
    names = [tok for tok in span[1:] if tok.norm_ not in NAME_CONNECTORS and not tok.is_punct]
    return bool(names) and names[0].norm_ not in STREET_TYPES and _has_title_word(span)


def _name_tokens(first: dict[str, Any]) -> TokenPattern:
    """A capitalised name of one to four words, connectors allowed inside."""
    return [
        first,
        {**_NAME_WORD, "OP": "?"},
        {**_NAME_WORD, "OP": "?"},
        {**_NAME_WORD, "OP": "?"},
    ]


def _rules() -> tuple[Rule, ...]:
    number = {"TEXT": {"REGEX": r"^(?:[12]\d|3[01]|0?[1-9])°?$"}}
    year = {"TEXT": {"REGEX": r"^(?:19|20)\d\d$"}, "OP": "?"}
    hour = {"TEXT": {"REGEX": r"^(?:[01]?\d|2[0-3])$"}}
    name_start = {"TEXT": {"REGEX": r"^(?:[A-ZÀ-Þ][\wà-ÿ'’.-]*|[IVXL]+|\d{1,2})$"}}
    quote = {"ORTH": {"IN": ['"', "'", "«", "»", "“", "”"]}, "OP": "?"}
    return (
        Rule(
            "DATE",
            (
                [number, _norm_in(MONTHS), year],
                [_norm_in(WEEKDAYS), number, _norm_in(MONTHS, "?"), year],
                [_norm_in(WEEKDAYS), _norm_in(["prossimo", "prossima"], "?")],
                [_norm_in(RELATIVE_DAYS)],
                [_norm_in(["settimana", "mese"]), _norm_in(["prossima", "prossimo"])],
                [_norm_in(["prossima", "prossimo"]), _norm_in(["settimana", "mese"])],
                [_norm_in(["fine", "inizio", "meta"]), _norm_in(["mese", "settimana"])],
                [_norm_in(["fine", "inizio", "meta"]), _norm_in(MONTH_NAMES)],
                [_norm_in(MONTH_NAMES), {"TEXT": {"REGEX": r"^(?:19|20)\d\d$"}}],
            ),
        ),
        Rule(
            "DATE",
            (
                [
                    _norm_in(["a", "di", "ad", "entro", "per", "da", "dal", "del"]),
                    _norm_in(MONTH_NAMES),
                ],
            ),
            trim=1,
        ),
        Rule(
            "TIME",
            (
                [
                    _norm_in(["alle", "ore", "dalle", "verso", "entro", "per"]),
                    hour,
                    _norm_in(["e"]),
                    _norm_in(["mezza", "mezzo", "quarto", "un"]),
                    _norm_in(["quarto"], "?"),
                ],
                [_norm_in(["alle", "ore", "dalle", "verso", "entro"]), hour],
                [
                    _norm_in(["alle", "ore", "dalle", "verso"]),
                    {"LOWER": {"REGEX": r"^\d{1,2}[:.]\d\d$"}},
                ],
            ),
            trim=1,
        ),
        Rule(
            "TIME",
            (
                [_norm_in(["mezzogiorno", "mezzanotte"])],
                [
                    _norm_in(["in", "nel", "nella", "di", "della", "verso", "entro", "tarda"]),
                    _norm_in(DAY_PARTS),
                ],
            ),
            trim=0,
        ),
        Rule(
            "TIME",
            ([_norm_in(RELATIVE_DAYS + WEEKDAYS), _norm_in(DAY_PARTS)],),
            trim=1,
        ),
        Rule(
            "ADDRESS",
            (
                [_norm_in(STREET_TYPES), *_name_tokens(_NAME_WORD), {**_CIVIC, "OP": "?"}],
                [_norm_in(STREET_TYPES), *_name_tokens(_NAME_WORD), _CIVIC, *_CIVIC_SUFFIX],
            ),
            check=_is_street,
        ),
        Rule(
            "ADDRESS",
            (
                # Chat style, all lower case: only with a house number ("via roma 12").
                [_norm_in(STREET_TYPES), {"IS_ALPHA": True}, {"IS_ALPHA": True, "OP": "?"}, _CIVIC],
            ),
            check=_is_lower_street,
        ),
        Rule(
            "CONDOMINIO",
            (
                [
                    _norm_in(BUILDING_WORDS),
                    quote,
                    _norm_in(NAME_CONNECTORS, "?"),
                    *_name_tokens(name_start),
                    quote,
                ],
            ),
            check=_is_building,
        ),
    )


class EntityRecognizer:
    """The `portineria_entities` component: rule-based `doc.ents`."""

    def __init__(self, nlp: Language, name: str = "entities") -> None:
        self.name = name
        self.matcher = GatedMatcher(nlp.vocab)
        self._rules: dict[int, Rule] = {}
        for index, rule in enumerate(_rules()):
            key = f"{rule.label}#{index}"
            self.matcher.add(key, list(rule.patterns))
            self._rules[nlp.vocab.strings[key]] = rule

    def __call__(self, doc: Doc) -> Doc:
        # filter_spans keeps the longest span; on a tie the first listed wins, so
        # regex identifiers (invoice numbers first) beat word patterns.
        doc.ents = filter_spans(self._regex_spans(doc) + self._matcher_spans(doc))
        return doc

    def _regex_spans(self, doc: Doc) -> list[Span]:
        spans: list[Span] = []
        if _DIGIT.search(doc.text) is None:
            return spans  # every identifier-shaped entity has a digit
        for label, regex in _REGEXES:
            for match in regex.finditer(doc.text):
                span = doc.char_span(*match.span("id"), label=label, alignment_mode="expand")
                if span is not None:
                    spans.append(span)
        return spans

    def _matcher_spans(self, doc: Doc) -> list[Span]:
        spans = []
        for match_id, start, end in self.matcher.matches(doc):
            rule = self._rules[match_id]
            span = Span(doc, start + rule.trim, end, label=rule.label)
            # Trailing connectors or quotes are not part of a name.
            while len(span) > 1 and (span[-1].norm_ in NAME_CONNECTORS or span[-1].is_punct):
                span = Span(doc, span.start, span.end - 1, label=rule.label)
            if rule.check is None or rule.check(span):
                spans.append(span)
        return spans


@Language.factory("portineria_entities")
def make_entity_recognizer(nlp: Language, name: str) -> EntityRecognizer:
    return EntityRecognizer(nlp, name)
