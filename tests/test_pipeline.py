"""The pipeline at Twilio's pace: sends off the processing path, paced to the office's
rate across processes, Twilio's 429s absorbed, and two worker hosts sharing one burst."""

from __future__ import annotations

import gc
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import requests
from helpers import ACCOUNT_SID, AUTH_TOKEN, send_inbound, worker_env
from rq import Worker
from rq.job import Job
from servers import wait_until
from sqlalchemy import select

from bot.conversation.engine import process_inbound
from bot.exceptions import SendDeferred
from bot.office.settings import update_settings
from bot.outbound.senders import MAX_PACE_WAIT_SECONDS, SendPacer, slot_ledger_key
from bot.runtime.worker import run_worker, start_senders
from notify import OutboundRequest
from notify.whatsapp import TwilioTransport
from storage.models import Message, Tenant

RESIDENTS = [f"+39333{n:07d}" for n in range(24)]


def inbound_ids(svc) -> list[int]:
    with svc.db.read() as session:
        query = select(Message.id).where(Message.direction == "in").order_by(Message.id)
        return list(session.scalars(query))


def processed(svc, count: int) -> bool:
    with svc.db.read() as session:
        rows = session.scalars(select(Message).where(Message.direction == "in")).all()
    return len(rows) == count and all(m.processed_at is not None for m in rows)


def sent_with_sid(svc) -> int:
    """Outbound rows the provider took (a SID recorded); fails on any other kind."""
    with svc.db.read() as session:
        rows = session.execute(
            select(Message.status, Message.provider_sid).where(Message.direction == "out")
        ).all()
    assert all(status in {"pending", "sending", "queued", "sent"} for status, _ in rows), rows
    return sum(1 for _, sid in rows if sid is not None)


def office_with_rate(svc, tenant, rate: int) -> Tenant:
    update_settings(svc, tenant.id, {"send_rate_per_second": rate}, actor="test")
    with svc.db.read() as session:
        return session.get(Tenant, tenant.id)


def booked_slots(svc, office: Tenant) -> list[int]:
    """The office's booked send slots, in microseconds on Redis's clock."""
    return [int(s) for _, s in svc.redis.zrange(slot_ledger_key(office.id), 0, -1, withscores=True)]


def test_sends_from_two_processes_keep_to_the_office_rate(svc, tenant):
    office = office_with_rate(svc, tenant, 20)
    waits: list[float] = []
    # Two pacers on one Redis: two worker processes, or two hosts.
    pacers = [SendPacer(svc.redis, sleep=waits.append) for _ in "ab"]

    for n in range(60):
        pacers[n % 2].wait(office)

    # The first goes at once; then, on Redis's clock (this machine's scheduling does
    # not blur it), never more than twenty in one second, whichever process booked
    # them, and never closer than at 1.25 times the rate, catching up or not.
    slots = booked_slots(svc, office)
    assert len(slots) == 60 and len(waits) == 59
    assert min(b - a for a, b in zip(slots, slots[20:], strict=False)) >= 1_000_000
    assert min(b - a for a, b in zip(slots, slots[1:], strict=False)) >= 40_000


def test_a_send_refused_by_twilio_gives_its_slot_back(svc, tenant):
    office = office_with_rate(svc, tenant, 2)
    waits: list[float] = []
    pacer = SendPacer(svc.redis, sleep=waits.append)
    wait_turn = pacer.turns(office)
    wait_turn(0)  # its slot
    pacer.wait(office)  # another send's: the second is full

    wait_turn(1)  # Twilio refused it (429) and did not count it: its room is free

    # It goes again as soon as catching up allows (two gaps of 0.4 s after the first
    # slot), not when the first slot leaves the window (a second after it).
    assert waits[-1] < 0.9
    assert len(booked_slots(svc, office)) == 2


def test_a_send_that_wakes_late_moves_its_slot_to_when_it_went(svc, tenant):
    office = office_with_rate(svc, tenant, 2)
    # A busy process: its sender thread wakes 60 ms after the slot it slept for.
    pacer = SendPacer(svc.redis, sleep=lambda seconds: time.sleep(seconds + 0.06))
    pacer.wait(office)  # at once: no sleep, on time

    pacer.wait(office)  # due a catching-up gap (400 ms) later, gone 60 ms after that

    # Booked on time, the next send a window later could reach Twilio inside the
    # late one's window; moved, the ledger counts from when it went.
    first, second = booked_slots(svc, office)
    assert 400_000 + 50_000 <= second - first < 400_000 + 200_000


