"""No delivery lost while the database cannot take it: the spool (a Redis list with an
append-only file, else an fsynced file per web process), its drain, and the worker's
pause while the database is away. On real parts: SQLite locked, read-only or full,
PostgreSQL stopped (fast shutdown) and started again under a paced stream of signed
deliveries to served apps, Redis stopped, a web process killed."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import (
    OFFICE_NUMBER,
    PUBLIC_BASE_URL,
    count_messages,
    drain,
    inbound_params,
    make_tenant,
    post_signed,
    sign,
)
from redis import Redis
from rq import Worker
from servers import PostgresServer, RedisServer, free_port, wait_until
from spool_stack import CONFIG_VARIABLE
from sqlalchemy import create_engine, func, select, text

from bot import create_app
from bot.office.lifecycle import terminate_tenant
from bot.runtime.devstack import describe_spool, start_embedded_redis, stop_process
from bot.runtime.spool import SpooledDelivery, drain_spools
from bot.runtime.worker import DatabaseGate
from bot.services import Services
from storage.inbound import database_unavailable
from storage.migrate import upgrade
from storage.models import Message, utcnow
from storage.vocabulary import SpoolKind, SpoolOutcome

WEBHOOK = "/webhooks/twilio/messages"
STATUS = "/webhooks/twilio/status"
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def app_config_extra(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    # A short database deadline keeps the tests quick; the spool under the test's folder.
    return {
        "WEBHOOK_DB_TIMEOUT_SECONDS": 0.3,
        "SPOOL_DIR": str(tmp_path / "spool"),
        **getattr(request, "param", {}),
    }


def sqlite_path(svc: Services) -> str:
    database = svc.db.engine.url.database
    assert database
    return database


@contextlib.contextmanager
def sqlite_write_held(path: str) -> Iterator[None]:
    """Another program's write transaction on the database (a backup, a sqlite3 shell)."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=1)
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


@contextlib.contextmanager
def write_lock_held(path: str) -> Iterator[None]:
    """Our own file lock held by a writer that does not let go (a long purge, a stuck process)."""
    with open(path + ".write-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def read_only(path: str) -> Iterator[None]:
    """The database file and its WAL made read-only, as a filesystem remounted read-only
    after an error would make them. Root ignores file modes: the immutable attribute;
    otherwise modes, and the pool's open connections dropped (they could still write)."""
    files = [f for f in (path, path + "-wal") if os.path.exists(f)]
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", *files], check=False).returncode != 0:
            pytest.skip("chattr cannot make the database read-only here")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", *files], check=True)
        return
    for name in files:
        os.chmod(name, 0o444)
    try:
        yield
    finally:
        for name in files:
            os.chmod(name, 0o600)


def spooled_files(svc: Services) -> list[Path]:
    return sorted(Path(svc.config["SPOOL_DIR"]).glob("*.jsonl"))


def spooled_lines(svc: Services) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in spooled_files(svc))


# -- the webhook keeps what the database cannot take --------------------------------------


def test_a_database_that_answers_takes_the_delivery_and_no_spool_is_made(client, svc, tenant):
    response = post_signed(client, WEBHOOK, inbound_params("Buongiorno"))

    assert response.status_code == 200
    assert count_messages(svc, direction="in") == 1
    assert not Path(svc.config["SPOOL_DIR"]).exists()


def test_a_delivery_behind_another_programs_write_lock_is_spooled_and_answered_200(
    client, svc, tenant, twilio
):
    params = inbound_params("Buongiorno")
    started = time.monotonic()
    with sqlite_write_held(sqlite_path(svc)):
        response = post_signed(client, WEBHOOK, params)
    waited = time.monotonic() - started

    assert response.status_code == 200
    assert response.get_data(as_text=True).endswith("<Response/>")
    assert waited < 3.0  # the writer's deadline (0.3 s), not SQLite's 10 s busy wait
    assert count_messages(svc, direction="in") == 0
    assert spooled_lines(svc) == 1

    report = drain_spools(svc)
    drain(svc)

    assert report.outcomes == Counter({SpoolOutcome.STORED: 1})
    assert count_messages(svc, direction="in", provider_sid=params["MessageSid"]) == 1
    assert [m["To"] for m in twilio.messages] == [params["From"]]
    assert spooled_lines(svc) == 0


