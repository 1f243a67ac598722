"""The harness itself: each fake and local server, driven by the real SDKs."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import http_ece
import pusher
import pusher.errors
import pytest
import pywebpush
import redis
import requests
import sqlalchemy
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fake_crm import FakeCrmReceiver
from fake_pusher import FakePusher, sign
from fake_twilio import FakeTwilio
from fake_twilio_voice import TwimlError, twilio_signature
from fake_webpush import FakePushService, b64url_decode, b64url_encode
from flask import Flask
from flask import request as flask_request
from py_vapid import Vapid, Vapid01, VapidException
from servers import PostgresServer, RedisServer, WsgiServer, free_port
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Request as WerkzeugRequest
from werkzeug.wrappers import Response as WerkzeugResponse

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "test-auth-token"
SENDER = "whatsapp:+390212345678"
RESIDENT = "whatsapp:+393331234567"
OTHER = "whatsapp:+393330000000"
OTHER_SENDER = "whatsapp:+390299999999"

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


# ------------------------------------------------------------------ Twilio: load


def test_twilio_latency_does_not_serialise_and_records_receive_time() -> None:
    latency, senders = 0.4, 6
    with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, latency=latency) as fake:
        answered: dict[str, float] = {}
        errors: list[BaseException] = []

        def send(body: str) -> None:
            client = _twilio_client(fake)
            try:
                client.messages.create(to=RESIDENT, from_=SENDER, body=body)
                answered[body] = time.monotonic()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                _close_twilio(client)

        started = time.monotonic()
        threads = [threading.Thread(target=send, args=(f"n{i}",)) for i in range(senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        elapsed = time.monotonic() - started

        assert errors == [] and len(answered) == senders
        assert latency <= elapsed < latency * senders / 2  # concurrent, not one after another
        sends = fake.sends
        assert sorted(s.body for s in sends) == sorted(answered)
        for record in sends:
            # Stamped on arrival: `latency` before its answer reached the client.
            assert record.received_monotonic <= answered[record.body] - latency
            assert abs(record.received_at - time.time()) < 10
        assert [s.index for s in sends] == list(range(senders))


def test_twilio_latency_is_a_settable_attribute(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    fake_twilio.latency = 0.3
    started = time.monotonic()
    twilio_client.messages.create(to=RESIDENT, from_=SENDER, body="lento")
    assert time.monotonic() - started >= 0.3
    fake_twilio.latency = 0.0
    started = time.monotonic()
    twilio_client.messages.create(to=RESIDENT, from_=SENDER, body="svelto")
    assert time.monotonic() - started < 0.3


def test_twilio_rate_cap_answers_429_and_records_nothing(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    fake_twilio.max_per_second = 3
    outcomes = []
    for i in range(5):
        try:
            twilio_client.messages.create(to=RESIDENT, from_=SENDER, body=f"n{i}")
            outcomes.append(201)
        except TwilioRestException as exc:
            outcomes.append((exc.status, exc.code))

    assert outcomes == [201, 201, 201, (429, 20429), (429, 20429)]
    assert [m["Body"] for m in fake_twilio.messages] == ["n0", "n1", "n2"]
    assert (fake_twilio.rate_limited, fake_twilio.create_attempts) == (2, 5)
    time.sleep(1.05)  # the window has moved on
    twilio_client.messages.create(to=RESIDENT, from_=SENDER, body="dopo")
    assert len(fake_twilio.messages) == 4


def test_twilio_rate_limit_error_body_is_twilios(fake_twilio: FakeTwilio) -> None:
    fake_twilio.max_per_second = 0
    answer = requests.post(
        f"{fake_twilio.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        data={"To": RESIDENT, "From": SENDER, "Body": "x"},
        auth=(ACCOUNT_SID, AUTH_TOKEN),
        timeout=5,
    )
    assert answer.status_code == 429
    assert answer.json() == {
        "code": 20429,
        "message": "Too Many Requests",
        "more_info": "https://www.twilio.com/docs/errors/20429",
        "status": 429,
    }


# ------------------------------------------------------------------ Twilio: list


def test_twilio_list_pages_newest_first_with_filters(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    sids = [
        twilio_client.messages.create(to=RESIDENT, from_=SENDER, body=f"n{i}").sid for i in range(7)
    ]
    twilio_client.messages.create(to=OTHER, from_=SENDER, body="altro")
    twilio_client.messages.create(to=RESIDENT, from_=OTHER_SENDER, body="altro mittente")

    listed = twilio_client.messages.list(to=RESIDENT, from_=SENDER, page_size=3)
    streamed = list(twilio_client.messages.stream(to=RESIDENT, from_=SENDER, limit=4))

    assert [m.sid for m in listed] == sids[::-1]
    assert [m.sid for m in streamed] == sids[::-1][:4]
    assert len(twilio_client.messages.list()) == 9
    assert len(twilio_client.messages.list(limit=2)) == 2
    assert [m.body for m in twilio_client.messages.list(from_=OTHER_SENDER)] == ["altro mittente"]


def test_twilio_list_page_json_has_twilios_shape(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    for i in range(3):
        twilio_client.messages.create(to=RESIDENT, from_=SENDER, body=f"n{i}")
    path = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    first = requests.get(
        fake_twilio.base_url + path,
        params={"To": RESIDENT, "PageSize": 2},
        auth=(ACCOUNT_SID, AUTH_TOKEN),
        timeout=5,
    ).json()

    assert set(first) == {
        "messages",
        "page",
        "page_size",
        "uri",
        "first_page_uri",
        "next_page_uri",
        "previous_page_uri",
        "start",
        "end",
    }
    assert (first["page"], first["page_size"], first["start"], first["end"]) == (0, 2, 0, 1)
    assert first["previous_page_uri"] is None
    assert first["uri"].startswith(path + "?") and first["first_page_uri"].startswith(path + "?")
    second = requests.get(
        fake_twilio.base_url + first["next_page_uri"], auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5
    ).json()
    assert (second["page"], second["start"], second["end"]) == (1, 2, 2)
    assert [m["body"] for m in first["messages"] + second["messages"]] == ["n2", "n1", "n0"]
    assert second["next_page_uri"] is None and second["previous_page_uri"] is not None


def test_twilio_list_next_page_is_stable_when_messages_arrive(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    for i in range(4):
        twilio_client.messages.create(to=RESIDENT, from_=SENDER, body=f"n{i}")
    page = twilio_client.messages.page(to=RESIDENT, page_size=2)
    twilio_client.messages.create(to=RESIDENT, from_=SENDER, body="nuovo")
    following = page.next_page()

    assert [m.body for m in page] == ["n3", "n2"]
    assert following is not None and [m.body for m in following] == ["n1", "n0"]


def test_twilio_list_date_sent_filters(fake_twilio: FakeTwilio, twilio_client: Client) -> None:
    old = twilio_client.messages.create(to=RESIDENT, from_=SENDER, body="vecchio")
    new = twilio_client.messages.create(to=RESIDENT, from_=SENDER, body="nuovo")
    now = datetime.now(UTC).replace(microsecond=0)
    fake_twilio.set_date_sent(old.sid, now - timedelta(days=3))

    def bodies(**filters: object) -> list[str]:
        return [m.body for m in twilio_client.messages.list(to=RESIDENT, **filters)]

    assert bodies(date_sent_after=now - timedelta(minutes=5)) == ["nuovo"]
    assert bodies(date_sent_before=now - timedelta(days=1)) == ["vecchio"]
    assert bodies(date_sent_after=now - timedelta(days=4), date_sent_before=now) == [
        "nuovo",
        "vecchio",
    ]
    assert bodies(date_sent=now - timedelta(days=3)) == ["vecchio"]  # that exact second
    assert bodies(date_sent=(now - timedelta(days=3)).date().isoformat()) == ["vecchio"]
    assert bodies(date_sent_after=now + timedelta(minutes=5)) == []
    assert fake_twilio.resource(new.sid)["status"] == "sent"
    assert new.status == "queued" and new.date_sent is None  # the create answer itself


def test_twilio_unsent_messages_match_no_date_filter(fake_twilio: FakeTwilio) -> None:
    fake_twilio.mark_sent = False
    client = _twilio_client(fake_twilio)
    try:
        created = client.messages.create(to=RESIDENT, from_=SENDER, body="in coda")
        since = datetime.now(UTC) - timedelta(hours=1)
        assert client.messages.list(to=RESIDENT, date_sent_after=since) == []
        assert [m.sid for m in client.messages.list(to=RESIDENT)] == [created.sid]
        fake_twilio.set_status(created.sid, "delivered")
        assert [m.sid for m in client.messages.list(date_sent_after=since)] == [created.sid]
    finally:
        _close_twilio(client)


# ------------------------------------------------------------------ Twilio: media redirect


def test_twilio_media_redirect_to_cdn_without_credentials(fake_twilio: FakeTwilio) -> None:
    content = b"\x89PNG fake"
    cdn = fake_twilio.add_cdn_object(content, "image/png")
    url = fake_twilio.add_media(content, "image/png", redirect_to=cdn)

    with requests.Session() as session:
        anonymous = session.get(url, allow_redirects=False, timeout=5)
        first_leg = session.get(
            url, auth=(ACCOUNT_SID, AUTH_TOKEN), allow_redirects=False, timeout=5
        )
        followed = session.get(url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5)

    assert anonymous.status_code == 401
    assert first_leg.status_code == 307 and first_leg.headers["Location"] == cdn
    assert followed.status_code == 200 and followed.content == content
    assert followed.headers["Content-Type"] == "image/png"
    assert urlsplit(cdn).port != fake_twilio.port  # another origin, as Twilio's CDN is
    assert (fake_twilio.media_requests, fake_twilio.media_redirects) == (2, 2)
    assert (fake_twilio.cdn_requests, fake_twilio.cdn_requests_with_auth) == (1, 0)


def test_twilio_cdn_counts_forwarded_credentials(fake_twilio: FakeTwilio) -> None:
    cdn = fake_twilio.add_cdn_object(b"data", "application/pdf")
    url = fake_twilio.add_media(b"data", "application/pdf", redirect_to=cdn)
    first = requests.get(url, auth=(ACCOUNT_SID, AUTH_TOKEN), allow_redirects=False, timeout=5)
    # A careless client that copies its Authorization header onto the redirect:
    leaked = requests.get(
        first.headers["Location"],
        headers={"Authorization": first.request.headers["Authorization"]},
        timeout=5,
    )
    assert leaked.status_code == 200
    assert (fake_twilio.cdn_requests, fake_twilio.cdn_requests_with_auth) == (1, 1)


# ------------------------------------------------------------------ Twilio: voice

GATHER_TWIML = (
    "<Response>"
    '<Say language="it-IT">Buongiorno, la chiamo dallo studio.</Say>'
    '<Gather action="/voice/menu" method="POST" numDigits="1">'
    '<Say language="it-IT">Prema 1 per confermare, 2 per parlare con un operatore.</Say>'
    "</Gather>"
    '<Say language="it-IT">Non ho ricevuto risposta.</Say>'
    "</Response>"
)
CALLEE = "+393331234567"
OFFICE_VOICE = "+390212345678"


def test_twilio_call_create_returns_call_resource(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    call = twilio_client.calls.create(
        to=CALLEE,
        from_=OFFICE_VOICE,
        twiml=GATHER_TWIML,
        status_callback="https://example.test/voice/status",
        timeout=20,
    )

    assert call.sid is not None and call.sid.startswith("CA") and len(call.sid) == 34
    assert (call.status, call.direction) == ("queued", "outbound-api")
    # twilio 9.x keeps the call's "from" as `_from` (`from` is a keyword).
    assert (call.to, call._from, call.account_sid) == (CALLEE, OFFICE_VOICE, ACCOUNT_SID)
    assert isinstance(call.date_created, datetime)
    assert call.uri == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{call.sid}.json"
    [record] = fake_twilio.wait_for_calls(1)
    assert record["Twiml"] == GATHER_TWIML and record["Timeout"] == "20"
    assert record["StatusCallback"] == "https://example.test/voice/status"
    assert fake_twilio.said(call.sid) == [
        "Buongiorno, la chiamo dallo studio.",
        "Prema 1 per confermare, 2 per parlare con un operatore.",
        "Non ho ricevuto risposta.",
    ]
    assert [s.language for s in fake_twilio.speech(call.sid)] == ["it-IT"] * 3


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"to": "", "from_": OFFICE_VOICE, "twiml": GATHER_TWIML}, 21201),
        ({"to": CALLEE, "from_": "", "twiml": GATHER_TWIML}, 21213),
        ({"to": CALLEE, "from_": OFFICE_VOICE}, 21205),
        ({"to": CALLEE, "from_": OFFICE_VOICE, "url": "/relative/voice"}, 21205),
    ],
)
def test_twilio_call_validation_like_twilio(
    fake_twilio: FakeTwilio, twilio_client: Client, fields: dict[str, str], code: int
) -> None:
    with pytest.raises(TwilioRestException) as caught:
        twilio_client.calls.create(**fields)
    assert (caught.value.status, caught.value.code) == (400, code)
    assert fake_twilio.calls == []


def test_twilio_press_builds_a_request_signed_like_twilio(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    call = twilio_client.calls.create(to=CALLEE, from_=OFFICE_VOICE, twiml=GATHER_TWIML)

    request = fake_twilio.press(call.sid, "1", public_base_url="https://portineria.example.it")

    assert request.url == "https://portineria.example.it/voice/menu"
    assert (request.method, request.path) == ("POST", "/voice/menu")
    assert request.params == {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "CallSid": call.sid,
        "CallStatus": "in-progress",
        "Called": CALLEE,
        "Caller": OFFICE_VOICE,
        "Digits": "1",
        "Direction": "outbound-api",
        "FinishedOnKey": "",
        "From": OFFICE_VOICE,
        "To": CALLEE,
    }
    validator = RequestValidator(AUTH_TOKEN)
    assert validator.validate(request.url, request.params, request.signature)
    assert request.headers["X-Twilio-Signature"] == request.signature
    assert not RequestValidator("other-token").validate(
        request.url, request.params, request.signature
    )
    assert twilio_client.calls(call.sid).fetch().status == "in-progress"
    # Having pressed, the callee never hears what follows the Gather.
    assert fake_twilio.said(call.sid)[-1].startswith("Prema 1")


def test_twilio_signature_matches_the_sdk() -> None:
    params = {"Digits": "12", "CallSid": "CA" + "1" * 32, "Empty": "", "Zeta": "ü"}
    url = "https://portineria.example.it/voice/menu?tenant=studio-rossi"
    ours = twilio_signature(AUTH_TOKEN, url, params)
    assert ours == RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    repeated = {"MediaUrl": ["https://b.test/2", "https://a.test/1"], "To": "x"}
    ours_repeated = twilio_signature(AUTH_TOKEN, url, repeated)
    assert ours_repeated == RequestValidator(AUTH_TOKEN).compute_signature(
        url, MultiDict([("MediaUrl", v) for v in repeated["MediaUrl"]] + [("To", "x")])
    )


def test_twilio_press_through_flask_test_client(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    public = "https://portineria.example.it"
    app = Flask("voice-under-test")
    seen: list[dict[str, str]] = []

    @app.post("/voice/menu")
    def menu() -> tuple[str, int, dict[str, str]]:
        validator = RequestValidator(AUTH_TOKEN)
        url = public + flask_request.full_path.rstrip("?")
        if not validator.validate(
            url, flask_request.form, flask_request.headers.get("X-Twilio-Signature", "")
        ):
            return "forbidden", 403, {}
        seen.append(dict(flask_request.form))
        twiml = '<Response><Say language="it-IT">Grazie, confermato.</Say></Response>'
        return twiml, 200, {"Content-Type": "text/xml"}

    call = twilio_client.calls.create(to=CALLEE, from_=OFFICE_VOICE, twiml=GATHER_TWIML)
    request = fake_twilio.press(call.sid, "1#", public_base_url=public)
    answer = app.test_client().post(request.path, data=request.params, headers=request.headers)
    fake_twilio.continue_call(call.sid, answer.get_data(as_text=True))

    assert answer.status_code == 200
    assert seen[0]["Digits"] == "1" and seen[0]["FinishedOnKey"] == ""  # numDigits=1 stops at 1
    assert fake_twilio.said(call.sid, language="it-IT")[-1] == "Grazie, confermato."
    assert fake_twilio.call(call.sid)["status"] == "completed"
    with pytest.raises(ValueError, match="completed"):
        fake_twilio.press(call.sid, "2", public_base_url=public)


def test_twilio_press_over_http_to_a_real_server(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    public = "https://portineria.example.it"
    received: list[tuple[str, dict[str, str], bool]] = []
    second_menu = (
        '<Response><Gather action="/voice/operatore" finishOnKey="*">'
        '<Say language="it-IT">Digiti il numero interno seguito da asterisco.</Say>'
        "</Gather></Response>"
    )

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        request = WerkzeugRequest(environ)
        url = public + request.full_path.rstrip("?")
        valid = RequestValidator(AUTH_TOKEN).validate(
            url, request.form, request.headers.get("X-Twilio-Signature", "")
        )
        received.append((request.path, dict(request.form), valid))
        body = second_menu if request.path == "/voice/menu" else "<Response><Hangup/></Response>"
        return WerkzeugResponse(body, content_type="text/xml")(environ, start_response)

    call = twilio_client.calls.create(to=CALLEE, from_=OFFICE_VOICE, twiml=GATHER_TWIML)
    with WsgiServer(app) as server:
        first = fake_twilio.submit(
            fake_twilio.press(call.sid, "2", public_base_url=public), base_url=server.base_url
        )
        second = fake_twilio.submit(
            fake_twilio.press(call.sid, "42*", public_base_url=public), base_url=server.base_url
        )

    assert (first.status_code, second.status_code) == (200, 200)
    assert [(path, form["Digits"], valid) for path, form, valid in received] == [
        ("/voice/menu", "2", True),
        ("/voice/operatore", "42", True),
    ]
    assert received[1][1]["FinishedOnKey"] == "*"
    assert fake_twilio.said(call.sid)[-1] == "Digiti il numero interno seguito da asterisco."
    assert fake_twilio.call(call.sid)["status"] == "completed"


def test_twilio_press_get_gather_signs_the_query(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    twiml = (
        '<Response><Gather action="https://portineria.example.it/voice/menu?lang=it" '
        'method="GET"><Say>Prema un tasto</Say></Gather></Response>'
    )
    call = twilio_client.calls.create(to=CALLEE, from_=OFFICE_VOICE, twiml=twiml)

    request = fake_twilio.press(call.sid, "3")

    assert request.method == "GET" and request.params == {}
    query = parse_qs(urlsplit(request.url).query)
    assert query["lang"] == ["it"] and query["Digits"] == ["3"]
    assert RequestValidator(AUTH_TOKEN).validate(request.url, {}, request.signature)


def test_twilio_press_needs_a_base_for_relative_actions(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    call = twilio_client.calls.create(to=CALLEE, from_=OFFICE_VOICE, twiml=GATHER_TWIML)
    with pytest.raises(ValueError, match="public_base_url"):
        fake_twilio.press(call.sid, "1")
    start_url = "https://portineria.example.it/voice/start"
    url_call = twilio_client.calls.create(to=CALLEE, from_=OFFICE_VOICE, url=start_url)
    with pytest.raises(TwimlError):
        fake_twilio.press(url_call.sid, "1")  # no document yet: the test gives it one
    relative = GATHER_TWIML.replace("/voice/menu", "menu")
    fake_twilio.set_twiml(url_call.sid, relative, url=start_url)
    assert fake_twilio.press(url_call.sid, "1").url == "https://portineria.example.it/voice/menu"


def test_twilio_call_fetch_and_hang_up(fake_twilio: FakeTwilio, twilio_client: Client) -> None:
    call = twilio_client.calls.create(to=CALLEE, from_=OFFICE_VOICE, twiml=GATHER_TWIML)
    fake_twilio.press(call.sid, "1", public_base_url="https://portineria.example.it")

    ended = twilio_client.calls(call.sid).update(status="completed")

    assert ended.status == "completed" and ended.end_time is not None
    assert twilio_client.calls(call.sid).fetch().status == "completed"
    with pytest.raises(TwilioRestException) as caught:
        twilio_client.calls(call.sid).update(twiml="<Response><Say>Ancora</Say></Response>")
    assert (caught.value.status, caught.value.code) == (400, 21220)
    with pytest.raises(TwilioRestException) as missing:
        twilio_client.calls("CA" + "0" * 32).fetch()
    assert (missing.value.status, missing.value.code) == (404, 20404)


def test_twilio_cancel_a_queued_call(fake_twilio: FakeTwilio, twilio_client: Client) -> None:
    call = twilio_client.calls.create(to=CALLEE, from_=OFFICE_VOICE, twiml=GATHER_TWIML)
    assert twilio_client.calls(call.sid).update(status="canceled").status == "canceled"


def test_twilio_wait_for_calls_times_out(fake_twilio: FakeTwilio) -> None:
    with pytest.raises(TimeoutError):
        fake_twilio.wait_for_calls(1, timeout=0.05)


# ------------------------------------------------------------------ Twilio: own process


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """One line of the child's stdout, or TimeoutError (never blocks past ``timeout``)."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no output from the fake within {timeout}s")
    return process.stdout.readline()


