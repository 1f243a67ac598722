"""What survives what: a Redis outage under a running worker, a worker killed in the
middle of a send, a message whose office was terminated after it was stored; and the
systemd units that bring the processes back from anything else."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import (
    OFFICE_NUMBER,
    RESIDENT,
    add_message,
    drain,
    kill_worker_mid_send,
    make_contact,
    make_conversation,
    make_tenant,
    running_worker,
    send_inbound,
    start_worker,
    stop_worker,
    worker_env,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from servers import wait_until
from sqlalchemy import func, select, update

from bot.office.lifecycle import terminate_tenant
from bot.outbound.send import reconcile_stale_sends
from bot.runtime.queueing import RedisOutage, run_each
from bot.runtime.worker import FoldRedisRetries, make_sweeper
from notify import OutboundRequest
from storage.delivery import outbound_needing_attention
from storage.models import ConsentEvent, Contact, Conversation, Message, utcnow

pytestmark = pytest.mark.usefixtures("tenant")

RESIDENTS = ("+393331000001", "+393331000002", "+393331000003")


def inbound(svc) -> list[Message]:
    with svc.db.read() as session:
        return list(
            session.scalars(select(Message).where(Message.direction == "in").order_by(Message.id))
        )


def outbound(svc) -> list[Message]:
    with svc.db.read() as session:
        return list(
            session.scalars(select(Message).where(Message.direction == "out").order_by(Message.id))
        )


def all_processed(svc, count: int) -> bool:
    messages = inbound(svc)
    return len(messages) == count and all(m.processed_at is not None for m in messages)


# -- Redis goes away under a running worker ------------------------------------------------


def test_worker_outlives_redis_restarting_mid_job_and_answers_every_message_once(
    client, svc, twilio, app_config, redis_server, tmp_path
):
    log = tmp_path / "worker.log"
    twilio.delay_next(3.0)  # the first reply is in flight when Redis goes away
    send_inbound(client, "Buongiorno", sender=RESIDENTS[0])
    # A lease long enough that RQ's job timeout (half of it) lets the slow send finish.
    with running_worker(worker_env(app_config, PROCESSING_LEASE_SECONDS=20), log) as worker:
        assert wait_until(lambda: twilio.create_attempts >= 1, timeout=60)
        redis_server.stop()
        try:
            send_inbound(client, "Buongiorno", sender=RESIDENTS[1])  # stored, not handed off
            time.sleep(5)  # the job ends and RQ's bookkeeping fails; Redis stays away
            assert worker.poll() is None
        finally:
            redis_server.start()  # back, and empty: what was queued there is gone
        send_inbound(client, "Buongiorno", sender=RESIDENTS[2])

        assert wait_until(lambda: all_processed(svc, 3) and len(twilio.messages) >= 3, timeout=60)
        time.sleep(1)  # room for a duplicate to show up
        assert worker.poll() is None
    assert worker.returncode == 0  # and it still stops when asked

    assert sorted(m["To"] for m in twilio.messages) == [f"whatsapp:{r}" for r in RESIDENTS]
    assert twilio.create_attempts == 3
    assert sorted(m.provider_sid for m in outbound(svc)) == sorted(
        m["sid"] for m in twilio.messages
    )
    lines = log.read_text().splitlines()
    assert len([line for line in lines if "redis unavailable (" in line]) == 1
    assert len([line for line in lines if "redis answers again" in line]) == 1
    assert not [line for line in lines if "Traceback" in line]


def test_worker_started_while_redis_is_down_waits_for_it_and_then_answers(
    client, svc, twilio, app_config, redis_server
):
    redis_server.stop()
    try:
        send_inbound(client, "Buongiorno")
        worker = start_worker(worker_env(app_config))
        time.sleep(4)  # long enough to have started, failed to reach Redis, and retried
        assert worker.poll() is None
    finally:
        redis_server.start()
    try:
        assert wait_until(lambda: all_processed(svc, 1), timeout=60)
        assert len(twilio.wait_for_messages(1, timeout=10)) == 1
    finally:
        assert stop_worker(worker) == 0


def test_worker_waiting_for_redis_stops_at_once_when_asked(app_config, redis_server, tmp_path):
    log = tmp_path / "worker.log"
    redis_server.stop()
    try:
        worker = start_worker(worker_env(app_config), log)
        waiting = lambda: log.exists() and "redis unavailable (" in log.read_text()  # noqa: E731
        assert wait_until(waiting, timeout=60)
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=15)
    finally:
        redis_server.start()
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0
    assert time.monotonic() - started < 10


def test_a_redis_outage_is_logged_once_not_per_try(caplog):
    outage = RedisOutage()
    with caplog.at_level(logging.WARNING, logger="bot.runtime.queueing"):
        for _ in range(5):
            outage.failed("relay")
            outage.failed("sweeper")
        outage.recovered()
        outage.recovered()
        outage.failed("sweeper")

    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3
    assert messages[0].startswith("redis unavailable (relay)")
    assert messages[1].startswith("redis answers again after")
    assert messages[2].startswith("redis unavailable (sweeper)")


def test_rq_reconnection_lines_are_folded_into_the_outage():
    outage = RedisOutage()
    fold = FoldRedisRetries(outage)
    retry = logging.LogRecord(
        "rq.worker",
        logging.ERROR,
        __file__,
        1,
        "Worker %s: could not connect to Redis instance: %s retrying in %d seconds...",
        ("w", "refused", 2),
        None,
    )
    try:
        raise RedisConnectionError("refused")
    except RedisConnectionError as error:
        gave_up = logging.LogRecord(
            "rq.worker", logging.ERROR, __file__, 1, "quitting", (), (type(error), error, None)
        )
    other = logging.LogRecord("rq.worker", logging.ERROR, __file__, 1, "job failed", (), None)

    assert fold.filter(retry) is False
    assert fold.filter(gave_up) is False
    assert fold.filter(other) is True
    assert outage.down


def test_every_duty_runs_even_when_one_fails_on_redis():
    ran: list[str] = []

    def needs_redis() -> None:
        ran.append("redis")
        raise RedisConnectionError("down")

    with pytest.raises(RedisConnectionError):
        run_each([needs_redis, lambda: ran.append("database")])

    assert ran == ["redis", "database"]


# -- a reply whose worker died mid-send --------------------------------------------------


def stale_send(svc, tenant, body: str = "Grazie, la contatteremo.", age: float = 600) -> Message:
    """An outbound row left ``sending`` by a worker that died ``age`` seconds ago."""
    conversation = make_conversation(svc, tenant, make_contact(svc, tenant), mode="bot")
    long_ago = utcnow() - timedelta(seconds=age)
    return add_message(
        svc,
        conversation,
        body,
        direction="out",
        idempotency_key=f"reply:test:{age}",
        status="sending",
        status_rank=2,
        purpose="reply",
        created_at=long_ago,
        status_at=long_ago,
    )


def twilio_send(svc, body: str, to: str = RESIDENT) -> str:
    """A message that reached Twilio (through the real SDK), as the dead worker's did."""
    request = OutboundRequest(
        from_address=f"whatsapp:{OFFICE_NUMBER}", to_address=f"whatsapp:{to}", body=body
    )
    return svc.transport.send(request).provider_sid


