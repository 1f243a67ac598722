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
    return CHAT_ABBREVIATIONS.get(plain, plain)


def normalize_text(text: str) -> str:
    """Normalise a whole string word by word (used by rules that see raw text)."""
    return " ".join(normalize_token(word) for word in text.split())
