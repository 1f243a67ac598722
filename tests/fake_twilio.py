"""A fake of Twilio's Programmable Messaging REST API, as a real HTTP server.

``FakeTwilio(account_sid, auth_token)`` serves, on 127.0.0.1, the part of
``https://api.twilio.com`` that Portineria uses:

* ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form-encoded
  ``To``, ``From``, ``MessagingServiceSid``, ``Body``, ``ContentSid``,
  ``ContentVariables``, ``StatusCallback``, ``MediaUrl`` (repeatable), ...):
  HTTP Basic auth (account SID + auth token) or 401 with Twilio's JSON error;
  Twilio's validation errors (21604 no To, 21603 no From, 21602 no content,
  21656 bad ContentVariables, 21617 body over 1600 chars); else 201 with a
  Message resource (``sid`` = ``SM`` + 32 hex, ``status`` ``queued`` or
  ``accepted`` for a messaging service, RFC 2822 dates, ``uri``...).
* ``GET .../Messages.json`` (newest first, filters ``To`` and ``From``) and
  ``GET .../Messages/{Sid}.json`` (404 / 20404 when unknown).
* ``GET .../Messages/{MM...}/Media/{ME...}``: bytes registered with
  ``add_media()``, same Basic auth, the given Content-Type and Content-Length.

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

Fault injection: ``fail_next(status, count=1, code=None)`` makes the next
``count`` authenticated create requests fail with a Twilio-style JSON error
(``{"code", "message", "more_info", "status"}``) and record nothing;
``delay_next(seconds, count=1)`` makes the next creates slow, but they are
still accepted and recorded, as Twilio would after the client gave up.

Records (thread-safe copies): ``.messages`` (form fields, ``MediaUrl`` as a
list, plus ``"sid"``), ``.create_attempts``, ``.media_requests`` (authorised
media downloads), ``.media_denied``; ``wait_for_messages(n, timeout)``,
``set_status(sid, status, error_code=None)``, ``reset()``.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from servers import WsgiServer
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

__all__ = ["FakeTwilio", "TwilioFault"]

API_VERSION = "2010-04-01"
_LIST_FIELDS = frozenset({"MediaUrl", "PersistentAction"})
_BODY_LIMIT = 1600

_KNOWN_ERRORS: dict[int, str] = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20503: "Service Unavailable",
    21211: "Invalid 'To' Phone Number",
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


@dataclass
class _Media:
    content: bytes
    content_type: str
    message_sid: str
    sid: str


@dataclass
class _State:
    messages: list[dict[str, Any]] = field(default_factory=list)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: deque[TwilioFault] = field(default_factory=deque)
    delays: deque[float] = field(default_factory=deque)
    media: dict[tuple[str, str], _Media] = field(default_factory=dict)
    create_attempts: int = 0
    media_requests: int = 0
    media_denied: int = 0


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


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _now_rfc2822() -> str:
    return format_datetime(datetime.now(UTC).replace(microsecond=0))


def _form_record(form: Any) -> dict[str, Any]:
    """Form fields as a dict; repeatable fields (MediaUrl) as lists."""
    record: dict[str, Any] = {}
    for key in form.keys():
        values = form.getlist(key)
        record[key] = values if key in _LIST_FIELDS or len(values) > 1 else values[0]
    return record


def _validation_error(form: Any) -> Response | None:
    """Twilio's synchronous 400s for a create request, or None."""
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