def test_a_retry_after_another_error_keeps_the_slot_of_the_attempt_before(svc, tenant):
    office = office_with_rate(svc, tenant, 20)
    pacer = SendPacer(svc.redis, sleep=lambda _: None)
    wait_turn = pacer.turns(office)
    wait_turn(0)
    wait_turn(1)  # refused (429): the first slot is given back

    wait_turn(1)  # a 500 after that refusal: Twilio may have counted the attempt

    assert len(booked_slots(svc, office)) == 2


def test_a_send_booked_too_far_ahead_is_deferred_and_keeps_no_slot(svc, tenant):
    office = office_with_rate(svc, tenant, 1)
    pacer = SendPacer(svc.redis, sleep=lambda _: None)
    for _ in range(int(MAX_PACE_WAIT_SECONDS) + 1):
        pacer.wait(office)

    with pytest.raises(SendDeferred):
        pacer.wait(office)
    assert len(booked_slots(svc, office)) == int(MAX_PACE_WAIT_SECONDS) + 1


def test_a_worker_leaves_what_it_loaded_out_of_full_collections(app):
    # The language model and the app live as long as the worker; a full collection
    # walking them held every sender thread up for 150-200 ms.
    gc.unfreeze()
    try:
        with app.app_context():
            run_worker(app, burst=True)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_twilio_429s_are_absorbed_without_loss_or_duplicates(client, svc, tenant, twilio):
    # Twilio's queue refuses more than 5 a second; the office allows 80.
    update_settings(svc, tenant.id, {"send_rate_per_second": 80}, actor="test")
    twilio.max_per_second = 5
    for resident in RESIDENTS[:12]:
        send_inbound(client, "Buongiorno", sender=resident)
    svc.senders = start_senders(svc, 8)
    try:
        with svc.app_context():
            for message_id in inbound_ids(svc):
                process_inbound(svc, message_id)  # records the welcome, hands it over
        assert processed(svc, 12)  # the jobs are done before the sends are
        assert wait_until(lambda: len(twilio.messages) >= 12, timeout=60)
        time.sleep(0.5)  # room for a duplicate
    finally:
        svc.senders.close(timeout=30)
        svc.senders = None
        twilio.max_per_second = None

    assert twilio.rate_limited > 0
    assert Counter(m["To"] for m in twilio.messages) == {f"whatsapp:{r}": 1 for r in RESIDENTS[:12]}
    assert sent_with_sid(svc) == 12


def test_safety_advice_overtakes_the_sends_waiting_for_the_office_rate(client, svc, tenant, twilio):
    update_settings(svc, tenant.id, {"send_rate_per_second": 1}, actor="test")
    for resident in RESIDENTS[:4]:
        send_inbound(client, "Buongiorno", sender=resident)
    send_inbound(client, "C'è una forte puzza di gas nelle scale, venite", sender=RESIDENTS[4])
    svc.senders = start_senders(svc, 8)
    try:
        with svc.app_context():
            for message_id in inbound_ids(svc):
                process_inbound(svc, message_id)
        # Four welcomes at one a second take three seconds; the advice does not wait.
        assert wait_until(lambda: any(m["To"].endswith(RESIDENTS[4]) for m in twilio.messages), 2)
        assert len(twilio.messages) < 5
    finally:
        svc.senders.close(timeout=30)
        svc.senders = None


def test_a_429_is_retried_at_the_senders_next_turn_not_after_the_backoff(twilio):
    backoff: list[float] = []
    transport = TwilioTransport(
        ACCOUNT_SID, AUTH_TOKEN, twilio.base_url, retry_delays=(5.0,), sleep=backoff.append
    )
    twilio.max_per_second = 1
    turns: list[int] = []

    def next_turn(refusals: int) -> None:  # the pacer's: after a 429, until there is room
        turns.append(refusals)
        if refusals:
            time.sleep(1.05)

    try:
        for n in range(2):
            request = OutboundRequest("whatsapp:+390612345678", f"whatsapp:{RESIDENTS[n]}", "Ciao")
            transport.send(request, wait_turn=next_turn)
    finally:
        twilio.max_per_second = None

    assert twilio.rate_limited == 1
    assert turns == [0, 0, 1] and backoff == []  # a turn before each attempt, no backoff
    assert [m["To"] for m in twilio.messages] == [f"whatsapp:{r}" for r in RESIDENTS[:2]]