def test_twilio_standalone_process_serves_and_reports_sends() -> None:
    port = free_port()
    command = [
        sys.executable,
        str(Path(__file__).with_name("fake_twilio.py")),
        "--port",
        str(port),
        "--account-sid",
        ACCOUNT_SID,
        "--auth-token",
        AUTH_TOKEN,
        "--latency",
        "0.2",
        "--max-per-second",
        "2",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _read_line(process, timeout=15).strip() == f"listening on http://127.0.0.1:{port}"
        client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=TwilioHttpClient(timeout=5))
        client.api.base_url = f"http://127.0.0.1:{port}"
        before = time.time()
        started = time.monotonic()
        client.messages.create(to=RESIDENT, from_=SENDER, body="Gentile condomino, " + "x" * 40)
        assert time.monotonic() - started >= 0.2
        client.messages.create(to=RESIDENT, from_=SENDER, body="due")
        with pytest.raises(TwilioRestException):
            client.messages.create(to=RESIDENT, from_=SENDER, body="tre")  # over the cap
        _close_twilio(client)

        control = f"http://127.0.0.1:{port}/_fake"
        readout = requests.get(f"{control}/sends", params={"since": 0}, timeout=5).json()
        later = requests.get(f"{control}/sends", params={"since": readout["next"]}, timeout=5)
        config = requests.post(
            f"{control}/config", json={"latency": 0, "max_per_second": None}, timeout=5
        ).json()
        reset = requests.post(f"{control}/reset", timeout=5)
        after_reset = requests.get(f"{control}/sends", timeout=5).json()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
            raise
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()

    first, second = readout["sends"]
    assert (readout["next"], readout["rate_limited"], readout["create_attempts"]) == (2, 1, 3)
    assert first["to"] == RESIDENT and first["from"] == SENDER
    assert first["body_prefix"] == ("Gentile condomino, " + "x" * 40)[:32]
    expected_hash = hashlib.sha256(("Gentile condomino, " + "x" * 40).encode()).hexdigest()
    assert first["body_sha256"] == expected_hash
    assert before - 1 <= first["received_at"] <= second["received_at"] <= time.time()
    assert first["sid"].startswith("SM")
    assert later.json()["sends"] == []
    assert config == {"latency": 0.0, "max_per_second": None, "mark_sent": True}
    assert reset.status_code == 200 and after_reset["sends"] == []
    assert code == 0


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


