"""An office with two years of history: every page, API call, sweeper pass, export,
erasure, audit verification and the webhook's insert timed on a small office (the
same run's baseline) and on one ten times larger, on SQLite and PostgreSQL, so that
the growth shows as a ratio.

    python bench/scale_bench.py [--scale 0.1] [--databases sqlite,postgresql]
                                [--rounds 3] [--calls 10]

At ``--scale 1`` the large office is the issue's: 100,000 contacts and conversations,
2,000,000 messages over two years (one conversation of 5,000), 200,000 bot-log rows,
500,000 audit events (a valid chain), about 200,000 consent-ledger rows and 50,000
tickets; the baseline office is a tenth of ``--scale``. The default, 0.1, finishes in
about ten minutes on two shared cores; ``--scale 0.01`` is a quick run. Each size
gets a fresh database (SQLite file; a database of a throwaway PostgreSQL cluster,
started as the tests start one), migrated with the product's migrations and
maintained as the worker maintains it, and a private Redis.

Pages go through the Flask test client, signed in as the office's admin; API calls
carry a bearer token. Each measure is ``--rounds`` rounds of ``--calls`` calls
(a round bounded by ``--budget`` seconds); printed are the medians over rounds of
each round's p50 and p95 in milliseconds, the range of the rounds' p95, and the
ratio of the large office's p50 to the small one's. The whole-office export and
``audit verify`` run as the CLI in child processes whose peak resident memory is
read from ``wait4``. Every number printed is one this run measured; a measure that
misses the issue's target (meant at ``--scale 1``) is marked OVER or UNDER.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, insert
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from plans import Office as PlanOffice  # noqa: E402
from plans import hot_query_problems  # noqa: E402
from scale_seed import Seeded, Size, seed_office  # noqa: E402
from servers import PostgresServer  # noqa: E402

from bot import create_app  # noqa: E402
from bot.console.inbox import FILTERS  # noqa: E402
from bot.conversation.handoff import release_idle_conversations  # noqa: E402
from bot.office.accounts import create_user  # noqa: E402
from bot.office.lifecycle import create_tenant  # noqa: E402
from bot.office.tokens import create_token  # noqa: E402
from bot.privacy.rights import erase_in_session, write_export  # noqa: E402
from bot.runtime.devstack import start_embedded_redis, stop_process  # noqa: E402
from bot.runtime.worker import sweep_pass  # noqa: E402
from bot.services import Services, services  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import Contact, Message, Tenant, utcnow  # noqa: E402
from storage.queries import tenant_by_slug  # noqa: E402

OFFICE = "+390212345678"
PUBLIC = "https://portineria.example.it"
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"  # noqa: S105 - signs loopback requests only
PASSWORD = "bench-password-0123456789"  # noqa: S105 - a throwaway account


# -- the environment ----------------------------------------------------------------------


@contextmanager
def redis() -> Iterator[str]:
    url, process = start_embedded_redis()
    try:
        yield url
    finally:
        stop_process(process)


def app_config(database_url: str, redis_url: str, workdir: Path, keys: str) -> dict[str, Any]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": "bench-secret-key",
        "ENCRYPTION_KEYS": keys,
        "PUBLIC_BASE_URL": PUBLIC,
        "WHATSAPP_TRANSPORT": "console",
        "MEDIA_ROOT": str(workdir / "media"),
        "QUEUE_NAME": "bench",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    }


def child_env(config: dict[str, Any], workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTINERIA", "FLASK"))}
    env.update({key: str(value) for key, value in config.items()})
    env["PORTINERIA_INSTANCE_PATH"] = str(workdir / "instance")
    env["PYTHONPATH"] = str(ROOT)
    return env


# -- measuring ----------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


@dataclass(frozen=True)
class Rounds:
    """How a call is timed: ``rounds`` rounds of ``calls`` calls, ``budget`` s a round."""

    rounds: int
    calls: int
    budget: float


def timed(call: Callable[[], Any], how: Rounds) -> dict[str, Any]:
    """The medians over rounds of each round's p50 and p95 (ms), with their spread.

    A round is ``how.calls`` calls (fewer, but at least three, past ``how.budget`` s);
    a noisy neighbour on the shared cores spoils a round, not the median of them.
    """
    call()  # warm: the first call compiles statements and fills caches
    p50s: list[float] = []
    p95s: list[float] = []
    for _round in range(how.rounds):
        samples: list[float] = []
        started = time.perf_counter()
        while len(samples) < how.calls and (
            time.perf_counter() - started < how.budget or len(samples) < 3
        ):
            began = time.perf_counter()
            call()
            samples.append((time.perf_counter() - began) * 1000)
        p50s.append(statistics.median(samples))
        p95s.append(percentile(samples, 0.95))
    return {
        "p50": round(statistics.median(p50s), 1),
        "p95": round(statistics.median(p95s), 1),
        "p50_range": [round(min(p50s), 1), round(max(p50s), 1)],
        "p95_range": [round(min(p95s), 1), round(max(p95s), 1)],
        "rounds": how.rounds,
    }


@dataclass
class Child:
    wall: float  # seconds
    cpu: float  # user + system seconds
    peak_mib: float  # peak resident memory
    output: str


def run_child(command: list[str], env: dict[str, str], timeout: float) -> Child:
    """Run a child process to its end (killed past ``timeout``), with its own rusage.

    Its peak memory is its own ``VmHWM`` (/proc), read as it runs: the ``ru_maxrss``
    that ``wait4`` reports starts from this (large) process's, copied at the fork.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err)  # noqa: S603
        peak_kib = 0
        while True:
            peak_kib = max(peak_kib, _high_water_kib(process.pid))
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - began > timeout:
                process.kill()
                _pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.01)
        wall = time.perf_counter() - began
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        output, errors = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[2:])} failed ({process.returncode}):\n{errors[-3000:]}"
        )
    return Child(wall, usage.ru_utime + usage.ru_stime, peak_kib / 1024, output)


