"""Benchmark of the intent pipeline: quality on an evaluation set, speed, size.

    python bench/intents_bench.py [--eval PATH] [--challenge PATH] [--json]

Prints macro-F1, emergenza recall and precision (classifier plus safety net,
i.e. what `intents.classify` answers), the same emergenza figures on the
emergency challenge set (hard emergencies and near misses, default the one
shipped in intents/data/), throughput through `nlp.pipe` on one
core, single-message latency of `intents.classify` (p50/p99), the time to
import spaCy and to load the pipeline, and the model's size on disk. The
process pins itself to one CPU and to one BLAS/OpenMP thread before numpy is
imported. Misclassified messages are not printed: use
`portineria intents evaluate` for that.
"""

from __future__ import annotations

import os

# One core, one thread: set before numpy/spaCy are imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_EVAL = REPO.parent / "shared" / "eval" / "intents_dev.jsonl"
DEFAULT_CHALLENGE = REPO / "intents" / "data" / "emergency_challenge.jsonl"
THROUGHPUT_MESSAGES = 20_000
LATENCY_CALLS = 2_000
WARMUP_CALLS = 50

TARGETS = {
    "macro_f1": 0.90,
    "emergenza_recall": 0.98,
    "emergenza_precision": 0.85,
    "challenge_emergenza_recall": 0.98,
    "challenge_emergenza_precision": 0.90,
    "pipe_msgs_per_s": 2000,
    "latency_p99_ms": 5.0,
    "load_s": 1.0,
}


def _pin_to_one_cpu() -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def _emergency_figures(nlp: Any, path: Path) -> dict[str, Any]:
    """Emergenza recall and precision, and how often the hazard is named right."""
    from intents.evaluation import read_jsonl, score
    from intents.prediction import prediction_from_doc

    records = read_jsonl(path)
    predictions = [prediction_from_doc(doc, "") for doc in nlp.pipe(r["text"] for r in records)]
    emergency = score([r["intent"] for r in records], [p.intent for p in predictions])[
        "per_intent"
    ]["emergenza"]
    caught = [
        (record, prediction)
        for record, prediction in zip(records, predictions, strict=True)
        if record["intent"] == "emergenza" and prediction.intent == "emergenza"
    ]
    named = sum(prediction.safety_rule == record.get("hazard") for record, prediction in caught)
    return {
        "file": str(path),
        "messages": len(records),
        "emergencies": emergency["support"],
        "recall": round(emergency["recall"], 4),
        "precision": round(emergency["precision"], 4),
        "hazard_named": round(named / len(caught), 4) if caught else 0.0,
    }