# ------------------------------------------------------------------ Web Push


def _vapid_keypair() -> tuple[str, str]:
    """``(private, public)`` as an app configures them: base64url raw scalar / point."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = b64url_encode(key.private_numbers().private_value.to_bytes(32, "big"))
    public = b64url_encode(
        key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    )
    return private, public


VAPID_SUB = "mailto:ops@portineria.example.it"


@pytest.fixture
def push() -> Iterator[FakePushService]:
    with FakePushService() as service:
        yield service


def test_webpush_delivered_and_decrypted_equal(push: FakePushService) -> None:
    private, public = _vapid_keypair()
    subscription = push.new_subscription(application_server_key=public)
    payload = {"title": "Nuovo ticket", "body": "Perdita d'acqua, scala B", "id": 42}

    response = pywebpush.webpush(
        subscription,
        json.dumps(payload),
        vapid_private_key=private,
        vapid_claims={"sub": VAPID_SUB},
        ttl=120,
        headers={"Urgency": "high", "Topic": "ticket-42"},
    )

    assert response.status_code == 201
    assert response.headers["Location"].startswith(push.base_url + "/message/")
    [delivery] = push.wait_for_deliveries(1)
    assert delivery.json() == payload
    assert (delivery.ttl, delivery.urgency, delivery.topic) == (120, "high", "ticket-42")
    assert delivery.claims["aud"] == push.origin and delivery.claims["sub"] == VAPID_SUB
    assert delivery.claims["exp"] > time.time()
    assert delivery.vapid_key == public and delivery.endpoint == subscription["endpoint"]
    assert subscription["endpoint"].startswith("http://127.0.0.1:")
    assert len(b64url_decode(subscription["keys"]["auth"])) == 16
    assert len(b64url_decode(subscription["keys"]["p256dh"])) == 65


def test_webpush_large_payload_and_empty_push(push: FakePushService) -> None:
    private, _ = _vapid_keypair()
    subscription = push.new_subscription()
    text = "è" * 1800  # 3600 bytes of UTF-8: still within one 4096-byte record

    pywebpush.webpush(
        subscription, text, vapid_private_key=private, vapid_claims={"sub": VAPID_SUB}
    )
    pywebpush.webpush(
        subscription, None, vapid_private_key=private, vapid_claims={"sub": VAPID_SUB}
    )

    first, second = push.wait_for_deliveries(2)
    assert first.text == text and first.urgency == "normal" and first.topic is None
    assert second.payload == b""


def test_webpush_wrong_vapid_key_is_refused(push: FakePushService) -> None:
    _, public = _vapid_keypair()
    other_private, _ = _vapid_keypair()
    subscription = push.new_subscription(application_server_key=public)

    with pytest.raises(pywebpush.WebPushException) as caught:
        pywebpush.webpush(
            subscription, "ciao", vapid_private_key=other_private, vapid_claims={"sub": VAPID_SUB}
        )

    assert caught.value.response is not None and caught.value.response.status_code == 403
    assert push.deliveries == []
    [rejection] = push.rejections
    assert rejection.status == 403 and "application server key" in rejection.reason


def test_webpush_expired_subscription_is_410(push: FakePushService) -> None:
    private, _ = _vapid_keypair()
    subscription = push.new_subscription()
    push.expire(subscription)

    with pytest.raises(pywebpush.WebPushException) as caught:
        pywebpush.webpush(
            subscription, "ciao", vapid_private_key=private, vapid_claims={"sub": VAPID_SUB}
        )

    assert caught.value.response is not None and caught.value.response.status_code == 410
    assert [r.status for r in push.rejections] == [410]


def _signed_headers(private: str, claims: dict[str, object]) -> dict[str, str]:
    """VAPID headers made by py_vapid (what pywebpush uses), for claims pywebpush would fix."""
    return Vapid.from_string(private_key=private).sign(claims)


def test_webpush_tampered_jwt_is_refused(push: FakePushService) -> None:
    private, _ = _vapid_keypair()
    subscription = push.new_subscription()
    claims = {"sub": VAPID_SUB, "aud": push.origin, "exp": int(time.time()) + 3600}
    header = _signed_headers(private, claims)["Authorization"]
    token = header.split("t=", 1)[1].split(",", 1)[0]
    head, body, signature = token.split(".")
    forged = dict(json.loads(b64url_decode(body)), sub="mailto:someone-else@example.org")
    forged_body = b64url_encode(json.dumps(forged, separators=(",", ":")).encode())
    tampered = header.replace(token, f"{head}.{forged_body}.{signature}")

    response = pywebpush.WebPusher(subscription).send(
        "ciao", headers={"Authorization": tampered}, ttl=60
    )

    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "vapid"
    assert push.deliveries == []
    assert "does not verify" in push.rejections[0].reason


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "https://fcm.googleapis.com"}, "aud"),
        ({"exp": 1}, "expired"),
        ({"exp": int(time.time()) + 2 * 86400}, "24 hours"),
        ({"sub": "ops@portineria.example.it"}, None),  # py_vapid itself refuses this sub
    ],
)
def test_webpush_bad_claims_are_refused(
    push: FakePushService, claims: dict[str, object], reason: str | None
) -> None:
    private, _ = _vapid_keypair()
    subscription = push.new_subscription()
    full = {"sub": VAPID_SUB, "aud": push.origin, "exp": int(time.time()) + 3600, **claims}
    if reason is None:
        with pytest.raises(VapidException):
            _signed_headers(private, full)
        return
    response = pywebpush.WebPusher(subscription).send(
        "ciao", headers=_signed_headers(private, full), ttl=60
    )
    assert response.status_code == 401
    assert reason in push.rejections[0].reason


def test_webpush_pre_rfc_vapid_form_is_refused(push: FakePushService) -> None:
    private, _ = _vapid_keypair()
    subscription = push.new_subscription()
    claims = {"sub": VAPID_SUB, "aud": push.origin, "exp": int(time.time()) + 3600}
    legacy = Vapid01.from_string(private_key=private).sign(claims)  # WebPush <jwt> + Crypto-Key

    response = pywebpush.WebPusher(subscription).send("ciao", headers=legacy, ttl=60)

    assert legacy["Authorization"].startswith("WebPush ")
    assert response.status_code == 401 and push.deliveries == []


def _encrypt_for(subscription: dict[str, object], plaintext: bytes, rs: int = 4096) -> bytes:
    """An aes128gcm body for ``subscription``, made by http_ece (pywebpush's own library)."""
    keys = subscription["keys"]
    assert isinstance(keys, dict)
    sender_key = ec.generate_private_key(ec.SECP256R1())
    return bytes(
        http_ece.encrypt(
            plaintext,
            salt=os.urandom(16),
            private_key=sender_key,
            dh=b64url_decode(keys["p256dh"]),
            auth_secret=b64url_decode(keys["auth"]),
            rs=rs,  # keyid defaults to the sender's public key, as RFC 8291 wants
            version="aes128gcm",
        )
    )


def test_webpush_protocol_faults(push: FakePushService) -> None:
    private, _ = _vapid_keypair()
    subscription = push.new_subscription()
    claims = {"sub": VAPID_SUB, "aud": push.origin, "exp": int(time.time()) + 3600}
    headers = {
        **_signed_headers(private, claims),
        "TTL": "60",
        "Content-Encoding": "aes128gcm",
    }
    body = _encrypt_for(subscription, b"ciao")
    endpoint = subscription["endpoint"]

    def post(data: bytes, url: str = endpoint, **changes: str | None) -> int:
        sent = {k: v for k, v in {**headers, **changes}.items() if v is not None}
        return requests.post(url, data=data, headers=sent, timeout=5).status_code

    assert post(body, TTL=None) == 400  # RFC 8030: TTL is required
    assert post(body, TTL="soon") == 400
    assert post(body, Urgency="urgent") == 400
    assert post(body, Topic="not a valid topic!") == 400
    assert post(body, Authorization=None) == 401
    assert post(body, Authorization="Bearer abc") == 401
    assert post(body, **{"Content-Encoding": "aesgcm"}) == 400
    assert post(body[:-1] + bytes([body[-1] ^ 1])) == 400  # does not decrypt
    assert post(b"\x00" * 5000) == 413
    assert post(body, url=push.base_url + "/push/nope") == 404
    assert post(body) == 201
    assert [d.text for d in push.deliveries] == ["ciao"]
    reasons = [r.reason for r in push.rejections]
    assert any("TTL" in r for r in reasons) and any("decrypt" in r for r in reasons)


def test_webpush_fail_next_then_recovers(push: FakePushService) -> None:
    private, _ = _vapid_keypair()
    subscription = push.new_subscription()
    push.fail_next(503)

    with pytest.raises(pywebpush.WebPushException) as caught:
        pywebpush.webpush(
            subscription, "1", vapid_private_key=private, vapid_claims={"sub": VAPID_SUB}
        )
    pywebpush.webpush(subscription, "2", vapid_private_key=private, vapid_claims={"sub": VAPID_SUB})

    assert caught.value.response is not None and caught.value.response.status_code == 503
    assert [d.text for d in push.deliveries] == ["2"]


def test_webpush_decrypts_multi_record_bodies(push: FakePushService) -> None:
    # pywebpush always sends one record; RFC 8188 allows several, and the
    # fake's decryption is checked against http_ece with a small record size.
    private, _ = _vapid_keypair()
    subscription = push.new_subscription()
    plaintext = b"una notifica piuttosto lunga, in tre record"
    claims = {"sub": VAPID_SUB, "aud": push.origin, "exp": int(time.time()) + 3600}
    headers = {**_signed_headers(private, claims), "TTL": "0", "Content-Encoding": "aes128gcm"}

    answer = requests.post(
        subscription["endpoint"],
        data=_encrypt_for(subscription, plaintext, rs=32),
        headers=headers,
        timeout=5,
    )

    assert answer.status_code == 201, push.rejections
    assert push.deliveries[0].payload == plaintext


def test_webpush_wait_for_deliveries_times_out(push: FakePushService) -> None:
    with pytest.raises(TimeoutError):
        push.wait_for_deliveries(1, timeout=0.05)


def test_webpush_session_fixture_resets(push_service: FakePushService) -> None:
    assert push_service.deliveries == [] and push_service.rejections == []
    private, _ = _vapid_keypair()
    pywebpush.webpush(
        push_service.new_subscription(),
        "ciao",
        vapid_private_key=private,
        vapid_claims={"sub": VAPID_SUB},
    )
    assert len(push_service.wait_for_deliveries(1)) == 1


# ------------------------------------------------------------------ CRM webhooks

CRM_SECRET = "crm-secret-one"


def _crm_signature(secret: str, timestamp: int, raw: bytes) -> str:
    # The documented algorithm, written out here apart from the fake's own code.
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + raw, "sha256")
    return mac.hexdigest()


