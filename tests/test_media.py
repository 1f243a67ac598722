"""Media downloads: only Twilio's media URLs of our own account, credentials only
there, redirects by hand to public HTTPS hosts, and a deadline for the whole item."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ACCOUNT_SID, AUTH_TOKEN, drain, send_inbound
from servers import WsgiServer
from sqlalchemy import select

from notify.media import MediaAccount, MediaRefused, download_media
from storage.models import MediaItem

pytestmark = pytest.mark.usefixtures("tenant")

ALLOWED = frozenset({"image/jpeg", "image/png"})


def media_path(account: str = ACCOUNT_SID) -> str:
    return (
        f"/2010-04-01/Accounts/{account}/Messages/MM{uuid.uuid4().hex}/Media/ME{uuid.uuid4().hex}"
    )


class Canary:
    """A loopback HTTP server that counts the requests it gets (it should get none)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bool]] = []
        self.server = WsgiServer(self._app)

    def _app(self, environ, start_response):
        self.requests.append((environ["PATH_INFO"], "HTTP_AUTHORIZATION" in environ))
        start_response("200 OK", [("Content-Type", "image/jpeg")])
        return [b"\xff\xd8\xff canary"]


@pytest.fixture
def canary() -> Iterator[Canary]:
    found = Canary()
    with found.server:
        yield found