def reload_message(svc, message_id: int) -> Message:
    with svc.db.read() as session:
        message = session.get(Message, message_id)
        assert message is not None
        return message


def age_status(svc, message_id: int, seconds: float) -> None:
    with svc.db.session() as session:
        session.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(status_at=utcnow() - timedelta(seconds=seconds))
        )


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_stale_send_found_in_twilios_list_gets_its_sid_and_status(svc, tenant, twilio):
    message = stale_send(svc, tenant)
    twilio_send(svc, "Un altro messaggio")  # same resident, another text
    sid = twilio_send(svc, "Grazie, la contatteremo.")

    assert reconcile_stale_sends(svc, utcnow()) == 1

    found = reload_message(svc, message.id)
    assert (found.provider_sid, found.status) == (sid, "sent")
    assert twilio.create_attempts == 2  # asking the list sends nothing


def test_a_twin_already_recorded_on_another_row_is_not_taken(svc, tenant, twilio):
    message = stale_send(svc, tenant)
    first = twilio_send(svc, "Grazie, la contatteremo.")
    second = twilio_send(svc, "Grazie, la contatteremo.")
    with svc.db.read() as session:
        conversation = session.get(Conversation, message.conversation_id)
    # An earlier reply with the same text, confirmed by its own worker.
    add_message(svc, conversation, "Grazie, la contatteremo.", direction="out", provider_sid=first)

    reconcile_stale_sends(svc, utcnow())

    assert reload_message(svc, message.id).provider_sid == second


def test_a_send_twilio_never_shows_is_marked_never_confirmed_after_a_second_look(
    svc, tenant, twilio
):
    message = stale_send(svc, tenant)

    assert reconcile_stale_sends(svc, utcnow()) == 0  # first look: not there yet
    first = reload_message(svc, message.id)
    assert (first.status, first.reconcile_looks) == ("sending", 1)
    assert reconcile_stale_sends(svc, utcnow()) == 0  # the second look waits a lease
    age_status(svc, message.id, 600)
    assert reconcile_stale_sends(svc, utcnow()) == 1

    final = reload_message(svc, message.id)
    assert (final.status, final.failure_reason) == ("failed", "never_confirmed")
    assert final.provider_sid is None
    assert twilio.create_attempts == 0  # never resent


def test_a_send_younger_than_the_lease_is_left_alone(svc, tenant, twilio):
    message = stale_send(svc, tenant, age=5)

    assert reconcile_stale_sends(svc, utcnow()) == 0

    assert reload_message(svc, message.id).reconcile_looks == 0


def test_reconciliation_runs_through_a_redis_outage(app, svc, tenant, twilio, redis_server):
    message = stale_send(svc, tenant)
    sid = twilio_send(svc, "Grazie, la contatteremo.")
    with app.app_context():
        sweeper = make_sweeper(app)
    redis_server.stop()
    try:
        with pytest.raises(RedisConnectionError):
            sweeper.run_pass()  # the sweep needs Redis; reconciling does not
    finally:
        redis_server.start()

    assert reload_message(svc, message.id).provider_sid == sid