def _crm_post(
    url: str,
    event: dict[str, object],
    *,
    secrets_used: tuple[str, ...] = (CRM_SECRET,),
    timestamp: int | None = None,
    event_id: str | None = None,
    timeout: float = 5.0,
) -> requests.Response:
    raw = json.dumps(event).encode()
    t = int(time.time()) if timestamp is None else timestamp
    signature = ",".join([f"t={t}"] + [f"v1={_crm_signature(s, t, raw)}" for s in secrets_used])
    headers = {
        "Content-Type": "application/json",
        "Portineria-Signature": signature,
        "Portineria-Event-Id": str(event["id"]) if event_id is None else event_id,
    }
    return requests.post(url, data=raw, headers=headers, timeout=timeout)


def _event(n: int = 1) -> dict[str, object]:
    return {"id": f"evt_{n:04d}", "type": "ticket.created", "data": {"ticket": n}}


@pytest.fixture
def crm_receiver() -> Iterator[FakeCrmReceiver]:
    with FakeCrmReceiver(secrets=[CRM_SECRET, "crm-secret-two"]) as receiver:
        yield receiver


def test_crm_accepts_a_signed_event(crm_receiver: FakeCrmReceiver) -> None:
    answer = _crm_post(crm_receiver.url, _event(1))

    assert answer.status_code == 200 and answer.json() == {"received": True}
    [event] = crm_receiver.wait_for_events(1)
    assert event.id == "evt_0001" and event.body == _event(1)
    assert event.path == "/events" and event.headers["Portineria-Event-Id"] == "evt_0001"
    assert abs(event.received_at - time.time()) < 10


