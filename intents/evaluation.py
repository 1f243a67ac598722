"""Measuring the intent classifier on a labelled JSONL file.

`evaluate_file(path)` reads `{"text", "intent"}` lines and returns a report dict:
per-intent precision/recall/F1 and support, macro-F1, accuracy, the confusion
matrix (gold -> predicted -> count) and every misclassified message.
`render_report(report)` turns it into the text `portineria intents evaluate`
prints. The figures are of the whole decision (classifier plus safety net),
which is what the bot acts on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intents.prediction import INTENTS, Prediction, prediction_from_doc

if TYPE_CHECKING:
    from spacy.language import Language


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _predict(texts: Sequence[str], nlp: Language | None) -> list[Prediction]:
    if nlp is None:
        from intents.pipeline import classify_many

        return classify_many(texts)
    return [prediction_from_doc(doc, "") for doc in nlp.pipe(texts)]


def evaluate_records(
    records: Sequence[dict[str, Any]], nlp: Language | None = None
) -> dict[str, Any]:
    """Score predictions against the records' `intent` labels.

    `nlp` defaults to the shipped pipeline; training passes the fresh one.
    """
    unknown = sorted({r["intent"] for r in records} - set(INTENTS))
    if unknown:
        raise ValueError(f"unknown intents in the labels: {unknown}")
    predictions = _predict([r["text"] for r in records], nlp)
    gold = [r["intent"] for r in records]
    predicted = [p.intent for p in predictions]
    report = score(gold, predicted)
    report["misclassified"] = [
        {
            "text": record["text"],
            "gold": record["intent"],
            "predicted": prediction.intent,
            "confidence": round(prediction.confidence, 4),
            "safety_rule": prediction.safety_rule,
        }
        for record, prediction in zip(records, predictions, strict=True)
        if prediction.intent != record["intent"]
    ]
    report["safety_rule_fired"] = sum(p.rule_fired for p in predictions)
    return report


def score(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    """Per-intent P/R/F1, macro averages, accuracy and the confusion matrix."""
    confusion = {g: {p: 0 for p in INTENTS} for g in INTENTS}
    for g, p in zip(gold, predicted, strict=True):
        confusion[g][p] += 1
    per_intent = {}
    for intent in INTENTS:
        tp = confusion[intent][intent]
        support = sum(confusion[intent].values())
        guessed = sum(confusion[g][intent] for g in INTENTS)
        precision = tp / guessed if guessed else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_intent[intent] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
            "predicted": guessed,
        }
    # Intents absent from both gold and predictions say nothing: leave them out
    # of the macro average rather than count them as zero.
    present = [i for i in INTENTS if per_intent[i]["support"] or per_intent[i]["predicted"]]
    n = len(gold)
    return {
        "messages": n,
        "accuracy": sum(g == p for g, p in zip(gold, predicted, strict=True)) / n if n else 0.0,
        "macro_precision": _mean(per_intent[i]["precision"] for i in present),
        "macro_recall": _mean(per_intent[i]["recall"] for i in present),
        "macro_f1": _mean(per_intent[i]["f1"] for i in present),
        "per_intent": per_intent,
        "confusion": confusion,
    }


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else 0.0


def evaluate_file(path: Path | str) -> dict[str, Any]:
    """Evaluate the shipped pipeline on a labelled JSONL file."""
    from intents.pipeline import model_version

    report = evaluate_records(read_jsonl(path))
    report["file"] = str(path)
    report["model_version"] = model_version()
    return report


def render_report(report: dict[str, Any]) -> str:
    """Plain-text report: summary, per-intent table, confusion matrix, errors."""
    lines = []
    if "file" in report:
        lines.append(f"file: {report['file']}  model: {report.get('model_version', '?')}")
    lines.append(
        f"messages: {report['messages']}  accuracy: {report['accuracy']:.3f}  "
        f"macro-F1: {report['macro_f1']:.3f}  (macro P {report['macro_precision']:.3f}, "
        f"macro R {report['macro_recall']:.3f})"
    )
    lines.append("")
    lines.append(f"{'intent':<24}{'P':>7}{'R':>7}{'F1':>7}{'gold':>6}{'pred':>6}")
    for intent, row in report["per_intent"].items():
        lines.append(
            f"{intent:<24}{row['precision']:>7.3f}{row['recall']:>7.3f}{row['f1']:>7.3f}"
            f"{row['support']:>6}{row['predicted']:>6}"
        )
    lines.append("")
    lines.append("confusion (rows: gold, columns: predicted, in the order above)")
    short = [f"{i + 1:>4}" for i in range(len(INTENTS))]
    lines.append(f"{'':<26}{''.join(short)}")
    for index, intent in enumerate(INTENTS):
        cells = "".join(f"{report['confusion'][intent][p]:>4}" for p in INTENTS)
        lines.append(f"{index + 1:>2} {intent:<23}{cells}")
    misclassified = report.get("misclassified", [])
    lines.append("")
    lines.append(f"misclassified: {len(misclassified)}")
    for item in misclassified:
        rule = f" rule={item['safety_rule']}" if item.get("safety_rule") else ""
        lines.append(
            f"  [{item['gold']} -> {item['predicted']} {item['confidence']:.2f}{rule}] "
            f"{item['text']}"
        )
    return "\n".join(lines)
