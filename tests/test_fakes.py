"""The harness itself: each fake and local server, driven by the real SDKs."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from datetime import datetime

import pusher
import pusher.errors
import pytest
import redis
import requests
import sqlalchemy
from fake_pusher import FakePusher, sign
from fake_twilio import FakeTwilio
from servers import PostgresServer, RedisServer, free_port
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "test-auth-token"
SENDER = "whatsapp:+390212345678"
RESIDENT = "whatsapp:+393331234567"

PUSHER_APP = "4242"
PUSHER_KEY = "test-key"
PUSHER_SECRET = "test-secret"


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as fake:
        yield fake


def _twilio_client(fake: FakeTwilio, token: str = AUTH_TOKEN, timeout: float = 5.0) -> Client:
    client = Client(ACCOUNT_SID, token, http_client=TwilioHttpClient(timeout=timeout))
    client.api.base_url = fake.base_url
    return client


@pytest.fixture
def twilio_client(fake_twilio: FakeTwilio) -> Iterator[Client]:
    client = _twilio_client(fake_twilio)
    yield client
    _close_twilio(client)


def _close_twilio(client: Client) -> None:
    session = getattr(client.http_client, "session", None)
    if session is not None:
        session.close()


@pytest.fixture
def fake_pusher() -> Iterator[FakePusher]:
    with FakePusher(PUSHER_APP, PUSHER_KEY, PUSHER_SECRET) as fake:
        yield fake


def _pusher_client(fake: FakePusher, secret: str = PUSHER_SECRET) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=fake.app_id,
        key=fake.key,
        secret=secret,
        host=fake.host,
        port=fake.port,
        ssl=False,
        timeout=5,
    )


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


# ------------------------------------------------------------------ Twilio


def test_twilio_sdk_create_reaches_fake(fake_twilio: FakeTwilio, twilio_client: Client) -> None:
    message = twilio_client.messages.create(
        to=RESIDENT,
        from_=SENDER,
        body="Buongiorno",
        status_callback="https://example.test/webhooks/twilio/status",
    )

    assert message.sid is not None and message.sid.startswith("SM") and len(message.sid) == 34
    assert message.status == "queued"
    assert (message.to, message.from_, message.body) == (RESIDENT, SENDER, "Buongiorno")
    assert message.account_sid == ACCOUNT_SID
    assert isinstance(message.date_created, datetime)
    assert message.uri == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message.sid}.json"
    [record] = fake_twilio.wait_for_messages(1)
    assert record == {
        "To": RESIDENT,
        "From": SENDER,
        "Body": "Buongiorno",
        "StatusCallback": "https://example.test/webhooks/twilio/status",
        "sid": message.sid,
    }


def test_twilio_template_and_media_fields_are_recorded(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    variables = json.dumps({"1": "Mario", "2": "lunedì"})
    message = twilio_client.messages.create(
        to=RESIDENT,
        from_=SENDER,
        content_sid="HX" + "a" * 32,
        content_variables=variables,
        media_url=["https://example.test/a.pdf", "https://example.test/b.jpg"],
    )

    [record] = fake_twilio.messages
    assert record["ContentSid"] == "HX" + "a" * 32
    assert json.loads(record["ContentVariables"]) == {"1": "Mario", "2": "lunedì"}
    assert record["MediaUrl"] == ["https://example.test/a.pdf", "https://example.test/b.jpg"]
    assert message.num_media == "2"


def test_twilio_fetch_and_list_messages(fake_twilio: FakeTwilio, twilio_client: Client) -> None:
    first = twilio_client.messages.create(to=RESIDENT, from_=SENDER, body="uno")
    twilio_client.messages.create(to="whatsapp:+393330000000", from_=SENDER, body="due")
    fake_twilio.set_status(first.sid, "delivered")

    fetched = twilio_client.messages(first.sid).fetch()
    listed = twilio_client.messages.list(to=RESIDENT)

    assert (fetched.sid, fetched.status, fetched.body) == (first.sid, "delivered", "uno")
    assert [m.sid for m in listed] == [first.sid]
    assert len(twilio_client.messages.list()) == 2


def test_twilio_fetch_unknown_message_is_404(twilio_client: Client) -> None:
    with pytest.raises(TwilioRestException) as caught:
        twilio_client.messages("SM" + "f" * 32).fetch()
    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_twilio_429_raises_and_records_nothing(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    fake_twilio.fail_next(429)

    with pytest.raises(TwilioRestException) as caught:
        twilio_client.messages.create(to=RESIDENT, from_=SENDER, body="ciao")

    assert (caught.value.status, caught.value.code) == (429, 20429)
    assert fake_twilio.messages == []
    assert fake_twilio.create_attempts == 1
    twilio_client.messages.create(to=RESIDENT, from_=SENDER, body="ciao")
    assert len(fake_twilio.messages) == 1


@pytest.mark.parametrize("code", [21610, 63016, 63014])
def test_twilio_business_errors_carry_their_code(
    fake_twilio: FakeTwilio, twilio_client: Client, code: int
) -> None:
    fake_twilio.fail_next(400, code=code)

    with pytest.raises(TwilioRestException) as caught:
        twilio_client.messages.create(to=RESIDENT, from_=SENDER, body="ciao")

    assert (caught.value.status, caught.value.code) == (400, code)
    assert fake_twilio.messages == []


def test_twilio_fail_next_count_fails_that_many(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    fake_twilio.fail_next(500, count=2)
    statuses = []
    for _ in range(3):
        try:
            twilio_client.messages.create(to=RESIDENT, from_=SENDER, body="x")
            statuses.append(201)
        except TwilioRestException as exc:
            statuses.append(exc.status)
    assert statuses == [500, 500, 201]


def test_twilio_wrong_credentials_are_401(fake_twilio: FakeTwilio) -> None:
    client = _twilio_client(fake_twilio, token="wrong-token")
    try:
        with pytest.raises(TwilioRestException) as caught:
            client.messages.create(to=RESIDENT, from_=SENDER, body="ciao")
    finally:
        _close_twilio(client)

    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert fake_twilio.messages == [] and fake_twilio.create_attempts == 0


def test_twilio_validation_like_twilio(twilio_client: Client) -> None:
    with pytest.raises(TwilioRestException) as caught:
        twilio_client.messages.create(to=RESIDENT, from_=SENDER)
    assert (caught.value.status, caught.value.code) == (400, 21602)


def test_twilio_delay_next_times_out_client_but_records(fake_twilio: FakeTwilio) -> None:
    fake_twilio.delay_next(1.0)
    client = _twilio_client(fake_twilio, timeout=0.3)
    try:
        with pytest.raises(requests.exceptions.Timeout):
            client.messages.create(to=RESIDENT, from_=SENDER, body="lento")
    finally:
        _close_twilio(client)
    assert len(fake_twilio.wait_for_messages(1, timeout=3.0)) == 1


def test_twilio_media_download_requires_auth(fake_twilio: FakeTwilio) -> None:
    content = b"%PDF-1.4 fake"
    url = fake_twilio.add_media(content, "application/pdf")

    with requests.Session() as session:
        anonymous = session.get(url, timeout=5)
        wrong = session.get(url, auth=(ACCOUNT_SID, "nope"), timeout=5)
        ok = session.get(url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5)

    assert (anonymous.status_code, wrong.status_code) == (401, 401)
    assert ok.status_code == 200 and ok.content == content
    assert ok.headers["Content-Type"] == "application/pdf"
    assert ok.headers["Content-Length"] == str(len(content))
    assert "/Messages/MM" in url and "/Media/ME" in url
    assert (fake_twilio.media_requests, fake_twilio.media_denied) == (1, 2)


def test_twilio_close_cuts_keepalive_and_restart_reuses_port(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    twilio_client.messages.create(to=RESIDENT, from_=SENDER, body="uno")
    base_url = fake_twilio.base_url

    fake_twilio.close()
    with pytest.raises(requests.exceptions.ConnectionError):
        twilio_client.messages.create(to=RESIDENT, from_=SENDER, body="giù")
    fake_twilio.start()
    twilio_client.messages.create(to=RESIDENT, from_=SENDER, body="due")

    assert fake_twilio.base_url == base_url
    assert [m["Body"] for m in fake_twilio.messages] == ["uno", "due"]


def test_twilio_wait_for_messages_times_out(fake_twilio: FakeTwilio) -> None:
    with pytest.raises(TimeoutError):
        fake_twilio.wait_for_messages(1, timeout=0.05)


# ------------------------------------------------------------------ Pusher


def test_pusher_trigger_is_recorded(fake_pusher: FakePusher) -> None:
    client = _pusher_client(fake_pusher)

    client.trigger(["private-ops", "private-admin"], "ticket.created", {"id": 7}, "123.456")
    client.trigger_batch([{"channel": "private-ops", "name": "handoff", "data": {"c": 1}}])

    first, second = fake_pusher.wait_for_events(2)
    assert first["channels"] == ["private-ops", "private-admin"]
    assert (first["name"], first["data"]) == ("ticket.created", {"id": 7})
    assert first["socket_id"] == "123.456"
    assert (second["channels"], second["name"]) == (["private-ops"], "handoff")
    assert second["data"] == {"c": 1}


def test_pusher_wrong_secret_is_rejected(fake_pusher: FakePusher) -> None:
    client = _pusher_client(fake_pusher, secret="not-the-secret")

    with pytest.raises(pusher.errors.PusherBadAuth):
        client.trigger("private-ops", "ticket.created", {"id": 7})

    assert fake_pusher.events == [] and fake_pusher.rejected == 1


def _signed_post(fake: FakePusher, body: bytes, timestamp: int, secret: str) -> requests.Response:
    path = f"/apps/{fake.app_id}/events"
    params = {
        "auth_key": fake.key,
        "auth_timestamp": str(timestamp),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),  # noqa: S324 - Pusher's protocol
    }
    params["auth_signature"] = sign(secret, "POST", path, params)
    return requests.post(
        fake.base_url + path,
        params=params,
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=5,
    )


def test_pusher_checks_timestamp_and_body_md5(fake_pusher: FakePusher) -> None:
    body = json.dumps({"name": "e", "channels": ["c"], "data": "{}"}).encode()
    now = int(time.time())

    assert _signed_post(fake_pusher, body, now, PUSHER_SECRET).status_code == 200
    assert _signed_post(fake_pusher, body, now - 3600, PUSHER_SECRET).status_code == 401
    path = f"/apps/{fake_pusher.app_id}/events"
    params = {
        "auth_key": PUSHER_KEY,
        "auth_timestamp": str(now),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(b"other").hexdigest(),
    }  # noqa: S324
    params["auth_signature"] = sign(PUSHER_SECRET, "POST", path, params)
    tampered = requests.post(fake_pusher.base_url + path, params=params, data=body, timeout=5)
    assert tampered.status_code == 401
    assert len(fake_pusher.events) == 1


def test_pusher_fail_next_simulates_outage(fake_pusher: FakePusher) -> None:
    fake_pusher.fail_next(503)
    client = _pusher_client(fake_pusher)

    with pytest.raises(pusher.errors.PusherBadStatus):
        client.trigger("private-ops", "x", {})
    client.trigger("private-ops", "x", {})

    assert len(fake_pusher.events) == 1


# ------------------------------------------------------------------ Redis


def test_redis_stop_and_start_on_same_port(redis_server: RedisServer) -> None:
    connection = redis.Redis.from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    try:
        assert connection.ping()
        redis_server.stop()
        assert not redis_server.ping()
        with pytest.raises(redis.exceptions.ConnectionError):
            connection.ping()
        redis_server.start()
        assert connection.ping()
        connection.set("k", "v")
        redis_server.flushall()
        assert connection.get("k") is None
    finally:
        connection.close()
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# ------------------------------------------------------------------ PostgreSQL


@pytest.mark.skipif(not PostgresServer.available(), reason="PostgreSQL binaries not available")
def test_postgres_select_one_via_sqlalchemy() -> None:
    with PostgresServer() as server:
        assert server.url.startswith("postgresql+psycopg://portineria@127.0.0.1:")
        engine = sqlalchemy.create_engine(server.url)
        try:
            with engine.connect() as connection:
                assert connection.execute(sqlalchemy.text("SELECT 1")).scalar_one() == 1
                user = connection.execute(sqlalchemy.text("SELECT current_user")).scalar_one()
                assert user == server.user
        finally:
            engine.dispose()