def test_a_delivery_behind_our_write_lock_held_past_the_deadline_is_spooled(client, svc, tenant):
    params = inbound_params("Buongiorno")
    started = time.monotonic()
    with write_lock_held(sqlite_path(svc)):
        response = post_signed(client, WEBHOOK, params)

    assert response.status_code == 200
    assert time.monotonic() - started < 3.0
    assert spooled_lines(svc) == 1
    assert drain_spools(svc).outcomes == Counter({SpoolOutcome.STORED: 1})
    assert count_messages(svc, direction="in", provider_sid=params["MessageSid"]) == 1


def test_a_delivery_to_a_read_only_database_is_spooled_then_stored_once_writable(
    client, svc, tenant, twilio
):
    params = inbound_params("Buongiorno")
    svc.db.engine.dispose()  # connections opened from now on find the file read-only
    with read_only(sqlite_path(svc)):
        response = post_signed(client, WEBHOOK, params)
        assert drain_spools(svc).database_down  # still read-only: the record stays

    assert response.status_code == 200
    assert spooled_lines(svc) == 1
    assert drain_spools(svc).outcomes == Counter({SpoolOutcome.STORED: 1})
    drain(svc)
    assert len(twilio.messages) == 1


def test_the_spooled_record_holds_the_payload_encrypted_never_the_text(client, svc, tenant):
    params = inbound_params("Il mio IBAN è IT60X0542811101000000123456")
    with sqlite_write_held(sqlite_path(svc)):
        post_signed(client, WEBHOOK, params)

    [path] = spooled_files(svc)
    raw = path.read_bytes()
    record = SpooledDelivery.decode(raw.splitlines()[0])

    assert b"IBAN" not in raw and b"IT60" not in raw and params["From"].encode() not in raw
    assert record.kind == SpoolKind.MESSAGE
    assert record.tenant_id == tenant.id and record.number == OFFICE_NUMBER
    assert record.sid == params["MessageSid"]
    assert record.payload is not None and "IT60" in svc.cipher.decrypt(record.payload)
    assert os.stat(path).st_mode & 0o077 == 0


def test_a_redelivery_stored_directly_and_also_spooled_is_stored_once(client, svc, tenant, twilio):
    params = inbound_params("Buongiorno")
    with sqlite_write_held(sqlite_path(svc)):
        post_signed(client, WEBHOOK, params)
    post_signed(client, WEBHOOK, params)  # Twilio's own redelivery, the database back

    report = drain_spools(svc)
    drain(svc)

    assert report.outcomes == Counter({SpoolOutcome.DUPLICATE: 1})
    assert count_messages(svc, direction="in") == 1
    assert len(twilio.messages) == 1


@pytest.mark.parametrize(
    "app_config_extra", [{"SPOOL_REDIS": "off", "SPOOL_FILE_MAX_BYTES": 2000}], indirect=True
)
def test_a_spool_over_its_bound_answers_503_with_retry_after(client, svc, tenant):
    answers = []
    with sqlite_write_held(sqlite_path(svc)):
        for _ in range(4):
            answers.append(post_signed(client, WEBHOOK, inbound_params("Buongiorno")))
    statuses = [a.status_code for a in answers]
    refused = [a for a in answers if a.status_code == 503]

    assert statuses[0] == 200 and refused, statuses
    assert set(statuses) == {200, 503}
    assert all(a.headers["Retry-After"] == "5" for a in refused)
    assert refused[0].get_json()["error"] == "service_unavailable"
    # Every delivery answered 200 was kept and is stored on drain; none of the 503s was.
    assert drain_spools(svc).outcomes[SpoolOutcome.STORED] == statuses.count(200)
    assert count_messages(svc, direction="in") == statuses.count(200)


@pytest.mark.parametrize("app_config_extra", [{"SPOOL_DIR": "/proc/no-spool-here"}], indirect=True)
def test_with_no_spool_that_can_keep_it_the_delivery_is_answered_503(client, svc, tenant):
    with sqlite_write_held(sqlite_path(svc)):
        response = post_signed(client, WEBHOOK, inbound_params("Buongiorno"))

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"