def test_crm_accepts_any_secret_and_any_v1(crm_receiver: FakeCrmReceiver) -> None:
    rotated = _crm_post(crm_receiver.url, _event(1), secrets_used=("crm-secret-two",))
    both = _crm_post(crm_receiver.url, _event(2), secrets_used=("retired-secret", CRM_SECRET))
    assert (rotated.status_code, both.status_code) == (200, 200)
    assert crm_receiver.distinct_event_ids == {"evt_0001", "evt_0002"}


@pytest.mark.parametrize(
    ("kwargs", "status", "reason"),
    [
        ({"secrets_used": ("wrong",)}, 401, "no v1 signature matches"),
        ({"timestamp": int(time.time()) - 301}, 401, "older than 300s"),
        ({"timestamp": int(time.time()) + 3600}, 401, "future"),
        ({"event_id": "evt_other"}, 400, "does not match"),
    ],
)
def test_crm_refuses_bad_deliveries(
    crm_receiver: FakeCrmReceiver, kwargs: dict[str, object], status: int, reason: str
) -> None:
    answer = _crm_post(crm_receiver.url, _event(1), **kwargs)  # type: ignore[arg-type]

    assert answer.status_code == status
    assert crm_receiver.events == []
    [refusal] = crm_receiver.refusals
    assert refusal.status == status and reason in refusal.reason