def _high_water_kib(pid: int) -> int:
    """The process's peak resident memory so far (0 once it has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


# -- one office at one size on one database -------------------------------------------------


@dataclass
class Office:
    app: Flask
    svc: Services
    seeded: Seeded
    slug: str
    token: str
    admin_email: str
    other_slug: str


def build_office(config: dict[str, Any], size: Size, results: dict[str, Any]) -> Office:
    app = create_app(config)
    with app.app_context():
        svc = services()
        began = time.perf_counter()
        upgrade(svc.db.engine)
        results["seconds"]["migrate"] = round(time.perf_counter() - began, 2)
        # A small second office first: every query must pick its office out of others'.
        tenant = create_tenant(svc, name="Studio Rossi", whatsapp_number=OFFICE, slug="rossi")
        other = create_tenant(
            svc, name="Studio Bianchi", whatsapp_number="+390298765432", slug="bianchi"
        )
        with svc.db.session() as session:
            emails = ["admin@rossi.it", "anna@rossi.it", "bruno@rossi.it"]
            users = tuple(
                create_user(session, tenant, email, "admin" if n == 0 else "operator", PASSWORD).id
                for n, email in enumerate(emails)
            )
            token = create_token(session, tenant, "crm")
            other_users = (
                create_user(session, other, "admin@bianchi.it", "admin", PASSWORD).id,
            ) * 3
        end = utcnow()
        began = time.perf_counter()
        seeded = seed_office(svc, tenant.id, users, size, end)
        results["seconds"]["seed"] = round(time.perf_counter() - began, 1)
        # A small second office after it: every query must pick its office out of others'.
        seed_office(svc, other.id, other_users, Size.scaled(0.0001), end)
        results["seconds"].update({f"seed {k}": round(v, 1) for k, v in seeded.seconds.items()})
        began = time.perf_counter()
        maintain(svc)
        results["seconds"]["statistics"] = round(time.perf_counter() - began, 2)
    return Office(app, svc, seeded, "rossi", token, emails[0], "bianchi")


def maintain(svc: Services) -> None:
    """What a running office's database has had done to it: on SQLite the worker's
    statistics refresh, and a write-ahead log as short as the checkpointer and the
    office's own writes keep it (the bulk load leaves a log of a gigabyte and more,
    whose index every read would search); PostgreSQL's autovacuum (vacuum and analyze)
    after bulk loading."""
    if svc.db.is_sqlite:
        svc.db.refresh_statistics()
        # Outside any transaction: a checkpoint cannot run inside one.
        with closing(sqlite3.connect(str(svc.db.engine.url.database), timeout=30)) as raw:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return
    with svc.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")


def signed_in(office: Office) -> FlaskClient:
    client = office.app.test_client()
    page = client.get("/console/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf, "no CSRF token on the login page"
    answer = client.post(
        "/console/login",
        data={"csrf_token": csrf.group(1), "email": office.admin_email, "password": PASSWORD},
    )
    assert answer.status_code == 302, answer.status_code
    return client


def _get(client: FlaskClient, path: str, **kwargs: Any) -> str:
    response = client.get(path, **kwargs)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} answered {response.status_code}")
    return response.get_data(as_text=True)


def next_page(html: str) -> str | None:
    """The page's link to its next (older) page; None when a small office has none."""
    found = re.search(r'class="next-page" rel="next" href="([^"]+)"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def measure_pages(office: Office, how: Rounds) -> dict[str, Any]:
    client = signed_in(office)
    big = office.seeded.big_conversation
    ago = (office.seeded.end - timedelta(days=365)).date()
    month = f"dal={ago}&al={ago + timedelta(days=30)}"
    person = office.seeded.users[1]
    pages = {
        "inbox": "/console/",
        "inbox list (live refresh)": "/console/inbox/list",
        **{
            f"inbox ?filtro={name}": f"/console/?filtro={name}"
            for name in FILTERS
            if name != "open"
        },
        "inbox, 2nd page": next_page(_get(client, "/console/")),
        "the long conversation (newest page)": f"/console/conversations/{big}",
        "its older messages": next_page(_get(client, f"/console/conversations/{big}")),
        "a conversation": f"/console/conversations/{big + 1}",
        "bot log": "/console/admin/bot-log",
        "bot log, 2nd page": next_page(_get(client, "/console/admin/bot-log")),
        "bot log ?intento=emergenza": "/console/admin/bot-log?intento=emergenza",
        "bot log ?confidenza_max=0,5": "/console/admin/bot-log?confidenza_max=0,5",
        "bot log, a month a year ago": f"/console/admin/bot-log?{month}",
        "audit log": "/console/admin/audit",
        "audit log, 2nd page": next_page(_get(client, "/console/admin/audit")),
        "audit log ?azione=login.failed": "/console/admin/audit?azione=login.failed",
        "audit log ?azione=conversation": "/console/admin/audit?azione=conversation",
        "audit log ?utente=(an operator)": f"/console/admin/audit?utente={person}",
        "audit log, a month a year ago": f"/console/admin/audit?{month}",
        "tickets": "/console/tickets",
        "tickets ?stato=open": "/console/tickets?stato=open",
        "tickets, 2nd page": next_page(_get(client, "/console/tickets")),
        "a ticket": f"/console/tickets/{office.seeded.offsets.tickets + 2}",
    }
    return {
        name: timed(lambda path=path: _get(client, path), how)
        for name, path in pages.items()
        if path is not None
    }


def measure_api(office: Office, how: Rounds) -> dict[str, Any]:
    client = office.app.test_client()
    headers = {"Authorization": f"Bearer {office.token}"}
    size = office.seeded.size
    recent = (office.seeded.end - timedelta(days=7)).isoformat().replace("+00:00", "Z")

    def get(path: str) -> Any:
        response = client.get(path, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}")
        return response.get_json()

    def lookup() -> Any:
        return client.post(
            "/api/v1/contacts/lookup", json={"phone": "+393330000002"}, headers=headers
        )

    middle = size.contacts // 2
    big = office.seeded.big_conversation
    calls: dict[str, Callable[[], Any]] = {
        "contacts": lambda: get("/api/v1/contacts"),
        "contacts, a deep page": lambda: get(f"/api/v1/contacts?after={middle}"),
        "contacts/lookup": lookup,
        "a contact's consent events": lambda: get("/api/v1/contacts/2/consent-events"),
        "conversations": lambda: get("/api/v1/conversations"),
        "conversations ?needs_attention=true": lambda: get(
            "/api/v1/conversations?needs_attention=true"
        ),
        "conversations ?contact_id": lambda: get("/api/v1/conversations?contact_id=2"),
        "the long conversation's messages": lambda: get(f"/api/v1/conversations/{big}/messages"),
        "the long conversation's messages, deep": lambda: get(
            f"/api/v1/conversations/{big}/messages?after={size.big_conversation - 150}"
        ),
        "tickets": lambda: get("/api/v1/tickets"),
        "tickets ?since=a week ago": lambda: get(f"/api/v1/tickets?since={recent}"),
        "bot-logs": lambda: get("/api/v1/bot-logs"),
        "bot-logs ?since=a week ago": lambda: get(f"/api/v1/bot-logs?since={recent}"),
        "register (art. 30)": lambda: get("/api/v1/register"),
    }
    return {name: timed(call, how) for name, call in calls.items()}


def measure_worker(office: Office, how: Rounds) -> dict[str, Any]:
    svc = office.svc
    sweep = sweep_pass(svc, office.app.config)
    found = 200
    with office.app.app_context():
        results = {"sweeper pass, nothing to sweep": timed(sweep, how)}
        stale = utcnow() - timedelta(minutes=5)
        with svc.db.begin() as connection:
            ids = [
                connection.execute(
                    insert(Message.__table__).returning(Message.id),
                    {
                        "tenant_id": office.seeded.tenant_id,
                        "direction": "in",
                        "provider_sid": f"SMstale{n:026d}",
                        "payload": b"x",
                        "status": "received",
                        "status_rank": 0,
                        "sensitive_kinds": [],
                        "redacted": False,
                        "attempts": 0,
                        "sweeps": 0,
                        "created_at": stale,
                    },
                ).scalar_one()
                for n in range(found)
            ]
        began = time.perf_counter()
        enqueued = sweep()
        results[f"sweeper pass finding {found} lost messages"] = {
            "ms": round((time.perf_counter() - began) * 1000, 1),
            "enqueued": enqueued,
        }
        results[f"sweeper pass, {found} already queued"] = timed(sweep, how)
        with svc.db.begin() as connection:
            connection.execute(delete(Message.__table__).where(Message.id.in_(ids)))
        svc.jobs.queue.empty()
        results["idle handoff release pass"] = timed(
            lambda: release_idle_conversations(svc, utcnow()), how
        )
    return results


def measure_exports(
    office: Office, env: dict[str, str], workdir: Path, timeout: float
) -> dict[str, Any]:
    svc = office.svc
    results: dict[str, Any] = {}
    with office.app.app_context():
        tenant = _tenant(svc, office.slug)
        big = office.seeded.big_conversation  # its contact has the same number
        for name, contact in (("the long conversation's contact", big), ("a contact", big + 1)):

            def one(contact: int = contact) -> None:
                with open(os.devnull, "w") as sink:
                    write_export(svc, tenant, contact, sink, actor="bench")

            results[f"export of {name} (in process)"] = timed(one, Rounds(3, 3, 30))

            def erase(contact: int = contact) -> None:
                # The purge's per-contact erasure, rolled back: the office stays whole.
                with svc.db.session(dry_run=True) as session:
                    found = session.get(Contact, contact)
                    assert found is not None
                    erase_in_session(session, tenant, found)

            results[f"erasure of {name} (rolled back)"] = timed(erase, Rounds(3, 3, 30))
    out = workdir / "office.jsonl"
    command = [sys.executable, "-m", "bot", "export", "--tenant", office.slug, "--out", str(out)]
    child = run_child(command, env, timeout)
    results["whole-office export (CLI)"] = {
        "seconds": round(child.wall, 1),
        "cpu_seconds": round(child.cpu, 1),
        "peak_mib": round(child.peak_mib),
        "file_mib": round(out.stat().st_size / 2**20),
        "output": child.output.strip().splitlines()[-1],
    }
    out.unlink()
    return results


def measure_verify(office: Office, env: dict[str, str], timeout: float) -> dict[str, Any]:
    def verify(slug: str) -> Child:
        return run_child(
            [sys.executable, "-m", "bot", "audit", "verify", "--tenant", slug], env, timeout
        )

    baseline = verify(office.other_slug)  # the CLI's start-up, on a trail of a few events
    child = verify(office.slug)
    events = int(re.search(r"\((\d+) events\)", child.output).group(1))  # type: ignore[union-attr]
    hashing = max(child.wall - baseline.wall, 1e-3)
    return {
        "audit verify (CLI)": {
            "events": events,
            "seconds": round(child.wall, 2),
            "start_up_seconds": round(baseline.wall, 2),
            "events_per_second": round(events / hashing),
            "events_per_cpu_second": round(events / max(child.cpu - baseline.cpu, 1e-3)),
            "peak_mib": round(child.peak_mib),
            "start_up_peak_mib": round(baseline.peak_mib),
        }
    }


def measure_webhook(office: Office, how: Rounds) -> dict[str, Any]:
    """The webhook's insert at this size: each call a new, correctly signed delivery
    from a resident the office already knows (its messages go to the hand-off list)."""
    client = office.app.test_client()
    validator = RequestValidator(AUTH_TOKEN)
    path = "/webhooks/twilio/messages"
    sender = f"+39333{office.seeded.offsets.contacts + 3:07d}"
    counter = iter(range(10**9))

    def deliver() -> None:
        params = {
            "MessageSid": f"SMbench{next(counter):026d}",
            "AccountSid": ACCOUNT_SID,
            "From": f"whatsapp:{sender}",
            "To": f"whatsapp:{OFFICE}",
            "Body": "Buongiorno, c'è una perdita d'acqua in cantina.",
            "NumMedia": "0",
            "WaId": sender.lstrip("+"),
            "ApiVersion": "2010-04-01",
        }
        signature = validator.compute_signature(PUBLIC + path, params)
        response = client.post(path, data=params, headers={"X-Twilio-Signature": signature})
        if response.status_code != 200:
            raise RuntimeError(f"POST {path} answered {response.status_code}")

    with office.app.app_context():
        results = {"webhook: store + hand off an inbound message": timed(deliver, how)}
        office.svc.jobs.queue.empty()
    return results


def _tenant(svc: Services, slug: str) -> Tenant:
    with svc.db.read() as session:
        tenant = tenant_by_slug(session, slug)
    assert tenant is not None
    return tenant


# -- the run ----------------------------------------------------------------------------------


@contextmanager
def database(
    kind: str, workdir: Path, postgres: PostgresServer | None, label: str
) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'portineria.db'}"
        return
    assert postgres is not None
    name = "scale_" + label
    url = postgres.create_database(name)
    try:
        yield url
    finally:
        postgres.drop_database(name)


