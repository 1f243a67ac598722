"""WhatsApp transports: Twilio's REST API, or a console that records what would go out.

A transport only moves a message; whether it may go is decided above (the outbound gate).
The same transports place voice calls (``call``), for the escalation of an emergency
that nobody acknowledged: Twilio's Calls API with inline TwiML, or the console's record.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboundRequest:
    """What to send: free text (``body``) or an approved template (``content_sid``)."""

    from_address: str
    to_address: str
    body: str | None = None
    content_sid: str | None = None
    content_variables: str | None = None
    status_callback: str | None = None
    # Public addresses Twilio fetches the attachments from (``MediaUrl``).
    media_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class SendReceipt:
    provider_sid: str
    status: str


@dataclass(frozen=True)
class CallRequest:
    """A voice call to place: ``twiml`` is the document Twilio runs when it is answered."""

    to: str
    from_number: str
    twiml: str


@dataclass(frozen=True)
class ProviderMessage:
    """A message as the provider's list shows it (for reconciling an unconfirmed send)."""

    provider_sid: str
    status: str
    to_address: str
    from_address: str
    body: str
    sent_at: datetime | None


class ProviderUnavailable(Exception):
    """The provider could not be asked; try again later."""


class SendError(Exception):
    """The provider refused the message; ``retryable`` says whether trying later can help."""

    def __init__(self, message: str, *, status: int | None, code: int | None, retryable: bool):
        super().__init__(message)
        self.status = status
        self.code = code
        self.retryable = retryable


# Waits for an attempt's turn, given how many times the provider refused it (429).
WaitTurn = Callable[[int], None]


class _TurnTakingSession(requests.Session):
    """The SDK's HTTP session, waiting for the calling thread's turn once the request is
    built, right before it goes out.

    Waiting before the SDK builds the request (a millisecond or two of CPU, more while
    other sender threads run) would put that much jitter between a send's slot and
    its arrival at Twilio, and two sends a second's worth of slots apart could then
    arrive inside one of Twilio's one-second windows."""

    def __init__(self) -> None:
        super().__init__()
        self.turn = threading.local()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        wait = getattr(self.turn, "wait", None)
        if wait is not None:
            self.turn.wait = None
            wait()
        return super().send(request, **kwargs)


class WhatsAppTransport(Protocol):
    name: str

    def send(self, request: OutboundRequest, *, wait_turn: WaitTurn | None = None) -> SendReceipt:
        """``wait_turn(refusals)``: waits for this attempt's turn at the sender's rate,
        called before every attempt with how many times the provider refused the send
        for its own rate (429) so far; a 429 is then retried at that turn instead of
        after the backoff."""
        ...

    def call(self, request: CallRequest) -> SendReceipt: ...
    def sent_messages(
        self, *, to_address: str, from_address: str, sent_after: datetime, limit: int = 50
    ) -> list[ProviderMessage]:
        """What the provider sent from ``from_address`` to ``to_address`` since
        ``sent_after``, newest first, at most ``limit``; ProviderUnavailable if it
        cannot be asked."""
        ...


def _is_retryable(status: int | None) -> bool:
    return status == 429 or (status is not None and status >= 500)