class ForwardingProxy(http.server.ThreadingHTTPServer):
    """A plain-HTTP forward proxy on loopback that notes each request it carries."""

    def __init__(self) -> None:
        self.carried: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                proxy.carried.append(self.path)  # absolute-form: the proxy's request
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = requests.post(self.path, data=body, headers=headers, timeout=10)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers["Content-Type"])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_the_twilio_transport_goes_through_the_proxy_the_environment_names(twilio, monkeypatch):
    # Read once when the transport is made, not on every send: still honoured.
    proxy = ForwardingProxy()
    try:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        transport = TwilioTransport(ACCOUNT_SID, AUTH_TOKEN, twilio.base_url, retry_delays=())
        monkeypatch.delenv("HTTP_PROXY")
        for resident in RESIDENTS[:2]:
            transport.send(
                OutboundRequest("whatsapp:+390612345678", f"whatsapp:{resident}", "Ciao")
            )
    finally:
        proxy.shutdown()
    assert len(proxy.carried) == 2 and all(p.startswith(twilio.base_url) for p in proxy.carried)
    assert [m["To"] for m in twilio.messages] == [f"whatsapp:{r}" for r in RESIDENTS[:2]]


def start_host(env: dict[str, str], instance: str, log) -> subprocess.Popen[bytes]:
    """A worker 'host': its own process group and instance folder, the shared servers."""
    host_env = {**env, "PORTINERIA_INSTANCE_PATH": instance, "MEDIA_ROOT": instance + "/media"}
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "worker", "--concurrency", "4"],
        env=host_env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )


def stop_host(process: subprocess.Popen[bytes]) -> int:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait(timeout=10)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_worker_hosts_answer_one_burst_exactly_once(
    client, svc, tenant, twilio, app_config, tmp_path
):
    update_settings(svc, tenant.id, {"send_rate_per_second": 40}, actor="test")
    twilio.latency = 0.05
    env = worker_env(app_config)
    hosts = []
    try:
        for name in ("host-a", "host-b"):
            (tmp_path / name).mkdir()
            with open(tmp_path / f"{name}.log", "ab") as log:
                hosts.append(start_host(env, str(tmp_path / name), log))
        # Both hosts listening before the burst, which comes in waves: each wave a job
        # of its own, for whichever host has waited longest.
        assert wait_until(lambda: len(Worker.all(connection=svc.redis)) == 2, timeout=60)
        for wave in range(0, len(RESIDENTS), 6):
            for resident in RESIDENTS[wave : wave + 6]:
                send_inbound(client, "Buongiorno", sender=resident)
            time.sleep(0.3)

        assert wait_until(lambda: processed(svc, len(RESIDENTS)), timeout=120)
        assert wait_until(lambda: len(twilio.messages) >= len(RESIDENTS), timeout=60)
        time.sleep(1)  # room for a duplicate to show up
    finally:
        codes = [stop_host(host) for host in hosts]
        twilio.latency = 0.0

    assert codes == [0, 0]
    assert Counter(m["To"] for m in twilio.messages) == {f"whatsapp:{r}": 1 for r in RESIDENTS}
    workers = {
        Job.fetch(svc.jobs.job_id_for(message_id), connection=svc.redis).worker_name
        for message_id in inbound_ids(svc)
    }
    assert len(workers) == 2  # both hosts took part in the burst


def test_a_worker_killed_with_sends_in_its_pool_loses_and_doubles_none(
    client, svc, tenant, twilio, app_config
):
    # Slow sends: when the worker dies, some are in flight (claimed, no SID) and the
    # rest still wait in its pool (recorded, pending).
    twilio.latency = 1.5
    env = worker_env(app_config, SENDING_LEASE_SECONDS=2)
    for resident in RESIDENTS[:8]:
        send_inbound(client, "Buongiorno", sender=resident)
    first = subprocess.Popen([sys.executable, "-m", "bot", "worker", "--concurrency", "2"], env=env)
    try:
        # Both senders' requests reached Twilio: in flight, not claimed and unsent.
        assert wait_until(lambda: processed(svc, 8) and twilio.create_attempts >= 2, timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    twilio.latency = 0.0
    assert len(twilio.messages) < 8  # the kill left sends undone

    second = subprocess.Popen([sys.executable, "-m", "bot", "worker"], env=env)
    try:
        # Pending ones are sent by the sweeper's delivery jobs; the ones in flight
        # are found in Twilio's list and confirmed, not sent again.
        def settled() -> bool:
            return sent_with_sid(svc) == 8

        assert wait_until(settled, timeout=90)
        time.sleep(1)  # room for a duplicate
    finally:
        second.terminate()
        second.wait(timeout=30)

    assert Counter(m["To"] for m in twilio.messages) == {f"whatsapp:{r}": 1 for r in RESIDENTS[:8]}
