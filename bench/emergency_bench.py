"""An emergency amid a burst: how long until its safety advice leaves, beside the burst's own.

Everything real and on loopback: gunicorn serving the app (as ``bench/webhook_bench.py``
starts it), ``portineria worker`` in its own process (the trained language model, the
relay and its triage, RQ), the embedded Redis, SQLite, and the fake Twilio in its own
process with a per-send latency (``tests/fake_twilio.py --latency``). Each round posts
correctly signed first messages from distinct residents at a steady rate (a building-
wide outage: every one of them gets the privacy welcome) and one emergency from another
resident in the middle of the burst. The fake Twilio records when each send arrived;
the emergency's time is from its post to the arrival of its safety advice, the ordinary
messages' from their post to the arrival of their first reply.

    python bench/emergency_bench.py [--rounds 5] [--messages 300] [--rate 40]
        [--latency 0.15] [--bot-workers 1] [--no-lane] [--json]

``--no-lane`` runs the same with the priority lane off (``PRIORITY_LANE=false``): the
emergency then waits its turn, which is what the lane is for. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from cryptography.fernet import Fernet
from twilio.request_validator import RequestValidator
from webhook_bench import OFFICE, PATH, PUBLIC, ROOT, TOKEN, gunicorn, prepare_database

from bot.conversation.replies import TEXTS
from bot.runtime.devstack import free_port, start_embedded_redis, stop_process

ACCOUNT = "AC" + "7" * 32
ORDINARY = "Buongiorno, nel condominio di via Roma 12 la luce delle scale non va"
EMERGENCY = "Aiuto, c'è una forte puzza di gas nelle scale del condominio di via Roma 12"
SAFETY_PREFIX = TEXTS["emergency_gas"][:32]  # the fake keeps a body's first 32 characters
POLL_SECONDS = 0.1
POSTERS = 8  # threads posting, so one slow answer does not hold back the pace
READY_SECONDS = 120.0


def signed(sender: str, body: str) -> tuple[dict[str, str], dict[str, str]]:
    params = {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "AccountSid": ACCOUNT,
        "From": f"whatsapp:{sender}",
        "To": f"whatsapp:{OFFICE}",
        "Body": body,
        "NumMedia": "0",
        "WaId": sender.lstrip("+"),
        "ApiVersion": "2010-04-01",
    }
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + PATH, params)
    return params, {"X-Twilio-Signature": signature}


class FakeTwilioProcess:
    """``tests/fake_twilio.py`` in a process of its own, read through its control face."""

    def __init__(self, latency: float, max_per_second: int | None = None) -> None:
        self.port = free_port()
        cap = [] if max_per_second is None else ["--max-per-second", str(max_per_second)]
        self.process = subprocess.Popen(  # noqa: S603 - fixed arguments
            [
                sys.executable,
                str(ROOT / "tests" / "fake_twilio.py"),
                "--port",
                str(self.port),
                "--account-sid",
                ACCOUNT,
                "--auth-token",
                TOKEN,
                "--latency",
                str(latency),
                *cap,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"the fake Twilio did not start: {line!r}")
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.cursor = 0
        self.rate_limited = 0  # creates it answered 429, as of the last read
        self.http = requests.Session()

    def new_sends(self) -> list[dict[str, Any]]:
        answer = self.http.get(f"{self.base_url}/_fake/sends", params={"since": self.cursor})
        answer.raise_for_status()
        data = answer.json()
        self.cursor = data["next"]
        self.rate_limited = int(data["rate_limited"])
        return list(data["sends"])

    def stop(self) -> None:
        stop_process(self.process, timeout=10)  # type: ignore[arg-type]


def stack_env(
    database_url: str, redis_url: str, fake: FakeTwilioProcess, **extra: str
) -> dict[str, str]:
    """The environment of the bench's web and worker processes: its database and
    Redis, Twilio's API at the fake, fresh keys, and ``extra`` settings."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_API_BASE_URL": fake.base_url,
        "WHATSAPP_TRANSPORT": "twilio",
        "PUBLIC_BASE_URL": PUBLIC,
        "SECRET_KEY": "bench",
        "ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def stop_stack(
    processes: list[subprocess.Popen[bytes]],
    fake: FakeTwilioProcess,
    redis: subprocess.Popen[bytes],
    work: Path,
) -> None:
    """Stop what a bench started, the last started first, and remove its folder."""
    for process in reversed(processes):
        stop_process(process, timeout=15)
    fake.stop()
    stop_process(redis, timeout=10)
    shutil.rmtree(work, ignore_errors=True)


