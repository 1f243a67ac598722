"""The whole pipeline at Twilio's pace: signed first messages in, replies out, end to end.

Everything real and on loopback, as ``bench/emergency_bench.py`` starts it: gunicorn
serving the app, M ``portineria worker`` processes (the trained language model, the
relay, RQ, the sender pool), the embedded Redis, SQLite or a throwaway PostgreSQL,
and the fake Twilio in its own process with a per-send latency and Twilio's 80
creates a second cap (a create over it answers 429). Each round posts correctly
signed first messages from distinct residents at a fixed rate for a fixed time
(a building-wide outage: every one of them gets the privacy welcome, exactly once).

Printed per database and design: the posting rate reached, the sustained reply rate
(replies over first post to last reply), post-to-reply p50/p95/p99 (post: before the
request leaves; reply: when the fake received the send), the workers' CPU per message
(utime + stime from ``/proc``, over the round, divided by its messages), the
workers' resident memory together, the most sends the fake saw in any one second,
its 429s, and lost (no reply by the deadline) and doubled (a second reply) residents.

    python bench/pipeline_bench.py [--databases sqlite,postgresql] [--rate 40]
        [--duration 10] [--rounds 2] [--latency 0.15] [--bot-workers 1]
        [--concurrency 32] [--baseline] [--json]

The issue's full run is ``--rate 80 --duration 60``. ``--floor`` prints only what one
message costs at the least, each part measured alone in this process. ``--baseline`` runs the same
with ``--concurrency 1`` first (the send inline in the processing job, as before
the sender pool) and prints the ratio of the two.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from emergency_bench import (
    ACCOUNT,
    ORDINARY,
    FakeTwilioProcess,
    percentile,
    post_at_rate,
    signed,
    stack_env,
    start_worker,
    stop_stack,
    warm_up,
)
from webhook_bench import ROOT, TOKEN, gunicorn, prepare_database

from bot.config import DEFAULTS
from bot.runtime.devstack import free_port, start_embedded_redis

POLL_SECONDS = 0.1
SETTLE_SECONDS = 3.0  # after the last first reply: time for a duplicate to show
TWILIO_CAP = 80  # Twilio's default WhatsApp sender throughput, messages a second
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def max_per_second(times: list[float]) -> int:
    """The most sends in any one-second window (sliding, as Twilio's cap counts)."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered)), default=0)


def collect_replies(
    fake: FakeTwilioProcess, expected: set[str], deadline: float
) -> tuple[list[dict[str, Any]], int]:
    """Every send until each resident in ``expected`` has one (or the deadline), and
    then for ``SETTLE_SECONDS`` more; and the 429s the fake answered meanwhile."""
    sends: list[dict[str, Any]] = []
    answered: set[str] = set()
    limited_before = fake.rate_limited
    settle_until: float | None = None
    while time.monotonic() < (settle_until or deadline):
        for send in fake.new_sends():
            sends.append(send)
            answered.add(send["to"])
        if settle_until is None and expected <= answered:
            settle_until = time.monotonic() + SETTLE_SECONDS
        time.sleep(POLL_SECONDS)
    return sends, fake.rate_limited - limited_before


def run_round(
    index: int,
    base: str,
    fake: FakeTwilioProcess,
    workers: list[subprocess.Popen[bytes]],
    rate: float,
    duration: float,
) -> dict[str, float]:
    count = max(1, round(rate * duration))
    plan = [signed(f"+39331{index:02d}{n:05d}", ORDINARY) for n in range(count)]
    expected = {params["From"] for params, _ in plan}
    fake.new_sends()  # what earlier rounds left, and the 429s so far
    cpu_before = sum(cpu_seconds(w.pid) for w in workers)
    posted, post_rate = post_at_rate(base, plan, rate)
    # A generous bound: the old design drains a burst at a fraction of its pace.
    deadline = time.monotonic() + 60.0 + 2 * duration + count * 0.2
    sends, limited = collect_replies(fake, expected, deadline)
    cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu_before
    per_resident = Counter(send["to"] for send in sends if send["to"] in expected)
    first: dict[str, float] = {}
    for send in sends:
        first.setdefault(send["to"], send["received_at"])
    latencies = [first[to] - posted[to] for to in expected if to in first]
    last_reply = max(first.values(), default=min(posted.values()))
    return {
        "messages": count,
        "post_rate": post_rate,
        "reply_rate": len(latencies) / max(last_reply - min(posted.values()), 1e-9),
        "p50_s": percentile(latencies, 0.50) if latencies else float("nan"),
        "p95_s": percentile(latencies, 0.95) if latencies else float("nan"),
        "p99_s": percentile(latencies, 0.99) if latencies else float("nan"),
        "cpu_ms_per_message": 1000 * cpu / count,
        "rss_mib": sum(rss_bytes(w.pid) for w in workers) / 2**20,
        # On the fake's monotonic clock, the one its cap counts on: its wall-clock
        # stamp is read separately and can land a scheduling delay apart.
        "max_sends_per_s": max_per_second([s["received_monotonic"] for s in sends]),
        "http_429": limited,
        "lost": sum(1 for to in expected if per_resident[to] == 0),
        "doubled": sum(n - 1 for n in per_resident.values() if n > 1),
    }


@contextmanager
def database(kind: str, work: Path) -> Iterator[str]:
    """A database URL: a fresh SQLite file, or a throwaway PostgreSQL cluster."""
    if kind == "sqlite":
        yield f"sqlite:///{work / 'bench.db'}"
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from servers import PostgresServer

    if not PostgresServer.available():
        raise SystemExit("PostgreSQL is not available on this machine")
    server = PostgresServer(database="portineria_bench").start()
    try:
        yield server.url
    finally:
        server.close()


def run_design(args: argparse.Namespace, kind: str, concurrency: int) -> list[dict[str, float]]:
    """Start the whole stack on a fresh database, warm it up, run the rounds."""
    work = Path(tempfile.mkdtemp(prefix="portineria-pipeline-bench-"))
    redis_url, redis = start_embedded_redis()
    fake = FakeTwilioProcess(args.latency, max_per_second=TWILIO_CAP)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with database(kind, work) as url:
            env = stack_env(
                url,
                redis_url,
                fake,
                PORTINERIA_INSTANCE_PATH=str(work / "instance"),
                WORKER_CONCURRENCY=str(concurrency),  # sizes the database pool too
            )
            prepare_database(env, {"send_rate_per_second": args.send_rate})
            port = free_port()
            processes.append(gunicorn("wsgi:app", port, env, args.web_workers, 1))
            workers = [
                start_worker(env, "--concurrency", str(concurrency))
                for _ in range(args.bot_workers)
            ]
            processes.extend(workers)
            base = f"http://127.0.0.1:{port}"
            warm_up(requests.Session(), base, fake, 3 * args.web_workers)
            return [
                run_round(index, base, fake, workers, args.rate, args.duration)
                for index in range(args.rounds)
            ]
    finally:
        stop_stack(processes, fake, redis, work)


COLUMNS = (
    ("post/s", "post_rate", "{:>8.1f}"),
    ("reply/s", "reply_rate", "{:>8.1f}"),
    ("p50 s", "p50_s", "{:>7.2f}"),
    ("p95 s", "p95_s", "{:>7.2f}"),
    ("p99 s", "p99_s", "{:>7.2f}"),
    ("cpu ms", "cpu_ms_per_message", "{:>7.1f}"),
    ("rss MiB", "rss_mib", "{:>8.0f}"),
    ("max/s", "max_sends_per_s", "{:>6.0f}"),
    ("429", "http_429", "{:>5.0f}"),
    ("lost", "lost", "{:>5.0f}"),
    ("doubled", "doubled", "{:>8.0f}"),
)


def print_table(label: str, rounds: list[dict[str, float]]) -> dict[str, float]:
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print(label)
    print(f"{'round':<8}" + "".join(f"{title:>{len(fmt.format(0))}}" for title, _, fmt in COLUMNS))
    for name, row in [*((str(n), r) for n, r in enumerate(rounds, 1)), ("median", medians)]:
        print(f"{name:<8}" + "".join(fmt.format(row[key]) for _, key, fmt in COLUMNS))
    spread = {
        key: (min(r[key] for r in rounds), max(r[key] for r in rounds))
        for key in ("p99_s", "cpu_ms_per_message", "reply_rate")
    }
    print(
        "spread (min-max): "
        + ", ".join(f"{key} {low:.2f}-{high:.2f}" for key, (low, high) in spread.items())
    )
    return medians


def cpu_ms(work: Any, times: int) -> float:
    """CPU milliseconds of one call of ``work`` in this process, after a warm-up."""
    for _ in range(min(20, times)):
        work()
    started = time.process_time()
    for _ in range(times):
        work()
    return 1000 * (time.process_time() - started) / times


def physical_floor() -> dict[str, float]:
    """What one message costs at the least, each part alone in this process: its
    classification, its sensitive-data scan, one SQLite write transaction (one UPDATE)
    and one send through the Twilio SDK (to the fake, answering at once)."""
    import intents
    from intents.sensitive import find_sensitive
    from notify import OutboundRequest
    from notify.whatsapp import TwilioTransport
    from storage.db import Database
    from storage.delivery import claim_for_sending
    from storage.migrate import upgrade

    intents.classify(ORDINARY)
    db = Database(f"sqlite:///{tempfile.mkdtemp(prefix='floor-')}/floor.db")
    upgrade(db.engine)
    fake = FakeTwilioProcess(0.0)
    try:
        transport = TwilioTransport(ACCOUNT, TOKEN, fake.base_url, retry_delays=())
        send = OutboundRequest("whatsapp:+390612345678", "whatsapp:+393331234567", ORDINARY)
        parts = {
            "classify": cpu_ms(lambda: intents.classify(ORDINARY), 300),
            "sensitive scan": cpu_ms(lambda: find_sensitive(ORDINARY), 300),
            "one SQLite write transaction": cpu_ms(lambda: claim_for_sending(db, 1), 500),
            "one send through the Twilio SDK": cpu_ms(lambda: transport.send(send), 300),
        }
    finally:
        fake.stop()
    parts["together"] = sum(parts.values())
    return parts


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--databases", default="sqlite", help="sqlite,postgresql")
    parser.add_argument("--rate", type=float, default=40.0, help="posts per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of posting")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.15, help="fake Twilio, per send")
    parser.add_argument("--bot-workers", type=int, default=1, help="portineria worker processes")
    parser.add_argument("--web-workers", type=int, default=2 * (os.cpu_count() or 1) + 1)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULTS["WORKER_CONCURRENCY"],
        help="senders per worker",
    )
    parser.add_argument("--send-rate", type=int, default=TWILIO_CAP, help="the office's, per s")
    parser.add_argument("--baseline", action="store_true", help="also --concurrency 1, first")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--floor", action="store_true", help="only the physical floor a message costs"
    )
    args = parser.parse_args()
    if args.floor:
        for part, ms in physical_floor().items():
            print(f"{part:>32}  {ms:6.2f} ms CPU")
        return 0

    designs = [1, args.concurrency] if args.baseline else [args.concurrency]
    results: dict[str, Any] = {}
    for kind in args.databases.split(","):
        for concurrency in designs:
            label = (
                f"{kind}: {args.rate:g} msg/s for {args.duration:g} s, {args.bot_workers} "
                f"worker(s) x concurrency {concurrency}, {args.web_workers} web workers, "
                f"fake Twilio {args.latency:g} s/send (cap {TWILIO_CAP}/s), office rate "
                f"{args.send_rate}/s, {args.rounds} round(s)"
            )
            rounds = run_design(args, kind, concurrency)
            results[f"{kind}/c{concurrency}"] = {"label": label, "rounds": rounds}
            if not args.json:
                results[f"{kind}/c{concurrency}"]["medians"] = print_table(label, rounds)
                print()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    if args.baseline:
        for kind in args.databases.split(","):
            old = results[f"{kind}/c1"]["medians"]
            new = results[f"{kind}/c{args.concurrency}"]["medians"]
            print(
                f"{kind}: pool/baseline reply rate {new['reply_rate'] / old['reply_rate']:.2f}x, "
                f"p99 {new['p99_s'] / old['p99_s']:.2f}x, "
                f"cpu/message {new['cpu_ms_per_message'] / old['cpu_ms_per_message']:.2f}x"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
