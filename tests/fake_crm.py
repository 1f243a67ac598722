"""A CRM's webhook endpoint, as a real HTTP server on 127.0.0.1.

``FakeCrmReceiver(secrets=[...], *, tolerance=300.0, port=0)`` receives the
events Portineria POSTs to an office's CRM and checks them the way a careful
receiver would. Any path is accepted (``.url`` is ``base_url + "/events"``);
the path is recorded.

What a request must carry
    * ``Portineria-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]``: each
      ``v1`` is the hex HMAC-SHA256, keyed with a shared secret, of
      ``"<t>." + <the raw body bytes>``. It is valid if any ``v1`` matches
      under any of the receiver's secrets, so a sender rotating its secret
      can sign with the old and the new one at once. ``t`` more than
      ``tolerance`` seconds in the past (a replay), or in the future (a
      skewed clock), is refused.
    * ``Portineria-Event-Id`` equal to the ``id`` (a string) of the JSON
      object in the body.

Answers: 200 ``{"received": true}`` for an accepted event (again for a
duplicate id: receivers are idempotent, and the fake counts duplicates);
401 for a missing or malformed signature header, a stale or future ``t``, or
no matching ``v1``; 400 for a body that is not a JSON object with a string
``id``, or an event id header that differs. Refusals record nothing but the
reason.

Scripted behaviour: ``fail_next(status=500, count=1)`` answers the next
requests with ``status`` before looking at them (a CRM outage; nothing is
accepted); ``delay_next(seconds, count=1)`` accepts the next events when they
arrive but answers them late, so a sender with a shorter timeout sees a
failure for an event the CRM has in fact received; ``down()`` closes the
listening socket and cuts open connections (connection refused), ``up()``
listens again on the same port.

Records (thread-safe copies): ``.events`` (``CrmEvent``: ``id``, ``body``
(parsed JSON), ``raw``, ``headers``, ``path``, ``received_at``),
``.refusals`` (``CrmRefusal``: status, reason, raw, headers, received_at),
``.failures`` (requests answered by ``fail_next``), ``.distinct_event_ids``
and ``.duplicates`` (accepted deliveries of an id already accepted);
``wait_for_events(n, timeout)`` (n accepted deliveries, duplicates included),
``reset()`` (records and scripted behaviour; the secrets stay).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from servers import FakeService, WsgiServer
from werkzeug.wrappers import Request, Response

__all__ = [
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "CrmEvent",
    "CrmRefusal",
    "FakeCrmReceiver",
]

SIGNATURE_HEADER = "Portineria-Signature"
EVENT_ID_HEADER = "Portineria-Event-Id"


@dataclass(frozen=True)
class CrmEvent:
    """One accepted delivery."""

    id: str
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    path: str
    received_at: float


@dataclass(frozen=True)
class CrmRefusal:
    """One request refused (or failed on purpose), with why."""

    status: int
    reason: str
    raw: bytes
    headers: dict[str, str]
    received_at: float


@dataclass
class _State:
    events: list[CrmEvent] = field(default_factory=list)
    refusals: list[CrmRefusal] = field(default_factory=list)
    failures: list[CrmRefusal] = field(default_factory=list)
    faults: deque[int] = field(default_factory=deque)
    delays: deque[float] = field(default_factory=deque)


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _parse_signature(header: str) -> tuple[int, list[str]]:
    """``(t, [v1, ...])`` from the signature header; 401 if malformed."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, separator, value = part.strip().partition("=")
        if not separator:
            raise _Refused(401, f"malformed {SIGNATURE_HEADER} element {part!r}")
        if name == "t":
            if not value.isdigit() or timestamp is not None:
                raise _Refused(401, f"{SIGNATURE_HEADER} needs exactly one integer t=")
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value.lower())
        # Other schemes (v0, v2...) are ignored, so a sender can add one later.
    if timestamp is None:
        raise _Refused(401, f"{SIGNATURE_HEADER} has no t=")
    if not signatures:
        raise _Refused(401, f"{SIGNATURE_HEADER} has no v1=")
    return timestamp, signatures


