"""Precision and recall of `intents.find_sensitive` on labelled JSONL files.

Each line is `{"text": ..., "pii": [kinds...]}`. Scoring is per message: the set of
kinds the detector reports is compared with the labelled set, so a kind reported on a
message whose label lacks it is a false positive (a near-miss line with `"pii": []`
counts against precision as soon as anything is flagged), and a labelled kind that is
not reported is a false negative.

    .venv/bin/python bench/pii_bench.py                      # the project's own set
    .venv/bin/python bench/pii_bench.py ../shared/eval/pii_dev.jsonl --errors
    .venv/bin/python bench/pii_bench.py FILE --json --min-precision 0.95 --min-recall 0.95
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Run from a checkout without installing the package.
    sys.path.insert(0, str(ROOT))

from intents.sensitive import SENSITIVE_KINDS, find_sensitive  # noqa: E402

DEFAULT_FILE = ROOT / "intents" / "data" / "pii_labelled.jsonl"


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        flagged = self.tp + self.fp
        return self.tp / flagged if flagged else 1.0

    @property
    def recall(self) -> float:
        labelled = self.tp + self.fn
        return self.tp / labelled if labelled else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class Report:
    path: str
    messages: int = 0
    per_kind: dict[str, Counts] = field(
        default_factory=lambda: {k: Counts() for k in SENSITIVE_KINDS}
    )
    errors: list[dict[str, object]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def micro(self) -> Counts:
        total = Counts()
        for counts in self.per_kind.values():
            total.tp += counts.tp
            total.fp += counts.fp
            total.fn += counts.fn
        return total


def load(path: Path) -> list[tuple[str, set[str]]]:
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            kinds = set(row["pii"])
            unknown = kinds - set(SENSITIVE_KINDS)
            if unknown:
                raise ValueError(f"{path}:{number}: unknown kinds {sorted(unknown)}")
            rows.append((row["text"], kinds))
    return rows


def evaluate(path: Path) -> Report:
    rows = load(path)
    report = Report(path=str(path), messages=len(rows))
    find_sensitive("warm-up")  # builds the spaCy matchers outside the timed loop
    started = time.perf_counter()
    predictions = [find_sensitive(text) for text, _ in rows]
    report.seconds = time.perf_counter() - started
    for (text, gold), findings in zip(rows, predictions, strict=True):
        predicted = {f.kind for f in findings}
        for kind in SENSITIVE_KINDS:
            counts = report.per_kind[kind]
            if kind in predicted and kind in gold:
                counts.tp += 1
            elif kind in predicted:
                counts.fp += 1
            elif kind in gold:
                counts.fn += 1
        if predicted != gold:
            report.errors.append(
                {
                    "text": text,
                    "label": sorted(gold),
                    "false_positives": sorted(predicted - gold),
                    "false_negatives": sorted(gold - predicted),
                    "spans": [[f.kind, f.text] for f in findings],
                }
            )
    return report


def as_dict(report: Report) -> dict[str, object]:
    def figures(c: Counts) -> dict[str, float | int]:
        return {
            "precision": round(c.precision, 4),
            "recall": round(c.recall, 4),
            "f1": round(c.f1, 4),
            "tp": c.tp,
            "fp": c.fp,
            "fn": c.fn,
        }

    rate = round(report.messages / report.seconds, 1) if report.seconds else None
    return {
        "file": report.path,
        "messages": report.messages,
        "per_kind": {k: figures(c) for k, c in report.per_kind.items()},
        "micro": figures(report.micro),
        "messages_per_second": rate,
        "errors": report.errors,
    }


def print_table(report: Report, show_errors: bool) -> None:
    print(f"{report.path}: {report.messages} messages")
    print(f"{'kind':<18} {'prec':>6} {'rec':>6} {'f1':>6} {'tp':>4} {'fp':>4} {'fn':>4}")
    rows = [*report.per_kind.items(), ("micro", report.micro)]
    for kind, c in rows:
        scores = f"{c.precision:6.3f} {c.recall:6.3f} {c.f1:6.3f}"
        print(f"{kind:<18} {scores} {c.tp:4d} {c.fp:4d} {c.fn:4d}")
    if report.seconds:
        rate = report.messages / report.seconds
        print(f"throughput: {rate:.0f} messages/s ({report.seconds * 1000:.0f} ms in all)")
    if show_errors:
        for error in report.errors:
            print(
                f"- FP={error['false_positives']} FN={error['false_negatives']}"
                f" :: {error['text']}\n    spans={error['spans']}"
            )
    print()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, default=[DEFAULT_FILE])
    parser.add_argument("--errors", action="store_true", help="list every misjudged message")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    parser.add_argument("--min-precision", type=float, default=None)
    parser.add_argument("--min-recall", type=float, default=None)
    args = parser.parse_args(argv)

    status = 0
    for path in args.files:
        report = evaluate(path)
        if args.json:
            data = as_dict(report)
            if not args.errors:
                data.pop("errors")
            print(json.dumps(data, ensure_ascii=False, indent=2))
        else:
            print_table(report, args.errors)
        micro = report.micro
        if args.min_precision is not None and micro.precision < args.min_precision:
            status = 1
        if args.min_recall is not None and micro.recall < args.min_recall:
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
