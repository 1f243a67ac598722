"""Latency of the events pushed to the office's CRM, under a steady load of messages.

The whole product runs as in production, on 127.0.0.1: gunicorn serving the Twilio
webhook (``wsgi:app``), one ``portineria worker`` (RQ job, engine with the trained
model, the CRM dispatcher), the embedded Redis and a SQLite database; the CRM is
``tests/fake_crm.py``'s receiver in a thread of this process, verifying every
signature. Residents' messages (distinct, correctly signed Twilio deliveries, a few
messages per conversation) arrive at a steady rate; every one makes a
``message.received`` event, some also ``consent.changed`` or ``ticket.created``.

Reported per round and as medians of the rounds (p50 and p99, milliseconds):

* change -> CRM: from the event's ``created_at`` to its arrival at the receiver;
  ``created_at`` is the turn's clock, read before the model reads the message and
  before the write transaction, so this bounds from above what the outbox adds;
* webhook -> change: from the resident's POST to the event's ``created_at``: the
  pipeline before it, measured in the same run as the baseline;
* webhook -> CRM: from the resident's POST to the arrival of its ``message.received``;
* one attempt: the HTTP round trip the dispatcher records (``latency_ms``).

    python bench/crm_bench.py [--rate 40] [--duration 20] [--rounds 3]

Bounded: each round waits at most ``duration + 120`` s for its events.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import requests  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from fake_crm import FakeCrmReceiver  # noqa: E402
from twilio.request_validator import RequestValidator  # noqa: E402

from bench.webhook_bench import OFFICE, PATH, PUBLIC, TOKEN, gunicorn  # noqa: E402
from bot.runtime.devstack import free_port, start_embedded_redis, stop_process  # noqa: E402

MESSAGES = (
    "Buongiorno, il portone non si chiude più, la serratura è rotta",
    "accetto",
    "La luce delle scale della palazzina B non si accende da ieri",
    "grazie, a presto",
)
RESIDENTS = 400
WARM_UP_SECONDS = 120.0


def setup_office(env: dict[str, str], crm_url: str) -> str:
    """Migrate, create the office and its CRM endpoint; the endpoint's secret."""
    code = (
        "from bot import create_app\n"
        "from bot.services import services\n"
        "from bot.office.lifecycle import create_tenant\n"
        "from bot.crm.endpoints import By, add_endpoint\n"
        "from storage.migrate import upgrade\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        "    svc = services()\n"
        "    upgrade(svc.db.engine)\n"
        f"    office = create_tenant(svc, name='Bench', whatsapp_number='{OFFICE}', slug='bench')\n"
        f"    made = add_endpoint(svc, office.id, {crm_url!r}, None, allow_loopback=True,\n"
        "                        allow_private=False, by=By('bench'))\n"
        "    print(made.secret)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
    )
    return done.stdout.decode().strip().splitlines()[-1]