def run(eval_path: Path, challenge_path: Path) -> dict[str, Any]:
    cpu = _pin_to_one_cpu()
    sys.path.insert(0, str(REPO))

    started = time.perf_counter()
    import spacy

    import intents.components  # noqa: F401  (registers the pipeline's factories)

    import_s = time.perf_counter() - started

    import intents
    from intents.evaluation import read_jsonl, score
    from intents.pipeline import MODEL_DIR
    from intents.prediction import prediction_from_doc

    started = time.perf_counter()
    nlp = spacy.load(MODEL_DIR)
    load_s = time.perf_counter() - started

    records = read_jsonl(eval_path)
    texts = [r["text"] for r in records]
    predictions = [prediction_from_doc(doc, "") for doc in nlp.pipe(texts)]
    report = score([r["intent"] for r in records], [p.intent for p in predictions])
    emergency = report["per_intent"]["emergenza"]
    challenge = _emergency_figures(nlp, challenge_path)

    rounds = max(1, THROUGHPUT_MESSAGES // len(texts))
    stream = texts * rounds
    started = time.perf_counter()
    for _ in nlp.pipe(stream, batch_size=256):
        pass
    pipe_s = time.perf_counter() - started

    intents.classify(texts[0])  # first call loads the shipped pipeline
    for text in texts[:WARMUP_CALLS]:
        intents.classify(text)
    latencies = []
    for i in range(LATENCY_CALLS):
        text = texts[i % len(texts)]
        started = time.perf_counter()
        intents.classify(text)
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()

    size = sum(p.stat().st_size for p in MODEL_DIR.rglob("*") if p.is_file())
    return {
        "eval_file": str(eval_path),
        "messages": len(records),
        "model_version": intents.model_version(),
        "cpu": cpu,
        "macro_f1": round(report["macro_f1"], 4),
        "accuracy": round(report["accuracy"], 4),
        "emergenza_recall": round(emergency["recall"], 4),
        "emergenza_precision": round(emergency["precision"], 4),
        "per_intent_f1": {k: round(v["f1"], 4) for k, v in report["per_intent"].items()},
        "challenge": challenge,
        "challenge_emergenza_recall": challenge["recall"],
        "challenge_emergenza_precision": challenge["precision"],
        "pipe_msgs_per_s": round(len(stream) / pipe_s),
        "pipe_messages": len(stream),
        "latency_p50_ms": round(statistics.median(latencies), 3),
        "latency_p99_ms": round(_percentile(latencies, 0.99), 3),
        "latency_calls": len(latencies),
        "import_spacy_s": round(import_s, 3),
        "load_s": round(load_s, 3),
        "model_size_mb": round(size / 1_000_000, 2),
    }


def _meets(result: dict[str, Any]) -> dict[str, bool]:
    lower_is_better = {"latency_p99_ms", "load_s"}
    return {
        key: (result[key] <= target if key in lower_is_better else result[key] >= target)
        for key, target in TARGETS.items()
    }


def render(result: dict[str, Any]) -> str:
    met = _meets(result)

    def mark(key: str) -> str:
        return (
            f"  (target {'<=' if key in ('latency_p99_ms', 'load_s') else '>='} "
            f"{TARGETS[key]}: {'ok' if met[key] else 'MISSED'})"
        )

    lines = [
        f"eval: {result['eval_file']} ({result['messages']} messages), "
        f"model {result['model_version']}, pinned to cpu {result['cpu']}",
        f"macro-F1            {result['macro_f1']:.3f}{mark('macro_f1')}",
        f"accuracy            {result['accuracy']:.3f}",
        f"emergenza recall    {result['emergenza_recall']:.3f}{mark('emergenza_recall')}",
        f"emergenza precision {result['emergenza_precision']:.3f}{mark('emergenza_precision')}",
        f"challenge: {result['challenge']['file']} ({result['challenge']['messages']} messages, "
        f"{result['challenge']['emergencies']} emergencies)",
        f"  emergenza recall    {result['challenge_emergenza_recall']:.3f}"
        f"{mark('challenge_emergenza_recall')}",
        f"  emergenza precision {result['challenge_emergenza_precision']:.3f}"
        f"{mark('challenge_emergenza_precision')}",
        f"  hazard named right  {result['challenge']['hazard_named']:.3f} of detected emergencies",
        f"nlp.pipe            {result['pipe_msgs_per_s']} msg/s over "
        f"{result['pipe_messages']} messages{mark('pipe_msgs_per_s')}",
        f"classify latency    p50 {result['latency_p50_ms']:.2f} ms, "
        f"p99 {result['latency_p99_ms']:.2f} ms over {result['latency_calls']} calls"
        f"{mark('latency_p99_ms')}",
        f"import spacy        {result['import_spacy_s']:.2f} s",
        f"pipeline load       {result['load_s']:.2f} s{mark('load_s')}",
        f"model size          {result['model_size_mb']:.2f} MB",
        "per-intent F1       "
        + ", ".join(f"{k} {v:.2f}" for k, v in result["per_intent_f1"].items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, default=DEFAULT_EVAL, help="labelled JSONL file")
    parser.add_argument(
        "--challenge",
        type=Path,
        default=DEFAULT_CHALLENGE,
        help="emergency challenge set (JSONL with text, intent, hazard)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    for path in (args.eval, args.challenge):
        if not path.is_file():
            parser.error(f"file not found: {path}")
    result = run(args.eval, args.challenge)
    result["targets_met"] = _meets(result)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