def test_status_callbacks_spooled_out_of_order_keep_the_monotonic_rule(client, svc, tenant):
    outbound_sid = "SM" + uuid.uuid4().hex
    with svc.db.session() as session:
        session.add(
            Message(
                tenant_id=tenant.id,
                direction="out",
                provider_sid=outbound_sid,
                status="sent",
                status_rank=3,
            )
        )

    def callback(status: str) -> Any:
        params = {
            "MessageSid": outbound_sid,
            "MessageStatus": status,
            "From": f"whatsapp:{OFFICE_NUMBER}",
            "To": "whatsapp:+393331234567",
        }
        return post_signed(client, STATUS, params)

    started = time.monotonic()
    with sqlite_write_held(sqlite_path(svc)):
        answers = [callback("read"), callback("delivered")]
    waited = time.monotonic() - started
    report = drain_spools(svc)

    assert [a.status_code for a in answers] == [204, 204]
    assert waited < 3.0  # each waited the webhook's deadline, not SQLite's 10 s
    assert report.outcomes == Counter({SpoolOutcome.APPLIED: 2})
    with svc.db.read() as session:
        stored = session.scalar(select(Message).where(Message.provider_sid == outbound_sid))
        assert stored is not None and stored.status == "read"


def test_a_spooled_delivery_for_a_number_no_longer_served_is_dropped_and_counted(
    client, svc, tenant, twilio
):
    with sqlite_write_held(sqlite_path(svc)):
        post_signed(client, WEBHOOK, inbound_params("Buongiorno"))
    terminate_tenant(svc, tenant.id, utcnow(), actor="test")
    svc.tenants.forget()

    report = drain_spools(svc)
    body = client.get("/readyz").get_json()

    assert report.outcomes == Counter({SpoolOutcome.UNROUTED: 1})
    assert count_messages(svc, direction="in") == 0
    assert spooled_lines(svc) == 0
    assert body["spool"]["unrouted"] == 1
    assert twilio.messages == []


def test_readyz_shows_the_spools_length_and_the_age_of_its_oldest_entry(client, svc, tenant):
    assert client.get("/readyz").get_json()["spool"]["entries"] == 0
    with sqlite_write_held(sqlite_path(svc)):
        post_signed(client, WEBHOOK, inbound_params("Buongiorno"))
        post_signed(client, WEBHOOK, inbound_params("Buonasera"))
    time.sleep(0.2)

    spool = client.get("/readyz").get_json()["spool"]

    assert spool["entries"] == 2 and spool["files"] == 2 and spool["redis"] == 0
    assert spool["oldest_seconds"] >= 0.2
    assert spool["folder"] == svc.config["SPOOL_DIR"]
    drain_spools(svc)
    assert client.get("/readyz").get_json()["spool"]["entries"] == 0


def test_a_full_database_counts_as_unavailable_and_a_missing_table_does_not(tmp_path):
    connection = sqlite3.connect(tmp_path / "full.db", isolation_level=None)
    connection.execute("CREATE TABLE t (x BLOB)")
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(sqlite3.OperationalError) as full:
        connection.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,))
    with pytest.raises(sqlite3.OperationalError) as missing:
        connection.execute("INSERT INTO nowhere VALUES (1)")
    connection.close()

    assert "full" in str(full.value)
    assert database_unavailable(full.value)
    assert not database_unavailable(missing.value)


# -- Redis as the spool, only with its append-only file -----------------------------------


@pytest.fixture(scope="module")
def aof_redis() -> Iterator[RedisServer]:
    with RedisServer(appendonly=True) as server:
        yield server


@pytest.fixture
def aof_redis_url(aof_redis: RedisServer) -> str:
    if not aof_redis.running:
        aof_redis.start()
    aof_redis.flushall()
    return aof_redis.url


def test_redis_without_an_append_only_file_is_not_trusted_with_the_spool(client, svc, tenant):
    with sqlite_write_held(sqlite_path(svc)):
        post_signed(client, WEBHOOK, inbound_params("Buongiorno"))

    assert svc.spool.redis.length() == 0
    assert spooled_lines(svc) == 1


def test_redis_with_an_append_only_file_keeps_the_spool_across_its_restart(
    app_config, aof_redis, aof_redis_url, twilio
):
    app = create_app({**app_config, "REDIS_URL": aof_redis_url})
    svc: Services = app.extensions["portineria"]
    with app.app_context():
        upgrade(svc.db.engine)
    make_tenant(svc)
    client = app.test_client()
    params = inbound_params("Buongiorno")
    try:
        with sqlite_write_held(sqlite_path(svc)):
            response = post_signed(client, WEBHOOK, params)
        aof_redis.stop()  # SIGTERM; what it acknowledged is in its append-only file
        aof_redis.start()

        assert response.status_code == 200
        assert spooled_lines(svc) == 0
        assert svc.spool.redis.length() == 1
        assert drain_spools(svc).outcomes == Counter({SpoolOutcome.STORED: 1})
        assert svc.spool.redis.length() == 0
        drain(svc)
        assert [m["To"] for m in twilio.messages] == [params["From"]]
    finally:
        svc.db.dispose()
        svc.redis.close()


