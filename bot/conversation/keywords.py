"""Recognising the channel's keywords (accept, withdraw, privacy, help, operator,
data-subject requests) in what a contact writes.

A keyword fires only when the whole message, normalised, is the keyword or a short
keyword phrase, so "stop alla perdita d'acqua?" or "AIUTO c'è odore di gas" stay
ordinary messages.

One deliberate exception, for acceptance only: a contact who has been asked to
accept and answers with an acceptance followed by a message ("sì ma il citofono non
va") has accepted; the rest is handled as a message of its own (``rest``). A
withdrawal is never read out of a longer sentence: stopping the channel by accident
is worse than one more confirmation.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bot.exceptions import InvalidSetting
from storage.vocabulary import KeywordKind

DEFAULT_PHRASES: dict[KeywordKind, tuple[str, ...]] = {
    KeywordKind.ACCEPT: (
        "accetto",
        "si",
        "si accetto",
        "accetto l informativa",
        "accetto informativa",
        "accetto la privacy",
        "ok accetto",
        "va bene accetto",
        "acconsento",
        "do il consenso",
        "start",
        "yes",
        "accept",
        "i accept",
        "agree",
        "i agree",
    ),
    KeywordKind.WITHDRAW: (
        "stop",
        "basta",
        "revoca",
        "revoco",
        "revoco il consenso",
        "revoca consenso",
        "cancellami",
        "disiscrivimi",
        "non scrivetemi piu",
        "annulla iscrizione",
        "unsubscribe",
        "stopall",
        "opt out",
        "optout",
        "cancel",
        "end",
        "quit",
    ),
    KeywordKind.PRIVACY: ("privacy", "informativa", "informativa privacy", "privacy policy"),
    KeywordKind.HELP: ("aiuto", "help", "info", "istruzioni"),
    KeywordKind.OPERATOR: (
        "operatore",
        "un operatore",
        "voglio un operatore",
        "parlare con un operatore",
        "parla con un operatore",
        "operator",
        "human",
        "agent",
    ),
    KeywordKind.ACCESS: (
        "i miei dati",
        "accesso ai miei dati",
        "voglio i miei dati",
        "copia dei miei dati",
        "my data",
        "access my data",
    ),
    KeywordKind.ERASURE: (
        "cancella i miei dati",
        "cancellate i miei dati",
        "elimina i miei dati",
        "eliminate i miei dati",
        "delete my data",
        "erase my data",
    ),
    # Building notices (avvisi): in and out, apart from the channel's consent.
    KeywordKind.NOTICES_ON: ("avvisi si", "si avvisi", "voglio gli avvisi", "avvisi on"),
    KeywordKind.NOTICES_OFF: (
        "avvisi no",
        "no avvisi",
        "avvisi stop",
        "stop avvisi",
        "basta avvisi",
        "avvisi off",
    ),
}

# Courtesy words that may surround a keyword without making it a sentence.
_FILLER = frozenset(
    {
        "grazie",
        "per",
        "favore",
        "pf",
        "pls",
        "please",
        "ok",
        "prego",
        "ciao",
        "salve",
        "buongiorno",
        "buonasera",
        "thanks",
        "thank",
        "you",
    }
)
# Single words long enough to forgive one typo (insert, delete, substitute, swap).
_TYPO_MIN_LENGTH = 6
_LEADING_ACCEPT = ("si", "accetto", "ok accetto", "si accetto")


@dataclass(frozen=True)
class KeywordMatch:
    kind: KeywordKind
    # For an acceptance followed by a message: that message, as written.
    rest: str = ""


def normalise(text: str) -> str:
    """Lower-case, accents off, emoji and punctuation to spaces, whitespace collapsed."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    letters = "".join(c for c in decomposed if not unicodedata.combining(c))
    cleaned = re.sub(r"[^a-z0-9]+", " ", letters)
    return " ".join(cleaned.split())


def _within_one_edit(a: str, b: str) -> bool:
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        return (
            len(diffs) == 2
            and diffs[1] == diffs[0] + 1
            and a[diffs[0]] == b[diffs[1]]
            and a[diffs[1]] == b[diffs[0]]
        )
    shorter, longer = (a, b) if len(a) < len(b) else (b, a)
    return any(longer[:i] + longer[i + 1 :] == shorter for i in range(len(longer)))


def _squeeze_repeats(word: str) -> str:
    # "stoooop", "siiii": chat emphasis, not a different word.
    return re.sub(r"(.)\1{2,}", r"\1", word)


class KeywordBook:
    """The phrases of one tenant: the defaults plus its own additions."""

    def __init__(self, extra: Mapping[str, Iterable[str]] | None = None) -> None:
        phrases: dict[KeywordKind, set[str]] = {
            k: {normalise(p) for p in v} for k, v in DEFAULT_PHRASES.items()
        }
        for name, values in (extra or {}).items():
            if name not in phrases:
                raise InvalidSetting(f"unknown keyword kind {name!r}")
            phrases[KeywordKind(name)].update(normalise(v) for v in values)
        self._by_phrase = {phrase: kind for kind, values in phrases.items() for phrase in values}
        self._single_words = {
            p: k for p, k in self._by_phrase.items() if " " not in p and len(p) >= _TYPO_MIN_LENGTH
        }

    def match(self, text: str, *, awaiting_acceptance: bool = False) -> KeywordMatch | None:
        words = [_squeeze_repeats(w) for w in normalise(text).split()]
        core = self._strip_filler(words)
        if core:
            kind = self._lookup(" ".join(core))
            if kind is not None:
                return KeywordMatch(kind)
        if awaiting_acceptance:
            return self._leading_acceptance(text, words)
        return None

    def _strip_filler(self, words: list[str]) -> list[str]:
        start, end = 0, len(words)
        while start < end and words[start] in _FILLER:
            start += 1
        while end > start and words[end - 1] in _FILLER:
            end -= 1
        # Filler alone ("ok", "grazie") leaves nothing: an acknowledgement, not a keyword.
        return words[start:end]

    def _lookup(self, phrase: str) -> KeywordKind | None:
        kind = self._by_phrase.get(phrase)
        if kind is not None or " " in phrase or len(phrase) < _TYPO_MIN_LENGTH:
            return kind
        for known, known_kind in self._single_words.items():
            if _within_one_edit(phrase, known):
                return known_kind
        return None

    def _leading_acceptance(self, text: str, words: list[str]) -> KeywordMatch | None:
        for lead in sorted(_LEADING_ACCEPT, key=len, reverse=True):
            lead_words = lead.split()
            if words[: len(lead_words)] == lead_words and len(words) > len(lead_words):
                return KeywordMatch(KeywordKind.ACCEPT, rest=_after_words(text, len(lead_words)))
        return None


def _after_words(text: str, count: int) -> str:
    """The original text after its first ``count`` words and the separator that follows."""
    pattern = r"^\W*" + r"\W+".join([r"\w+"] * count) + r"[\W_]*"
    return re.sub(pattern, "", text, count=1, flags=re.UNICODE).strip()


@functools.lru_cache(maxsize=64)
def _book_for(extra_json: str) -> KeywordBook:
    return KeywordBook(json.loads(extra_json))


def keyword_book(extra: Mapping[str, Iterable[str]] | None = None) -> KeywordBook:
    """The office's book, built once per distinct set of phrases (building one
    normalises every default phrase: milliseconds, on every message otherwise)."""
    return _book_for(json.dumps(extra or {}, sort_keys=True))
