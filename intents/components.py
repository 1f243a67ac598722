"""spaCy registrations for the intent pipeline (imported lazily, it imports spaCy).

- `portineria_normalizer`: writes the normal form of every token into NORM.
- `portineria.TextCatNormBOW.v1`: a bag-of-features text classifier, spaCy's
  BOW design (hashed sparse linear layer + softmax) but over NORM n-grams,
  entity placeholders and character n-grams instead of raw ORTH n-grams.
- `portineria.IntentCorpus.v1`: the corpus reader used by training.
- `portineria_entities` (entities.py) and `portineria_safety` (safety.py) are
  registered by importing those modules here.

Importing this module is what makes a saved pipeline loadable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy
from spacy.attrs import ENT_IOB, ENT_TYPE, IS_PUNCT, NORM
from spacy.language import Language
from spacy.strings import hash_string  # type: ignore[attr-defined]
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry
from thinc.api import Logistic, Model, SparseLinear_v2, chain, softmax_activation
from thinc.types import Floats2d

from intents import entities as _entities  # noqa: F401  (registers portineria_entities)
from intents import safety as _safety  # noqa: F401  (registers portineria_safety)
from intents.normalize import normalize_token

# Punctuation that says something about a message ("?" asks, "!" urges).
_KEPT_PUNCT = ("?", "!")
# Entity tokens outside the first one of an entity (IOB "I").
_IOB_INSIDE = 1
_BOUNDARY = hash_string("<portineria:boundary>")


class Normalizer:
    """Sets `Token.norm_` to the chat-normalised form (see intents.normalize)."""

    def __init__(self, name: str = "normalizer") -> None:
        self.name = name

    def __call__(self, doc: Doc) -> Doc:
        for token in doc:
            norm = normalize_token(token.text)
            if norm != token.norm_:
                token.norm_ = norm
        return doc


@Language.factory("portineria_normalizer")
def make_normalizer(nlp: Language, name: str) -> Normalizer:
    return Normalizer(name)


def _char_keys(text: str, low: int, high: int) -> numpy.ndarray:
    """Hashed character n-grams of one word, fastText style ("<word>")."""
    if not text.isalpha() or len(text) < 3:
        return numpy.zeros((0,), dtype="uint64")
    padded = f"<{text}>"
    grams = {padded[i : i + n] for n in range(low, high + 1) for i in range(len(padded) - n + 1)}
    return numpy.asarray(sorted(hash_string("#" + gram) for gram in grams), dtype="uint64")


def norm_features(
    ngram_size: int, char_low: int, char_high: int, char_weight: float
) -> Model[list[Doc], tuple]:
    """Feature keys for each doc: NORM n-grams plus character n-grams.

    Tokens inside an entity become one placeholder per entity (its label), so
    "alle 10:30" and "alle 9" look alike to the classifier. Punctuation other
    than ? and ! is dropped. The output is what SparseLinear expects:
    (keys, values, lengths).
    """
    cache: dict[int, numpy.ndarray] = {}
    kept_punct: list[int] = [hash_string(mark) for mark in _KEPT_PUNCT]

    def word_stream(doc: Doc) -> numpy.ndarray:
        arr = doc.to_array([NORM, ENT_TYPE, ENT_IOB, IS_PUNCT])
        norms, ents, iob, punct = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
        keep = (punct == 0) | numpy.isin(norms, kept_punct)
        keep &= ~((ents != 0) & (iob == _IOB_INSIDE))
        stream = numpy.where(ents != 0, ents, norms)[keep]
        bound = numpy.asarray([_BOUNDARY], dtype="uint64")
        return numpy.concatenate([bound, stream.astype("uint64"), bound])

    def char_stream(doc: Doc) -> numpy.ndarray:
        parts = []
        strings = doc.vocab.strings
        for token in doc:
            if token.ent_type or token.is_punct:
                continue
            key = token.norm
            grams = cache.get(key)
            if grams is None:
                if len(cache) > 200_000:
                    cache.clear()
                grams = cache[key] = _char_keys(strings[key], char_low, char_high)
            parts.append(grams)
        if not parts:
            return numpy.zeros((0,), dtype="uint64")
        return numpy.unique(numpy.concatenate(parts))

    def forward(model: Model, docs: list[Doc], is_train: bool) -> tuple[tuple, Callable]:
        ops = model.ops
        batch_keys, batch_vals = [], []
        for doc in docs:
            words = word_stream(doc)
            grams = [words] + [ops.ngrams(n, words) for n in range(2, ngram_size + 1)]
            word_keys = numpy.unique(numpy.concatenate(grams))
            chars = char_stream(doc) if char_weight > 0 else numpy.zeros((0,), dtype="uint64")
            batch_keys.append(numpy.concatenate([word_keys, chars]))
            batch_vals.append(
                numpy.concatenate(
                    [
                        numpy.ones(len(word_keys), dtype="float32"),
                        numpy.full(len(chars), char_weight, dtype="float32"),
                    ]
                )
            )
        lengths = ops.asarray1i([len(keys) for keys in batch_keys])
        keys = numpy.concatenate(batch_keys) if batch_keys else numpy.zeros((0,), "uint64")
        vals = numpy.concatenate(batch_vals) if batch_vals else numpy.zeros((0,), "float32")
        return (keys, vals, lengths), lambda d_output: []

    return Model(
        "portineria_norm_features",
        forward,
        attrs={"ngram_size": ngram_size, "char_ngrams": (char_low, char_high)},
    )


@registry.architectures("portineria.TextCatNormBOW.v1")
def build_norm_bow_classifier(
    exclusive_classes: bool,
    ngram_size: int,
    char_ngram_min: int,
    char_ngram_max: int,
    char_weight: float,
    length: int,
    nO: int | None = None,
) -> Model[list[Doc], Floats2d]:
    """Hashed sparse linear classifier over normalised word and character n-grams."""
    # Round the table up to a power of two, like spaCy's own BOW classifier.
    length = 2 ** (length - 1).bit_length()
    linear = SparseLinear_v2(nO=nO, length=length)
    output = softmax_activation() if exclusive_classes else Logistic()
    model = chain(
        norm_features(ngram_size, char_ngram_min, char_ngram_max, char_weight),
        linear,
        output,
    )
    if nO is not None:
        model.set_dim("nO", nO)
    model.set_ref("output_layer", linear)
    model.attrs["multi_label"] = not exclusive_classes
    return model


def is_held_out(text: str, percent: int) -> bool:
    """Deterministic split: a message is held out by the hash of its text."""
    digest = hashlib.sha256(text.strip().lower().encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 100 < percent


def read_corpus(path: Path | str) -> list[dict[str, str]]:
    """All records of the corpus folder's *.jsonl files, in a stable order.

    A relative `path` is taken from the `intents` package folder.
    """
    folder = Path(path)
    if not folder.is_absolute():
        folder = Path(__file__).resolve().parent / folder
    records: list[dict[str, Any]] = []
    for file in sorted(folder.glob("*.jsonl")):
        with file.open(encoding="utf-8") as lines:
            records.extend(json.loads(line) for line in lines if line.strip())
    return records


@registry.readers("portineria.IntentCorpus.v1")
def create_intent_corpus(
    path: Path, split: str, heldout_percent: int, labels: list[str]
) -> Callable[[Language], Iterator[Example]]:
    """Examples with one-hot `cats` from the corpus; `split` is train or heldout."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")

    def read(nlp: Language) -> Iterator[Example]:
        for record in read_corpus(path):
            text, intent = record["text"], record["intent"]
            if intent not in labels:
                raise ValueError(f"unknown intent {intent!r} in corpus: {text!r}")
            if is_held_out(text, heldout_percent) != (split == "heldout"):
                continue
            cats = {label: float(label == intent) for label in labels}
            yield Example.from_dict(nlp.make_doc(text), {"cats": cats})

    return read