def test_crm_refuses_missing_or_malformed_headers(crm_receiver: FakeCrmReceiver) -> None:
    raw = json.dumps(_event(1)).encode()
    t = int(time.time())
    good = f"t={t},v1={_crm_signature(CRM_SECRET, t, raw)}"
    cases = [
        ({}, 401),
        ({"Portineria-Signature": f"v1={_crm_signature(CRM_SECRET, t, raw)}"}, 401),
        ({"Portineria-Signature": f"t={t}"}, 401),
        ({"Portineria-Signature": "garbage"}, 401),
        ({"Portineria-Signature": good}, 400),  # no Portineria-Event-Id
    ]
    statuses = [
        requests.post(crm_receiver.url, data=raw, headers=headers, timeout=5).status_code
        for headers, _ in cases
    ]
    tampered = requests.post(
        crm_receiver.url,
        data=raw.replace(b"ticket.created", b"ticket.deleted"),
        headers={"Portineria-Signature": good, "Portineria-Event-Id": "evt_0001"},
        timeout=5,
    )
    assert statuses == [status for _, status in cases]
    assert tampered.status_code == 401
    assert crm_receiver.events == [] and len(crm_receiver.refusals) == len(cases) + 1


def test_crm_counts_duplicates(crm_receiver: FakeCrmReceiver) -> None:
    for n in (1, 2, 1, 1):
        assert _crm_post(crm_receiver.url, _event(n)).status_code == 200
    assert len(crm_receiver.wait_for_events(4)) == 4
    assert crm_receiver.distinct_event_ids == {"evt_0001", "evt_0002"}
    assert crm_receiver.duplicates == 2


