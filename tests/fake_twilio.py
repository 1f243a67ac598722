"""A fake of Twilio's Programmable Messaging and Voice REST API, as a real HTTP server.

``FakeTwilio(account_sid, auth_token, *, latency=0.0, max_per_second=None,
mark_sent=True, port=0)`` serves, on 127.0.0.1, the part of
``https://api.twilio.com`` that Portineria uses. Every Twilio path needs HTTP
Basic auth (account SID + auth token) or answers 401 / 20003 with Twilio's JSON
error; another account's path answers 404 / 20404.

Messages
    * ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form-encoded
      ``To``, ``From``, ``MessagingServiceSid``, ``Body``, ``ContentSid``,
      ``ContentVariables``, ``StatusCallback``, ``MediaUrl`` (repeatable), ...):
      Twilio's validation errors (21604 no To, 21603 no From, 21602 no content,
      21656 bad ContentVariables, 21617 body over 1600 chars); else 201 with a
      Message resource (``sid`` = ``SM`` + 32 hex, ``status`` ``queued`` or
      ``accepted`` for a messaging service, ``date_sent`` null, RFC 2822 dates,
      ``uri``...). With ``mark_sent`` (the default) the stored resource then
      reads as Twilio's does moments later: ``status`` ``sent`` and
      ``date_sent`` the second it was received, so ``DateSent`` filters find it;
      ``set_status(sid, status)`` moves it on.
    * ``GET .../Messages.json``: newest first, served the way
      ``client.messages.list(...)`` / ``.stream(...)`` / ``.page(...)`` (twilio
      9.x) ask for it. Filters ``To``, ``From``, ``DateSent`` (that UTC day for
      ``YYYY-MM-DD``, that second for ``YYYY-MM-DDTHH:MM:SSZ``, the format the
      SDK sends a ``datetime`` in), ``DateSent>`` (on or after) and
      ``DateSent<`` (on or before): Twilio's documented ``>=``/``<=``, which
      is what the SDK's ``date_sent_after``/``date_sent_before`` put on the
      wire (``DateSent%3E=...``). Messages without a ``date_sent`` match no
      date filter. ``PageSize`` (default 50, clamped to 1..1000), ``Page`` and
      ``PageToken``: Twilio's page JSON (``messages``, ``page``, ``page_size``,
      ``uri``, ``first_page_uri``, ``next_page_uri``, ``previous_page_uri``,
      ``start``, ``end``), ``next_page_uri`` null on the last page. The token
      names the last message of the previous page, so messages created while
      a client pages do not shift the pages it has yet to read. A date the
      fake cannot read answers 400 / 20001 (the fake's choice of code).
    * ``GET .../Messages/{Sid}.json`` (404 / 20404 when unknown).
    * ``GET .../Messages/{MM...}/Media/{ME...}``: bytes registered with
      ``add_media()``, same Basic auth, the given Content-Type and length. With
      ``add_media(..., redirect_to=url)`` the authorised request answers
      ``307`` to ``url`` instead, as Twilio redirects media to its CDN host.
      ``add_cdn_object(content, content_type)`` serves bytes on the fake's own
      CDN: a second server on another port (another origin, as the real CDN
      host is), needing no auth. Its records tell whether a client forwarded
      its Twilio credentials across the redirect: ``cdn_requests`` counts
      every CDN download and ``cdn_requests_with_auth`` those that carried an
      ``Authorization`` header (any value; the value is not kept).
      ``requests`` strips the header when the port changes, so a correct
      client leaves ``cdn_requests_with_auth`` at 0.

Calls (Programmable Voice)
    * ``POST .../Calls.json`` (``To``, ``From``, ``Twiml`` or ``Url`` or
      ``ApplicationSid``, ``StatusCallback``, ``StatusCallbackEvent``
      (repeatable), ``Timeout``, ``Method``...): 400 with Twilio's codes
      21201 (no To), 21213 (no From), 21205 (neither Url nor Twiml nor
      ApplicationSid: "Url parameter is required", or a Url that is not an
      absolute http(s) URL); else 201 with a Call resource (``sid`` ``CA`` +
      32 hex, ``status`` ``queued``, ``direction`` ``outbound-api``,
      ``to``, ``from``, RFC 2822 dates, ``uri``...) as ``client.calls.create(
      to=..., from_=..., twiml=...)`` reads it. No status callbacks are made.
    * ``GET .../Calls/{Sid}.json``; ``POST .../Calls/{Sid}.json`` with
      ``Status=completed`` (hang up) or ``canceled`` (only while queued or
      ringing), or a new ``Twiml`` (redirect a live call: it becomes the
      current document; 400 / 21220 once the call has ended). A new ``Url`` is
      checked but not fetched: hand its TwiML to ``set_twiml``.
    * The callee: ``press(call_sid, digits, *, public_base_url=None,
      auth_token=None) -> GatherRequest`` finds the current document's first
      ``<Gather>``, resolves its ``action`` (a relative one against
      ``public_base_url``, else against the call's ``Url``), and returns the
      request Twilio would make: the form fields Twilio sends a Gather action
      (``AccountSid``, ``ApiVersion``, ``CallSid``, ``CallStatus``
      ``in-progress``, ``Called``, ``Caller``, ``Direction`` ``outbound-api``,
      ``From``, ``To``, ``Digits``, ``FinishedOnKey``), signed with
      ``X-Twilio-Signature`` over the full public URL and the sorted fields,
      keyed with the auth token. The press marks the call ``in-progress``. Post
      it yourself (Flask: ``client.post(req.path, data=req.params,
      headers=req.headers)``, then ``continue_call(call_sid, answer_twiml)``)
      or over HTTP with ``submit(req, base_url=app_url)``, which feeds the
      answer back for you. The answer becomes the call's document, as on a
      real call; one without a ``<Gather>`` ends the call (``completed``).
      ``said(call_sid, language=None) -> list[str]`` is every ``<Say>`` text
      the callee has heard so far (``speech()`` gives language and voice too);
      ``set_twiml(call_sid, twiml)`` gives a ``Url`` call its document.
      ``.calls`` (form fields plus ``"sid"``), ``wait_for_calls(n, timeout)``,
      ``call(sid)`` (the resource GET returns).

Load and faults (Messages create only)
    ``latency`` (constructor argument and attribute) makes every create wait
    that long before answering; the server is threaded, so slow answers do not
    hold each other up. ``max_per_second=N`` caps accepted creates at N in any
    one-second window, like Twilio's queue limits: the rest answer 429 / 20429
    and record nothing. ``fail_next(status, count=1, code=None)`` makes the
    next creates fail with a Twilio-style error and record nothing;
    ``delay_next(seconds, count=1)`` makes them slow (added to ``latency``),
    but they are still accepted and recorded, as Twilio would after the client
    gave up. Creates are recorded when they are received, before the wait.

Records (thread-safe copies): ``.messages`` (form fields, ``MediaUrl`` as a
list, plus ``"sid"``), ``.sends`` (``Send``: sid, to, from, body and the
``received_at`` wall-clock / ``received_monotonic`` times, taken when the
request arrived, not when it was answered; ``sends_since(i)`` reads from
index ``i`` on), ``.create_attempts``,
``.rate_limited``, ``.media_requests`` (authorised media downloads, redirects
included), ``.media_redirects``, ``.media_denied``, ``.cdn_requests``,
``.cdn_requests_with_auth``; ``wait_for_messages(n, timeout)``,
``set_status(sid, status, error_code=None)``, ``set_date_sent(sid, datetime)``
(age a message for the date filters), ``reset()`` (records and
scripted faults; ``latency`` and ``max_per_second`` stay).

Pointing the real SDK (twilio 9.x) at it: every API-domain request is built by
``twilio.base.domain.Domain.absolute_url`` from the domain's ``base_url``, which
for ``api.twilio.com`` is the ``Api`` domain object behind ``client.api``::

    client = twilio.rest.Client(ACCOUNT_SID, AUTH_TOKEN)
    client.api.base_url = fake.base_url        # "http://127.0.0.1:PORT"
    client.messages.create(to=..., from_=..., body=...)   # reaches the fake

Leave ``region``/``edge`` unset (and the ``TWILIO_REGION``/``TWILIO_EDGE``
environment variables): with either set, ``ClientBase.get_hostname`` rewrites
the host name. Other Twilio domains (``client.content``, ``client.messaging``)
have their own ``base_url`` and are not served here. For timeout tests give the
client a short timeout: ``Client(sid, token,
http_client=twilio.http.http_client.TwilioHttpClient(timeout=0.5))``.

Standalone process (for benchmarks in another process)::

    python tests/fake_twilio.py --port P --account-sid S --auth-token T \\
        --latency 0.15 [--max-per-second 80] [--mark-sent | --no-mark-sent]

prints ``listening on http://127.0.0.1:P`` once serving and serves until
SIGTERM or SIGINT (exit status 0). A JSON control face, off the Twilio paths
and without auth (it listens on loopback only), reads and steers it:

* ``GET /_fake/sends?since=N`` -> ``{"sends": [...], "next": M, "rate_limited":
  R, "create_attempts": A}``: the sends recorded from index N on, each
  ``{"index", "sid", "to", "from", "body_sha256", "body_prefix" (first 32
  characters), "received_at" (``time.time()``), "received_monotonic"}``; pass
  ``next`` back as ``since`` to read only what is new.
* ``POST /_fake/reset``: as ``reset()``.
* ``POST /_fake/config`` with JSON ``{"latency": s, "max_per_second": n or
  null, "mark_sent": bool}`` (any subset): change them while serving.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import secrets
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from fake_twilio_voice import (
    GatherRequest,
    SpokenText,
    TwimlDocument,
    TwimlError,
    gather_url_for_get,
    parse_twiml,
    resolve_action,
    twilio_signature,
)
from servers import FakeService, WsgiServer
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

__all__ = ["FakeTwilio", "GatherRequest", "Send", "TwilioFault", "main"]

API_VERSION = "2010-04-01"
_LIST_FIELDS = frozenset({"MediaUrl", "PersistentAction", "StatusCallbackEvent"})
_BODY_LIMIT = 1600
_DEFAULT_PAGE_SIZE = 50
_MAX_PAGE_SIZE = 1000
_BODY_PREFIX = 32

_KNOWN_ERRORS: dict[int, str] = {
    20001: "Invalid parameter",
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20503: "Service Unavailable",
    21201: "No 'To' number is specified",
    21205: (
        "Url parameter is required. For more information, see http://www.twilio.com/docs/api/twiml"
    ),
    21211: "Invalid 'To' Phone Number",
    21213: "No 'From' number is specified",
    21220: "Call is not in-progress. Cannot redirect.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21656: "The ContentVariables Parameter is invalid.",
    63014: "Message delivery failed: the recipient blocked the sender or opted out.",
    63016: (
        "Failed to send freeform message because you are outside the allowed window. "
        "If you are using WhatsApp, please use a Message Template."
    ),
}


@dataclass(frozen=True)
class TwilioFault:
    """One injected error answer."""

    status: int
    code: int
    message: str

    def body(self) -> dict[str, Any]:
        return _error_body(self.status, self.code, self.message)


@dataclass(frozen=True)
class Send:
    """One accepted Messages create, with the times it was received."""

    index: int
    sid: str
    to: str | None
    from_: str | None
    body: str
    received_at: float  # time.time() when the request arrived
    received_monotonic: float  # time.monotonic() when the request arrived

    def readout(self) -> dict[str, Any]:
        """The JSON the control face serves: no full body, only a hash and a prefix."""
        return {
            "index": self.index,
            "sid": self.sid,
            "to": self.to,
            "from": self.from_,
            "body_sha256": hashlib.sha256(self.body.encode()).hexdigest(),
            "body_prefix": self.body[:_BODY_PREFIX],
            "received_at": self.received_at,
            "received_monotonic": self.received_monotonic,
        }


@dataclass
class _Media:
    content: bytes
    content_type: str
    message_sid: str
    sid: str
    redirect_to: str | None = None


@dataclass
class _Call:
    sid: str
    record: dict[str, Any]
    resource: dict[str, Any]
    # The TwiML documents the call has run, oldest first, and whether the
    # callee pressed keys in each one's Gather.
    documents: list[TwimlDocument] = field(default_factory=list)
    pressed: list[bool] = field(default_factory=list)
    started: float | None = None


@dataclass
class _State:
    messages: list[dict[str, Any]] = field(default_factory=list)
    sends: list[Send] = field(default_factory=list)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # message SIDs, oldest first
    faults: deque[TwilioFault] = field(default_factory=deque)
    delays: deque[float] = field(default_factory=deque)
    accepted_at: deque[float] = field(default_factory=deque)  # monotonic, for the cap
    media: dict[tuple[str, str], _Media] = field(default_factory=dict)
    cdn: dict[str, _Media] = field(default_factory=dict)
    calls: dict[str, _Call] = field(default_factory=dict)
    create_attempts: int = 0
    rate_limited: int = 0
    media_requests: int = 0
    media_redirects: int = 0
    media_denied: int = 0
    cdn_requests: int = 0
    cdn_requests_with_auth: int = 0


def _error_body(status: int, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(payload), status=status, mimetype="application/json", headers=headers
    )


def _error(status: int, code: int, message: str | None = None) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if status == 401 else None
    text = message or _KNOWN_ERRORS.get(code, "Error")
    return _json(_error_body(status, code, text), status=status, headers=headers)


def _not_found(request: Request) -> Response:
    return _error(404, 20404, f"The requested resource {request.path} was not found")


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _rfc2822(moment: datetime | None = None) -> str:
    return format_datetime((moment or datetime.now(UTC)).replace(microsecond=0))


def _form_record(form: Any) -> dict[str, Any]:
    """Form fields as a dict; repeatable fields (MediaUrl) as lists."""
    record: dict[str, Any] = {}
    for key in form.keys():
        values = form.getlist(key)
        record[key] = values if key in _LIST_FIELDS or len(values) > 1 else values[0]
    return record


def _validation_error(form: Any) -> Response | None:
    """Twilio's synchronous 400s for a Messages create request, or None."""
    if not form.get("To"):
        return _error(400, 21604)
    if not form.get("From") and not form.get("MessagingServiceSid"):
        return _error(400, 21603)
    if not (form.get("Body") or form.getlist("MediaUrl") or form.get("ContentSid")):
        return _error(400, 21602)
    if len(form.get("Body", "")) > _BODY_LIMIT:
        return _error(400, 21617)
    variables = form.get("ContentVariables")
    if variables is not None:
        try:
            if not isinstance(json.loads(variables), dict):
                return _error(400, 21656)
        except ValueError:
            return _error(400, 21656)
    return None