def run_one(
    kind: str,
    factor: float,
    redis_url: str,
    postgres: PostgresServer | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    how = Rounds(args.rounds, args.calls, args.budget)
    size = Size.scaled(factor)
    results: dict[str, Any] = {
        "database": kind,
        "scale": factor,
        "size": asdict(size),
        "seconds": {},
        "rounds": args.rounds,
        "calls": args.calls,
    }
    workdir = Path(tempfile.mkdtemp(prefix="portineria-scale-"))
    label = f"{kind}_{str(factor).replace('.', '_')}"
    try:
        with database(kind, workdir, postgres, label) as url:
            config = app_config(url, redis_url, workdir, Fernet.generate_key().decode())
            env = child_env(config, workdir)
            os.environ["PORTINERIA_INSTANCE_PATH"] = env["PORTINERIA_INSTANCE_PATH"]
            office = build_office(config, size, results)
            try:
                print(
                    f"[{kind} x{factor}] seeded: {results['seconds']}", file=sys.stderr, flush=True
                )
                results["pages"] = measure_pages(office, how)
                results["api"] = measure_api(office, how)
                results["worker"] = measure_worker(office, how)
                results["exports"] = measure_exports(office, env, workdir, args.timeout)
                results["verify"] = measure_verify(office, env, args.timeout)
                results["webhook"] = measure_webhook(office, how)
                results["plans"] = scans_at_scale(office)
            finally:
                office.svc.db.dispose()
                office.svc.redis.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def scans_at_scale(office: Office) -> list[str]:
    """The hot queries' plans at this size: any that reads far more than it shows.

    SQLite: the plan's shape (a SCAN of a big table, a sort under a LIMIT); PostgreSQL:
    each statement run (rolled back) and its scans' rows counted against what it returns.
    """
    seeded = office.seeded
    target = PlanOffice(
        seeded.tenant_id,
        seeded.users[1],
        seeded.big_conversation,
        seeded.offsets.contacts + 2,
        office.token,
    )
    with office.app.app_context():
        found = hot_query_problems(
            office.app, office.svc, target, measured=not office.svc.db.is_sqlite
        )
    return [f"{name}: {problem}" for name, problems in found.items() for problem in problems]


# Targets of issue 18, at full size (``--scale 1``).
PAGE_P95_MS = 200.0
SWEEP_IDLE_MS = 10.0
OFFICE_EXPORT_S = 600.0
OFFICE_EXPORT_MIB = 300.0
CONTACT_EXPORT_MS = 1000.0
VERIFY_EVENTS_S = 50_000
VERIFY_MIB = 200.0


def print_table(results: list[dict[str, Any]]) -> None:
    """One table per database: each measure at the small office (the same run's
    baseline) and at the large one, and the ratio of the large to the small."""
    for kind in dict.fromkeys(r["database"] for r in results):
        small, large = [r for r in results if r["database"] == kind]
        print(f"\n== {kind} ==")
        for r in (small, large):
            print(f"x{r['scale']}: {_describe(r['size'])}; seconds {json.dumps(r['seconds'])}")
        print(
            f"p50 / p95 in ms: medians of {small['rounds']} rounds of up to "
            f"{small['calls']} calls; [p95 range of the rounds]; ratio = large p50 / small p50"
        )
        for section in ("pages", "api", "worker", "webhook", "exports"):
            heading = f"{section:<46}{'x' + str(small['scale']):>16}{'x' + str(large['scale']):>34}"
            print(f"\n{heading}   ratio")
            for name, value in large[section].items():
                if "p50" not in value and "ms" not in value:
                    continue
                before = small[section].get(name, {})
                ratio = f"{_p50(value) / max(_p50(before), 0.1):.1f}x" if before else "-"
                mark = _over(section, name, value)
                print(
                    f"  {name:<44}{_cell(before):>16}{_cell(value, spread=True):>34}"
                    f"{ratio:>8} {mark}"
                )
        print()
        for r in (small, large):
            for name, value in {**r["exports"], **r["verify"]}.items():
                if "p50" not in value:
                    print(f"  x{r['scale']} {name}: {json.dumps(value)}{_over_big(name, value)}")
        for r in (small, large):
            verdict = "every hot query by index" if not r["plans"] else ""
            print(f"\nplans at x{r['scale']}: {verdict}")
            for problem in r["plans"]:
                print(f"  READS TOO MUCH {problem}")


def _p50(value: dict[str, Any]) -> float:
    return float(value.get("p50", value.get("ms", 0.0)))


def _over(section: str, name: str, value: dict[str, Any]) -> str:
    """'OVER' where a measure misses its target (meant at full size)."""
    if "p95" not in value:
        return ""
    if section in ("pages", "api"):
        limit = PAGE_P95_MS
    elif name == "sweeper pass, nothing to sweep":
        limit = SWEEP_IDLE_MS
    elif section == "exports" and name.startswith("export of"):
        limit = CONTACT_EXPORT_MS
    else:
        return ""
    return f"OVER {limit:.0f} ms" if value["p95"] > limit else ""


def _over_big(name: str, value: dict[str, Any]) -> str:
    misses = []
    if name.startswith("whole-office export"):
        if value["seconds"] > OFFICE_EXPORT_S:
            misses.append(f"OVER {OFFICE_EXPORT_S:.0f} s")
        if value["peak_mib"] > OFFICE_EXPORT_MIB:
            misses.append(f"OVER {OFFICE_EXPORT_MIB:.0f} MiB")
    if name.startswith("audit verify"):
        if value["events_per_cpu_second"] < VERIFY_EVENTS_S:
            misses.append(f"UNDER {VERIFY_EVENTS_S:,} events/s")
        if value["peak_mib"] > VERIFY_MIB:
            misses.append(f"OVER {VERIFY_MIB:.0f} MiB")
    return ("  " + ", ".join(misses)) if misses else ""


def _describe(size: dict[str, int]) -> str:
    return (
        f"{size['contacts']:,} contacts, {size['messages']:,} messages, "
        f"{size['bot_log']:,} bot log, {size['audit']:,} audit, {size['tickets']:,} tickets, "
        f"the long conversation {size['big_conversation']:,} messages"
    )


def _cell(value: dict[str, Any], *, spread: bool = False) -> str:
    if "p50" in value:
        text = f"{value['p50']:.1f} / {value['p95']:.1f}"
        if spread:
            low, high = value["p95_range"]
            text += f" [{low:.0f}-{high:.0f}]"
        return text
    if "ms" in value:
        return f"{value['ms']:.1f}"
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=0.1,
        help="size of the large office; 1 = the issue's (100k contacts, 2M messages); "
        "the baseline office is a tenth of it",
    )
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measure (medians)")
    parser.add_argument("--calls", type=int, default=10, help="calls per round (p50/p95)")
    parser.add_argument("--budget", type=float, default=5.0, help="seconds per round at most")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per child process")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.databases.split(",") if k.strip()]
    results: list[dict[str, Any]] = []
    postgres: PostgresServer | None = None
    if "postgresql" in kinds:
        if not PostgresServer.available():
            print("PostgreSQL cannot be started here: skipped", file=sys.stderr)
            kinds.remove("postgresql")
        else:
            postgres = PostgresServer().start()
    try:
        with redis() as redis_url:
            for kind in kinds:
                for factor in (args.scale / 10, args.scale):
                    results.append(run_one(kind, factor, redis_url, postgres, args))
    finally:
        if postgres is not None:
            postgres.stop()
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