def wait_for_first_replies(
    fake: FakeTwilioProcess, expected: dict[str, int], deadline: float
) -> dict[str, dict[str, Any]]:
    """The first send to each address in ``expected``; waits until each has had its
    count of sends (so the next round starts on an idle worker) or the deadline."""
    first: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        for send in fake.new_sends():
            to = send["to"]
            first.setdefault(to, send)
            counts[to] = counts.get(to, 0) + 1
        if all(counts.get(to, 0) >= n for to, n in expected.items()):
            return first
        time.sleep(POLL_SECONDS)
    missing = sum(1 for to, n in expected.items() if counts.get(to, 0) < n)
    raise RuntimeError(f"{missing} resident(s) still waiting for replies at the deadline")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def post_at_rate(
    base: str, plan: list[tuple[dict[str, str], dict[str, str]]], rate: float
) -> tuple[dict[str, float], float]:
    """Post each delivery at ``start + n / rate``; the post times by sender and the
    rate reached (the last post may fall behind the plan on a busy machine)."""
    posted: dict[str, float] = {}
    failures: list[str] = []
    started = time.monotonic() + 0.2

    def poster(offset: int) -> None:
        web = requests.Session()
        for n in range(offset, len(plan), POSTERS):
            params, headers = plan[n]
            pause = started + n / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            posted[params["From"]] = time.time()
            answer = web.post(base + PATH, data=params, headers=headers, timeout=30)
            if answer.status_code != 200:
                failures.append(f"webhook answered {answer.status_code}")

    threads = [threading.Thread(target=poster, args=(k,)) for k in range(POSTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} post(s) failed: {failures[0]}")
    elapsed = max(time.monotonic() - started, 1e-9)
    return posted, len(plan) / elapsed


def run_round(
    index: int,
    base: str,
    fake: FakeTwilioProcess,
    messages: int,
    rate: float,
    budget: float,
) -> dict[str, float]:
    middle = messages // 2
    burst = [signed(f"+39320{index:02d}{n:05d}", ORDINARY) for n in range(messages)]
    alarm_from = f"+39347{index:02d}00001"
    alarm = signed(alarm_from, EMERGENCY)
    plan = [*burst[:middle], alarm, *burst[middle:]]
    posted, _ = post_at_rate(base, plan, rate)
    expected = {params["From"]: 1 for params, _ in burst}
    expected[alarm[0]["From"]] = 2  # the safety advice, then the welcome
    first = wait_for_first_replies(fake, expected, time.monotonic() + budget)
    advice = first[alarm[0]["From"]]
    if not advice["body_prefix"].startswith(SAFETY_PREFIX):
        raise RuntimeError(f"the emergency's first reply was not its advice: {advice}")
    ordinary = [first[p["From"]]["received_at"] - posted[p["From"]] for p, _ in burst]
    return {
        "emergency_s": advice["received_at"] - posted[alarm[0]["From"]],
        "ordinary_p50_s": statistics.median(ordinary),
        "ordinary_p99_s": percentile(ordinary, 0.99),
        "ordinary_max_s": max(ordinary),
    }


def start_worker(env: dict[str, str], *options: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - fixed arguments
        [sys.executable, "-m", "bot", "worker", *options],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def warm_up(web: requests.Session, base: str, fake: FakeTwilioProcess, count: int) -> None:
    """Messages answered end to end before measuring: every web worker has served one
    (the first request of a process is slow), the model is loaded, connections open."""
    expected = {}
    for n in range(count):
        params, headers = signed(f"+39320999{n:04d}", ORDINARY)
        web.post(base + PATH, data=params, headers=headers, timeout=60).raise_for_status()
        expected[params["From"]] = 1
    wait_for_first_replies(fake, expected, time.monotonic() + READY_SECONDS)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rate", type=float, default=40.0, help="posts per second")
    parser.add_argument("--latency", type=float, default=0.15, help="fake Twilio, per send")
    parser.add_argument("--bot-workers", type=int, default=1, help="portineria worker processes")
    parser.add_argument("--web-workers", type=int, default=2 * (os.cpu_count() or 1) + 1)
    parser.add_argument("--no-lane", action="store_true", help="priority lane off")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # Each reply costs at least the fake's latency: the burst drains in about this long.
    budget = 60.0 + args.messages * (args.latency + 0.05) / args.bot_workers

    work = Path(tempfile.mkdtemp(prefix="portineria-emergency-bench-"))
    redis_url, redis = start_embedded_redis()
    fake = FakeTwilioProcess(args.latency)
    env = stack_env(
        f"sqlite:///{work / 'bench.db'}",
        redis_url,
        fake,
        PRIORITY_LANE="false" if args.no_lane else "true",
    )
    processes: list[subprocess.Popen[bytes]] = []
    rounds: list[dict[str, float]] = []
    try:
        prepare_database(env)
        port = free_port()
        processes.append(gunicorn("wsgi:app", port, env, args.web_workers, 1))
        processes.extend(start_worker(env) for _ in range(args.bot_workers))
        base = f"http://127.0.0.1:{port}"
        web = requests.Session()
        warm_up(web, base, fake, 3 * args.web_workers)
        for index in range(args.rounds):
            rounds.append(run_round(index, base, fake, args.messages, args.rate, budget))
    finally:
        stop_stack(processes, fake, redis, work)

    emergency = [r["emergency_s"] for r in rounds]
    summary = {
        "lane": not args.no_lane,
        "rounds": rounds,
        "emergency_median_s": statistics.median(emergency),
        "emergency_worst_s": max(emergency),
        "ordinary_p50_median_s": statistics.median(r["ordinary_p50_s"] for r in rounds),
        "ordinary_p99_median_s": statistics.median(r["ordinary_p99_s"] for r in rounds),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"{args.messages} first messages at {args.rate:g}/s + 1 emergency in the middle, "
        f"fake Twilio latency {args.latency:g} s, {args.bot_workers} worker(s), "
        f"priority lane {'off' if args.no_lane else 'on'}, {args.rounds} rounds"
    )
    print(f"{'round':<7}{'emergency s':>13}{'ordinary p50 s':>16}{'p99 s':>9}{'max s':>9}")
    for n, r in enumerate(rounds, 1):
        print(
            f"{n:<7}{r['emergency_s']:>13.2f}{r['ordinary_p50_s']:>16.2f}"
            f"{r['ordinary_p99_s']:>9.2f}{r['ordinary_max_s']:>9.2f}"
        )
    print(
        f"emergency post-to-safety-reply: median {summary['emergency_median_s']:.2f} s, "
        f"worst {summary['emergency_worst_s']:.2f} s (target <= 2 s); ordinary first "
        f"reply: p50 {summary['ordinary_p50_median_s']:.2f} s, "
        f"p99 {summary['ordinary_p99_median_s']:.2f} s (medians of rounds)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