def test_the_embedded_redis_keeps_its_append_only_file_in_the_given_folder(tmp_path):
    folder = tmp_path / "instance" / "redis"
    url, process = start_embedded_redis(folder)
    try:
        Redis.from_url(url).rpush("kept", "a delivery")
    finally:
        stop_process(process)
    url, process = start_embedded_redis(folder)
    try:
        client = Redis.from_url(url)
        assert client.lrange("kept", 0, -1) == [b"a delivery"]
        assert client.info("persistence")["aof_enabled"] == 1
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        client.close()
    finally:
        stop_process(process)
    assert os.stat(folder).st_mode & 0o077 == 0


def test_portineria_dev_says_where_the_spool_is_and_its_bound(svc, tmp_path):
    embedded = describe_spool(svc.spool, tmp_path, embedded_redis=True)
    external = describe_spool(svc.spool, tmp_path, embedded_redis=False)

    assert "portineria:spool:test" in embedded and str(tmp_path / "redis") in embedded
    assert svc.config["SPOOL_DIR"] in embedded
    assert str(svc.config["SPOOL_FILE_MAX_BYTES"]) in embedded
    assert "only if that Redis keeps an append-only file" in external


# -- the worker's pause while the database is away ----------------------------------------


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A cluster of this module's own: these tests stop it."""
    if not PostgresServer.available():
        pytest.skip("no PostgreSQL server can be started here")
    with PostgresServer() as server:
        yield server


def test_the_gate_waits_for_the_database_and_opens_by_itself(own_postgres):
    from storage import Database

    db = Database(own_postgres.url)
    gate = DatabaseGate(db)
    restart = threading.Timer(1.5, own_postgres.start)
    try:
        own_postgres.stop()
        assert not gate.probe()
        gate.mark_down()
        restart.start()
        started, probes = time.monotonic(), []
        gate.wait(lambda: time.monotonic() - started > 30, lambda: probes.append(1))

        assert not gate.down
        assert 1.0 < time.monotonic() - started < 30
        assert 1 <= len(probes) <= 5  # backed off: 0.5, 1, 2, 4 s, not a spin
    finally:
        restart.cancel()
        own_postgres.start()
        db.dispose()


def test_a_job_that_fails_on_the_database_closes_the_gate(svc, tenant):
    gate = DatabaseGate(svc.db)
    with sqlite_write_held(sqlite_path(svc)), pytest.raises(Exception) as failure:
        with svc.db.deadline(0.1), svc.db.begin() as connection:
            connection.execute(text("SELECT 1"))
    gate.note_job_failure(None, ValueError, ValueError("not the database"), None)
    assert not gate.down

    gate.note_job_failure(None, failure.type, failure.value, None)

    assert gate.down
    assert gate.probe()  # a read answers: the next wait opens it again


# -- served apps: a real deployment's processes ----------------------------------------------


class Deployment:
    """Web servers and a worker as separate processes, on the test's database and Redis."""

    def __init__(self, tmp_path: Path, config: dict[str, Any]) -> None:
        self.folder = tmp_path
        self.config = config
        self.env = {
            **os.environ,
            CONFIG_VARIABLE: json.dumps(config),
            "PORTINERIA_INSTANCE_PATH": str(tmp_path / "instance"),
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - the process keeps it
        process = subprocess.Popen(
            command, env=self.env, cwd=TESTS, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.processes[name] = process
        return process

    def gunicorn(self, port: int, workers: int = 2) -> None:
        bind = f"127.0.0.1:{port}"
        command = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", bind]
        self._start("web", [*command, "--log-level", "warning", "spool_stack:web_app()"])
        self.wait_healthy(port)

    def werkzeug(self, port: int) -> subprocess.Popen[bytes]:
        process = self._start(
            "web", [sys.executable, str(TESTS / "spool_stack.py"), "web", str(port)]
        )
        self.wait_healthy(port)
        return process

    def worker(self) -> None:
        """Start the worker and wait until RQ has it registered (spaCy loaded, listening)."""
        self._start("worker", [sys.executable, str(TESTS / "spool_stack.py"), "worker"])
        redis = Redis.from_url(self.config["REDIS_URL"])
        try:
            listening = wait_until(lambda: bool(Worker.all(connection=redis)), 60, 0.1)
        finally:
            redis.close()
        assert listening, self.logs()

    def wait_healthy(self, port: int) -> None:
        def healthy() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
            except requests.RequestException:
                return False

        assert wait_until(healthy, 30, interval=0.1), self.logs()

    def alive(self, name: str) -> bool:
        return self.processes[name].poll() is None

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.folder.glob("*.log"))
        )

    def count_in_logs(self, text: str) -> int:
        return sum(p.read_text(errors="replace").count(text) for p in self.folder.glob("*.log"))

    def close(self) -> None:
        for process in self.processes.values():
            stop_process(process, timeout=10)


