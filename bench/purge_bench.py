"""The retention purge at catch-up scale, and what webhooks feel while it runs.

One office is seeded with ``--messages`` expired messages (half inbound and processed,
half outbound, spread over a thousand contacts), a share of them with a media row and a
real small file, and bot-log rows; bulk inserts (executemany on SQLite, COPY on
PostgreSQL), one Fernet token reused for every body. Then, against the real webhook
under gunicorn (as ``bench/webhook_bench.py`` starts it), a paced load generator posts
signed deliveries at ``--rate`` per second: first with no purge (the baseline), then
while ``portineria purge`` runs in a process of its own. Reported: rows removed per
second, wall time, the purging process's peak RSS, the longest write transaction the
purge itself measured (on SQLite: the write lock held), and the webhooks' p50/p99 in
both phases. Latency is measured from each request's scheduled time, so a stalled
request also delays the clock of the ones queued behind it.

    python -m bench.purge_bench [--messages 1000000] [--database sqlite|postgresql|both]

PostgreSQL is a throwaway cluster started as the tests start theirs (fsync off).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

from bench.webhook_bench import OFFICE, PATH, PUBLIC, ROOT, TOKEN, gunicorn, prepare_database
from bot.runtime.devstack import free_port, start_embedded_redis, stop_process

CONTACTS = 1000
CHUNK = 20_000
TARGETS = {"seconds": 60.0, "rss_mb": 300.0, "write_ms": 250.0, "p99_ms": 250.0}


# -- seeding -----------------------------------------------------------------------------


def seed(
    env: dict[str, str],
    messages: int,
    media_share: float,
    bot_log_share: float,
    exchange: int = 10,
) -> int:
    """Bulk-insert the office's expired history; returns how many media files it wrote.

    Messages come in exchanges of ``exchange`` with one contact, a contact after another
    round a thousand of them; their SIDs are random, as Twilio's are.
    """
    from cryptography.fernet import Fernet
    from sqlalchemy import create_engine, select

    from storage.models import Tenant

    url = env["DATABASE_URL"]
    engine = create_engine(url)
    with engine.connect() as connection:
        tenant_id = connection.execute(select(Tenant.id).where(Tenant.slug == "bench")).scalar()
    engine.dispose()
    token = Fernet(env["ENCRYPTION_KEYS"].encode()).encrypt(
        b"Buongiorno, la luce delle scale non funziona da ieri sera"
    )
    old = datetime.now(UTC) - timedelta(days=400)
    media_dir = Path(env["PURGE_BENCH_MEDIA"])
    media_dir.mkdir(parents=True, exist_ok=True)
    every_media = max(1, round(1 / media_share)) if media_share > 0 else 0
    every_log = max(1, round(1 / bot_log_share)) if bot_log_share > 0 else 0
    tables = _rows(tenant_id, messages, token, old, media_dir, every_media, every_log, exchange)
    if url.startswith("sqlite"):
        _seed_sqlite(url, tables)
    else:
        _seed_postgresql(url, tables)
    return sum(1 for _ in media_dir.iterdir())


def _rows(
    tenant_id: int,
    messages: int,
    token: bytes,
    old: datetime,
    media_dir: Path,
    every_media: int,
    every_log: int,
    exchange: int,
) -> dict[str, Iterator[tuple[Any, ...]]]:
    sids = random.Random(20261201)

    def contacts() -> Iterator[tuple[Any, ...]]:
        now = datetime.now(UTC)  # heard from recently: the contacts are kept
        for i in range(1, CONTACTS + 1):
            wa = f"39333{i:07d}"
            yield (
                i,
                tenant_id,
                wa,
                "+" + wa,
                "condomino",
                "consent",
                "whatsapp_inbound",
                "granted",
                now,
                now,
                now,
            )

    def conversations() -> Iterator[tuple[Any, ...]]:
        for i in range(1, CONTACTS + 1):
            yield (i, tenant_id, i, "bot", "normal", False, "open", 0, old, old)

    def message_rows() -> Iterator[tuple[Any, ...]]:
        for i in range(1, messages + 1):
            at = old + timedelta(seconds=i)
            contact = (i // exchange) % CONTACTS + 1
            inbound = i % 2 == 0
            yield (
                i, tenant_id, contact, contact, "in" if inbound else "out",
                "SM" + uuid.UUID(int=sids.getrandbits(128)).hex, token,
                "processed" if inbound else "delivered",
                0 if inbound else 3, "guasto" if inbound else None, "[]", False,
                at, at, at if inbound else None, 1 if inbound else 0, 0,
            )  # fmt: skip

    def media_rows() -> Iterator[tuple[Any, ...]]:
        if not every_media:
            return
        for n, i in enumerate(range(every_media, messages + 1, every_media), start=1):
            path = media_dir / f"{i}-0-bench.bin"
            path.write_bytes(token)
            yield (
                n,
                tenant_id,
                i,
                0,
                "image/jpeg",
                len(token),
                "0" * 64,
                str(path),
                old + timedelta(seconds=i),
            )

    def bot_log_rows() -> Iterator[tuple[Any, ...]]:
        if not every_log:
            return
        for n, i in enumerate(range(every_log, messages + 1, every_log), start=1):
            yield (
                n,
                tenant_id,
                i,
                old + timedelta(seconds=i),
                "guasto",
                0.9,
                "ticket",
                "bench",
                "{}",
            )

    return {
        "contacts (id, tenant_id, wa_id, phone, kind, legal_basis, source, consent, "
        "created_at, last_contact_at, last_inbound_at)": contacts(),
        "conversations (id, tenant_id, contact_id, mode, priority, needs_attention, status, "
        "clarifications, created_at, last_message_at)": conversations(),
        "messages (id, tenant_id, conversation_id, contact_id, direction, provider_sid, body, "
        "status, status_rank, intent, sensitive_kinds, redacted, created_at, status_at, "
        "processed_at, attempts, sweeps)": message_rows(),
        "media_items (id, tenant_id, message_id, position, content_type, size, sha256, path, "
        "created_at)": media_rows(),
        "bot_log (id, tenant_id, message_id, at, intent, confidence, action, model_version, "
        "detail)": bot_log_rows(),
    }  # fmt: skip


def _chunks(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _sqlite_value(value: Any) -> Any:
    # As SQLAlchemy stores a UTC datetime on SQLite.
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _seed_sqlite(url: str, tables: dict[str, Iterator[tuple[Any, ...]]]) -> None:
    import sqlite3

    connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        connection.execute("BEGIN")
        for target, rows in tables.items():
            columns = target[target.index("(") + 1 : -1].split(", ")
            marks = ", ".join("?" for _ in columns)
            for chunk in _chunks(rows):
                connection.executemany(
                    f"INSERT INTO {target} VALUES ({marks})",
                    [tuple(_sqlite_value(v) for v in row) for row in chunk],
                )
        connection.execute("COMMIT")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


def _seed_postgresql(url: str, tables: dict[str, Iterator[tuple[Any, ...]]]) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as connection:
        with connection.cursor() as cursor:
            for target, rows in tables.items():
                with cursor.copy(f"COPY {target} FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            for table in ("contacts", "conversations", "messages", "media_items", "bot_log"):
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
        connection.commit()
        connection.autocommit = True
        connection.execute("VACUUM ANALYZE")


# -- paced webhooks ----------------------------------------------------------------------


class PacedWebhooks:
    """Posts signed deliveries at a fixed rate from a few threads; each latency is
    measured from the request's scheduled time, not from when it was sent."""

    def __init__(self, port: int, rate: float, threads: int = 8) -> None:
        self.port, self.rate, self.threads = port, rate, threads
        self.validator = RequestValidator(TOKEN)
        self.latencies: list[float] = []
        self.failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._next = 0
        self._started = 0.0
        self._workers: list[threading.Thread] = []

    def start(self) -> None:
        self._stop.clear()
        self._started, self._next = time.perf_counter(), 0
        self._workers = [
            threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()

    def stop(self) -> tuple[list[float], int]:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)
        with self._lock:
            latencies, failures = self.latencies, self.failures
            self.latencies, self.failures = [], 0
        return latencies, failures

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                due = self._started + self._next / self.rate
                self._next += 1
            delay = due - time.perf_counter()
            if delay > 0 and self._stop.wait(delay):
                return
            ok = self._post()
            elapsed = time.perf_counter() - due
            with self._lock:
                if ok:
                    self.latencies.append(elapsed * 1000)
                else:
                    self.failures += 1

    def _post(self) -> bool:
        sid = "SM" + uuid.uuid4().hex
        params = {
            "MessageSid": sid,
            "AccountSid": "AC" + "1" * 32,
            "From": "whatsapp:+393330000001",
            "To": f"whatsapp:{OFFICE}",
            "Body": "Buongiorno, il cancello non si apre",
            "NumMedia": "0",
            "WaId": "393330000001",
        }
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": self.validator.compute_signature(PUBLIC + PATH, params),
        }
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            connection.request("POST", PATH, body=urlencode(params), headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status == 200
        except OSError:
            return False
        finally:
            connection.close()


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# -- the purging process -----------------------------------------------------------------


def purge_child() -> int:
    """Run in the purging process: one purge, its report and peak RSS as JSON."""
    from bot import create_app
    from bot.privacy.retention import purge
    from storage.models import utcnow

    app = create_app()
    svc = app.extensions["portineria"]
    started = time.perf_counter()
    reports = purge(svc, utcnow())
    wall = time.perf_counter() - started
    [report] = [r for r in reports if r.tenant == "bench"]
    print(
        json.dumps(
            {
                "wall_seconds": wall,
                "removed": report.removed,
                "error": report.error,
                "batches": report.batches,
                "longest_write_ms": report.longest_write_ms,
                "write_p50_ms": percentile(report.write_ms, 0.50),
                "write_p99_ms": percentile(report.write_ms, 0.99),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )
    return 0


def run_purge(env: dict[str, str], timeout: float) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.purge_bench", "--purge-child"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- one database ------------------------------------------------------------------------


def leftovers(env: dict[str, str], since: datetime) -> dict[str, int]:
    from sqlalchemy import create_engine, func, select

    from storage.models import BotLogEntry, FileDeletion, MediaItem, Message

    engine = create_engine(env["DATABASE_URL"])
    with engine.connect() as connection:
        counts = {
            "old_messages": connection.scalar(
                select(func.count()).select_from(Message).where(Message.created_at < since)
            ),
            "media_rows": connection.scalar(select(func.count()).select_from(MediaItem)),
            "bot_log_rows": connection.scalar(select(func.count()).select_from(BotLogEntry)),
            "journaled_files": connection.scalar(select(func.count()).select_from(FileDeletion)),
        }
    engine.dispose()
    counts["media_files"] = sum(1 for _ in Path(env["PURGE_BENCH_MEDIA"]).iterdir())
    return {key: int(value or 0) for key, value in counts.items()}


def bench_database(
    name: str, url: str, redis_url: str, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    from cryptography.fernet import Fernet

    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "WHATSAPP_TRANSPORT": "console",
        "PUBLIC_BASE_URL": PUBLIC,
        "SECRET_KEY": "bench",
        "ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "PYTHONPATH": str(ROOT),
        "PURGE_BENCH_MEDIA": str(work / f"media-{name}"),
    }
    prepare_database(env)
    started = time.perf_counter()
    files = seed(env, args.messages, args.media_share, args.bot_log_share, args.exchange)
    seeded = time.perf_counter() - started
    print(f"[{name}] seeded {args.messages:,} messages, {files:,} media files in {seeded:.0f} s")
    port = free_port()
    server = gunicorn("wsgi:app", port, env, args.workers, 1)
    load = PacedWebhooks(port, args.rate)
    try:
        # Warm-up: every gunicorn worker imports and connects; on a busy machine that
        # takes seconds, and a baseline that began earlier would measure the boot.
        load.start()
        time.sleep(args.warmup_seconds)
        load.stop()
        load.start()
        time.sleep(args.baseline_seconds)
        baseline, baseline_failures = load.stop()
        cutoff = datetime.now(UTC) - timedelta(days=1)
        load.start()
        load_before = os.getloadavg()[0]
        purge = run_purge(env, timeout=args.timeout)
        load_after = os.getloadavg()[0]
        during, during_failures = load.stop()
    finally:
        stop_process(server, timeout=10)
    removed = sum(purge["removed"].values())
    return {
        "database": name,
        "messages": args.messages,
        **purge,
        "rows_per_s": removed / purge["wall_seconds"],
        "messages_per_s": purge["removed"]["messages"] / purge["wall_seconds"],
        "webhooks": {
            "baseline": _latency(baseline, baseline_failures),
            "during_purge": _latency(during, during_failures),
        },
        "left": leftovers(env, cutoff),
        # The machine's 1-minute load average around the purge (other work shares it).
        "load_average": [load_before, load_after],
    }


def _latency(values: list[float], failures: int) -> dict[str, float]:
    return {
        "requests": len(values),
        "failures": failures,
        "p50_ms": percentile(values, 0.50),
        "p99_ms": percentile(values, 0.99),
        "max_ms": max(values, default=float("nan")),
    }


def print_result(result: dict[str, Any]) -> None:
    base, during = result["webhooks"]["baseline"], result["webhooks"]["during_purge"]
    print(
        f"[{result['database']}] purged {result['removed']} in {result['wall_seconds']:.1f} s: "
        f"{result['messages_per_s']:,.0f} messages/s, {result['rows_per_s']:,.0f} rows/s; "
        f"peak RSS {result['peak_rss_mb']:.0f} MB; {result['batches']} write transactions, "
        f"p50 {result['write_p50_ms']:.0f} ms, p99 {result['write_p99_ms']:.0f} ms, "
        f"the longest {result['longest_write_ms']:.0f} ms"
        + (f"; ERROR {result['error']}" if result["error"] else "")
    )
    for label, row in (("no purge", base), ("during purge", during)):
        print(
            f"[{result['database']}] webhooks {label}: {row['requests']} requests "
            f"({row['failures']} failed), p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
            f"max {row['max_ms']:.1f} ms"
        )
    print(f"[{result['database']}] left after the purge: {result['left']}")
    print(
        f"[{result['database']}] load average {result['load_average'][0]:.1f} before the "
        f"purge, {result['load_average'][1]:.1f} after, on {os.cpu_count()} cores"
    )
    verdicts = {
        "under 60 s": result["wall_seconds"] < TARGETS["seconds"],
        "RSS under 300 MB": result["peak_rss_mb"] < TARGETS["rss_mb"],
        "no write over 250 ms": result["longest_write_ms"] < TARGETS["write_ms"],
        "p99 under 250 ms": during["p99_ms"] < TARGETS["p99_ms"],
        "nothing expired left": not any(
            result["left"][k] for k in ("old_messages", "media_rows", "media_files")
        ),
    }
    print(
        f"[{result['database']}] targets: "
        + ", ".join(f"{k} {'yes' if ok else 'NO'}" for k, ok in verdicts.items())
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--media-share", type=float, default=0.05, help="messages with a file")
    parser.add_argument("--bot-log-share", type=float, default=0.5)
    parser.add_argument(
        "--exchange", type=int, default=10, help="messages in a row with one contact"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="webhooks per second")
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on one purge")
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1) + 1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--purge-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.purge_child:
        return purge_child()

    names = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    work = Path(tempfile.mkdtemp(prefix="portineria-purge-bench-"))
    redis_url, redis = start_embedded_redis()
    results = []
    try:
        for name in names:
            with ExitStack() as stack:
                if name == "sqlite":
                    url = f"sqlite:///{work / 'bench.db'}"
                else:
                    # The tests' throwaway cluster (tests/servers.py), reused as it is.
                    sys.path.insert(0, str(ROOT / "tests"))
                    from servers import PostgresServer

                    if not PostgresServer.available():
                        print("[postgresql] not available here: skipped")
                        continue
                    url = stack.enter_context(PostgresServer(database="purge_bench")).url
                result = bench_database(name, url, redis_url, work, args)
            results.append(result)
            if not args.json:
                print_result(result)
    finally:
        stop_process(redis, timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
