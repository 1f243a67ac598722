"""Webhook throughput and latency against a bare signature-checking endpoint.

Both run under gunicorn (2 x cores + 1 sync workers) on 127.0.0.1 and are loaded by
wrk with the same concurrency, in the same run, alternating, so the machine's noise
hits both. Every request is a distinct, correctly signed Twilio delivery (a unique
MessageSid), so the real webhook stores and hands off each one. Afterwards the relay
turns what the webhook handed off into RQ jobs, and its rate is reported too: it must
outrun the web tier, or jobs would lag behind stored messages.

    python bench/webhook_bench.py [--connections 32] [--duration 10] [--rounds 5]

Needs `wrk` (Debian package) on PATH; Redis is started as `portineria dev` starts it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

from bot.runtime.devstack import free_port, start_embedded_redis, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-auth-token-0123456789abcdef"
PUBLIC = "https://portineria.example.it"
PATH = "/webhooks/twilio/messages"
OFFICE = "+390212345678"

LUA = r"""
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("offset", threads)
end
local requests = {}
local counter = 0
init = function(args)
  for line in io.lines(args[1]) do
    local sig, body = line:match("^([^\t]+)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", "PATH", {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["X-Twilio-Signature"] = sig,
    }, body)
  end
  -- Each wrk thread walks its own half of the file: no MessageSid is sent twice.
  counter = math.floor((offset - 1) * #requests / 2)
end
request = function()
  counter = counter % #requests + 1
  return requests[counter]
end
response = function(status, headers, body)
  if status ~= 200 then bad = (bad or 0) + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("NON200 %d\n", summary.errors.status))
