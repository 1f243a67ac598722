"""Events pushed to the office's CRM: signed, retried, ordered, replayable.

Real parts throughout: the Twilio webhook and the worker's job make the changes, the
workers' dispatcher (``bot.crm.delivery``) delivers the outbox over HTTP, and the
``crm`` fixture (``tests/fake_crm.py``) is a real receiver on 127.0.0.1 that verifies
the documented signature. Timings are shortened by configuration, never mocked.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from fake_crm import FakeCrmReceiver
from helpers import (
    OFFICE_NUMBER,
    RESIDENT,
    audit_actions,
    drain,
    login,
    make_contact,
    make_conversation,
    make_tenant,
    make_user,
    post_form,
    post_signed,
    send_inbound,
)
from sqlalchemy import select, update

from bot.console.tickets import change_ticket_status
from bot.crm import record_event
from bot.crm.delivery import CrmDispatcher, CrmThread, backoff, next_attempt
from bot.crm.endpoints import By, NewSecret, add_endpoint, address_kind, check_url, rotate_secret
from bot.crm.events import wake_key
from bot.exceptions import InvalidEndpoint
from bot.office.actor import Actor
from bot.office.tokens import create_token
from bot.privacy.retention import purge
from bot.privacy.rights import erase_contact
from bot.services import Services
from notify.crm import signature_header
from notify.operators import user_channel
from storage.models import (
    Tenant,
    Ticket,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    utcnow,
)
from storage.vocabulary import WebhookEventType

BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
OTHER_NUMBER = "+390298765432"
# Short waits, so retries, timeouts and the retry window fit in a test.
# A test that sets a longer backoff sets its cap too: the cap bounds every wait.
FAST = {
    "CRM_BACKOFF_SECONDS": 0.05,
    "CRM_BACKOFF_MAX_SECONDS": 0.2,
    "CRM_POLL_SECONDS": 0.05,
    "CRM_TIMEOUT_SECONDS": 2.0,
}
BY = By("test")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def app_config_extra(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {**FAST, **dict(getattr(request, "param", {}))}


@contextmanager
def signing_with(crm: FakeCrmReceiver, *secrets: str) -> Iterator[None]:
    """The session's receiver, verifying with these secrets for the test's duration."""
    saved = list(crm.secrets)
    crm.secrets[:] = list(secrets)
    try:
        yield
    finally:
        crm.secrets[:] = saved


def add(svc: Services, tenant: Tenant, url: str, events: str | None = None) -> NewSecret:
    return add_endpoint(
        svc, tenant.id, url, events, allow_loopback=True, allow_private=False, by=BY
    )


@pytest.fixture
def endpoint(svc: Services, tenant: Tenant, crm: FakeCrmReceiver) -> Iterator[NewSecret]:
    made = add(svc, tenant, crm.url)
    with signing_with(crm, made.secret):
        yield made


@pytest.fixture
def dispatcher(svc: Services) -> Iterator[CrmDispatcher]:
    running = CrmDispatcher(svc)
    yield running
    running.close()


@pytest.fixture
def worker_thread(svc: Services) -> Iterator[CrmThread]:
    """The worker's CRM thread, running as in ``portineria worker``."""
    thread = CrmThread(svc)
    thread.start()
    yield thread
    thread.stop()


def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def emit(svc: Services, tenant: Tenant, n: int = 1, conversation_id: int | None = None) -> None:
    with svc.db.session() as session:
        for i in range(n):
            record_event(
                session,
                tenant.id,
                WebhookEventType.TICKET_UPDATED,
                {"ticket_id": i, "summary": f"test {i}"},
                conversation_id=conversation_id,
            )


def deliveries(svc: Services) -> list[WebhookDelivery]:
    with svc.db.read() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def consented(client: Any, svc: Services) -> None:
    send_inbound(client, "buongiorno")
    drain(svc)
    send_inbound(client, "accetto")
    drain(svc)


# -- the signature ---------------------------------------------------------------------------


