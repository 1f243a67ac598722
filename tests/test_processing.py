"""From stored message to reply: the worker job, media, retries, the sweeper, statuses."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import (
    OFFICE_NUMBER,
    RESIDENT,
    count_messages,
    drain,
    inbound_params,
    kill_worker_mid_send,
    post_signed,
    running_worker,
    send_inbound,
    worker_env,
)
from redis.exceptions import RedisError
from rq.job import Job
from servers import wait_until
from sqlalchemy import select

from bot.runtime.queueing import JOB_BATCH, RELAY_BATCH, BackgroundLoop, sweep_once
from bot.services import Services
from storage.models import BotLogEntry, ConsentEvent, Contact, MediaItem, Message, SidTombstone

pytestmark = pytest.mark.usefixtures("tenant")
STATUS = "/webhooks/twilio/status"


def outbound(svc: Services) -> list[Message]:
    with svc.db.session() as session:
        return list(
            session.scalars(select(Message).where(Message.direction == "out").order_by(Message.id))
        )


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_first_message_is_processed_and_answered_once_through_twilio(client, svc, twilio):
    send_inbound(client, "Buongiorno")

    drain(svc)

    assert len(twilio.messages) == 1
    sent = twilio.messages[0]
    assert sent["To"] == f"whatsapp:{RESIDENT}"
    assert sent["From"] == f"whatsapp:{OFFICE_NUMBER}"
    assert sent["StatusCallback"].endswith("/webhooks/twilio/status")
    with svc.db.session() as session:
        inbound = session.scalar(select(Message).where(Message.direction == "in"))
        assert inbound.processed_at is not None
        assert inbound.payload is None  # the raw webhook is dropped once processed
        assert svc.cipher.decrypt(inbound.body) == "Buongiorno"
    assert [m.provider_sid for m in outbound(svc)] == [sent["sid"]]


def test_duplicate_delivery_gets_one_reply(client, svc, twilio):
    params = inbound_params("Buongiorno", sid="SM" + "c" * 32)
    post_signed(client, "/webhooks/twilio/messages", params)
    post_signed(client, "/webhooks/twilio/messages", params)

    drain(svc)
    post_signed(client, "/webhooks/twilio/messages", params)
    drain(svc)

    assert count_messages(svc, direction="in") == 1
    assert len(twilio.messages) == 1


def test_contact_is_keyed_on_wa_id_when_from_is_a_username(client, svc, twilio):
    send_inbound(
        client, "Buongiorno", From="whatsapp:IT.1234567890abcdef", WaId="IT.1234567890abcdef"
    )

    drain(svc)

    with svc.db.session() as session:
        contact = session.scalar(select(Contact))
        assert contact.wa_id == "IT.1234567890abcdef"
        assert contact.phone is None
    assert twilio.messages[0]["To"] == "whatsapp:IT.1234567890abcdef"


def test_profile_name_is_not_stored_by_default(client, svc):
    send_inbound(client, "Buongiorno", ProfileName="Maria Rossi")
    drain(svc)

    with svc.db.session() as session:
        assert session.scalar(select(Contact.profile_name)) is None


def test_twilio_429_then_success_sends_exactly_one_message(client, svc, twilio):
    twilio.fail_next(429)
    send_inbound(client, "Buongiorno")

    drain(svc)

    assert twilio.create_attempts == 2
    assert len(twilio.messages) == 1
    assert outbound(svc)[0].status == "queued"


def test_twilio_persistent_500_defers_and_the_retry_sends_once(client, svc, twilio):
    twilio.fail_next(500, count=4)  # outlasts the in-process retries of one attempt
    send_inbound(client, "Buongiorno")

    drain(svc)  # first attempt fails; RQ schedules a retry
    assert len(twilio.messages) == 0
    assert outbound(svc)[0].status == "pending"

    from bot.conversation.engine import process_inbound

    with svc.db.session() as session:
        message_id = session.scalar(select(Message.id).where(Message.direction == "in"))
    process_inbound(svc, message_id)  # what the scheduled retry runs

    assert len(twilio.messages) == 1
    assert count_messages(svc, direction="out") == 1


def test_message_with_three_media_keeps_all_of_them_encrypted(client, svc, twilio):
    contents = [
        (b"\x89PNG first", "image/png"),
        (b"%PDF-1.4 second", "application/pdf"),
        (b"\xff\xd8\xff third", "image/jpeg"),
    ]
    urls = [twilio.add_media(data, kind) for data, kind in contents]
    extra = {"NumMedia": "3"}
    for i, (url, (_, kind)) in enumerate(zip(urls, contents, strict=True)):
        extra[f"MediaUrl{i}"] = url
        extra[f"MediaContentType{i}"] = kind
    send_inbound(client, "", **extra)

    drain(svc)

    with svc.db.session() as session:
        items = session.scalars(select(MediaItem).order_by(MediaItem.position)).all()
    assert [i.content_type for i in items] == [kind for _, kind in contents]
    for item, (data, _) in zip(items, contents, strict=True):
        stored = Path(item.path).read_bytes()
        assert data not in stored
        assert svc.cipher.decrypt_bytes(stored) == data
        assert item.size == len(data)
    assert twilio.media_requests == 3


def test_media_of_a_refused_type_is_recorded_not_kept(client, svc, twilio):
    url = twilio.add_media(b"MZ\x90\x00", "application/x-msdownload")
    send_inbound(
        client, "", NumMedia="1", MediaUrl0=url, MediaContentType0="application/x-msdownload"
    )

    drain(svc)

    with svc.db.session() as session:
        item = session.scalar(select(MediaItem))
    assert item.refused == "type_not_allowed"
    assert item.path is None


def test_redis_down_at_webhook_time_is_processed_by_the_sweeper(client, svc, twilio, redis_server):
    redis_server.stop()
    try:
        send_inbound(client, "Buongiorno")
    finally:
        redis_server.start()
    assert svc.jobs.queue.count == 0

    swept = sweep_once(svc.db, svc.jobs, grace_seconds=0, lease_seconds=60, max_attempts=5)
    drain(svc)

    assert swept == 1
    assert len(twilio.messages) == 1
    assert sweep_once(svc.db, svc.jobs, grace_seconds=0, lease_seconds=60, max_attempts=5) == 0


def test_sweeper_leaves_a_message_whose_job_is_still_queued(client, svc):
    send_inbound(client, "Buongiorno")

    swept = sweep_once(svc.db, svc.jobs, grace_seconds=0, lease_seconds=60, max_attempts=5)

    assert swept == 0
    assert svc.jobs.queue.count == 1


def test_relay_queues_a_burst_of_hand_offs_as_one_batch_job(client, svc):
    for text in ("Buongiorno", "Il cancello non si apre", "Grazie"):
        send_inbound(client, text)
    with svc.db.session() as session:
        ids = list(session.scalars(select(Message.id).order_by(Message.id)))

    relayed = svc.jobs.relay()

    assert relayed == 3
    assert svc.jobs.handed_off() == 0
    assert svc.jobs.queue.job_ids == [f"inbound-{ids[0]}"]
    assert [svc.jobs.job_id_for(message_id) for message_id in ids] == [f"inbound-{ids[0]}"] * 3
    assert Job.fetch(f"inbound-{ids[0]}", connection=svc.redis).args == (ids,)


def test_relay_splits_a_long_burst_into_jobs_of_a_batch_each(client, svc):
    for n in range(JOB_BATCH + 2):
        send_inbound(client, "Buongiorno", sender=f"+3933300{n:05d}")

    assert svc.jobs.relay() == JOB_BATCH + 2
    sizes = [len(Job.fetch(j, connection=svc.redis).args[0]) for j in svc.jobs.queue.job_ids]
    assert sizes == [JOB_BATCH, 2]


def test_the_sweeper_leaves_alone_a_message_queued_in_a_batch(client, svc):
    for text in ("Buongiorno", "Grazie"):
        send_inbound(client, text)
    svc.jobs.relay()

    swept = sweep_once(svc.db, svc.jobs, grace_seconds=0, lease_seconds=60, max_attempts=5)

    assert swept == 0
    assert svc.jobs.queue.count == 1


def resident(n: int) -> str:
    return f"+3933310{n:05d}"


def first_messages(client, svc: Services, texts: list[str]) -> list[int]:
    """First messages from as many residents, stored; their ids in order."""
    for n, text in enumerate(texts):
        send_inbound(client, text, sender=resident(n))
    svc.redis.delete(svc.jobs.handoff_key)  # run here, not by a relay
    with svc.db.read() as session:
        return list(
            session.scalars(
                select(Message.id).where(Message.direction == "in").order_by(Message.id)
            )
        )


def welcomed(twilio) -> list[str]:
    """The residents answered, in order, once each or more."""
    return sorted(m["To"].removeprefix("whatsapp:") for m in twilio.messages)


def test_a_batch_shares_its_claim_reads_and_transactions(client, svc, twilio):
    from sqlalchemy import event

    from bot.conversation.engine import process_inbound_batch

    ids = first_messages(client, svc, ["Buongiorno"] * 8)
    statements: list[str] = []
    event.listen(svc.db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))

    process_inbound_batch(svc, ids, {})

    assert welcomed(twilio) == [resident(n) for n in range(len(ids))]
    claims = [s for s in statements if s.startswith("UPDATE messages SET lease_until")]
    savepoints = [s for s in statements if s.startswith("SAVEPOINT")]
    assert (len(claims), len(savepoints)) == (1, 0)  # none while nothing fails
    # Taken a message at a time, deciding and answering one took 32, its send included;
    # with the log lines, ledger events and tombstones through the unit of work, 13.
    assert len(statements) / len(ids) <= 12


def test_a_message_the_reader_fails_on_fails_alone_in_its_batch(client, svc, twilio):
    from bot.conversation.engine import process_inbound_batch

    ids = first_messages(client, svc, ["Buongiorno", "Illeggibile", "Buonasera"])
    reader = svc.understand

    def fails_on_one(text: str):
        if text == "Illeggibile":
            raise ValueError("the reader broke")
        return reader(text)

    svc.understand = fails_on_one
    with pytest.raises(ValueError, match="the reader broke"):
        process_inbound_batch(svc, ids, {})

    assert welcomed(twilio) == [resident(0), resident(2)]
    with svc.db.read() as session:
        rows = {m.id: m for m in session.scalars(select(Message).where(Message.id.in_(ids)))}
    assert [rows[i].processed_at is not None for i in ids] == [True, False, True]
    assert rows[ids[1]].lease_until is None  # a retry need not wait for the lease

    svc.understand = reader
    process_inbound_batch(svc, ids, {})  # RQ's retry of the batch
    assert welcomed(twilio) == [resident(n) for n in range(3)]


def decided_with_one_failing(client, svc: Services, monkeypatch) -> list[int]:
    """Three first messages decided in one batch, the second failing while recorded
    (after its ledger event, the notice sent, was gathered; before its log line)."""
    from bot.conversation import engine

    ids = first_messages(client, svc, ["Buongiorno", "Guasto al citofono", "Buonasera"])
    real_apply_world = engine.apply_world

    def fails_on_one(session, tenant, contact, thread, message, *args):
        if message.id == ids[1]:
            raise RuntimeError("recording broke")
        return real_apply_world(session, tenant, contact, thread, message, *args)

    monkeypatch.setattr(engine, "apply_world", fails_on_one)
    with pytest.raises(RuntimeError, match="recording broke"):
        engine.process_inbound_batch(svc, ids, {})
    return ids


def test_a_message_that_fails_while_recorded_is_rolled_back_alone(client, svc, twilio, monkeypatch):
    ids = decided_with_one_failing(client, svc, monkeypatch)

    assert welcomed(twilio) == [resident(0), resident(2)]
    with svc.db.read() as session:
        wa_ids = set(session.scalars(select(Contact.wa_id)))
        unprocessed = list(
            session.scalars(
                select(Message.id).where(Message.id.in_(ids), Message.processed_at.is_(None))
            )
        )
    assert unprocessed == [ids[1]]
    assert len(wa_ids) == 2  # the failing one's contact went with its savepoint


def test_a_message_rolled_back_alone_leaves_no_log_line_ledger_event_or_tombstone(
    client, svc, twilio, monkeypatch
):
    ids = decided_with_one_failing(client, svc, monkeypatch)

    with svc.db.read() as session:
        logged = sorted(session.scalars(select(BotLogEntry.message_id)))
        ledger = list(session.scalars(select(ConsentEvent.contact_id)))
        contacts = set(session.scalars(select(Contact.id)))
        tombstones = list(session.scalars(select(SidTombstone.sid_hash)))
    assert logged == [ids[0], ids[2]]
    assert len(ledger) == 2 and set(ledger) == contacts
    assert len(tombstones) == 2


def test_relay_drops_a_malformed_entry_and_keeps_the_rest(client, svc):
    svc.redis.rpush(svc.jobs.handoff_key, b"not-an-id")
    send_inbound(client, "Buongiorno")

    assert svc.jobs.relay() == 1
    assert svc.jobs.queue.count == 1


def test_relay_waits_for_a_hand_off_and_gives_up_after_its_timeout(svc):
    started = time.monotonic()

    assert svc.jobs.relay(wait_seconds=0.2) == 0
    assert 0.15 <= time.monotonic() - started < 5


def test_relaying_what_waits_is_bounded_so_a_flood_cannot_hold_the_sweeper(svc):
    svc.redis.rpush(svc.jobs.handoff_key, *range(1, 2 * RELAY_BATCH + 51))

    assert svc.jobs.relay_waiting(max_batches=2) == 2 * RELAY_BATCH
    assert svc.jobs.handed_off() == 50


def test_a_background_loop_pauses_after_a_failed_pass_instead_of_spinning():
    passes = []

    def failing_pass() -> None:
        passes.append(time.monotonic())
        raise RedisError("down")

    loop = BackgroundLoop("test", failing_pass, pause=0, error_pause=0.2)
    loop.start()
    time.sleep(0.5)
    loop.stop()
    loop.join(timeout=5)

    assert 2 <= len(passes) <= 4


def test_a_background_loop_says_in_one_line_that_the_database_is_away(caplog):
    from sqlalchemy import text

    from storage.db import Database

    gone = Database("postgresql+psycopg://portineria@127.0.0.1:1/portineria")

    def crm_pass() -> None:
        with gone.connect() as connection:
            connection.execute(text("SELECT 1"))

    loop = BackgroundLoop("crm", crm_pass, pause=0, error_pause=0.2)
    loop.start()
    time.sleep(0.3)
    loop.stop()
    loop.join(timeout=5)

    records = [r for r in caplog.records if "portineria-crm" in r.getMessage()]
    assert records and all(r.levelname == "WARNING" and r.exc_info is None for r in records)
    assert "the database is unavailable" in records[0].getMessage()


def test_a_sweep_with_the_database_away_logs_no_traceback_per_duty(caplog):
    from sqlalchemy import text

    from bot.runtime.queueing import run_each
    from storage.db import Database

    gone = Database("postgresql+psycopg://portineria@127.0.0.1:1/portineria")

    def duty() -> None:
        with gone.connect() as connection:
            connection.execute(text("SELECT 1"))

    from sqlalchemy.exc import OperationalError

    with pytest.raises(OperationalError):  # the first failure, for the loop to report once
        run_each([duty, duty, duty])

    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


def test_a_hand_off_lost_by_a_dying_relay_is_answered_through_the_sweeper(client, svc, twilio):
    send_inbound(client, "Buongiorno")
    svc.redis.lpop(svc.jobs.handoff_key)  # popped, then the relay died before enqueuing

    swept = sweep_once(svc.db, svc.jobs, grace_seconds=0, lease_seconds=60, max_attempts=5)
    drain(svc)

    assert swept == 1
    assert len(twilio.messages) == 1


def test_status_callbacks_out_of_order_never_go_backwards(client, svc, twilio):
    send_inbound(client, "Buongiorno")
    drain(svc)
    sid = twilio.messages[0]["sid"]

    def status(value: str) -> int:
        params = {
            "MessageSid": sid,
            "MessageStatus": value,
            "AccountSid": "AC",
            "From": f"whatsapp:{OFFICE_NUMBER}",
            "To": f"whatsapp:{RESIDENT}",
        }
        return post_signed(client, STATUS, params).status_code

    assert status("delivered") == 204
    assert status("sent") == 204
    assert outbound(svc)[0].status == "delivered"
    assert status("read") == 204
    assert status("delivered") == 204
    assert outbound(svc)[0].status == "read"


def test_status_callback_needs_a_valid_signature(client, svc, twilio):
    send_inbound(client, "Buongiorno")
    drain(svc)
    params = {
        "MessageSid": twilio.messages[0]["sid"],
        "MessageStatus": "failed",
        "From": f"whatsapp:{OFFICE_NUMBER}",
    }

    response = client.post(STATUS, data=params, headers={"X-Twilio-Signature": "forged"})

    assert response.status_code == 403
    assert outbound(svc)[0].status == "queued"


def test_status_callback_for_an_unknown_sid_is_accepted_and_ignored(client):
    params = {
        "MessageSid": "SM" + "0" * 32,
        "MessageStatus": "delivered",
        "From": f"whatsapp:{OFFICE_NUMBER}",
    }

    assert post_signed(client, STATUS, params).status_code == 204


def test_worker_killed_mid_job_does_not_send_the_reply_twice(client, svc, twilio, app_config):
    env = worker_env(app_config)
    kill_worker_mid_send(client, twilio, env)  # the reply is in flight when the worker dies

    def processed() -> bool:
        with svc.db.session() as session:
            return (
                session.scalar(select(Message.processed_at).where(Message.direction == "in"))
                is not None
            )

    with running_worker(env):
        wait_until(processed, timeout=60)

    time.sleep(0.5)
    assert len(twilio.messages) == 1
    assert twilio.create_attempts == 1
    assert count_messages(svc, direction="out") == 1


def test_a_message_that_fails_every_attempt_is_marked_failed_not_retried(client, svc):
    send_inbound(client, "Buongiorno")
    with svc.db.session() as session:
        message = session.scalar(select(Message).where(Message.direction == "in"))
        message.attempts = 5
    svc.redis.delete(svc.jobs.handoff_key)

    swept = sweep_once(svc.db, svc.jobs, grace_seconds=0, lease_seconds=60, max_attempts=5)

    assert swept == 0
    with svc.db.session() as session:
        message = session.scalar(select(Message).where(Message.direction == "in"))
    assert message.status == "failed"
    assert message.payload is not None  # still stored: nothing is lost


@pytest.mark.parametrize("app_config_extra", [{"MEDIA_MAX_BYTES": 1024}], indirect=True)
def test_media_over_the_size_limit_is_recorded_not_kept(client, svc, twilio):
    url = twilio.add_media(b"\xff\xd8\xff" + b"0" * 4096, "image/jpeg")
    send_inbound(client, "", NumMedia="1", MediaUrl0=url, MediaContentType0="image/jpeg")

    drain(svc)

    with svc.db.session() as session:
        item = session.scalar(select(MediaItem))
    assert item.refused == "too_large"
    assert item.path is None


def test_a_reply_over_the_send_rate_is_deferred_not_dropped(client, svc, twilio, tenant):
    from bot.conversation.engine import process_inbound
    from storage.models import Tenant

    with svc.db.session() as session:
        stored = session.get(Tenant, tenant.id)
        stored.settings = {**stored.settings, "send_rate_per_second": 0}
    send_inbound(client, "Buongiorno")
    drain(svc)  # the welcome is over the rate: the job fails and is retried later
    assert twilio.messages == []

    with svc.db.session() as session:
        stored = session.get(Tenant, tenant.id)
        stored.settings = {**stored.settings, "send_rate_per_second": 20}
        message_id = session.scalar(select(Message.id).where(Message.direction == "in"))
    process_inbound(svc, message_id)  # what RQ's retry runs

    assert len(twilio.messages) == 1


def test_the_rq_worker_listens_on_its_own_redis_client(svc):
    from bot.runtime.worker import make_rq_worker

    worker = make_rq_worker(svc)

    listener_timeout = worker.connection.connection_pool.connection_kwargs["socket_timeout"]
    assert listener_timeout > worker.dequeue_timeout  # RQ's long blocking wait fits
    # The app's own client keeps its short timeout: a job's Redis call fails fast.
    assert svc.redis.connection_pool.connection_kwargs["socket_timeout"] == 2.0