def test_crm_fail_next_then_recovers(crm_receiver: FakeCrmReceiver) -> None:
    crm_receiver.fail_next(status=500, count=2)
    statuses = [_crm_post(crm_receiver.url, _event(1)).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert len(crm_receiver.failures) == 2 and len(crm_receiver.events) == 1


def test_crm_delay_next_times_out_sender_but_keeps_event(crm_receiver: FakeCrmReceiver) -> None:
    crm_receiver.delay_next(1.0)
    with pytest.raises(requests.exceptions.Timeout):
        _crm_post(crm_receiver.url, _event(1), timeout=0.3)
    assert [e.id for e in crm_receiver.wait_for_events(1)] == ["evt_0001"]


def test_crm_down_refuses_connections_and_up_comes_back(crm_receiver: FakeCrmReceiver) -> None:
    url = crm_receiver.url
    crm_receiver.down()
    with pytest.raises(requests.exceptions.ConnectionError):
        _crm_post(url, _event(1), timeout=2)
    crm_receiver.up()
    assert crm_receiver.url == url
    assert _crm_post(url, _event(1)).status_code == 200


def test_crm_wait_for_events_times_out(crm_receiver: FakeCrmReceiver) -> None:
    with pytest.raises(TimeoutError):
        crm_receiver.wait_for_events(1, timeout=0.05)


def test_crm_session_fixture_resets(crm: FakeCrmReceiver) -> None:
    assert crm.events == [] and crm.refusals == []
    answer = _crm_post(crm.url, _event(7), secrets_used=(crm.secrets[0],))
    assert answer.status_code == 200 and crm.distinct_event_ids == {"evt_0007"}


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