def stack_config(app_config: dict[str, Any], tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return {
        **app_config,
        "TESTING": False,
        "SPOOL_DIR": str(tmp_path / "spool"),
        "WEBHOOK_DB_TIMEOUT_SECONDS": 1.0,
        "SPOOL_DRAIN_INTERVAL_SECONDS": 0.5,
        "SWEEP_INTERVAL_SECONDS": 1.0,
        "SWEEP_GRACE_SECONDS": 2.0,
        # A job cut by the outage is found again once its lease expires.
        "PROCESSING_LEASE_SECONDS": 10,
        **overrides,
    }


def resident(index: int) -> str:
    return f"+39333{index:07d}"


def post_delivery(base_url: str, index: int) -> tuple[dict[str, str], int]:
    params = inbound_params("Buongiorno", sender=resident(index))
    signature = sign(PUBLIC_BASE_URL + WEBHOOK, params)
    try:
        response = requests.post(
            base_url + WEBHOOK,
            data=params,
            headers={"X-Twilio-Signature": signature},
            timeout=15,  # Twilio's wait
        )
    except requests.RequestException:
        return params, 0
    return params, response.status_code


def paced_stream(base_url: str, count: int, per_second: float) -> list[tuple[dict[str, str], int]]:
    """``count`` signed deliveries from as many residents, ``per_second`` of them a second."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = []
        for index in range(count):
            delay = started + index / per_second - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(post_delivery, base_url, index))
        return [f.result() for f in futures]


def outage(*steps: tuple[float, Any]) -> threading.Thread:
    """A thread that runs each step after its delay, in order."""

    def run() -> None:
        for delay, step in steps:
            time.sleep(delay)
            step()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def assert_every_accepted_delivery_answered_exactly_once(
    results: list[tuple[dict[str, str], int]], twilio: Any, url: str, deployment: Deployment
) -> None:
    statuses = Counter(status for _, status in results)
    accepted = [params for params, status in results if status == 200]
    # Every delivery answered 200 or 503; with a spool at hand, none needed a 503.
    assert set(statuses) <= {200, 503}, (statuses, deployment.logs())
    assert statuses[200] == len(results), (statuses, deployment.logs())

    expected = {params["From"] for params in accepted}
    answered = wait_until(lambda: {m["To"] for m in twilio.messages} >= expected, 120, 0.2)
    time.sleep(3)  # room for a duplicate to show up
    replies = Counter(m["To"] for m in twilio.messages)
    assert answered, (len(expected - set(replies)), deployment.logs())
    assert set(replies) == expected
    assert set(replies.values()) == {1}, [to for to, n in replies.items() if n > 1]

    # A message answered inline just as the database went away is marked processed
    # when its lease expires and the sweeper hands it out again: later, not never.
    engine = create_engine(url)
    try:

        def processed() -> int:
            with engine.connect() as connection:
                return connection.execute(
                    select(func.count())
                    .select_from(Message)
                    .where(Message.direction == "in", Message.processed_at.is_not(None))
                ).scalar_one()

        lease = float(deployment.config["PROCESSING_LEASE_SECONDS"])
        assert wait_until(lambda: processed() == len(accepted), 3 * lease, 0.5), (
            processed(),
            deployment.logs(),
        )
    finally:
        engine.dispose()


@pytest.fixture
def postgres_stack(own_postgres, app_config, tmp_path, twilio) -> Iterator[tuple[dict, str]]:
    """A database of its own on the module's cluster, migrated, with one office."""
    name = "t_" + uuid.uuid4().hex[:12]
    url = own_postgres.create_database(name)
    config = {**app_config, "DATABASE_URL": url}
    app = create_app(config)
    svc: Services = app.extensions["portineria"]
    with app.app_context():
        upgrade(svc.db.engine)
    make_tenant(svc)
    svc.db.dispose()
    svc.redis.close()
    yield config, url
    own_postgres.start()  # a failed test may have left it stopped
    own_postgres.drop_database(name)


@pytest.fixture
def served(postgres_stack, aof_redis_url, tmp_path) -> Iterator[tuple[Deployment, str, str]]:
    """gunicorn (two workers) and a worker on the stack's PostgreSQL and the AOF Redis:
    the deployment, its base URL, the database URL."""
    config, url = postgres_stack
    deployment = Deployment(tmp_path, stack_config(config, tmp_path, REDIS_URL=aof_redis_url))
    port = free_port()
    try:
        deployment.gunicorn(port, workers=2)
        deployment.worker()
        yield deployment, f"http://127.0.0.1:{port}", url
    finally:
        deployment.close()


def test_a_postgres_restart_under_paced_traffic_loses_nothing(
    served, own_postgres, aof_redis_url, twilio
):
    deployment, base_url, url = served
    # Down about five seconds (fast shutdown, then the time it takes to start).
    down = outage((2.0, own_postgres.stop), (5.0, own_postgres.start))
    results = paced_stream(base_url, count=60, per_second=6)
    down.join(timeout=30)

    assert_every_accepted_delivery_answered_exactly_once(results, twilio, url, deployment)
    spooled = deployment.count_in_logs("spooled (redis)")
    print(f"\npostgres restart: {len(results)} deliveries, {spooled} spooled in redis")
    assert spooled > 0, deployment.logs()
    assert deployment.count_in_logs("spooled (file)") == 0
    assert Redis.from_url(aof_redis_url).llen("portineria:spool:test") == 0
    assert deployment.alive("worker"), deployment.logs()


def test_postgres_and_redis_down_together_spool_to_files_and_lose_nothing(
    served, own_postgres, aof_redis, tmp_path, twilio
):
    deployment, base_url, url = served
    down = outage(
        (2.0, aof_redis.stop),
        (0.0, own_postgres.stop),
        (5.0, own_postgres.start),  # the web processes drain their files into it
        (2.0, aof_redis.start),  # then hand-offs and the sweeper work again
    )
    results = paced_stream(base_url, count=60, per_second=6)
    down.join(timeout=30)

    assert_every_accepted_delivery_answered_exactly_once(results, twilio, url, deployment)
    spooled = deployment.count_in_logs("spooled (file)")
    restarts = deployment.count_in_logs("the RQ worker quit by itself")
    print(
        f"\npostgres and redis down: {len(results)} deliveries, {spooled} spooled in files,"
        f" RQ's loop started again {restarts} time(s) inside the worker"
    )
    assert spooled > 0, deployment.logs()
    # RQ's own loop may give up when Redis fails under it; the worker process does not.
    assert deployment.alive("worker"), deployment.logs()
    worker = deployment.processes["worker"]
    worker.terminate()  # and it still stops when asked
    assert worker.wait(timeout=20) == 0, deployment.logs()
    assert wait_until(
        lambda: (
            not any(Path(tmp_path / "spool").glob("*.jsonl"))
            or all(p.stat().st_size == 0 for p in Path(tmp_path / "spool").glob("*.jsonl"))
        ),
        10,
    )


def test_a_killed_web_process_leaves_its_spool_to_its_successor(app_config, tmp_path, svc, tenant):
    deployment = Deployment(tmp_path, stack_config(app_config, tmp_path, SPOOL_REDIS="off"))
    port = free_port()
    sids = []
    try:
        first = deployment.werkzeug(port)
        with sqlite_write_held(sqlite_path(svc)):
            for index in range(5):
                params, status = post_delivery(f"http://127.0.0.1:{port}", index)
                assert status == 200, deployment.logs()
                sids.append(params["MessageSid"])
        spool_file = tmp_path / "spool" / f"{svc.spool.files.host}-{first.pid}.jsonl"
        assert len(spool_file.read_bytes().splitlines()) == 5
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

        deployment.werkzeug(port)  # a new process (another pid) drains the file at start

        def all_stored() -> bool:
            with svc.db.read() as session:
                found = session.scalar(
                    select(func.count()).select_from(Message).where(Message.provider_sid.in_(sids))
                )
            return found == len(sids)

        assert wait_until(all_stored, 20, interval=0.2), deployment.logs()
        assert not spool_file.exists()
        assert not spool_file.with_suffix(".lock").exists()
    finally:
        deployment.close()
