"""Normalisation of Italian chat tokens, shared by the classifier and the rules.

Pure Python with no spaCy import, so it can be tested and reused cheaply. The
`normalizer` pipeline component writes `normalize_token(token.text)` into
`Token.norm_`; everything downstream (textcat features, entity and safety
patterns) reads NORM, so a typo-free, accent-free, abbreviation-free form is
what the model learns from.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Chat abbreviations and spellings seen in Italian WhatsApp, mapped to the plain
# word. Only unambiguous forms: "dv" (devo/dove) or "c" (ci/che) are left alone.
CHAT_ABBREVIATIONS: dict[str, str] = {
    "nn": "non",
    "nun": "non",  # Roman and Neapolitan "non"
    "x": "per",
    "xk": "perche",
    "xke": "perche",
    "xche": "perche",
    "pk": "perche",
    "pke": "perche",
    "pkè": "perche",
    "perke": "perche",
    "xo": "pero",
    "cmq": "comunque",
    "cmnq": "comunque",
    "ke": "che",
    "ki": "chi",
    "anke": "anche",
    "ank": "anche",
    "tt": "tutto",
    "qlc": "qualcosa",
    "qlcs": "qualcosa",
    "qcs": "qualcosa",
    "qlcn": "qualcuno",
    "qlc1": "qualcuno",
    "qnd": "quando",
    "qndo": "quando",
    "qdo": "quando",
    "sn": "sono",
    "cn": "con",
    "cs": "cosa",
    "tnt": "tanto",
    "msg": "messaggio",
    "tel": "telefono",
    "cell": "cellulare",
    "nr": "numero",
    "num": "numero",
    "dmn": "domani",
    "pome": "pomeriggio",
    "grz": "grazie",
    "grazi": "grazie",
    "thx": "grazie",
    "tnx": "grazie",
    "pls": "per favore",
    "plz": "per favore",
    "xfavore": "per favore",
    "xfv": "per favore",
    "xf": "per favore",
    "amm": "amministratore",
    "amministr": "amministratore",
    "ammin": "amministratore",
    "cond": "condominio",
    "ascens": "ascensore",
    "appt": "appartamento",
}

# Emoji modifiers (skin tones, variation selectors, joiners) carry no meaning here.
# Words of danger whose common misspellings are mapped back to them, so that the
# safety rules and the classifier see "allagato" in "alagato" and "ascensore" in
# "ascenzore". Only the typos Italian chat makes most (a double consonant typed
# single or a single one doubled, s for z and z for s, and for longer words one
# letter dropped or two swapped) and only for words of six letters or more:
# shorter words have real words among their variants ("fumo"/"fummo"). A variant
# that is itself an Italian word is never rewritten (see _REAL_WORDS); a test
# checks that no variant is a word of the training corpus.
TYPO_LEXICON: tuple[str, ...] = tuple(
    """
    allagato allagata allagati allagate allagamento inondato inondata incendio incendi
    ascensore ascensori scoppiato scoppiata scoppiati calcinacci cornicione cornicioni
    monossido scintille scintilla bruciato bruciata bruciati intrappolato intrappolata
    incastrato incastrata bloccato bloccata crollato crollata cascata scassinato
    scassinata intonaco fiamme caldaia caldaie svenuta svenuto puzza tubazione soffitto
    emergenza urgente urgenza
    """.split()
)
# Variants of the lexicon that are real words with another meaning.
_REAL_WORDS = frozenset(
    "bruciano bruciate boccata boccato casata cacata collata collato sventa svento".split()
)
# Misspellings outside the simple model above, seen often enough to list.
EXTRA_TYPOS: dict[str, str] = {
    "monoxido": "monossido",
    "aqua": "acqua",
    "acqa": "acqua",
    "fumm": "fumo",  # Lombard
}
_CONSONANTS = frozenset("bcdfghjklmnpqrstvwxyz")


def typo_variants(word: str) -> set[str]:
    """The misspellings of `word` that TYPO_LEXICON maps back to it."""
    found: set[str] = set()
    for i in range(1, len(word)):
        letter = word[i]
        if letter in _CONSONANTS and letter == word[i - 1]:
            found.add(word[:i] + word[i + 1 :])  # a double typed single
        elif letter in _CONSONANTS and word[i + 1 : i + 2] != letter:
            found.add(word[:i] + letter + word[i:])  # a single typed double
        if letter in "sz":
            found.add(word[:i] + ("z" if letter == "s" else "s") + word[i + 1 :])
    found.add(re.sub(r"([bcdfghjklmnpqrstvwxyz])\1", r"\1", word))  # every double single
    if len(word) >= 7:
        found.update(word[:i] + word[i + 1 :] for i in range(1, len(word)))
        found.update(
            word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(1, len(word) - 1)
        )
    found.discard(word)
    return found


def _build_typo_map() -> dict[str, str]:
    owners: dict[str, set[str]] = {}
    for word in TYPO_LEXICON:
        for variant in typo_variants(word):
            owners.setdefault(variant, set()).add(word)
    lexicon = set(TYPO_LEXICON)
    typos = {
        variant: next(iter(words))
        for variant, words in owners.items()
        # A variant shared by two words, or that is a word itself, stays as typed.
        if len(words) == 1 and variant not in lexicon and variant not in _REAL_WORDS
    }
    typos.update(EXTRA_TYPOS)
    return typos


TYPOS: dict[str, str] = _build_typo_map()

_EMOJI_MODIFIERS = re.compile("[\ufe0e\ufe0f\u200d\U0001f3fb-\U0001f3ff]")
# Three or more identical letters in a row are emphasis ("ciaooo", "graziee").
_REPEATS = re.compile(r"([a-z])\1{2,}")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})


def strip_accents(text: str) -> str:
    """Remove combining accents: "perché" -> "perche", "città" -> "citta"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@lru_cache(maxsize=65536)
def normalize_token(text: str) -> str:
    """Return the normal form of one token's text (lower case, plain ASCII letters)."""
    lowered = _EMOJI_MODIFIERS.sub("", text.translate(_APOSTROPHES)).lower()
    if not lowered:
        return text
    plain = strip_accents(lowered)
    # A trailing apostrophe used as an accent ("perche'", "e'") is not an elision
    # when the word would be a known form without it.
    if len(plain) > 2 and plain.endswith("'") and plain[-2] in "aeiou":
        plain = plain[:-1]
    plain = _REPEATS.sub(r"\1", plain)
    plain = CHAT_ABBREVIATIONS.get(plain, plain)
    return TYPOS.get(plain, plain)


def normalize_text(text: str) -> str:
    """Normalise a whole string word by word (used by rules that see raw text)."""
    return " ".join(normalize_token(word) for word in text.split())