class FakeCrmReceiver(FakeService):
    """A CRM webhook endpoint on 127.0.0.1 (see the module docstring).

    ``FakeCrmReceiver(secrets=[...], *, tolerance=300.0, port=0)``;
    ``start()`` or ``with`` to serve; then ``.url``, ``.base_url``, ``.port``.
    """

    def __init__(self, secrets: Iterable[str], *, tolerance: float = 300.0, port: int = 0) -> None:
        self.secrets = list(secrets)
        if not self.secrets:
            raise ValueError("a CRM receiver needs at least one secret")
        self.tolerance = tolerance
        self._cond = threading.Condition()
        self._state = _State()
        self._waking = threading.Event()
        self._server = WsgiServer(self._wsgi, port=port)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> FakeCrmReceiver:
        self._waking.clear()
        return super().start()

    def close(self) -> None:
        self._waking.set()  # delayed answers give up at once
        super().close()

    def down(self) -> None:
        """Stop listening and cut open connections: senders get connection errors."""
        self.close()

    def up(self) -> None:
        """Listen again, on the same port."""
        self.start()

    @property
    def url(self) -> str:
        return f"{self.base_url}/events"

    # -- scripted behaviour --------------------------------------------------------

    def fail_next(self, status: int = 500, count: int = 1) -> None:
        """Answer the next ``count`` requests with ``status``, accepting nothing."""
        with self._cond:
            self._state.faults.extend([status] * count)

    def delay_next(self, seconds: float, count: int = 1) -> None:
        """Accept the next ``count`` events on arrival but answer them ``seconds`` late."""
        with self._cond:
            self._state.delays.extend([seconds] * count)

    def reset(self) -> None:
        with self._cond:
            self._state = _State()

    # -- records ---------------------------------------------------------------------

    @property
    def events(self) -> list[CrmEvent]:
        with self._cond:
            return list(self._state.events)

    @property
    def refusals(self) -> list[CrmRefusal]:
        with self._cond:
            return list(self._state.refusals)

    @property
    def failures(self) -> list[CrmRefusal]:
        with self._cond:
            return list(self._state.failures)

    @property
    def distinct_event_ids(self) -> set[str]:
        with self._cond:
            return {event.id for event in self._state.events}

    @property
    def duplicates(self) -> int:
        """Accepted deliveries whose id had already been accepted."""
        with self._cond:
            return len(self._state.events) - len({e.id for e in self._state.events})

    def wait_for_events(self, n: int, timeout: float = 5.0) -> list[CrmEvent]:
        """Wait until ``n`` deliveries are accepted; TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._state.events) >= n, timeout):
                raise TimeoutError(
                    f"expected {n} CRM events within {timeout}s, got "
                    f"{len(self._state.events)}; refusals: "
                    f"{[r.reason for r in self._state.refusals]}"
                )
            return list(self._state.events)

    # -- HTTP ------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        response = self._handle(request)
        return response(environ, start_response)

    def _handle(self, request: Request) -> Response:
        received_at = time.time()
        raw = request.get_data(cache=False)
        headers = dict(request.headers.items())
        with self._cond:
            fault = self._state.faults.popleft() if self._state.faults else None
            delay = self._state.delays.popleft() if self._state.delays and fault is None else 0.0
        if fault is not None:
            failure = CrmRefusal(fault, "scripted failure", raw, headers, received_at)
            with self._cond:
                self._state.failures.append(failure)
            return _answer({"error": "scripted failure"}, fault)
        if request.method != "POST":
            return self._refuse(_Refused(405, "events are POSTed"), raw, headers, received_at)
        try:
            event = self._verify(request, raw, headers, received_at)
        except _Refused as refused:
            return self._refuse(refused, raw, headers, received_at)
        with self._cond:
            self._state.events.append(event)
            self._cond.notify_all()
        if delay > 0:
            self._waking.wait(delay)
        return _answer({"received": True}, 200)

    def _refuse(
        self, refused: _Refused, raw: bytes, headers: dict[str, str], received_at: float
    ) -> Response:
        refusal = CrmRefusal(refused.status, refused.reason, raw, headers, received_at)
        with self._cond:
            self._state.refusals.append(refusal)
            self._cond.notify_all()
        return _answer({"error": refused.reason}, refused.status)

    def _verify(
        self, request: Request, raw: bytes, headers: dict[str, str], received_at: float
    ) -> CrmEvent:
        header = request.headers.get(SIGNATURE_HEADER)
        if not header:
            raise _Refused(401, f"{SIGNATURE_HEADER} header is missing")
        timestamp, signatures = _parse_signature(header)
        if received_at - timestamp > self.tolerance:
            raise _Refused(401, f"signature timestamp is older than {self.tolerance:g}s")
        if timestamp - received_at > self.tolerance:
            raise _Refused(401, "signature timestamp is in the future")
        signed = str(timestamp).encode() + b"." + raw
        expected = [
            hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest() for secret in self.secrets
        ]
        if not any(hmac.compare_digest(e, s) for e in expected for s in signatures):
            raise _Refused(401, "no v1 signature matches any secret")
        try:
            body = json.loads(raw)
        except ValueError:
            raise _Refused(400, "body is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise _Refused(400, "body must be a JSON object with a string id")
        if request.headers.get(EVENT_ID_HEADER) != body["id"]:
            raise _Refused(400, f"{EVENT_ID_HEADER} does not match the body's id")
        return CrmEvent(body["id"], body, raw, headers, request.path, received_at)


def _answer(payload: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")