class TwilioTransport:
    """Twilio's Messages API through the official SDK.

    429 and 5xx answers mean Twilio created nothing, so they are retried here with
    backoff; a refused connection likewise. Any other failure is final for this
    message and surfaces as :class:`SendError`.
    """

    name = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        api_base_url: str = "https://api.twilio.com",
        retry_delays: Sequence[float] = (0.5, 1.0, 2.0),
        timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        connections: int = 32,
    ) -> None:
        http = TwilioHttpClient(timeout=timeout)
        # One session for the process, its connections kept open and reused by
        # every sender thread (the SDK's own pool keeps a handful).
        http.session = self._session = _TurnTakingSession()
        for scheme in ("https://", "http://"):
            http.session.mount(scheme, HTTPAdapter(pool_maxsize=connections))
        # The environment's proxy and CA bundle, read once for the API's address:
        # requests would otherwise read all of os.environ again on every send.
        found = http.session.merge_environment_settings(api_base_url, {}, None, None, None)
        http.session.proxies.update(found["proxies"])
        http.session.verify = found["verify"]
        http.session.trust_env = False
        self._client = Client(account_sid, auth_token, http_client=http)
        self._client.api.base_url = api_base_url.rstrip("/")
        self._retry_delays = tuple(retry_delays)
        self._sleep = sleep

    def send(self, request: OutboundRequest, *, wait_turn: WaitTurn | None = None) -> SendReceipt:
        return self._with_retries(lambda: self._create(request), wait_turn)

    def call(self, request: CallRequest) -> SendReceipt:
        """Place a voice call; a 429, 5xx or refused connection is retried like a send."""
        return self._with_retries(lambda: self._create_call(request))

    def _with_retries(
        self, create: Callable[[], SendReceipt], wait_turn: WaitTurn | None = None
    ) -> SendReceipt:
        attempts, refusals = len(self._retry_delays) + 1, 0
        for attempt in range(attempts):
            try:
                return self._in_turn(create, wait_turn, refusals)
            except SendError as error:
                if not error.retryable or attempt == attempts - 1:
                    raise
                if error.status == 429 and wait_turn is not None:
                    # Twilio's window was full: the sender's pace says when a retry can
                    # go without crowding it again.
                    log.info("twilio send retry at the sender's next turn (status=429)")
                    refusals += 1
                    continue
                delay = self._retry_delays[attempt]
                log.warning("twilio send retry in %.1fs (status=%s)", delay, error.status)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def _in_turn(
        self, create: Callable[[], SendReceipt], wait_turn: WaitTurn | None, refusals: int
    ) -> SendReceipt:
        if wait_turn is None:
            return create()
        self._session.turn.wait = lambda: wait_turn(refusals)
        try:
            return create()
        finally:
            self._session.turn.wait = None

    def _create(self, request: OutboundRequest) -> SendReceipt:
        kwargs: dict[str, Any] = {"from_": request.from_address, "to": request.to_address}
        if request.content_sid:
            kwargs["content_sid"] = request.content_sid
            if request.content_variables:
                kwargs["content_variables"] = request.content_variables
        elif request.media_urls:
            kwargs["media_url"] = list(request.media_urls)
            if request.body:
                kwargs["body"] = request.body  # the caption
        else:
            kwargs["body"] = request.body or ""
        if request.status_callback:
            kwargs["status_callback"] = request.status_callback
        with _twilio_errors("message"):
            message = self._client.messages.create(**kwargs)
        return SendReceipt(provider_sid=str(message.sid), status=str(message.status or "queued"))

    def _create_call(self, request: CallRequest) -> SendReceipt:
        with _twilio_errors("call"):
            call = self._client.calls.create(
                to=request.to, from_=request.from_number, twiml=request.twiml
            )
        return SendReceipt(provider_sid=str(call.sid), status=str(call.status or "queued"))

    def sent_messages(
        self, *, to_address: str, from_address: str, sent_after: datetime, limit: int = 50
    ) -> list[ProviderMessage]:
        """Twilio's Messages list, filtered by To, From and ``DateSent>=``.

        Twilio fills ``date_sent`` once it has handed a message on, so one still
        queued there is not found yet: a caller looks again later.
        """
        try:
            found = self._client.messages.list(
                to=to_address, from_=from_address, date_sent_after=sent_after, limit=limit
            )
        except (TwilioRestException, requests.RequestException) as error:
            raise ProviderUnavailable("twilio's message list could not be read") from error
        return [
            ProviderMessage(
                provider_sid=str(message.sid),
                status=str(message.status or ""),
                to_address=str(message.to or ""),
                from_address=str(message.from_ or ""),
                body=str(message.body or ""),
                sent_at=message.date_sent,
            )
            for message in found
        ]


@contextmanager
def _twilio_errors(what: str) -> Iterator[None]:
    """Twilio's and the network's failures as :class:`SendError`, retryable or not."""
    try:
        yield
    except TwilioRestException as error:
        raise SendError(
            f"twilio refused the {what} ({error.status}, code {error.code})",
            status=error.status,
            code=error.code,
            retryable=_is_retryable(error.status),
        ) from error
    except requests.ConnectionError as error:
        # Raised before the request reached Twilio: nothing was created.
        raise SendError("twilio unreachable", status=None, code=None, retryable=True) from error


@dataclass
class ConsoleTransport:
    """Keeps what would have been sent, for the embedded default and the simulator."""

    name: str = "console"
    # Bounded: the dev server runs for days; the database keeps the full history.
    sent: deque[OutboundRequest] = field(default_factory=lambda: deque(maxlen=1000))
    calls: deque[CallRequest] = field(default_factory=lambda: deque(maxlen=1000))

    def send(self, request: OutboundRequest, *, wait_turn: WaitTurn | None = None) -> SendReceipt:
        if wait_turn is not None:
            wait_turn(0)
        self.sent.append(request)
        sid = "CM" + uuid.uuid4().hex
        log.info("console transport: message %s recorded, not sent", sid)
        return SendReceipt(provider_sid=sid, status="sent")

    def call(self, request: CallRequest) -> SendReceipt:
        self.calls.append(request)
        sid = "CA" + uuid.uuid4().hex
        log.info("console transport: call %s recorded, not placed", sid)
        return SendReceipt(provider_sid=sid, status="queued")

    def sent_messages(
        self, *, to_address: str, from_address: str, sent_after: datetime, limit: int = 50
    ) -> list[ProviderMessage]:
        # Nothing outlives the process that "sent" it: a send its worker died in
        # cannot be confirmed, and is left for an operator.
        return []