class FakeTwilio:
    """Twilio's Messages REST API on 127.0.0.1 (see the module docstring).

    ``FakeTwilio(account_sid, auth_token)``; ``start()`` or ``with`` to serve;
    then ``.base_url``, ``.host``, ``.port``.
    """

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._cond = threading.Condition()
        self._state = _State()
        self._closing = threading.Event()
        self._url_map = self._build_url_map()
        self._server = WsgiServer(self._wsgi)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> FakeTwilio:
        self._closing.clear()
        self._server.start()
        return self

    def close(self) -> None:
        self._closing.set()  # wake delayed requests
        self._server.close()

    stop = close

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        return self._server.base_url

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
        """Make the next ``count`` creates wait ``seconds`` before answering."""
        with self._cond:
            self._state.delays.extend([seconds] * count)

    def add_media(self, content: bytes, content_type: str, message_sid: str | None = None) -> str:
        """Serve ``content`` at a new authenticated media URL and return it."""
        media = _Media(content, content_type, message_sid or _new_sid("MM"), _new_sid("ME"))
        with self._cond:
            self._state.media[(media.message_sid, media.sid)] = media
        messages_url = f"{self.base_url}{self._account_path()}/Messages"
        return f"{messages_url}/{media.message_sid}/Media/{media.sid}"

    def set_status(self, sid: str, status: str, error_code: int | None = None) -> None:
        """Change a recorded message's status as seen by GET (no callback is sent)."""
        with self._cond:
            resource = self._state.resources[sid]
            resource["status"] = status
            resource["error_code"] = error_code
            resource["error_message"] = _KNOWN_ERRORS.get(error_code) if error_code else None
            resource["date_updated"] = _now_rfc2822()

    def reset(self) -> None:
        """Forget messages, media, pending faults and delays, and counters."""
        with self._cond:
            self._state = _State()

    # -- records ---------------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(message) for message in self._state.messages]

    @property
    def create_attempts(self) -> int:
        """Authenticated create requests received, including failed ones."""
        with self._cond:
            return self._state.create_attempts

    @property
    def media_requests(self) -> int:
        with self._cond:
            return self._state.media_requests

    @property
    def media_denied(self) -> int:
        with self._cond:
            return self._state.media_denied

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
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        except HTTPException as exc:
            return _error(exc.code or 405, 20000 + (exc.code or 405), exc.description)
        if not self._authorised(request):
            if endpoint == "media":
                self._count("media_denied")
            return _error(401, 20003)
        if args["account_sid"] != self.account_sid:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
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

    def _handle_create(self, request: Request, account_sid: str) -> Response:
        with self._cond:
            self._state.create_attempts += 1
            fault = self._state.faults.popleft() if self._state.faults else None
            delay = self._state.delays.popleft() if self._state.delays else 0.0
        if delay:
            self._closing.wait(delay)
        if fault is not None:
            return _json(fault.body(), status=fault.status)
        invalid = _validation_error(request.form)
        if invalid is not None:
            return invalid
        resource = self._record(request.form)
        return _json(resource, status=201)

    def _record(self, form: Any) -> dict[str, Any]:
        sid = _new_sid("SM")
        resource = self._new_resource(sid, form)
        record = _form_record(form)
        record["sid"] = sid
        with self._cond:
            self._state.messages.append(record)
            self._state.resources[sid] = resource
            self._cond.notify_all()
        return dict(resource)

    def _new_resource(self, sid: str, form: Any) -> dict[str, Any]:
        now = _now_rfc2822()
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
        to, from_ = request.args.get("To"), request.args.get("From")
        with self._cond:
            found = [
                dict(resource)
                for resource in reversed(self._state.resources.values())
                if (to is None or resource["to"] == to)
                and (from_ is None or resource["from"] == from_)
            ]
        uri = f"{self._account_path()}/Messages.json"
        return _json(
            {
                "messages": found,
                "end": max(len(found) - 1, 0),
                "first_page_uri": f"{uri}?PageSize=50&Page=0",
                "next_page_uri": None,
                "page": 0,
                "page_size": max(len(found), 50),
                "previous_page_uri": None,
                "start": 0,
                "uri": uri,
            }
        )

    def _handle_fetch(self, request: Request, account_sid: str, sid: str) -> Response:
        with self._cond:
            resource = self._state.resources.get(sid)
            found = dict(resource) if resource is not None else None
        if found is None:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        return _json(found)

    def _handle_media(
        self, request: Request, account_sid: str, message_sid: str, media_sid: str
    ) -> Response:
        with self._cond:
            media = self._state.media.get((message_sid, media_sid))
            if media is not None and request.method == "GET":
                self._state.media_requests += 1
        if media is None:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        return Response(media.content, status=200, content_type=media.content_type)