class SlowServer:
    """Answers 200 and then trickles the body a byte at a time, or never answers."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.closing = threading.Event()
        self.server = WsgiServer(self._app)

    def _app(self, environ, start_response):
        if self.mode == "stalls":
            self.closing.wait(10)
            start_response("200 OK", [("Content-Type", "image/jpeg")])
            return [b""]
        start_response("200 OK", [("Content-Type", "image/jpeg")])
        return self._trickle()

    def _trickle(self) -> Iterator[bytes]:
        for _ in range(50):  # ten seconds at most
            if self.closing.wait(0.2):
                return
            yield b"x"


@pytest.fixture
def account(twilio) -> MediaAccount:
    return MediaAccount(twilio.base_url, ACCOUNT_SID, AUTH_TOKEN)


def fetch(url: str, account: MediaAccount | None, **kwargs) -> bytes:
    return download_media(
        url, account=account, max_bytes=1024 * 1024, allowed_types=ALLOWED, **kwargs
    ).content


def kept_media(svc) -> list[MediaItem]:
    with svc.db.read() as session:
        return list(session.scalars(select(MediaItem).order_by(MediaItem.position)))


# -- through the worker -------------------------------------------------------------------


def test_media_redirected_to_the_cdn_is_kept_and_the_credentials_stay_with_twilio(
    client, svc, twilio
):
    photo = b"\xff\xd8\xff a photo of the broken gate"
    cdn = twilio.add_cdn_object(photo, "image/jpeg")
    url = twilio.add_media(b"", "image/jpeg", redirect_to=cdn)
    send_inbound(client, "", NumMedia="1", MediaUrl0=url, MediaContentType0="image/jpeg")

    drain(svc)

    [item] = kept_media(svc)
    assert svc.cipher.decrypt_bytes(Path(item.path).read_bytes()) == photo
    assert (twilio.media_requests, twilio.media_redirects, twilio.media_denied) == (1, 1, 0)
    assert (twilio.cdn_requests, twilio.cdn_requests_with_auth) == (1, 0)


def test_a_media_url_at_the_redis_port_is_refused_and_not_fetched(
    client, svc, twilio, redis_server
):
    url = f"http://127.0.0.1:{redis_server.port}{media_path()}"
    send_inbound(client, "", NumMedia="1", MediaUrl0=url, MediaContentType0="image/jpeg")

    drain(svc)

    [item] = kept_media(svc)
    assert (item.refused, item.path) == ("not_twilio_media", None)


def test_a_redirect_to_loopback_by_name_is_refused_and_nothing_reaches_it(
    client, svc, twilio, canary
):
    target = f"http://localhost:{canary.server.port}/media/x"
    url = twilio.add_media(b"", "image/jpeg", redirect_to=target)
    send_inbound(client, "", NumMedia="1", MediaUrl0=url, MediaContentType0="image/jpeg")

    drain(svc)

    [item] = kept_media(svc)
    assert item.refused == "redirect_refused"
    assert canary.requests == []


# -- what is fetched at all ---------------------------------------------------------------


def test_another_accounts_media_is_refused_before_any_request(twilio, account):
    url = f"{twilio.base_url}{media_path('AC' + '2' * 32)}"

    with pytest.raises(MediaRefused) as refused:
        fetch(url, account)

    assert refused.value.reason == "not_twilio_media"


@pytest.mark.parametrize(
    "shape",
    [
        "{canary}{path}",  # another port of the same host
        "{base}/2010-04-01/Accounts/{sid}/Messages.json",  # not a media resource
        "{base}{path}?x=1",
        "{base}/2010-04-01/Accounts/{sid}/Messages/MM{hex}/Media/ME{hex}/../../..",
        "{userinfo}{path}",
    ],
    ids=["other-origin", "not-media", "query", "dot-segments", "userinfo"],
)
def test_a_url_that_is_not_exactly_our_twilio_media_is_refused(twilio, account, canary, shape):
    hex32 = "a" * 32
    base = twilio.base_url
    url = shape.format(
        canary=canary.server.base_url,
        base=base,
        path=media_path(),
        sid=ACCOUNT_SID,
        hex=hex32,
        userinfo=base.replace("http://", "http://someone:secret@"),
    )

    with pytest.raises(MediaRefused) as refused:
        fetch(url, account)

    assert refused.value.reason == "not_twilio_media"
    assert canary.requests == []


def test_without_twilio_credentials_nothing_is_fetched(twilio):
    url = twilio.add_media(b"\xff\xd8\xff", "image/jpeg")

    with pytest.raises(MediaRefused) as refused:
        fetch(url, None)

    assert refused.value.reason == "no_credentials"
    assert twilio.media_requests == 0


# -- where a redirect may lead ------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("https://localhost:{port}/media/x", "private_address"),
        ("https://[::1]:{port}/media/x", "private_address"),
        ("https://10.1.2.3/media/x", "private_address"),
        ("https://169.254.169.254/latest/meta-data/", "private_address"),
        ("http://localhost:{port}/media/x", "redirect_refused"),  # and not HTTPS
        ("ftp://example.com/x", "redirect_refused"),
    ],
)
def test_a_redirect_to_a_private_address_is_refused_without_a_request(
    twilio, account, canary, target, reason
):
    url = twilio.add_media(b"", "image/jpeg", redirect_to=target.format(port=canary.server.port))

    with pytest.raises(MediaRefused) as refused:
        fetch(url, account)

    assert refused.value.reason == reason
    assert canary.requests == []


def test_a_redirect_on_the_api_host_is_followed_without_credentials(twilio, account, canary):
    # The configured API base is loopback here: its own host is trusted as configured.
    url = twilio.add_media(b"", "image/jpeg", redirect_to=f"{canary.server.base_url}/media/ok")

    assert fetch(url, account) == b"\xff\xd8\xff canary"

    assert canary.requests == [("/media/ok", False)]


def test_redirects_are_followed_a_few_times_only(twilio, account):
    final = twilio.add_cdn_object(b"\xff\xd8\xff", "image/jpeg")

    assert fetch(twilio.add_media(b"", "image/jpeg", redirect_to=final), account, max_redirects=1)
    with pytest.raises(MediaRefused) as refused:
        fetch(twilio.add_media(b"", "image/jpeg", redirect_to=final), account, max_redirects=0)

    assert refused.value.reason == "too_many_redirects"


# -- the deadline -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stalls", "trickles"])
def test_a_slow_media_server_is_cut_off_at_the_deadline(twilio, account, mode):
    slow = SlowServer(mode)
    with slow.server:
        url = twilio.add_media(b"", "image/jpeg", redirect_to=f"{slow.server.base_url}/media/x")
        started = time.monotonic()
        try:
            with pytest.raises(MediaRefused) as refused:
                fetch(url, account, deadline_seconds=1.0)
        finally:
            elapsed = time.monotonic() - started
            slow.closing.set()

    assert refused.value.reason == "deadline_exceeded"
    assert elapsed < 4


@pytest.mark.parametrize("app_config_extra", [{"MEDIA_FETCH_DEADLINE_SECONDS": 1}], indirect=True)
def test_the_worker_gives_up_on_a_slow_media_item_and_answers_all_the_same(client, svc, twilio):
    slow = SlowServer("trickles")
    with slow.server:
        url = twilio.add_media(b"", "image/jpeg", redirect_to=f"{slow.server.base_url}/media/x")
        send_inbound(
            client, "Ecco la foto", NumMedia="1", MediaUrl0=url, MediaContentType0="image/jpeg"
        )
        started = time.monotonic()
        try:
            drain(svc)
        finally:
            elapsed = time.monotonic() - started
            slow.closing.set()

    [item] = kept_media(svc)
    assert item.refused == "deadline_exceeded"
    assert elapsed < 8
    assert len(twilio.messages) == 1  # the reply went out
