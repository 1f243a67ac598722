"""A fake of Pusher Channels' HTTP API, as a real HTTP server on 127.0.0.1.

``FakePusher(app_id, key, secret)`` serves ``POST /apps/{app_id}/events`` and
``POST /apps/{app_id}/batch_events`` and authenticates every request the way
Pusher does: ``auth_key`` must be the app key, ``auth_version`` ``1.0``,
``auth_timestamp`` within 600 s of now, ``body_md5`` the MD5 of the body, and
``auth_signature`` the hex HMAC-SHA256, keyed with the secret, of
``"METHOD\\nPATH\\n" + k=v pairs sorted by key, joined by "&"`` (every query
parameter but ``auth_signature``). A failure answers 401 (text body, like
Pusher) and records nothing; an unknown app id answers 404; a malformed body
400; ``data`` over 10 KB 413. Accepted requests answer 200 ``{}``.

Point the real SDK at it::

    pusher.Pusher(app_id=fake.app_id, key=fake.key, secret=fake.secret,
                  host=fake.host, port=fake.port, ssl=False)

Records (thread-safe copies): ``.events``, each ``{"channels": [...],
"name": str, "data": <data decoded from its JSON string, or the raw string if
it is not JSON>, "raw_data": str, "socket_id": str | None}`` (a batch adds one
record per entry); ``.rejected`` counts 401s. ``wait_for_events(n, timeout)``,
``fail_next(status, count=1)`` (simulate a Pusher outage: answer ``status``
and record nothing), ``reset()``.
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

__all__ = ["FakePusher", "PusherRejection"]

TIMESTAMP_GRACE_SECONDS = 600
MAX_DATA_BYTES = 10240
MAX_CHANNELS = 100


class PusherRejection(Exception):
    """A request Pusher would refuse: HTTP status and text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status} {text}")
        self.status = status
        self.text = text


@dataclass
class _State:
    events: list[dict[str, Any]] = field(default_factory=list)
    faults: deque[int] = field(default_factory=deque)
    rejected: int = 0


def sign(secret: str, method: str, path: str, params: dict[str, str]) -> str:
    """Pusher's auth_signature for ``params`` (auth_signature itself excluded)."""
    pairs = sorted((k, v) for k, v in params.items() if k != "auth_signature")
    query = "&".join(f"{k}={v}" for k, v in pairs)
    message = f"{method}\n{path}\n{query}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def _decode_data(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _event_record(channels: list[str], entry: dict[str, Any]) -> dict[str, Any]:
    name, raw = entry.get("name"), entry.get("data")
    if not isinstance(name, str) or not name or not isinstance(raw, str):
        raise PusherRejection(400, "Event 'name' and string 'data' are required")
    if len(raw.encode()) > MAX_DATA_BYTES:
        raise PusherRejection(413, "Event data exceeds 10KB")
    if (
        not channels
        or len(channels) > MAX_CHANNELS
        or not all(isinstance(c, str) and c for c in channels)
    ):
        raise PusherRejection(400, "Between 1 and 100 channels are required")
    return {
        "channels": list(channels),
        "name": name,
        "data": _decode_data(raw),
        "raw_data": raw,
        "socket_id": entry.get("socket_id"),
    }


def _single_event(payload: dict[str, Any]) -> list[dict[str, Any]]:
    channels = payload.get("channels")
    if channels is None and "channel" in payload:
        channels = [payload["channel"]]
    if not isinstance(channels, list):
        raise PusherRejection(400, "'channels' must be a list")
    return [_event_record(channels, payload)]


def _batch_events(payload: dict[str, Any]) -> list[dict[str, Any]]:
    batch = payload.get("batch")
    if not isinstance(batch, list) or not batch or not all(isinstance(e, dict) for e in batch):
        raise PusherRejection(400, "'batch' must be a non-empty list of objects")
    return [_event_record([entry.get("channel")], entry) for entry in batch]


class FakePusher(FakeService):
    """Pusher Channels' events API on 127.0.0.1 (see the module docstring).

    ``FakePusher(app_id, key, secret)``; ``start()`` or ``with`` to serve;
    then ``.host``, ``.port``, ``.base_url``.
    """

    def __init__(self, app_id: str, key: str, secret: str) -> None:
        self.app_id = str(app_id)
        self.key = key
        self.secret = secret
        self._cond = threading.Condition()
        self._state = _State()
        self._server = WsgiServer(self._wsgi)

    # -- lifecycle ---------------------------------------------------------------

    # -- test controls and records -------------------------------------------------

    def fail_next(self, status: int, count: int = 1) -> None:
        """Answer the next ``count`` authenticated requests with ``status``."""
        with self._cond:
            self._state.faults.extend([status] * count)

    def reset(self) -> None:
        with self._cond:
            self._state = _State()

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(event) for event in self._state.events]

    @property
    def rejected(self) -> int:
        with self._cond:
            return self._state.rejected

    def wait_for_events(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` events are recorded; TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._state.events) >= n, timeout):
                got = [dict(e) for e in self._state.events]
                raise TimeoutError(f"expected {n} Pusher events within {timeout}s, got {got}")
            return [dict(event) for event in self._state.events]

    # -- HTTP ------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except PusherRejection as rejection:
            if rejection.status == 401:
                with self._cond:
                    self._state.rejected += 1
            response = Response(rejection.text, status=rejection.status, mimetype="text/plain")
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        parsers = {
            f"/apps/{self.app_id}/events": _single_event,
            f"/apps/{self.app_id}/batch_events": _batch_events,
        }
        parse = parsers.get(request.path)
        if parse is None:
            raise PusherRejection(404, "Not found")
        if request.method != "POST":
            raise PusherRejection(405, "Method not allowed")
        body = request.get_data(cache=True)
        self._authenticate(request, body)
        with self._cond:
            fault = self._state.faults.popleft() if self._state.faults else None
        if fault is not None:
            raise PusherRejection(fault, "Injected failure")
        records = parse(self._json_body(body))
        with self._cond:
            self._state.events.extend(records)
            self._cond.notify_all()
        return Response("{}", status=200, mimetype="application/json")

    def _authenticate(self, request: Request, body: bytes) -> None:
        params = {key: request.args[key] for key in request.args}
        if not hmac.compare_digest(params.get("auth_key", ""), self.key):
            raise PusherRejection(401, "Unknown auth_key")
        if params.get("auth_version") != "1.0":
            raise PusherRejection(401, "Unsupported auth_version")
        self._check_timestamp(params.get("auth_timestamp", ""))
        if body and params.get("body_md5") != hashlib.md5(body).hexdigest():  # noqa: S324
            raise PusherRejection(401, "body_md5 does not match the body")
        expected = sign(self.secret, request.method, request.path, params)
        if not hmac.compare_digest(params.get("auth_signature", ""), expected):
            raise PusherRejection(401, "Invalid signature: auth_signature does not match")

    @staticmethod
    def _check_timestamp(value: str) -> None:
        try:
            skew = abs(time.time() - int(value))
        except ValueError:
            raise PusherRejection(401, "Missing or invalid auth_timestamp") from None
        if skew > TIMESTAMP_GRACE_SECONDS:
            raise PusherRejection(401, "Timestamp expired")

    @staticmethod
    def _json_body(body: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(body)
        except ValueError:
            raise PusherRejection(400, "Body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise PusherRejection(400, "Body must be a JSON object")
        return payload
