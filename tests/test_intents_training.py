"""Training is deterministic and evaluation counts correctly (on a tiny corpus of its own)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from intents.components import is_held_out
from intents.evaluation import evaluate_records, render_report, score
from intents.pipeline import files_fingerprint, load_pipeline
from intents.prediction import INTENTS
from intents.training import corpus_fingerprint, train_model

TINY = {
    "guasto": [
        "il citofono non va",
        "luce scale spenta",
        "cancello rotto",
        "ascensore fermo vuoto",
        "perdita piccola lavandino",
        "campanello guasto",
    ],
    "emergenza": [
        "puzza di gas forte",
        "incendio in cantina",
        "garage allagato ora",
        "persona chiusa in ascensore",
        "fumo nero dalle scale",
        "crolla il cornicione",
    ],
    "intervento_completato": [
        "lavoro finito",
        "riparazione completata",
        "intervento eseguito oggi",
        "abbiamo sistemato il cancello",
        "fatto tutto",
        "cambiata la pompa",
    ],
    "preventivo": [
        "vi mando il preventivo",
        "offerta per la facciata",
        "quanto costerebbe",
        "stima dei lavori allegata",
        "preventivo tetto",
        "costo per il cancello",
    ],
    "fattura_pagamento": [
        "fattura allegata",
        "pagamento in ritardo",
        "iban nuovo",
        "quanto devo di rata",
        "bonifico fatto",
        "sollecito pagamento",
    ],
    "appuntamento": [
        "passo domani alle 10",
        "spostiamo a lunedi",
        "confermo giovedi",
        "quando posso venire",
        "annullo la visita",
        "ritiro chiavi venerdi",
    ],
    "documenti": [
        "mandatemi il verbale",
        "serve il regolamento",
        "bilancio consuntivo per favore",
        "vi invio il durc",
        "copia della polizza",
        "certificato impianto",
    ],
    "assemblea": [
        "quando è l'assemblea",
        "delega per la riunione",
        "ordine del giorno",
        "voto in assemblea",
        "convocazione ricevuta",
        "seconda convocazione",
    ],
    "richiesta_operatore": [
        "voglio parlare con qualcuno",
        "chiamatemi",
        "operatore per favore",
        "una persona vera",
        "non capisci niente",
        "mi richiami",
    ],
    "saluto_ringraziamento": [
        "grazie",
        "buongiorno",
        "ok perfetto",
        "👍",
        "grazie mille",
        "buona serata",
    ],
    "altro": [
        "numero sbagliato",
        "compra bitcoin",
        "chi ha vinto ieri",
        "ho perso il gatto",
        "che tempo fa",
        "offerta telefonia",
    ],
}


def write_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for intent, texts in TINY.items():
        lines = [json.dumps({"text": t, "intent": intent, "sender": "condomino"}) for t in texts]
        (folder / f"{intent}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def test_training_is_deterministic(tiny_corpus: Path, tmp_path: Path) -> None:
    first = train_model(out_dir=tmp_path / "a", seed=0, corpus_dir=tiny_corpus)
    second = train_model(out_dir=tmp_path / "b", seed=0, corpus_dir=tiny_corpus)
    assert files_fingerprint(tmp_path / "a") == files_fingerprint(tmp_path / "b")
    assert first["model_version"] == second["model_version"]
    assert first["corpus_sha256"] == corpus_fingerprint(tiny_corpus)
    assert first["train_messages"] + first["heldout_messages"] == 66
    nlp = load_pipeline(tmp_path / "a")
    assert tuple(nlp.get_pipe("textcat").labels) == INTENTS
    meta = json.loads((tmp_path / "a" / "meta.json").read_text(encoding="utf-8"))
    assert meta["portineria"]["corpus_sha256"] == corpus_fingerprint(tiny_corpus)


def test_corpus_change_changes_the_fingerprint(tiny_corpus: Path, tmp_path: Path) -> None:
    copy = write_corpus(tmp_path / "corpus")
    assert corpus_fingerprint(copy) == corpus_fingerprint(tiny_corpus)
    with (copy / "altro.jsonl").open("a", encoding="utf-8") as file:
        file.write(json.dumps({"text": "ciao a tutti", "intent": "altro"}) + "\n")
    assert corpus_fingerprint(copy) != corpus_fingerprint(tiny_corpus)


def test_unknown_intent_in_corpus_is_refused(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    (corpus / "x.jsonl").write_text(json.dumps({"text": "boh", "intent": "nuovo"}) + "\n")
    with pytest.raises(ValueError, match="unknown intent"):
        train_model(out_dir=tmp_path / "m", corpus_dir=corpus)


def test_held_out_split_is_stable_and_about_fifteen_percent() -> None:
    texts = [f"messaggio numero {i}" for i in range(2000)]
    held = [t for t in texts if is_held_out(t, 15)]
    assert held == [t for t in texts if is_held_out(t, 15)]
    assert 0.12 < len(held) / len(texts) < 0.18
    assert is_held_out("Ciao ", 15) == is_held_out("ciao", 15)


def test_score_counts_precision_recall_and_confusion() -> None:
    gold = ["guasto", "guasto", "emergenza", "altro"]
    pred = ["guasto", "emergenza", "emergenza", "guasto"]
    report = score(gold, pred)
    assert report["per_intent"]["guasto"]["precision"] == pytest.approx(0.5)
    assert report["per_intent"]["guasto"]["recall"] == pytest.approx(0.5)
    assert report["per_intent"]["emergenza"]["precision"] == pytest.approx(0.5)
    assert report["per_intent"]["emergenza"]["recall"] == pytest.approx(1.0)
    assert report["per_intent"]["altro"]["f1"] == 0.0
    assert report["confusion"]["guasto"]["emergenza"] == 1
    assert report["accuracy"] == pytest.approx(0.5)
    # Only the three intents that occur are averaged.
    assert report["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)


def test_evaluation_report_lists_errors(tiny_corpus: Path, tmp_path: Path) -> None:
    train_model(out_dir=tmp_path / "m", corpus_dir=tiny_corpus)
    nlp = load_pipeline(tmp_path / "m")
    records = [
        {"text": "c'è puzza di gas in cantina", "intent": "emergenza"},
        {"text": "c'è puzza di gas in cantina", "intent": "altro"},
    ]
    report = evaluate_records(records, nlp=nlp)
    assert report["messages"] == 2
    assert [m["gold"] for m in report["misclassified"]] == ["altro"]
    assert report["misclassified"][0]["safety_rule"] == "gas_smell"
    text = render_report(report)
    assert "macro-F1" in text and "misclassified: 1" in text and "gas_smell" in text


def test_pipeline_is_loaded_once_across_threads(tiny_corpus: Path, tmp_path: Path) -> None:
    train_model(out_dir=tmp_path / "m", corpus_dir=tiny_corpus)
    loaded = []
    start = threading.Barrier(6)

    def load() -> None:
        start.wait()
        loaded.append(load_pipeline(tmp_path / "m"))

    threads = [threading.Thread(target=load) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loaded) == 6 and all(nlp is loaded[0] for nlp in loaded)
