"""A spaCy `Matcher` with a cheap pre-check, for rule sets that rarely match.

Most messages contain none of the words a rule needs ("gas", "calcinacci",
"via" + a name...), yet the Matcher evaluates every pattern's first token
predicate (regular expressions included) on every token. `GatedMatcher` keeps
a plain `Matcher` for the actual matching and, in front of it, a necessary
condition: for each pattern, the set of required token predicates; a token's
predicates are evaluated once per distinct (ORTH, NORM) pair and cached. When no
pattern can have all its required tokens in a doc, the Matcher is skipped.
The result is always the Matcher's own; the gate only decides whether to ask.

With `per_pattern=True` each pattern also gets a Matcher of its own and only the
patterns that pass the gate are tried: the Matcher's cost grows with the number
of patterns it tries on a doc, and a rule set of a few hundred patterns (the
safety net) would otherwise pay for all of them whenever one of them could fit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from spacy.attrs import NORM, ORTH
from spacy.matcher import Matcher
from spacy.tokens import Doc, Span
from spacy.vocab import Vocab

TokenTest = Callable[[str, str], bool]
# Token attributes the gate understands, read from (text, norm).
_ATTRS = {"NORM": 1, "TEXT": 0, "ORTH": 0, "LOWER": 0}
_CACHE_LIMIT = 100_000


def _value_test(attr: str, value: object) -> TokenTest | None:
    index = _ATTRS.get(attr.upper())
    if index is None:
        return None
    lower = attr.upper() == "LOWER"

    def read(text: str, norm: str) -> str:
        raw = (text, norm)[index]
        return raw.lower() if lower else raw

    if isinstance(value, str):
        return lambda text, norm: read(text, norm) == value
    if isinstance(value, dict) and len(value) == 1:
        ((kind, arg),) = value.items()
        if kind == "IN":
            choices = frozenset(arg)
            return lambda text, norm: read(text, norm) in choices
        if kind == "REGEX":
            regex = re.compile(arg)
            return lambda text, norm: regex.search(read(text, norm)) is not None
    return None


def _is_required(token: dict[str, Any]) -> bool:
    op = token.get("OP")
    if op is None or op in ("+", "1"):
        return True
    bounds = re.fullmatch(r"\{(\d*)(?:,\d*)?\}", str(op))
    return bool(bounds and bounds.group(1) and int(bounds.group(1)) > 0)


class GatedMatcher:
    """`Matcher` plus a sound pre-check; same `add` and call signature subset."""

    def __init__(self, vocab: Vocab, per_pattern: bool = False) -> None:
        self.vocab = vocab
        # Every pattern, in one Matcher: the reference the gated answer equals.
        self.matcher = Matcher(vocab)
        self._per_pattern: list[Matcher] | None = [] if per_pattern else None
        self._tests: list[TokenTest] = []
        self._test_ids: dict[str, int] = {}
        self._needs: list[tuple[str, int]] = []  # per pattern: key, mask of required tests
        # Token masks by the (ORTH, NORM) hashes, so a doc is read as one array.
        self._cache: dict[tuple[int, int], int] = {}

    def add(self, key: str, patterns: Sequence[list[dict[str, Any]]]) -> None:
        self.matcher.add(key, list(patterns))
        for pattern in patterns:
            self._needs.append((key, self._pattern_needs(pattern)))
            if self._per_pattern is not None:
                single = Matcher(self.vocab)
                single.add(key, [pattern])
                self._per_pattern.append(single)

    def _pattern_needs(self, pattern: list[dict[str, Any]]) -> int:
        mask = 0
        for token in pattern:
            if not _is_required(token):
                continue
            for attr, value in token.items():
                if attr == "OP":
                    continue
                test = _value_test(attr, value)
                if test is None:
                    continue  # not understood: assume it can match (stay sound)
                signature = json.dumps([attr.upper(), value], sort_keys=True)
                if signature not in self._test_ids:
                    self._test_ids[signature] = len(self._tests)
                    self._tests.append(test)
                mask |= 1 << self._test_ids[signature]
        return mask

    def _token_mask(self, orth: int, norm: int) -> int:
        key = (orth, norm)
        mask = self._cache.get(key)
        if mask is None:
            if len(self._cache) > _CACHE_LIMIT:
                self._cache.clear()
            text, norm_text = self.vocab.strings[orth], self.vocab.strings[norm]
            mask = 0
            for bit, test in enumerate(self._tests):
                if test(text, norm_text):
                    mask |= 1 << bit
            self._cache[key] = mask
        return mask

    def _possible(self, doc: Doc) -> list[int]:
        """Indexes of the patterns whose required tokens all occur in `doc`."""
        present = 0
        for orth, norm in doc.to_array([ORTH, NORM]).tolist():
            present |= self._token_mask(orth, norm)
        return [i for i, (_, needs) in enumerate(self._needs) if needs & ~present == 0]

    def could_match(self, doc: Doc) -> bool:
        return bool(self._possible(doc))

    def matches(self, doc: Doc) -> list[tuple[int, int, int]]:
        """The Matcher's (match_id, start, end) tuples."""
        possible = self._possible(doc)
        if not possible:
            return []
        if self._per_pattern is None:
            return list(self.matcher(doc))
        # Two patterns of one key may find the same span; the Matcher reports it once.
        found = {match for i in possible for match in self._per_pattern[i](doc)}
        return sorted(found, key=lambda match: (match[1], match[2], match[0]))

    def __call__(self, doc: Doc) -> list[Span]:
        """The Matcher's matches as labelled spans (empty when none can exist)."""
        strings = self.vocab.strings
        return [
            Span(doc, start, end, label=strings[match_id])
            for match_id, start, end in self.matches(doc)
        ]
