"""Loading the trained pipeline once per process, and classifying with it.

spaCy is imported on the first call that needs the pipeline, never when
`intents` is imported: web processes import this package but only workers
classify. The loaded pipeline is cached per process behind a lock, so threads
share one copy; a forking worker should call `load_pipeline()` before forking.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from intents.prediction import Prediction, prediction_from_doc

if TYPE_CHECKING:
    from spacy.language import Language

MODEL_DIR = Path(__file__).resolve().parent / "model"
# Files of a saved pipeline that do not change what it computes.
_VERSION_IGNORED = frozenset({"README.md"})

_lock = threading.Lock()
_loaded: dict[Path, Language] = {}


def load_pipeline(path: Path | str | None = None) -> Language:
    """The pipeline saved at `path` (default: the shipped model), loaded once."""
    key = Path(path).resolve() if path is not None else MODEL_DIR
    nlp = _loaded.get(key)
    if nlp is None:
        with _lock:
            nlp = _loaded.get(key)
            if nlp is None:
                nlp = _loaded[key] = _load(key)
    return nlp


def _load(path: Path) -> Language:
    if not (path / "config.cfg").is_file():
        raise FileNotFoundError(
            f"no trained intent pipeline in {path}: run `portineria intents train`"
        )
    import spacy

    import intents.components  # noqa: F401  (registers the pipeline's factories)

    return spacy.load(path)


def files_fingerprint(path: Path) -> str:
    """SHA-256 over the relative names and contents of every file under `path`."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if file.name in _VERSION_IGNORED:
            continue
        digest.update(file.relative_to(path).as_posix().encode("utf-8") + b"\0")
        digest.update(file.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


@lru_cache(maxsize=8)
def _version_of(path: Path) -> str:
    return files_fingerprint(path)[:12]


def model_version(path: Path | str | None = None) -> str:
    """Short hex hash of the trained files: changes whenever the model does."""
    return _version_of(Path(path).resolve() if path is not None else MODEL_DIR)


def classify(text: str) -> Prediction:
    """Intent, confidence, scores, entities and safety rule for one message."""
    nlp = load_pipeline()
    return prediction_from_doc(nlp(text), model_version())


def classify_many(texts: Iterable[str], batch_size: int = 256) -> list[Prediction]:
    """`classify` for many messages at once, through `nlp.pipe`."""
    nlp = load_pipeline()
    version = model_version()
    return [prediction_from_doc(doc, version) for doc in nlp.pipe(texts, batch_size=batch_size)]


def forget_loaded() -> None:
    """Drop cached pipelines and versions (after retraining in the same process)."""
    with _lock:
        _loaded.clear()
    _version_of.cache_clear()