def _call_validation_error(form: Any) -> Response | None:
    """Twilio's synchronous 400s for a Calls create request, or None."""
    if not form.get("To"):
        return _error(400, 21201)
    if not form.get("From"):
        return _error(400, 21213)
    url = form.get("Url")
    if not (url or form.get("Twiml") or form.get("ApplicationSid")):
        return _error(400, 21205)
    if url and not _absolute_http_url(url):
        return _error(400, 21205, f"Url is not a valid URL: {url}")
    return None


def _absolute_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in {"http", "https"} and bool(parts.netloc)


_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _date_range(value: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC for a ``DateSent`` value: a whole day, or one second."""
    if _DAY.match(value):
        start = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        return start, start + timedelta(days=1)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    start = moment.astimezone(UTC).replace(microsecond=0)
    return start, start + timedelta(seconds=1)


@dataclass(frozen=True)
class _ListQuery:
    to: str | None
    from_: str | None
    on: tuple[datetime, datetime] | None
    after: datetime | None  # on or after
    before: datetime | None  # strictly before (the end of the "on or before" range)
    page_size: int
    page: int
    token: str | None
    echo: dict[str, str]  # the filters, as they go back into page URIs

    @classmethod
    def parse(cls, args: Any) -> _ListQuery:
        names = ("To", "From", "DateSent", "DateSent>", "DateSent<")
        echo = {name: args[name] for name in names if name in args}
        on = _date_range(args["DateSent"]) if "DateSent" in args else None
        after = _date_range(args["DateSent>"])[0] if "DateSent>" in args else None
        before = _date_range(args["DateSent<"])[1] if "DateSent<" in args else None
        size = int(args.get("PageSize", _DEFAULT_PAGE_SIZE))
        return cls(
            to=args.get("To"),
            from_=args.get("From"),
            on=on,
            after=after,
            before=before,
            page_size=min(max(size, 1), _MAX_PAGE_SIZE),
            page=max(int(args.get("Page", 0)), 0),
            token=args.get("PageToken"),
            echo=echo,
        )

    def matches(self, resource: dict[str, Any]) -> bool:
        if self.to is not None and resource["to"] != self.to:
            return False
        if self.from_ is not None and resource["from"] != self.from_:
            return False
        if self.on is None and self.after is None and self.before is None:
            return True
        if not resource.get("date_sent"):
            return False
        sent = parsedate_to_datetime(resource["date_sent"])
        if self.on is not None and not (self.on[0] <= sent < self.on[1]):
            return False
        if self.after is not None and sent < self.after:
            return False
        return not (self.before is not None and sent >= self.before)

    def page_uri(self, base: str, page: int, token: str | None = None) -> str:
        params = {**self.echo, "PageSize": str(self.page_size), "Page": str(page)}
        if token is not None:
            params["PageToken"] = token
        return f"{base}?{urlencode(params)}"


def _collect(keys: str, finish_on_key: str, num_digits: int | None) -> tuple[str, str]:
    """``(Digits, FinishedOnKey)`` for the keys a callee pressed, in order."""
    digits = ""
    for key in keys:
        if finish_on_key and key == finish_on_key:
            return digits, key
        digits += key
        if num_digits is not None and len(digits) >= num_digits:
            break
    return digits, ""


def _page_slice(sids: list[str], query: _ListQuery) -> tuple[list[str], bool]:
    """The SIDs on the requested page (newest first) and whether more follow."""
    start = 0
    token = query.token
    if token and token[:2] in {"PA", "PB"} and token[2:] in sids:
        anchor = sids.index(token[2:])
        start = anchor + 1 if token[:2] == "PA" else max(anchor - query.page_size, 0)
    elif not token:
        start = query.page * query.page_size
    chosen = sids[start : start + query.page_size]
    return chosen, start + query.page_size < len(sids)


class FakeTwilio(FakeService):
    """Twilio's Messages and Calls REST API on 127.0.0.1 (see the module docstring).

    ``FakeTwilio(account_sid, auth_token, *, latency=0.0, max_per_second=None,
    mark_sent=True, port=0)``; ``start()`` or ``with`` to serve; then
    ``.base_url``, ``.host``, ``.port``, ``.cdn_base_url``.
    """

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        latency: float = 0.0,
        max_per_second: int | None = None,
        mark_sent: bool = True,
        port: int = 0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.latency = latency
        self.max_per_second = max_per_second
        self.mark_sent = mark_sent
        self._cond = threading.Condition()
        self._state = _State()
        self._closing = threading.Event()
        self._url_map = self._build_url_map()
        self._server = WsgiServer(self._wsgi, port=port)
        self._cdn = WsgiServer(self._cdn_wsgi)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> FakeTwilio:
        self._closing.clear()
        self._cdn.start()
        return super().start()

    def close(self) -> None:
        self._closing.set()  # wake delayed requests
        super().close()
        self._cdn.close()

    @property
    def cdn_base_url(self) -> str:
        return self._cdn.base_url

    # -- test controls -------------------------------------------------------------

    def fail_next(
        self, status: int, count: int = 1, code: int | None = None, message: str | None = None
    ) -> None:
        """Answer the next ``count`` creates with ``status`` (code defaults to 20000+status)."""
        error_code = code if code is not None else 20000 + status
        text = message or _KNOWN_ERRORS.get(error_code, f"HTTP {status}")
        fault = TwilioFault(status=status, code=error_code, message=text)
        with self._cond:
            self._state.faults.extend([fault] * count)

    def delay_next(self, seconds: float, count: int = 1) -> None:
        """Make the next ``count`` creates wait ``seconds`` (on top of ``latency``)."""
        with self._cond:
            self._state.delays.extend([seconds] * count)

    def add_media(
        self,
        content: bytes,
        content_type: str,
        message_sid: str | None = None,
        *,
        redirect_to: str | None = None,
    ) -> str:
        """Serve ``content`` at a new authenticated media URL and return it.

        With ``redirect_to`` the URL answers 307 to it (after the same auth
        check) instead of serving the bytes itself.
        """
        media = _Media(
            content, content_type, message_sid or _new_sid("MM"), _new_sid("ME"), redirect_to
        )
        with self._cond:
            self._state.media[(media.message_sid, media.sid)] = media
        messages_url = f"{self.base_url}{self._account_path()}/Messages"
        return f"{messages_url}/{media.message_sid}/Media/{media.sid}"

    def add_cdn_object(self, content: bytes, content_type: str) -> str:
        """Serve ``content`` without auth on the fake CDN origin; return its URL."""
        key = secrets.token_urlsafe(16)
        media = _Media(content, content_type, "", key)
        with self._cond:
            self._state.cdn[key] = media
        return f"{self.cdn_base_url}/media/{key}"

    def set_status(self, sid: str, status: str, error_code: int | None = None) -> None:
        """Change a recorded message's status as seen by GET (no callback is sent)."""
        with self._cond:
            resource = self._state.resources[sid]
            resource["status"] = status
            resource["error_code"] = error_code
            resource["error_message"] = _KNOWN_ERRORS.get(error_code) if error_code else None
            resource["date_updated"] = _rfc2822()
            if status in {"sent", "delivered", "read", "undelivered"} and not resource["date_sent"]:
                resource["date_sent"] = resource["date_updated"]

    def set_date_sent(self, sid: str, moment: datetime | None) -> None:
        """Set (or clear) a recorded message's ``date_sent``, e.g. to age it for a filter."""
        with self._cond:
            self._state.resources[sid]["date_sent"] = (
                _rfc2822(moment.astimezone(UTC)) if moment is not None else None
            )

    def reset(self) -> None:
        """Forget messages, calls, media, pending faults and delays, and counters."""
        with self._cond:
            self._state = _State()

    # -- records ---------------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(message) for message in self._state.messages]

    @property
    def sends(self) -> list[Send]:
        with self._cond:
            return list(self._state.sends)

    def sends_since(self, index: int) -> list[Send]:
        with self._cond:
            return self._state.sends[max(index, 0) :]

    @property
    def create_attempts(self) -> int:
        """Authenticated create requests received, including failed ones."""
        with self._cond:
            return self._state.create_attempts

    @property
    def rate_limited(self) -> int:
        """Creates refused with 429 by ``max_per_second``."""
        with self._cond:
            return self._state.rate_limited

    @property
    def media_requests(self) -> int:
        with self._cond:
            return self._state.media_requests

    @property
    def media_redirects(self) -> int:
        with self._cond:
            return self._state.media_redirects

    @property
    def media_denied(self) -> int:
        with self._cond:
            return self._state.media_denied

    @property
    def cdn_requests(self) -> int:
        with self._cond:
            return self._state.cdn_requests

    @property
    def cdn_requests_with_auth(self) -> int:
        """CDN downloads that carried an ``Authorization`` header: leaked credentials."""
        with self._cond:
            return self._state.cdn_requests_with_auth

    def resource(self, sid: str) -> dict[str, Any]:
        """The Message resource (JSON dict) that GET would return for ``sid``."""
        with self._cond:
            return dict(self._state.resources[sid])

    def wait_for_messages(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` messages are recorded; TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._state.messages) >= n, timeout):
                got = [dict(m) for m in self._state.messages]
                raise TimeoutError(f"expected {n} Twilio messages within {timeout}s, got {got}")
            return [dict(message) for message in self._state.messages]

    # -- calls: records and the callee ---------------------------------------------

    @property
    def calls(self) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(call.record) for call in self._state.calls.values()]

    def call(self, sid: str) -> dict[str, Any]:
        """The Call resource (JSON dict) that GET would return for ``sid``."""
        with self._cond:
            return dict(self._state.calls[sid].resource)

    def wait_for_calls(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` calls are recorded; TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._state.calls) >= n, timeout):
                got = [dict(c.record) for c in self._state.calls.values()]
                raise TimeoutError(f"expected {n} Twilio calls within {timeout}s, got {got}")
            return [dict(call.record) for call in self._state.calls.values()]

    def speech(self, call_sid: str) -> list[SpokenText]:
        """Every ``<Say>`` the callee has heard so far, with language and voice."""
        with self._cond:
            call = self._state.calls[call_sid]
            heard: list[SpokenText] = []
            for document, pressed in zip(call.documents, call.pressed, strict=True):
                heard.extend(document.heard(pressed))
            return heard

    def said(self, call_sid: str, language: str | None = None) -> list[str]:
        """The texts of ``speech()``, optionally only those in ``language``."""
        spoken = self.speech(call_sid)
        return [s.text for s in spoken if language is None or s.language == language]

    def twiml(self, call_sid: str) -> str | None:
        """The call's current TwiML document, or None (a ``Url`` call not yet given one)."""
        with self._cond:
            documents = self._state.calls[call_sid].documents
            return documents[-1].text if documents else None

    def set_twiml(self, call_sid: str, twiml: str, url: str | None = None) -> None:
        """Make ``twiml`` the call's current document (``url``: where it came from)."""
        document = parse_twiml(twiml, url)
        with self._cond:
            call = self._state.calls[call_sid]
            call.documents.append(document)
            call.pressed.append(False)

    def press(
        self,
        call_sid: str,
        digits: str,
        *,
        public_base_url: str | None = None,
        auth_token: str | None = None,
    ) -> GatherRequest:
        """The callee presses ``digits`` in the current ``<Gather>``: Twilio's signed request.

        ``TwimlError`` if the current document has no Gather (or the call has
        no document); ``ValueError`` if the call has ended or a relative
        action cannot be resolved. Keys are taken one by one as Twilio hears
        them: the ``finishOnKey`` ends the input (it goes in ``FinishedOnKey``,
        not ``Digits``), and so does reaching ``numDigits``; later keys are lost.
        """
        with self._cond:
            call = self._state.calls[call_sid]
            status = call.resource["status"]
            if status not in {"queued", "ringing", "in-progress"}:
                raise ValueError(f"call {call_sid} is {status}: nobody is there to press keys")
            if not call.documents or call.documents[-1].gather is None:
                raise TwimlError(f"call {call_sid}'s current TwiML has no <Gather>")
            document = call.documents[-1]
            gather = document.gather
            assert gather is not None
            url = resolve_action(gather.action, document.url, public_base_url)
            digits, finished = _collect(digits, gather.finish_on_key, gather.num_digits)
            self._answer(call)
            call.pressed[-1] = True
            resource = call.resource
            params = {
                "AccountSid": self.account_sid,
                "ApiVersion": API_VERSION,
                "CallSid": call_sid,
                "CallStatus": "in-progress",
                "Called": resource["to"],
                "Caller": resource["from"],
                "Digits": digits,
                "Direction": "outbound-api",
                "FinishedOnKey": finished,
                "From": resource["from"],
                "To": resource["to"],
            }
        token = auth_token or self.auth_token
        if gather.method == "GET":
            url = gather_url_for_get(url, params)
            return GatherRequest(call_sid, url, "GET", {}, twilio_signature(token, url), digits)
        signature = twilio_signature(token, url, params)
        return GatherRequest(call_sid, url, "POST", params, signature, digits)

    def continue_call(self, call_sid: str, twiml: str, url: str | None = None) -> None:
        """Run the TwiML a Gather action answered: it becomes the call's document.

        A document without a ``<Gather>`` plays to its end and the call
        completes (Twilio hangs up when a document runs out of verbs).
        """
        document = parse_twiml(twiml, url)
        with self._cond:
            call = self._state.calls[call_sid]
            call.documents.append(document)
            call.pressed.append(False)
            if document.gather is None or document.hangs_up:
                self._end(call, "completed")

    def submit(
        self,
        request: GatherRequest,
        *,
        base_url: str | None = None,
        timeout: float = 5.0,
    ) -> requests.Response:
        """Send ``request`` over HTTP (to ``base_url`` if given) and run its TwiML answer."""
        answer = request.send(base_url, timeout=timeout)
        if answer.ok and "xml" in answer.headers.get("Content-Type", ""):
            self.continue_call(request.call_sid, answer.text, url=request.url)
        return answer

    def _answer(self, call: _Call) -> None:
        """The callee picks up (caller holds the lock)."""
        if call.resource["status"] in {"queued", "ringing"}:
            call.started = time.monotonic()
            call.resource["status"] = "in-progress"
            call.resource["start_time"] = _rfc2822()
            call.resource["date_updated"] = call.resource["start_time"]

    def _end(self, call: _Call, status: str) -> None:
        """Hang up or cancel (caller holds the lock)."""
        now = _rfc2822()
        call.resource["status"] = status
        call.resource["date_updated"] = now
        if call.started is not None:
            call.resource["end_time"] = now
            call.resource["duration"] = str(int(time.monotonic() - call.started))
        else:
            call.resource["duration"] = "0"

    # -- HTTP ------------------------------------------------------------------------

    def _account_path(self, account_sid: str | None = None) -> str:
        return f"/{API_VERSION}/Accounts/{account_sid or self.account_sid}"

    def _build_url_map(self) -> Map:
        base = f"/{API_VERSION}/Accounts/<account_sid>"
        return Map(
            [
                Rule(f"{base}/Messages.json", methods=["POST"], endpoint="create"),
                Rule(f"{base}/Messages.json", methods=["GET"], endpoint="list"),
                Rule(f"{base}/Messages/<sid>.json", methods=["GET"], endpoint="fetch"),
                Rule(
                    f"{base}/Messages/<message_sid>/Media/<media_sid>",
                    methods=["GET"],
                    endpoint="media",
                ),
                Rule(f"{base}/Calls.json", methods=["POST"], endpoint="create_call"),
                Rule(f"{base}/Calls/<sid>.json", methods=["GET"], endpoint="fetch_call"),
                Rule(f"{base}/Calls/<sid>.json", methods=["POST"], endpoint="update_call"),
                Rule("/_fake/sends", methods=["GET"], endpoint="control_sends"),
                Rule("/_fake/reset", methods=["POST"], endpoint="control_reset"),
                Rule("/_fake/config", methods=["POST"], endpoint="control_config"),
            ]
        )

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        return self._dispatch(request)(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        adapter = self._url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except NotFound:
            return _not_found(request)
        except HTTPException as exc:
            return _error(exc.code or 405, 20000 + (exc.code or 405), exc.description)
        if endpoint.startswith("control_"):
            control: Response = getattr(self, f"_{endpoint}")(request)
            return control
        if not self._authorised(request):
            if endpoint == "media":
                self._count("media_denied")
            return _error(401, 20003)
        if args["account_sid"] != self.account_sid:
            return _not_found(request)
        handler = getattr(self, f"_handle_{endpoint}")
        response: Response = handler(request, **args)
        return response

    def _authorised(self, request: Request) -> bool:
        auth = request.authorization
        if auth is None or auth.type != "basic":
            return False
        user_ok = hmac.compare_digest(auth.username or "", self.account_sid)
        password_ok = hmac.compare_digest(auth.password or "", self.auth_token)
        return user_ok and password_ok

    def _count(self, name: str) -> None:
        with self._cond:
            setattr(self._state, name, getattr(self._state, name) + 1)

    # -- Messages --------------------------------------------------------------------

    def _handle_create(self, request: Request, account_sid: str) -> Response:
        received_at, received_monotonic = time.time(), time.monotonic()
        with self._cond:
            self._state.create_attempts += 1
            fault = self._state.faults.popleft() if self._state.faults else None
            delay = self.latency + (self._state.delays.popleft() if self._state.delays else 0.0)
        answer = self._accept_create(request, fault, received_at, received_monotonic)
        if delay > 0:
            self._closing.wait(delay)
        return answer

    def _accept_create(
        self,
        request: Request,
        fault: TwilioFault | None,
        received_at: float,
        received_monotonic: float,
    ) -> Response:
        if fault is not None:
            return _json(fault.body(), status=fault.status)
        if self._over_rate(received_monotonic):
            return _error(429, 20429)
        invalid = _validation_error(request.form)
        if invalid is not None:
            return invalid
        return _json(self._record(request.form, received_at, received_monotonic), status=201)

    def _over_rate(self, now: float) -> bool:
        """Count this create against ``max_per_second``; True if it must be refused."""
        cap = self.max_per_second
        with self._cond:
            window = self._state.accepted_at
            while window and window[0] <= now - 1.0:
                window.popleft()
            if cap is not None and len(window) >= cap:
                self._state.rate_limited += 1
                return True
            window.append(now)
            return False

    def _record(self, form: Any, received_at: float, received_monotonic: float) -> dict[str, Any]:
        sid = _new_sid("SM")
        received = datetime.fromtimestamp(received_at, UTC)
        answer = self._new_resource(sid, form, received)
        stored = dict(answer)
        if self.mark_sent:
            stored["status"] = "sent"
            stored["date_sent"] = _rfc2822(received)
        record = _form_record(form)
        record["sid"] = sid
        with self._cond:
            send = Send(
                index=len(self._state.sends),
                sid=sid,
                to=form.get("To"),
                from_=form.get("From"),
                body=form.get("Body", ""),
                received_at=received_at,
                received_monotonic=received_monotonic,
            )
            self._state.messages.append(record)
            self._state.sends.append(send)
            self._state.resources[sid] = stored
            self._state.order.append(sid)
            self._cond.notify_all()
        return answer

    def _new_resource(self, sid: str, form: Any, created: datetime) -> dict[str, Any]:
        now = _rfc2822(created)
        service = form.get("MessagingServiceSid")
        uri = f"{self._account_path()}/Messages/{sid}"
        body = form.get("Body", "")
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": service,
            "num_media": str(len(form.getlist("MediaUrl"))),
            "num_segments": str(max(1, -(-len(body) // 160))),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if service and not form.get("From") else "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": form.get("To"),
            "uri": f"{uri}.json",
        }

    def _handle_list(self, request: Request, account_sid: str) -> Response:
        try:
            query = _ListQuery.parse(request.args)
        except ValueError as exc:
            return _error(400, 20001, f"Invalid list parameter: {exc}")
        with self._cond:
            newest_first = [
                sid
                for sid in reversed(self._state.order)
                if query.matches(self._state.resources[sid])
            ]
            chosen, more = _page_slice(newest_first, query)
            found = [dict(self._state.resources[sid]) for sid in chosen]
        base = f"{self._account_path()}/Messages.json"
        page = query.page
        start = page * query.page_size
        next_uri = query.page_uri(base, page + 1, f"PA{chosen[-1]}") if more and chosen else None
        previous_uri = (
            query.page_uri(base, page - 1, f"PB{chosen[0]}") if page > 0 and chosen else None
        )
        current = query.page_uri(base, page, query.token)
        return _json(
            {
                "messages": found,
                "end": start + max(len(found) - 1, 0),
                "first_page_uri": query.page_uri(base, 0),
                "next_page_uri": next_uri,
                "page": page,
                "page_size": query.page_size,
                "previous_page_uri": previous_uri,
                "start": start,
                "uri": current,
            }
        )

    def _handle_fetch(self, request: Request, account_sid: str, sid: str) -> Response:
        with self._cond:
            resource = self._state.resources.get(sid)
            found = dict(resource) if resource is not None else None
        if found is None:
            return _not_found(request)
        return _json(found)

    def _handle_media(
        self, request: Request, account_sid: str, message_sid: str, media_sid: str
    ) -> Response:
        with self._cond:
            media = self._state.media.get((message_sid, media_sid))
            if media is not None:
                self._state.media_requests += 1
                if media.redirect_to is not None:
                    self._state.media_redirects += 1
        if media is None:
            return _not_found(request)
        if media.redirect_to is not None:
            return Response(status=307, headers={"Location": media.redirect_to})
        return Response(media.content, status=200, content_type=media.content_type)

    def _cdn_wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        key = request.path.removeprefix("/media/")
        with self._cond:
            media = self._state.cdn.get(key) if request.path.startswith("/media/") else None
            if media is not None:
                self._state.cdn_requests += 1
                if "Authorization" in request.headers:
                    self._state.cdn_requests_with_auth += 1
        if media is None or request.method != "GET":
            response = Response("Not Found", status=404, mimetype="text/plain")
        else:
            response = Response(media.content, status=200, content_type=media.content_type)
        return response(environ, start_response)

    # -- Calls -----------------------------------------------------------------------

    def _handle_create_call(self, request: Request, account_sid: str) -> Response:
        form = request.form
        invalid = _call_validation_error(form)
        if invalid is not None:
            return invalid
        document: TwimlDocument | None = None
        if form.get("Twiml"):
            try:
                document = parse_twiml(form["Twiml"])
            except TwimlError as exc:
                # Twilio accepts the call and fails it when it runs the TwiML
                # (error 12100); refusing here tells the test sooner.
                return _error(400, 21205, f"Twiml is not valid TwiML: {exc}")
        sid = _new_sid("CA")
        record = _form_record(form)
        record["sid"] = sid
        call = _Call(sid, record, self._new_call_resource(sid, form))
        if document is not None:
            call.documents.append(document)
            call.pressed.append(False)
        with self._cond:
            self._state.calls[sid] = call
            self._cond.notify_all()
            return _json(dict(call.resource), status=201)

    def _new_call_resource(self, sid: str, form: Any) -> dict[str, Any]:
        now = _rfc2822()
        uri = f"{self._account_path()}/Calls/{sid}"
        return {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "duration": None,
            "end_time": None,
            "forwarded_from": None,
            "from": form["From"],
            "from_formatted": form["From"],
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": "PN" + hashlib.md5(form["From"].encode()).hexdigest(),  # noqa: S324
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": sid,
            "start_time": None,
            "status": "queued",
            "subresource_uris": {
                "notifications": f"{uri}/Notifications.json",
                "recordings": f"{uri}/Recordings.json",
                "payments": f"{uri}/Payments.json",
                "events": f"{uri}/Events.json",
                "siprec": f"{uri}/Siprec.json",
                "streams": f"{uri}/Streams.json",
                "transcriptions": f"{uri}/Transcriptions.json",
                "user_defined_message_subscriptions": (
                    f"{uri}/UserDefinedMessageSubscriptions.json"
                ),
                "user_defined_messages": f"{uri}/UserDefinedMessages.json",
            },
            "to": form["To"],
            "to_formatted": form["To"],
            "trunk_sid": None,
            "uri": f"{uri}.json",
        }

    def _handle_fetch_call(self, request: Request, account_sid: str, sid: str) -> Response:
        with self._cond:
            call = self._state.calls.get(sid)
            found = dict(call.resource) if call is not None else None
        if found is None:
            return _not_found(request)
        return _json(found)

    def _handle_update_call(self, request: Request, account_sid: str, sid: str) -> Response:
        form = request.form
        status = form.get("Status")
        if status is not None and status not in {"completed", "canceled"}:
            return _error(400, 20001, f"Status must be completed or canceled, not {status}")
        url = form.get("Url")
        if url and not _absolute_http_url(url):
            return _error(400, 21205, f"Url is not a valid URL: {url}")
        document = None
        if form.get("Twiml"):
            try:
                document = parse_twiml(form["Twiml"])
            except TwimlError as exc:
                return _error(400, 21205, f"Twiml is not valid TwiML: {exc}")
        with self._cond:
            call = self._state.calls.get(sid)
            if call is None:
                return _not_found(request)
            live = call.resource["status"] in {"queued", "ringing", "in-progress"}
            if (document is not None or url) and not live:
                return _error(400, 21220)
            if document is not None:
                call.documents.append(document)
                call.pressed.append(False)
            if status == "completed" and live:
                self._end(call, "completed")
            elif status == "canceled" and call.resource["status"] in {"queued", "ringing"}:
                self._end(call, "canceled")
            return _json(dict(call.resource))

    # -- control face (standalone benchmarks) -----------------------------------------

    def _control_sends(self, request: Request) -> Response:
        try:
            since = int(request.args.get("since", 0))
        except ValueError:
            return _json({"error": "since must be an integer"}, status=400)
        with self._cond:
            sends = self._state.sends[max(since, 0) :]
            total = len(self._state.sends)
            limited, attempts = self._state.rate_limited, self._state.create_attempts
        return _json(
            {
                "sends": [send.readout() for send in sends],
                "next": total,
                "rate_limited": limited,
                "create_attempts": attempts,
            }
        )

    def _control_reset(self, request: Request) -> Response:
        self.reset()
        return _json({"reset": True})

    def _control_config(self, request: Request) -> Response:
        try:
            changes = json.loads(request.get_data() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("a JSON object is required")
            if "latency" in changes:
                self.latency = float(changes["latency"])
            if "max_per_second" in changes:
                cap = changes["max_per_second"]
                self.max_per_second = None if cap is None else int(cap)
            if "mark_sent" in changes:
                self.mark_sent = bool(changes["mark_sent"])
        except (TypeError, ValueError) as exc:
            return _json({"error": str(exc)}, status=400)
        return _json(
            {
                "latency": self.latency,
                "max_per_second": self.max_per_second,
                "mark_sent": self.mark_sent,
            }
        )


# --------------------------------------------------------------------------- process


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a FakeTwilio on 127.0.0.1 until SIGTERM/SIGINT (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Fake Twilio REST API on 127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--auth-token", required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--max-per-second", type=int, default=None)
    parser.add_argument("--mark-sent", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)

    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    fake = FakeTwilio(
        args.account_sid,
        args.auth_token,
        latency=args.latency,
        max_per_second=args.max_per_second,
        mark_sent=args.mark_sent,
        port=args.port,
    )
    with fake:
        print(f"listening on {fake.base_url}", flush=True)
        # Wake now and then so a signal is handled promptly on every platform.
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