end
""".replace("PATH", PATH)


def wait_port(port: int) -> None:
    if not wait_for_port(port, timeout=20.0):
        raise RuntimeError(f"nothing listening on {port}")


def make_requests(path: Path, count: int) -> None:
    validator = RequestValidator(TOKEN)
    with path.open("w") as handle:
        for i in range(count):
            params = {
                "MessageSid": "SM" + uuid.uuid4().hex,
                "AccountSid": "AC" + "1" * 32,
                "From": f"whatsapp:+39333{i % 10_000_000:07d}",
                "To": f"whatsapp:{OFFICE}",
                "Body": "Buongiorno, nel condominio di via Roma 12 la luce delle scale non va",
                "NumMedia": "0",
                "WaId": f"39333{i % 10_000_000:07d}",
                "ApiVersion": "2010-04-01",
            }
            handle.write(
                validator.compute_signature(PUBLIC + PATH, params) + "\t" + urlencode(params) + "\n"
            )


def gunicorn(
    app: str, port: int, env: dict[str, str], workers: int, threads: int
) -> subprocess.Popen[bytes]:
    worker_class = ["-k", "sync"] if threads <= 1 else ["-k", "gthread", "--threads", str(threads)]
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-w",
        str(workers),
        *worker_class,
        "-b",
        f"127.0.0.1:{port}",
        "--backlog",
        "2048",
        "--log-level",
        "warning",
        app,
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wait_port(port)
    return process


def parse_latency(text: str, label: str) -> float:
    match = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not match:
        raise RuntimeError(f"no {label} latency in wrk output:\n{text}")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(
    port: int, script: Path, data: Path, connections: int, duration: int
) -> dict[str, float]:
    command = [
        "wrk",
        "-t",
        "2",
        "-c",
        str(connections),
        "-d",
        f"{duration}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{PATH}",
        "--",
        str(data),
    ]
    output = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 60, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non200 = int(re.search(r"NON200 (\d+)", output).group(1))  # type: ignore[union-attr]
    return {
        "rps": rps,
        "p50_ms": parse_latency(output, "50%"),
        "p99_ms": parse_latency(output, "99%"),
        "non_200": non200,
    }


def prepare_database(env: dict[str, str], settings: dict[str, object] | None = None) -> None:
    """Migrate the database and create the bench office, with ``settings`` changed."""
    code = (
        "from bot import create_app\n"
        "from bot.services import services\n"
        "from bot.office.lifecycle import create_tenant\n"
        "from bot.office.settings import update_settings\n"
        "from storage.migrate import upgrade\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        "    upgrade(services().db.engine)\n"
        f"    office = create_tenant(services(), name='Bench', whatsapp_number='{OFFICE}', "
        "slug='bench')\n"
        f"    update_settings(services(), office.id, {settings or {}!r}, actor='bench')\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=120)


def measure_relay(redis_url: str, limit: int = 20_000, budget_seconds: float = 30.0) -> float:
    """Jobs per second one relay makes of the webhook's hand-offs (bounded in count and time)."""
    from bot.config import DEFAULTS
    from bot.runtime.queueing import RELAY_BATCH, JobQueue, connect_redis

    jobs = JobQueue(connect_redis(redis_url), DEFAULTS["QUEUE_NAME"], 60)
    relayed, started = 0, time.perf_counter()
    while relayed < limit and time.perf_counter() - started < budget_seconds:
        batch = jobs.relay(batch=RELAY_BATCH)
        if batch == 0:
            break
        relayed += batch
    elapsed = time.perf_counter() - started
    if relayed == 0:
        raise RuntimeError("nothing was handed off: the webhook did not reach Redis")
    return relayed / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    # Gunicorn's own advice for sync workers is 2 x cores + 1: while one worker waits on
    # SQLite or Redis another uses the CPU. Both endpoints get the same count.
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1) + 1)
    parser.add_argument(
        "--threads", type=int, default=1, help="> 1 uses gunicorn's gthread workers"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is required (apt-get install wrk)")

    work = Path(tempfile.mkdtemp(prefix="portineria-bench-"))
    redis_url, redis = start_embedded_redis()  # the same Redis `portineria dev` runs
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{work / 'bench.db'}",
        "REDIS_URL": redis_url,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "WHATSAPP_TRANSPORT": "console",
        "PUBLIC_BASE_URL": PUBLIC,
        "SECRET_KEY": "bench",
        "ENCRYPTION_KEYS": "",
        "PYTHONPATH": str(ROOT),
    }
    from cryptography.fernet import Fernet

    env["ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
    results: dict[str, list[dict[str, float]]] = {"bare": [], "webhook": []}
    try:
        prepare_database(env)
        script = work / "requests.lua"
        script.write_text(LUA)
        data = work / "requests.tsv"
        make_requests(data, 60_000 * args.rounds)
        apps = {"bare": "bench.bare_app:create_bare_app()", "webhook": "wsgi:app"}
        for _ in range(args.rounds):
            for name, target in apps.items():
                port = free_port()
                server = gunicorn(target, port, env, args.workers, args.threads)
                try:
                    run_wrk(port, script, data, args.connections, 2)  # warm-up
                    results[name].append(
                        run_wrk(port, script, data, args.connections, args.duration)
                    )
                finally:
                    stop_process(server, timeout=10)
        relay_rate = measure_relay(redis_url)
    finally:
        stop_process(redis, timeout=10)
        shutil.rmtree(work, ignore_errors=True)

    summary = {
        name: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        for name, runs in results.items()
    }
    summary["relay"] = {"jobs_per_s": relay_rate}
    # Each round runs both endpoints back to back: its ratios show the spread.
    per_round = [
        (web["rps"] / bare["rps"], web["p99_ms"] / bare["p99_ms"])
        for bare, web in zip(results["bare"], results["webhook"], strict=True)
    ]
    summary["ratio"] = {
        "throughput": summary["webhook"]["rps"] / summary["bare"]["rps"],
        "p99": summary["webhook"]["p99_ms"] / summary["bare"]["p99_ms"],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"gunicorn {args.workers} sync workers, {args.connections} connections, "
            f"{args.duration}s x {args.rounds} rounds, medians"
        )
        print(f"{'endpoint':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-200':>10}")
        for name in ("bare", "webhook"):
            row = summary[name]
            print(
                f"{name:<10}{row['rps']:>10.0f}{row['p50_ms']:>10.2f}{row['p99_ms']:>10.2f}"
                f"{row['non_200']:>10.0f}"
            )
        print(
            f"webhook/bare throughput {summary['ratio']['throughput']:.2f} (target >= 0.50), "
            f"p99 {summary['ratio']['p99']:.2f}x (target <= 2.00)"
        )
        print(
            "per round (throughput, p99): "
            + ", ".join(f"{rps:.2f} {p99:.2f}x" for rps, p99 in per_round)
        )
        print(f"relay: {relay_rate:.0f} RQ jobs/s from the hand-off list (one process)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