class Sender:
    """Posts signed inbound messages at a steady rate; remembers when each was sent."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}{PATH}"
        self.validator = RequestValidator(TOKEN)
        self.session = requests.Session()
        self.sent: dict[str, float] = {}  # MessageSid -> time.time() just before the POST
        self.failed = 0
        self._turn = 0

    def post_one(self, timeout: float = 10.0) -> None:
        resident, step = divmod(self._turn, len(MESSAGES))
        self._turn += 1
        number = f"+39333{resident % RESIDENTS:07d}"
        params = {
            "MessageSid": "SM" + uuid.uuid4().hex,
            "AccountSid": "AC" + "1" * 32,
            "From": f"whatsapp:{number}",
            "To": f"whatsapp:{OFFICE}",
            "Body": MESSAGES[step],
            "NumMedia": "0",
            "WaId": number.lstrip("+"),
            "ApiVersion": "2010-04-01",
        }
        signature = self.validator.compute_signature(PUBLIC + PATH, params)
        self.sent[params["MessageSid"]] = time.time()
        answer = self.session.post(
            self.url, data=params, headers={"X-Twilio-Signature": signature}, timeout=timeout
        )
        if answer.status_code != 200:
            self.failed += 1

    def run(self, rate: float, duration: float) -> int:
        """Messages at ``rate`` per second for ``duration`` seconds (paced, not bursty)."""
        count = int(rate * duration)
        started = time.perf_counter()
        for i in range(count):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self.post_one()
        return count


def wait_for(receiver: FakeCrmReceiver, sids: set[str], db: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(_received_sids(receiver, db) & sids) == len(sids):
            return
        time.sleep(0.2)
    raise RuntimeError(f"events for {len(sids)} messages did not all arrive in {timeout:.0f}s")


def _message_sids(db: Path) -> dict[int, str]:
    with sqlite3.connect(db, timeout=10) as connection:
        return dict(
            connection.execute("SELECT id, provider_sid FROM messages WHERE direction='in'")
        )


def _received_sids(receiver: FakeCrmReceiver, db: Path) -> set[str]:
    sids = _message_sids(db)
    return {
        sids[e.body["data"]["message_id"]]
        for e in receiver.events
        if e.body["type"] == "message.received" and e.body["data"]["message_id"] in sids
    }


def _moment(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"p50": statistics.median(ordered), "p99": p99, "n": len(ordered)}


def measure_round(
    receiver: FakeCrmReceiver, sender: Sender, db: Path, rate: float, duration: float
) -> dict[str, Any]:
    receiver.reset()
    first = set(sender.sent)
    sender.run(rate, duration)
    sids = set(sender.sent) - first
    wait_for(receiver, sids, db, duration + 120)
    message_sids = _message_sids(db)
    change_to_crm, webhook_to_change, webhook_to_crm = [], [], []
    for event in receiver.events:
        created = _moment(event.body["created_at"])
        change_to_crm.append((event.received_at - created) * 1000)
        if event.body["type"] != "message.received":
            continue
        sid = message_sids.get(event.body["data"]["message_id"])
        if sid in sids:
            webhook_to_change.append((created - sender.sent[sid]) * 1000)
            webhook_to_crm.append((event.received_at - sender.sent[sid]) * 1000)
    with sqlite3.connect(db, timeout=10) as connection:
        attempts = [
            row[0]
            for row in connection.execute(
                "SELECT latency_ms FROM webhook_deliveries WHERE latency_ms IS NOT NULL"
            )
        ]
    return {
        "events": len(receiver.events),
        "refused": len(receiver.refusals),
        "duplicates": receiver.duplicates,
        "change_to_crm": percentiles(change_to_crm),
        "webhook_to_change": percentiles(webhook_to_change),
        "webhook_to_crm": percentiles(webhook_to_crm),
        "attempt": percentiles(attempts),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=40.0, help="messages per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1) + 1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="portineria-crm-bench-"))
    db = work / "bench.db"
    redis_url, redis = start_embedded_redis()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db}",
        "REDIS_URL": redis_url,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "WHATSAPP_TRANSPORT": "console",
        "PUBLIC_BASE_URL": PUBLIC,
        "SECRET_KEY": "bench",
        "ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "PORTINERIA_INSTANCE_PATH": str(work / "instance"),
        "PYTHONPATH": str(ROOT),
    }
    receiver = FakeCrmReceiver(["set-below"]).start()
    web = worker = None
    rounds: list[dict[str, Any]] = []
    try:
        receiver.secrets[:] = [setup_office(env, receiver.url)]
        port = free_port()
        web = gunicorn("wsgi:app", port, env, args.workers, 1)
        worker = subprocess.Popen(  # noqa: S603 - fixed arguments
            [sys.executable, "-m", "bot", "worker"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
        )
        sender = Sender(port)
        # Warm-up: gunicorn's workers import the app after the port opens, and the worker
        # loads the language model; on a busy machine that takes longer than one timeout.
        sender.post_one(timeout=WARM_UP_SECONDS)
        wait_for(receiver, set(sender.sent), db, 120)
        for _ in range(args.rounds):
            rounds.append(measure_round(receiver, sender, db, args.rate, args.duration))
        failed_posts = sender.failed
    finally:
        stop_process(worker, timeout=15)
        stop_process(web, timeout=10)
        receiver.close()
        stop_process(redis, timeout=10)
        shutil.rmtree(work, ignore_errors=True)

    keys = ("change_to_crm", "webhook_to_change", "webhook_to_crm", "attempt")
    summary = {
        key: {
            "p50": statistics.median(r[key]["p50"] for r in rounds),
            "p99": statistics.median(r[key]["p99"] for r in rounds),
        }
        for key in keys
    }
    if args.json:
        print(json.dumps({"rounds": rounds, "medians": summary, "failed_posts": failed_posts}))
        return 0
    print(
        f"{args.rate:g} messages/s for {args.duration:g}s x {args.rounds} rounds; gunicorn "
        f"{args.workers} sync workers, 1 worker, SQLite; failed webhook posts: {failed_posts}"
    )
    print(f"{'':<20}{'p50 ms':>10}{'p99 ms':>10}   per round p50/p99")
    for key in keys:
        spread = ", ".join(f"{r[key]['p50']:.0f}/{r[key]['p99']:.0f}" for r in rounds)
        label = key.replace("_", " ").replace(" to ", " -> ")
        print(f"{label:<20}{summary[key]['p50']:>10.1f}{summary[key]['p99']:>10.1f}   {spread}")
    for index, r in enumerate(rounds, start=1):
        print(
            f"round {index}: {r['events']} events received, {r['refused']} refused, "
            f"{r['duplicates']} duplicates"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