def test_the_fake_crm_accepts_what_the_signer_signs(crm: FakeCrmReceiver) -> None:
    body = json.dumps({"id": "evt_1", "type": "ticket.created"}).encode()
    header = signature_header(["s3cret"], int(time.time()), body)

    with signing_with(crm, "s3cret"):
        answer = requests.post(
            crm.url,
            data=body,
            headers={"Portineria-Signature": header, "Portineria-Event-Id": "evt_1"},
            timeout=5,
        )

    assert answer.status_code == 200
    assert [e.id for e in crm.events] == ["evt_1"]


def _readme_verifier() -> Callable[..., bool]:
    """The verifier the README shows receivers, executed as written."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- crm-verifier -->\s*```python\n(.*?)```", readme, re.S)
    assert found, "the README shows no verifier"
    namespace: dict[str, Any] = {}
    exec(found.group(1), namespace)  # noqa: S102 - our own README, in a test
    return namespace["verify"]


def test_the_readme_verifier_accepts_a_real_delivery_and_refuses_a_forged_one(
    svc, tenant, crm, endpoint, dispatcher
) -> None:
    verify = _readme_verifier()
    emit(svc, tenant)
    dispatcher.deliver_due()
    [event] = crm.wait_for_events(1)
    header = event.headers["Portineria-Signature"]

    assert verify(endpoint.secret, header, event.raw)
    assert not verify("another-secret", header, event.raw)
    assert not verify(endpoint.secret, header, event.raw.replace(b"test", b"TEST"))
    stale = re.sub(r"t=\d+", f"t={int(time.time()) - 600}", header)
    assert not verify(endpoint.secret, stale, event.raw)


# -- endpoints: which URLs ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://10.1.2.3/hook",
        "https://192.168.1.20/hook",
        "https://172.16.0.9/hook",
        "https://169.254.169.254/latest",
        "https://[fd00::1]/hook",
        "https://100.64.0.1/hook",
    ],
)
def test_a_private_or_link_local_address_is_refused_unless_allowed(url):
    with pytest.raises(InvalidEndpoint):
        check_url(url, allow_loopback=True, allow_private=False)

    assert check_url(url, allow_loopback=False, allow_private=True).url == url


def test_a_host_resolving_to_a_private_address_is_refused():
    def resolve(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.0.0.7"]  # one private answer is enough

    with pytest.raises(InvalidEndpoint, match="privato"):
        check_url(
            "https://crm.example.it/x", allow_loopback=False, allow_private=False, resolve=resolve
        )


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x", "https://localhost/x", "http://[::1]/x"])
def test_loopback_is_refused_without_the_flag_and_accepted_with_it(url):
    with pytest.raises(InvalidEndpoint, match="loopback"):
        check_url(url, allow_loopback=False, allow_private=False)

    assert check_url(url, allow_loopback=True, allow_private=False).url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://crm.example.it/hook",  # plain http off loopback
        "http://10.0.0.5/hook",
        "ftp://127.0.0.1/x",
        "https://user:pw@crm.example.it/x",
        "https://0.0.0.0/x",
        "https://224.0.0.1/x",
        "https:///no-host",
    ],
)
def test_urls_that_are_not_https_to_an_allowed_host_are_refused(url):
    def public(host: str, port: int) -> list[str]:
        return ["93.184.215.14"]

    with pytest.raises(InvalidEndpoint):
        check_url(url, allow_loopback=True, allow_private=True, resolve=public)


def test_address_kinds():
    assert address_kind("93.184.215.14") == "public"
    assert address_kind("127.0.0.1") == "loopback"
    assert address_kind("::ffff:10.0.0.1") == "private"
    assert address_kind("fe80::1") == "private"
    assert address_kind("0.0.0.0") == "forbidden"  # noqa: S104 - the address under test


def test_cli_adds_an_endpoint_and_prints_its_secret_alone_on_the_last_line(
    runner, svc, tenant, crm
):
    result = runner.invoke(
        args=["webhooks", "add", "--tenant", tenant.slug, "--url", crm.url, "--allow-loopback"]
    )

    assert result.exit_code == 0, result.output
    secret = result.output.strip().splitlines()[-1]
    assert secret.startswith("whsec_") and " " not in secret
    with svc.db.read() as session:
        row = session.scalar(select(WebhookEndpoint))
    assert row is not None and secret.encode() not in row.secret  # stored encrypted
    assert svc.cipher.decrypt(row.secret) == secret
    listed = runner.invoke(args=["webhooks", "list", "--tenant", tenant.slug])
    assert crm.url in listed.output and secret not in listed.output
    assert "webhook.add" in audit_actions(svc, tenant)


def test_cli_refuses_loopback_without_the_flag_and_a_private_address(runner, svc, tenant, crm):
    loopback = runner.invoke(args=["webhooks", "add", "--tenant", tenant.slug, "--url", crm.url])
    private = runner.invoke(
        args=["webhooks", "add", "--tenant", tenant.slug, "--url", "https://10.9.8.7/hook"]
    )

    assert loopback.exit_code != 0 and "loopback" in loopback.output
    assert private.exit_code != 0 and "privato" in private.output
    with svc.db.read() as session:
        assert session.scalar(select(WebhookEndpoint)) is None


def test_cli_refuses_an_unknown_event_type(runner, tenant, crm):
    result = runner.invoke(
        args=[
            "webhooks", "add", "--tenant", tenant.slug, "--url", crm.url,
            "--allow-loopback", "--events", "ticket.created,ticket.exploded",
        ]
    )  # fmt: skip

    assert result.exit_code != 0 and "ticket.exploded" in result.output


def test_cli_removes_an_endpoint(runner, svc, tenant, crm, endpoint):
    result = runner.invoke(
        args=["webhooks", "remove", "--tenant", tenant.slug, "--id", str(endpoint.endpoint.id)]
    )

    assert result.exit_code == 0, result.output
    with svc.db.read() as session:
        assert session.scalar(select(WebhookEndpoint)) is None


# -- the path: a fault through the webhook and the worker ----------------------------------------


@BOTH
def test_a_fault_message_reaches_the_crm_as_a_verified_ticket_created(
    client, svc, tenant, crm, endpoint, dispatcher
):
    consented(client, svc)
    send_inbound(client, "Buongiorno, il portone non si chiude più, la serratura è rotta")
    drain(svc)
    assert svc.redis.exists(wake_key(svc.config["QUEUE_NAME"]))  # the dispatchers were woken

    dispatcher.deliver_due()

    received = [e.body for e in crm.events]
    created = [b for b in received if b["type"] == "ticket.created"]
    assert len(created) == 1 and crm.refusals == []  # signed as the fake verifies
    body = created[0]
    assert set(body) == {"id", "type", "created_at", "tenant", "data"}
    assert body["tenant"] == tenant.slug
    with svc.db.read() as session:
        ticket = session.scalar(select(Ticket))
    assert ticket is not None
    assert body["data"]["ticket_id"] == ticket.id and body["data"]["kind"] == "guasto"
    assert body["data"]["summary"]
    types = [b["type"] for b in received]
    assert types.index("message.received") < types.index("ticket.created")
    assert "consent.changed" in types
    # Minimisation by default: no text, no phone number, anywhere in what was sent.
    raw = b"".join(e.raw for e in crm.events)
    assert b"serratura" not in raw and RESIDENT.encode() not in raw
    assert RESIDENT.lstrip("+").encode() not in raw


def test_the_text_and_the_number_go_only_when_the_office_turns_them_on(
    client, svc, crm, dispatcher
):
    tenant = make_tenant(svc, webhooks={"include_text": True, "include_phone": True})
    made = add(svc, tenant, crm.url, "message.received")
    consented(client, svc)
    send_inbound(client, "il citofono non funziona")
    drain(svc)

    with signing_with(crm, made.secret):
        dispatcher.deliver_due()

    last = crm.events[-1].body["data"]
    assert last["text"] == "il citofono non funziona" and last["phone"] == RESIDENT
    with svc.db.read() as session:
        stored = session.scalars(select(WebhookEvent).order_by(WebhookEvent.id.desc())).first()
    assert stored is not None and "text" not in stored.data  # kept apart, encrypted
    assert stored.private is not None and b"citofono" not in stored.private


def test_a_photo_never_reaches_the_crm_even_with_the_text_turned_on(
    client, svc, crm, dispatcher, twilio
):
    tenant = make_tenant(svc, webhooks={"include_text": True, "include_phone": True})
    made = add(svc, tenant, crm.url, "message.received")
    consented(client, svc)
    photo = b"\x89PNG la crepa nel muro"
    url = twilio.add_media(photo, "image/png")
    send_inbound(client, "la crepa", NumMedia="1", MediaUrl0=url, MediaContentType0="image/png")
    drain(svc)

    with signing_with(crm, made.secret):
        dispatcher.deliver_due()

    last = crm.events[-1]
    assert last.body["data"]["text"] == "la crepa"  # the text, as the office asked
    assert url.encode() not in last.raw and photo not in last.raw
    assert not any("media" in key for key in last.body["data"])


def test_an_emergency_and_its_takeover_reach_the_crm(
    client, svc, tenant, crm, endpoint, dispatcher
):
    consented(client, svc)
    send_inbound(client, "c'è una forte puzza di gas in cantina")
    drain(svc)
    admin = make_user(svc, tenant, "admin@studio.it", "admin")
    login(client, admin.email)
    with svc.db.read() as session:
        thread_id = session.scalar(select(WebhookEvent.conversation_id).limit(1))
    post_form(client, f"/console/conversations/{thread_id}/takeover")

    dispatcher.deliver_due()

    by_type = {e.body["type"]: e.body["data"] for e in crm.events}
    assert by_type["emergency.opened"]["hazard"] == "gas_smell"
    assert by_type["conversation.needs_attention"]["reason"] == "emergency"
    assert by_type["conversation.acknowledged"]["user_id"] == admin.id


def test_a_status_callback_reaches_the_crm_as_message_status(
    client, svc, tenant, crm, endpoint, dispatcher, twilio
):
    consented(client, svc)
    sid = twilio.messages[-1]["sid"]
    params = {"MessageSid": sid, "MessageStatus": "delivered", "From": f"whatsapp:{OFFICE_NUMBER}"}

    assert post_signed(client, "/webhooks/twilio/status", params).status_code == 204
    dispatcher.deliver_due()

    statuses = [e.body["data"] for e in crm.events if e.body["type"] == "message.status"]
    assert [s["status"] for s in statuses] == ["delivered"]


def test_a_ticket_status_change_in_the_console_reaches_the_crm(
    svc, tenant, crm, endpoint, dispatcher
):
    admin = make_user(svc, tenant, "admin@studio.it", "admin")
    with svc.db.session() as session:
        ticket = Ticket(tenant_id=tenant.id, kind="guasto", status="open", entities=[])
        session.add(ticket)
    who = Actor(admin.id, tenant.id, "admin")
    with svc.db.session() as session:
        change_ticket_status(session, who, ticket.id, "in_progress", utcnow())

    dispatcher.deliver_due()

    [event] = crm.events
    assert event.body["type"] == "ticket.updated"
    assert event.body["data"]["previous_status"] == "open"
    assert event.body["data"]["status"] == "in_progress"


def test_a_change_rolled_back_sends_nothing(svc, tenant, crm, endpoint, dispatcher):
    with pytest.raises(RuntimeError), svc.db.session() as session:
        record_event(session, tenant.id, WebhookEventType.TICKET_UPDATED, {"ticket_id": 1})
        raise RuntimeError("the change fails after the event was written")

    dispatcher.deliver_due()

    assert deliveries(svc) == [] and crm.events == []


def test_an_endpoint_receives_only_the_types_it_asked_for(svc, tenant, crm, dispatcher):
    made = add(svc, tenant, crm.url, "consent.changed")
    emit(svc, tenant)  # ticket.updated
    with svc.db.session() as session:
        record_event(session, tenant.id, WebhookEventType.CONSENT_CHANGED, {"contact_id": 1})

    with signing_with(crm, made.secret):
        dispatcher.deliver_due()

    assert [e.body["type"] for e in crm.events] == ["consent.changed"]


# -- delivery: retries, at least once, order ---------------------------------------------------


@BOTH
def test_a_crm_failing_twice_gets_the_event_once_more_with_the_same_id(
    svc, tenant, crm, endpoint, worker_thread
):
    crm.fail_next(500, count=2)

    emit(svc, tenant)

    [event] = crm.wait_for_events(1)
    failed_ids = {json.loads(f.raw)["id"] for f in crm.failures}
    assert len(crm.failures) == 2 and failed_ids == {event.id}
    time.sleep(0.3)  # nothing more arrives
    assert len(crm.events) == 1
    [delivery] = wait_until(lambda: [d for d in deliveries(svc) if d.status == "delivered"])
    assert delivery.attempts == 3 and delivery.last_status_code == 200
    assert delivery.latency_ms is not None and delivery.last_error is None


@pytest.mark.parametrize(
    "app_config_extra",
    [{"CRM_TIMEOUT_SECONDS": 0.3, "CRM_BACKOFF_SECONDS": 0.5, "CRM_BACKOFF_MAX_SECONDS": 0.5}],
    indirect=True,
)
def test_a_crm_answering_too_late_gets_the_event_again(svc, tenant, crm, endpoint, dispatcher):
    crm.delay_next(1.5)
    emit(svc, tenant)
    dispatcher.deliver_due()
    [first] = deliveries(svc)
    assert first.status == "pending" and first.last_error == "timeout"
    time.sleep(0.6)

    dispatcher.deliver_due()

    assert crm.duplicates == 1  # at least once: the receiver dedupes on the id
    assert deliveries(svc)[0].status == "delivered"


def test_backoff_doubles_up_to_its_cap_and_stops_at_the_window():
    assert [backoff(n, 10, 60) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]
    start = utcnow()
    assert next_attempt(1, start, start, 3600, 10, 60) == start + timedelta(seconds=10)
    near_end = start + timedelta(seconds=3595)
    assert next_attempt(9, near_end, start, 3600, 10, 60) == start + timedelta(seconds=3600)
    assert next_attempt(10, start + timedelta(seconds=3600), start, 3600, 10, 60) is None


def test_the_default_schedule_retries_for_about_a_day():
    at, start, attempts = utcnow(), utcnow(), 0
    while True:
        attempts += 1
        following = next_attempt(attempts, at, start, 24 * 3600, 10, 3600)
        if following is None:
            break
        at = following
    assert at - start == timedelta(hours=24) and 25 <= attempts <= 40


@BOTH
def test_a_conversations_events_arrive_in_order_even_when_one_is_retried(
    svc, tenant, crm, endpoint, worker_thread
):
    thread = make_conversation(svc, tenant)
    crm.fail_next(503, count=2)  # the first event of the conversation is retried

    emit(svc, tenant, n=5, conversation_id=thread.id)

    events = crm.wait_for_events(5)
    assert [e.body["data"]["ticket_id"] for e in events] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "app_config_extra", [{"CRM_BACKOFF_SECONDS": 30, "CRM_BACKOFF_MAX_SECONDS": 60}], indirect=True
)
def test_other_conversations_do_not_wait_for_a_retried_one(svc, tenant, crm, endpoint, dispatcher):
    stuck = make_conversation(svc, tenant)
    other = make_conversation(svc, tenant, make_contact(svc, tenant, "+393339998877"))
    crm.fail_next(500, count=1)
    emit(svc, tenant, n=2, conversation_id=stuck.id)
    assert dispatcher.run_once() == 1  # only the first of the stuck conversation: it fails
    emit(svc, tenant, n=1, conversation_id=other.id)

    dispatcher.deliver_due()

    received = [(e.body["data"]["ticket_id"]) for e in crm.events]
    assert received == [0] and len(crm.failures) == 1  # the other conversation's went
    pending = [d for d in deliveries(svc) if d.status == "pending"]
    assert {d.conversation_id for d in pending} == {stuck.id}


@BOTH
def test_another_offices_events_are_not_delivered_to_this_office(
    svc, tenant, crm, endpoint, dispatcher
):
    other = make_tenant(svc, slug="studio-bianchi", number=OTHER_NUMBER)
    emit(svc, other, n=3)

    dispatcher.deliver_due()

    assert crm.events == [] and crm.refusals == [] and deliveries(svc) == []


def test_each_office_receives_only_its_own_events(svc, tenant, crm, dispatcher):
    ours = add(svc, tenant, crm.url)
    other = make_tenant(svc, slug="studio-bianchi", number=OTHER_NUMBER)
    theirs = add(svc, other, crm.url)

    emit(svc, tenant, n=2)
    emit(svc, other, n=1)
    with signing_with(crm, ours.secret):
        dispatcher.deliver_due()

    # Only our deliveries verify under our secret; theirs are refused by this receiver.
    assert {e.body["tenant"] for e in crm.events} == {tenant.slug} and len(crm.events) == 2
    assert crm.refusals and {json.loads(r.raw)["tenant"] for r in crm.refusals} == {other.slug}
    assert theirs.endpoint.id != ours.endpoint.id


# -- an endpoint down for the whole window ---------------------------------------------------


@BOTH
@pytest.mark.parametrize("app_config_extra", [{"CRM_RETRY_WINDOW_SECONDS": 1.0}], indirect=True)
def test_an_endpoint_down_for_the_whole_window_is_disabled_and_the_admin_told(
    client, svc, tenant, crm, endpoint, worker_thread
):
    admin = make_user(svc, tenant, "admin@studio.it", "admin")
    operator = make_user(svc, tenant, "op@studio.it", "operator")
    live = {
        user.id: svc.notifier.read((user_channel(user.id),), None) for user in (admin, operator)
    }
    crm.down()
    emit(svc, tenant)

    disabled = wait_until(lambda: _endpoint_row(svc).disabled_at, timeout=15)

    assert disabled is not None
    assert wait_until(lambda: deliveries(svc)[0].status == "failed")
    assert "webhook.disabled" in audit_actions(svc, tenant)
    heard = {
        user_id: [
            e["event"] for e in svc.notifier.read((user_channel(user_id),), now.cursor).events
        ]
        for user_id, now in live.items()
    }
    assert heard == {admin.id: ["webhook.disabled"], operator.id: []}
    login(client, admin.email)
    page = client.get("/console/admin/webhooks").get_data(as_text=True)
    assert "è stato disattivato" in page
    inbox = client.get("/console/").get_data(as_text=True)
    assert 'id="menu-webhooks"' in inbox and "disattivato" in inbox


@pytest.mark.parametrize("app_config_extra", [{"CRM_RETRY_WINDOW_SECONDS": 0.5}], indirect=True)
def test_a_disabled_endpoint_keeps_its_events_and_gets_them_once_enabled(
    runner, svc, tenant, crm, endpoint, dispatcher
):
    crm.down()
    emit(svc, tenant)
    wait_until(lambda: dispatcher.deliver_due() is not None and _endpoint_row(svc).disabled_at)
    emit(svc, tenant)  # recorded while disabled
    crm.up()
    dispatcher.deliver_due()
    assert crm.events == []

    result = runner.invoke(
        args=["webhooks", "enable", "--tenant", tenant.slug, "--id", str(endpoint.endpoint.id)]
    )
    dispatcher.deliver_due()

    assert result.exit_code == 0, result.output
    assert len(crm.events) == 1  # the one written while disabled; the first was given up
    assert "webhook.enable" in audit_actions(svc, tenant)


def _endpoint_row(svc: Services) -> WebhookEndpoint:
    with svc.db.read() as session:
        row = session.scalar(select(WebhookEndpoint))
    assert row is not None
    return row


# -- secret rotation ------------------------------------------------------------------------


@BOTH
def test_during_a_rotation_both_secrets_verify_and_after_it_only_the_new(
    svc, tenant, crm, endpoint, dispatcher
):
    old = endpoint.secret
    rotated = rotate_secret(svc, tenant.id, endpoint.endpoint.id, 1.0, by=BY)

    with signing_with(crm, old):
        emit(svc, tenant)
        dispatcher.deliver_due()
    with signing_with(crm, rotated.secret):
        emit(svc, tenant)
        dispatcher.deliver_due()
    during = crm.events
    assert len(during) == 2 and crm.refusals == []
    assert during[0].headers["Portineria-Signature"].count("v1=") == 2

    with svc.db.session() as session:  # the overlap is over
        session.execute(
            update(WebhookEndpoint).values(previous_secret_until=utcnow() - timedelta(seconds=1))
        )
    crm.reset()
    with signing_with(crm, old):
        emit(svc, tenant)
        dispatcher.deliver_due()
    assert crm.events == [] and crm.refusals  # the old secret alone no longer verifies
    with signing_with(crm, rotated.secret):
        wait_until(lambda: dispatcher.deliver_due() is not None and crm.events, timeout=5)
    assert crm.events[0].headers["Portineria-Signature"].count("v1=") == 1


def test_cli_rotates_a_secret_and_prints_the_new_one_last(runner, svc, tenant, endpoint):
    result = runner.invoke(
        args=[
            "webhooks", "rotate-secret", "--tenant", tenant.slug,
            "--id", str(endpoint.endpoint.id), "--overlap-hours", "2",
        ]
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    secret = result.output.strip().splitlines()[-1]
    assert secret.startswith("whsec_") and secret != endpoint.secret
    assert _endpoint_row(svc).previous_secret_until is not None


# -- the log, the API, replays -----------------------------------------------------------------


@BOTH
def test_the_delivery_log_pages_through_the_api_and_shows_only_this_office(
    client, svc, tenant, crm, endpoint, dispatcher
):
    emit(svc, tenant, n=5)
    other = make_tenant(svc, slug="studio-bianchi", number=OTHER_NUMBER)
    add(svc, other, crm.url)
    emit(svc, other, n=2)
    dispatcher.deliver_due()
    with svc.db.session() as session:
        token = create_token(session, tenant, "crm")

    seen, cursor = [], None
    for _ in range(10):
        query = {"limit": "2", **({"after": cursor} if cursor else {})}
        answer = client.get(
            "/api/v1/webhook-deliveries",
            query_string=query,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200, answer.get_json()
        page = answer.get_json()
        seen += page["deliveries"]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    ours = [d.id for d in deliveries(svc) if d.tenant_id == tenant.id]
    assert [d["id"] for d in seen] == ours
    assert {d["status"] for d in seen} == {"delivered"} and all(d["attempts"] == 1 for d in seen)
    assert all(d["event_id"].startswith("evt_") and d["latency_ms"] is not None for d in seen)
    bad = client.get(
        "/api/v1/webhook-deliveries?status=lost", headers={"Authorization": f"Bearer {token}"}
    )
    assert bad.status_code == 400


def test_replaying_one_event_delivers_it_again_with_the_same_id(
    runner, svc, tenant, crm, endpoint, dispatcher
):
    emit(svc, tenant)
    dispatcher.deliver_due()
    [first] = crm.events

    result = runner.invoke(
        args=["webhooks", "replay", "--tenant", tenant.slug, "--event", first.id]
    )
    dispatcher.deliver_due()

    assert result.exit_code == 0, result.output
    assert [e.id for e in crm.events] == [first.id, first.id]
    assert [d.replay for d in deliveries(svc)] == [False, True]
    assert "webhook.replay" in audit_actions(svc, tenant)


def test_replaying_a_time_range_delivers_the_events_of_that_range(
    runner, svc, tenant, crm, endpoint, dispatcher
):
    emit(svc, tenant, n=2)
    with svc.db.session() as session:  # two events of yesterday
        session.execute(update(WebhookEvent).values(created_at=utcnow() - timedelta(days=1)))
    emit(svc, tenant, n=1)
    dispatcher.deliver_due()
    crm.reset()
    since = (utcnow() - timedelta(hours=1)).isoformat()

    result = runner.invoke(args=["webhooks", "replay", "--tenant", tenant.slug, "--since", since])
    dispatcher.deliver_due()

    assert result.exit_code == 0 and "1 deliveries" in result.output
    assert [e.body["data"]["ticket_id"] for e in crm.events] == [0]


def test_the_console_adds_an_endpoint_shows_the_secret_once_and_replays(
    client, svc, tenant, crm, dispatcher
):
    admin = make_user(svc, tenant, "admin@studio.it", "admin")
    login(client, admin.email)
    page = client.post(
        "/console/admin/webhooks",
        data={
            "csrf_token": _csrf(client, "/console/admin/webhooks"),
            "url": crm.url,
            "allow_loopback": "1",
            "events": ["ticket.updated"],
        },
    )
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    secret = re.search(r'id="new-secret">([^<]+)<', html).group(1)
    endpoint_id = _endpoint_row(svc).id
    assert secret not in client.get(f"/console/admin/webhooks/{endpoint_id}").get_data(as_text=True)

    with signing_with(crm, secret):
        emit(svc, tenant)
        dispatcher.deliver_due()
        log = client.get(f"/console/admin/webhooks/{endpoint_id}").get_data(as_text=True)
        assert "ticket.updated" in log and "consegnato" in log
        replayed = post_form(
            client,
            f"/console/admin/webhooks/{endpoint_id}/replay",
            {"event": crm.events[0].id},
            page=f"/console/admin/webhooks/{endpoint_id}",
        )
        dispatcher.deliver_due()

    assert "Reinvio in coda: 1" in replayed.get_data(as_text=True)
    assert len(crm.events) == 2 and crm.duplicates == 1


def test_the_console_refuses_a_private_address_and_operators(client, svc, tenant):
    admin = make_user(svc, tenant, "admin@studio.it", "admin")
    operator = make_user(svc, tenant, "op@studio.it", "operator")
    login(client, admin.email)
    refused = client.post(
        "/console/admin/webhooks",
        data={"csrf_token": _csrf(client, "/console/admin/webhooks"), "url": "https://10.0.0.2/x"},
    )
    assert refused.status_code == 422 and "privato" in refused.get_data(as_text=True)
    no_token = client.post("/console/admin/webhooks", data={"url": "https://crm.example.it/x"})
    assert no_token.status_code == 400  # CSRF

    other = client.application.test_client()
    login(other, operator.email)
    assert other.get("/console/admin/webhooks").status_code == 403


def test_the_console_does_not_show_another_offices_endpoint(client, svc, tenant, crm):
    other = make_tenant(svc, slug="studio-bianchi", number=OTHER_NUMBER)
    theirs = add(svc, other, crm.url)
    admin = make_user(svc, tenant, "admin@studio.it", "admin")
    login(client, admin.email)

    assert client.get(f"/console/admin/webhooks/{theirs.endpoint.id}").status_code == 404


def _csrf(client: Any, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


# -- retention, erasure, the register --------------------------------------------------------


def test_erasure_deletes_the_contacts_events_and_tells_the_crm(
    client, svc, tenant, crm, endpoint, dispatcher
):
    crm.down()  # nothing delivered yet: the events wait in the outbox
    consented(client, svc)
    assert deliveries(svc)

    erase_contact(svc, tenant, RESIDENT, actor="test")
    crm.up()
    dispatcher.deliver_due()

    assert [e.body["type"] for e in crm.events] == ["contact.erased"]
    with svc.db.read() as session:
        left = session.scalars(select(WebhookEvent)).all()
    assert [e.type for e in left] == ["contact.erased"] and left[0].private is None


def test_the_purge_removes_events_past_the_offices_term(svc, tenant, crm, endpoint, dispatcher):
    emit(svc, tenant, n=2)
    dispatcher.deliver_due()
    with svc.db.session() as session:
        session.execute(update(WebhookEvent).values(created_at=utcnow() - timedelta(days=31)))
    emit(svc, tenant, n=1)

    [report] = purge(svc, utcnow())

    assert report.removed["webhook_events"] == 2
    assert len(deliveries(svc)) == 1


def test_the_register_lists_the_crm_endpoints_hosts_as_recipients(svc, tenant, crm):
    from bot.privacy.register import processing_register

    assert "crm_webhooks" not in _recipients(processing_register(svc, tenant, utcnow()))
    add(svc, tenant, crm.url)

    register = processing_register(svc, tenant, utcnow())
    [recipient] = [
        r for a in register["activities"] for r in a["recipients"] if r["id"] == "crm_webhooks"
    ][:1]
    assert recipient["hosts"] == ["127.0.0.1"]
    assert "senza il testo dei messaggi" in recipient["description"]
    assert register["retention_terms"]["webhook_days"] == 30


def _recipients(register: dict[str, Any]) -> set[str]:
    return {r["id"] for a in register["activities"] for r in a["recipients"]}
