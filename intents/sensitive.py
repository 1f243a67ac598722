"""Sensitive-data detection and redaction for Italian chat messages.

`find_sensitive(text)` returns the spans of a message that carry personal identifiers
(codice fiscale, partita IVA, IBAN, e-mail address, phone number) or special-category
data (health, art. 9 GDPR) or that show an identity document being sent. The bot uses
the result to remind the sender of the proper channel, flag the message and, per tenant
policy, store the body through `redact()`.

Identifiers are found by permissive regexes (spaced, dotted, grouped and lower-case
forms) and then *validated* by maintained libraries: python-stdnum for the codice
fiscale and the partita IVA, schwifty for the IBAN (BBAN national check included) and
phonenumbers for phone numbers. A candidate that fails validation is not a finding, so
product codes, order numbers and invoice numbers shaped like identifiers are ignored.

Health and identity-document mentions are matched with spaCy's Matcher and
PhraseMatcher on the tokens of `spacy.blank("it")`, from the vocabulary in
`intents/data/sensitive_terms.json`. Idioms ("mi viene un infarto") and technical
phrases ("ricovero attrezzi", "diagnosi energetica") are blocker patterns: a match that
overlaps one is dropped. spaCy is imported and the matchers built on first use only,
once per process.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import phonenumbers
from phonenumbers import Leniency, PhoneNumberMatcher, PhoneNumberType
from schwifty import IBAN
from schwifty.exceptions import SchwiftyException
from stdnum.exceptions import ValidationError
from stdnum.it import codicefiscale, iva

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.matcher import Matcher, PhraseMatcher
    from spacy.tokens import Doc

__all__ = ["SENSITIVE_KINDS", "Finding", "find_sensitive", "redact", "REDACTION_LABELS"]

SENSITIVE_KINDS: tuple[str, ...] = (
    "codice_fiscale",
    "partita_iva",
    "iban",
    "health",
    "identity_document",
    "email",
    "phone",
)

# What a redacted span becomes in a stored body: readable by an Italian operator.
REDACTION_LABELS: dict[str, str] = {
    "codice_fiscale": "[codice fiscale]",
    "partita_iva": "[partita IVA]",
    "iban": "[IBAN]",
    "health": "[dato sanitario]",
    "identity_document": "[documento d'identità]",
    "email": "[email]",
    "phone": "[telefono]",
}

TERMS_PATH = Path(__file__).parent / "data" / "sensitive_terms.json"


@dataclass(frozen=True)
class Finding:
    """One sensitive span: `text[start:end] == text` of the message it was found in."""

    kind: str
    start: int
    end: int
    text: str


# ---------------------------------------------------------------------------
# Identifiers: permissive candidate regexes, strict library validation.
# ---------------------------------------------------------------------------

# Separators people put inside identifiers they copy by hand: "RSS MRA 85T10 A562S",
# "IT60 X054 2811 ...", "0123.4567.890".
_SEP = r"[ .\-]?"
_NOT_ALNUM_BEFORE = r"(?<![A-Za-z0-9])"
_NOT_ALNUM_AFTER = r"(?![A-Za-z0-9])"


def _codice_fiscale_pattern() -> re.Pattern[str]:
    # The shape of a personal codice fiscale; digits may be replaced by LMNPQRSTUV
    # ("omocodia"), the month is a letter. Checksum and date are left to stdnum.
    letter, digit, month = "[A-Z]", "[0-9LMNPQRSTUV]", "[ABCDEHLMPRST]"
    shape = [letter] * 6 + [digit, digit, month, digit, digit, letter, digit, digit, digit, letter]
    body = _SEP.join(shape)
    return re.compile(rf"(?=({_NOT_ALNUM_BEFORE}{body}{_NOT_ALNUM_AFTER}))", re.IGNORECASE)


_CF_RE = _codice_fiscale_pattern()

# Eleven digits, optionally prefixed by IT, optionally split by single separators; the
# lookarounds keep it from biting eleven digits out of a longer number. A label may be
# glued to the digits ("PIVA01234567897"), nothing else alphanumeric may.
_PIVA_RE = re.compile(
    r"(?=((?:(?<=piva)|(?<=iva)|(?<=vat)|(?<![A-Za-z0-9]))(?<!\d[ .\-])"
    rf"(?:IT{_SEP})?\d(?:{_SEP}\d){{10}})(?!{_SEP}\d)(?![A-Za-z]))",
    re.IGNORECASE,
)

# Start of an IBAN (country code and check digits); the rest is read group by group.
_IBAN_START_RE = re.compile(rf"{_NOT_ALNUM_BEFORE}[A-Z]{{2}}{_SEP}\d{{2}}", re.IGNORECASE)
_IBAN_TAIL_RE = re.compile(rf"(?:{_SEP}[A-Z0-9]){{11,30}}", re.IGNORECASE)
_IBAN_MIN, _IBAN_MAX = 15, 34

# A pragmatic address regex: a local part, one "@", dotted domain labels and a
# letters-only top-level domain. A social handle ("@pippo") has no local part.
_EMAIL_RE = re.compile(
    r"(?<![A-Za-z0-9._%+\-])"
    r"[A-Za-z0-9](?:[A-Za-z0-9._%+\-]{0,63})"
    r"@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}"
    r"(?![A-Za-z0-9\-])"
)

# Phone kinds that belong to a person or an office line; toll-free, premium and
# shared-cost numbers are public service numbers, not personal data.
_PERSONAL_PHONE_TYPES = frozenset(
    {
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
        PhoneNumberType.VOIP,
        PhoneNumberType.PERSONAL_NUMBER,
    }
)
# Words that may be glued to a number: "tel3471234567", "cell.3471234567".
_GLUED_PHONE_LABEL_RE = re.compile(r"(?:tel|cell|cel|telefono|cellulare|nr|num|n)\.?$", re.I)


def _iter_overlapping(pattern: re.Pattern[str], text: str) -> Iterator[tuple[int, int]]:
    """Spans of every candidate, including candidates that start inside another."""
    for match in pattern.finditer(text):
        yield match.start(1), match.end(1)


def _compact(raw: str) -> str:
    return re.sub(r"[ .\-]", "", raw).upper()


def _find_codici_fiscali(text: str) -> list[Finding]:
    found = []
    for start, end in _iter_overlapping(_CF_RE, text):
        number = _compact(text[start:end])
        # Only the 16-character personal form: stdnum would also accept 11 digits
        # (a company's code), which is reported as a partita IVA instead.
        if len(number) == 16 and codicefiscale.is_valid(number):
            found.append(Finding("codice_fiscale", start, end, text[start:end]))
    return found


def _find_partite_iva(text: str, labels: re.Pattern[str]) -> list[Finding]:
    found = []
    for start, end in _iter_overlapping(_PIVA_RE, text):
        if _follows_reference_label(text, start, labels):
            continue
        try:
            iva.validate(_compact(text[start:end]))
        except ValidationError:
            continue
        found.append(Finding("partita_iva", start, end, text[start:end]))
    return found


def _valid_iban(raw: str) -> bool:
    try:
        IBAN(_compact(raw), validate_bban=True)
    except (SchwiftyException, ValueError):
        return False
    return True


def _find_ibans(text: str) -> list[Finding]:
    found: list[Finding] = []
    for start_match in _IBAN_START_RE.finditer(text):
        start = start_match.start()
        if found and start < found[-1].end:
            continue
        tail = _IBAN_TAIL_RE.match(text, start_match.end())
        if tail is None:
            continue
        # The tail is greedy and may swallow a following word ("... 456 grazie"):
        # try every group boundary from the longest candidate down.
        for end in _group_ends(text, start, tail.end()):
            if _IBAN_MIN <= len(_compact(text[start:end])) <= _IBAN_MAX and _valid_iban(
                text[start:end]
            ):
                found.append(Finding("iban", start, end, text[start:end]))
                break
    return found


def _group_ends(text: str, start: int, end: int) -> list[int]:
    """Positions in (start, end] after which no alphanumeric character follows."""
    ends = [
        pos
        for pos in range(start + 1, end + 1)
        if text[pos - 1].isalnum() and (pos == len(text) or not text[pos].isalnum())
    ]
    return sorted(ends, reverse=True)


def _find_emails(text: str) -> list[Finding]:
    return [Finding("email", m.start(), m.end(), m.group()) for m in _EMAIL_RE.finditer(text)]


def _find_phones(text: str, labels: re.Pattern[str], context: re.Pattern[str]) -> list[Finding]:
    found = []
    # POSSIBLE finds candidates also when a label is glued to the digits; validity,
    # type and boundaries are checked here instead.
    for match in PhoneNumberMatcher(text, "IT", leniency=Leniency.POSSIBLE):
        start, end = match.start, match.end
        if not phonenumbers.is_valid_number(match.number):
            continue
        kind = phonenumbers.number_type(match.number)
        if kind not in _PERSONAL_PHONE_TYPES:
            continue
        if not _phone_boundaries_ok(text, start, end):
            continue
        if _follows_reference_label(text, start, labels):
            continue
        international = match.raw_string.lstrip().startswith(("+", "00"))
        # Many reference numbers start with 0 and happen to be valid landline numbers:
        # a national landline number counts only when the message talks about phoning.
        if kind is not PhoneNumberType.MOBILE and not international:
            if not context.search(text[max(0, start - 40) : start] + " " + text[end : end + 20]):
                continue
        found.append(Finding("phone", start, end, text[start:end]))
    return found


def _phone_boundaries_ok(text: str, start: int, end: int) -> bool:
    if end < len(text) and (text[end].isalnum() or text[end] == "@"):
        return False
    if start == 0:
        return True
    before = text[start - 1]
    if before.isdigit() or before in "@_/":
        return False
    if before.isalpha() or before == ".":
        return bool(_GLUED_PHONE_LABEL_RE.search(text[max(0, start - 12) : start]))
    return True


def _follows_reference_label(text: str, start: int, labels: re.Pattern[str]) -> bool:
    """True when the number is introduced as a reference: "fattura n. 0612345678"."""
    return bool(labels.search(text[max(0, start - 40) : start]))


# ---------------------------------------------------------------------------
# Health data and identity documents: spaCy matchers over the Italian tokenizer.
# ---------------------------------------------------------------------------

_HEALTH, _HEALTH_BLOCK, _DOCUMENT, _DOCUMENT_BLOCK = "health", "health!", "document", "document!"
_SELF_TRIGGERING_TOKEN_RE = re.compile(r"\.(pdf|jpe?g|png|heic)$", re.IGNORECASE)


@dataclass(frozen=True)
class _Vocabulary:
    """Everything built once per process from the JSON vocabulary."""

    nlp: Language
    matcher: Matcher
    phrases: PhraseMatcher
    document_trigger: re.Pattern[str]
    window_before: int
    window_after: int
    phone_context: re.Pattern[str]
    reference_labels: re.Pattern[str]
    # One token of every health or document pattern, which it cannot match without: a
    # text with none of them (most) skips the Matcher's per-token regular expressions.
    anchor_words: frozenset[str]
    anchor_pattern: re.Pattern[str]
    anchor_seen: dict[str, bool] = field(default_factory=dict)

    def has_anchor(self, doc: Doc) -> bool:
        for token in doc:
            lower = token.lower_
            seen = self.anchor_seen.get(lower)
            if seen is None:
                seen = lower in self.anchor_words or bool(self.anchor_pattern.search(lower))
                if len(self.anchor_seen) < _ANCHOR_CACHE_SIZE:
                    self.anchor_seen[lower] = seen
            if seen:
                return True
        return False


# Distinct lower-cased tokens remembered by the anchor test (words repeat across messages).
_ANCHOR_CACHE_SIZE = 100_000
_vocabulary: _Vocabulary | None = None
_vocabulary_lock = threading.Lock()


def _get_vocabulary() -> _Vocabulary:
    # Double-checked so that concurrent first calls build the matchers only once.
    global _vocabulary
    if _vocabulary is None:
        with _vocabulary_lock:
            if _vocabulary is None:
                _vocabulary = _build_vocabulary(json.loads(TERMS_PATH.read_text("utf-8")))
    return _vocabulary


def _build_vocabulary(terms: dict[str, Any]) -> _Vocabulary:
    import spacy
    from spacy.matcher import Matcher, PhraseMatcher

    nlp = spacy.blank("it")
    # Only the tokenizer runs: no component has the memory cost max_length guards against.
    nlp.max_length = sys.maxsize
    matcher = Matcher(nlp.vocab, validate=True)
    for name, regex in terms["health_tokens"].items():
        matcher.add(f"{_HEALTH}|{name}", [[{"LOWER": {"REGEX": regex}}]])
    for group, section in (
        (_HEALTH, "health_patterns"),
        (_HEALTH_BLOCK, "health_blockers"),
        (_DOCUMENT, "document_patterns"),
        (_DOCUMENT_BLOCK, "document_blockers"),
    ):
        for name, patterns in terms[section].items():
            matcher.add(f"{group}|{name}", patterns)
    phrases = PhraseMatcher(nlp.vocab, attr="LOWER")
    phrases.add(f"{_HEALTH}|phrase", list(nlp.tokenizer.pipe(terms["health_phrases"])))
    window = terms["document_trigger_window"]
    anchors = [[{"LOWER": {"REGEX": regex}}] for regex in terms["health_tokens"].values()]
    for section in ("health_patterns", "document_patterns"):
        anchors += [pattern for patterns in terms[section].values() for pattern in patterns]
    anchor_words, anchor_pattern = _anchors(anchors)
    return _Vocabulary(
        nlp=nlp,
        matcher=matcher,
        phrases=phrases,
        document_trigger=re.compile(terms["document_trigger"]),
        window_before=int(window["before"]),
        window_after=int(window["after"]),
        phone_context=re.compile(terms["phone_context"], re.IGNORECASE),
        reference_labels=re.compile(
            rf"\b{terms['reference_labels']}\s*(?:n[r°o]?\.?|num(?:ero)?\.?|#)?\s*[:.#°\-]?\s*"
            r"(?:(?:è|e'|era|sarà)\s*:?\s*)?$",
            re.IGNORECASE,
        ),
        anchor_words=anchor_words,
        anchor_pattern=anchor_pattern,
    )


def _anchors(patterns: list[list[dict[str, Any]]]) -> tuple[frozenset[str], re.Pattern[str]]:
    """Per pattern, the required token whose ``LOWER`` test is the most selective (a
    regular expression, then a word, then a list of words): as words, and as one
    expression searched the way the Matcher searches each of them."""
    words: set[str] = set()
    regexes: list[str] = []
    for pattern in patterns:
        required = [t["LOWER"] for t in pattern if "LOWER" in t and t.get("OP", "1") in "1+"]
        if not required:
            raise ValueError(f"a sensitive-data pattern with no required word: {pattern}")
        best = min(
            required, key=lambda test: 0 if "REGEX" in test else 1 if isinstance(test, str) else 2
        )
        if isinstance(best, str):
            words.add(best)
        elif "REGEX" in best:
            regexes.append(best["REGEX"])
        elif "IN" in best:
            words.update(best["IN"])
        else:
            raise ValueError(f"a sensitive-data pattern this anchor test cannot read: {pattern}")
    return frozenset(words), re.compile("|".join(f"(?:{r})" for r in regexes))


def _token_matches(vocab: _Vocabulary, doc: Doc) -> dict[str, list[tuple[int, int]]]:
    """Token spans per group (health, health!, document, document!)."""
    spans: dict[str, list[tuple[int, int]]] = {
        _HEALTH: [],
        _HEALTH_BLOCK: [],
        _DOCUMENT: [],
        _DOCUMENT_BLOCK: [],
    }
    matches = vocab.phrases(doc)
    if matches or vocab.has_anchor(doc):  # blockers only matter beside a match
        matches = [*vocab.matcher(doc), *matches]
    for match_id, start, end in matches:
        group = vocab.nlp.vocab.strings[match_id].split("|", 1)[0]
        spans[group].append((start, end))
    return spans


def _overlaps(span: tuple[int, int], others: Iterable[tuple[int, int]]) -> bool:
    return any(span[0] < other[1] and other[0] < span[1] for other in others)


def _merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _document_is_shared(vocab: _Vocabulary, doc: Doc, start: int, end: int) -> bool:
    """A document counts when a photo, copy, attachment or sending is mentioned near it,
    in the same sentence: "ho allegato il modulo. Ho la patente scaduta" sends no licence.
    """
    if any(_SELF_TRIGGERING_TOKEN_RE.search(token.text) for token in doc[start:end]):
        return True
    lo = start
    while lo > 0 and start - lo < vocab.window_before and not _ends_sentence(doc[lo - 1].text):
        lo -= 1
    hi = end
    while hi < len(doc) and hi - end < vocab.window_after and not _ends_sentence(doc[hi].text):
        hi += 1
    neighbours = [*range(lo, start), *range(end, hi)]
    return any(vocab.document_trigger.match(doc[i].lower_) for i in neighbours)


def _ends_sentence(token_text: str) -> bool:
    return token_text in {".", "!", "?", ";", "..."} or "\n" in token_text


def _find_mentions(text: str, vocab: _Vocabulary) -> list[Finding]:
    doc = vocab.nlp.make_doc(text)
    spans = _token_matches(vocab, doc)
    found = []
    health = [s for s in spans[_HEALTH] if not _overlaps(s, spans[_HEALTH_BLOCK])]
    for start, end in _merge(health):
        found.append(_finding_from_tokens("health", doc, start, end))
    documents = [s for s in spans[_DOCUMENT] if not _overlaps(s, spans[_DOCUMENT_BLOCK])]
    for start, end in _merge(documents):
        if _document_is_shared(vocab, doc, start, end):
            found.append(_finding_from_tokens("identity_document", doc, start, end))
    return found


def _finding_from_tokens(kind: str, doc: Doc, start: int, end: int) -> Finding:
    span = doc[start:end]
    return Finding(kind, span.start_char, span.end_char, span.text)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def find_sensitive(text: str) -> list[Finding]:
    """Every sensitive span in `text`, sorted by start offset."""
    if not text or text.isspace():
        return []
    vocab = _get_vocabulary()
    ibans = _find_ibans(text)
    fiscal_codes = _find_codici_fiscali(text)
    vat_numbers = [
        f
        for f in _find_partite_iva(text, vocab.reference_labels)
        if not _overlaps_finding(f, ibans)
    ]
    emails = _find_emails(text)
    # Digits already explained as an IBAN, a VAT number or part of an address are not a phone.
    taken = [*ibans, *fiscal_codes, *vat_numbers, *emails]
    phones = [
        f
        for f in _find_phones(text, vocab.reference_labels, vocab.phone_context)
        if not _overlaps_finding(f, taken)
    ]
    findings = [*taken, *phones, *_find_mentions(text, vocab)]
    return sorted(_keep_longest_per_kind(findings), key=lambda f: (f.start, f.end, f.kind))


def redact(text: str, findings: list[Finding] | None = None) -> str:
    """`text` with every finding replaced by its Italian placeholder, e.g. "[IBAN]".

    Overlapping findings are replaced once, by the placeholder of the one that starts
    first (the longest on a tie).
    """
    if findings is None:
        findings = find_sensitive(text)
    pieces: list[str] = []
    cursor = 0
    for finding in sorted(findings, key=lambda f: (f.start, -f.end)):
        start, end = max(finding.start, cursor), min(finding.end, len(text))
        if end <= start:
            continue
        if finding.start >= cursor:
            pieces.append(text[cursor:start])
            pieces.append(REDACTION_LABELS.get(finding.kind, "[dato riservato]"))
        # An overlapping finding only extends what the previous placeholder covers.
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)


def _overlaps_finding(finding: Finding, others: Iterable[Finding]) -> bool:
    return _overlaps((finding.start, finding.end), ((o.start, o.end) for o in others))


def _keep_longest_per_kind(findings: list[Finding]) -> list[Finding]:
    """Drop a finding contained in, or overlapping, a longer finding of the same kind."""
    kept: list[Finding] = []
    for finding in sorted(findings, key=lambda f: (f.start - f.end, f.start)):
        same_kind = (k for k in kept if k.kind == finding.kind)
        if not _overlaps_finding(finding, same_kind):
            kept.append(finding)
    return kept