def test_a_reply_cut_off_by_a_killed_worker_is_confirmed_from_twilios_list(
    client, svc, twilio, app_config
):
    env = worker_env(app_config, SENDING_LEASE_SECONDS=1)
    kill_worker_mid_send(client, twilio, env)
    sid = twilio.messages[0]["sid"]  # Twilio took it all the same
    assert [m.status for m in outbound(svc)] == ["sending"]

    with running_worker(env):
        assert wait_until(lambda: outbound(svc)[0].provider_sid is not None, timeout=60)
        assert wait_until(lambda: all_processed(svc, 1), timeout=60)

    reply = outbound(svc)
    assert [(m.provider_sid, m.status) for m in reply] == [(sid, "sent")]
    assert twilio.create_attempts == 1


def test_a_reply_twilio_never_received_is_marked_for_an_operator_and_not_resent(
    client, svc, twilio, app_config
):
    env = worker_env(app_config, SENDING_LEASE_SECONDS=1)
    kill_worker_mid_send(client, twilio, env)
    twilio.reset()  # as if the request had died before Twilio created the message

    with running_worker(env):
        assert wait_until(lambda: outbound(svc)[0].status == "failed", timeout=60)
        assert wait_until(lambda: all_processed(svc, 1), timeout=60)

    reply = outbound(svc)
    assert [(m.status, m.failure_reason, m.provider_sid) for m in reply] == [
        ("failed", "never_confirmed", None)
    ]
    assert twilio.create_attempts == 0


def test_the_sends_an_operator_should_look_at_are_listed_per_office(svc, tenant):
    stuck = stale_send(svc, tenant)
    with svc.db.read() as session:
        conversation = session.get(Conversation, stuck.conversation_id)
    unconfirmed = add_message(
        svc,
        conversation,
        "Buongiorno",
        direction="out",
        status="failed",
        failure_reason="never_confirmed",
    )
    add_message(svc, conversation, "Consegnato", direction="out", status="delivered")
    fresh = add_message(svc, conversation, "In corso", direction="out", status="sending")
    other = make_tenant(svc, slug="studio-bianchi", number="+390298765432")

    grace = utcnow() - timedelta(seconds=120)
    listed = outbound_needing_attention(svc.db, tenant.id, grace)

    assert listed == [unconfirmed.id, stuck.id]
    assert fresh.id not in listed
    assert outbound_needing_attention(svc.db, other.id, grace) == []


# -- an office terminated after the webhook stored its message ---------------------------


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_message_of_an_office_terminated_after_storing_creates_nothing(
    client, svc, tenant, twilio
):
    send_inbound(client, "Buongiorno, il cancello non si apre")
    terminate_tenant(svc, tenant.id, utcnow(), actor="test")

    drain(svc)

    [message] = inbound(svc)
    assert message.processed_at is not None
    assert message.payload is None
    assert (message.contact_id, message.conversation_id, message.body) == (None, None, None)
    with svc.db.read() as session:
        for model in (Contact, Conversation, ConsentEvent):
            assert session.scalar(select(func.count()).select_from(model)) == 0
    assert outbound(svc) == []
    assert twilio.create_attempts == 0


# -- supervision: the systemd units the README ships --------------------------------------

UNITS = Path(__file__).resolve().parent.parent / "deploy" / "systemd"


def unit_settings(name: str) -> dict[str, list[str]]:
    """``key: [values]`` of a unit file's [Service] and [Unit] sections (keys repeat)."""
    settings: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.mark.parametrize("name", ["portineria-web.service", "portineria-worker@.service"])
def test_each_unit_restarts_always_as_its_own_user_with_the_hardening(name):
    settings = unit_settings(name)

    assert settings["Restart"] == ["always"]
    assert settings["StartLimitIntervalSec"] == ["0"]  # never gives up restarting
    assert settings["EnvironmentFile"] == ["/etc/portineria/portineria.env"]
    assert settings["User"] == ["portineria"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "UMask": "0077",
        "CapabilityBoundingSet": "",
    }.items():
        assert settings[key] == [value], key


def test_the_worker_unit_gives_a_job_in_hand_time_to_finish():
    settings = unit_settings("portineria-worker@.service")

    assert settings["KillSignal"] == ["SIGTERM"]  # RQ's warm shutdown
    # RQ's job timeout is half the processing lease (120 s by default).
    assert int(settings["TimeoutStopSec"][0]) > 60
    assert settings["ExecStart"][0].endswith("portineria worker")


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze here")
def test_the_units_pass_systemd_analyze_verify(tmp_path):
    # Point the units at this checkout's executables: verify checks they exist.
    bin_dir = str(Path(sys.executable).parent)
    for unit in UNITS.glob("*.service"):
        text = unit.read_text().replace("/opt/portineria/.venv/bin", bin_dir)
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(p) for p in tmp_path.glob("*.service"))

    found = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60
    )

    assert found.returncode == 0, found.stderr
    assert found.stderr.strip() == ""
