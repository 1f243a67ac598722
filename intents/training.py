"""Training the intent pipeline from `intents/config.cfg` and the corpus.

`train_model()` is what `portineria intents train` runs. It uses spaCy's own
training machinery (`init_nlp` + `train` from the config), with a fixed seed, so
the same corpus and code give byte-identical model files and therefore the
same model version. About 15% of the corpus, chosen by a hash of each text, is
held out: it is never trained on and gives the figures in the summary.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from intents.pipeline import MODEL_DIR, files_fingerprint, forget_loaded

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_PATH = PACKAGE_DIR / "config.cfg"
CORPUS_DIR = PACKAGE_DIR / "data" / "corpus"
META_KEY = "portineria"


def corpus_files(corpus_dir: Path = CORPUS_DIR) -> list[Path]:
    return sorted(Path(corpus_dir).glob("*.jsonl"))


def corpus_fingerprint(corpus_dir: Path = CORPUS_DIR) -> str:
    """SHA-256 over the corpus files' names and contents (stale-model check)."""
    digest = hashlib.sha256()
    for file in corpus_files(corpus_dir):
        digest.update(file.name.encode("utf-8") + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def load_config(corpus_dir: Path = CORPUS_DIR, seed: int = 0) -> Any:
    """The training config with the corpus path and seed filled in."""
    from spacy.util import load_config as spacy_load_config

    # The saved model's config records this path: keep the shipped corpus's
    # relative (to the package) so the model files do not depend on the checkout.
    corpus_dir = Path(corpus_dir).resolve()
    shown = "data/corpus" if corpus_dir == CORPUS_DIR else str(corpus_dir)
    overrides = {"paths.corpus": shown, "system.seed": seed}
    return spacy_load_config(CONFIG_PATH, overrides=overrides, interpolate=False)


def train_model(
    out_dir: Path | str | None = None, seed: int = 0, corpus_dir: Path | str | None = None
) -> dict[str, Any]:
    """Train, save to `out_dir` (default: the shipped model folder), return a summary."""
    from spacy.training.initialize import init_nlp
    from spacy.training.loop import train

    import intents.components as components
    from intents.evaluation import evaluate_records

    corpus = Path(corpus_dir) if corpus_dir is not None else CORPUS_DIR
    target = Path(out_dir) if out_dir is not None else MODEL_DIR
    if not corpus_files(corpus):
        raise FileNotFoundError(f"no corpus files (*.jsonl) in {corpus}")
    started = time.perf_counter()
    config = load_config(corpus, seed)
    nlp = init_nlp(config)
    log = io.StringIO()
    nlp, _ = train(nlp, None, stdout=log, stderr=log)
    seconds = time.perf_counter() - started

    percent = int(config["corpora"]["train"]["heldout_percent"])
    records = components.read_corpus(corpus)
    heldout = [r for r in records if components.is_held_out(r["text"], percent)]
    report = evaluate_records(heldout, nlp=nlp)
    nlp.meta.update(
        {
            "name": "portineria_intents",
            "version": "1.0.0",
            "description": "Intent classifier and rule-based entities for Italian "
            "WhatsApp messages to a condominium office",
            META_KEY: {
                "corpus_sha256": corpus_fingerprint(corpus),
                "corpus_messages": len(records),
                "heldout_messages": len(heldout),
                "heldout_percent": percent,
                "seed": seed,
                "heldout_macro_f1": round(report["macro_f1"], 4),
            },
        }
    )
    _save(nlp, target)
    forget_loaded()
    return {
        "out_dir": str(target),
        "model_version": files_fingerprint(target)[:12],
        "seed": seed,
        "corpus_sha256": corpus_fingerprint(corpus),
        "corpus_messages": len(records),
        "train_messages": len(records) - len(heldout),
        "heldout_messages": len(heldout),
        "per_intent_messages": _count_by_intent(records),
        "heldout": report,
        "train_seconds": round(seconds, 1),
        "size_bytes": sum(p.stat().st_size for p in target.rglob("*") if p.is_file()),
    }


def _save(nlp: Any, target: Path) -> None:
    """Write next to the target, then swap, so a reader never sees half a model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=target.parent))
    try:
        nlp.to_disk(staging / "model")
        if target.exists():
            shutil.rmtree(target)
        (staging / "model").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _count_by_intent(records: list[dict[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        counts[record["intent"]] = counts.get(record["intent"], 0) + 1
    return dict(sorted(counts.items()))
